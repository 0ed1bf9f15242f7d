"""The one error type for configuration problems, and the delivery errors handlers raise."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a value came from: file and 1-based line (0 when unknown)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class ConfigError(Exception):
    """A configuration problem, always printable as one line for a person.

    Rendered as ``file:line: key.path: message``, e.g.
    ``config.yaml:23: rules[2].threshold.window: "10 minutes" is not a duration (use 10m, ...)``.
    """

    def __init__(self, message: str, mark: Mark | None = None, key: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark
        self.key = key

    def __str__(self) -> str:
        parts = []
        if self.mark is not None:
            parts.append(str(self.mark))
        if self.key:
            parts.append(self.key)
        parts.append(self.message)
        return ": ".join(parts)


class DeliveryError(Exception):
    """A handler could not deliver. ``permanent`` failures are not retried.

    ``retry_after`` (seconds) lets a handler pass on a server's hint (HTTP Retry-After).
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class ActionRefused(Exception):
    """A handler that acts (bans, locks) will not act on this alert.

    ``expected`` marks a refusal the administrator asked for (an address on a ``never``
    list): logged at info. Otherwise the alert held no usable target (a field that is not an
    IP address): logged as a warning, and the value is never passed on.
    """

    def __init__(self, message: str, *, expected: bool = False) -> None:
        super().__init__(message)
        self.expected = expected


class StateError(Exception):
    """The state directory or its database cannot be used now; one line for a person.

    ``exit_code`` is how the process ends: 75 (EX_TEMPFAIL) when waiting may help (another
    daemon holds the directory), 78 when an administrator must act first, so systemd's
    ``RestartPreventExitStatus=78`` stops a restart loop.
    """

    exit_code = 78

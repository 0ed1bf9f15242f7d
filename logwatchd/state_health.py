"""What went wrong with the state database, said for a person, and how the daemon reacts.

- Damaged (SQLite's CORRUPT or NOTADB): nothing the daemon can fix by retrying. It stops with
  exit 78, which the unit's ``RestartPreventExitStatus=78`` keeps from a restart loop, and
  says where the file is and what to do (``logwatchd state check --recover``).
- Full or failing writes (FULL, IOERR): usually an administrator frees space and it passes.
  The write is retried with backoff, reported at error level at most once a minute, and
  nothing is lost meanwhile: the daemon reads no further until its commit is in, and a
  delivery worker keeps its outcome until it is recorded.
"""

from __future__ import annotations

import sqlite3

import structlog

from logwatchd.clock import Clock
from logwatchd.errors import StateError

__all__ = [
    "StateDamaged",
    "StateUnwritable",
    "WriteRetry",
    "damaged",
    "detail",
    "is_damaged",
    "is_unwritable",
    "state_error",
]

log = structlog.get_logger("logwatchd.state")

_CORRUPT, _FULL, _IOERR, _NOTADB = 11, 13, 10, 26  # SQLite's primary result codes
FIRST_RETRY = 0.5
MAX_RETRY = 30.0
REPORT_EVERY = 60.0


class StateDamaged(StateError):
    """The database file is damaged: an administrator must move it aside or recover it."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail  # SQLite's own words


class StateUnwritable(StateError):
    """The database cannot be written now (disk full, I/O error) while the daemon starts."""

    exit_code = 75  # EX_TEMPFAIL: systemd tries again after RestartSec


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_damaged(exc: BaseException) -> bool:
    if isinstance(exc, StateDamaged):
        return True
    return isinstance(exc, sqlite3.DatabaseError) and _code(exc) in (_CORRUPT, _NOTADB)


def detail(exc: BaseException) -> str:
    return exc.detail if isinstance(exc, StateDamaged) else str(exc)


def is_unwritable(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in (_FULL, _IOERR)


def damaged(path: str, what: str) -> StateDamaged:
    return StateDamaged(
        f"state database {path} is damaged: {what}; move it aside to start fresh (offsets "
        "and pending alerts in it are lost), or keep what is still readable with "
        "`logwatchd state check --recover` while the daemon is stopped",
        what,
    )


def state_error(path: str, exc: sqlite3.Error) -> StateError:
    """The one-line error for a database problem met while starting or reading."""
    if is_damaged(exc):
        return damaged(path, str(exc))
    if is_unwritable(exc):
        return StateUnwritable(f"state database {path} cannot be written: {exc}")
    return StateError(f"state database {path}: {exc}")


class WriteRetry:
    """Backoff and rate-limited reports for one writer whose writes the disk refuses."""

    def __init__(self, what: str, clock: Clock) -> None:
        self.what = what
        self.failures = 0
        self._clock = clock
        self._reported: float | None = None

    def failed(self, exc: sqlite3.Error, **context: object) -> float:
        """Count a failure, report it if none was reported lately; seconds to wait."""
        self.failures += 1
        delay = min(FIRST_RETRY * 2.0 ** (self.failures - 1), MAX_RETRY)
        now = self._clock.monotonic()
        if self._reported is None or now - self._reported >= REPORT_EVERY:
            self._reported = now
            log.error(
                f"{self.what} failed, retrying (nothing is lost meanwhile)",
                error=str(exc),
                failures=self.failures,
                retry_in=delay,
                **context,
            )
        return delay

    def succeeded(self) -> None:
        if self.failures:
            log.warning(f"{self.what} succeeded again", failures=self.failures)
        self.failures = 0
        self._reported = None

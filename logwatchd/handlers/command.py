"""Run a program per alert: argv rendered element by element, never a shell.

Each configured argv element renders to exactly one argument, whatever the log line held.
The program gets its own session (process group); at the timeout the whole group gets
SIGTERM, then SIGKILL after a short grace, so forked children die too. The environment is
scrubbed to PATH, the configured static variables and LOGWATCHD_*.

With ``undo`` the handler acts on the alert's key and undoes it ``after`` later: the outbox
delivers the undo as an alert whose ``action.step`` is ``undo`` (see actions.py). Such a
handler runs one program at a time, so an undo never overtakes the action it undoes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from typing import IO, Any

import structlog

from logwatchd.config.handler_settings import CommandSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import compile_setting, render_or_fail, settings_of
from logwatchd.templates import HostInfo, Template, Templates

log = structlog.get_logger("logwatchd.handlers")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the process group
STDERR_TAIL = 2048
MAX_ENV_VALUE = 8192  # key values in the environment are a convenience; argv has them whole
_NOT_NAME = re.compile(r"[^A-Z0-9_]")


class CommandHandler:
    # send() of several alerts runs the program once for each: a rate limit must hold the
    # overflow back rather than pack it into one send
    per_alert = True

    def __init__(
        self,
        cfg: HandlerConfig,
        *,
        templates: Templates,
        host: HostInfo,
        kill_grace: float = KILL_GRACE,
    ) -> None:
        settings = settings_of(cfg, CommandSettings)
        self.name = cfg.name
        self._templates = templates
        self._host = host
        self._program = settings.argv[0]
        self._args = _arguments(cfg, templates, "argv", settings.argv)
        undo = settings.undo
        self.undoes = undo is not None
        self.duration = undo.after if undo else 0.0
        self.increase = None
        self._undo_program = undo.argv[0] if undo else ""
        self._undo_args = _arguments(cfg, templates, "undo.argv", undo.argv) if undo else []
        self._stdin_json = settings.stdin == "json"
        self._static_env = settings.env
        self._timeout = cfg.timeout
        self._grace = kill_grace
        self.concurrency = 1 if self.undoes else settings.concurrency
        self._slots = threading.BoundedSemaphore(self.concurrency)

    def action_key(self, alert: dict[str, Any]) -> str:
        """The alert's key as one text: the value of a one-field key, else ``f=v,g=w``."""
        key = alert.get("key") or {}
        if len(key) == 1:
            return _env_value(next(iter(key.values())))
        return ",".join(f"{field}={_env_value(value)}" for field, value in key.items())

    def argv(self, alert: dict[str, Any], alerts: list[dict[str, Any]] | None = None) -> list[str]:
        undo = _step(alert) == "undo"
        rendered = [self._undo_program if undo else self._program]
        for template in self._undo_args if undo else self._args:
            text = render_or_fail(self._templates, template, alert, self._host, alerts)
            # exec() would cut an argument at a NUL: make it visible instead
            rendered.append(text.replace("\x00", "\ufffd"))
        return rendered

    def environment(self, alert: dict[str, Any]) -> dict[str, str]:
        env = {"PATH": self._static_env.get("PATH") or os.environ.get("PATH") or DEFAULT_PATH}
        env.update(self._static_env)
        env["LOGWATCHD_HANDLER"] = self.name
        env["LOGWATCHD_RULE"] = _env_value(alert.get("rule"))
        env["LOGWATCHD_SEVERITY"] = _env_value(alert.get("severity"))
        env["LOGWATCHD_ALERT_ID"] = _env_value(alert.get("id"))
        if self.undoes:
            env["LOGWATCHD_ACTION"] = _step(alert) or "do"
        for field, value in (alert.get("key") or {}).items():
            env["LOGWATCHD_KEY_" + _NOT_NAME.sub("_", str(field).upper())] = _env_value(value)
        return env

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"runs": [self.argv(alert, alerts) for alert in alerts]}

    def send(self, alerts: list[dict[str, Any]]) -> None:
        """A digest runs the program once per alert, in order; any failure fails the lot."""
        for alert in alerts:
            self._run(alert, alerts)

    def _run(self, alert: dict[str, Any], alerts: list[dict[str, Any]]) -> None:
        argv = self.argv(alert, alerts)
        with self._slots, _stdin_file(alert if self._stdin_json else None) as stdin:
            status, tail, timed_out = self._spawn(argv, self.environment(alert), stdin)
        fields = {"handler": self.name, "alert_id": alert.get("id"), "exit_status": status}
        what = "undo command" if _step(alert) == "undo" else "command"
        if timed_out:
            log.warning(f"{what} timed out", timeout=self._timeout, stderr=tail, **fields)
            raise DeliveryError(f"{argv[0]} timed out after {self._timeout:g}s")
        if status != 0:
            log.warning(f"{what} failed", stderr=tail, **fields)
            last = tail.strip().splitlines()[-1:] or [""]
            raise DeliveryError(f"{argv[0]} exited with status {status}: {last[0][:200]}")
        log.info(f"{what} ran", stderr=tail, **fields)

    def _spawn(
        self, argv: list[str], env: dict[str, str], stdin: IO[bytes] | int
    ) -> tuple[int, str, bool]:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            # Out of descriptors or processes passes; E2BIG (a huge argument) or a missing
            # program does not, and retrying will not help.
            transient = exc.errno in (errno.EMFILE, errno.ENFILE, errno.EAGAIN)
            raise DeliveryError(
                f"cannot run {argv[0]}: {exc.strerror}", permanent=not transient
            ) from None
        tail = _Tail(proc.stderr)
        timed_out = False
        try:
            status = proc.wait(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            status = kill_group(proc, self._grace)
        tail.join(0.5)
        return status, tail.text(), timed_out

    def close(self) -> None:
        return None


def _arguments(
    cfg: HandlerConfig, templates: Templates, key: str, argv: tuple[str, ...]
) -> list[Template]:
    """The compiled templates of the arguments after the program (``argv[0]`` is a path)."""
    return [compile_setting(cfg, templates, f"{key}[{i}]", arg) for i, arg in enumerate(argv) if i]


def kill_group(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the process group, wait ``grace`` for it to empty, then SIGKILL what is left."""
    pgid = proc.pid  # start_new_session: the child leads its own group
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not _group_alive(pgid):
            break
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    return proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Tail:
    """Drains a pipe in a thread and keeps only its last bytes (memory stays bounded)."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        self._data = b""
        self._pipe = pipe
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        pipe = self._pipe
        if pipe is None:
            return
        with pipe:
            # os.read returns what is there: the tail updates without waiting for 64 KiB
            for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
                self._data = (self._data + chunk)[-STDERR_TAIL:]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return self._data.decode("utf-8", "replace")


class _stdin_file:
    """The alert as JSON in an unlinked temporary file: writing never blocks on the child."""

    def __init__(self, alert: dict[str, Any] | None) -> None:
        self._alert = alert
        self._file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes] | int:
        if self._alert is None:
            return subprocess.DEVNULL
        self._file = tempfile.TemporaryFile()
        self._file.write(json.dumps(self._alert, ensure_ascii=False).encode() + b"\n")
        self._file.seek(0)
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def _step(alert: dict[str, Any]) -> str | None:
    """``do`` or ``undo`` for a handler with undo (set by the actions bookkeeping)."""
    action = alert.get("action")
    return action.get("step") if isinstance(action, dict) else None


def _env_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("\x00", "\ufffd")[:MAX_ENV_VALUE]

"""Run ``logwatchd run`` as a real subprocess and know when it is ready, via sd_notify.

The test binds its own notify socket and passes it as ``$NOTIFY_SOCKET``, exactly as systemd
would, so "ready" means the daemon said READY=1 after opening its sources.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate()`` is truthy; return its value or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    # a line without its newline is still being written: it is read on the next call
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


APP_REGEX = r"^(?P<timestamp>\S+ \S+) (?P<event_type>\w+) - IP: (?P<ip>\S+)"
BREACH = {"id": "breach", "match": {"field": "event_type", "equals": "Breach"}, "group_by": ["ip"]}


def app_config(
    tmp_path: Path,
    *,
    rules: list[dict[str, Any]] | None = None,
    state: Path | None = None,
    handler: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A daemon following ``tmp_path/app.log`` ("2026-11-26 10:00:00 Breach - IP: 1.2.3.4"
    lines) with ``rules`` (every Breach, per ip), sending to the handler ``sink`` (a JSON-lines
    file ``tmp_path/alerts.jsonl``), its state in ``state`` (``tmp_path/state``)."""
    return {
        "version": 1,
        "daemon": {"state_dir": str(state or tmp_path / "state"), "commit_interval": "200ms"},
        "sources": [
            {"id": "app", "type": "file", "paths": [str(tmp_path / "app.log")], "parser": "app"}
        ],
        "parsers": {"app": {"regex": APP_REGEX, "time_format": "%Y-%m-%d %H:%M:%S"}},
        "rules": rules or [BREACH],
        "defaults": {"handlers": ["sink"]},
        "handlers": {"sink": handler or {"type": "file", "path": str(tmp_path / "alerts.jsonl")}},
    }


def logwatchd(*args: str, stdin: str | None = None, timeout: float = 60) -> Any:
    """``python -m logwatchd ARGS`` as a launcher outside systemd runs it; its outcome."""
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "NOTIFY_SOCKET")}
    return subprocess.run(
        [sys.executable, "-m", "logwatchd", *args],
        capture_output=True, text=True, input=stdin, timeout=timeout, env=env, check=False,
    )  # fmt: skip


class DaemonProcess:
    """``logwatchd run -c CONFIG`` with a private notify socket."""

    def __init__(
        self,
        config: Path,
        *,
        extra_args: tuple[str, ...] = (),
        env: dict | None = None,
        prefix: tuple[str, ...] = (),  # e.g. ("ip", "netns", "exec", NS): it execs, same pid
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.config = config
        self._dir = tempfile.mkdtemp(prefix="lwd-notify-")
        self.notify_path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.notify_path)
        self._sock.setblocking(False)
        self.messages: list[str] = []
        full_env = {**os.environ, "NOTIFY_SOCKET": self.notify_path, **(env or {})}
        full_env.pop("JOURNAL_STREAM", None)
        self.stderr_path = Path(self._dir) / "stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "logwatchd", "--log-format", "json", "run",
             "-c", str(config), *extra_args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - resource limits, set before exec
        )  # fmt: skip

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            self.messages.extend(data.decode("utf-8", "replace").splitlines())

    def has_message(self, text: str) -> bool:
        self._drain()
        return text in self.messages

    def status(self) -> str:
        """The daemon's latest notify STATUS text ("N lines read, ...")."""
        self._drain()
        return next((m[7:] for m in reversed(self.messages) if m.startswith("STATUS=")), "")

    def wait_lines_read(self, count: int, timeout: float = 10.0) -> int:
        """Until the STATUS says at least ``count`` lines were read; returns how many."""

        def lines() -> int:
            found = re.match(r"(\d+) lines read", self.status())
            number = int(found.group(1)) if found else 0
            return number if number >= count else 0

        return int(wait_for(lines, timeout)) if count else 0

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
            return self.has_message("READY=1")

        wait_for(ready, timeout)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.stderr().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._sock.close()
        self._stderr.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None:
            # a failed test shows what the daemon said (pytest prints captured output)
            print(f"--- daemon log ({self.stderr_path}) ---\n{self.stderr()[-20000:]}")
        self.close()

"""Run ``logwatchd run`` as a real subprocess and know when it is ready, via sd_notify.

The test binds its own notify socket and passes it as ``$NOTIFY_SOCKET``, exactly as systemd
would, so "ready" means the daemon said READY=1 after opening its sources.
"""

from __future__ import annotations

import json
import os
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
    """The complete lines so far (one still being written by the daemon is left out)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.strip() and line.endswith("\n")]


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class DaemonProcess:
    """``logwatchd run -c CONFIG`` with a private notify socket."""

    def __init__(
        self,
        config: Path,
        *,
        extra_args: tuple[str, ...] = (),
        env: dict | None = None,
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
            [sys.executable, "-m", "logwatchd", "--log-format", "json", "run", "-c", str(config),
             *extra_args],
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

    def __exit__(self, *exc: object) -> None:
        self.close()

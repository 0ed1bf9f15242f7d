"""Shared helpers for the source tests: a numbered-line writer and a follower driver."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from logwatchd.clock import SystemClock
from logwatchd.config.model import SourceConfig
from logwatchd.events import Line
from logwatchd.sources.files import FileFollower


def numbered(n: int, tag: str = "line") -> str:
    return f"{tag} {n:07d} payload-{n % 97:02d}"


class Writer:
    """Appends numbered lines to a path, as an application would (O_APPEND, reopen on demand)."""

    def __init__(self, path: str, tag: str = "line") -> None:
        self.path = path
        self.tag = tag
        self.next = 1
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open like an app's log

    def write(self, count: int = 1) -> list[int]:
        out = []
        for _ in range(count):
            self._fh.write(numbered(self.next, self.tag) + "\n")
            out.append(self.next)
            self.next += 1
        self._fh.flush()
        return out

    def reopen(self) -> None:
        """What an application does on SIGHUP after logrotate's ``create``."""
        self._fh.close()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._fh.close()

    @property
    def written(self) -> int:
        return self.next - 1


@dataclass
class Run:
    """A follower under test, and every line it has handed out."""

    follower: FileFollower
    lines: list[Line] = field(default_factory=list)
    wakes: int = 0

    def wake(self) -> None:
        self.wakes += 1

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        got = self.follower.poll(max_lines)
        self.lines.extend(got)
        return got

    def until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll until ``done()`` (generous deadline: the machine is shared)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if done():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {len(self.lines)} lines")
            time.sleep(0.01)

    def until_count(self, n: int, timeout: float = 20.0, tag: str = "line") -> None:
        self.until(lambda: len(set(self.numbers(tag))) >= n, timeout)

    def settle(self, seconds: float = 0.3) -> None:
        """Keep polling for a while, so that anything extra (a repeat) would show up."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(0.01)

    def numbers(self, tag: str = "line") -> list[int]:
        return numbers_of(self.lines, tag)

    def checkpoint(self) -> dict[str, Any]:
        return self.follower.checkpoint()

    def stop(self) -> None:
        self.follower.stop()


def numbers_of(lines: Iterable[Line], tag: str = "line") -> list[int]:
    out = []
    for line in lines:
        parts = line.raw.split()
        if len(parts) >= 2 and parts[0] == tag:
            out.append(int(parts[1]))
    return out


def lost_and_repeated(seen: list[int], written: int) -> tuple[list[int], list[int]]:
    counts = Counter(seen)
    lost = [n for n in range(1, written + 1) if n not in counts]
    repeated = sorted(n for n, c in counts.items() if c > 1)
    return lost, repeated


def follow(
    paths: list[str],
    *,
    saved: dict[str, Any] | None = None,
    start_at: str = "beginning",
    max_line_bytes: int = 65536,
    stat_interval: float = 0.05,
    rescan_interval: float = 0.2,
    orphan_grace: float = 0.5,
    clock: Any = None,
    start: bool = True,
    inotify: bool = True,
    olddir: str | None = None,
    max_open_files: int | None = None,
) -> Run:
    config = SourceConfig(
        id="src", type="file", parser="none", paths=tuple(paths), start_at=start_at, olddir=olddir
    )  # type: ignore[arg-type]
    follower = FileFollower(
        config,
        saved=saved,
        max_line_bytes=max_line_bytes,
        stat_interval=stat_interval,
        rescan_interval=rescan_interval,
        clock=clock or SystemClock(),
        orphan_grace=orphan_grace,
        inotify=inotify,
        max_open_files=max_open_files,
    )
    run = Run(follower)
    if start:
        follower.start(run.wake)
    return run


def open_fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return out


def deleted_fds() -> list[str]:
    return [t for t in open_fds().values() if t.endswith("(deleted)")]


def held_paths(prefix: str) -> list[str]:
    """Open descriptors of this process that point under ``prefix`` (a test's tmp dir)."""
    return sorted(t for t in open_fds().values() if t.startswith(prefix))


class BackgroundWriter:
    """A Writer in a thread, at roughly ``rate`` lines/s, that can be paused and HUPed."""

    def __init__(self, path: str, rate: float = 2000.0, tag: str = "line") -> None:
        import threading

        self.path = path
        self._writer = Writer(path, tag)
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._stop = threading.Event()
        self._batch = max(1, int(rate / 100))
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._running.set()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._running.wait(0.05):
                with self._lock:
                    self._writer.write(self._batch)
            time.sleep(0.01)

    def pause(self) -> None:
        self._running.clear()
        with self._lock:  # a write in progress finishes first
            pass

    def resume(self) -> None:
        self._running.set()

    def reopen(self) -> None:
        with self._lock:
            self._writer.reopen()

    def write(self, count: int) -> None:
        with self._lock:
            self._writer.write(count)

    def stop(self) -> int:
        self._stop.set()
        self._running.set()
        self._thread.join()
        self._writer.close()
        return self._writer.written


def logrotate(conf_dir: str, log_path: str, options: list[str], rotate: int = 5) -> list[str]:
    """argv that force-rotates ``log_path`` with these directives and a private state file."""
    conf = os.path.join(conf_dir, "logrotate.conf")
    body = "\n".join(f"    {o}" for o in [f"rotate {rotate}", "missingok", "nomail", *options])
    with open(conf, "w", encoding="utf-8") as fh:
        fh.write(f"{log_path} {{\n{body}\n}}\n")
    return ["/usr/sbin/logrotate", "-f", "-s", os.path.join(conf_dir, "state"), conf]


def run_while_polling(argv: list[str], run: Run) -> None:
    """Run a command to completion, polling the follower all the while."""
    import subprocess

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while proc.poll() is None:
        run.poll()
        time.sleep(0.002)
    out = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode != 0:
        raise AssertionError(f"{argv} failed: {out}")

"""StdinSource: lines from standard input, read by a thread so ``poll()`` never blocks."""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO

from logwatchd.clock import Clock
from logwatchd.config.model import SourceConfig
from logwatchd.events import Line

_READY_LIMIT = 100_000  # lines held for the daemon; the reader thread waits beyond this


class StdinSource:
    """Reads a byte stream line by line; nothing is checkpointed (a pipe cannot be re-read)."""

    def __init__(
        self,
        config: SourceConfig,
        *,
        clock: Clock,
        max_line_bytes: int = 65536,
        stream: BinaryIO | None = None,
    ) -> None:
        self.id = config.id
        self._clock = clock
        self._max = max_line_bytes
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._ready: deque[Line] = deque()
        self._room = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._count = 0
        self.eof = False  # the stream ended and every line was handed out by poll()

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._thread = threading.Thread(target=self._run, name=f"stdin-{self.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping:
                # readline with a limit keeps memory bounded on a line without a newline.
                chunk = self._stream.readline(self._max + 1)
                if not chunk:
                    break
                self._put(chunk)
        except (OSError, ValueError):
            pass  # the stream was closed under us: same as its end
        finally:
            with self._room:
                self._finished = True
            self._wake()

    def _put(self, chunk: bytes) -> None:
        truncated = False
        if not chunk.endswith(b"\n"):
            if len(chunk) > self._max:
                truncated = True
                chunk = chunk[: self._max]
                self._skip_rest()
        else:
            chunk = chunk[:-1]
        self._count += 1
        line = Line(
            self.id,
            chunk.decode("utf-8", "replace"),
            self._clock.now(),
            f"stdin:{self._count}",
            None,
            self._count,
            truncated,
        )
        with self._room:
            while len(self._ready) >= _READY_LIMIT and not self._stopping:
                self._room.wait(0.5)
            self._ready.append(line)
        self._wake()

    def _skip_rest(self) -> None:
        while True:
            more = self._stream.readline(self._max + 1)
            if not more or more.endswith(b"\n"):
                return

    _finished = False

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        with self._room:
            n = min(max_lines, len(self._ready))
            out = [self._ready.popleft() for _ in range(n)]
            self._room.notify_all()
            self.eof = self._finished and not self._ready
        return out

    def checkpoint(self) -> dict[str, Any]:
        return {"lines": self._count}

    def stop(self) -> None:
        with self._room:
            self._stopping = True
            self._room.notify_all()

"""A time limit per line: no line may hold up the pipeline, whatever a rule's regex does.

Python's ``re`` backtracks: a pattern like ``(a+)+$`` takes minutes on a 35-character line,
holding the GIL all along. It does call ``PyErr_CheckSignals`` every few thousand steps,
so a Python signal handler that raises aborts the match. ``LineTimeLimit`` uses that: while
lines are being evaluated (``with limit:``), a CPU-time interval timer (``SIGVTALRM``, so a
process that is merely descheduled never trips it, and pytest-timeout's ``SIGALRM`` stays
free) ticks every quarter of the limit; when the same line has been in evaluation for the
whole limit, the handler raises ``LineTimeout`` inside it. The caller counts the line, logs
it once per rule and goes on with the next one. Between lines nothing is armed, and a line
costs one counter increment: no clock read per match.

``interrupt()`` is for SIGTERM: it raises ``Interrupted`` (not an ``Exception``, so no
per-line error handler swallows it) inside a line being evaluated, so a stop request is
served at once; the caller must then not commit past the lines it did not finish.

Signals are a process-wide resource: the limit works only in the main thread, and only once
``install()`` has been called there. Elsewhere it is inert (``install()`` returns False).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Self

from logwatchd.releasing import Releasing

DEFAULT_LINE_TIMEOUT = 0.5  # seconds of CPU one line may take through its parser and rules
TICKS = 4  # timer ticks per limit: a slow line is stopped after 1 to 1.25 times the limit


class LineTimeout(Exception):
    """Raised inside the evaluation of a line that ran past the limit.

    ``where`` names what was running (``rule X`` or ``parser Y``) once the caller knows it;
    ``alerts`` holds what the rules before it made of the line (they stand).
    """

    def __init__(self) -> None:
        super().__init__("line evaluation ran past its time limit")
        self.where = ""
        self.alerts: list[Any] = []


class Interrupted(BaseException):
    """A stop request (SIGTERM) arrived while a line was being evaluated."""


class LineTimeLimit(Releasing):
    """Aborts the evaluation of a line that runs longer than ``seconds`` of CPU time."""

    def __init__(self, seconds: float = DEFAULT_LINE_TIMEOUT) -> None:
        self.seconds = seconds
        self.lines = 0  # bumped by the caller before each line it evaluates
        self.active = False  # inside ``with limit:``
        self.installed = False
        self._seen = -1  # ``lines`` at the previous tick
        self._strikes = 0  # ticks the current line has been running for

    def install(self) -> bool:
        """Take over SIGVTALRM; False (and the limit stays inert) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(signal.SIGVTALRM, self._on_tick)
        signal.siginterrupt(signal.SIGVTALRM, False)  # other threads' system calls resume
        self.installed = True
        return True

    def __enter__(self) -> Self:
        if self.installed:
            self._seen, self._strikes = self.lines, 0
            self.active = True
            tick = self.seconds / TICKS
            signal.setitimer(signal.ITIMER_VIRTUAL, tick, tick)
        return self

    def release(self) -> None:
        """Disarm: the lines under the limit are done (leaving ``with limit:`` calls it)."""
        if self.active:
            self.active = False
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)

    def interrupt(self) -> None:
        """For a stop request: abort the line being evaluated, if any (see the module doc)."""
        if self.active:
            self.release()
            raise Interrupted

    def _on_tick(self, signum: int, frame: FrameType | None) -> None:
        if not self.active:
            return
        if self.lines != self._seen:
            self._seen, self._strikes = self.lines, 0
            return
        self._strikes += 1
        if self._strikes >= TICKS:
            self._strikes = 0
            raise LineTimeout

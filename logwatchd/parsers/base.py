"""What every parser is: ``parse(line) -> fields | None`` plus the fields it keeps verbatim."""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from logwatchd.events import Line

Fields = dict[str, Any]

# ``verbatim_fields`` value meaning "every string field is a substring of line.raw".
ALL_STRINGS: frozenset[str] = frozenset({"*"})


class Parser(Protocol):
    """Turns a line into fields.

    ``parse`` returns a dict that always holds ``message`` and ``raw`` (and ``timestamp`` as
    an aware datetime when the line carries one), or None when the line does not fit the
    format. It never raises, whatever the line holds.

    ``verbatim_fields`` names the fields whose string values always appear unchanged in
    ``line.raw`` (``"*"``: all string fields). The rule engine's literal prefilter relies on
    it to skip lines without parsing them, so it must never over-promise.
    """

    name: str
    verbatim_fields: frozenset[str]

    def parse(self, line: Line) -> Fields | None: ...


class StampFailures:
    """Lines whose timestamp a parser found but could not read (their event then uses the
    time the line was read): counted, with the first few stamps as samples, so that a
    ``time_format`` that fits no line is reported by ``test``, the daemon and ``status``
    instead of silently moving every event to its read time.
    """

    __slots__ = ("count", "last", "samples")

    SAMPLES = 5
    SAMPLE_CHARS = 120

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self.samples: deque[tuple[str, str]] = deque(maxlen=self.SAMPLES)  # (stamp, line)

    def add(self, stamp: str, raw: str) -> None:
        self.count += 1
        self.last = stamp[: self.SAMPLE_CHARS]
        if len(self.samples) < self.SAMPLES:
            self.samples.append((self.last, raw[:300]))

"""What every parser is: ``parse(line) -> fields | None`` plus the fields it keeps verbatim."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
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
    ``line.raw`` (``"*"``: all string fields). The rule engine's scan of raw lines relies on
    it to skip lines without parsing them, so it must never over-promise.
    """

    name: str
    verbatim_fields: frozenset[str]

    def parse(self, line: Line) -> Fields | None: ...


@dataclass(frozen=True)
class FieldSet:
    """The fields a parser can produce, for the config check that rules name only those:
    ``names``, plus every name ``more`` matches (json: any; journald: any journal field)."""

    names: frozenset[str]
    more: re.Pattern[str] | None = None
    more_text: str = ""  # ``more`` for people: "any JSON key"

    def has(self, name: str) -> bool:
        return name in self.names or (
            self.more is not None and self.more.fullmatch(name) is not None
        )

    def is_open(self) -> bool:
        """True when any name at all may appear (nothing can be checked)."""
        return self.more is not None and self.more.pattern == ".*"


def field_set(*names: str, more: str | None = None, more_text: str = "") -> FieldSet:
    """Every parser gives ``message`` and ``raw``; ``more`` is a regex of further names."""
    pattern = re.compile(more, re.DOTALL) if more is not None else None
    return FieldSet(frozenset({"message", "raw", *names}), pattern, more_text)


ANY_FIELDS = field_set(more=".*", more_text="any field")


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

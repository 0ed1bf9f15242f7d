"""The plain objects that flow down the pipeline: a line from a source, a parsed event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Line:
    """One line as a source read it.

    ``origin`` names the line's position stably across restarts (for a file: its fingerprint
    and byte offset; for the journal: the cursor; for ``test``: path and line number), so an
    alert rebuilt after a crash gets the same id. ``lineno`` is 1-based within what the source
    has read of that file. ``raw`` has no trailing newline and is valid text (invalid UTF-8
    replaced). ``fields`` is set by sources that deliver structured records (the journal).
    """

    source: str
    raw: str
    read_time: float
    origin: str
    path: str | None = None
    lineno: int = 0
    truncated: bool = False
    fields: dict[str, Any] | None = None


@dataclass(slots=True)
class Event:
    """A parsed line: fields from the parser (and from rule regexes), and its event time."""

    line: Line
    fields: dict[str, Any]
    time: float  # epoch seconds: the parsed timestamp, else the time the line was read


# What a parser's framing gives of a line, for the rules that need nothing more
# (``rules/direct.py``): its event time, host, program and message, as ``parse`` would
# give them; host and program None when the line has none.
Framed = tuple[float, str | None, str | None, str]
FRAMED_FIELDS = {"host": 1, "program": 2, "message": 3}  # field -> its place in Framed

"""What every parser is: ``parse(line) -> fields | None`` plus the fields it keeps verbatim."""

from __future__ import annotations

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

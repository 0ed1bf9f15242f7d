"""Custom regex parsers (the ``parsers:`` section of the config).

Named groups become fields; an optional group that did not take part is absent. The
``timestamp`` group is parsed with ``time_format`` (strptime); a stamp without a year
(``%b %d %H:%M:%S``) gets one inferred from the read time like syslog, one without an
offset gets the configured timezone. ``types`` converts groups to int, float or an
``ipaddress`` object. A value that does not convert (``int`` of ``abc``, an ``ip`` that is
not an address) drops that one field and the line still parses: the other fields are still
worth matching on, and a rule on the dropped field simply does not match. A timestamp that
does not parse is dropped the same way: the event then uses the read time, and the line is
counted in ``stamp_failures`` (reported by ``test``, the daemon's log and ``status``).
``message`` is the whole line unless the regex has a ``message`` group.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from logwatchd.config.model import ParserConfig
from logwatchd.events import Line
from logwatchd.parsers.base import ALL_STRINGS, Fields, FieldSet, StampFailures, field_set
from logwatchd.parsers.timeutil import YearGuesser, parse_iso8601

_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "ip": ipaddress.ip_address,
}


class RegexParser:
    verbatim_fields = ALL_STRINGS  # converted values are not strings; str groups are slices

    def __init__(self, config: ParserConfig, tz: tzinfo) -> None:
        self.name = config.id
        self._search = config.regex.search
        self.time_format = config.time_format
        self._tz = tz
        self._years = YearGuesser(tz)
        self._needs_year = bool(config.time_format) and not any(
            code in (config.time_format or "") for code in ("%Y", "%y", "%G", "%s")
        )
        self._conversions = [
            (name, _CONVERTERS[kind])
            for name, kind in config.types.items()
            if kind in _CONVERTERS and name in config.regex.groupindex
        ]
        self._last_stamp: tuple[str, datetime | None] = ("", None)
        self.stamp_failures = StampFailures()

    @staticmethod
    def fields_of(config: ParserConfig) -> FieldSet:
        """The regex's named groups, plus ``message`` and ``raw``."""
        return field_set(*config.regex.groupindex)

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        found = self._search(raw)
        if found is None:
            return None
        fields: Fields = {k: v for k, v in found.groupdict().items() if v is not None}
        for name, convert in self._conversions:
            value = fields.get(name)
            if isinstance(value, str):
                try:
                    fields[name] = convert(value)
                except (ValueError, OverflowError):
                    del fields[name]
        stamp = fields.get("timestamp")
        if isinstance(stamp, str):
            parsed = self._stamp(stamp, line.read_time)
            if parsed is None:
                del fields["timestamp"]
                self.stamp_failures.add(stamp, raw)
            else:
                fields["timestamp"] = parsed
        fields.setdefault("message", raw)
        fields["raw"] = raw
        return fields

    def _stamp(self, text: str, read_time: float) -> datetime | None:
        last_text, last_value = self._last_stamp
        if text == last_text and not self._needs_year:
            return last_value
        value = self._convert_stamp(text, read_time)
        self._last_stamp = (text, value)
        return value

    def _convert_stamp(self, text: str, read_time: float) -> datetime | None:
        if not self.time_format:
            return parse_iso8601(text, self._tz)
        try:
            stamp = datetime.strptime(text, self.time_format)  # zone added below
        except (ValueError, OverflowError):
            return None
        if self._needs_year:
            year = self._years.year(stamp.month, stamp.day, read_time)
            if year is None:
                return None
            stamp = stamp.replace(year=year)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=self._tz)
        return stamp

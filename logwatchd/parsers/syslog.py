"""Syslog files: RFC 3164 (``Mmm dd hh:mm:ss host prog[pid]: msg``) and rsyslog's RFC 3339 form.

Debian 12's rsyslog writes ``2026-11-26T10:00:01.123456+01:00 host prog[pid]: msg``; the
classic form has no year, which is inferred from the time the line was read. The host is
optional (some BSD and embedded syslogs omit it) and the tag may be ``prog[pid]:``,
``prog:``, or ``[prog]`` with or without a colon. A stamped line whose tag cannot be found
still parses: its message is everything after the stamp. rsyslog's "message repeated N
times: [...]" is unfolded (``repeated.py``).
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from logwatchd.events import Framed, Line
from logwatchd.parsers.base import ALL_STRINGS, Fields, field_set
from logwatchd.parsers.repeated import unfold
from logwatchd.parsers.timeutil import MONTHS, YearGuesser

# A host never holds brackets and never ends with a colon, which tells "host prog:" from a
# host-less "prog: msg: more".
_TAG = (
    r"(?:(?:([^\s\[\]]*[^\s\[\]:]) )?"  # host
    r"(?:\[([^\]\s]+)\]:?|([^\s\[\]:]+)(?:\[(\d{0,10})\])?:)"  # [prog] | prog[pid]:
    r"(?: |$))?"
)
_BSD_LINE = re.compile(
    r"(([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6})\d*)?) " + _TAG
)
_ISO_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\S{8,32}) " + _TAG)
_CACHE_SIZE = 4096


class SyslogParser:
    name = "syslog"
    verbatim_fields = ALL_STRINGS
    fields = field_set("timestamp", "host", "program", "pid")

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        self._years = YearGuesser(tz)
        # stamps repeat (many lines per second): convert each text once per hour of reading
        self._stamps: dict[tuple[str, int], datetime | None] = {}
        self._last_text, self._last_read = "", -1.0
        self._last_stamp: datetime | None = None
        # frame(): the event time of each stamp text, for lines read in ``_framed_hour``
        self._framed_times: dict[str, float] = {}
        self._framed_read, self._framed_hour = -1.0, -1

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        found = _BSD_LINE.match(raw)
        if found is not None:
            groups = found.groups()
            # lines come in runs of the same second: the last stamp is the likeliest
            if groups[0] == self._last_text and line.read_time == self._last_read:
                stamp = self._last_stamp
            else:
                stamp = self._bsd_stamp(groups, line.read_time)
                self._last_text, self._last_read, self._last_stamp = (
                    groups[0], line.read_time, stamp
                )  # fmt: skip
            host, bprog, program, pid = groups[7:]
        else:
            found = _ISO_LINE.match(raw)
            if found is None:
                return None
            stamp_text, host, bprog, program, pid = found.groups()
            stamp = self._iso_stamp(stamp_text)
        if stamp is None:
            return None
        fields: Fields = {"timestamp": stamp, "raw": raw, "message": raw[found.end() :]}
        if raw.startswith("message repeated ", found.end()):
            unfold(fields)
        if host is not None:
            fields["host"] = host
        if bprog is not None:
            fields["program"] = bprog
        elif program is not None:
            fields["program"] = program
            if pid:
                fields["pid"] = int(pid)
        return fields

    def frame(self, raw: str, read_time: float) -> Framed | None:
        """A classic (RFC 3164) line's event time, host, program and message, as ``parse``
        and the event's time would give them, without the rest: for rules that need no more
        (``rules/direct.py``). None when the line needs ``parse``: another form, a stamp that
        does not convert, or a folded "message repeated"."""
        found = _BSD_LINE.match(raw)
        if found is None:
            return None
        groups = found.groups()
        times = self._framed_times
        if read_time != self._framed_read:
            self._framed_read = read_time
            hour = int(read_time // 3600)
            if hour != self._framed_hour:  # the year of a stamp depends on when it was read
                self._framed_hour = hour
                times.clear()
        if len(times) >= _CACHE_SIZE:
            times.clear()
        when = times.get(groups[0])
        if when is None:
            stamp = self._bsd_stamp(groups, read_time)
            if stamp is None:
                return None
            when = times[groups[0]] = stamp.timestamp()
        end = found.end()
        if raw.startswith("message repeated ", end):
            return None
        bprog, program = groups[8], groups[9]
        return (when, groups[7], bprog if bprog is not None else program, raw[end:])

    def _bsd_stamp(self, groups: tuple[str, ...], read_time: float) -> datetime | None:
        key = (groups[0], int(read_time // 3600))
        stamps = self._stamps
        if key in stamps:
            return stamps[key]
        if len(stamps) >= _CACHE_SIZE:
            stamps.clear()
        stamp = stamps[key] = self._bsd_convert(groups[1:7], read_time)
        return stamp

    def _bsd_convert(self, parts: tuple[str, ...], read_time: float) -> datetime | None:
        mon, day, hour, minute, second, frac = parts
        month = MONTHS.get(mon)
        if month is None:
            return None
        year = self._years.year(month, int(day), read_time)
        if year is None:
            return None
        micro = int(frac.ljust(6, "0")) if frac else 0
        try:
            return datetime(year, month, int(day), int(hour), int(minute), int(second), micro,
                            tzinfo=self._tz)  # fmt: skip
        except ValueError:  # 25:61:61 and friends
            return None

    def _iso_stamp(self, text: str) -> datetime | None:
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            return None
        return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=self._tz)

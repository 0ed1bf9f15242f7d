"""Syslog files: RFC 3164 (``Mmm dd hh:mm:ss host prog[pid]: msg``) and rsyslog's RFC 3339 form.

Debian 12's rsyslog writes ``2026-11-26T10:00:01.123456+01:00 host prog[pid]: msg``; the
classic form has no year, which is inferred from the time the line was read. The host is
optional (some BSD and embedded syslogs omit it) and the tag may be ``prog[pid]:``,
``prog:``, or ``[prog]`` with or without a colon. A stamped line whose tag cannot be found
still parses: its message is everything after the stamp.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from logwatchd.events import Line
from logwatchd.parsers.base import ALL_STRINGS, Fields
from logwatchd.parsers.timeutil import MONTHS, YearGuesser, parse_iso8601

# A host never holds brackets and never ends with a colon, which tells "host prog:" from a
# host-less "prog: msg: more".
_TAG = (
    r"(?:(?P<host>[^\s\[\]]*[^\s\[\]:]) )?"
    r"(?:\[(?P<bprog>[^\]\s]+)\]:?|(?P<program>[^\s\[\]:]+)(?:\[(?P<pid>\d{0,10})\])?:)"
    r"(?: |$)"
)
_BSD = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
    r"(?:\.(?P<frac>\d{1,6})\d*)? "
)
_ISO = re.compile(r"(?P<stamp>\d{4}-\d\d-\d\dT\S{8,32}) ")
_TAG_RE = re.compile(_TAG)


class SyslogParser:
    name = "syslog"
    verbatim_fields = ALL_STRINGS

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        self._years = YearGuesser(tz)

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        head = _BSD.match(raw)
        if head is not None:
            stamp = self._bsd_stamp(head, line.read_time)
        else:
            head = _ISO.match(raw)
            if head is None:
                return None
            stamp = parse_iso8601(head.group("stamp"), self._tz)
        if stamp is None:
            return None
        fields: Fields = {"timestamp": stamp, "raw": raw}
        start = head.end()
        tag = _TAG_RE.match(raw, start)
        if tag is None:
            fields["message"] = raw[start:]
            return fields
        host, bprog, program, pid = tag.group("host", "bprog", "program", "pid")
        if host is not None:
            fields["host"] = host
        fields["program"] = program if bprog is None else bprog
        if pid:
            fields["pid"] = int(pid)
        fields["message"] = raw[tag.end() :]
        return fields

    def _bsd_stamp(self, head: re.Match[str], read_time: float) -> datetime | None:
        month = MONTHS.get(head.group("mon"))
        if month is None:
            return None
        day = int(head.group("day"))
        year = self._years.year(month, day, read_time)
        if year is None:
            return None
        frac = head.group("frac")
        micro = int(frac.ljust(6, "0")) if frac else 0
        try:
            return datetime(
                year,
                month,
                day,
                int(head.group("h")),
                int(head.group("m")),
                int(head.group("s")),
                micro,
                tzinfo=self._tz,
            )
        except ValueError:  # 25:61:61 and friends
            return None

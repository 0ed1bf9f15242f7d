"""RFC 5424 syslog: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG``.

``<PRI>`` may be missing (files written by a relay that strips it). NILVALUE (``-``)
fields are left out. Fields: ``facility``, ``severity`` (ints, from PRI), ``timestamp``,
``host``, ``program`` (APP-NAME), ``pid`` (int when PROCID is numeric, else ``procid``),
``msgid``, ``structured_data`` (the raw SD text), ``message`` (a leading UTF-8 BOM dropped;
rsyslog's "message repeated N times: [...]" unfolded, see ``repeated.py``).
"""

from __future__ import annotations

import re
from datetime import tzinfo

from logwatchd.events import Line
from logwatchd.parsers.base import ALL_STRINGS, Fields, field_set
from logwatchd.parsers.repeated import unfold
from logwatchd.parsers.timeutil import parse_iso8601

_SD_ELEMENT = r'\[[^\]"\s]+(?:\s+[^=\]\s]+="(?:[^"\\]|\\.)*")*\s*\]'
_LINE = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?(?P<version>\d{1,2}) "
    r"(?P<stamp>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    rf"(?P<sd>-|(?:{_SD_ELEMENT})+)(?: \ufeff?(?P<message>.*))?",
    re.DOTALL,
)


class Rfc5424Parser:
    name = "rfc5424"
    verbatim_fields = ALL_STRINGS
    fields = field_set(
        "timestamp", "facility", "severity", "host", "program", "pid", "procid", "msgid",
        "structured_data",
    )  # fmt: skip

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        found = _LINE.match(raw)
        if found is None:
            return None
        fields: Fields = unfold({"raw": raw, "message": found.group("message") or ""})
        pri = found.group("pri")
        if pri is not None:
            value = int(pri)
            if value > 191:
                return None
            fields["facility"], fields["severity"] = divmod(value, 8)
        stamp = found.group("stamp")
        if stamp != "-":
            parsed = parse_iso8601(stamp, self._tz)
            if parsed is None:
                return None
            fields["timestamp"] = parsed
        for group, name in (("host", "host"), ("app", "program"), ("msgid", "msgid")):
            text = found.group(group)
            if text != "-":
                fields[name] = text
        procid = found.group("procid")
        if procid != "-":
            if procid.isdecimal() and len(procid) <= 10:
                fields["pid"] = int(procid)
            else:
                fields["procid"] = procid
        sd = found.group("sd")
        if sd != "-":
            fields["structured_data"] = sd
        return fields

"""Web server logs: nginx/apache combined access logs and their error logs.

Access (``nginx_combined``, ``apache_combined``; the same format): ``client_ip``, ``ident``,
``user`` (spaces included: a client chooses it), ``timestamp``, ``request``, ``method``,
``path``, ``protocol``, ``status`` (int), ``bytes`` (int, 0 for ``-``), ``referer``,
``user_agent``; fields logged as ``-`` are left out (``bytes`` excepted); fields after the
user agent are ignored; a request line that is not ``METHOD PATH PROTOCOL`` (garbage from
scanners) keeps only ``request``. Values are as
logged, escapes included (``\\x22``, ``\\"``), so all are verbatim.

``nginx_error``: ``level``, ``pid``, ``tid``, ``cid``, ``message`` (without the trailer),
``client_ip``, ``server``, ``request``, ``upstream``, ``host``, ``referrer``. The trailer is
the last ``, client: ADDR`` after which the rest of the line has nginx's trailer shape, so a
user name or URL that contains ``, client: `` does not decide the address.

``apache_error``: 2.4 ``[Thu Nov 26 10:00:01.123456 2026] [mod:level] [pid N:tid M] [client
ADDR:PORT] AHnnnnn: msg`` and 2.2 ``[Thu Nov 26 10:00:01 2026] [level] [client ADDR] msg``:
``module``, ``level``, ``pid``, ``tid``, ``client_ip`` (without port), ``client_port``,
``code`` (``AHnnnnn``), ``message`` (from the code on).
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from logwatchd.events import Line
from logwatchd.parsers.base import ALL_STRINGS, Fields, field_set
from logwatchd.parsers.timeutil import MONTHS, fixed_offset

_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
# $remote_user is what the client sent in its Authorization header: it may hold spaces (both
# servers write them as they are), never a bare '"' (nginx writes \x22, Apache \"). So the
# user runs up to the stamp that is followed by the request's opening quote: a fake
# '[stamp] "' inside the name would need a bare quote. Apache writes an empty user as "".
_ACCESS = re.compile(
    r'(\S+) (\S+) (""|(?:[^"\\]|\\.)*?) '
    r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\] "
    + _QUOTED
    + r" (\d{3}) (\d+|-)(?: "
    + _QUOTED
    + " "
    + _QUOTED
    + ")?"
)
_REQUEST = re.compile(r"([A-Za-z_-]+) (\S+)(?: (\S+))?")


class AccessLogParser:
    verbatim_fields = ALL_STRINGS
    fields = field_set(
        "timestamp", "client_ip", "ident", "user", "request", "method", "path", "protocol",
        "status", "bytes", "referer", "user_agent",
    )  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self._last_stamp: tuple[tuple[str, ...], datetime | None] = ((), None)

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        found = _ACCESS.match(raw)
        if found is None:
            return None
        parts = found.groups()
        stamp = self._stamp(parts[3:12])
        if stamp is None:
            return None
        fields: Fields = {"raw": raw, "message": raw, "timestamp": stamp, "client_ip": parts[0]}
        for name, value in (("ident", parts[1]), ("user", parts[2])):
            if value != "-":
                fields[name] = value
        request = parts[12]
        fields["request"] = request
        shaped = _REQUEST.fullmatch(request)
        if shaped is not None:
            fields["method"], fields["path"] = shaped.group(1, 2)
            if shaped.group(3) is not None:
                fields["protocol"] = shaped.group(3)
        fields["status"] = int(parts[13])
        size = parts[14]
        fields["bytes"] = 0 if size == "-" or len(size) > 18 else int(size)
        for name, value in (("referer", parts[15]), ("user_agent", parts[16])):
            if value is not None and value != "-":
                fields[name] = value
        return fields

    def _stamp(self, parts: tuple[str, ...]) -> datetime | None:
        # Busy servers log many lines per second: reuse the last conversion.
        last_parts, last_value = self._last_stamp
        if parts == last_parts:
            return last_value
        value = _access_stamp(parts)
        self._last_stamp = (parts, value)
        return value


def _access_stamp(parts: tuple[str, ...]) -> datetime | None:
    day, mon, year, hour, minute, second, sign, off_h, off_m = parts
    month = MONTHS.get(mon)
    zone = fixed_offset(sign, int(off_h), int(off_m))
    if month is None or zone is None:
        return None
    try:
        return datetime(
            int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
    except ValueError:
        return None


_NGINX_HEAD = re.compile(
    r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[([a-z]+)\] (\d+)#(\d+): (?:\*(\d+) )?"
)
_NGINX_TRAILER = re.compile(
    r", client: ((?:unix:)?[0-9A-Fa-f:.]*)"
    r"(?:, server: ([^,]*))?"
    r'(?:, request: "([^"]*)")?'
    r'(?:, subrequest: "[^"]*")?'
    r'(?:, upstream: "([^"]*)")?'
    r'(?:, host: "([^"]*)")?'
    r'(?:, referrer: "([^"]*)")?'
    r"\s*$"
)
_TRAILER_NAMES = ("client_ip", "server", "request", "upstream", "host", "referrer")


class NginxErrorParser:
    name = "nginx_error"
    verbatim_fields = ALL_STRINGS
    fields = field_set("timestamp", "level", "pid", "tid", "cid", *_TRAILER_NAMES)

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        head = _NGINX_HEAD.match(raw)
        if head is None:
            return None
        year, month, day, hour, minute, second, level, pid, tid, cid = head.groups()
        try:
            stamp = datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second),
                tzinfo=self._tz,
            )  # fmt: skip
        except ValueError:
            return None
        fields: Fields = {"raw": raw, "timestamp": stamp, "level": level}
        fields["pid"], fields["tid"] = int(pid), int(tid)
        if cid is not None:
            fields["cid"] = int(cid)
        body_start = head.end()
        trailer = _find_trailer(raw, body_start)
        if trailer is None:
            fields["message"] = raw[body_start:]
            return fields
        fields["message"] = raw[body_start : trailer.start()]
        for name, value in zip(_TRAILER_NAMES, trailer.groups(), strict=True):
            if value is not None:
                fields[name] = value
        return fields


def _find_trailer(raw: str, start: int) -> re.Match[str] | None:
    end = len(raw)
    for _ in range(8):  # bounded: a hostile line may hold many ", client: "
        at = raw.rfind(", client: ", start, end)
        if at == -1:
            return None
        trailer = _NGINX_TRAILER.match(raw, at)
        if trailer is not None:
            return trailer
        end = at
    return None


_APACHE = re.compile(
    r"\[[A-Z][a-z]{2} ([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? (\d{4})\] "
    r"\[(?:([^\]\s:]*):)?([a-z]+\d?)\] "
    r"(?:\[pid (\d+)(?::tid (\d+))?\] )?"
    r"(?:\[client (?:\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^\]\s]+))\] )?"
    r"(?:\[remote [^\]\s]*\] )?"
    r"(?:(AH\d{5}): )?"
)


class ApacheErrorParser:
    name = "apache_error"
    verbatim_fields = ALL_STRINGS
    fields = field_set(
        "timestamp", "level", "module", "pid", "tid", "client_ip", "client_port", "code"
    )

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        found = _APACHE.match(raw)
        if found is None:
            return None
        mon, day, hour, minute, second, frac, year, module, level = found.groups()[:9]
        stamp = self._stamp(mon, day, hour, minute, second, frac, year)
        if stamp is None:
            return None
        pid, tid, client6, port, client, code = found.groups()[9:]
        if client is not None and client.count(":") == 1:
            client, port = client.split(":")  # 2.4 "1.2.3.4:5678"; a bare IPv6 has more colons
        fields: Fields = {"raw": raw, "timestamp": stamp, "level": level}
        if module:
            fields["module"] = module
        if pid is not None:
            fields["pid"] = int(pid)
        if tid is not None:
            fields["tid"] = int(tid)
        client_ip = client6 or client
        if client_ip:
            fields["client_ip"] = client_ip
        if port and port.isdigit() and len(port) <= 5:
            fields["client_port"] = int(port)
        if code is not None:
            fields["code"] = code
            fields["message"] = raw[found.start(15) :]
        else:
            fields["message"] = raw[found.end() :]
        return fields

    def _stamp(self, *parts: str | None) -> datetime | None:
        mon, day, hour, minute, second, frac, year = parts
        month = MONTHS.get(mon or "")
        if month is None:
            return None
        micro = int(frac.ljust(6, "0")) if frac else 0
        try:
            return datetime(
                int(year or 0), month, int(day or 0), int(hour or 0), int(minute or 0),
                int(second or 0), micro, tzinfo=self._tz,
            )  # fmt: skip
        except ValueError:
            return None

"""Journal records: from the journal source (``line.fields``) or ``journalctl -o json`` text.

Fields journald sets itself, from the kernel's view of the process that logged (a local
user cannot choose them): ``comm`` (_COMM, the process name), ``exe`` (_EXE, the path of
its executable), ``uid`` (_UID, int, its real user id), ``unit`` (_SYSTEMD_UNIT, from its
cgroup), ``pid`` (_PID, int; SYSLOG_PID only when there is no _PID), ``host`` (_HOSTNAME),
``timestamp`` (__REALTIME_TIMESTAMP, else _SOURCE_REALTIME_TIMESTAMP). Fields the logging
process writes, so any local user can forge them (``logger -t sshd``): ``message``
(MESSAGE), ``program`` (SYSLOG_IDENTIFIER, else _COMM), ``priority`` (PRIORITY, int) and
every other field without a leading underscore (UNIT, SYSLOG_PID, ...). A rule that must
not be fooled selects on the first kind (the shipped packs do: ``comm`` and ``uid``, or
``exe``); ``program`` only says what the process claims to be. Note that ``comm`` alone is
not proof either (any program can be named ``sshd``); ``uid`` 0 or ``exe`` is. The first
kind can be trusted only as far as the journal itself: records read by the journald source
(remote journals: as far as the host that wrote them), not JSON text from a pipe.

Every other journal field is kept under its own name (``_UID``, ``_TRANSPORT``,
``__CURSOR``...) so rules can select on any of them. Values that are lists of
ints (how ``journalctl -o json`` writes non-UTF-8 data) are decoded with replacement;
a field logged several times (a list of values) keeps its first value; other non-string
values (journalctl's null for values over 4 KiB without ``-a``) are left out.

``verbatim_fields`` is ``message`` and ``raw``: the journal source puts MESSAGE in
``line.raw``. JSON text (``journalctl -o json`` replayed by ``test`` or read from stdin) is
also accepted when ``line.fields`` is None, but there MESSAGE is JSON-encoded inside
``raw`` (quotes and backslashes escaped, non-UTF-8 bytes as a list of numbers), so the
rules' scan of that raw text could wrongly skip the line. Whoever feeds such text should
first turn each line into a record line with ``record_line`` (as the journal source does),
then scan and parse that.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from logwatchd.events import Line
from logwatchd.parsers.base import Fields, field_set
from logwatchd.parsers.jsonlines import json_object

_FIELD_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# (field, journal field) of what journald itself records about the logging process
_TRUSTED = (("comm", "_COMM"), ("exe", "_EXE"), ("unit", "_SYSTEMD_UNIT"), ("host", "_HOSTNAME"))


def record_line(line: Line) -> Line | None:
    """A ``journalctl -o json`` text line as the journal source would deliver it:
    ``fields`` = the record, ``raw`` = MESSAGE. None when the text is not such a record."""
    record = json_object(line.raw)
    if record is None:
        return None
    message = _text(record.get("MESSAGE"))
    if message is None:
        return None
    return Line(
        source=line.source, raw=message, read_time=line.read_time, origin=line.origin,
        path=line.path, lineno=line.lineno, truncated=line.truncated, fields=record,
    )  # fmt: skip


class JournaldParser:
    name = "journald"
    verbatim_fields = frozenset({"message", "raw"})
    fields = field_set(
        "timestamp", "program", "unit", "host", "pid", "priority", "comm", "exe", "uid",
        more=_FIELD_NAME.pattern, more_text="any journal field (UPPER_CASE)",
    )  # fmt: skip

    def parse(self, line: Line) -> Fields | None:
        record = line.fields
        if record is None:
            return self._from_json(line)
        if not isinstance(record, dict):
            return None
        # raw is the source's MESSAGE (cut to max_line_bytes when long): the message must be
        # exactly that text for the scan's sake
        return _fields(record, line.raw, line.raw)

    def _from_json(self, line: Line) -> Fields | None:
        record = json_object(line.raw)
        return None if record is None else _fields(record, line.raw, None)


def _fields(record: dict[str, Any], raw: str, message: str | None) -> Fields | None:
    if message is None:
        message = _text(record.get("MESSAGE"))
        if message is None:
            return None
    fields: Fields = {}
    for key, value in record.items():
        text = _text(value)
        # JSON text may hold any key; a journal field name is what the field set declares
        if text is not None and isinstance(key, str) and _FIELD_NAME.fullmatch(key):
            fields[key] = text
    fields["message"] = message
    fields["raw"] = raw
    program = fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM")
    if program:
        fields["program"] = program
    for name, key in _TRUSTED:
        if key in fields:
            fields[name] = fields[key]
    _put_int(fields, "pid", fields.get("_PID") or fields.get("SYSLOG_PID"))
    _put_int(fields, "uid", fields.get("_UID"))
    _put_int(fields, "priority", fields.get("PRIORITY"))
    stamp = _micros(fields.get("__REALTIME_TIMESTAMP") or fields.get("_SOURCE_REALTIME_TIMESTAMP"))
    if stamp is not None:
        fields["timestamp"] = stamp
    return fields


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and value:
        if all(isinstance(item, int) and 0 <= item < 256 for item in value):
            return bytes(value).decode("utf-8", "replace")
        return _text(value[0]) if isinstance(value[0], str | list) else None
    return None


def _put_int(fields: Fields, name: str, value: str | None) -> None:
    if value and len(value) <= 18 and value.isascii() and value.isdigit():
        fields[name] = int(value)


def _micros(value: str | None) -> datetime | None:
    if not value or len(value) > 18 or not value.isascii() or not value.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1_000_000, UTC)
    except (OverflowError, OSError, ValueError):
        return None

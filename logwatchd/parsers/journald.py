"""Journal records: from the journal source (``line.fields``) or ``journalctl -o json`` text.

Fields: ``message`` (MESSAGE), ``program`` (SYSLOG_IDENTIFIER, else _COMM), ``unit``
(_SYSTEMD_UNIT, else UNIT for systemd's own messages), ``pid`` (SYSLOG_PID, else _PID, int),
``priority`` (int), ``host`` (_HOSTNAME), ``timestamp`` (__REALTIME_TIMESTAMP, else
_SOURCE_REALTIME_TIMESTAMP). Every other journal field is kept under its own name (``_UID``,
``_TRANSPORT``, ``__CURSOR``...) so rules can select on any of them. Values that are lists of
ints (how ``journalctl -o json`` writes non-UTF-8 data) are decoded with replacement;
a field logged several times (a list of values) keeps its first value; other non-string
values (journalctl's null for values over 4 KiB without ``-a``) are left out.

``verbatim_fields`` is ``message`` and ``raw``: the journal source puts MESSAGE in
``line.raw``. For ``journalctl -o json`` text (no ``line.fields``), ``raw`` is the JSON
line and MESSAGE appears in it JSON-encoded: every character of the message is unchanged
except a quote, a backslash and control characters (and non-ASCII ones if the producer used
``\\uXXXX``; journalctl does not). So a prefilter literal free of those characters is in
``raw`` whenever it is in ``message``; rule packs keep their literals so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from logwatchd.events import Line
from logwatchd.parsers.base import Fields

_MAX_JSON_CHARS = 1 << 20


class JournaldParser:
    name = "journald"
    verbatim_fields = frozenset({"message", "raw"})

    def parse(self, line: Line) -> Fields | None:
        record = line.fields
        if record is None:
            return self._from_json(line)
        if not isinstance(record, dict):
            return None
        return _fields(record, line.raw)

    def _from_json(self, line: Line) -> Fields | None:
        raw = line.raw
        if not raw.startswith("{") or len(raw) > _MAX_JSON_CHARS:
            return None
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if not isinstance(record, dict):
            return None
        return _fields(record, raw)


def _fields(record: dict[str, Any], raw: str) -> Fields | None:
    message = _text(record.get("MESSAGE"))
    if message is None:
        return None
    fields: Fields = {}
    for key, value in record.items():
        text = _text(value)
        if text is not None and isinstance(key, str):
            fields[key] = text
    fields["message"] = message
    fields["raw"] = raw
    program = fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM")
    if program:
        fields["program"] = program
    unit = fields.get("_SYSTEMD_UNIT") or fields.get("UNIT")
    if unit:
        fields["unit"] = unit
    if "_HOSTNAME" in fields:
        fields["host"] = fields["_HOSTNAME"]
    _put_int(fields, "pid", fields.get("SYSLOG_PID") or fields.get("_PID"))
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

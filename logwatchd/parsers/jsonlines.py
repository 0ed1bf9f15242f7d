"""JSON lines (builtin ``json``): each line one JSON object, keys become fields.

Nested objects are flattened with dots (``{"http": {"status": 500}}`` gives
``http.status``), down to 16 levels (deeper ones stay as the object). Lists stay lists.
``timestamp`` comes from the first of ``timestamp``, ``time``, ``@timestamp``, ``ts`` that
is an ISO 8601 string or an epoch number (seconds, milliseconds or microseconds; when
none of them is, but one is a string, the line counts in ``stamp_failures``);
``message`` from ``message`` or ``msg`` when a string, else the whole line. Values are
JSON-decoded, so only ``raw`` is promised verbatim.
"""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from typing import Any

from logwatchd.events import Line
from logwatchd.parsers.base import ANY_FIELDS, Fields, StampFailures
from logwatchd.parsers.timeutil import from_epoch, parse_iso8601

_MAX_DEPTH = 16
_MAX_JSON_CHARS = 1 << 20
_STAMP_KEYS = ("timestamp", "time", "@timestamp", "ts")
_MESSAGE_KEYS = ("message", "msg")


class JsonParser:
    name = "json"
    verbatim_fields = frozenset({"raw"})
    fields = ANY_FIELDS

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        self.stamp_failures = StampFailures()

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        record = json_object(raw)
        if record is None:
            return None
        fields: Fields = {}
        _flatten(record, "", fields, 0)
        stamp = self._stamp(record)
        if stamp is not None:
            fields["timestamp"] = stamp
        else:
            fields.pop("timestamp", None)  # a field named timestamp must be a datetime
            text = next((v for k in _STAMP_KEYS if isinstance(v := record.get(k), str)), None)
            if text is not None:
                self.stamp_failures.add(text, raw)
        message = next(
            (record[key] for key in _MESSAGE_KEYS if isinstance(record.get(key), str)), raw
        )
        fields["message"] = message
        fields["raw"] = raw
        return fields

    def _stamp(self, record: dict[str, Any]) -> datetime | None:
        for key in _STAMP_KEYS:
            value = record.get(key)
            if isinstance(value, str):
                stamp = parse_iso8601(value, self._tz)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                stamp = from_epoch(value)
            else:
                continue
            if stamp is not None:
                return stamp
        return None


def json_object(text: str) -> dict[str, Any] | None:
    """``text`` decoded when it is one JSON object (of at most 1 MiB), else None."""
    if not text.lstrip().startswith("{") or len(text) > _MAX_JSON_CHARS:
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _flatten(value: dict[str, Any], prefix: str, out: Fields, depth: int) -> None:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and depth < _MAX_DEPTH:
            _flatten(item, name + ".", out, depth + 1)
        else:
            out[name] = item

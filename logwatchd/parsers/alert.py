"""Published alerts as events (builtin ``alert``): what a fleet aggregator reads from NATS.

A line is one alert object as the ``nats`` and ``file`` handlers write it. Its fields are
every field of the alert's event (``ip``, ``user``, ``program``, ...), then every key field,
then the alert's own ``host``, ``rule``, ``severity``, ``count``, ``tags`` and ``alert_id``
(later ones win: the publishing daemon's ``host`` is never a log line's ``host``). The event
time is the alert's ``last_seen``; ``message`` is the original event's message (its raw line
when it had none), ``raw`` the alert's JSON. The field names are open-ended, as with
``json``: they are whatever the publishing hosts' parsers and rules produced.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from logwatchd.events import Line
from logwatchd.parsers.base import ANY_FIELDS, Fields
from logwatchd.parsers.jsonlines import json_object
from logwatchd.parsers.timeutil import parse_iso8601


class AlertParser:
    name = "alert"
    # values are JSON-decoded: only raw is promised verbatim (escapes differ from the text)
    verbatim_fields = frozenset({"raw"})
    fields = ANY_FIELDS  # every key and event field of the published alert

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz

    def parse(self, line: Line) -> Fields | None:
        raw = line.raw
        record = json_object(raw)  # at most 1 MiB, NATS's default max_payload
        if record is None:
            return None
        rule, host = record.get("rule"), record.get("host")
        if not isinstance(rule, str) or not isinstance(host, str):
            return None  # not an alert object
        event = _mapping(record.get("event"))
        fields: Fields = dict(_mapping(event.get("fields")))
        fields.update(_mapping(record.get("key")))
        fields.update(
            host=host,
            rule=rule,
            severity=record.get("severity"),
            count=record.get("count"),
            tags=record.get("tags"),
            alert_id=record.get("id"),
        )
        message = fields.get("message")
        if not isinstance(message, str):
            original = event.get("raw")
            fields["message"] = original if isinstance(original, str) else raw
        fields["raw"] = raw
        fields.pop("timestamp", None)  # the event's, as text: the alert's own time replaces it
        last_seen = record.get("last_seen")
        stamp = parse_iso8601(last_seen, self._tz) if isinstance(last_seen, str) else None
        if stamp is not None:
            fields["timestamp"] = stamp
        return fields


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {key: item for key, item in value.items() if isinstance(key, str)}

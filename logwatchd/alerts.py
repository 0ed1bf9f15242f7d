"""The alert object (README: "The alert object"), and its stable id."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

MAX_SAMPLES = 10
_ID_JSON = json.JSONEncoder(sort_keys=True, default=str)  # one encoder: it runs per alert


def alert_id(rule: str, key: dict[str, Any], first_origin: str, host: str) -> str:
    """Stable across restarts: the same rule, key and first contributing line give the same id.

    The host is part of it: two hosts whose logs hold identical lines at the same offsets
    fire two alerts, and a fleet stream that drops repeated ids must keep both.
    """
    text = _ID_JSON.encode([rule, key, first_origin, host])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def isoformat(ts: float, *, millis: bool = False) -> str:
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC).astimezone()
    return stamp.isoformat(timespec="milliseconds" if millis else "seconds")


_PLAIN = frozenset({str, int, float, bool, type(None)})  # JSON as they are


def jsonable(value: Any) -> Any:
    """Field values as JSON: datetimes as ISO 8601, IPs and other objects as strings."""
    if value.__class__ in _PLAIN or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value.__class__ is dict:  # fields: mostly plain values, looked at once each
        return {
            k if k.__class__ is str else str(k): v if v.__class__ in _PLAIN else jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


@dataclass
class Alert:
    id: str
    rule: str
    severity: str
    tags: list[str]
    key: dict[str, Any]
    count: int
    suppressed: int
    first_seen: float
    last_seen: float
    fired_at: float
    host: str
    source: str
    path: str | None
    raw: str
    fields: dict[str, Any]
    events: list[str] = field(default_factory=list)
    handlers: tuple[str, ...] = ()  # where it goes; not part of the JSON object

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "tags": list(self.tags),
            "key": jsonable(self.key),
            "count": self.count,
            "suppressed": self.suppressed,
            "first_seen": isoformat(self.first_seen),
            "last_seen": isoformat(self.last_seen),
            "fired_at": isoformat(self.fired_at, millis=True),
            "host": self.host,
            "event": {
                "source": self.source,
                "path": self.path,
                "raw": self.raw,
                "fields": jsonable(self.fields),
            },
            "events": list(self.events[-MAX_SAMPLES:]),
        }


def sample_alert() -> dict[str, Any]:
    """A representative alert for rendering templates at ``check`` time."""
    return Alert(
        id="0" * 32,
        rule="sample-rule",
        severity="high",
        tags=["sample"],
        key={"ip": "203.0.113.9"},
        count=5,
        suppressed=0,
        first_seen=1_700_000_000.0,
        last_seen=1_700_000_060.0,
        fired_at=1_700_000_060.5,
        host="localhost",
        source="app",
        path="/var/log/app.log",
        raw="2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9",
        fields={"event_type": "SecurityBreach", "ip": "203.0.113.9", "message": "sample"},
        events=["2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9"],
    ).to_dict()

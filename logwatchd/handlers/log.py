"""Write alerts to the daemon's own structured log (the journal, under systemd)."""

from __future__ import annotations

from typing import Any

import structlog

from logwatchd.config.model import HandlerConfig
from logwatchd.templates import HostInfo, Templates

# syslog priorities, which the journal logger turns into PRIORITY=
PRIORITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
_LEVEL = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}


class LogHandler:
    def __init__(self, cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> None:
        self.name = cfg.name
        self._log = structlog.get_logger("logwatchd.alert")

    def fields(self, alert: dict[str, Any]) -> dict[str, Any]:
        severity = str(alert.get("severity"))
        event = alert.get("event") or {}
        return {
            "rule": alert.get("rule"),
            "severity": severity,
            "key": alert.get("key"),
            "count": alert.get("count"),
            "suppressed": alert.get("suppressed"),
            "priority": PRIORITY.get(severity, 5),
            "alert_id": alert.get("id"),
            "source": event.get("source"),
            "raw": event.get("raw"),
        }

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"entries": [self.fields(alert) for alert in alerts]}

    def send(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            fields = self.fields(alert)
            level = _LEVEL.get(fields["severity"], "info")
            getattr(self._log, level)("alert", **fields)

    def close(self) -> None:
        return None

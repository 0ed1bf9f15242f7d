"""What a report shows, gathered from the state database's history or from a replay of logs.

Both give the same ``ReportData``: matches ("events") and alerts per rule over time, the
keys (addresses, users: the rules' ``group_by`` fields) seen most, lines and parse failures
per source, and delivery times per handler. Counts over time are kept per minute (per 10
minutes from the database, which stores them so) and coarsened for the charts.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from logwatchd.alerts import Alert, jsonable
from logwatchd.config.model import Config
from logwatchd.state_view import HandlerTimes, StateView

TOP_KEYS = 10
LATEST_ALERTS = 20
MINUTE = 60
STORED_BUCKET = 600  # the state database's activity rows
WIDTHS = (60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400)  # seconds per chart bar
MAX_BARS = 150


@dataclass
class KeyCount:
    value: str
    events: int = 0  # matches (replay) or events counted into alerts (history)
    alerts: int = 0
    rules: set[str] = field(default_factory=set)


@dataclass
class AlertRow:
    at: float
    rule: str
    severity: str
    key: dict[str, Any]
    count: int


@dataclass
class ReportData:
    origin: str  # what the report was made from, for its title
    events_label: str  # what "events" counts: matches, or events that made alerts
    step: int = MINUTE  # seconds per stored bucket
    events: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    alerts: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    keys: dict[str, dict[str, KeyCount]] = field(default_factory=lambda: defaultdict(dict))
    sources: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    handlers: dict[str, HandlerTimes] = field(default_factory=dict)
    latest: list[AlertRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    start: float | None = None
    end: float | None = None

    # --- adding -------------------------------------------------------------------------

    def saw(self, at: float) -> None:
        self.start = at if self.start is None else min(self.start, at)
        self.end = at if self.end is None else max(self.end, at)

    def event(self, rule: str, at: float, count: int = 1) -> None:
        self.events[rule][int(at) // self.step * self.step] += count
        self.saw(at)

    def alert(self, row: AlertRow, fields: Iterable[str], events: int) -> None:
        self.alerts[row.rule][int(row.at) // self.step * self.step] += 1
        self.saw(row.at)
        for name in fields:
            if name in row.key:
                entry = self.key(name, row.key[name])
                entry.alerts += 1
                entry.events += events
                entry.rules.add(row.rule)
        self.latest.append(row)
        if len(self.latest) > 4 * LATEST_ALERTS:
            self._trim_latest()

    def key(self, name: str, value: Any) -> KeyCount:
        text = str(jsonable(value))
        table = self.keys[name]
        entry = table.get(text)
        if entry is None:
            entry = table[text] = KeyCount(text)
        return entry

    def _trim_latest(self) -> None:
        self.latest = sorted(self.latest, key=lambda row: row.at)[-LATEST_ALERTS:]

    # --- reading ------------------------------------------------------------------------

    def rules(self) -> list[tuple[str, int, int]]:
        """(rule, events, alerts), busiest first."""
        names = set(self.events) | set(self.alerts)
        totals = [
            (name, sum(self.events[name].values()), sum(self.alerts[name].values()))
            for name in names
        ]
        return sorted(totals, key=lambda row: (-row[1], -row[2], row[0]))

    def top_keys(self) -> dict[str, list[KeyCount]]:
        return {
            name: sorted(table.values(), key=lambda k: (-k.events, -k.alerts, k.value))[:TOP_KEYS]
            for name, table in sorted(self.keys.items())
            if table
        }

    def latest_alerts(self) -> list[AlertRow]:
        self._trim_latest()
        return list(reversed(self.latest))

    def width(self) -> int:
        """Seconds per chart bar: at most ``MAX_BARS`` bars over the report's span."""
        span = (self.end or 0) - (self.start or 0)
        for width in WIDTHS:
            if width >= self.step and span / width <= MAX_BARS:
                return width
        return WIDTHS[-1]

    def series(self, kind: str) -> tuple[list[int], dict[str, list[int]]]:
        """Bar starts, and per rule its count per bar, for ``events`` or ``alerts``."""
        counts = self.events if kind == "events" else self.alerts
        width = self.width()
        if self.start is None or self.end is None:
            return [], {}
        first = int(self.start) // width * width
        starts = list(range(first, int(self.end) + 1, width))
        series = {}
        for rule, per_bucket in counts.items():
            bars = [0] * len(starts)
            for bucket, count in per_bucket.items():
                bars[(bucket - first) // width] += count
            if any(bars):
                series[rule] = bars
        return starts, series


def key_fields(config: Config | None) -> list[str]:
    """The fields alerts are grouped by: what "top keys" means (addresses, users...)."""
    if config is None:
        return []
    return sorted({name for rule in config.rules for name in rule.group_by})


# --- from the state database --------------------------------------------------------------


def from_history(view: StateView, since: float, fields: list[str], origin: str) -> ReportData:
    data = ReportData(origin, "events in alerts", step=STORED_BUCKET)
    for bucket, rule, count in view.activity("matches", since):
        data.event(rule, bucket, count)
    for bucket, source, count in view.activity("lines", since):
        data.sources[source]["lines"] += count
        data.saw(bucket)
    for bucket, source, count in view.activity("unparsed", since):
        data.sources[source]["unparsed"] += count
        data.saw(bucket)
    for alert in view.alerts(since):
        row = AlertRow(alert.fired_at, alert.rule, alert.severity, alert.key, alert.count)
        data.alert(row, fields or list(alert.key), alert.count + alert.suppressed)
    data.handlers = view.handler_times(since)
    if data.start is not None:
        data.start = max(data.start, since)
    data.end = max(data.end or 0.0, time.time())
    return data


# --- from a replay ------------------------------------------------------------------------


def replayed_match(data: ReportData, match: Any, at: float, fields: list[str]) -> None:
    """A match of the replay (``rules.Match``) at event time ``at``."""
    data.event(match.rule, at)
    for name in fields:
        value = match.fields.get(name)
        if value is not None:
            entry = data.key(name, value)
            entry.events += 1
            entry.rules.add(match.rule)


def replayed_alert(data: ReportData, alert: Alert, fields: list[str]) -> None:
    row = AlertRow(alert.last_seen, alert.rule, alert.severity, alert.key, alert.count)
    data.alert(row, fields or list(alert.key), 0)  # its events were counted as matches


def replay_origin(files: list[str]) -> str:
    names = ", ".join(os.path.basename(name) if name != "-" else "stdin" for name in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return f"replay of {names}{more}"

"""Read-only queries on the state database, for ``status``, ``/metrics`` and ``report``.

A view never writes and never takes the write lock, so it can run next to the daemon (or
after it stopped) without holding it up. A table an older daemon did not create yet reads as
empty.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from logwatchd.state_health import state_error

BUSY_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    pending: int = 0
    oldest: float | None = None  # creation time of the oldest pending row
    failed: int = 0


@dataclass(frozen=True, slots=True)
class HandlerHealth:
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    @property
    def current_error(self) -> str | None:
        """The last error, unless a delivery succeeded after it."""
        if self.last_error_at is None:
            return None
        if self.last_success is not None and self.last_success >= self.last_error_at:
            return None
        return self.last_error


@dataclass(frozen=True, slots=True)
class HistoricAlert:
    rule: str
    source: str
    severity: str
    key: dict[str, Any]
    count: int
    suppressed: int
    first_seen: float
    last_seen: float
    fired_at: float


@dataclass(frozen=True, slots=True)
class HandlerTimes:
    """Deliveries of one handler in a period: how many, how many failed, how long they took."""

    delivered: int
    failed: int
    mean_seconds: float
    p95_seconds: float
    max_seconds: float
    max_wait: float  # longest time from queued to delivered


class StateView:
    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        self.path = path
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)

    @classmethod
    def in_dir(cls, state_dir: str) -> StateView:
        return cls(os.path.join(state_dir, "state.db"))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise state_error(self.path, exc) from None
        except sqlite3.DatabaseError as exc:  # a damaged file: one line, not a traceback
            raise state_error(self.path, exc) from None

    # --- what the daemon wrote about itself ---------------------------------------------

    def daemon_status(self) -> dict[str, Any] | None:
        """The counters the daemon last committed (see ``service.tally``), or None."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'status'")
        return json.loads(rows[0][0]) if rows else None

    def sources(self) -> dict[str, tuple[dict[str, Any], float]]:
        """Per source, its committed checkpoint and when it was committed."""
        rows = self._rows("SELECT source, state, updated FROM sources ORDER BY source")
        return {source: (json.loads(state), updated) for source, state, updated in rows}

    def source_counts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per source, counters kept across restarts (``timestamp_unparsed``...): count, the
        latest sample, when it was last added to."""
        rows = self._rows("SELECT source, name, count, sample, updated FROM source_counts")
        counts: dict[str, dict[str, dict[str, Any]]] = {}
        for source, name, count, sample, updated in rows:
            entry = {"count": count, "sample": sample, "updated": updated}
            counts.setdefault(source, {})[name] = entry
        return counts

    # --- the outbox ----------------------------------------------------------------------

    def outbox(self) -> dict[str, OutboxDepth]:
        sql = (
            "SELECT handler, sum(status = 'pending'), min(CASE WHEN status = 'pending' "
            "THEN created END), sum(status = 'failed') FROM outbox "
            "WHERE status != 'done' GROUP BY handler"
        )
        rows = self._rows(sql)
        return {
            handler: OutboxDepth(int(pending or 0), oldest, int(failed or 0))
            for handler, pending, oldest, failed in rows
        }

    def handler_health(self) -> dict[str, HandlerHealth]:
        sql = "SELECT handler, last_success, last_error, last_error_at FROM handler_status"
        rows = self._rows(sql)
        return {row[0]: HandlerHealth(*row[1:]) for row in rows}

    def held_back(self) -> dict[str, tuple[int, float | None]]:
        """Per handler, the alerts its rate limit holds back now, and since when."""
        rows = self._rows("SELECT key, value FROM meta WHERE substr(key, 1, 10) = 'held_back.'")
        held = {}
        for key, value in rows:
            entry = json.loads(value)
            held[key.partition(".")[2]] = (int(entry["held"]), entry.get("since"))
        return held

    def active_actions(self) -> dict[str, int]:
        """Per handler, the actions (such as bans) in force now: what
        ``actions.active_actions`` lists, counted."""
        sql = (
            "SELECT handler, count(*) FROM actions WHERE state = 'active' AND until > ? "
            "GROUP BY handler"
        )
        return {handler: int(count) for handler, count in self._rows(sql, (time.time(),))}

    def failed(self, limit: int = 20) -> list[dict[str, Any]]:
        sql = (
            "SELECT alert_id, handler, rule, attempts, last_error, updated FROM outbox "
            "WHERE status = 'failed' ORDER BY updated DESC LIMIT ?"
        )
        names = ("alert_id", "handler", "rule", "attempts", "error", "at")
        rows = self._rows(sql, (limit,))
        return [dict(zip(names, row, strict=True)) for row in rows]

    # --- history, for report -------------------------------------------------------------

    def alerts(self, since: float) -> list[HistoricAlert]:
        sql = (
            "SELECT rule, source, severity, key, count, suppressed, first_seen, last_seen, "
            "fired_at FROM alert_history WHERE fired_at >= ? ORDER BY fired_at"
        )
        rows = self._rows(sql, (since,))
        return [HistoricAlert(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in rows]

    def activity(self, kind: str, since: float) -> list[tuple[int, str, int]]:
        """(bucket start, name, count) rows of one kind: lines, unparsed, matches."""
        sql = (
            "SELECT bucket, name, value FROM activity WHERE kind = ? AND bucket >= ? "
            "ORDER BY bucket"
        )
        rows = self._rows(sql, (kind, int(since)))
        return [(int(b), str(n), int(v)) for b, n, v in rows]

    def handler_times(self, since: float) -> dict[str, HandlerTimes]:
        sql = (
            "SELECT handler, sum(result = 'delivered'), sum(result = 'failed'), "
            "avg(seconds), max(seconds), max(CASE WHEN result = 'delivered' "
            "THEN finished - queued END), count(seconds) FROM delivery_history "
            "WHERE finished >= ? GROUP BY handler"
        )
        rows = self._rows(sql, (since,))
        return {
            handler: HandlerTimes(
                int(done or 0),
                int(failed or 0),
                float(mean or 0.0),
                self._p95(handler, since, int(timed)),
                float(most or 0.0),
                float(wait or 0.0),
            )
            for handler, done, failed, mean, most, wait, timed in rows
        }

    def _p95(self, handler: str, since: float, count: int) -> float:
        if count == 0:
            return 0.0
        sql = (
            "SELECT seconds FROM delivery_history WHERE handler = ? AND finished >= ? "
            "AND seconds IS NOT NULL ORDER BY seconds LIMIT 1 OFFSET ?"
        )
        rows = self._rows(sql, (handler, since, int(0.95 * (count - 1))))
        return float(rows[0][0]) if rows else 0.0

"""What the running daemon counted, per source, rule and handler, kept across reloads.

The main loop adds to it once per batch of lines, never per line; the pipeline's, the
engine's and the delivery workers' own counters are read where they are (``line_counts``,
``rule_counts``, ``delivery_counts``), so reading costs nothing until someone asks.
``/metrics`` takes a ``snapshot()`` at scrape time; the periodic commit stores the same
snapshot for ``status`` and adds what was counted since the last one to the 10-minute
activity rows ``report`` draws. Counts start at zero when the daemon starts; a reload folds
the replaced pipeline's and workers' counts in, so they never go back.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from logwatchd import __version__
from logwatchd.outbox import Dispatcher
from logwatchd.pipeline import Pipeline
from logwatchd.sources.checkpoint import readable

RATE_SPAN = 60  # seconds: lines per second are averaged over the last minute
BUCKET = 600  # seconds of one activity row
PERSIST_EVERY = 1.0  # seconds between two status rows (each rides on a commit)
RESULTS = ("delivered", "retried", "failed")


class LineCounts(NamedTuple):
    lines: int
    unparsed: int  # lines the parser could not read
    skipped: int  # lines the scan passed over unparsed: no rule could match them


def line_counts(pipeline: Pipeline) -> LineCounts:
    """The pipeline's line counts so far."""
    stats = pipeline.stats
    return LineCounts(stats.lines, stats.unparsed, stats.skipped)


def stamp_failures(pipeline: Pipeline, source_id: str) -> int:
    """Lines of the source whose timestamp did not parse (timed when read), so far."""
    failures = getattr(pipeline.parsers.get(source_id), "stamp_failures", None)
    return int(failures.count) if failures is not None else 0


def rule_counts(pipeline: Pipeline) -> dict[str, tuple[int, int, int]]:
    """Per rule of the running config: (matches, alerts, keys held) so far."""
    engine = pipeline.engine
    alerts = pipeline.stats.alerts
    keys = engine.stats()
    return {
        rule: (matched, alerts.get(rule, 0), keys.get(rule, {}).get("keys", 0))
        for rule, matched in engine.match_counts().items()
    }


def delivery_counts(dispatcher: Dispatcher) -> dict[str, tuple[int, int, int, float]]:
    """Per handler: (delivered, retried, failed, seconds spent sending) so far."""
    return {
        name: (stats.sent, stats.retried, stats.failed, stats.seconds)
        for name, stats in dispatcher.stats().items()
    }


class RateWindow:
    """Lines per second over the last ``RATE_SPAN`` seconds, in one-second slots."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._stamps = [-1] * RATE_SPAN
        self._counts = [0] * RATE_SPAN

    def add(self, now: float, count: int) -> None:
        second = int(now)
        slot = second % RATE_SPAN
        if self._stamps[slot] != second:
            self._stamps[slot], self._counts[slot] = second, 0
        self._counts[slot] += count

    def rate(self, now: float) -> float:
        second = int(now)
        total = sum(
            count
            for stamp, count in zip(self._stamps, self._counts, strict=True)
            if second - RATE_SPAN < stamp <= second
        )
        span = min(float(RATE_SPAN), max(1.0, now - self._started))
        return total / span


@dataclass(slots=True)
class SourceTally:
    rate: RateWindow
    lines: int = 0
    unparsed: int = 0
    skipped: int = 0
    stamps: int = 0  # lines whose timestamp did not parse
    stamps_seen: int = 0  # the running parser's own count when last read
    last_line_at: float | None = None  # wall time
    behind_since: float | None = None  # wall time a read first left lines for the next pass
    checkpoint: dict[str, Any] = field(default_factory=dict)  # the last one committed


class Tally:
    def __init__(self, config_path: str = "") -> None:
        self.pid = os.getpid()
        self.started = time.time()
        self.config_path = config_path
        self._lock = threading.Lock()
        self._sources: dict[str, SourceTally] = {}
        self._pipeline: Pipeline | None = None
        self._dispatcher: Dispatcher | None = None
        self._current: set[str] = set()  # the sources of the running config
        self._rules_before: dict[str, Counter[str]] = {"matches": Counter(), "alerts": Counter()}
        self._handlers_before: dict[str, list[float]] = {}
        self.reloads: Counter[str] = Counter()
        self._persisted: Counter[tuple[str, str]] = Counter()
        self._persisted_at = 0.0
        self._counted = False  # lines were read since the last status row

    # --- what the daemon runs now -------------------------------------------------------

    def attach(
        self,
        pipeline: Pipeline,
        dispatcher: Dispatcher,
        checkpoints: Mapping[str, dict[str, Any]],
    ) -> None:
        """What runs from now on, and its sources' positions as they start."""
        with self._lock:
            self._pipeline, self._dispatcher = pipeline, dispatcher
            self._current = set(checkpoints)
            for source_id in checkpoints:
                if source_id not in self._sources:
                    self._sources[source_id] = SourceTally(RateWindow(time.monotonic()))
                self._sources[source_id].stamps_seen = stamp_failures(pipeline, source_id)
        self.committed(checkpoints)

    def retire(self) -> None:
        """Fold the attached pipeline's and workers' counts in before a reload drops them."""
        with self._lock:
            if self._pipeline is not None:
                for rule, (matches, alerts, _keys) in rule_counts(self._pipeline).items():
                    self._rules_before["matches"][rule] += matches
                    self._rules_before["alerts"][rule] += alerts
            if self._dispatcher is not None:
                for name, counts in delivery_counts(self._dispatcher).items():
                    before = self._handlers_before.setdefault(name, [0, 0, 0, 0.0])
                    for index, value in enumerate(counts):
                        before[index] += value
            self._pipeline = self._dispatcher = None

    # --- the main loop's additions --------------------------------------------------------

    def read(
        self, source_id: str, lines: int, before: LineCounts, *, more: bool, now: float
    ) -> None:
        """A batch of ``lines`` from one source went through the pipeline; ``before`` is
        ``line_counts`` from just before it; ``more``: the source had more ready."""
        source = self._sources[source_id]  # attach() made it
        if lines and self._pipeline is not None:
            after = line_counts(self._pipeline)
            stamps = stamp_failures(self._pipeline, source_id)
            with self._lock:
                source.lines += lines
                source.unparsed += after.unparsed - before.unparsed
                source.skipped += after.skipped - before.skipped
                source.stamps += stamps - source.stamps_seen
            source.stamps_seen = stamps
            source.last_line_at = now
            source.rate.add(time.monotonic(), lines)
            self._counted = True
        if not more:
            source.behind_since = None
        elif source.behind_since is None:
            source.behind_since = now

    def committed(self, checkpoints: Mapping[str, dict[str, Any]]) -> None:
        for source_id, checkpoint in checkpoints.items():
            source = self._sources.get(source_id)
            if source is not None:
                source.checkpoint = checkpoint

    # --- reading --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything counted, as JSON-able data: what /metrics serves and status shows."""
        now, mono = time.time(), time.monotonic()
        with self._lock:
            pipeline, dispatcher = self._pipeline, self._dispatcher
            sources = {sid: s for sid, s in self._sources.items() if sid in self._current}
            rules_before = {kind: dict(counts) for kind, counts in self._rules_before.items()}
            handlers_before = {name: list(c) for name, c in self._handlers_before.items()}
        rules = {}
        for rule, (matches, alerts, keys) in (rule_counts(pipeline) if pipeline else {}).items():
            rules[rule] = {
                "matches": matches + rules_before["matches"].get(rule, 0),
                "alerts": alerts + rules_before["alerts"].get(rule, 0),
                "keys": keys,
            }
        handlers = {}
        for name, counts in (delivery_counts(dispatcher) if dispatcher else {}).items():
            total = [a + b for a, b in zip(counts, handlers_before.get(name, [0] * 4), strict=True)]
            handlers[name] = dict(zip((*RESULTS, "send_seconds"), total, strict=True))
        return {
            "pid": self.pid,
            "since": self.started,
            "version": __version__,
            "config": self.config_path,
            "at": now,
            "reloads": dict(self.reloads),
            "sources": {sid: _source_view(s, now, mono) for sid, s in sources.items()},
            "rules": rules,
            "handlers": handlers,
        }

    def due(self) -> bool:
        """Lines were counted that the status row does not show yet, and it may be written."""
        return self._counted and time.monotonic() - self._persisted_at >= PERSIST_EVERY

    def for_commit(
        self, *, force: bool = False
    ) -> tuple[str | None, list[tuple[str, int, str, int]]]:
        """What a commit should store now: the status row and the activity since the last
        one (nothing if the last was under ``PERSIST_EVERY`` seconds ago, unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._persisted_at < PERSIST_EVERY:
            return None, []
        self._persisted_at, self._counted = now, False
        snapshot = self.snapshot()
        bucket = int(snapshot["at"]) // BUCKET * BUCKET
        totals: dict[tuple[str, str], int] = {}
        for source_id, source in snapshot["sources"].items():
            totals["lines", source_id] = source["lines"]
            totals["unparsed", source_id] = source["unparsed"]
        for rule, counts in snapshot["rules"].items():
            totals["matches", rule] = counts["matches"]
        activity = []
        for (kind, name), total in totals.items():
            delta = total - self._persisted[kind, name]
            if delta > 0:
                activity.append((kind, bucket, name, delta))
            self._persisted[kind, name] = total
        return json.dumps(snapshot, separators=(",", ":")), activity

    def not_saved(self, activity: list[tuple[str, int, str, int]]) -> None:
        """The commit that carried ``activity`` failed: count it into the next one."""
        for kind, _bucket, name, delta in activity:
            self._persisted[kind, name] -= delta
        self._counted = True


def _source_view(source: SourceTally, now: float, mono: float) -> dict[str, Any]:
    behind = source.behind_since
    return {
        "lines": source.lines,
        "unparsed": source.unparsed,
        "skipped": source.skipped,
        "unparsed_timestamps": source.stamps,
        "lines_per_second": round(source.rate.rate(mono), 3),
        "lag_bytes": lag_bytes(source.checkpoint),
        "lag_seconds": 0.0 if behind is None else round(now - behind, 3),
        "last_line_at": source.last_line_at,
    }


def lag_bytes(checkpoint: Mapping[str, Any]) -> int | None:
    """Bytes written to a file source's open files after its checkpoint; None for sources
    that are not files. A file whose path now names another file counts nothing (it was
    rotated: the reader finishes it from its descriptor)."""
    files = readable(checkpoint).get("files")
    if files is None:
        return None
    lag = 0
    for record in files:
        try:
            st = os.stat(record["path"])
        except (OSError, KeyError, TypeError):
            continue
        if (st.st_dev, st.st_ino) == (record.get("dev"), record.get("ino")):
            lag += max(0, st.st_size - int(record.get("offset", 0)))
    return lag

"""Lines through the scan, their parser and the rules: the path shared by ``run``, ``test``
and ``explain``.

A batch of a source's lines is scanned at once (``rules/scan.py``); only the lines some rule
may match are parsed, and each is evaluated by the rules its scan hits select. Every line
is evaluated under the time limit per line (``timelimit.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from logwatchd.alerts import Alert
from logwatchd.clock import Clock
from logwatchd.config.model import Config
from logwatchd.events import Event, Line
from logwatchd.parsers import build_parser, produced_fields
from logwatchd.parsers.repeated import MAX_REPEATED, REPEATED
from logwatchd.rules import Engine
from logwatchd.timelimit import LineTimeLimit, LineTimeout

log = structlog.get_logger("logwatchd")

MAX_UNPARSED_SAMPLES = 5


@dataclass
class Stats:
    lines: int = 0
    skipped: int = 0  # passed over by the scan: no rule could match it, never parsed
    parsed: int = 0
    unparsed: int = 0
    truncated: int = 0
    timed_out: int = 0  # lines given up after the time limit (see timelimit.py)
    alerts: Counter[str] = field(default_factory=Counter)
    slow: Counter[str] = field(default_factory=Counter)  # timed-out lines per rule or parser
    unparsed_samples: list[str] = field(default_factory=list)
    source_lines: Counter[str] = field(default_factory=Counter)  # lines per source
    source_unparsed: Counter[str] = field(default_factory=Counter)  # unparsed lines per source

    def read(self, source: str, count: int) -> None:
        """``count`` more lines of ``source`` (per-rule counts: ``Engine.match_counts``)."""
        self.lines += count
        self.source_lines[source] += count


class ReplayClock:
    """For ``test``: time is the event time of the line being replayed."""

    def __init__(self) -> None:
        self.at = 0.0

    def now(self) -> float:
        return self.at

    def monotonic(self) -> float:
        return self.at


def build_engine(
    config: Config, clock: Clock, host: str, *, native: bool = True
) -> tuple[Engine, dict[str, Any]]:
    """The engine for a config, and the parser of each source it is fed from; ``native``:
    scan with Hyperscan where the wheel is installed (else with Python's ``re``)."""
    parsers = {
        src.id: build_parser(src.parser, config.parsers, timezone=config.daemon.timezone)
        for src in config.sources
    }
    engine = Engine(
        config.rules,
        config.lists,
        host=host,
        max_keys_per_rule=config.daemon.max_keys_per_rule,
        clock=clock,
        verbatim_fields={sid: parser.verbatim_fields for sid, parser in parsers.items()},
        framed=[sid for sid, parser in parsers.items() if hasattr(parser, "frame")],
        produces={
            src.id: produced_fields(src.parser, config.parsers).has for src in config.sources
        },
        native=native,
    )
    return engine, parsers


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        parsers: dict[str, Any],
        *,
        replay: ReplayClock | None = None,
        limit: LineTimeLimit | None = None,
    ) -> None:
        self.engine = engine
        self.parsers = parsers
        self.stats = Stats()
        self._replay = replay
        # the time limit per line; inert unless the command installed it
        self.limit = limit or LineTimeLimit()
        self._stamp: Any = None  # the last timestamp converted, and what it came to
        self._when = 0.0
        self._direct: dict[str, Callable[[int], Any]] = {}  # per source: Engine.direct_of

    def prepare(self) -> None:
        """Build every source's scan now (compiling a Hyperscan database takes a while),
        rather than when its first line arrives."""
        for source in self.parsers:
            self.engine.scan(source)

    def parse(self, line: Line) -> Event | None:
        fields = self.parsers[line.source].parse(line)
        return None if fields is None else Event(line, fields, self._time(line, fields))

    def _time(self, line: Line, fields: dict[str, Any]) -> float:
        """The event time: the parsed stamp as epoch seconds, else the time of reading."""
        stamp = fields.get("timestamp")
        if stamp is None:
            return line.read_time
        if stamp is not self._stamp:  # parsers hand out one object per second of stamps
            self._stamp, self._when = stamp, stamp.timestamp()
        return self._when

    def handle_batch(self, lines: Sequence[Line]) -> list[Alert]:
        """Lines as a source returned them: each run of one source's lines scanned at once,
        the lines it selects evaluated in order, under the time limit (one timer)."""
        alerts: list[Alert] = []
        with self.limit:
            start = 0
            while start < len(lines):
                source = lines[start].source
                end = start + 1
                while end < len(lines) and lines[end].source == source:
                    end += 1
                self._run(lines[start:end], alerts)
                start = end
        return alerts

    def _run(self, lines: Sequence[Line], alerts: list[Alert]) -> None:
        stats = self.stats
        stats.read(lines[0].source, len(lines))
        stats.truncated += sum(1 for line in lines if line.truncated)
        selected = self.engine.scan(lines[0].source).select([line.raw for line in lines])
        stats.skipped += len(lines) - len(selected)
        for index, hits in selected:
            line = lines[index]
            try:
                found = None if hits is None else self.framed(line, hits)
                alerts.extend(self._guarded(line, hits, None) if found is None else found)
            except Exception:
                # a line the pipeline chokes on is a bug to report, not a reason to stop
                log.exception("line failed", source=line.source, line=line.raw[:200])

    def handle(self, line: Line, matches: list[Any] | None = None) -> list[Alert]:
        """One line, counted, scanned on its own and evaluated."""
        self.stats.read(line.source, 1)
        self.stats.truncated += line.truncated
        return self.evaluate(line, None, matches)

    def evaluate(
        self, line: Line, hits: int | None, matches: list[Any] | None = None
    ) -> list[Alert]:
        """A line the caller has counted and scanned (``hits``; None: scan it here, and
        count it as skipped if no rule can match it). A caller with many lines arms the time
        limit once: ``with pipeline.limit:`` around them."""
        if not self.limit.active:
            with self.limit:
                return self._guarded(line, hits, matches)
        return self._guarded(line, hits, matches)

    def framed(self, line: Line, hits: int) -> list[Alert] | None:
        """The short path for a scanned line (``Engine.process_framed``): its alerts, or
        None, having changed nothing, when it needs ``evaluate``."""
        source = line.source
        direct = self._direct.get(source)
        if direct is None:
            direct = self._direct[source] = self.engine.direct_of(source)
        shapes = direct(hits)
        if shapes is None:
            return None
        parser = self.parsers[source]
        self.limit.lines += 1
        alerts: list[Alert] = []
        try:
            framed = parser.frame(line.raw, line.read_time)
            if framed is None:
                return None
            self.stats.parsed += 1
            if self._replay is not None:
                self._replay.at = framed[0]
            self.engine.process_framed(shapes, framed, line, hits, alerts, parse=self._event)
        except LineTimeout as exc:
            self._timed_out(line, exc.where or f"parser {parser.name}")
            alerts = exc.alerts
        if alerts:
            self._counted(alerts)
        return alerts

    def _event(self, line: Line) -> Event:
        """The event of a line the short path framed (its parser then parses it too)."""
        fields = self.parsers[line.source].parse(line)
        assert fields is not None  # a line the parser frames, it parses
        return Event(line, fields, self._time(line, fields))

    def _guarded(self, line: Line, hits: int | None, matches: list[Any] | None) -> list[Alert]:
        self.limit.lines += 1
        try:
            if hits is None:
                scan = self.engine.scan(line.source)
                hits = scan.hits(line.raw)
                if not (scan.everything or hits & scan.scanned):
                    self.stats.skipped += 1
                    return []
            fields = self.parsers[line.source].parse(line)
            if fields is None:
                self._unparsed(line)
                return []
            self.stats.parsed += 1
            event = Event(line, fields, self._time(line, fields))
            if self._replay is not None:
                self._replay.at = event.time
            times = fields.get(REPEATED)
            if times.__class__ is int and times > 1:
                alerts = self._repeated(event, min(times, MAX_REPEATED), hits, matches)
            else:
                alerts = self.engine.process(event, matches, hits)
        except LineTimeout as exc:
            where = exc.where or f"parser {self.parsers[line.source].name}"
            self._timed_out(line, where)
            alerts = exc.alerts
        if alerts:
            self._counted(alerts)
        return alerts

    def _unparsed(self, line: Line) -> None:
        stats = self.stats
        stats.unparsed += 1
        stats.source_unparsed[line.source] += 1
        if len(stats.unparsed_samples) < MAX_UNPARSED_SAMPLES:
            stats.unparsed_samples.append(line.raw[:300])

    def _timed_out(self, line: Line, where: str) -> None:
        """Counted, and logged the first time for each rule or parser: a flood of such lines
        must not become a flood of log lines."""
        stats = self.stats
        stats.timed_out += 1
        stats.slow[where] += 1
        if stats.slow[where] == 1:
            log.warning(
                "line skipped: it took longer than the time limit (a regex that backtracks)",
                where=where,
                source=line.source,
                limit=self.limit.seconds,
                line=line.raw[:200],
            )

    def _repeated(
        self, event: Event, times: int, hits: int, matches: list[Any] | None
    ) -> list[Alert]:
        """A line that stands for several events (rsyslog's "message repeated N times")
        counts as that many, each with its own origin so their alerts differ in id."""
        alerts = self.engine.process(event, matches, hits)
        line = event.line
        for number in range(2, times + 1):
            again = replace(line, origin=f"{line.origin}#{number}")
            alerts += self.engine.process(Event(again, event.fields, event.time), matches, hits)
        return alerts

    def _counted(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.stats.alerts[alert.rule] += 1
        return alerts

    def tick(self, now: float) -> list[Alert]:
        return self._counted(self.engine.tick(now))

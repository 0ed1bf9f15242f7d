"""The rule engine: match, group, count in windows, follow sequences, cool down, fire.

Event time drives every window; ``clock.now()`` only stamps ``fired_at``. Per rule, state is
kept per ``group_by`` key (``windows.KeyTable``), bounded by ``max_keys_per_rule``.

Decisions worth knowing (also in the README section on rules):

- An event that lacks a ``group_by`` field still counts as a match (``test --matches``) but
  never counts toward an alert: there is no key to count it under.
- During a cooldown, matches for that key are not counted toward a threshold; each one adds
  to ``suppressed``, which the first alert after the cooldown carries.
- A threshold rule fires on the Nth match within the window, then that key starts over;
  ``distinct: FIELD`` fires on the Nth distinct value (an event without FIELD does not count).
- Sequences (``rules/sequences.py``) keep, per key and per number of steps done, the
  partial that started last (it has the most time left). An absent last step keeps the
  earliest pending one, whose deadline is first step + window; it fires from ``tick`` or
  from ``process`` once an event of the rule's sources is at or past the deadline.
- Regex groups a rule extracts belong to that rule's match and alert; other rules see the
  event's fields as parsed.
- A rule with ``context`` (``rules/context.py``) sees each event with the fields its
  connection remembered filled in. A match of such a rule that lacks a ``group_by`` field is
  held by the connection, and reported and counted on the later line of that connection that
  brings the field (the match record then carries that later line's number).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from logwatchd.alerts import Alert, alert_id
from logwatchd.clock import Clock
from logwatchd.config.model import ListConfig, RuleConfig
from logwatchd.events import Event, Framed, Line
from logwatchd.rules.compiled import CompiledRule, Firing, advance_clock, drop_if_idle, last_of
from logwatchd.rules.context import context_key_from_json, context_key_json, is_context_key
from logwatchd.rules.direct import DirectRule, Produces
from logwatchd.rules.explain import RuleExplanation, explain_rule
from logwatchd.rules.plans import ContextPlan, MatchPlan, SourcePlan, plan_source
from logwatchd.rules.predicates import ALL_HITS, Gates
from logwatchd.rules.scan import ALWAYS, LineScan, PatternTable, native_available
from logwatchd.rules.selection import ALL_FIELDS, DEFAULT_VERBATIM, condition_need
from logwatchd.rules.sequences import Sequences
from logwatchd.rules.values import as_key
from logwatchd.rules.windows import (
    Key,
    KeyState,
    Last,
    cut,
    key_from_json,
    key_json,
)
from logwatchd.timelimit import LineTimeout


@dataclass(slots=True)  # not frozen: a frozen one costs twice as much to make, per match
class Match:
    """A rule matched an event (before any threshold): for ``test --matches``."""

    rule: str
    source: str
    line: int
    fields: dict[str, Any]
    time: float = 0.0  # the event's time (what windows count on)


@dataclass
class RuleStateChanges:
    """Rule state changed since the last drain, for ``StateStore.commit``.

    Apply in any order: a key is never both upserted and deleted in one drain.
    """

    digests: dict[str, str]
    upserts: list[tuple[str, str, str]] = field(default_factory=list)  # (rule, key, state)
    deletes: list[tuple[str, str]] = field(default_factory=list)  # (rule, key)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes)


class Engine:
    """The rules of a config, run on parsed events.

    ``verbatim_fields``: per source, the fields its parser copies out of the line (what the
    scan may look for); ``produces``: per source, whether its parser can give a field (None:
    any); ``native``: scan with Hyperscan when the wheel is there (False: Python's ``re``);
    ``framed``: the sources whose parser frames lines (``process_framed``).
    """

    def __init__(
        self,
        rules: Sequence[RuleConfig],
        lists: Mapping[str, ListConfig],
        *,
        host: str,
        max_keys_per_rule: int,
        clock: Clock,
        verbatim_fields: Mapping[str, Collection[str]] | None = None,
        produces: Mapping[str, Produces] | None = None,
        native: bool = True,
        framed: Collection[str] = (),
    ) -> None:
        self._lists = dict(lists)
        self._host = host
        self._clock = clock
        self._verbatim = dict(verbatim_fields or {})
        self._produces = dict(produces or {})
        self._native = native and native_available()
        self._framed = frozenset(framed)
        self._table = PatternTable()
        self.rules = [CompiledRule(rule, lists, max_keys_per_rule, self._gates) for rule in rules]
        self._by_id = {rule.id: rule for rule in self.rules}
        self._sources: dict[str, SourcePlan] = {}
        self._stale: list[tuple[str, str]] = []  # rows of rules gone or changed, to delete
        self._sequences = Sequences(self._fire)

    def _gates(self, ungated: frozenset[str]) -> Gates:
        """A condition's gate: the patterns of what it needs from any verbatim field (the
        bits of fields a source does not copy verbatim are set on all its lines)."""
        table = self._table

        def gate(pred: Any) -> int:
            need = condition_need(pred, (ALL_FIELDS,), ungated)
            return 0 if need is None else table.mask(need)

        return gate

    # --- which rules, which lines -------------------------------------------------------

    def rules_for(self, source_id: str) -> tuple[CompiledRule, ...]:
        return tuple(plan.rule for plan in self._source(source_id).plans)

    def _source(self, source_id: str) -> SourcePlan:
        found = self._sources.get(source_id)
        if found is None:
            rules = [rule for rule in self.rules if rule.applies_to(source_id)]
            verbatim = self._verbatim.get(source_id, DEFAULT_VERBATIM)
            produces = self._produces.get(source_id)
            found = plan_source(
                rules, verbatim, produces, self._table,
                native=self._native, framed=source_id in self._framed,
            )  # fmt: skip
            self._sources[source_id] = found
        return found

    def scan(self, source_id: str) -> LineScan:
        """How to find, in a source's lines, what its rules need (see ``scan.py``)."""
        return self._source(source_id).scan

    def rules_on_every_line(self, source_id: str) -> list[str]:
        """The rules that have the source's every line evaluated: the scan cannot tell which
        lines they need (no condition on a field the parser copies verbatim)."""
        return [plan.rule.id for plan in self._source(source_id).plans if plan.mask & ALWAYS]

    def wants(self, source_id: str, raw: str) -> bool:
        """False only if no rule for this source can match the line (it need not be parsed)."""
        source = self._source(source_id)
        return bool(source.select(source.scan.hits(raw)))

    # --- the stream ---------------------------------------------------------------------

    def process(
        self, event: Event, matches: list[Match] | None = None, hits: int = ALL_HITS
    ) -> list[Alert]:
        """The alerts the event fires; ``hits``: what the scan found on its line (the
        default, everything, runs every rule of the source)."""
        alerts: list[Alert] = []
        source = self._sources.get(event.line.source) or self._source(event.line.source)
        for plan in source.select(hits):
            rule = plan.rule
            try:
                if plan.__class__ is MatchPlan:
                    self._single(rule, event, hits, matches, alerts)
                elif plan.__class__ is ContextPlan:
                    self._in_context(plan, event, hits, matches, alerts)
                else:
                    seen = self._sequences.process(rule, event, alerts, hits)
                    if seen is not None:
                        self._record(rule, event, seen, matches)
            except LineTimeout as exc:
                # the rest of the line is skipped; what earlier rules made of it stands
                exc.where, exc.alerts = f"rule {rule.id}", alerts
                raise
        return alerts

    def direct_of(self, source_id: str) -> Callable[[int], tuple[DirectRule, ...] | None]:
        """Given a line's hits, the rules they select when all are of the common shape
        (``direct.py``): then ``process_framed`` can take the line, if its source's parser
        framed it; else None."""
        return self._source(source_id).direct

    def process_framed(
        self,
        direct: tuple[DirectRule, ...],
        framed: Framed,
        line: Line,
        hits: int,
        alerts: list[Alert],
        *,
        parse: Callable[[Line], Event],
    ) -> None:
        """The short path: a line its parser framed, evaluated by the rules ``direct``
        gave for its hits, straight from the framed values. ``parse`` makes the line's
        event, for an alert that fires."""
        time = framed[0]
        for shape in direct:
            rule = shape.rule
            try:
                found = shape.find(framed)
            except LineTimeout as exc:
                exc.where, exc.alerts = f"rule {rule.id}", alerts
                raise
            if found is None:
                continue
            rule.matched += 1
            key = shape.key(found)
            if key is None:
                continue
            due = self._tally(rule, key, time, line, shape.value(found))
            if due is not None:
                state, firing = due
                firing.last = self._last_of_line(rule, parse(line), hits)
                self._fire(rule, key, state, firing, alerts)

    def _last_of_line(self, rule: CompiledRule, event: Event, hits: int) -> Last:
        """What the full path would have kept of a line the short path counted."""
        compiled = rule.match
        assert compiled is not None  # a direct rule has a condition
        ext: dict[str, Any] = {}
        compiled.test(event.fields, ext, hits)
        return last_of(event, {**event.fields, **ext} if ext else event.fields)

    def tick(self, now: float) -> list[Alert]:
        """Fire absent sequences whose deadline (event time) is at or before ``now``."""
        alerts: list[Alert] = []
        for rule in self.rules:
            if rule.absent:
                self._sequences.due(rule, now, alerts)
        return alerts

    def _single(
        self,
        rule: CompiledRule,
        event: Event,
        hits: int,
        matches: list[Match] | None,
        alerts: list[Alert],
    ) -> None:
        compiled = rule.match
        if compiled is None:
            return
        ext: dict[str, Any] | None = {} if compiled.extracts else None
        fields = event.fields
        if not compiled.test(fields, ext, hits):
            return
        if ext:
            fields = {**fields, **ext}
        self._matched(rule, event, fields, matches, alerts)

    def _in_context(
        self,
        plan: ContextPlan,
        event: Event,
        hits: int,
        matches: list[Match] | None,
        alerts: list[Alert],
    ) -> None:
        """A match rule with ``context``: the rule sees the connection's view of the event."""
        rule = plan.rule
        context, compiled = rule.context, rule.match
        assert context is not None and compiled is not None
        can_match = hits & plan.match != 0
        can_learn = hits & plan.learn != 0
        can_forget = hits & plan.forget != 0
        if not (can_match or can_learn or can_forget) and not context.may_release(event.fields):
            return  # neither matches, learns nor forgets, and no held match to complete
        ext: dict[str, Any] | None = {} if compiled.extracts else None
        view = can_match or (can_forget and context.forget_reads_memory)
        visit = context.enter(event.fields, event.time, learn=can_learn, hits=hits, view=view)
        fields = event.fields if visit is None else visit.view
        matched = can_match and compiled.test(fields, ext, hits)
        if matched and ext:
            fields = {**fields, **ext}
        if visit is None:
            if matched:
                self._matched(rule, event, fields, matches, alerts)
            return
        # a match that lacks a group_by field waits for a later line of the connection
        hold = fields if matched and rule.key_of(fields) is None else None
        released = context.leave(
            visit, matched, ext, event.time, hold=hold, group_by=rule.group_by,
            forget=can_forget, hits=hits,
        )  # fmt: skip
        for done in released:
            self._matched(rule, event, done, matches, alerts)
        if matched and hold is None:
            self._matched(rule, event, fields, matches, alerts)

    def _record(
        self, rule: CompiledRule, event: Event, fields: dict[str, Any], matches: list[Match] | None
    ) -> None:
        rule.matched += 1
        if matches is not None:
            line = event.line
            matches.append(Match(rule.id, line.source, line.lineno, fields, event.time))

    def _matched(
        self,
        rule: CompiledRule,
        event: Event,
        fields: dict[str, Any],
        matches: list[Match] | None,
        alerts: list[Alert],
    ) -> None:
        rule.matched += 1
        line = event.line
        if matches is not None:
            matches.append(Match(rule.id, line.source, line.lineno, fields, event.time))
        key = rule.key_of(fields)
        if key is None:
            return
        if not rule.stateful:
            first = (event.time, line.origin)
            last = last_of(event, fields)
            firing = Firing(1, first, event.time, [cut(line.raw)], last)
            alerts.append(self._alert(rule, key, firing, suppressed=0))
            return
        self._count(rule, key, event, fields, alerts)

    def _count(
        self,
        rule: CompiledRule,
        key: Key,
        event: Event,
        fields: dict[str, Any],
        alerts: list[Alert],
    ) -> None:
        line = event.line
        value = None if rule.distinct is None else as_key(fields.get(rule.distinct))
        due = self._tally(rule, key, event.time, line, value)
        if due is not None:
            state, firing = due
            firing.last = last_of(event, fields)
            self._fire(rule, key, state, firing, alerts)

    def _tally(
        self, rule: CompiledRule, key: Key, time: float, line: Line, value: str | None
    ) -> tuple[KeyState, Firing] | None:
        """A match counted for its key (``value``: the ``distinct`` field's, None when the
        event lacks it): what fires, if anything, still without the event it reports."""
        advance_clock(rule, time)
        state = rule.table.touch(key, time)
        if time < state.until:
            state.newest = max(state.newest, time)
            state.suppressed += 1
            return None
        if not rule.has_threshold:
            state.newest = max(state.newest, time)
            return state, Firing(1, (time, line.origin), time, [cut(line.raw)], None)
        if rule.distinct is not None:
            if value is None:
                drop_if_idle(rule, key, state, time)
                return None
            count = state.add_distinct(value, time, line.origin, rule.window)
        else:
            count = state.add_hit(time, line.origin, rule.window)
        state.add_sample(time, line.raw)
        if count < rule.count:
            return None
        first = state.first_hit()
        samples = state.window_samples(rule.window)
        state.clear_window()
        return state, Firing(count, first, state.newest, samples, None)

    # --- firing -------------------------------------------------------------------------

    def _fire(
        self,
        rule: CompiledRule,
        key: Key,
        state: KeyState,
        firing: Firing,
        alerts: list[Alert],
        *,
        at: float | None = None,
    ) -> None:
        """Emit an alert for the key, unless its cooldown silences it."""
        when = firing.last_seen if at is None else at
        if when < state.until:
            state.suppressed += 1
            return
        suppressed, state.suppressed = state.suppressed, 0
        if rule.cooldown > 0:
            state.until = when + rule.cooldown
        drop_if_idle(rule, key, state, when)
        alerts.append(self._alert(rule, key, firing, suppressed=suppressed))

    def _alert(
        self,
        rule: CompiledRule,
        key: Key,
        firing: Firing,
        *,
        suppressed: int,
    ) -> Alert:
        keyed = dict(zip(rule.group_by, key, strict=True))
        last = firing.last or Last("", None, "", {})
        first_seen, first_origin = firing.first
        cfg = rule.cfg
        return Alert(
            id=alert_id(rule.id, keyed, first_origin, self._host),
            rule=rule.id,
            severity=cfg.severity,
            tags=list(cfg.tags),
            key=keyed,
            count=firing.count,
            suppressed=suppressed,
            first_seen=first_seen,
            last_seen=firing.last_seen,
            fired_at=self._clock.now(),
            host=self._host,
            source=last.source,
            path=last.path,
            raw=last.raw,
            fields=dict(last.fields),
            events=list(firing.samples),
            handlers=tuple(cfg.handlers),
        )

    # --- state --------------------------------------------------------------------------

    def drain_changes(self) -> RuleStateChanges:
        changes = RuleStateChanges({rule.id: rule.digest for rule in self.rules})
        written: set[tuple[str, str]] = set()
        for rule in self.rules:
            upserts, deletes = rule.table.drain()
            for key, state in upserts:
                row = (rule.id, key_json(key))
                written.add(row)
                changes.upserts.append((*row, state))
            changes.deletes.extend((rule.id, key_json(key)) for key in deletes)
            if rule.context is not None:
                upserts, deletes = rule.context.table.drain()
                changes.upserts.extend((rule.id, context_key_json(k), s) for k, s in upserts)
                changes.deletes.extend((rule.id, context_key_json(k)) for k in deletes)
        changes.deletes.extend(row for row in self._stale if row not in written)
        self._stale = []
        return changes

    def discard_changes(self) -> None:
        """Forget what changed since the last drain, without serialising it: for ``test``,
        which persists nothing but must not let the change sets grow."""
        for rule in self.rules:
            rule.table.forget_changes()
            if rule.context is not None:
                rule.context.table.forget_changes()
        self._stale = []

    def load_state(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Restore committed rows; rows of rules that are gone or changed shape are dropped."""
        connections: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for rule_id, digest, text_key, text_state in rows:
            rule = self._by_id.get(rule_id)
            if is_context_key(text_key):
                found = context_key_from_json(text_key)
                if rule is None or rule.digest != digest or rule.context is None or found is None:
                    self._stale.append((rule_id, text_key))
                else:
                    connections.setdefault(rule_id, []).append((found, text_state))
                continue
            key = key_from_json(text_key)
            if rule is None or rule.digest != digest or key is None:
                self._stale.append((rule_id, text_key))
                continue
            if len(key) != len(rule.group_by):
                self._stale.append((rule_id, text_key))
                continue
            try:
                state = KeyState.load(text_state)
            except (ValueError, KeyError, TypeError, IndexError):
                self._stale.append((rule_id, text_key))
                continue
            rule.table.put(key, state)
            rule.newest = max(rule.newest, state.newest)
        for rule_id, loaded in connections.items():
            context = self._by_id[rule_id].context
            assert context is not None  # checked above
            bad = context.load(loaded)
            self._stale.extend((rule_id, context_key_json(key)) for key in bad)
        for rule in self.rules:
            if rule.absent:
                self._sequences.rebuild_deadlines(rule)

    def explain(self, event: Event) -> list[RuleExplanation]:
        """Per rule for the event's source: did it match, and each condition's verdict."""
        return [
            explain_rule(rule, event, self._lists) for rule in self.rules_for(event.line.source)
        ]

    def match_counts(self) -> dict[str, int]:
        """Per rule, its matches so far (before thresholds), counted whether or not the
        caller asked for the match records."""
        return {rule.id: rule.matched for rule in self.rules}

    def stats(self) -> dict[str, dict[str, int]]:
        """Per rule: keys held now and keys evicted to stay under the bound (and the same for
        the connections of a rule with ``context``)."""
        stats = {}
        for rule in self.rules:
            stats[rule.id] = {"keys": len(rule.table), "evicted": rule.table.evicted}
            if rule.context is not None:
                table = rule.context.table
                stats[rule.id].update(connections=len(table), connections_evicted=table.evicted)
        return stats

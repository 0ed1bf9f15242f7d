"""A rule ready to run: compiled predicates, its shape, its per-key state and its literals."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from logwatchd.config.model import ListConfig, Predicate, RuleConfig
from logwatchd.events import Event
from logwatchd.rules.context import Context
from logwatchd.rules.dispatch import Texts, message_prefixes
from logwatchd.rules.literals import LineCheck, Requirement, always, most_selective
from logwatchd.rules.predicates import CompiledPredicate, compile_predicate
from logwatchd.rules.prefilter import (
    Conjunction,
    any_conjunction,
    build_check,
    predicate_conjunction,
)
from logwatchd.rules.values import as_key
from logwatchd.rules.windows import Key, KeyState, KeyTable, Last

SWEEP_EVERY = 64  # a power of two: events between two sweeps of a rule's quiet keys


@dataclass(frozen=True, slots=True)
class Firing:
    """What an alert reports about the events that made it."""

    count: int
    first: tuple[float, str]  # (time, origin) of the first contributing event
    last_seen: float
    samples: list[str]
    last: Last | None  # the last event: its source, path, raw line and fields


class CompiledRule:
    """A rule ready to run: compiled predicates, its shape, and its per-key state."""

    def __init__(self, cfg: RuleConfig, lists: Mapping[str, ListConfig], limit: int) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.digest = cfg.digest()
        self.sources = frozenset(cfg.sources)
        self.group_by = cfg.group_by
        self.match: CompiledPredicate | None = (
            compile_predicate(cfg.match, lists) if cfg.match is not None else None
        )
        seq = cfg.sequence
        self.steps = tuple(compile_predicate(s.match, lists) for s in seq.steps) if seq else ()
        self.is_sequence = seq is not None
        # per step, the first step with the same condition: its outcome is this one's too
        conditions = [step.match for step in seq.steps] if seq else []
        self.same_step = tuple(conditions.index(cond) for cond in conditions)
        self.absent = bool(seq and seq.steps and seq.steps[-1].absent)
        threshold = cfg.threshold
        self.count = threshold.count if threshold else 1
        self.distinct = threshold.distinct if threshold else None
        self.window = threshold.window if threshold else (seq.window if seq else 0.0)
        self.has_threshold = threshold is not None
        self.cooldown = cfg.cooldown
        self.context = Context(cfg.context, lists, limit) if cfg.context is not None else None
        # a context rule's match, learn and forget: the message starts each could hold for
        self.context_starts: tuple[Texts, Texts, Texts] = self._context_starts()
        self.span = max(self.window, self.cooldown)
        self.stateful = bool(threshold or seq or cfg.cooldown > 0)
        self.table = KeyTable(limit)
        self.deadlines: list[tuple[float, int, Key]] = []  # absent sequences, a heap
        self.newest = -math.inf  # latest event time the rule has seen
        self.matched = 0  # matches so far, for /metrics and status
        self.ops = 0  # counted events, to sweep quiet keys every SWEEP_EVERY of them

    def _context_starts(self) -> tuple[Texts, Texts, Texts]:
        context = self.context
        if context is None or self.match is None:
            return None, None, None
        # fields the view may hold that are not the line's own: nothing known of them
        produced = self.match.extracts | context.adds
        conditions = (self.cfg.match, context.cfg.learn, context.cfg.forget)
        found = [message_prefixes(c, produced) if c is not None else None for c in conditions]
        return found[0], found[1], found[2]

    def applies_to(self, source_id: str) -> bool:
        return not self.sources or source_id in self.sources

    def key_of(self, fields: Mapping[str, Any]) -> Key | None:
        """The group_by values as strings, or None when one is missing."""
        values = []
        for name in self.group_by:
            value = fields.get(name)
            text = value if value.__class__ is str else as_key(value)
            if text is None:
                return None
            values.append(text)
        return tuple(values)

    def requirement(self, verbatim: Collection[str]) -> Requirement | None:
        """The rarest literals a line must hold for this rule (one of them)."""
        return most_selective(self.conjunction(verbatim))

    def conjunction(self, verbatim: Collection[str]) -> Conjunction:
        context = self.context
        if self.match is not None and context is not None:
            # a line may also matter by feeding or ending a connection; fields the context
            # fills in or learns are not the line's own text
            adds = self.match.extracts | context.adds
            conditions = [self.cfg.match, context.cfg.learn, context.cfg.forget]
            return any_conjunction(
                predicate_conjunction(pred, verbatim, adds) for pred in conditions if pred
            )
        if self.match is not None:
            return predicate_conjunction(self.cfg.match, verbatim, self.match.extracts)  # type: ignore[arg-type]
        if self.cfg.sequence is None:
            return ()
        # every step must get through: the absent one too, or it could never cancel
        return any_conjunction(
            predicate_conjunction(step.match, verbatim, compiled.extracts)
            for step, compiled in zip(self.cfg.sequence.steps, self.steps, strict=True)
        )

    def step_checks(self, verbatim: Collection[str]) -> tuple[LineCheck, ...]:
        """For a sequence: per step, a raw-line test of whether its condition could hold."""
        assert self.cfg.sequence is not None
        checks = []
        for step, compiled in zip(self.cfg.sequence.steps, self.steps, strict=True):
            conjunction = predicate_conjunction(step.match, verbatim, compiled.extracts)
            checks.append(build_check([conjunction]) if conjunction else always)
        return tuple(checks)

    def context_checks(self, verbatim: Collection[str]) -> tuple[LineCheck, LineCheck, LineCheck]:
        """For a rule with context: raw-line tests of whether its match, learn and forget
        could hold, so a line that passed the prefilter for one of them runs only those.

        Only each one's cheap gate (``program`` gives "sshd"): the rarer literals of a pack's
        many message regexes cost more to look for in the raw line than the conditions cost
        to fail, and those test their own literals on the message first. Conditions with the
        same gate get the same check object, so the engine tests it once."""
        context = self.context
        assert context is not None and self.match is not None
        adds = self.match.extracts | context.adds
        made: dict[tuple[Requirement, ...], LineCheck] = {}

        def check(pred: Predicate | None) -> LineCheck:
            if pred is None:
                return _never
            gate = predicate_conjunction(pred, verbatim, adds)[:1]
            if gate not in made:
                made[gate] = build_check([gate]) if gate else always
            return made[gate]

        return check(self.cfg.match), check(context.cfg.learn), check(context.cfg.forget)


def advance_clock(rule: CompiledRule, time: float) -> None:
    """An event counted for the rule: now and then, sweep its quiet keys."""
    rule.newest = max(rule.newest, time)
    rule.ops += 1
    if not rule.ops & SWEEP_EVERY - 1:
        rule.table.sweep(rule.newest, rule.span, budget=SWEEP_EVERY)


def drop_if_idle(rule: CompiledRule, key: Key, state: KeyState, now: float) -> None:
    if state.idle(now):
        rule.table.drop(key)


def last_of(event: Event, fields: dict[str, Any]) -> Last:
    line = event.line
    return Last(line.source, line.path, line.raw, fields)


def _never(raw: str) -> bool:
    return False

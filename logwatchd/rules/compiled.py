"""A rule ready to run: compiled predicates, its shape, and its per-key state."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from logwatchd.config.model import ListConfig, RuleConfig
from logwatchd.events import Event
from logwatchd.rules.context import Context
from logwatchd.rules.generated import compile_generated
from logwatchd.rules.predicates import (
    CompiledPredicate,
    Condition,
    GateMaker,
    extracted_names,
    no_gate_maker,
)
from logwatchd.rules.values import as_key
from logwatchd.rules.windows import Key, KeyState, KeyTable, Last

SWEEP_EVERY = 64  # a power of two: events between two sweeps of a rule's quiet keys


@dataclass(slots=True)  # not frozen: the short path fills in ``last`` only once one fires
class Firing:
    """What an alert reports about the events that made it."""

    count: int
    first: tuple[float, str]  # (time, origin) of the first contributing event
    last_seen: float
    samples: list[str]
    last: Last | None  # the last event: its source, path, raw line and fields


class CompiledRule:
    """A rule ready to run: compiled predicates, its shape, and its per-key state.

    ``gates`` makes each condition's gates (see ``predicates.py``) from the fields it may
    not take from the line."""

    def __init__(
        self,
        cfg: RuleConfig,
        lists: Mapping[str, ListConfig],
        limit: int,
        gates: GateMaker = no_gate_maker,
    ) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.digest = cfg.digest()
        self.sources = frozenset(cfg.sources)
        self.group_by = cfg.group_by
        self.context = Context(cfg.context, lists, limit, gates) if cfg.context else None
        adds = self.context.adds if self.context is not None else frozenset()
        self.condition: Condition | None = None
        self.match: CompiledPredicate | None = None
        if cfg.match is not None:
            self.condition = Condition(cfg.match, extracted_names(cfg.match) | adds)
            self.match = compile_generated(cfg.match, lists, gates(self.condition.ungated))
        seq = cfg.sequence
        self.step_conditions = tuple(
            Condition(step.match, extracted_names(step.match)) for step in seq.steps
        ) if seq else ()  # fmt: skip
        self.steps = tuple(
            compile_generated(step.pred, lists, gates(step.ungated))
            for step in self.step_conditions
        )
        self.is_sequence = seq is not None
        # per step, the first step with the same condition: its outcome is this one's too
        conditions = [step.match for step in seq.steps] if seq else []
        self.same_step = tuple(conditions.index(cond) for cond in conditions)
        # each distinct condition once, with the steps that share it (in step order)
        self.distinct_steps = tuple(
            (self.steps[first], tuple(i for i, same in enumerate(self.same_step) if same == first))
            for first in sorted(set(self.same_step))
        )
        self.absent = bool(seq and seq.steps and seq.steps[-1].absent)
        threshold = cfg.threshold
        self.count = threshold.count if threshold else 1
        self.distinct = threshold.distinct if threshold else None
        self.window = threshold.window if threshold else (seq.window if seq else 0.0)
        self.has_threshold = threshold is not None
        self.cooldown = cfg.cooldown
        self.span = max(self.window, self.cooldown)
        self.stateful = bool(threshold or seq or cfg.cooldown > 0)
        self.table = KeyTable(limit)
        self.deadlines: list[tuple[float, int, Key]] = []  # absent sequences, a heap
        self.newest = -math.inf  # latest event time the rule has seen
        self.ops = 0  # counted events, to sweep quiet keys every SWEEP_EVERY of them
        self.matched = 0  # matches so far (before thresholds), for status and metrics

    def applies_to(self, source_id: str) -> bool:
        return not self.sources or source_id in self.sources

    def key_of(self, fields: Mapping[str, Any]) -> Key | None:
        """The group_by values as strings, or None when one is missing."""
        if len(self.group_by) == 1:  # the common case, written out: it runs per match
            value = fields.get(self.group_by[0])
            text = value if value.__class__ is str else as_key(value)
            return None if text is None else (text,)
        values = []
        for name in self.group_by:
            value = fields.get(name)
            text = value if value.__class__ is str else as_key(value)
            if text is None:
                return None
            values.append(text)
        return tuple(values)


def advance_clock(rule: CompiledRule, time: float) -> None:
    """An event counted for the rule: now and then, sweep its quiet keys."""
    if time > rule.newest:  # noqa: PLR1730 (max() costs a call, per counted match)
        rule.newest = time
    rule.ops += 1
    if not rule.ops & SWEEP_EVERY - 1:
        rule.table.sweep(rule.newest, rule.span, budget=SWEEP_EVERY)


def drop_if_idle(rule: CompiledRule, key: Key, state: KeyState, now: float) -> None:
    if state.idle(now):
        rule.table.drop(key)


def last_of(event: Event, fields: dict[str, Any]) -> Last:
    line = event.line
    return Last(line.source, line.path, line.raw, fields)

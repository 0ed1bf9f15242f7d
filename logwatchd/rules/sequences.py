"""Sequence rules: steps matched in order per ``group_by`` key, within the rule's window.

Per key and per number of steps done, the partial that started last is kept (it has the most
time left). A sequence whose last step is ``absent`` keeps the earliest pending partial
instead, whose deadline is first step + window, on a heap per rule; ``due`` fires those past
their deadline. Firing (cooldowns, the alert itself) is the engine's: it is passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any, Protocol

from logwatchd.alerts import Alert, jsonable
from logwatchd.events import Event
from logwatchd.rules.compiled import CompiledRule, Firing, advance_clock, drop_if_idle, last_of
from logwatchd.rules.windows import Key, KeyState, Last, Partial, cut


def _first(item: tuple[int, Any, Any]) -> int:
    return item[0]


class Fire(Protocol):
    def __call__(
        self,
        rule: CompiledRule,
        key: Key,
        state: KeyState,
        firing: Firing,
        alerts: list[Alert],
        *,
        at: float | None = None,
    ) -> None: ...


class Sequences:
    """The sequence rules' processing; the rules hold the state, this holds the tiebreak
    counter of the deadline heaps (shared with the engine built by a reload)."""

    def __init__(self, fire: Fire, tiebreak: Iterator[int] | None = None) -> None:
        self._fire = fire
        self.tiebreak = itertools.count() if tiebreak is None else tiebreak

    def process(
        self,
        rule: CompiledRule,
        event: Event,
        alerts: list[Alert],
        hits: int,
    ) -> dict[str, Any] | None:
        """Advance the rule's sequences by the event; the fields of its first matching step
        (for the match record), or None when no step matched. ``hits``: what the scan found
        on the line (a step whose gate is closed does not run)."""
        time = event.time
        rule.newest = max(rule.newest, time)
        if rule.absent:  # before the sweep, which would take a pending key past its deadline
            self.due(rule, rule.newest, alerts)
        advance_clock(rule, time)
        fields = event.fields
        held: list[tuple[int, dict[str, Any], Key | None]] = []
        # steps with the same condition (three "failed" steps, say) are tested once and
        # share the fields (nothing downstream writes to them) and their key
        for step, indices in rule.distinct_steps:
            ext: dict[str, Any] | None = {} if step.extracts else None
            if step.test(fields, ext, hits):
                seen = {**fields, **ext} if ext else fields
                key = rule.key_of(seen)
                held += [(index, seen, key) for index in indices]
        if not held:
            return None
        if len(rule.distinct_steps) > 1:
            held.sort(key=_first)
        # latest step first, so one event never advances the same sequence twice
        for index, seen, key in reversed(held):
            if key is not None:
                self._step(rule, index, key, event, seen, alerts=alerts)
        return held[0][1]

    def _step(
        self,
        rule: CompiledRule,
        index: int,
        key: Key,
        event: Event,
        fields: dict[str, Any],
        *,
        alerts: list[Alert],
    ) -> None:
        time, line = event.time, event.line
        last_index = len(rule.steps) - 1
        if index == 0:
            if last_index == 0:
                if not rule.absent:  # a lone absent step has nothing to wait after
                    state = rule.table.touch(key, time)
                    first = (time, line.origin)
                    last = last_of(event, fields)
                    firing = Firing(1, first, time, [cut(line.raw)], last)
                    self._fire(rule, key, state, firing, alerts)
                return
            state = rule.table.touch(key, time)
            state.newest = max(state.newest, time)
            partial = Partial(time, line.origin)
            partial.see(time, line.raw, self._last(rule, event, fields))
            self._place(rule, key, state, 1, partial)
            return
        known = rule.table.get(key)
        waiting = known.partials.get(index) if known is not None else None
        if known is None or waiting is None:
            return
        rule.table.touch(key, time)
        known.newest = max(known.newest, time)
        del known.partials[index]
        if time - waiting.first > rule.window:
            drop_if_idle(rule, key, known, time)
            return
        if index == last_index:
            if rule.absent:  # it came in time: the sequence is cancelled
                drop_if_idle(rule, key, known, time)
                return
            waiting.see(time, line.raw, None)
            known.partials.clear()  # the key starts over
            first = (waiting.first, waiting.origin)
            count, last = len(rule.steps), last_of(event, fields)
            self._fire(rule, key, known, Firing(count, first, time, waiting.samples, last), alerts)
            return
        waiting.see(time, line.raw, self._last(rule, event, fields))
        self._place(rule, key, known, index + 1, waiting)

    def _place(
        self, rule: CompiledRule, key: Key, state: KeyState, done: int, partial: Partial
    ) -> None:
        existing = state.partials.get(done)
        if rule.absent and done == len(rule.steps) - 1:
            if existing is None:  # the earliest pending sequence keeps its deadline
                state.partials[done] = partial
                self._schedule(rule, key, partial.first + rule.window)
            return
        if existing is None or existing.first <= partial.first:
            state.partials[done] = partial

    def _schedule(self, rule: CompiledRule, key: Key, deadline: float) -> None:
        heap = rule.deadlines
        heapq.heappush(heap, (deadline, next(self.tiebreak), key))
        if len(heap) > 2 * rule.table.limit + 64:
            self.rebuild_deadlines(rule)  # cancelled and evicted entries pile up otherwise

    def rebuild_deadlines(self, rule: CompiledRule) -> None:
        done = len(rule.steps) - 1
        heap = []
        for key, state in rule.table.states.items():
            partial = state.partials.get(done)
            if partial is not None:
                heap.append((partial.first + rule.window, next(self.tiebreak), key))
        heapq.heapify(heap)
        rule.deadlines = heap

    def due(self, rule: CompiledRule, now: float, alerts: list[Alert]) -> None:
        heap = rule.deadlines
        done = len(rule.steps) - 1
        while heap and heap[0][0] <= now:
            deadline, _order, key = heapq.heappop(heap)
            state = rule.table.get(key)
            partial = state.partials.get(done) if state is not None else None
            if state is None or partial is None or partial.first + rule.window != deadline:
                continue  # cancelled, evicted or replaced since it was scheduled
            del state.partials[done]
            rule.table.dirty.add(key)
            first = (partial.first, partial.origin)
            firing = Firing(done, first, partial.last_time, partial.samples, partial.last)
            self._fire(rule, key, state, firing, alerts, at=deadline)

    def _last(self, rule: CompiledRule, event: Event, fields: dict[str, Any]) -> Last | None:
        """Only an absent sequence fires after its last event is gone: keep what it needs."""
        if not rule.absent:
            return None
        line = event.line
        return Last(line.source, line.path, cut(line.raw), jsonable(fields))

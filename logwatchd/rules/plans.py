"""Per source: what each rule needs of a line, and which rules a line's scan hits select.

A plan is a rule with the bits (``scan.PatternTable``) one of which a line must show for the
rule to have anything to do on it, per kind of rule:

- ``MatchPlan``: its condition can hold.
- ``ContextPlan``: its condition, ``learn`` or ``forget`` can hold (each has its own bits,
  so only those run); on every line when the source's parser may give the rule's
  ``group_by`` fields itself, since such a line completes a match its connection holds.
- ``SequencePlan``: one of its steps can hold; on every line when the last step is
  ``absent``, whose deadline passes with any event of its sources.

A source whose rules need no pattern at all (``ALWAYS``) has every line evaluated.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from logwatchd.rules.compiled import CompiledRule
from logwatchd.rules.direct import DirectRule, Produces, direct_rule
from logwatchd.rules.predicates import Condition
from logwatchd.rules.scan import ALWAYS, Hits, LineScan, PatternTable
from logwatchd.rules.selection import ScanPattern, condition_need

MAX_SELECTIONS = 4096  # distinct hit sets remembered per source (a few dozen in practice)


@dataclass(frozen=True, slots=True)
class MatchPlan:
    rule: CompiledRule
    mask: int
    direct: DirectRule | None = None  # the rule on framed lines, when it has the shape


@dataclass(frozen=True, slots=True)
class ContextPlan:
    rule: CompiledRule
    match: int
    learn: int  # 0: the context has no learn
    forget: int  # 0: the context has no forget
    mask: int


@dataclass(frozen=True, slots=True)
class SequencePlan:
    rule: CompiledRule
    mask: int


Plan = MatchPlan | ContextPlan | SequencePlan


class SourcePlan:
    """A source's plans in config order, its scan, and the plans each set of hits selects."""

    def __init__(self, plans: Sequence[Plan], scan: LineScan) -> None:
        self.plans = tuple(plans)
        self.scan = scan
        self._selected: dict[Hits, tuple[Plan, ...]] = {}
        self._direct: dict[Hits, tuple[DirectRule, ...] | None] = {}

    def select(self, hits: Hits) -> tuple[Plan, ...]:
        found = self._selected.get(hits)
        if found is None:
            found = tuple(plan for plan in self.plans if plan.mask & hits)
            if len(self._selected) < MAX_SELECTIONS:
                self._selected[hits] = found
        return found

    def direct(self, hits: Hits) -> tuple[DirectRule, ...] | None:
        """The selected rules as ``DirectRule``s, when there are some and every one is of
        the common shape (only on a source whose lines are framed: ``direct.py``); else
        None."""
        found = self._direct.get(hits, False)
        if found is False:
            shapes = [
                plan.direct if isinstance(plan, MatchPlan) else None for plan in self.select(hits)
            ]
            found = None if not shapes or None in shapes else tuple(shapes)  # type: ignore[arg-type]
            if len(self._direct) < MAX_SELECTIONS:
                self._direct[hits] = found
        return found  # type: ignore[return-value]


def plan_source(
    rules: Sequence[CompiledRule],
    verbatim: Collection[str],
    produces: Produces | None,
    table: PatternTable,
    *,
    native: bool,
    framed: bool = False,
) -> SourcePlan:
    """``verbatim``: the fields the source's parser copies out of the line; ``produces``:
    which fields it gives at all (None: any); ``framed``: whether its parser frames lines
    for the short path (``direct.py``)."""
    scanned: set[ScanPattern] = set()

    def mask(condition: Condition | None) -> int:
        if condition is None:
            return 0
        need = condition_need(condition.pred, verbatim, condition.ungated)
        scanned.update(need or ())
        return table.mask(need)

    plans: list[Plan] = []
    for rule in rules:
        if rule.is_sequence:
            steps = 0
            for step in rule.step_conditions:
                steps |= mask(step)
            plans.append(SequencePlan(rule, ALWAYS if rule.absent else steps))
        elif rule.context is not None:
            context = rule.context
            match, learn = mask(rule.condition), mask(context.learn_condition)
            forget = mask(context.forget_condition)
            # a match is held only for want of a group_by field: a line that brings them all
            releases = bool(rule.group_by) and (
                produces is None or all(produces(name) for name in rule.group_by)
            )
            whole = match | learn | forget | (ALWAYS if releases else 0)
            plans.append(ContextPlan(rule, match, learn, forget, whole))
        else:
            shape = direct_rule(rule, produces) if framed else None
            plans.append(MatchPlan(rule, mask(rule.condition), shape))
    everything = any(plan.mask & ALWAYS for plan in plans)
    return SourcePlan(plans, LineScan(table, scanned, everything=everything, native=native))

"""Per source, what each kind of rule needs of a line before it runs on it."""

from __future__ import annotations

import re

from logwatchd.config.model import (
    AnyOf,
    ContextConfig,
    RuleConfig,
    Sequence,
    SequenceStep,
    Threshold,
)
from logwatchd.rules.compiled import CompiledRule
from logwatchd.rules.plans import ContextPlan, MatchPlan, SequencePlan, plan_source
from logwatchd.rules.scan import ALWAYS, PatternTable
from tests.condition_helpers import leaf

FAILED = leaf(
    "message", "regex", re.compile(r"^Failed password for (?P<user>\S+) from (?P<ip>\S+)")
)
ACCEPTED = leaf("message", "regex", re.compile(r"^Accepted \S+ for (?P<user>\S+) from (?P<ip>\S+)"))
VERBATIM = frozenset({"message", "raw"})


def plans(*rules: RuleConfig, produces: object = None) -> list[object]:
    compiled = [CompiledRule(rule, {}, 100) for rule in rules]
    source = plan_source(compiled, VERBATIM, produces, PatternTable(), native=False)  # type: ignore[arg-type]
    return list(source.plans)


def test_a_match_rule_needs_the_pattern_of_its_condition() -> None:
    (plan,) = plans(RuleConfig("r", FAILED, group_by=("ip",)))
    assert isinstance(plan, MatchPlan) and plan.mask and not plan.mask & ALWAYS


def test_a_rule_on_a_field_not_copied_from_the_line_needs_every_line() -> None:
    (plan,) = plans(RuleConfig("r", leaf("status", "gte", 500)))
    assert isinstance(plan, MatchPlan) and plan.mask == ALWAYS


def test_a_context_rule_runs_for_its_condition_learn_or_forget_each_with_its_own_bits() -> None:
    context = ContextConfig(by=("pid",), remember=("ip",), learn=ACCEPTED,
                            forget=leaf("message", "startswith", "Connection closed"))  # fmt: skip
    rule = RuleConfig("r", leaf("message", "contains", "Too many"), group_by=("ip",),
                      context=context)  # fmt: skip
    (plan,) = plans(rule, produces=lambda name: name != "ip")
    assert isinstance(plan, ContextPlan)
    assert len({plan.match, plan.learn, plan.forget}) == 3 and not plan.mask & ALWAYS
    assert plan.mask == plan.match | plan.learn | plan.forget
    # a parser that gives the group_by field itself: any line may complete a held match
    (plan,) = plans(rule, produces=lambda name: True)
    assert plan.mask & ALWAYS  # type: ignore[attr-defined]


def test_a_sequence_needs_one_of_its_steps_unless_its_last_is_absent() -> None:
    steps = (SequenceStep(FAILED), SequenceStep(ACCEPTED))
    (plan,) = plans(RuleConfig("s", None, group_by=("ip",), sequence=Sequence(steps, 60.0)))
    assert isinstance(plan, SequencePlan) and plan.mask and not plan.mask & ALWAYS
    absent = (SequenceStep(FAILED), SequenceStep(ACCEPTED, absent=True))
    (plan,) = plans(RuleConfig("s", None, group_by=("ip",), sequence=Sequence(absent, 60.0)))
    assert plan.mask & ALWAYS  # type: ignore[attr-defined]


def test_any_of_a_condition_without_a_pattern_needs_every_line() -> None:
    rule = RuleConfig("r", AnyOf((FAILED, leaf("status", "gte", 500))), threshold=Threshold(2, 9))
    (plan,) = plans(rule)
    assert plan.mask == ALWAYS  # type: ignore[attr-defined]

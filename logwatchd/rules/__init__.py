"""The rule engine: a scan of raw lines, compiled predicates, windows, sequences, cooldowns."""

from logwatchd.rules.compiled import CompiledRule
from logwatchd.rules.engine import Engine, Match, RuleStateChanges
from logwatchd.rules.explain import ConditionResult, RuleExplanation, format_explanation

__all__ = [
    "CompiledRule",
    "ConditionResult",
    "Engine",
    "Match",
    "RuleExplanation",
    "RuleStateChanges",
    "format_explanation",
]

"""Why a rule did or did not match a line: for ``logwatchd explain``.

This walks the predicate tree (the slow way, on purpose: it records every condition), using
the same compiled leaves as the engine, so a condition reported true here is true there. The
rule's verdict itself comes from the engine's own compiled test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from logwatchd.config.model import All, Leaf, ListConfig, Not, Predicate, operand
from logwatchd.events import Event
from logwatchd.rules.predicates import ALL_HITS, compile_leaf, extracted_names
from logwatchd.rules.values import MISSING

if TYPE_CHECKING:
    from logwatchd.rules.compiled import CompiledRule

SHOWN_CHARS = 120


@dataclass(frozen=True)
class ConditionResult:
    """One node of the tree: a leaf (field, op, expected, seen) or all/any/not."""

    path: str  # "match.all[1].not", "steps[0].any[2]"
    op: str
    result: bool
    depth: int
    field: str | None = None
    expected: Any = None
    seen: Any = MISSING


@dataclass(frozen=True)
class RuleExplanation:
    rule: str
    matched: bool
    conditions: list[ConditionResult]
    key: dict[str, str] | None = None  # the group_by key, when it matched and had one
    fields: dict[str, Any] = field(default_factory=dict)  # with what its regexes extracted
    note: str = ""


def explain_rule(
    rule: CompiledRule, event: Event, lists: Mapping[str, ListConfig]
) -> RuleExplanation:
    cfg = rule.cfg
    if cfg.sequence is not None:
        return _explain_sequence(rule, event, lists)
    if cfg.match is None or rule.match is None:
        return RuleExplanation(cfg.id, False, [], note="rule has no match")
    rows: list[ConditionResult] = []
    walker = _Walker(lists, extracted_names(cfg.match), event.fields, rows)
    walker.walk(cfg.match, {}, "match", 0)
    ext: dict[str, Any] = {}
    matched = rule.match.test(event.fields, ext, ALL_HITS)
    return _verdict(rule, matched, rows, {**event.fields, **ext} if matched else event.fields)


def _explain_sequence(
    rule: CompiledRule, event: Event, lists: Mapping[str, ListConfig]
) -> RuleExplanation:
    assert rule.cfg.sequence is not None
    rows: list[ConditionResult] = []
    matched_steps: list[int] = []
    fields = event.fields
    for index, (step, compiled) in enumerate(zip(rule.cfg.sequence.steps, rule.steps, strict=True)):
        walker = _Walker(lists, extracted_names(step.match), event.fields, rows)
        walker.walk(step.match, {}, f"steps[{index}]", 0)
        ext: dict[str, Any] = {}
        if compiled.test(event.fields, ext, ALL_HITS):
            if not matched_steps:
                fields = {**event.fields, **ext}
            matched_steps.append(index)
    explanation = _verdict(rule, bool(matched_steps), rows, fields)
    note = f"matches sequence step(s) {matched_steps}" if matched_steps else ""
    if explanation.note:
        note = f"{note}; {explanation.note}" if note else explanation.note
    return RuleExplanation(
        explanation.rule, explanation.matched, rows, explanation.key, explanation.fields, note
    )


def _verdict(
    rule: CompiledRule, matched: bool, rows: list[ConditionResult], fields: dict[str, Any]
) -> RuleExplanation:
    if not matched:
        return RuleExplanation(rule.id, False, rows)
    key = rule.key_of(fields)
    if key is None:
        missing = ", ".join(name for name in rule.group_by if fields.get(name) is None)
        note = f"matched, but not counted: group_by field(s) missing: {missing}"
        if rule.context is not None:
            by = ", ".join(rule.context.by)
            note = (
                f"matched; group_by field(s) missing here ({missing}): the connection "
                f"({by}) holds the match until a later line of it shows them, or fills them "
                "in from what earlier lines showed (explain sees this line alone)"
            )
        return RuleExplanation(rule.id, True, rows, None, fields, note)
    keyed = dict(zip(rule.group_by, key, strict=True))
    return RuleExplanation(rule.id, True, rows, keyed, fields)


class _Walker:
    """Evaluates every node (no short cut), with the engine's scoping of extracted fields."""

    def __init__(
        self,
        lists: Mapping[str, ListConfig],
        produced: frozenset[str],
        fields: dict[str, Any],
        rows: list[ConditionResult],
    ) -> None:
        self.lists = lists
        self.produced = produced
        self.fields = fields
        self.rows = rows

    def walk(self, pred: Predicate, ext: dict[str, Any], path: str, depth: int) -> bool:
        if isinstance(pred, Leaf):
            return self._leaf(pred, ext, path, depth)
        slot = len(self.rows)
        self.rows.append(ConditionResult(path, "?", False, depth))
        if isinstance(pred, Not):
            result = not self.walk(pred.item, dict(ext), f"{path}.not", depth + 1)
            self.rows[slot] = ConditionResult(path, "not", result, depth)
            return result
        name = "all" if isinstance(pred, All) else "any"
        results = []
        for index, item in enumerate(pred.items):
            scratch = dict(ext)
            ok = self.walk(item, scratch, f"{path}.{name}[{index}]", depth + 1)
            results.append(ok)
            # the engine keeps a branch's groups only when that branch decided the outcome
            if ok and (isinstance(pred, All) or not any(results[:-1])):
                ext.update(scratch)
        result = all(results) if isinstance(pred, All) else any(results)
        self.rows[slot] = ConditionResult(path, name, result, depth)
        return result

    def _leaf(self, leaf: Leaf, ext: dict[str, Any], path: str, depth: int) -> bool:
        test = compile_leaf(leaf, self.lists, self.produced)
        seen = ext.get(leaf.field, MISSING)
        if seen is MISSING:
            seen = self.fields.get(leaf.field, MISSING)
        result = test(self.fields, ext, ALL_HITS)
        self.rows.append(
            ConditionResult(path, leaf.op, result, depth, leaf.field, operand(leaf), seen)
        )
        return result


# --- text ---------------------------------------------------------------------------------


def format_explanation(explanations: list[RuleExplanation]) -> str:
    """Readable text, a block per rule; values shown with repr, so hostile text stays inert."""
    if not explanations:
        return "no rule applies to this source"
    blocks = [_format_rule(explanation) for explanation in explanations]
    return "\n\n".join(blocks)


def _format_rule(explanation: RuleExplanation) -> str:
    verdict = "MATCH" if explanation.matched else "no match"
    head = f"rule {explanation.rule}: {verdict}"
    if explanation.key:
        head += "  key " + ", ".join(f"{k}={_show(v)}" for k, v in explanation.key.items())
    lines = [head]
    if explanation.note:
        lines.append(f"  ({explanation.note})")
    for row in explanation.conditions:
        lines.append("  " + "  " * row.depth + _format_row(row))
    return "\n".join(lines)


def _format_row(row: ConditionResult) -> str:
    verdict = "yes" if row.result else "NO"
    if row.field is None:
        return f"{row.op}: {verdict}"
    seen = "(missing)" if row.seen is MISSING else _show(row.seen)
    return f"{row.field} {row.op} {_expected(row.expected)}: {verdict}  [seen {seen}]"


def _expected(value: Any) -> str:
    if isinstance(value, re.Pattern):
        return _show(value.pattern)
    if isinstance(value, tuple | list | frozenset | set):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return _show(value)


def _show(value: Any) -> str:
    try:
        if value is None:
            text = "null"
        elif isinstance(value, bool | int | float | str):
            text = repr(value)
        else:
            text = repr(str(value))
    except ValueError:  # an int too long to print
        text = "(unprintable)"
    if len(text) > SHOWN_CHARS:
        text = text[: SHOWN_CHARS - 1] + "\u2026"
    return text

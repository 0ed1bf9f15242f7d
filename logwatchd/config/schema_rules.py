"""Validation of ``rules:`` and their conditions (predicates) into the model dataclasses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import Any

from logwatchd.config import nodes
from logwatchd.config.handler_settings import IpNetwork
from logwatchd.config.model import (
    SEVERITIES,
    All,
    AnyOf,
    Cidr,
    Compare,
    ContextConfig,
    Equals,
    Exists,
    In,
    InList,
    Leaf,
    LeafOp,
    ListConfig,
    Not,
    Predicate,
    Regex,
    RuleConfig,
    Sequence,
    SequenceStep,
    Text,
    Threshold,
)
from logwatchd.config.nodes import Node
from logwatchd.errors import Mark

LEAF_OPS: tuple[LeafOp, ...] = (
    "equals",
    "in",
    "contains",
    "startswith",
    "endswith",
    "regex",
    "cidr",
    "in_list",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
)
ICASE_OPS = frozenset({"equals", "in", "contains", "startswith", "endswith", "regex", "in_list"})
COMBINATORS = ("all", "any", "not")
RULE_KEYS = (
    "id",
    "description",
    "sources",
    "match",
    "sequence",
    "group_by",
    "threshold",
    "cooldown",
    "severity",
    "tags",
    "handlers",
    "context",
)
CONTEXT_KEYS = ("by", "optional", "remember", "learn", "forget", "distinct", "for")


@dataclass(frozen=True)
class RuleContext:
    """What rules may refer to, already validated."""

    lists: MappingABC[str, ListConfig]
    sources: set[str]
    handlers: set[str]
    default_handlers: tuple[str, ...]


def rules_section(entries: list[Node], context: RuleContext) -> list[RuleConfig]:
    return [rule(entry, context) for entry in entries]


def rule(node: Node, context: RuleContext) -> RuleConfig:
    entries = nodes.mapping(node, RULE_KEYS, required=("id",))
    values: dict[str, Any] = {"mark": node.mark}
    values["match"] = _match_or_sequence(entries, values, context)
    if (item := entries.get("sources")) is not None:
        values["sources"] = names(item, context.sources, "source")
    if (item := entries.get("group_by")) is not None:
        values["group_by"] = tuple(nodes.strings(item, empty_ok=True))
    if (item := entries.get("threshold")) is not None:
        if "sequence" in entries:
            raise item.error("a sequence rule cannot also have a threshold")
        values["threshold"] = _threshold(item)
    if (item := entries.get("cooldown")) is not None:
        values["cooldown"] = nodes.duration(item)
    if (item := entries.get("severity")) is not None:
        values["severity"] = nodes.choice(item, SEVERITIES)
    if (item := entries.get("tags")) is not None:
        values["tags"] = tuple(nodes.strings(item, empty_ok=True))
    if (item := entries.get("description")) is not None:
        values["description"] = nodes.string(item, empty_ok=True)
    values["handlers"] = _rule_handlers(entries.get("handlers"), context)
    if (item := entries.get("context")) is not None:
        if "sequence" in entries:
            raise item.error("'context' applies to 'match' rules, not to sequences")
        values["context"] = _context(item, context.lists)
    values["marks"] = _marks(entries)
    return RuleConfig(id=nodes.string(entries.need("id")), path=node.path, **values)


def _marks(entries: nodes.Mapping) -> dict[str, Mark]:
    """The Mark of each key of the rule, and of the keys inside threshold and context."""
    marks = {key: entry.mark for key, entry in entries.entries.items()}
    for outer in ("threshold", "context"):
        inner = entries.get(outer)
        if inner is not None and isinstance(inner.value, dict):
            marks.update((f"{outer}.{key}", entry.mark) for key, entry in inner.value.items())
    return marks


def _match_or_sequence(
    entries: nodes.Mapping, values: dict[str, Any], context: RuleContext
) -> Predicate | None:
    match = entries.get("match")
    sequence = entries.get("sequence")
    if match is not None and sequence is not None:
        raise sequence.error("give either 'match' or 'sequence', not both")
    if sequence is not None:
        values["sequence"] = _sequence(sequence, context)
        return None
    if match is None:
        raise entries.node.error("missing required key 'match' (or 'sequence')")
    return predicate(match, context.lists)


def names(node: Node, known: Collection[str], what: str) -> tuple[str, ...]:
    """A name or list of names, each one of ``known``."""
    given = nodes.strings(node)
    name_nodes = node.value if isinstance(node.value, list) else [node]
    for name, name_node in zip(given, name_nodes, strict=True):
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise name_node.error(f"unknown {what} '{name}'; declared: {listed}")
    return tuple(given)


def _rule_handlers(node: Node | None, context: RuleContext) -> tuple[str, ...]:
    if node is None:
        return context.default_handlers
    if isinstance(node.value, list) and not node.value:
        raise node.error("must not be empty (leave 'handlers' out to use defaults.handlers)")
    return names(node, context.handlers, "handler")


def _threshold(node: Node) -> Threshold:
    entries = nodes.mapping(node, ("count", "window", "distinct"), required=("count", "window"))
    count = nodes.integer(entries.need("count"), minimum=1)
    window = nodes.duration(entries.need("window"), positive=True)
    distinct = None
    if (item := entries.get("distinct")) is not None:
        distinct = nodes.string(item)
    return Threshold(count, window, distinct)


def _sequence(node: Node, context: RuleContext) -> Sequence:
    entries = nodes.mapping(node, ("steps", "window"), required=("steps", "window"))
    steps_node = entries.need("steps")
    step_nodes = nodes.items(steps_node, "a list of steps")
    if len(step_nodes) < 2:
        raise steps_node.error("a sequence needs at least 2 steps")
    steps = []
    for index, step_node in enumerate(step_nodes):
        step = nodes.mapping(step_node, ("match", "absent"), required=("match",))
        absent = False
        if (item := step.get("absent")) is not None:
            absent = nodes.boolean(item)
            if absent and index != len(step_nodes) - 1:
                raise item.error("only the last step can be 'absent'")
        steps.append(SequenceStep(predicate(step.need("match"), context.lists), absent))
    window = nodes.duration(entries.need("window"), positive=True)
    return Sequence(tuple(steps), window)


def _context(node: Node, lists: MappingABC[str, ListConfig]) -> ContextConfig:
    entries = nodes.mapping(node, CONTEXT_KEYS, required=("by",))
    values: dict[str, Any] = {"mark": node.mark}
    by_node = entries.need("by")
    values["by"] = tuple(nodes.strings(by_node))
    if (item := entries.get("optional")) is not None:
        values["optional"] = _optional(item, values["by"])
    if (item := entries.get("remember")) is not None:
        values["remember"] = tuple(nodes.strings(item))
    if (item := entries.get("learn")) is not None:
        values["learn"] = predicate(item, lists)
    if (item := entries.get("forget")) is not None:
        values["forget"] = predicate(item, lists)
    if (item := entries.get("distinct")) is not None:
        values["distinct"] = _context_distinct(item, (*values["by"], *values.get("remember", ())))
    if (item := entries.get("for")) is not None:
        values["ttl"] = nodes.duration(item, positive=True)
    return ContextConfig(**values)


def _optional(node: Node, by: tuple[str, ...]) -> tuple[str, ...]:
    """The ``by`` fields a line may lack (a missing one counts as empty); not all of them."""
    given = nodes.strings(node)
    name_nodes = node.value if isinstance(node.value, list) else [node]
    for name, name_node in zip(given, name_nodes, strict=True):
        if name not in by:
            raise name_node.error(f"'{name}' is not one of the 'by' fields")
    if set(given) >= set(by):
        raise node.error("at least one 'by' field must be required")
    return tuple(given)


def _context_distinct(node: Node, taken: Collection[str]) -> tuple[tuple[str, str], ...]:
    """``{NAME: FIELD}``: NAME becomes a field counting the connection's distinct FIELD values."""
    if not isinstance(node.value, dict) or not node.value:
        raise nodes.wrong_type(node, "a mapping {count field: counted field}")
    pairs = []
    for name, field_node in node.value.items():
        if name in taken:
            raise field_node.error(f"'{name}' is already a 'by' or 'remember' field")
        counted = nodes.string(field_node)
        if counted == name:
            raise field_node.error(f"'{name}' cannot count itself; give the count another name")
        pairs.append((name, counted))
    return tuple(pairs)


# --- predicates ---------------------------------------------------------------------------


def predicate(node: Node, lists: MappingABC[str, ListConfig]) -> Predicate:
    """``all``/``any``/``not`` or a leaf ``{field: F, OP: V}`` with exactly one OP."""
    if not isinstance(node.value, dict):
        raise nodes.wrong_type(node, "a condition (all/any/not, or {field: F, OP: value})")
    combinators = [key for key in COMBINATORS if key in node.value]
    if not combinators:
        return _leaf(node, lists)
    if len(node.value) != 1:
        others = ", ".join(f"'{key}'" for key in node.value if key != combinators[0])
        raise node.error(
            f"'{combinators[0]}' cannot share a condition with {others}; nest them in 'all'"
        )
    key = combinators[0]
    inner = node.value[key]
    if key == "not":
        return Not(predicate(inner, lists), inner.mark)
    members = nodes.items(inner, "a list of conditions")
    if not members:
        raise inner.error("must list at least one condition")
    parsed = tuple(predicate(member, lists) for member in members)
    return All(parsed, inner.mark) if key == "all" else AnyOf(parsed, inner.mark)


def _leaf(node: Node, lists: MappingABC[str, ListConfig]) -> Leaf:
    entries = nodes.mapping(node, ("field", "icase", *LEAF_OPS, *COMBINATORS))
    ops = [key for key in LEAF_OPS if key in node.value]
    if not ops:
        raise node.error(f"a condition needs one of: {', '.join(LEAF_OPS)} (or all/any/not)")
    if len(ops) > 1:
        raise node.value[ops[1]].error(
            f"one operator per condition, got {' and '.join(ops)}; combine conditions with 'all'"
        )
    op = ops[0]
    field = nodes.string(entries.need("field"))
    icase = False
    if (item := entries.get("icase")) is not None:
        icase = nodes.boolean(item)
        if icase and op not in ICASE_OPS:
            raise item.error(f"icase does not apply to '{op}'")
    return _typed_leaf(op, field, node.value[op], icase=icase, lists=lists, mark=node.mark)


def _typed_leaf(
    op: LeafOp,
    field: str,
    node: Node,
    *,
    icase: bool,
    lists: MappingABC[str, ListConfig],
    mark: Mark,
) -> Leaf:
    """The leaf of kind ``op`` on ``field`` (at ``mark``), its value ``node`` checked and typed
    here once for all: the rule engine relies on it."""
    match op:
        case "equals":
            return Equals(field, _plain(node), icase=icase, mark=mark)
        case "in":
            members = nodes.items(node, "a list of values")
            if not members:
                raise node.error("must list at least one value")
            values = tuple(_plain(member) for member in members)
            return In(field, values, icase=icase, mark=mark)
        case "contains" | "startswith" | "endswith":
            return Text(field, op, nodes.string(node), icase=icase, mark=mark)
        case "regex":
            pattern = nodes.regex(node, re.IGNORECASE if icase else 0)
            return Regex(field, pattern, icase=icase, mark=mark)
        case "cidr":
            return Cidr(field, _networks(node), mark=mark)
        case "in_list":
            return InList(field, _list_name(node, lists), icase=icase, mark=mark)
        case "exists":
            return Exists(field, nodes.boolean(node), mark=mark)
        case "gt" | "gte" | "lt" | "lte":
            return Compare(field, op, nodes.number(node), mark=mark)


def _list_name(node: Node, lists: MappingABC[str, ListConfig]) -> str:
    name = nodes.string(node)
    if name not in lists:
        listed = ", ".join(sorted(lists)) or "none"
        raise node.error(f"unknown list '{name}'; declared: {listed}")
    return name


def _plain(node: Node) -> str | int | float:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise nodes.wrong_type(node, "a string or a number (quote true/false/null/dates)")
    return value


def _networks(node: Node) -> tuple[IpNetwork, ...]:
    texts = nodes.strings(node)
    text_nodes = node.value if isinstance(node.value, list) else [node]
    networks = []
    for text, text_node in zip(texts, text_nodes, strict=True):
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise text_node.error(f'"{text}" is not an IP address or CIDR network') from None
    return tuple(networks)

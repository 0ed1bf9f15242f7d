"""Which fields a rule can see, and the check that rules name only those.

A misspelt field (``eventtype`` for ``event_type``) used to be valid: the condition simply
never held and the rule never fired. Every parser says which fields it can produce
(``parsers.produced_fields``); a rule adds the named groups of its regexes and its
``context`` counts. A field a rule names (in a condition, ``group_by``, ``distinct``,
``context``) that none of those can produce is

- an error when no parser at all (builtin or declared) gives a field of that name: it is a
  misspelling wherever the rule is;
- nothing to report when the rule can still fire without it: a condition on a missing field
  is false (``exists: false`` true), so ``any: [{field: _TRANSPORT, exists: false},
  {field: uid, equals: 0}]`` (the packs' "from a syslog file, or from root on the journal")
  holds on a syslog file, which has neither field;
- otherwise an error when the rule names its sources, and a warning when it names none:
  a shipped pack selects on ``program`` and serves syslog files and the journal alike, so
  on a host that follows only an application log its sshd rule is idle, not wrong.

Templates are checked against the same fields (``templates.check_templates``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from logwatchd.config.model import (
    All,
    AnyOf,
    Config,
    Exists,
    Leaf,
    Not,
    Predicate,
    Regex,
    RuleConfig,
)
from logwatchd.errors import ConfigError, Mark
from logwatchd.parsers import FieldSet, known_fields, produced_fields

MAX_LISTED = 24  # field names listed in a message before "..."


@dataclass(frozen=True)
class RuleShape:
    """What the alerts of one rule hold, to render a handler's templates at check time.

    ``problem(name)`` says why the rule's events never hold the field ``name`` (None: they
    may); ``event_fields`` are the names the sample alert's ``event.fields`` holds.
    """

    rule: str
    key_fields: tuple[str, ...]
    event_fields: tuple[str, ...]
    problem: Callable[[str], str | None] = field(compare=False)


@dataclass(frozen=True)
class FieldUse:
    """One place a rule names a field: ``key`` is the key path (``rules[0].match.field``)."""

    name: str
    key: str
    mark: Mark


@dataclass(frozen=True)
class RuleFields:
    """What one rule's events can hold: its sources' parser fields plus what it adds."""

    sources: tuple[tuple[str, str, FieldSet], ...]  # (source id, parser name, its fields)
    added: frozenset[str]  # regex groups and context counts of the rule itself

    def has(self, name: str) -> bool:
        return name in self.added or any(fields.has(name) for _, _, fields in self.sources)

    def is_open(self) -> bool:
        return any(fields.is_open() for _, _, fields in self.sources)

    def names(self) -> list[str]:
        found = set(self.added)
        for _, _, fields in self.sources:
            found |= fields.names
        return sorted(found)

    def describe(self) -> str:
        parts = []
        for source, parser, fields in self.sources:
            listed = sorted(fields.names)
            text = ", ".join(listed[:MAX_LISTED]) + (", ..." if len(listed) > MAX_LISTED else "")
            if fields.more_text:
                text += f", {fields.more_text}"
            parts.append(f"source {source} (parser {parser}) gives {text}")
        if self.added:
            parts.append(f"the rule adds {', '.join(sorted(self.added))}")
        return "; ".join(parts)


def rule_fields(config: Config, rule: RuleConfig) -> RuleFields:
    wanted = set(rule.sources) if rule.sources else None
    sources = tuple(
        (src.id, src.parser, produced_fields(src.parser, config.parsers))
        for src in config.sources
        if wanted is None or src.id in wanted
    )
    return RuleFields(sources, added_fields(rule))


def check_fields(config: Config) -> list[str]:
    """Raise ConfigError for the first field no source of its rule can produce (see the
    module doc for when that is only a warning); return the warnings."""
    everywhere = known_fields(config.parsers)
    warnings: list[str] = []
    for rule in config.rules:
        available = rule_fields(config, rule)
        missing: dict[str, FieldUse] = {}
        for use in field_uses(rule):
            if available.has(use.name):
                continue
            if not _known(use.name, everywhere):
                message = unknown_field_message(use.name, available, everywhere)
                raise ConfigError(message, use.mark, use.key)
            missing.setdefault(use.name, use)
        if not missing or can_match(rule, available):
            continue  # e.g. a branch for the journal's fields next to one for syslog files
        first = next(iter(missing.values()))
        if rule.sources:
            message = unknown_field_message(first.name, available)
            raise ConfigError(message, first.mark, first.key)
        names = ", ".join(f"'{name}'" for name in missing)
        warnings.append(
            f"{first.mark}: {first.key}: rule {rule.id} names no sources and no source of "
            f"this config gives {names}: the rule is idle until one does "
            f"({available.describe()})"
        )
    return warnings


def can_match(rule: RuleConfig, available: RuleFields) -> bool:
    """Whether the rule can fire on events that hold only ``available`` fields: a condition
    on a field they lack is false (``exists: false`` true), and the key must be there."""
    keys = [*rule.group_by]
    if rule.threshold is not None and rule.threshold.distinct is not None:
        keys.append(rule.threshold.distinct)
    if any(not available.has(name) for name in keys):
        return False
    if rule.sequence is not None:
        steps = [step.match for step in rule.sequence.steps if not step.absent]
        return all(_outcome(step, available) is not False for step in steps)
    return rule.match is None or _outcome(rule.match, available) is not False


def _outcome(pred: Predicate, available: RuleFields) -> bool | None:
    """True or False when the fields decide it whatever their values; None: it depends."""
    if isinstance(pred, Leaf):
        if available.has(pred.field):
            return None
        return isinstance(pred, Exists) and not pred.present
    if isinstance(pred, Not):
        inner = _outcome(pred.item, available)
        return None if inner is None else not inner
    outcomes = [_outcome(item, available) for item in pred.items]
    decisive = isinstance(pred, AnyOf)  # any: one True decides; all: one False decides
    if decisive in outcomes:
        return decisive
    return (not decisive) if all(o is (not decisive) for o in outcomes) else None


def _known(name: str, everywhere: list[FieldSet]) -> bool:
    """Some parser (not one that gives any field at all) gives a field of this name."""
    return any(fields.has(name) for fields in everywhere if not fields.is_open())


def template_shape(config: Config, rule: RuleConfig) -> RuleShape:
    """What ``check`` renders a handler's templates with for one rule that sends to it."""
    available = rule_fields(config, rule)
    everywhere = known_fields(config.parsers)

    def problem(name: str) -> str | None:
        if available.has(name):
            return None
        return _problem(rule, available, everywhere, name)

    return RuleShape(rule.id, rule.group_by, tuple(available.names()), problem)


def _problem(
    rule: RuleConfig, available: RuleFields, everywhere: list[FieldSet], name: str
) -> str | None:
    """The error for a field the rule's sources lack; None when the rule is only idle."""
    known = _known(name, everywhere)
    if known and not rule.sources:
        return None
    return unknown_field_message(name, available, None if known else everywhere)


def unknown_field_message(
    name: str, available: RuleFields, everywhere: list[FieldSet] | None = None
) -> str:
    """``everywhere`` given: no parser at all knows the name (suggest from all of them)."""
    close = difflib.get_close_matches(name, available.names(), n=1, cutoff=0.7)
    if not close and everywhere:
        names = sorted({n for fields in everywhere for n in fields.names})
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.7)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    which = "no parser" if everywhere is not None else "no source of this rule"
    return f"{which} gives a field '{name}'{hint}: {available.describe()}"


# --- walking a rule -----------------------------------------------------------------------


def added_fields(rule: RuleConfig) -> frozenset[str]:
    """Fields the rule itself puts on its events: named regex groups, context counts."""
    added: set[str] = set()
    for pred, _ in _predicates(rule):
        for leaf, _ in _leaves(pred, ""):
            if isinstance(leaf, Regex):
                added.update(leaf.pattern.groupindex)
    if rule.context is not None:
        added.update(name for name, _ in rule.context.distinct)
    return frozenset(added)


def field_uses(rule: RuleConfig) -> Iterator[FieldUse]:
    base = rule.path or f"rules.{rule.id}"
    for pred, key in _predicates(rule):
        for leaf, path in _leaves(pred, f"{base}.{key}"):
            yield FieldUse(leaf.field, f"{path}.field", leaf.mark)
    mark = rule.marks.get("group_by", rule.mark)
    yield from (FieldUse(name, f"{base}.group_by", mark) for name in rule.group_by)
    if rule.threshold is not None and rule.threshold.distinct is not None:
        mark = rule.marks.get("threshold.distinct", rule.mark)
        yield FieldUse(rule.threshold.distinct, f"{base}.threshold.distinct", mark)
    context = rule.context
    if context is None:
        return
    for key, names in (("by", context.by), ("remember", context.remember)):
        mark = rule.marks.get(f"context.{key}", rule.mark)
        yield from (FieldUse(name, f"{base}.context.{key}", mark) for name in names)
    mark = rule.marks.get("context.distinct", rule.mark)
    for name, counted in context.distinct:
        yield FieldUse(counted, f"{base}.context.distinct.{name}", mark)


def _predicates(rule: RuleConfig) -> Iterator[tuple[Predicate, str]]:
    """Every condition tree of the rule, with its key relative to the rule."""
    if rule.match is not None:
        yield rule.match, "match"
    if rule.sequence is not None:
        for index, step in enumerate(rule.sequence.steps):
            yield step.match, f"sequence.steps[{index}].match"
    if rule.context is not None:
        if rule.context.learn is not None:
            yield rule.context.learn, "context.learn"
        if rule.context.forget is not None:
            yield rule.context.forget, "context.forget"


def _leaves(pred: Predicate, path: str) -> Iterator[tuple[Leaf, str]]:
    if isinstance(pred, Leaf):
        yield pred, path
    elif isinstance(pred, Not):
        yield from _leaves(pred.item, f"{path}.not")
    elif isinstance(pred, All | AnyOf):
        word = "all" if isinstance(pred, All) else "any"
        for index, item in enumerate(pred.items):
            yield from _leaves(item, f"{path}.{word}[{index}]")

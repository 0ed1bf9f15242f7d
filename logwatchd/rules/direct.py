"""Rules evaluated straight from a line's framing: the short path for the common shape.

A rule with a threshold (``distinct`` too) or a cooldown, whose condition is ``program`` or
``host`` ``in``/``equals`` plain strings and one ``regex`` on ``message`` whose groups give
its ``group_by`` (and ``distinct``) fields, fail2ban's and SEC's everyday rule, needs nothing
of a line but what the parser's framing gives (``events.Framed``: event time, host, program,
message). For such a rule the line is not parsed into fields and no event object is made:
the rule tests the framed values, takes its key from the regex groups, and counts
(``Engine.process_framed``). Only when an alert fires does the line get parsed, to give the
alert the fields it would have had.

The result is the same as the full path's by construction, and tested line by line against
it (``tests/test_rules_direct.py``): the same regex objects run on the same message, the
parser's own framing and stamp conversion give the values, a line the framing cannot give
(another stamp form, a folded "message repeated") takes the full path, and so does every
line whose scan selects any rule that is not of this shape. What this module decides is only
*which* rules qualify; a condition it cannot prove to depend on nothing but the framed
values keeps the rule on the full path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from logwatchd.config.model import All, AnyOf, Equals, Exists, In, Leaf, Predicate, Regex
from logwatchd.events import FRAMED_FIELDS, Framed
from logwatchd.rules.compiled import CompiledRule
from logwatchd.rules.predicates import extracted_names
from logwatchd.rules.windows import Key

Produces = Callable[[str], bool]  # whether a source's parser can give a field


@dataclass(frozen=True, slots=True)
class DirectRule:
    """A rule of the common shape, ready to test framed lines."""

    rule: CompiledRule
    fixed: tuple[tuple[int, frozenset[str]], ...]  # (place in Framed, the texts it may be)
    search: Callable[[str], re.Match[str] | None]  # the message regex's own search
    groups: tuple[str, ...]  # the group_by fields, each a group of the regex
    distinct: str | None  # the threshold's distinct field, a group of the regex too

    def find(self, framed: Framed) -> re.Match[str] | None:
        """The regex match when the rule's condition holds on the line, else None."""
        for place, texts in self.fixed:
            value = framed[place]
            if value is None or value not in texts:
                return None
        return self.search(framed[3])

    def key(self, found: re.Match[str]) -> Key | None:
        """The group_by key; None when a group took no part (the full path counts no key
        then either: the field is not the parser's, so the event lacks it)."""
        if len(self.groups) == 1:
            value = found.group(self.groups[0])
            return None if value is None else (value,)
        values = found.group(*self.groups)
        return None if None in values else tuple(values)

    def value(self, found: re.Match[str]) -> str | None:
        """The distinct field's value (None: the rule has none, or the group took no part)."""
        return None if self.distinct is None else found.group(self.distinct)


def direct_rule(rule: CompiledRule, produces: Produces | None) -> DirectRule | None:
    """The rule as a ``DirectRule`` when it has the common shape, else None.

    ``produces``: whether the source's parser can give a field at all (None: any field), so
    that ``exists: false`` on a field it never gives (the journal's ``_TRANSPORT`` in a
    syslog file) is known to hold."""
    if rule.is_sequence or rule.context is not None or rule.condition is None:
        return None
    if not (rule.stateful and rule.group_by):
        return None  # a rule that fires on every match would parse every line anyway
    extracted = extracted_names(rule.condition.pred)
    leaves = _conjunction(rule.condition.pred, produces, extracted)
    if leaves is None:
        return None
    regexes = [leaf for leaf in leaves if isinstance(leaf, Regex)]
    if len(regexes) != 1:
        return None
    regex = regexes[0]
    groups = set(regex.pattern.groupindex)
    wanted = {*rule.group_by, *([rule.distinct] if rule.distinct else [])}
    if not wanted <= groups or any(_parser_field(name, produces) for name in groups):
        return None  # a group named like a parser field would hide or stand for it
    fixed = []
    for leaf in leaves:
        if leaf is regex:
            continue
        texts = _plain_texts(leaf)
        if texts is None:
            return None
        fixed.append((FRAMED_FIELDS[leaf.field], texts))
    return DirectRule(rule, tuple(fixed), regex.pattern.search, tuple(rule.group_by), rule.distinct)


def _conjunction(
    pred: Predicate, produces: Produces | None, extracted: frozenset[str]
) -> list[Leaf] | None:
    """The leaves whose conjunction the condition is, without the parts that always hold;
    None when it is not such a conjunction of leaves this module can test."""
    if isinstance(pred, Leaf):
        if _always(pred, produces, extracted):
            return []
        return [pred] if _testable(pred, extracted) else None
    if isinstance(pred, All):
        leaves: list[Leaf] = []
        for item in pred.items:
            found = _conjunction(item, produces, extracted)
            if found is None:
                return None
            leaves += found
        return leaves
    if isinstance(pred, AnyOf):
        # a branch that always holds makes the whole hold, if no branch before it could
        # have put regex groups into the match
        if not extracted_names(pred) and any(
            _conjunction(item, produces, extracted) == [] for item in pred.items
        ):
            return []
        if len(pred.items) == 1:
            return _conjunction(pred.items[0], produces, extracted)
    return None  # `not`, or a choice between conditions


def _always(leaf: Leaf, produces: Produces | None, extracted: frozenset[str]) -> bool:
    """``exists: false`` on a field neither the parser nor the rule's regexes ever give."""
    return (
        isinstance(leaf, Exists)
        and not leaf.present
        and produces is not None
        and not produces(leaf.field)
        and leaf.field not in extracted
    )


def _testable(leaf: Leaf, extracted: frozenset[str]) -> bool:
    if leaf.icase or leaf.field in extracted:
        return False
    if isinstance(leaf, Regex):
        return leaf.field == "message"
    return isinstance(leaf, Equals | In) and leaf.field in ("host", "program")


def _plain_texts(leaf: Leaf) -> frozenset[str] | None:
    """The strings an ``in``/``equals`` compares with, when that is all it does (a number
    would also equal a numeric string: such a leaf stays on the full path)."""
    if isinstance(leaf, In):
        values: tuple[object, ...] = leaf.values
    elif isinstance(leaf, Equals):
        values = (leaf.value,)
    else:
        return None
    texts = frozenset(value for value in values if isinstance(value, str))
    return texts if len(texts) == len(set(values)) else None


def _parser_field(name: str, produces: Produces | None) -> bool:
    return produces is None or produces(name) or name in FRAMED_FIELDS

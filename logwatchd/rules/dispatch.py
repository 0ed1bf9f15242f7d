"""Which rules a parsed event can reach, by its ``program`` and the start of its ``message``.

The prefilter rejects a raw line that no rule can match; past it, each rule still tests its
own literals on the line, one call per rule. Most rules of the shipped packs say more than
"these literals appear": ``program`` is one of a few names, and the message regex is
anchored (``^Failed ``, ``^(?:error: )?Invalid user``), so it can only match a message that
starts with one of a few texts. From those two facts every source gets a table: program ->
the first ``PREFIX`` characters of the message -> the rules (in config order) that can match
such an event. A line of sshd starting "Failed " then reaches the two rules that count
failures, not the scanner, disconnect, sudo and su rules.

Sound by construction: a rule is left out of an entry only when its condition cannot hold
for any event with that program and message start. Rules with a ``context`` or a
``sequence`` are always in (they keep clocks and connection memory on lines their
conditions do not match); so is any rule whose condition says nothing usable here (an
``icase`` test, an unanchored regex, a field the rule's own regexes may overwrite).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any, Generic, TypeVar

from logwatchd.config.model import All, AnyOf, Leaf, Predicate
from logwatchd.rules.literals import MAX_ALTERNATIVES, START_ANCHORS, exact_texts

PREFIX = 4  # message characters looked at: enough to tell sshd's messages apart
PROGRAM = "program"
MESSAGE = "message"

T = TypeVar("T")
Texts = frozenset[str] | None  # None: any value (nothing known)


# --- what a condition needs -----------------------------------------------------------------


def program_values(pred: Predicate, produced: frozenset[str]) -> Texts:
    """The ``program`` values under which ``pred`` can hold, or None for any."""
    if PROGRAM in produced:
        return None
    return _needs(pred, _program_leaf)


def message_prefixes(pred: Predicate, produced: frozenset[str]) -> Texts:
    """The ``PREFIX``-character starts of a ``message`` that ``pred`` can hold for, or None."""
    if MESSAGE in produced:
        return None
    return _needs(pred, _message_leaf)


def _needs(pred: Predicate, leaf_needs: Any) -> Texts:
    if isinstance(pred, Leaf):
        return leaf_needs(pred)  # type: ignore[no-any-return]
    if isinstance(pred, All):  # every item must hold: the value must suit each of them
        known = [n for n in (_needs(item, leaf_needs) for item in pred.items) if n is not None]
        return frozenset.intersection(*known) if known else None
    if isinstance(pred, AnyOf):  # one item must hold: the value suits one of them
        found: set[str] = set()
        for item in pred.items:
            needs = _needs(item, leaf_needs)
            if needs is None:
                return None
            found |= needs
        return frozenset(found)
    return None  # not: anything may hold


def _program_leaf(leaf: Leaf) -> Texts:
    if leaf.field != PROGRAM or leaf.icase or leaf.op not in ("equals", "in"):
        return None
    values = leaf.value if leaf.op == "in" else (leaf.value,)
    if not isinstance(values, tuple | list | frozenset | set):
        return None
    # a number may equal a field through int(): only text values say which text it is
    if not values or not all(isinstance(value, str) for value in values):
        return None
    return frozenset(values)


def _message_leaf(leaf: Leaf) -> Texts:
    if leaf.field != MESSAGE or leaf.icase:
        return None
    if leaf.op == "startswith" and isinstance(leaf.value, str) and len(leaf.value) >= PREFIX:
        return frozenset({leaf.value[:PREFIX]})
    if leaf.op == "regex" and isinstance(leaf.value, re.Pattern):
        return regex_prefixes(leaf.value)
    return None


def regex_prefixes(pattern: re.Pattern[str], size: int = PREFIX) -> Texts:
    """The ``size``-character starts of every text ``pattern.search`` matches, when the
    pattern is anchored at the start and spells them out; else None."""
    if not isinstance(pattern.pattern, str) or pattern.flags & (re.IGNORECASE | re.MULTILINE):
        return None
    try:
        items = list(sre_parse.parse(pattern.pattern, pattern.flags))
        if not items or items[0] not in START_ANCHORS:
            return None
        return _starts(items[1:], size)
    except (re.error, RecursionError, TypeError, ValueError, AttributeError, _TooMany):
        return None


class _TooMany(Exception):
    """More alternatives than are worth a table entry."""


def _starts(items: list[Any], size: int) -> Texts:
    """The first ``size`` characters of any text that matches ``items`` at its start (and
    goes on with anything), or None when they are not spelled out."""
    if size <= 0:
        return frozenset({""})
    if not items:
        return None  # the match may end here: what follows is anything
    head, rest = items[0], items[1:]
    exact = exact_texts(head, False)
    if exact is not None:
        return _join(((text, rest) for text in exact), size)
    op, av = head
    if op is sre.SUBPATTERN:
        _group, add, remove, body = av
        if (add | remove) & re.IGNORECASE:
            return None
        return _starts([*body, *rest], size)
    if op is sre.BRANCH:
        return _union(_starts([*alt, *rest], size) for alt in av[1])
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, high, body = av
        if (low, high) == (0, 1):  # optional: skipped, or once
            return _union([_starts(rest, size), _starts([*body, *rest], size)])
        if (low, high) == (1, 1):
            return _starts([*body, *rest], size)
    return None


def _join(parts: Iterable[tuple[str, list[Any]]], size: int) -> Texts:
    found: set[str] = set()
    for text, rest in parts:
        if len(text) >= size:
            found.add(text[:size])
        else:
            after = _starts(rest, size - len(text))
            if after is None:
                return None
            found |= {text + tail for tail in after}
        if len(found) > MAX_ALTERNATIVES:
            raise _TooMany
    return frozenset(found)


def _union(parts: Iterable[Texts]) -> Texts:
    found: set[str] = set()
    for part in parts:
        if part is None:
            return None
        found |= part
        if len(found) > MAX_ALTERNATIVES:
            raise _TooMany
    return frozenset(found)


def could_start(needed: Texts, message: Any) -> bool:
    """Whether a condition that needs one of these message starts could hold."""
    if needed is None:
        return True
    if message.__class__ is str:
        return message[:PREFIX] in needed
    return message is not None  # a missing message fails; a number's digits are not checked


# --- the table --------------------------------------------------------------------------------


class _ByPrefix(Generic[T]):
    """The rules for one program: by message start, else the rules that need none."""

    __slots__ = ("by_prefix", "everything", "other")

    def __init__(self, entries: Sequence[tuple[T, Texts]]) -> None:
        known = set().union(*(p for _, p in entries if p is not None))
        self.by_prefix = {
            start: tuple(item for item, p in entries if p is None or start in p) for start in known
        }
        self.other = tuple(item for item, p in entries if p is None)
        self.everything = tuple(item for item, _ in entries)


class Dispatch(Generic[T]):
    """Per source: the items (rule plans) an event may need, in their original order."""

    __slots__ = ("_by_program", "_no_program", "_unknown")

    def __init__(self, items: Sequence[T], needs: Sequence[tuple[Texts, Texts]]) -> None:
        rows = list(zip(items, needs, strict=True))
        programs = set().union(*(progs for _, (progs, _) in rows if progs is not None))
        self._by_program = {
            name: _ByPrefix([(item, p) for item, (g, p) in rows if g is None or name in g])
            for name in programs
        }
        # a program no rule names (or none at all): only rules that name none
        self._no_program = _ByPrefix([(item, p) for item, (g, p) in rows if g is None])
        # a program that is not text: nothing can be ruled out
        self._unknown = _ByPrefix([(item, None) for item, _ in rows])

    @classmethod
    def everything(cls, items: Sequence[T]) -> Dispatch[T]:
        """No shortcut: every item for every event (the reference in tests)."""
        return cls(items, [(None, None)] * len(items))

    def select(self, fields: dict[str, Any]) -> tuple[T, ...]:
        program = fields.get(PROGRAM)
        if program.__class__ is str:
            table = self._by_program.get(program, self._no_program)
        elif program is None:
            table = self._no_program
        else:
            table = self._unknown
        message = fields.get(MESSAGE)
        if message.__class__ is not str:
            # a missing message fails every prefix; a number's digits are not checked here
            return table.other if message is None else table.everything
        return table.by_prefix.get(message[:PREFIX], table.other)

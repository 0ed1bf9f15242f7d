"""Consecutive regex branches of an `any` on one field, run as one closure.

The closure reads the field once and tests each branch's guard literals before its regex;
when every branch is anchored at the start, the branches become one combined regex whose
named groups are renamed per branch and mapped back on a match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from logwatchd.config.model import Leaf, Predicate
from logwatchd.rules.literals import START_ANCHORS, plain_literals, regex_requirement
from logwatchd.rules.values import MISSING, Test, as_text


def leaf_pattern(leaf: Leaf) -> re.Pattern[str] | None:
    """The compiled regex of a regex leaf; None when its value is not a text pattern."""
    pattern = leaf.value
    if isinstance(pattern, str):
        pattern = re.compile(pattern, re.IGNORECASE if leaf.icase else 0)
    if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str):
        return None
    return pattern


def guard_literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Literals one of which every match holds: a substring test is far cheaper than a failed
    search. None when there are none, or some are icase (casefolding the text first would cost
    about what it saves)."""
    req = regex_requirement(pattern)
    if not req or any(icase for _text, icase in req):
        return None
    return plain_literals(req)


def regex_runs(items: Iterable[Predicate]) -> list[list[Predicate]]:
    """The items of an `any`, consecutive regex leaves on the same field grouped together."""
    runs: list[list[Predicate]] = []
    last: str | None = None  # the field of the previous item, if it is a regex leaf
    for item in items:
        regex = isinstance(item, Leaf) and item.op == "regex" and leaf_pattern(item) is not None
        name = item.field if regex and isinstance(item, Leaf) else None
        if name is not None and name == last:
            runs[-1].append(item)
        else:
            runs.append([item])
        last = name
    return runs


def regex_run(leaves: list[Predicate], produced: frozenset[str]) -> Test:
    """The first of several regex leaves on one field that matches, as one closure: the
    field is read once, and each branch costs its guard's `in` tests, not two calls."""
    first = leaves[0]
    assert isinstance(first, Leaf)
    name = first.field
    from_ext = name in produced
    patterns = []
    for leaf in leaves:
        assert isinstance(leaf, Leaf)
        pattern = leaf_pattern(leaf)
        assert pattern is not None
        patterns.append(pattern)
    combined = combine_anchored(patterns)
    if combined is not None:
        return _combined_run(name, from_ext, *combined)
    frozen = tuple(
        (guard_literals(pattern), pattern.search, bool(pattern.groupindex)) for pattern in patterns
    )

    def regex_run(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        value = ext[name] if from_ext and ext and name in ext else fields.get(name, MISSING)
        text = value if value.__class__ is str else as_text(value)
        if text is None:
            return False
        for literals, search, extracts in frozen:
            if literals is not None:
                for literal in literals:
                    if literal in text:
                        break
                else:
                    continue
            found = search(text)
            if found is None:
                continue
            if extracts and ext is not None:
                for group, captured in found.groupdict().items():
                    if captured is not None:
                        ext[group] = captured
            return True
        return False

    return regex_run


def _combined_run(
    name: str,
    from_ext: bool,
    match: Callable[[str], re.Match[str] | None],
    groups: dict[str, tuple[tuple[str, str], ...]],
) -> Test:
    def combined_run(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        value = ext[name] if from_ext and ext and name in ext else fields.get(name, MISSING)
        text = value if value.__class__ is str else as_text(value)
        if text is None:
            return False
        found = match(text)
        if found is None:
            return False
        if ext is not None:
            for renamed, group in groups[found.lastgroup]:  # type: ignore[index]
                captured = found.group(renamed)
                if captured is not None:
                    ext[group] = captured
        return True

    return combined_run


# --- one regex for several anchored branches ----------------------------------------------

_BRANCH = "_lwb{}"  # the group around branch N of a combined regex
_GROUP_IN_BRANCH = "_lwb{}_{}"  # named group G of branch N


def combine_anchored(
    patterns: list[re.Pattern[str]],
) -> tuple[Callable[[str], re.Match[str] | None], dict[str, tuple[tuple[str, str], ...]]] | None:
    """One regex that finds what the first of ``patterns`` to match would find, when every one
    is anchored at the start of the text (so ``search`` only ever tries position 0, and an
    alternation tried at position 0 in order picks the same branch).

    Returns its ``match``, and per branch marker the (renamed, original) names of that
    branch's named groups in group order; None when the patterns do not allow it (a pattern
    not anchored, flags that differ, back-references, or a rename that would not round-trip).
    """
    if len(patterns) < 2 or len({p.flags for p in patterns}) != 1:
        return None
    parts, groups, expected = [], {}, set()
    for index, pattern in enumerate(patterns):
        if not _anchored(pattern):
            return None
        renamed = _rename_groups(pattern.pattern, _GROUP_IN_BRANCH.format(index, ""))
        if renamed is None:
            return None
        marker = _BRANCH.format(index)
        parts.append(f"(?P<{marker}>{renamed})")
        order = sorted(pattern.groupindex.items(), key=lambda item: item[1])
        names = tuple((_GROUP_IN_BRANCH.format(index, group), group) for group, _ in order)
        groups[marker] = names
        expected |= {marker, *(new for new, _ in names)}
    try:
        combined = re.compile("|".join(parts), patterns[0].flags)
    except (re.error, RecursionError, OverflowError):
        return None
    # every group accounted for: the rename touched group syntax only, nothing else
    if set(combined.groupindex) != expected:
        return None
    if combined.groups != sum(p.groups for p in patterns) + len(patterns):
        return None
    return combined.match, groups


def _anchored(pattern: re.Pattern[str]) -> bool:
    """Starts with ``^`` (not multiline) or ``\\A``, and has no back-reference in it."""
    if pattern.flags & (re.MULTILINE | re.VERBOSE):
        return False  # "^" after newlines; comments the renaming does not know
    try:
        tree = sre_parse.parse(pattern.pattern, pattern.flags)
    except (re.error, RecursionError, OverflowError):
        return False
    items = list(tree)
    if not items or items[0] not in START_ANCHORS:
        return False
    return not _has_backref(items)


def _has_backref(items: Any) -> bool:
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and item[0] in _BACKREFS:
            return True
        if isinstance(item, list | tuple | sre_parse.SubPattern) and _has_backref(item):
            return True
    return False


_BACKREFS = (sre.GROUPREF, sre.GROUPREF_EXISTS, sre.GROUPREF_IGNORE, sre.GROUPREF_LOC_IGNORE,
             sre.GROUPREF_UNI_IGNORE)  # fmt: skip


def _rename_groups(text: str, prefix: str) -> str | None:
    """``(?P<name>`` becomes ``(?P<PREFIXname>``, outside escapes and character classes."""
    out: list[str] = []
    position, size = 0, len(text)
    in_class = False
    while position < size:
        char = text[position]
        if char == "\\":
            out.append(text[position : position + 2])
            position += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            out.append(char)
            position += 1
            # a "]" right after "[" or "[^" is a member, not the end
            if text.startswith("^", position):
                out.append("^")
                position += 1
            if text.startswith("]", position):
                out.append("]")
                position += 1
            continue
        elif text.startswith("(?P=", position):
            return None  # a named back-reference (also refused by _anchored)
        elif text.startswith("(?P<", position):
            out.append("(?P<" + prefix)
            position += 4
            continue
        out.append(char)
        position += 1
    return "".join(out)

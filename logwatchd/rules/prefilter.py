"""Required literals: reject most raw lines before they are parsed.

For each rule we derive a *requirement*: a set of literals of which at least one must appear
in the raw line for the rule to possibly match. It comes from conditions on *verbatim* fields,
fields whose string value the parser copies unchanged out of the raw line (``message`` of the
syslog parser, say): if ``message`` contains ``Failed password``, so does the raw line.

A literal is ``(text, icase)``. An ``icase`` literal is casefolded and looked for in the
casefolded line: casefolding works character by character, so a casefolded substring of the
field is a substring of the casefolded line. (``str.lower`` is not safe there: final sigma.)

Combination: ``all`` keeps its most selective requirement, ``any`` needs one from every
branch and unions them, ``not`` requires nothing. ``None`` means "no requirement": the rule
may match any line, and the prefilter lets everything through for its sources.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from logwatchd.config.model import All, Leaf, Not, Predicate
from logwatchd.rules.predicates import fold

Literal = tuple[str, bool]  # (text, icase)
Requirement = frozenset[Literal]
LineCheck = Callable[[str], bool]

ALL_FIELDS = "*"
DEFAULT_VERBATIM: frozenset[str] = frozenset({"message", "raw"})
MAX_ALTERNATIVES = 64  # beyond this, an expansion is not worth a set of literals
_TEXT_OPS = frozenset({"equals", "in", "contains", "startswith", "endswith"})


def predicate_requirement(
    pred: Predicate, verbatim: Collection[str], extracted: Collection[str] = ()
) -> Requirement | None:
    """Literals one of which any line matching ``pred`` contains, or None.

    ``extracted`` names fields that rule regexes set: they are never taken as verbatim,
    because their value comes from whatever field the regex ran on.
    """
    if isinstance(pred, Leaf):
        if pred.field in extracted or not is_verbatim(pred.field, verbatim):
            return None
        return leaf_requirement(pred)
    if isinstance(pred, Not):
        return None
    parts = [predicate_requirement(item, verbatim, extracted) for item in pred.items]
    if isinstance(pred, All):
        return most_selective(parts)
    return union(parts)


def is_verbatim(name: str, verbatim: Collection[str]) -> bool:
    return ALL_FIELDS in verbatim or name in verbatim


def leaf_requirement(leaf: Leaf) -> Requirement | None:
    if leaf.op == "regex":
        pattern = leaf.value
        return regex_requirement(pattern) if isinstance(pattern, re.Pattern) else None
    if leaf.op not in _TEXT_OPS:
        return None
    values = leaf.value if leaf.op == "in" else (leaf.value,)
    if not isinstance(values, tuple | list | frozenset | set) or not values:
        return None
    literals = set()
    for value in values:
        # a number may be matched through int("0404") == 404: nothing to require
        if not isinstance(value, str) or not value:
            return None
        if leaf.op in ("equals", "in") and _is_ipv6(value):
            return None  # it equals an IP-typed field however the line spells the address
        literals.add((fold(value), True) if leaf.icase else (value, False))
    return frozenset(literals)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def most_selective(parts: Iterable[Requirement | None]) -> Requirement | None:
    found = [part for part in parts if part]
    return max(found, key=selectivity) if found else None


def union(parts: Iterable[Requirement | None]) -> Requirement | None:
    total: set[Literal] = set()
    for part in parts:
        if not part:
            return None
        total |= part
    return frozenset(total) if total else None


def selectivity(req: Requirement) -> tuple[int, int]:
    """Longer literals are rarer in logs; fewer alternatives are cheaper to check."""
    return (min(len(text) for text, _ in req), -len(req))


# --- regexes ------------------------------------------------------------------------------

# Under re.IGNORECASE, "i" also matches U+0130 and U+0131, whose casefolds are not "i"
# (tests/test_rules_prefilter.py checks this against every code point); other ASCII is safe.
_UNSAFE_ICASE = frozenset("iI")


def regex_requirement(pattern: re.Pattern[str]) -> Requirement | None:
    """Literals every match of ``pattern`` contains at least one of (from its parse tree)."""
    if not isinstance(pattern.pattern, str):
        return None
    try:
        tree = sre_parse.parse(pattern.pattern, pattern.flags)
        icase = bool(tree.state.flags & re.IGNORECASE)
        return most_selective(_required(list(tree), icase))
    except (re.error, RecursionError, TypeError, ValueError, AttributeError):
        return None


def _required(items: list[Any], icase: bool) -> list[Requirement]:
    """Requirements of a sequence: the runs of exact text, and what its groups require."""
    found: list[Requirement] = []
    run: set[str] = {""}

    def flush() -> None:
        if run and "" not in run:
            found.append(frozenset((text, icase) for text in run))

    for item in items:
        exact = _exact(item, icase)
        if exact is not None and len(run) * len(exact) <= MAX_ALTERNATIVES:
            run = {a + b for a in run for b in exact}
            continue
        flush()
        if exact is not None:
            run = set(exact)
            continue
        run = {""}
        inner = _item_requirement(item, icase)
        if inner:
            found.append(inner)
    flush()
    return found


def _item_requirement(item: tuple[Any, Any], icase: bool) -> Requirement | None:
    op, av = item
    if op is sre.SUBPATTERN:
        _group, add, remove, body = av
        return most_selective(_required(list(body), _scoped(icase, add, remove)))
    if op is sre.ATOMIC_GROUP:
        return most_selective(_required(list(av), icase))
    if op is sre.BRANCH:
        return union(most_selective(_required(list(alt), icase)) for alt in av[1])
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, _high, body = av
        return most_selective(_required(list(body), icase)) if low >= 1 else None
    return None


def _scoped(icase: bool, add: int, remove: int) -> bool:
    if add & re.IGNORECASE:
        return True
    if remove & re.IGNORECASE:
        return False
    return icase


def _exact(item: tuple[Any, Any], icase: bool) -> set[str] | None:
    """The finite, small set of strings ``item`` matches, or None."""
    op, av = item
    if op is sre.LITERAL:
        char = _char(av, icase)
        return None if char is None else {char}
    if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
        return {""}  # zero width: the text around it is still contiguous
    if op is sre.IN:
        return _char_set(av, icase)
    if op is sre.SUBPATTERN:
        _group, add, remove, body = av
        if _scoped(icase, add, remove) != icase:
            return None  # its text is compared differently: it gets its own requirement
        return _exact_sequence(list(body), icase)
    if op is sre.ATOMIC_GROUP:
        return _exact_sequence(list(av), icase)
    if op is sre.BRANCH:
        return _exact_branch(av[1], icase)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        return _exact_repeat(av, icase)
    return None


def _char(code: int, icase: bool) -> str | None:
    char = chr(code)
    if not icase:
        return char
    if char.isascii() and char not in _UNSAFE_ICASE:
        return char.lower()
    return None


def _char_set(items: list[tuple[Any, Any]], icase: bool) -> set[str] | None:
    chars: set[str] = set()
    for op, av in items:
        if op is not sre.LITERAL:
            return None
        char = _char(av, icase)
        if char is None:
            return None
        chars.add(char)
    return chars or None


def _exact_sequence(items: list[Any], icase: bool) -> set[str] | None:
    texts = {""}
    for item in items:
        exact = _exact(item, icase)
        if exact is None or len(texts) * len(exact) > MAX_ALTERNATIVES:
            return None
        texts = {a + b for a in texts for b in exact}
    return texts


def _exact_branch(alternatives: list[Any], icase: bool) -> set[str] | None:
    texts: set[str] = set()
    for alt in alternatives:
        exact = _exact_sequence(list(alt), icase)
        if exact is None:
            return None
        texts |= exact
        if len(texts) > MAX_ALTERNATIVES:
            return None
    return texts


def _exact_repeat(av: tuple[int, int, Any], icase: bool) -> set[str] | None:
    low, high, body = av
    if (low, high) == (0, 1):
        exact = _exact_sequence(list(body), icase)
        return None if exact is None else exact | {""}
    if low != high or low > 8:
        return None
    one = _exact_sequence(list(body), icase)
    if one is None:
        return None
    texts = {""}
    for _ in range(low):
        if len(texts) * len(one) > MAX_ALTERNATIVES:
            return None
        texts = {a + b for a in texts for b in one}
    return texts


# --- the per-source check -----------------------------------------------------------------


def build_check(requirements: Iterable[Requirement | None]) -> LineCheck:
    """One fast test for a source: True if the line could match any of its rules."""
    literals = union(requirements)
    if literals is None:
        return _always
    plain = _minimal([text for text, icase in literals if not icase])
    folded = _minimal([text for text, icase in literals if icase])
    # a case-sensitive literal whose casefold holds a folded literal adds nothing
    plain = [text for text in plain if not any(f in fold(text) for f in folded)]
    return _check(plain, folded)


def _always(raw: str) -> bool:
    return True


def _minimal(texts: list[str]) -> list[str]:
    """Drop a literal that contains another: wherever it appears, the shorter one does too."""
    ordered = sorted(set(texts), key=len)
    kept: list[str] = []
    for text in ordered:
        if not any(short in text for short in kept):
            kept.append(text)
    # longest first: on the lines that do match, a long literal is the likelier hit
    return sorted(kept, key=len, reverse=True)


def _check(plain: list[str], folded: list[str]) -> LineCheck:
    find_plain = _finder(plain)
    find_folded = _finder(folded)
    if not folded:
        return find_plain
    if not plain:
        return lambda raw: find_folded(fold(raw))
    return lambda raw: find_plain(raw) or find_folded(fold(raw))


# Up to this many literals a loop of `in` (a fast substring search in C) beats one
# alternation regex, which tries every alternative at every position (see the report figures).
LOOP_LIMIT = 16


def _finder(texts: list[str]) -> LineCheck:
    if not texts:
        return lambda raw: False
    if len(texts) == 1:
        (only,) = texts
        return lambda raw: only in raw
    if len(texts) > LOOP_LIMIT:
        search = re.compile("|".join(re.escape(text) for text in texts)).search
        return lambda raw: search(raw) is not None
    frozen = tuple(texts)

    def any_in(raw: str) -> bool:
        for text in frozen:  # noqa: SIM110 - a plain loop beats a generator on the hot path
            if text in raw:
                return True
        return False

    return any_in

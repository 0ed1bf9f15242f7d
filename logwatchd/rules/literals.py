"""Required literals of a regex, and fast checks for "one of these literals is in the text".

A *requirement* is a set of literals of which at least one appears in any text that can
match. A literal is ``(text, icase)``: an ``icase`` literal is casefolded and looked for in
the casefolded text. Casefolding works character by character, so a casefolded substring is
a substring of the casefolded whole (``str.lower`` is not safe there: final sigma).

Used twice: by the prefilter, on raw lines, and by regex conditions, which test their own
literals on the field before they run the regex.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

Literal = tuple[str, bool]  # (text, icase)
Requirement = frozenset[Literal]
LineCheck = Callable[[str], bool]

MAX_ALTERNATIVES = 64  # beyond this, an expansion is not worth a set of literals
# the parsed first item of a pattern anchored at the start of the text ("^" or "\\A")
START_ANCHORS = ((sre.AT, sre.AT_BEGINNING), (sre.AT, sre.AT_BEGINNING_STRING))


def fold(text: str) -> str:
    """Case folding for ``icase``: casefold is char by char, so the prefilter stays sound."""
    return text.casefold()


def most_selective(parts: Iterable[Requirement | None]) -> Requirement | None:
    found = [part for part in parts if part]
    return max(found, key=selectivity) if found else None


def union(parts: Iterable[Requirement | None]) -> Requirement | None:
    total: set[Literal] = set()
    for part in parts:
        if not part:
            return None
        total |= part
    return minimal_requirement(frozenset(total)) if total else None


def minimal_requirement(req: Requirement) -> Requirement:
    """Drop a literal that holds another of the same kind: the shorter one is found anyway."""
    plain = _minimal([text for text, icase in req if not icase])
    folded = _minimal([text for text, icase in req if icase])
    return frozenset([(text, False) for text in plain] + [(text, True) for text in folded])


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
        best = most_selective(_required(list(tree), icase))
        return None if best is None else minimal_requirement(best)
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


def exact_texts(item: tuple[Any, Any], icase: bool) -> set[str] | None:
    """The finite, small set of strings a parsed regex item matches, or None."""
    return _exact(item, icase)


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


# --- checks -------------------------------------------------------------------------------


def literal_check(req: Requirement | None) -> LineCheck:
    """True when one of the literals is in the text (icase ones in its casefold)."""
    if not req:
        return always
    plain = _minimal([text for text, icase in req if not icase])
    folded = _minimal([text for text, icase in req if icase])
    # a case-sensitive literal whose casefold holds a folded literal adds nothing
    plain = [text for text in plain if not any(f in fold(text) for f in folded)]
    return _check(plain, folded)


def plain_literals(req: Requirement) -> tuple[str, ...]:
    """The case-sensitive literals of a requirement, as ``literal_check`` tests them."""
    return tuple(_minimal([text for text, icase in req if not icase]))


def always(raw: str) -> bool:
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

"""Which lines a rule can match, as patterns over the raw line: what the scan looks for.

A condition on a *verbatim* field (one whose string value the parser copies unchanged out of
the line: the syslog parser's ``message``, say) can only hold on a line that contains the
text it matched. So each such leaf gives a ``ScanPattern``: its regex relaxed (anchors and
lookarounds dropped, see ``syntax.relaxed``) or its literal, searched anywhere in the line.
A line the pattern does not find cannot make the leaf true.

A condition's *need* is a set of patterns one of which a line must show for the condition to
hold, or None (any line may): a leaf gives its pattern; ``all`` the need of its rarest item
(the message regex rather than ``program in [sshd, sshd-session]``); ``any`` the union of its
items' needs (None if one has none); ``not`` none. Fields a rule's own regexes or its
``context`` may set are not the line's text: conditions on them need nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass

from logwatchd.config.model import All, AnyOf, Equals, In, Leaf, Predicate, Regex, Text
from logwatchd.rules.syntax import (
    NATIVE_NEVER,
    Unsupported,
    literal_score,
    native_class,
    relaxed,
    required_text,
)
from logwatchd.rules.values import fold

ALL_FIELDS = "*"  # in a parser's verbatim fields: every string field
DEFAULT_VERBATIM: frozenset[str] = frozenset({"message", "raw"})


@dataclass(frozen=True, slots=True)
class ScanPattern:
    """What a line must contain for a condition on ``field`` to hold.

    ``python``: the pattern in ``re`` syntax (flags inline), sound on any line; None when
    ``re`` cannot say it (a case-folded literal): then every line counts as showing it.
    ``native``: the same for Hyperscan in byte mode, exact on ASCII lines without a newline.
    ``score``: the longest literal text it holds (higher: rarer lines); ``guard``: a text
    every line it finds holds ("" if none), tested before ``python`` runs.
    """

    field: str
    python: str | None
    native: str
    score: int
    guard: str = ""


Need = frozenset[ScanPattern] | None


def condition_need(pred: Predicate, verbatim: Collection[str], ungated: Collection[str]) -> Need:
    """Patterns one of which a line shows whenever ``pred`` holds; None: any line may.

    ``verbatim``: the fields the parser copies out of the line (``*``: every string field);
    ``ungated``: fields the rule itself may set (its regex groups, its context's fields).
    """
    if isinstance(pred, Leaf):
        if pred.field in ungated or not is_verbatim(pred.field, verbatim):
            return None
        found = leaf_pattern(pred)
        return None if found is None else frozenset({found})
    if isinstance(pred, All):
        needs = [condition_need(item, verbatim, ungated) for item in pred.items]
        known = [need for need in needs if need is not None]
        return max(known, key=_rarity) if known else None
    if isinstance(pred, AnyOf):
        union: set[ScanPattern] = set()
        for item in pred.items:
            need = condition_need(item, verbatim, ungated)
            if need is None:
                return None
            union |= need
        return frozenset(union)
    return None  # not: a line without any text may hold it


def _rarity(need: frozenset[ScanPattern]) -> tuple[int, int]:
    """The rarest need: its least selective pattern is the most selective; fewer is cheaper."""
    return (min(pattern.score for pattern in need), -len(need))


def is_verbatim(name: str, verbatim: Collection[str]) -> bool:
    return ALL_FIELDS in verbatim or name in verbatim


@functools.lru_cache(maxsize=4096)  # every engine (a reload, each test) asks again
def leaf_pattern(leaf: Leaf) -> ScanPattern | None:
    """The pattern a line shows whenever the leaf holds on a verbatim field; None if none."""
    if isinstance(leaf, Regex):
        return _regex_pattern(leaf)
    if isinstance(leaf, Equals | In | Text):
        return _text_pattern(leaf)
    return None


def _text_pattern(leaf: Equals | In | Text) -> ScanPattern | None:
    values = leaf.values if isinstance(leaf, In) else (_operand(leaf),)
    texts = []
    for value in values:
        # a number may be matched through int("0404") == 404; an IPv6 address equals an
        # IP-typed field however the line spells it: no text to look for
        if not isinstance(value, str) or not value:
            return None
        if not isinstance(leaf, Text) and _is_ipv6(value):
            return None
        texts.append(fold(value) if leaf.icase else value)
    texts.sort()
    native = "|".join(_native_literal(text, leaf.icase) for text in texts)
    python = None if leaf.icase else "|".join(re.escape(text) for text in texts)
    guard = texts[0] if python is not None and len(texts) == 1 else ""
    return ScanPattern(leaf.field, python, native, min(len(text) for text in texts), guard)


def _operand(leaf: Equals | Text) -> str | int | float:
    return leaf.text if isinstance(leaf, Text) else leaf.value


def _regex_pattern(leaf: Regex) -> ScanPattern | None:
    pattern = leaf.pattern
    try:
        python, native = relaxed(pattern, native=False), relaxed(pattern, native=True)
        if re.compile(python).match(""):
            return None  # it matches an empty text, so it finds every line
    except (Unsupported, ValueError, re.error, RecursionError, OverflowError):
        return None
    return ScanPattern(leaf.field, python, native, literal_score(pattern), required_text(pattern))


def _native_literal(text: str, folded: bool) -> str:
    """``text`` as Hyperscan bytes; ``folded``: found in the line's casefold (on an ASCII
    line that is its lower case, so each letter may have either case)."""
    flags = re.IGNORECASE if folded else 0
    return "".join(
        native_class(re.escape(char), flags) if char.isascii() else NATIVE_NEVER for char in text
    )


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False

"""What a Python regex says, read from its parse tree: the one module that reads CPython's
private ``re._parser`` and ``re._constants``.

Those modules are not a public API and have changed between Python versions; every use is
here, and each function answers conservatively (as if it knew nothing) when the tree does
not have the shape it expects.
"""

from __future__ import annotations

import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
# an outer repeat this wide around another repeat can backtrack for minutes on a short line
WIDE_REPEAT = 10


def parse(pattern: re.Pattern[str]) -> Any:
    """The parse tree of a compiled pattern (``re._parser.SubPattern``); raises ValueError
    when it cannot be had."""
    try:
        return sre_parse.parse(pattern.pattern, pattern.flags)
    except (re.error, RecursionError, OverflowError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot parse {pattern.pattern!r}: {exc}") from None


def nests_quantifiers(pattern: re.Pattern[str]) -> bool:
    """Whether a wide or unbounded repeat holds another repeat (``(a+)+``, ``(\\w{1,3})*``):
    the shape that backtracks exponentially on a line that almost matches."""
    try:
        tree = parse(pattern)
    except ValueError:
        return False
    return _nested(list(tree), outer=False)


def _nested(items: list[Any], *, outer: bool) -> bool:
    for op, av in items:
        if op in _REPEATS:
            _low, high, body = av
            if high > 1 and outer:
                return True
            wide = high == sre.MAXREPEAT or high >= WIDE_REPEAT
            if _nested(list(body), outer=outer or wide):
                return True
        elif any(_nested(list(child), outer=outer) for child in _children(op, av)):
            return True
    return False


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-sequences of a group, alternation, atomic group or lookaround."""
    if op is sre.SUBPATTERN:
        return [av[3]]
    if op is sre.BRANCH:
        return list(av[1])
    if op is sre.ATOMIC_GROUP:
        return [av]
    if op in (sre.ASSERT, sre.ASSERT_NOT):
        return [av[1]]
    return []

"""What a Python regex says, read from its parse tree: the one module that reads CPython's
private ``re._parser`` and ``re._constants``.

Those modules are not a public API and have changed between Python versions; every use is
here, and each function answers conservatively (as if it knew nothing) when the tree does
not have the shape it expects.
"""

from __future__ import annotations

import functools
import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
# an outer repeat this wide around another repeat can backtrack for minutes on a short line
WIDE_REPEAT = 10


def parse(pattern: re.Pattern[str]) -> Any:
    """The parse tree of a compiled pattern (``re._parser.SubPattern``, not to be changed:
    it is shared); raises ValueError when it cannot be had."""
    return _parse(pattern.pattern, pattern.flags)


@functools.lru_cache(maxsize=1024)  # each pattern is read several ways, packs share patterns
def _parse(text: str, flags: int) -> Any:
    try:
        return sre_parse.parse(text, flags)
    except (re.error, RecursionError, OverflowError, TypeError, AttributeError) as exc:
        raise ValueError(f"cannot parse {text!r}: {exc}") from None


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


# --- relaxed patterns for scanning whole lines ----------------------------------------------


class Unsupported(ValueError):
    """A construct the relaxed form cannot express (the caller then scans nothing for it)."""


def relaxed(pattern: re.Pattern[str], *, native: bool) -> str:
    """A pattern that finds, anywhere in a line, every text ``pattern`` can match: the same
    regex with its zero-width assertions (``^``, ``$``, ``\\b``, lookarounds) dropped and
    back-references widened, so whatever field of the line the pattern ran on, the line
    matches this one wherever that field sits in it, without the optional items at its ends
    (``core``), which rule out no line.

    ``native=False``: Python syntax, for ``re`` (sound on any text). ``native=True``: for
    Hyperscan in byte mode, exact on ASCII lines without a newline (each single-character
    item is written as the exact set of ASCII characters Python's ``re`` matches with it,
    under its flags: case folding, ``re.ASCII``, classes); a line holding other bytes must be
    scanned with the Python form. Raises ``Unsupported`` for what it cannot express.
    """
    tree = parse(pattern)
    flags = tree.state.flags & _CHAR_FLAGS
    return _Emitter(native).sequence(core(list(tree)), flags)


def core(items: list[Any]) -> list[Any]:
    """The top-level sequence without its optional and zero-width items at either end: in
    an unanchored search for a line, ``(?:error: )?Failed x(?: port \\d+)?`` finds exactly the
    lines ``Failed x`` finds, and the shorter pattern costs the scan less."""
    start, end = 0, len(items)
    while start < end and _optional(items[start]):
        start += 1
    while end > start and _optional(items[end - 1]):
        end -= 1
    return items[start:end]


def _optional(item: Any) -> bool:
    op, av = item
    return op is sre.AT or op in (sre.ASSERT, sre.ASSERT_NOT) or (op in _REPEATS and av[0] == 0)


_CHAR_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL  # what changes a single character's meaning
_FLAG_LETTERS = ((re.IGNORECASE, "i"), (re.ASCII, "a"), (re.DOTALL, "s"))
_SINGLE = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN)
_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}
NATIVE_NEVER = r"\xff"  # a byte no ASCII line holds: the item can match no ASCII character
NATIVE_REPEAT_LIMIT = 255  # Hyperscan refuses large bounded repeats: wider ones are unbounded


class _Emitter:
    def __init__(self, native: bool) -> None:
        self.native = native

    def sequence(self, items: list[Any], flags: int) -> str:
        return "".join(self.item(op, av, flags) for op, av in items)

    def item(self, op: Any, av: Any, flags: int) -> str:
        if op in _SINGLE:
            return self.single(char_text(op, av), flags)
        if op is sre.AT or op in (sre.ASSERT, sre.ASSERT_NOT):
            return ""  # zero width: dropped, the rest stays contiguous
        if op is sre.SUBPATTERN:
            _group, add, remove, body = av
            return self.group(self.sequence(list(body), (flags | add) & ~remove & _CHAR_FLAGS))
        if op is sre.BRANCH:
            return "(?:" + "|".join(self.sequence(list(alt), flags) for alt in av[1]) + ")"
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, body = av
            return self.repeat(self.sequence(list(body), flags), low, high)
        if op is sre.ATOMIC_GROUP:
            return self.group(self.sequence(list(av), flags))
        if op is sre.GROUPREF:  # the same text as the group: some text of the line
            return r"[^\n]*" if self.native else r"(?s:.*)"
        if op is sre.GROUPREF_EXISTS:
            _group, yes, no = av
            either = [self.sequence(list(yes), flags), self.sequence(list(no or ()), flags)]
            return "(?:" + "|".join(either) + ")"
        raise Unsupported(f"regex item {op}")

    def group(self, body: str) -> str:
        return f"(?:{body})" if body else ""

    def repeat(self, body: str, low: int, high: int) -> str:
        if not body:
            return ""
        if self.native and (high == sre.MAXREPEAT or high > NATIVE_REPEAT_LIMIT):
            low, high = min(low, NATIVE_REPEAT_LIMIT), sre.MAXREPEAT
        top = "" if high == sre.MAXREPEAT else str(high)
        return f"(?:{body}){{{low},{top}}}"

    def single(self, text: str, flags: int) -> str:
        if self.native:
            return native_class(text, flags)
        letters = "".join(letter for flag, letter in _FLAG_LETTERS if flags & flag)
        return f"(?{letters}:{text})" if letters else text


def char_text(op: Any, av: Any) -> str:
    """Python syntax for one single-character item of a parse tree."""
    if op is sre.LITERAL:
        return _escaped(av)
    if op is sre.NOT_LITERAL:
        return f"[^{_escaped(av)}]"
    if op is sre.ANY:
        return "."
    members = []
    for kind, value in av:
        if kind is sre.NEGATE:
            members.append("^")
        elif kind is sre.LITERAL:
            members.append(_escaped(value))
        elif kind is sre.RANGE:
            members.append(f"{_escaped(value[0])}-{_escaped(value[1])}")
        elif kind is sre.CATEGORY and value in _CATEGORIES:
            members.append(_CATEGORIES[value])
        else:
            raise Unsupported(f"class member {kind}")
    return "[" + "".join(members) + "]"


def _escaped(code: int) -> str:
    if code < 128 and chr(code).isalnum():
        return chr(code)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def native_class(text: str, flags: int) -> str:
    """The ASCII characters (but newline) that Python matches with one single-character
    item, as a Hyperscan byte class: asked of ``re`` itself, so case folding and classes
    mean exactly what they mean to Python."""
    return _byte_class(_ascii_codes(text, flags))


@functools.lru_cache(maxsize=1024)
def _ascii_codes(text: str, flags: int) -> tuple[int, ...]:
    single = re.compile(text, flags)
    return tuple(code for code in range(128) if code != 10 and single.fullmatch(chr(code)))


def _byte_class(codes: tuple[int, ...]) -> str:
    if not codes:
        return NATIVE_NEVER
    runs: list[list[int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    if len(runs) == 1 and runs[0][0] == runs[0][1]:
        return f"\\x{codes[0]:02x}"
    parts = (f"\\x{a:02x}" if a == b else f"\\x{a:02x}-\\x{b:02x}" for a, b in runs)
    return "[" + "".join(parts) + "]"


def required_text(pattern: re.Pattern[str]) -> str:
    """The longest run of literal characters every match holds ("" when none, or when case
    is folded): a substring test that rules a line out before the regex runs."""
    try:
        tree = parse(pattern)
    except ValueError:
        return ""
    if tree.state.flags & re.IGNORECASE:
        return ""
    best = run = ""
    for op, av in _flat(list(tree)):
        if op is sre.LITERAL:
            run += chr(av)
            best = max(best, run, key=len)
        elif op is not sre.AT and op not in (sre.ASSERT, sre.ASSERT_NOT):
            run = ""
    return best


def _flat(items: list[Any]) -> list[Any]:
    """Groups that change no flag, opened up: their items are as contiguous as the rest."""
    flat: list[Any] = []
    for op, av in items:
        if op is sre.SUBPATTERN and not av[1] and not av[2]:
            flat.extend(_flat(list(av[3])))
        else:
            flat.append((op, av))
    return flat


def literal_score(pattern: re.Pattern[str]) -> int:
    """The length of the longest literal text every match holds (0 when unknown): how rare
    the lines are that the pattern can match, for choosing what to scan for."""
    try:
        return _score(list(parse(pattern)))
    except (ValueError, TypeError):
        return 0


def _score(items: list[Any]) -> int:
    best = run = 0
    for op, av in items:
        if op is sre.LITERAL:
            run += 1
            best = max(best, run)
            continue
        if op is not sre.AT and op not in (sre.ASSERT, sre.ASSERT_NOT):
            run = 0  # zero-width items keep the text around them contiguous
        if op is sre.SUBPATTERN:
            best = max(best, _score(list(av[3])))
        elif op is sre.BRANCH:
            best = max(best, min(_score(list(alt)) for alt in av[1]))
        elif op in _REPEATS and av[0] >= 1:
            best = max(best, _score(list(av[2])))
    return best

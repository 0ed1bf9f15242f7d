"""Compile a predicate tree once into closures, so a line costs calls, not a tree walk.

Every compiled test has the shape ``test(fields, ext) -> bool``: ``fields`` are the event's
fields, ``ext`` collects what rule regexes extracted (named groups) for this one rule
evaluation, or is None when the rule extracts nothing. Fields extracted by an earlier
condition are visible to later ones. A regex under ``not``, or in a branch of ``any`` that
failed, works on a scratch copy of ``ext`` so its groups never leak into the match.

Values are hostile: a test never raises. A missing field never matches (except
``exists: false``); a value of the wrong type simply does not match.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from logwatchd.config.model import All, Leaf, ListConfig, Not, Predicate
from logwatchd.rules.literals import fold, plain_literals, regex_requirement

Test = Callable[[dict[str, Any], dict[str, Any] | None], bool]
Getter = Callable[[dict[str, Any], dict[str, Any] | None], Any]
Builder = Callable[[Getter, Leaf, bool], Test]  # (getter, leaf, field set by a rule regex)

MISSING: Any = object()
_IP_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)


@dataclass(frozen=True, slots=True)
class CompiledPredicate:
    test: Test
    extracts: frozenset[str]  # field names its regexes can add


def compile_predicate(pred: Predicate, lists: Mapping[str, ListConfig]) -> CompiledPredicate:
    """The fast test for a predicate tree, and the names of the fields it may extract."""
    produced = extracted_names(pred)
    return CompiledPredicate(_compile(pred, lists, produced), produced)


def extracted_names(pred: Predicate) -> frozenset[str]:
    """Names of the regex groups anywhere in the tree (the fields a match may add)."""
    if isinstance(pred, Leaf):
        if pred.op == "regex" and isinstance(pred.value, re.Pattern):
            return frozenset(pred.value.groupindex)
        return frozenset()
    if isinstance(pred, Not):
        return extracted_names(pred.item)
    names: frozenset[str] = frozenset()
    for item in pred.items:
        names |= extracted_names(item)
    return names


def _compile(pred: Predicate, lists: Mapping[str, ListConfig], produced: frozenset[str]) -> Test:
    if isinstance(pred, Leaf):
        return compile_leaf(pred, lists, produced)
    if isinstance(pred, Not):
        return _not(pred.item, lists, produced)
    if isinstance(pred, All):
        return _all([_compile(item, lists, produced) for item in pred.items])
    tests, scratch = [], []
    for run in _regex_runs(pred.items) if FUSE_REGEX_RUNS else [[item] for item in pred.items]:
        if len(run) > 1:
            tests.append(_regex_run(run, produced))
            scratch.append(False)  # like one regex leaf, it writes ext only when it matches
            continue
        item = run[0]
        tests.append(_compile(item, lists, produced))
        scratch.append(bool(extracted_names(item)) and not _clean(item))
    return _any(tests, scratch)


def _clean(pred: Predicate) -> bool:
    """A leaf writes ext only when it holds (a regex, on its match): no scratch copy needed."""
    return FUSE_REGEX_RUNS and isinstance(pred, Leaf)


def _not(item: Predicate, lists: Mapping[str, ListConfig], produced: frozenset[str]) -> Test:
    inner = _compile(item, lists, produced)
    if not extracted_names(item):
        return lambda fields, ext: not inner(fields, ext)

    def negated(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        # groups matched inside `not` describe a line the rule rejects: keep them out
        return not inner(fields, None if ext is None else dict(ext))

    return negated


def _all(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda fields, ext: first(fields, ext) and second(fields, ext)

    def every(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        for test in tests:  # noqa: SIM110 - a plain loop beats a generator on the hot path
            if not test(fields, ext):
                return False
        return True

    return every


def _any(tests: list[Test], extracting: list[bool]) -> Test:
    """``extracting``: per branch, whether it may write ext and then fail (needs a copy)."""
    if not any(extracting):
        if len(tests) == 1:
            return tests[0]

        def some(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
            for test in tests:  # noqa: SIM110 - a plain loop beats a generator here too
                if test(fields, ext):
                    return True
            return False

        return some

    pairs = list(zip(tests, extracting, strict=True))

    def some_scratch(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        for test, extracts in pairs:
            if not extracts or ext is None:
                if test(fields, ext):
                    return True
                continue
            # a branch that fails half-way must not leave its groups behind
            scratch = dict(ext)
            if test(fields, scratch):
                ext.update(scratch)
                return True
        return False

    return some_scratch


# --- leaves -------------------------------------------------------------------------------


def compile_leaf(leaf: Leaf, lists: Mapping[str, ListConfig], produced: frozenset[str]) -> Test:
    """One condition as a closure; ``produced`` says which fields rule regexes may set."""
    get = _getter(leaf.field, produced)
    build = _LEAF_BUILDERS.get(leaf.op)
    if build is None:
        return _never
    if leaf.op == "in_list":
        return _in_list(get, lists.get(str(leaf.value)))
    return build(get, leaf, leaf.field in produced)


def _never(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
    return False


def _getter(name: str, produced: frozenset[str]) -> Getter:
    if name not in produced:
        return lambda fields, ext: fields.get(name, MISSING)

    def get(fields: dict[str, Any], ext: dict[str, Any] | None) -> Any:
        if ext is not None:
            value = ext.get(name, MISSING)
            if value is not MISSING:
                return value
        return fields.get(name, MISSING)

    return get


def as_text(value: Any) -> str | None:
    """The string a text operator sees: a str as is, an int by its digits, else None.

    Only these keep the prefilter sound: the digits of an int parsed from the line are part
    of the line. The text of an IP object or a float may be spelled differently there
    (``2001:DB8::1`` is ``2001:db8::1``), so text operators do not see them; ``equals`` and
    ``in`` compare IPs as addresses, and ``cidr``/``in_list`` are the tools for IPs.
    """
    if value.__class__ is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # an int past sys.get_int_max_str_digits()
            return None
    return None


def as_key(value: Any) -> str | None:
    """A field value as a group_by key or list member: its text, IPs included; None if absent."""
    if value is None or value is MISSING or isinstance(value, bool):
        return None
    text = as_text(value)
    if text is not None:
        return text
    try:
        return str(value)
    except ValueError:  # holds an int too long to print
        return None


def as_number(value: Any) -> float | None:
    """Numbers as they are; numeric strings converted; NaN, bools and the rest: None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value)
        except ValueError:
            return None
        return None if math.isnan(number) else number
    return None


def as_ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(value, _IP_TYPES):
        return value
    if isinstance(value, str) and 2 <= len(value) <= 64:
        try:
            return ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            return None
    return None


def _text_test(leaf: Leaf, produced: bool, check: Callable[[str], bool]) -> Test:
    # the field lookup is written out here, not called: this is the hottest closure
    name = leaf.field
    if leaf.icase:

        def folded(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
            value = ext[name] if produced and ext and name in ext else fields.get(name, MISSING)
            text = as_text(value)
            return text is not None and check(fold(text))

        return folded

    def plain(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        value = ext[name] if produced and ext and name in ext else fields.get(name, MISSING)
        if value.__class__ is str:
            return check(value)
        text = as_text(value)
        return text is not None and check(text)

    return plain


def _equals(get: Getter, leaf: Leaf, produced: bool) -> Test:
    return _membership(get, leaf, produced, (leaf.value,))


def _in(get: Getter, leaf: Leaf, produced: bool) -> Test:
    values = leaf.value if isinstance(leaf.value, tuple | list | frozenset | set) else ()
    return _membership(get, leaf, produced, tuple(values))


def _membership(get: Getter, leaf: Leaf, produced: bool, expected: tuple[Any, ...]) -> Test:
    texts = frozenset(fold(v) if leaf.icase else v for v in expected if isinstance(v, str))
    numbers = frozenset(
        v for v in expected if isinstance(v, int | float) and not isinstance(v, bool)
    )
    by_text = _text_test(leaf, produced, texts.__contains__) if texts else _never
    by_text = _or_ip(by_text, get, _addresses(v for v in expected if isinstance(v, str)))
    if not numbers:
        return by_text

    def by_number(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        number = as_number(get(fields, ext))
        return number is not None and number in numbers

    return lambda fields, ext: by_text(fields, ext) or by_number(fields, ext)


def _addresses(texts: Iterable[str]) -> frozenset[Any]:
    found = set()
    for text in texts:
        try:  # strictly an address: "[::1]" stays a string, as the prefilter assumes
            found.add(ipaddress.ip_address(text))
        except ValueError:
            continue
    return frozenset(found)


def _or_ip(by_text: Test, get: Getter, addresses: frozenset[Any]) -> Test:
    """Let ``equals: 2001:db8::1`` match an IP-typed field however the line spelled it."""
    if not addresses:
        return by_text

    def by_address(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        value = get(fields, ext)
        if isinstance(value, _IP_TYPES):
            return value in addresses
        return by_text(fields, ext)

    return by_address


def _contains(get: Getter, leaf: Leaf, produced: bool) -> Test:
    if not isinstance(leaf.value, str):
        return _never
    needle = fold(leaf.value) if leaf.icase else leaf.value
    return _text_test(leaf, produced, lambda text: needle in text)


def _startswith(get: Getter, leaf: Leaf, produced: bool) -> Test:
    if not isinstance(leaf.value, str):
        return _never
    prefix = fold(leaf.value) if leaf.icase else leaf.value
    return _text_test(leaf, produced, lambda text: text.startswith(prefix))


def _endswith(get: Getter, leaf: Leaf, produced: bool) -> Test:
    if not isinstance(leaf.value, str):
        return _never
    suffix = fold(leaf.value) if leaf.icase else leaf.value
    return _text_test(leaf, produced, lambda text: text.endswith(suffix))


def _regex(get: Getter, leaf: Leaf, produced: bool) -> Test:
    pattern = _pattern(leaf)
    if pattern is None:
        return _never
    search = pattern.search
    name = leaf.field
    literals = _guard_literals(pattern)
    extracts = bool(pattern.groupindex)

    def regex(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        value = ext[name] if produced and ext and name in ext else fields.get(name, MISSING)
        text = value if value.__class__ is str else as_text(value)
        if text is None:
            return False
        if literals is not None:
            for literal in literals:  # inline: a call per guard costs more than the `in`
                if literal in text:
                    break
            else:
                return False
        found = search(text)
        if found is None:
            return False
        if extracts and ext is not None:
            for group, captured in found.groupdict().items():
                if captured is not None:
                    ext[group] = captured
        return True

    return regex


def _pattern(leaf: Leaf) -> re.Pattern[str] | None:
    pattern = leaf.value
    if isinstance(pattern, str):
        pattern = re.compile(pattern, re.IGNORECASE if leaf.icase else 0)
    if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str):
        return None
    return pattern


def _guard_literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Literals one of which every match holds: a substring test is far cheaper than a failed
    search. None when there are none, or some are icase (casefolding the text first would cost
    about what it saves)."""
    req = regex_requirement(pattern)
    if not req or any(icase for _text, icase in req):
        return None
    return plain_literals(req)


# --- an `any` of regex conditions on one field ----------------------------------------------

# Consecutive regex branches of an `any` on the same field run as one closure; tests switch
# this off to compare the outcomes with one closure per branch.
FUSE_REGEX_RUNS = True


def _regex_runs(items: Iterable[Predicate]) -> list[list[Predicate]]:
    """The items of an `any`, consecutive regex leaves on the same field grouped together."""
    runs: list[list[Predicate]] = []
    last: str | None = None  # the field of the previous item, if it is a regex leaf
    for item in items:
        regex = isinstance(item, Leaf) and item.op == "regex" and _pattern(item) is not None
        name = item.field if regex and isinstance(item, Leaf) else None
        if name is not None and name == last:
            runs[-1].append(item)
        else:
            runs.append([item])
        last = name
    return runs


def _regex_run(leaves: list[Predicate], produced: frozenset[str]) -> Test:
    """The first of several regex leaves on one field that matches, as one closure: the
    field is read once, and each branch costs its guard's `in` tests, not two calls."""
    first = leaves[0]
    assert isinstance(first, Leaf)
    name = first.field
    from_ext = name in produced
    patterns = []
    for leaf in leaves:
        assert isinstance(leaf, Leaf)
        pattern = _pattern(leaf)
        assert pattern is not None
        patterns.append(pattern)
    combined = combine_anchored(patterns)
    if combined is not None:
        return _combined_run(name, from_ext, *combined)
    frozen = tuple(
        (_guard_literals(pattern), pattern.search, bool(pattern.groupindex)) for pattern in patterns
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
    if not items or items[0] not in _STARTS:
        return False
    return not _has_backref(items)


def _has_backref(items: Any) -> bool:
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and item[0] in _BACKREFS:
            return True
        if isinstance(item, list | tuple | sre_parse.SubPattern) and _has_backref(item):
            return True
    return False


_STARTS = ((sre.AT, sre.AT_BEGINNING), (sre.AT, sre.AT_BEGINNING_STRING))
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


def _cidr(get: Getter, leaf: Leaf, produced: bool) -> Test:
    networks = _networks(leaf.value)
    return lambda fields, ext: _in_networks(as_ip(get(fields, ext)), networks)


def _networks(value: Any) -> tuple[Any, ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    networks = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
        elif isinstance(item, str):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue
    return tuple(networks)


def _in_networks(ip: Any, networks: tuple[Any, ...]) -> bool:
    if ip is None:
        return False
    # an IPv4-mapped IPv6 client (::ffff:a.b.c.d) is the IPv4 address for list purposes
    mapped = getattr(ip, "ipv4_mapped", None)
    for net in networks:
        if net.version == ip.version and ip in net:
            return True
        if mapped is not None and net.version == 4 and mapped in net:
            return True
    return False


def _in_list(get: Getter, listing: ListConfig | None) -> Test:
    if listing is None:
        return _never
    values = listing.values
    networks = tuple(listing.networks)

    def member(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
        value = get(fields, ext)
        text = as_key(value)
        if text is not None and text in values:
            return True
        return bool(networks) and _in_networks(as_ip(value), networks)

    return member


def _exists(get: Getter, leaf: Leaf, produced: bool) -> Test:
    if leaf.value:
        return lambda fields, ext: get(fields, ext) is not MISSING
    return lambda fields, ext: get(fields, ext) is MISSING


def _compare(op: Callable[[float, float], bool]) -> Builder:
    def build(get: Getter, leaf: Leaf, produced: bool) -> Test:
        limit = as_number(leaf.value)
        if limit is None:
            return _never

        def compare(fields: dict[str, Any], ext: dict[str, Any] | None) -> bool:
            number = as_number(get(fields, ext))
            return number is not None and op(number, limit)

        return compare

    return build


_LEAF_BUILDERS: dict[str, Builder] = {
    "equals": _equals,
    "in": _in,
    "contains": _contains,
    "startswith": _startswith,
    "endswith": _endswith,
    "regex": _regex,
    "cidr": _cidr,
    "in_list": lambda get, leaf, produced: _never,  # built by compile_leaf: it needs the lists
    "exists": _exists,
    "gt": _compare(lambda a, b: a > b),
    "gte": _compare(lambda a, b: a >= b),
    "lt": _compare(lambda a, b: a < b),
    "lte": _compare(lambda a, b: a <= b),
}

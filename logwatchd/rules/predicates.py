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
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from logwatchd.config.model import All, Leaf, ListConfig, Not, Predicate
from logwatchd.rules.fused import guard_literals, leaf_pattern, regex_run, regex_runs
from logwatchd.rules.literals import fold
from logwatchd.rules.values import (
    IP_TYPES,
    MISSING,
    Getter,
    Test,
    as_ip,
    as_key,
    as_number,
    as_text,
)

Builder = Callable[[Getter, Leaf, bool], Test]  # (getter, leaf, field set by a rule regex)

# Consecutive regex branches of an `any` on the same field run as one closure (see fused.py);
# tests switch this off to compare the outcomes with one closure per branch.
FUSE_REGEX_RUNS = True


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
    for run in regex_runs(pred.items) if FUSE_REGEX_RUNS else [[item] for item in pred.items]:
        if len(run) > 1:
            tests.append(regex_run(run, produced))
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
        if isinstance(value, IP_TYPES):
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
    pattern = leaf_pattern(leaf)
    if pattern is None:
        return _never
    search = pattern.search
    name = leaf.field
    literals = guard_literals(pattern)
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

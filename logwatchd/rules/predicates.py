"""Compile a predicate tree once into closures, so a line costs calls, not a tree walk.

Every compiled test has the shape ``test(fields, ext, hits) -> bool``: ``fields`` are the
event's fields, ``ext`` collects what rule regexes extracted (named groups) for this one rule
evaluation, or is None when the rule extracts nothing. Fields extracted by an earlier
condition are visible to later ones. A regex under ``not``, or in a branch of ``any`` that
failed, works on a scratch copy of ``ext`` so its groups never leak into the match.

``hits`` are what the scan found on the line (``scan.py``): a regex, or a branch of ``any``,
whose *gate* (the bits of the patterns a line shows whenever it holds) the line does not show
is false without running. ``ALL_HITS`` opens every gate (``explain``, the reference engine).

Field values are hostile: a test never raises. A missing field never matches (except
``exists: false``); a value of the wrong type simply does not match. The conditions are not:
the loader typed and checked them (a ``Leaf`` class per kind, ``config/model.py``), so a
builder takes its value as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from logwatchd.config.handler_settings import IpNetwork
from logwatchd.config.model import (
    All,
    Cidr,
    Compare,
    CompareOp,
    Equals,
    Exists,
    In,
    InList,
    Leaf,
    ListConfig,
    Not,
    Predicate,
    Regex,
    Scalar,
    Text,
)
from logwatchd.rules.values import (
    IP_TYPES,
    MISSING,
    Getter,
    Test,
    as_ip,
    as_key,
    as_number,
    as_text,
    fold,
)

Gates = Callable[[Predicate], int]  # a condition's gate; 0: it has none
GateMaker = Callable[[frozenset[str]], Gates]  # gates, given the fields not from the line
ALL_HITS = -1  # every bit set: no gate closes


def no_gates(pred: Predicate) -> int:
    return 0


def no_gate_maker(ungated: frozenset[str]) -> Gates:
    return no_gates


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a rule, and the fields it sees that are not the line's own text
    (its regex groups; for a rule with ``context``, what the connection fills in)."""

    pred: Predicate
    ungated: frozenset[str]


@dataclass(frozen=True, slots=True)
class CompiledPredicate:
    test: Test
    extracts: frozenset[str]  # field names its regexes can add


def compile_predicate(
    pred: Predicate, lists: Mapping[str, ListConfig], gates: Gates = no_gates
) -> CompiledPredicate:
    """The fast test for a predicate tree, and the names of the fields it may extract.

    ``gates`` gives each condition's gate; it knows which fields the rule itself sets
    (regex groups, context fields): conditions on those have none."""
    produced = extracted_names(pred)
    return CompiledPredicate(_Compiler(lists, produced, gates).compile(pred), produced)


def field_names(pred: Predicate) -> frozenset[str]:
    """The fields the conditions of the tree look at."""
    if isinstance(pred, Leaf):
        return frozenset({pred.field})
    if isinstance(pred, Not):
        return field_names(pred.item)
    return frozenset().union(*(field_names(item) for item in pred.items))


def extracted_names(pred: Predicate) -> frozenset[str]:
    """Names of the regex groups anywhere in the tree (the fields a match may add)."""
    if isinstance(pred, Leaf):
        return frozenset(pred.pattern.groupindex) if isinstance(pred, Regex) else frozenset()
    if isinstance(pred, Not):
        return extracted_names(pred.item)
    names: frozenset[str] = frozenset()
    for item in pred.items:
        names |= extracted_names(item)
    return names


class _Compiler:
    def __init__(self, lists: Mapping[str, ListConfig], produced: frozenset[str], gates: Gates):
        self.lists = lists
        self.produced = produced
        self.gates = gates

    def compile(self, pred: Predicate) -> Test:
        if isinstance(pred, Leaf):
            return compile_leaf(pred, self.lists, self.produced, self.gates(pred))
        if isinstance(pred, Not):
            return self._not(pred.item)
        if isinstance(pred, All):
            return _all([self.compile(item) for item in pred.items], self.gates(pred))
        # a leaf writes ext only when it holds; another branch that extracts may write and
        # then fail, so it works on a scratch copy
        return _any(
            [
                (
                    self.compile(item),
                    self.gates(item),
                    not isinstance(item, Leaf) and _extracts(item),
                )
                for item in pred.items
            ]
        )

    def _not(self, item: Predicate) -> Test:
        inner = self.compile(item)
        if not _extracts(item):
            return lambda fields, ext, hits: not inner(fields, ext, hits)

        def negated(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
            # groups matched inside `not` describe a line the rule rejects: keep them out
            return not inner(fields, None if ext is None else dict(ext), hits)

        return negated


def _extracts(pred: Predicate) -> bool:
    return bool(extracted_names(pred))


def _all(tests: list[Test], gate: int) -> Test:
    """Every test holds; none runs when the line does not show what they need together."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        if gate:
            return lambda fields, ext, hits: (
                hits & gate != 0 and first(fields, ext, hits) and second(fields, ext, hits)
            )
        return lambda fields, ext, hits: first(fields, ext, hits) and second(fields, ext, hits)

    def every(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        if gate and not hits & gate:
            return False
        for test in tests:  # noqa: SIM110 - a plain loop beats a generator on the hot path
            if not test(fields, ext, hits):
                return False
        return True

    return every


def _any(branches: list[tuple[Test, int, bool]]) -> Test:
    """Per branch: its test, its gate, and whether it needs a scratch copy of ext."""
    if len(branches) == 1 and not branches[0][2]:
        return branches[0][0]
    frozen = tuple(branches)

    def some(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        for test, gate, scratched in frozen:
            if gate and not hits & gate:
                continue  # the line does not show what this branch needs
            if not scratched or ext is None:
                if test(fields, ext, hits):
                    return True
                continue
            # a branch that fails half-way must not leave its groups behind
            scratch = dict(ext)
            if test(fields, scratch, hits):
                ext.update(scratch)
                return True
        return False

    return some


# --- leaves -------------------------------------------------------------------------------


def compile_leaf(
    leaf: Leaf, lists: Mapping[str, ListConfig], produced: frozenset[str], gate: int = 0
) -> Test:
    """One condition as a closure; ``produced`` says which fields rule regexes may set."""
    set_by_rule = leaf.field in produced
    get = _getter(leaf.field, produced)
    match leaf:
        case Equals():
            return _membership(get, leaf, set_by_rule, (leaf.value,))
        case In():
            return _membership(get, leaf, set_by_rule, leaf.values)
        case Text():
            return _text(leaf, set_by_rule)
        case Regex():
            return _regex(leaf, set_by_rule, gate)
        case Cidr():
            networks = leaf.networks
            return lambda fields, ext, hits: _in_networks(as_ip(get(fields, ext)), networks)
        case InList():
            return _in_list(get, lists.get(leaf.list_id))
        case Exists():
            return _exists(get, leaf.present)
        case Compare():
            return _compare(get, _COMPARISONS[leaf.operator], leaf.limit)
    raise TypeError(f"not a kind of condition: {leaf!r}")


def _never(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
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
    # the field lookup is written out here, not called: this is a hot closure
    name = leaf.field
    if leaf.icase:

        def folded(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
            value = ext[name] if produced and ext and name in ext else fields.get(name, MISSING)
            text = as_text(value)
            return text is not None and check(fold(text))

        return folded

    def plain(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        value = ext[name] if produced and ext and name in ext else fields.get(name, MISSING)
        if value.__class__ is str:
            return check(value)
        text = as_text(value)
        return text is not None and check(text)

    return plain


def _membership(get: Getter, leaf: Leaf, produced: bool, expected: tuple[Scalar, ...]) -> Test:
    texts = frozenset(fold(v) if leaf.icase else v for v in expected if isinstance(v, str))
    numbers = frozenset(
        v for v in expected if isinstance(v, int | float) and not isinstance(v, bool)
    )
    by_text = _text_test(leaf, produced, texts.__contains__) if texts else _never
    by_text = _or_ip(by_text, get, _addresses(v for v in expected if isinstance(v, str)))
    if not numbers:
        return by_text

    def by_number(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        number = as_number(get(fields, ext))
        return number is not None and number in numbers

    return lambda fields, ext, hits: by_text(fields, ext, hits) or by_number(fields, ext, hits)


def _addresses(texts: Iterable[str]) -> frozenset[Any]:
    found = set()
    for text in texts:
        try:  # strictly an address: "[::1]" stays a string, as the scan assumes
            found.add(ipaddress.ip_address(text))
        except ValueError:
            continue
    return frozenset(found)


def _or_ip(by_text: Test, get: Getter, addresses: frozenset[Any]) -> Test:
    """Let ``equals: 2001:db8::1`` match an IP-typed field however the line spelled it."""
    if not addresses:
        return by_text

    def by_address(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        value = get(fields, ext)
        if isinstance(value, IP_TYPES):
            return value in addresses
        return by_text(fields, ext, hits)

    return by_address


def _text(leaf: Text, produced: bool) -> Test:
    wanted = fold(leaf.text) if leaf.icase else leaf.text
    if leaf.operator == "contains":
        return _text_test(leaf, produced, lambda text: wanted in text)
    if leaf.operator == "startswith":
        return _text_test(leaf, produced, lambda text: text.startswith(wanted))
    return _text_test(leaf, produced, lambda text: text.endswith(wanted))


def _regex(leaf: Regex, produced: bool, gate: int) -> Test:
    search = leaf.pattern.search
    name = leaf.field
    extracts = bool(leaf.pattern.groupindex)

    def regex(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        if gate and not hits & gate:
            return False  # the line does not hold what this regex can match
        value = ext[name] if produced and ext and name in ext else fields.get(name, MISSING)
        text = value if value.__class__ is str else as_text(value)
        if text is None:
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


def _in_networks(ip: Any, networks: tuple[IpNetwork, ...]) -> bool:
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

    def member(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        value = get(fields, ext)
        text = as_key(value)
        if text is not None and text in values:
            return True
        return bool(networks) and _in_networks(as_ip(value), networks)

    return member


def _exists(get: Getter, present: bool) -> Test:
    if present:
        return lambda fields, ext, hits: get(fields, ext) is not MISSING
    return lambda fields, ext, hits: get(fields, ext) is MISSING


def _compare(get: Getter, op: Callable[[float, float], bool], limit: float) -> Test:
    def compare(fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
        number = as_number(get(fields, ext))
        return number is not None and op(number, limit)

    return compare


_COMPARISONS: dict[CompareOp, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}

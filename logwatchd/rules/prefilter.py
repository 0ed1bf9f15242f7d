"""The prefilter: reject most raw lines before they are parsed.

For each rule we derive what a raw line must contain for the rule to possibly match
(``literals.Requirement`` sets), from conditions on *verbatim* fields: fields whose string
value the parser copies unchanged out of the raw line (``message`` of the syslog parser,
say): if ``message`` contains ``Failed password``, so does the raw line.

A rule gets a *conjunction* of at most two such sets, both of which must hold: a cheap gate
(``program in [sshd, sshd-session]`` gives {"sshd"}) and the rarest set (the literals of its
message regexes). ``all`` keeps these two of its items' sets, ``any`` needs one from every
branch and unions them, ``not`` requires nothing. ``()`` means "no requirement": the rule
may match any line, and the prefilter lets everything through for its sources.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from logwatchd.config.model import All, Leaf, Not, Predicate
from logwatchd.rules.literals import (
    LOOP_LIMIT,
    LineCheck,
    Requirement,
    always,
    fold,
    literal_check,
    minimal_requirement,
    most_selective,
    plain_literals,
    regex_requirement,
    selectivity,
    union,
)

Conjunction = tuple[Requirement, ...]  # every one holds; () = no requirement at all

ALL_FIELDS = "*"
DEFAULT_VERBATIM: frozenset[str] = frozenset({"message", "raw"})
_TEXT_OPS = frozenset({"equals", "in", "contains", "startswith", "endswith"})


def predicate_requirement(
    pred: Predicate, verbatim: Collection[str], extracted: Collection[str] = ()
) -> Requirement | None:
    """Literals one of which any line matching ``pred`` contains, or None.

    ``extracted`` names fields that rule regexes set: they are never taken as verbatim,
    because their value comes from whatever field the regex ran on.
    """
    return most_selective(predicate_conjunction(pred, verbatim, extracted))


def predicate_conjunction(
    pred: Predicate, verbatim: Collection[str], extracted: Collection[str] = ()
) -> Conjunction:
    """Requirements that all hold for a matching line: at most a cheap gate and a rare one.

    ``program in [sshd, sshd-session]`` gives the gate {"sshd"}: one test rejects the many
    lines of other programs; the message regexes give the rarer, longer set checked after it.
    """
    if isinstance(pred, Leaf):
        if pred.field in extracted or not is_verbatim(pred.field, verbatim):
            return ()
        req = leaf_requirement(pred)
        return (req,) if req else ()
    if isinstance(pred, Not):
        return ()
    parts = [predicate_conjunction(item, verbatim, extracted) for item in pred.items]
    if isinstance(pred, All):
        return _gate_and_best([req for part in parts for req in part])
    return any_conjunction(parts)


def any_conjunction(parts: Iterable[Conjunction]) -> Conjunction:
    """For ``any``: each branch holds one of its gates, and one of its rare sets."""
    parts = list(parts)
    if not parts or not all(parts):
        return ()
    gate = union(_gate_and_best(part)[0] for part in parts)
    best = union(_gate_and_best(part)[-1] for part in parts)
    return _gate_and_best([req for req in (gate, best) if req])


def _gate_and_best(reqs: Sequence[Requirement]) -> Conjunction:
    """The rarest set, and the cheapest other one (fewest literals); cheaper first."""
    if not reqs:
        return ()
    best = max(reqs, key=selectivity)
    others = [req for req in reqs if req != best]
    if not others:
        return (best,)
    gate = min(others, key=lambda req: (len(req), -selectivity(req)[0]))
    return (gate, best) if len(gate) <= len(best) else (best, gate)


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
    return minimal_requirement(frozenset(literals))


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


# --- the per-source check -----------------------------------------------------------------


def build_check(conjunctions: Iterable[Conjunction]) -> LineCheck:
    """One fast test for a source: True if the line could match any of its rules.

    Rules that share a gate are checked together: the gate first (a line of another program
    fails it with one substring test), then the union of their rarer sets.
    """
    groups: dict[Requirement, list[Requirement] | None] = {}
    for conjunction in conjunctions:
        if not conjunction:
            return always
        gate, rest = conjunction[0], conjunction[1] if len(conjunction) > 1 else None
        if gate in groups:
            rests = groups[gate]
            groups[gate] = None if rests is None or rest is None else [*rests, rest]
        else:
            groups[gate] = None if rest is None else [rest]
    pairs = [(gate, None if rests is None else union(rests)) for gate, rests in groups.items()]
    inline = _inline(pairs)
    if inline is not None:
        return inline
    checks = [
        (literal_check(gate), None if rest is None else literal_check(rest)) for gate, rest in pairs
    ]
    if len(checks) == 1 and checks[0][1] is None:
        return checks[0][0]
    return _either(checks)


def _either(checks: list[tuple[LineCheck, LineCheck | None]]) -> LineCheck:
    frozen = tuple(checks)

    def check(raw: str) -> bool:
        for gate, rest in frozen:  # noqa: SIM110 - a plain loop beats a generator here
            if gate(raw) and (rest is None or rest(raw)):
                return True
        return False

    return check


def _inline(pairs: list[tuple[Requirement, Requirement | None]]) -> LineCheck | None:
    """The same test as one closure when every literal is case-sensitive: `in` tests, or
    one alternation search for a large set (it runs per rule on every candidate line, and
    per source on every line: calls would dominate)."""
    frozen = []
    for gate, rest in pairs:
        parts = [gate] if rest is None else [gate, rest]
        if any(not req or any(icase for _, icase in req) for req in parts):
            return None
        frozen.append((*_part(gate), *(_part(rest) if rest is not None else (None, None))))
    groups = tuple(frozen)

    def check(raw: str) -> bool:
        for gate, gate_search, rest, rest_search in groups:
            if gate_search is not None:
                if gate_search(raw) is None:
                    continue
            else:
                for literal in gate:
                    if literal in raw:
                        break
                else:
                    continue
            if rest_search is not None:
                if rest_search(raw) is not None:
                    return True
                continue
            if rest is None:
                return True
            for literal in rest:
                if literal in raw:
                    return True
        return False

    return check


def _part(req: Requirement) -> tuple[tuple[str, ...], Callable[[str], Any] | None]:
    """The literals, and for more than LOOP_LIMIT of them one alternation's search (as
    ``literal_check`` decides)."""
    texts = plain_literals(req)
    if len(texts) <= LOOP_LIMIT:
        return texts, None
    return texts, re.compile("|".join(re.escape(text) for text in texts)).search

"""The literal prefilter: what each rule requires of a raw line, and that it is never wrong."""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatchd.clock import ManualClock
from logwatchd.config.model import (
    All,
    AnyOf,
    Leaf,
    Not,
    Predicate,
    RuleConfig,
    Sequence,
    SequenceStep,
)
from logwatchd.rules import Engine
from logwatchd.rules.literals import LOOP_LIMIT, regex_requirement
from logwatchd.rules.predicates import compile_predicate
from logwatchd.rules.prefilter import build_check


def engine_for(*rules: RuleConfig, verbatim: Any = None) -> Engine:
    return Engine(
        rules, {}, host="h", max_keys_per_rule=100, clock=ManualClock(), verbatim_fields=verbatim
    )


def lits(*texts: str, icase: bool = False) -> frozenset[tuple[str, bool]]:
    return frozenset((text, icase) for text in texts)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            r"Failed password for (?:invalid user )?(?P<user>\S+)",
            lits("Failed password for "),  # the longer alternative holds it
        ),
        (r"foo|far", lits("foo", "far")),
        (r"colou?r", lits("color", "colour")),
        (r"[ab]cd", lits("acd", "bcd")),
        (r"x{3}", lits("xxx")),
        (r"^\d+ (error|warn)", lits(" error", " warn")),
        (r"(?i)ERROR", lits("error", icase=True)),
        (r"ERROR", lits("ERROR")),
        (r"x(?i:ABC)y", lits("abc", icase=True)),
        (r"(?:abc)+\d", lits("abc")),
        (r"\d+", None),
        (r".*", None),
        (r"a|.*", None),
        (r"(?:abc)*", None),
        (r"[^a]bc", lits("bc")),
    ],
)
def test_regex_requirement(pattern: str, expected: Any) -> None:
    assert regex_requirement(re.compile(pattern)) == expected


def test_icase_regex_never_requires_an_i() -> None:
    """Under re.IGNORECASE "i" also matches U+0130 and U+0131, whose casefolds are not "i"."""
    assert regex_requirement(re.compile("(?i)Invalid")) == lits("nval", icase=True)
    assert regex_requirement(re.compile("(?i)iii")) is None


def test_only_i_among_ascii_letters_has_case_partners_that_casefold_elsewhere() -> None:
    """The assumption behind the icase regex literals, checked against every code point."""
    ascii_any = re.compile(r"[\x00-\x7f]", re.IGNORECASE)
    unsafe = set()
    for code in range(128, sys.maxunicode + 1):
        char = chr(code)
        if not ascii_any.fullmatch(char):
            continue
        for partner in map(chr, range(128)):
            same = re.fullmatch(re.escape(partner), char, re.IGNORECASE)
            if same and char.casefold() != partner.casefold():
                unsafe.add(partner.lower())
    assert unsafe == {"i"}


def test_ipv6_equality_requires_no_literal() -> None:
    """An IP-typed field equals 2001:db8::1 however the line spells it (2001:DB8::1)."""
    engine = engine_for(RuleConfig("r", Leaf("message", "equals", "2001:db8::1")))
    assert engine.requirements("s") == {"r": None}
    engine = engine_for(RuleConfig("r", Leaf("message", "equals", "203.0.113.9")))
    assert engine.requirements("s") == {"r": lits("203.0.113.9")}


def test_a_program_gate_is_checked_before_the_rare_literals() -> None:
    ssh = RuleConfig(
        "ssh",
        All(
            (
                Leaf("program", "in", ("sshd", "sshd-session")),
                Leaf("message", "regex", re.compile("Failed password|Invalid user")),
            )
        ),
    )
    engine = engine_for(ssh, verbatim={"s": {"*"}})
    assert engine.requirements("s") == {"ssh": lits("Failed password", "Invalid user")}
    assert engine.rules[0].conjunction({"*"}) == (
        lits("sshd"),
        lits("Failed password", "Invalid user"),
    )
    assert engine.wants("s", "sshd[1]: Invalid user x")
    assert not engine.wants("s", "cron[1]: Invalid user x")  # the gate fails
    assert not engine.wants("s", "sshd[1]: Accepted password")  # the rare set fails


def test_all_picks_the_most_selective_and_any_unions() -> None:
    rule = RuleConfig(
        "r",
        All(
            (
                Leaf("message", "contains", "sshd"),
                AnyOf(
                    (
                        Leaf("message", "contains", "Failed password"),
                        Leaf("message", "contains", "Invalid user"),
                    )
                ),
            )
        ),
    )
    assert engine_for(rule).requirements("s") == {"r": lits("Failed password", "Invalid user")}


def test_not_and_non_verbatim_fields_require_nothing() -> None:
    rules = [
        RuleConfig("neg", Not(Leaf("message", "contains", "x"))),
        RuleConfig("other", Leaf("user", "equals", "root")),
        RuleConfig("num", Leaf("message", "equals", 5)),
        RuleConfig(
            "anyof", AnyOf((Leaf("message", "contains", "x"), Leaf("user", "exists", True)))
        ),
    ]
    assert set(engine_for(*rules).requirements("s").values()) == {None}


def test_fields_a_rule_regex_extracts_are_not_verbatim() -> None:
    """`program` is verbatim for the parser, but here its value comes from the regex."""
    pred = All(
        (
            Leaf("other", "regex", re.compile(r"(?P<program>\w+)")),
            Leaf("program", "equals", "sshd"),
        )
    )
    engine = engine_for(RuleConfig("r", pred), verbatim={"s": {"*"}})
    assert engine.requirements("s") == {"r": None}
    assert engine.wants("s", "anything")


def test_wants_checks_the_source_rules_only() -> None:
    rules = [
        RuleConfig("ssh", Leaf("message", "contains", "Failed password"), sources=("auth",)),
        RuleConfig("web", Leaf("message", "contains", "GET /admin"), sources=("web",)),
    ]
    engine = engine_for(*rules)
    assert engine.wants("auth", "sshd[1]: Failed password for root")
    assert not engine.wants("auth", "GET /admin HTTP/1.1")
    assert engine.wants("web", "GET /admin HTTP/1.1")
    assert not engine.wants("nosuch", "Failed password")  # no rule applies to it at all


def test_verbatim_fields_per_source() -> None:
    rule = RuleConfig("r", Leaf("program", "equals", "sshd"))
    engine = engine_for(rule, verbatim={"syslog": {"message", "program"}, "journal": set()})
    assert not engine.wants("syslog", "cron[1]: hello")
    assert engine.wants("syslog", "sshd[1]: hello")
    assert engine.wants("journal", "cron[1]: hello")  # nothing verbatim there: no filtering
    assert engine.wants("unlisted", "cron[1]: hello")  # default verbatim: message and raw


def test_icase_literals_match_the_casefolded_line() -> None:
    rule = RuleConfig("r", Leaf("message", "contains", "STRASSE", icase=True))
    engine = engine_for(rule)
    assert engine.wants("s", "an der straße 1")  # casefold("ß") == "ss"
    assert not engine.wants("s", "an der strase 1")


def test_sequence_rules_require_a_literal_of_any_step_including_the_absent_one() -> None:
    seq = Sequence(
        (
            SequenceStep(Leaf("message", "contains", "backup started")),
            SequenceStep(Leaf("message", "contains", "backup done"), absent=True),
        ),
        window=3600,
    )
    engine = engine_for(RuleConfig("r", None, sequence=seq))
    assert engine.wants("s", "backup done at 3")
    assert engine.wants("s", "backup started")
    assert not engine.wants("s", "unrelated")


@settings(max_examples=200, deadline=None)
@given(
    literals=st.lists(st.text("abc", min_size=1, max_size=4), min_size=1, max_size=40),
    line=st.text("abcx", max_size=40),
)
def test_loop_and_alternation_checks_agree(literals: list[str], line: str) -> None:
    check = build_check([(frozenset((lit, False) for lit in literals),)])
    assert check(line) == any(lit in line for lit in literals)


def test_many_literals_use_one_alternation() -> None:
    literals = [f"word{n}" for n in range(LOOP_LIMIT + 5)]
    check = build_check([(frozenset((lit, False) for lit in literals),)])
    assert check(f"x {literals[-1]} y")
    assert not check("word x")


# --- the property: wants() is never False for a line some rule matches -------------------

# the characters whose case mappings trip up naive case-insensitive literal checks
ALPHABET = "abAB :\u00df\u017f\u212a\u0130\u0131\u03a3\u03c207"
FIELDS = ("message", "raw", "program", "pid", "other", "absent")
VERBATIM = {"s": {"message", "raw", "program", "pid"}}


def _substring(data: st.DataObject, text: str) -> str:
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    return text[start:end]


def _text_value(data: st.DataObject, raw: str) -> str:
    return data.draw(st.one_of(st.just(_substring(data, raw)), st.text(ALPHABET, max_size=4)))


def _regex(data: st.DataObject, raw: str, depth: int = 0) -> str:
    kind = data.draw(st.integers(0, 9 if depth < 3 else 1))
    if kind == 0:
        return re.escape(_text_value(data, raw))
    if kind == 1:
        return data.draw(st.sampled_from([".", r"\s", "[aA]", r"\w", "[^b]", "x?"]))
    inner = _regex(data, raw, depth + 1)
    if kind == 2:
        return inner + _regex(data, raw, depth + 1)
    if kind == 3:
        return f"(?:{inner}|{_regex(data, raw, depth + 1)})"
    wrappers = ["(?:{})?", "(?:{})+", "(?:{})*", "(?:{}){{2}}", "(?i:{})", "(?-i:{})", "(?={})"]
    return data.draw(st.sampled_from(wrappers)).format(inner)


def _leaf(data: st.DataObject, raw: str) -> Leaf:
    name = data.draw(st.sampled_from(FIELDS))
    op = data.draw(st.sampled_from(["equals", "in", "contains", "startswith", "endswith", "regex"]))
    icase = data.draw(st.booleans())
    if op == "regex":
        body = _regex(data, raw)
        if data.draw(st.booleans()):
            group = data.draw(st.sampled_from(["program", "g"]))
            body = f"(?P<{group}>{body})"
        try:
            pattern = re.compile(body, re.IGNORECASE if icase else 0)
        except re.error:
            pattern = re.compile("ab")
        return Leaf(name, op, pattern, icase)
    if op == "in":
        values = tuple(_text_value(data, raw) for _ in range(data.draw(st.integers(1, 3))))
        return Leaf(name, op, values, icase)
    return Leaf(name, op, _text_value(data, raw), icase)


def _predicate(data: st.DataObject, raw: str, depth: int = 0) -> Predicate:
    kind = data.draw(st.integers(0, 3 if depth < 3 else 0))
    if kind == 0:
        return _leaf(data, raw)
    if kind == 3:
        return Not(_predicate(data, raw, depth + 1))
    items = tuple(_predicate(data, raw, depth + 1) for _ in range(data.draw(st.integers(1, 3))))
    return All(items) if kind == 1 else AnyOf(items)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), raw=st.text(ALPHABET, max_size=24))
def test_wants_is_never_false_for_a_line_a_rule_matches(data: st.DataObject, raw: str) -> None:
    fields = {
        "raw": raw,
        "message": _substring(data, raw),
        "program": _substring(data, raw),
        "other": data.draw(st.text(ALPHABET, max_size=8)),
    }
    digits = re.findall(r"[07]+", raw)
    if digits:  # a parser's int field, typed from digits in the line
        fields["pid"] = int(data.draw(st.sampled_from(digits)))
    pred = _predicate(data, raw)
    if not compile_predicate(pred, {}).test(fields, {}):
        return
    engine = engine_for(RuleConfig("r", pred), verbatim=VERBATIM)
    assert engine.wants("s", raw), (pred, fields, engine.requirements("s"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=st.text(ALPHABET, max_size=24), icase=st.booleans())
def test_a_regex_condition_agrees_with_re_search(
    data: st.DataObject, text: str, icase: bool
) -> None:
    """Regex conditions test their own literals first; that must never change the verdict."""
    try:
        pattern = re.compile(_regex(data, text), re.IGNORECASE if icase else 0)
    except re.error:
        return
    compiled = compile_predicate(Leaf("message", "regex", pattern), {})
    assert compiled.test({"message": text}, {}) == (pattern.search(text) is not None)

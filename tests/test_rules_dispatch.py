"""rules/dispatch.py: which rules an event can reach by its program and message start.

Soundness is what matters: a rule left out of an entry must not be able to match there.
Checked three ways: hand-picked patterns, texts Hypothesis builds to match each shipped
pack regex (each must start with one of the starts derived from it), and the table's
answers for events of every kind. The engine with and without the table gives the same
matches, alerts and state in tests/test_rules_speed_equivalence.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatchd.config import load_text
from logwatchd.config.model import All, AnyOf, Leaf, Not, Predicate
from logwatchd.rules.dispatch import (
    PREFIX,
    Dispatch,
    could_start,
    message_prefixes,
    program_values,
    regex_prefixes,
)

PACKS = Path(__file__).resolve().parent.parent / "config" / "rules.d"


def starts(pattern: str, flags: int = 0) -> set[str] | None:
    found = regex_prefixes(re.compile(pattern, flags))
    return None if found is None else set(found)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"^Failed password for", {"Fail"}),
        (r"^(?:error: )?Invalid user", {"erro", "Inva"}),
        (r"^(?:(?:error|fatal): )?Did not", {"erro", "fata", "Did "}),
        (r"^(?:Connection (?:closed|reset)|Disconnected) by", {"Conn", "Disc"}),
        (r"\AAccepted \S+", {"Acce"}),
        (r"^[iI]nvalid user", {"inva", "Inva"}),
        (r"^(?:\[ID \d+ [^\]]*\] )?Failed", {"[ID ", "Fail"}),
        (r"^Fa(?=i)iled", {"Fail"}),  # zero width: the text around it is contiguous
        (r"^x{2}yy", {"xxyy"}),
    ],
)
def test_anchored_patterns_give_their_starts(pattern: str, expected: set[str]) -> None:
    assert starts(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "flags"),
    [
        (r"Failed password", 0),  # not anchored: the text may sit anywhere
        (r"^failed", re.IGNORECASE),  # any case
        (r"^(?i:failed)", 0),
        (r"^ab", 0),  # shorter than PREFIX: the rest is anything
        (r"^ab$", 0),
        (r"^\s*(?P<user>\S+) : ", 0),  # starts with a class
        (r"^.*Failed", 0),
        (r"^a+bcd", 0),
        (r"^Fail", re.MULTILINE),  # "^" after any newline
        (r"^(?:a|b|c|d|e|f|g|h)(?:a|b|c|d|e|f|g|h)(?:a|b|c|d|e|f|g|h)x", 0),  # 512 starts
    ],
)
def test_patterns_that_do_not_spell_their_start_give_none(pattern: str, flags: int) -> None:
    assert starts(pattern, flags) is None


def pack_regexes() -> list[re.Pattern[str]]:
    includes = ", ".join(str(p) for p in sorted(PACKS.glob("*.yaml")))
    text = f"version: 1\ninclude: [{includes}]\n"
    text += "sources:\n  - {id: s, type: stdin, parser: syslog}\n"
    config = load_text(text, "/tmp/logwatchd-dispatch.yaml", base_dir="/tmp")
    found: dict[str, re.Pattern[str]] = {}

    def walk(pred: Predicate | None) -> None:
        if isinstance(pred, Leaf) and pred.op == "regex" and pred.field == "message":
            found[pred.value.pattern] = pred.value
        elif isinstance(pred, All | AnyOf):
            for item in pred.items:
                walk(item)

    for rule in config.rules:
        walk(rule.match)
        for step in rule.sequence.steps if rule.sequence else ():
            walk(step.match)
        if rule.context is not None:
            walk(rule.context.learn)
            walk(rule.context.forget)
    return [pattern for pattern in found.values() if regex_prefixes(pattern) is not None]


PACK_REGEXES = pack_regexes()


def test_most_shipped_message_regexes_spell_their_start() -> None:
    assert len(PACK_REGEXES) >= 25


@pytest.mark.parametrize("pattern", PACK_REGEXES, ids=lambda p: p.pattern[:40])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_text_a_pack_regex_matches_starts_with_a_derived_start(
    pattern: re.Pattern[str], data: st.DataObject
) -> None:
    text = data.draw(st.from_regex(pattern))
    assert pattern.search(text)
    allowed = regex_prefixes(pattern)
    assert allowed is not None
    assert text[:PREFIX] in allowed, (text, sorted(allowed))


# --- conditions and the table ---------------------------------------------------------------

SSHD = Leaf("program", "in", ("sshd", "sshd-session"))
FAILED = Leaf("message", "regex", re.compile(r"^Failed \S+ for"))


def test_all_needs_every_item_any_needs_one_not_says_nothing() -> None:
    both = All((SSHD, FAILED))
    assert program_values(both, frozenset()) == {"sshd", "sshd-session"}
    assert message_prefixes(both, frozenset()) == {"Fail"}
    either = AnyOf((FAILED, Leaf("message", "startswith", "Accepted ")))
    assert message_prefixes(either, frozenset()) == {"Fail", "Acce"}
    assert message_prefixes(AnyOf((FAILED, Leaf("message", "contains", "x"))), frozenset()) is None
    assert message_prefixes(Not(FAILED), frozenset()) is None
    assert program_values(Leaf("program", "equals", "sshd", icase=True), frozenset()) is None
    assert program_values(Leaf("program", "in", ("sshd", 22)), frozenset()) is None


def test_a_field_the_rule_may_overwrite_says_nothing() -> None:
    assert message_prefixes(FAILED, frozenset({"message"})) is None
    assert program_values(SSHD, frozenset({"program"})) is None


def test_the_table_keeps_order_and_rules_out_only_what_cannot_match() -> None:
    items = ["fail", "any-sshd", "sudo", "anything"]
    needs = [
        (frozenset({"sshd"}), frozenset({"Fail"})),
        (frozenset({"sshd"}), None),
        (frozenset({"sudo"}), None),
        (None, None),
    ]
    table = Dispatch(items, needs)
    assert table.select({"program": "sshd", "message": "Failed password"}) == (
        "fail", "any-sshd", "anything",
    )  # fmt: skip
    assert table.select({"program": "sshd", "message": "Accepted key"}) == ("any-sshd", "anything")
    assert table.select({"program": "sshd", "message": "Fa"}) == ("any-sshd", "anything")
    assert table.select({"program": "sudo", "message": "Failed"}) == ("sudo", "anything")
    assert table.select({"program": "cron", "message": "Failed"}) == ("anything",)
    assert table.select({"message": "Failed"}) == ("anything",)
    # a program that is not text: nothing is ruled out by it
    assert table.select({"program": 22, "message": "Failed"}) == tuple(items)
    # no message: rules that need a start cannot match; a number's digits are not checked
    assert table.select({"program": "sshd"}) == ("any-sshd", "anything")
    assert table.select({"program": "sshd", "message": 404}) == ("fail", "any-sshd", "anything")
    assert Dispatch.everything(items).select({"program": "cron"}) == tuple(items)


def test_could_start_answers_for_text_missing_and_other_messages() -> None:
    needed = frozenset({"Fail"})
    assert could_start(needed, "Failed password")
    assert not could_start(needed, "Accepted key")
    assert not could_start(needed, "Fa")
    assert not could_start(needed, None)
    assert could_start(needed, 404)  # digits of a number: not ruled out
    assert could_start(None, "anything") and could_start(None, None)

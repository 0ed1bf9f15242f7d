"""`explain`: per rule, did it match, and each condition with the value it saw."""

from __future__ import annotations

import ipaddress
import re

from logwatchd.clock import ManualClock
from logwatchd.config.model import (
    All,
    AnyOf,
    ContextConfig,
    ListConfig,
    Not,
    RuleConfig,
    Sequence,
    SequenceStep,
)
from logwatchd.events import Event, Line
from logwatchd.rules import Engine, RuleExplanation, format_explanation
from tests.condition_helpers import leaf

LISTS = {
    "trusted": ListConfig(
        "trusted", frozenset({"10.0.0.0/8"}), (ipaddress.ip_network("10.0.0.0/8"),)
    )
}
SSH = RuleConfig(
    "sshd-fail",
    All(
        (
            leaf("program", "equals", "sshd"),
            leaf(
                "message",
                "regex",
                re.compile(r"Failed password for (?P<user>\S+) from (?P<ip>\S+)"),
            ),
            Not(leaf("ip", "in_list", "trusted")),
        )
    ),
    group_by=("ip",),
)
SUDO = RuleConfig(
    "sudo",
    AnyOf((leaf("program", "equals", "sudo"), leaf("program", "equals", "su"))),
    group_by=("user",),
)


def explain(message: str, program: str = "sshd", *rules: RuleConfig) -> list[RuleExplanation]:
    engine = Engine(
        rules or (SSH, SUDO), LISTS, host="h", max_keys_per_rule=10, clock=ManualClock()
    )
    line = Line("auth", message, 0.0, "explain:1", None, 1)
    return engine.explain(Event(line, {"message": message, "program": program}, 0.0))


def test_a_matching_rule_reports_each_condition_and_the_extracted_key() -> None:
    ssh, sudo = explain("Failed password for root from 203.0.113.9 port 22")
    assert ssh.matched
    assert ssh.key == {"ip": "203.0.113.9"}
    assert ssh.fields["user"] == "root"
    leaves = [(c.field, c.op, c.seen, c.result) for c in ssh.conditions if c.field]
    assert leaves == [
        ("program", "equals", "sshd", True),
        ("message", "regex", "Failed password for root from 203.0.113.9 port 22", True),
        ("ip", "in_list", "203.0.113.9", False),
    ]
    assert [(c.path, c.result) for c in ssh.conditions if not c.field] == [
        ("match", True),
        ("match.all[2]", True),
    ]
    assert not sudo.matched
    assert sudo.key is None


def test_a_failing_rule_shows_which_condition_failed_and_what_it_saw() -> None:
    (ssh, _sudo) = explain("Failed password for root from 10.1.1.1 port 22")
    assert not ssh.matched
    trusted = next(c for c in ssh.conditions if c.op == "in_list")
    assert trusted.seen == "10.1.1.1"
    assert trusted.result is True
    assert next(c for c in ssh.conditions if c.op == "not").result is False


def test_explanation_verdicts_agree_with_the_engine() -> None:
    clock = ManualClock()
    engine = Engine((SSH, SUDO), LISTS, host="h", max_keys_per_rule=10, clock=clock)
    for message, program in [
        ("Failed password for root from 203.0.113.9", "sshd"),
        ("Failed password for root from 10.0.0.1", "sshd"),
        ("session opened", "sudo"),
        ("Failed password for root from 203.0.113.9", "cron"),
    ]:
        line = Line("auth", message, 0.0, "x", None, 1)
        event = Event(line, {"message": message, "program": program, "user": "bob"}, 0.0)
        verdicts = {e.rule: e.matched for e in engine.explain(event)}
        fired = {a.rule for a in engine.process(event)}
        assert {rule for rule, ok in verdicts.items() if ok} == fired


def test_missing_fields_and_missing_group_by_are_spelled_out() -> None:
    (sudo,) = explain("session opened", "sudo", SUDO)
    assert sudo.matched
    assert sudo.key is None
    assert "group_by" in sudo.note and "user" in sudo.note
    (ssh,) = explain("hello", "sshd", SSH)
    regex_row = next(c for c in ssh.conditions if c.op == "regex")
    assert regex_row.result is False
    text = format_explanation([ssh])
    assert "ip in_list 'trusted': NO  [seen (missing)]" in text


def test_a_context_rule_says_its_connection_holds_a_match_without_the_key() -> None:
    too_many = RuleConfig(
        "too-many",
        leaf("message", "regex", re.compile(r"^Disconnecting: Too many authentication")),
        group_by=("ip",),
        context=ContextConfig(by=("pid",), remember=("ip",)),
    )
    (explanation,) = explain("Disconnecting: Too many authentication failures", "sshd", too_many)
    assert explanation.matched and explanation.key is None
    assert "connection (pid) holds the match" in explanation.note
    assert "ip" in explanation.note


def test_sequence_rules_explain_each_step() -> None:
    seq = Sequence(
        (
            SequenceStep(leaf("message", "contains", "started")),
            SequenceStep(leaf("message", "contains", "done"), absent=True),
        ),
        window=60,
    )
    rule = RuleConfig("backup", None, sequence=seq)
    (explanation,) = explain("job done", "cron", rule)
    assert explanation.matched
    assert "step(s) [1]" in explanation.note
    assert [c.path for c in explanation.conditions] == ["steps[0]", "steps[1]"]


def test_format_is_readable_and_keeps_hostile_text_inert() -> None:
    hostile = "Failed password for \x1b[31mroot\n from 203.0.113.9"
    text = format_explanation(explain(hostile))
    assert "rule sshd-fail:" in text
    assert "rule sudo: no match" in text
    assert "program equals 'sshd': yes  [seen 'sshd']" in text
    assert "\x1b" not in text
    assert "\\x1b" in text
    assert format_explanation([]) == "no rule applies to this source"
    lines = text.splitlines()
    assert all(len(line) < 400 for line in lines)

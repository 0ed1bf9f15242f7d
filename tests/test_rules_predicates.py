"""Predicates compile to closures that match the README's operators and never raise."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatchd.config.model import All, AnyOf, Leaf, ListConfig, Not, Predicate
from logwatchd.rules.predicates import ALL_HITS, compile_predicate
from tests.condition_helpers import leaf

LISTS = {
    "trusted": ListConfig(
        "trusted",
        frozenset({"127.0.0.0/8", "10.0.0.0/8", "::1", "backup-host"}),
        (
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ),
    ),
    "names": ListConfig("names", frozenset({"root", "admin"})),
}


def run(pred: Predicate, fields: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    compiled = compile_predicate(pred, LISTS)
    ext: dict[str, Any] = {}
    return compiled.test(fields, ext, ALL_HITS), ext


def matches(pred: Predicate, fields: dict[str, Any]) -> bool:
    return run(pred, fields)[0]


@pytest.mark.parametrize(
    ("leaf", "fields", "expected"),
    [
        (leaf("program", "equals", "sshd"), {"program": "sshd"}, True),
        (leaf("program", "equals", "sshd"), {"program": "SSHD"}, False),
        (leaf("program", "equals", "sshd", icase=True), {"program": "SSHD"}, True),
        (leaf("program", "equals", "sshd"), {}, False),
        (leaf("status", "equals", 404), {"status": 404}, True),
        (leaf("status", "equals", 404), {"status": "404"}, True),
        (leaf("status", "equals", 404), {"status": 500}, False),
        (leaf("status", "equals", "404"), {"status": 404}, True),
        (leaf("status", "equals", 404), {"status": "four"}, False),
        (leaf("program", "in", ("sshd", "sudo")), {"program": "sudo"}, True),
        (leaf("program", "in", ("sshd", "sudo")), {"program": "cron"}, False),
        (leaf("program", "in", ("sshd", "sudo"), icase=True), {"program": "Sudo"}, True),
        (leaf("status", "in", (401, 403)), {"status": 403}, True),
        (leaf("status", "in", (401, 403)), {"status": "403"}, True),
        (leaf("status", "in", (401, 403)), {}, False),
        (leaf("message", "contains", "Failed"), {"message": "x Failed y"}, True),
        (leaf("message", "contains", "Failed"), {"message": "x failed y"}, False),
        (leaf("message", "contains", "FAILED", icase=True), {"message": "x failed y"}, True),
        (leaf("message", "contains", "Failed"), {}, False),
        (leaf("path", "startswith", "/admin"), {"path": "/admin/x"}, True),
        (leaf("path", "startswith", "/admin"), {"path": "/x/admin"}, False),
        (leaf("path", "startswith", "/ADMIN", icase=True), {"path": "/admin/x"}, True),
        (leaf("path", "endswith", ".php"), {"path": "/a.php"}, True),
        (leaf("path", "endswith", ".php"), {"path": "/a.php5"}, False),
        (leaf("path", "endswith", ".PHP", icase=True), {"path": "/a.php"}, True),
        (leaf("path", "endswith", ".php"), {}, False),
        (leaf("status", "gt", 499), {"status": 500}, True),
        (leaf("status", "gt", 499), {"status": 499}, False),
        (leaf("status", "gte", 499), {"status": 499}, True),
        (leaf("status", "lt", 400), {"status": "399"}, True),
        (leaf("status", "lte", 400), {"status": 400.0}, True),
        (leaf("status", "lte", 400), {"status": 400.5}, False),
        (leaf("status", "gt", 1), {"status": "many"}, False),
        (leaf("status", "gt", 1), {"status": "nan"}, False),
        (leaf("status", "gt", 1), {"status": True}, False),
        (leaf("status", "gt", 1), {}, False),
        (leaf("user", "exists", True), {"user": "bob"}, True),
        (leaf("user", "exists", True), {}, False),
        (leaf("user", "exists", False), {}, True),
        (leaf("user", "exists", False), {"user": "bob"}, False),
    ],
)
def test_operator(leaf: Leaf, fields: dict[str, Any], expected: bool) -> None:
    assert matches(leaf, fields) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.1.2.3", True),
        (ipaddress.ip_address("10.1.2.3"), True),
        ("192.0.2.1", False),
        ("2001:db8::5", True),
        (ipaddress.ip_address("2001:db8::5"), True),
        ("::ffff:10.9.9.9", True),  # IPv4-mapped IPv6 is the IPv4 address
        ("not-an-ip", False),
        ("10.1.2.3.4", False),
        (42, False),
    ],
)
def test_cidr_matches_strings_and_ip_objects(value: Any, expected: bool) -> None:
    nets = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    assert matches(leaf("ip", "cidr", nets), {"ip": value}) is expected
    assert matches(leaf("ip", "cidr", nets), {}) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.20.30.40", True),  # inside a listed network
        (ipaddress.ip_address("127.0.0.1"), True),
        ("::1", True),
        ("203.0.113.9", False),
        ("backup-host", True),  # plain string entry
        ("other-host", False),
    ],
)
def test_in_list_is_cidr_aware_for_ips_and_plain_for_strings(value: Any, expected: bool) -> None:
    assert matches(leaf("ip", "in_list", "trusted"), {"ip": value}) is expected


def test_in_list_without_networks_is_plain_membership() -> None:
    assert matches(leaf("user", "in_list", "names"), {"user": "root"})
    assert not matches(leaf("user", "in_list", "names"), {"user": "rooter"})
    assert not matches(leaf("user", "in_list", "names"), {})
    assert not matches(leaf("user", "in_list", "no-such-list"), {"user": "root"})


def test_regex_searches_and_its_groups_become_fields() -> None:
    pattern = re.compile(r"Failed password for (?P<user>\S+) from (?P<ip>[\d.]+)")
    ok, ext = run(
        leaf("message", "regex", pattern),
        {"message": "Failed password for root from 203.0.113.9 port 22"},
    )
    assert ok
    assert ext == {"user": "root", "ip": "203.0.113.9"}


def test_regex_icase_and_unmatched_optional_group_is_not_a_field() -> None:
    pattern = re.compile(r"invalid user (?P<user>\w+)(?: from (?P<ip>\S+))?", re.IGNORECASE)
    ok, ext = run(leaf("message", "regex", pattern), {"message": "INVALID USER bob"})
    assert ok
    assert ext == {"user": "bob"}


def test_extracted_fields_are_seen_by_later_conditions() -> None:
    pred = All(
        (
            leaf("message", "regex", re.compile(r"user=(?P<user>\w+)")),
            leaf("user", "equals", "root"),
        )
    )
    assert matches(pred, {"message": "login user=root"})
    assert not matches(pred, {"message": "login user=bob"})


def test_extracted_field_overrides_parser_field_of_same_name_for_later_conditions() -> None:
    pred = All(
        (
            leaf("message", "regex", re.compile(r"user=(?P<user>\w+)")),
            leaf("user", "equals", "root"),
        )
    )
    assert matches(pred, {"message": "user=root", "user": "other"})


def test_regex_inside_not_does_not_leak_fields() -> None:
    pred = All(
        (
            leaf("message", "contains", "session"),
            Not(leaf("message", "regex", re.compile(r"user (?P<user>nobody)x"))),
        )
    )
    ok, ext = run(pred, {"message": "session opened for user nobody"})
    assert ok
    assert "user" not in ext


def test_failed_any_branch_does_not_leak_fields() -> None:
    first_branch = All(
        (
            leaf("message", "regex", re.compile(r"from (?P<ip>\S+)")),
            leaf("message", "contains", "never-there"),
        )
    )
    second_branch = leaf("message", "regex", re.compile(r"user (?P<user>\w+)"))
    ok, ext = run(AnyOf((first_branch, second_branch)), {"message": "user bob from 1.2.3.4"})
    assert ok
    assert ext == {"user": "bob"}


def test_successful_any_branch_keeps_its_fields() -> None:
    pred = AnyOf(
        (
            leaf("message", "regex", re.compile(r"nothing (?P<x>\w+)")),
            leaf("message", "regex", re.compile(r"from (?P<ip>\S+)")),
        )
    )
    ok, ext = run(pred, {"message": "bob from 1.2.3.4"})
    assert ok
    assert ext == {"ip": "1.2.3.4"}


def test_not_and_all_and_any_combine() -> None:
    pred = All(
        (
            AnyOf((leaf("program", "equals", "sshd"), leaf("program", "equals", "sshd-session"))),
            Not(leaf("ip", "in_list", "trusted")),
        )
    )
    assert matches(pred, {"program": "sshd-session", "ip": "203.0.113.9"})
    assert not matches(pred, {"program": "sshd", "ip": "10.0.0.1"})
    assert not matches(pred, {"program": "cron", "ip": "203.0.113.9"})


def test_not_of_a_missing_field_condition_is_true() -> None:
    """`not` inverts: "user is not root" holds when there is no user at all."""
    assert matches(Not(leaf("user", "equals", "root")), {})


def test_text_ops_see_ints_by_their_digits() -> None:
    assert matches(leaf("status", "startswith", "5"), {"status": 503})
    assert matches(leaf("status", "regex", re.compile(r"^5\d\d$")), {"status": 503})
    assert matches(leaf("ip", "regex", re.compile(r"^203\.")), {"ip": "203.0.113.9"})


def test_ip_typed_fields_compare_as_addresses_not_as_text() -> None:
    """The line may spell an address otherwise than str() does: only address semantics hold."""
    v6 = {"ip": ipaddress.ip_address("2001:DB8::1")}
    assert matches(leaf("ip", "equals", "2001:db8:0::1"), v6)
    assert matches(leaf("ip", "in", ("192.0.2.1", "2001:db8::1")), v6)
    assert not matches(leaf("ip", "equals", "2001:db8::2"), v6)
    assert not matches(leaf("ip", "contains", "db8"), v6)
    assert not matches(leaf("ip", "startswith", "2001"), v6)
    v4 = {"ip": ipaddress.ip_address("203.0.113.9")}
    assert matches(leaf("ip", "equals", "203.0.113.9"), v4)
    assert not matches(leaf("ip", "equals", "[203.0.113.9]"), v4)
    assert matches(leaf("ip", "equals", "[203.0.113.9]"), {"ip": "[203.0.113.9]"})


def test_floats_and_datetimes_are_not_text() -> None:
    stamp = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    assert not matches(leaf("t", "contains", "2026"), {"t": stamp})
    assert not matches(leaf("f", "startswith", "0.5"), {"f": 0.5})
    assert matches(leaf("f", "equals", 0.5), {"f": 0.5})


@pytest.mark.parametrize(
    "value",
    [None, True, [1, 2], {"a": 1}, b"x", object(), float("nan"), 10**5000, "y" * 100_000],
    ids=["none", "bool", "list", "dict", "bytes", "object", "nan", "bigint", "long-str"],
)
def test_values_of_the_wrong_type_do_not_match(value: Any) -> None:
    for condition in (
        leaf("f", "equals", "x"),
        leaf("f", "contains", "x"),
        leaf("f", "regex", re.compile("x")),
        leaf("f", "cidr", (ipaddress.ip_network("10.0.0.0/8"),)),
        leaf("f", "in_list", "trusted"),
    ):
        assert not matches(condition, {"f": value}), (condition.op, value)


_HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

_ALL_OPS = [
    leaf("f", "equals", "a"),
    leaf("f", "equals", 1),
    leaf("f", "in", ("a", 1, 2.5)),
    leaf("f", "contains", "a", icase=True),
    leaf("f", "startswith", "a"),
    leaf("f", "endswith", "a"),
    leaf("f", "regex", re.compile(r"(?P<g>a+)")),
    leaf("f", "cidr", (ipaddress.ip_network("10.0.0.0/8"),)),
    leaf("f", "in_list", "trusted"),
    leaf("f", "exists", True),
    leaf("f", "gt", 1),
    leaf("f", "gte", 1.5),
    leaf("f", "lt", 1),
    leaf("f", "lte", -3),
]


@settings(max_examples=300, deadline=None)
@given(value=_HOSTILE)
def test_no_operator_raises_on_any_value(value: Any) -> None:
    compiled = compile_predicate(All(tuple(Not(op) for op in _ALL_OPS)), LISTS)
    compiled.test({"f": value}, {}, ALL_HITS)
    for op in _ALL_OPS:
        assert isinstance(compile_predicate(op, LISTS).test({"f": value}, {}, ALL_HITS), bool)

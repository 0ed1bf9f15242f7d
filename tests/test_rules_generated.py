"""A condition as one generated function does exactly what the tree of closures does: the
same verdict and the same extracted groups, for any tree, any field values and any scan
hits, and for every condition of the shipped packs on their sample lines."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatchd.config import load_text
from logwatchd.config.model import All, AnyOf, ListConfig, Not, Predicate
from logwatchd.events import Line
from logwatchd.pipeline import ReplayClock, build_engine
from logwatchd.rules.generated import compile_generated
from logwatchd.rules.predicates import ALL_HITS, Condition, compile_predicate
from tests.condition_helpers import leaf

PACKS = Path(__file__).resolve().parent.parent / "config" / "rules.d"
SAMPLES = Path(__file__).resolve().parent / "packs"
LISTS = {
    "trusted": ListConfig(
        "trusted",
        frozenset({"10.0.0.0/8", "backup-host"}),
        (ipaddress.ip_network("10.0.0.0/8"),),
    ),
}
FIELDS = ("f", "g", "ip")

_LEAVES = [
    leaf("f", "equals", "a"),
    leaf("f", "equals", 1),
    leaf("g", "equals", "10.0.0.1"),
    leaf("f", "in", ("a", "b")),
    leaf("g", "in", ("a", 1, 2.5)),
    leaf("ip", "in", ("10.0.0.1", "2001:db8::1")),
    leaf("f", "in", ("A", "b"), icase=True),
    leaf("f", "contains", "a"),
    leaf("g", "startswith", "1"),
    leaf("f", "regex", re.compile(r"(?P<g>a+)")),
    leaf("f", "regex", re.compile(r"(?P<ip>\d+\.\d+\.\d+\.\d+)|(?P<f>b)")),
    leaf("g", "regex", re.compile(r"^1")),
    leaf("f", "regex", re.compile(r"A", re.IGNORECASE), icase=True),
    leaf("ip", "cidr", (ipaddress.ip_network("10.0.0.0/8"),)),
    leaf("ip", "in_list", "trusted"),
    leaf("f", "exists", True),
    leaf("ip", "exists", False),
    leaf("g", "gt", 1),
]
_VALUES = st.one_of(
    st.sampled_from(["a", "aa", "b", "1", "10.0.0.1", "A", "", "xa 10.0.0.7 b"]),
    st.integers(min_value=-2, max_value=12),
    st.sampled_from([ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("2001:db8::1")]),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=6),
)


def _trees(leaves: st.SearchStrategy[Predicate]) -> st.SearchStrategy[Predicate]:
    items = st.lists(leaves, min_size=1, max_size=4).map(tuple)
    return st.one_of(items.map(All), items.map(AnyOf), leaves.map(Not))


PREDICATES = st.recursive(st.sampled_from(_LEAVES), _trees, max_leaves=8)


def _gates(seed: int) -> Any:
    """Some gate for each node (a bit of ``seed``'s choosing): both forms must honour it."""

    def gate(pred: Predicate) -> int:
        return (hash(repr(pred)) ^ seed) & 0b1110

    return gate


def _outcome(test: Any, fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> Any:
    verdict = test(fields, ext, hits)
    return verdict, ext


@settings(max_examples=400, deadline=None)
@given(
    pred=PREDICATES,
    values=st.dictionaries(st.sampled_from(FIELDS), _VALUES, max_size=3),
    seed=st.integers(0, 15),
    hits=st.sampled_from([ALL_HITS, 0, 0b10, 0b100, 0b1000, 0b1110, 1]),
    extra=st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(["a", "q"]), max_size=2),
)
def test_any_tree_gives_the_verdict_and_groups_of_the_closures(
    pred: Predicate, values: dict[str, Any], seed: int, hits: int, extra: dict[str, Any]
) -> None:
    gates = _gates(seed)
    closures = compile_predicate(pred, LISTS, gates)
    generated = compile_generated(pred, LISTS, gates)
    assert generated.extracts == closures.extracts
    fields = {name: value for name, value in values.items() if value is not None}
    for ext in (None, {}, dict(extra)):
        expected = _outcome(closures.test, fields, None if ext is None else dict(ext), hits)
        found = _outcome(generated.test, fields, None if ext is None else dict(ext), hits)
        assert found == expected
        assert found[0] is True or found[0] is False


_GROUPS = leaf("f", "regex", re.compile(r"(?P<ip>\d+\.\d+\.\d+\.\d+)"))
_NEVER = leaf("f", "contains", "never-there")


@pytest.mark.parametrize(
    "pred",
    [
        AnyOf((All((_GROUPS, _NEVER)), leaf("f", "regex", re.compile(r"(?P<g>b)")))),
        AnyOf((All((_GROUPS, _NEVER)), leaf("f", "contains", "b"))),
        All((leaf("f", "contains", "b"), Not(All((_GROUPS, _NEVER))))),
        All((leaf("f", "contains", "b"), Not(_GROUPS))),
    ],
    ids=["failed-branch-then-groups", "failed-branch-then-plain", "not-all", "not-leaf"],
)
def test_groups_of_a_branch_or_not_that_fails_stay_out(pred: Predicate) -> None:
    fields = {"f": "user b from 10.0.0.7"}
    for ext in ({}, {"g": "old"}):
        expected = _outcome(compile_predicate(pred, LISTS).test, fields, dict(ext), ALL_HITS)
        assert "ip" not in expected[1]
        assert (
            _outcome(compile_generated(pred, LISTS).test, fields, dict(ext), ALL_HITS) == expected
        )


def test_lone_items_and_empty_groups_keep_the_closures_shape() -> None:
    """A lone item of all/any is its own test (its group's gate is not checked), an empty
    all holds, an empty any does not."""
    lone = leaf("f", "equals", "a")
    gates = _gates(2)
    for pred in (All((lone,)), AnyOf((lone,)), All(()), AnyOf(())):
        for hits in (0, ALL_HITS):
            expected = compile_predicate(pred, LISTS, gates).test({"f": "a"}, {}, hits)
            assert compile_generated(pred, LISTS, gates).test({"f": "a"}, {}, hits) == expected


def test_field_names_and_values_never_become_code() -> None:
    hostile = "x') or __import__('os').system('false') or ('"
    pattern = re.compile(re.escape(hostile))
    pred = All((leaf(hostile, "in", (hostile,)), leaf(hostile, "regex", pattern)))
    test = compile_generated(pred, LISTS).test
    assert test({hostile: "other"}, {}, ALL_HITS) is False
    assert test({hostile: hostile}, {}, ALL_HITS) is True


def test_every_pack_condition_agrees_on_the_pack_samples(tmp_path: Path) -> None:
    """Each condition of every shipped rule (match, sequence steps, learn, forget), with the
    engine's own gates, on every sample line, with the hits the scan finds and with all."""
    packs = ", ".join(str(p) for p in sorted(PACKS.glob("*.yaml")))
    text = (
        "version: 1\ndaemon: {timezone: UTC}\n"
        f"include: [{packs}]\nsources:\n  - {{id: s, type: stdin, parser: syslog}}\n"
    )
    config = load_text(text, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))
    engine, parsers = build_engine(config, ReplayClock(), host="h")
    scan = engine.scan("s")
    conditions: list[Condition] = []
    for rule in engine.rules:
        conditions += [c for c in (rule.condition, *rule.step_conditions) if c is not None]
        if rule.context is not None:
            learn, forget = rule.context.learn_condition, rule.context.forget_condition
            conditions += [c for c in (learn, forget) if c is not None]
    pairs = []
    for condition in conditions:
        gates = engine._gates(condition.ungated)
        pairs.append(
            (
                compile_predicate(condition.pred, config.lists, gates).test,
                compile_generated(condition.pred, config.lists, gates).test,
            )
        )
    lines = [
        text
        for path in sorted(SAMPLES.glob("*.log"))
        for text in path.read_text(errors="replace").splitlines()
    ]
    assert len(lines) > 100
    held = 0
    for raw in lines:
        fields = parsers["s"].parse(Line("s", raw, 1_795_687_200.0, "o"))
        if fields is None:
            continue
        for hits in (scan.hits(raw), ALL_HITS):
            for closures, generated in pairs:
                expected = _outcome(closures, fields, {}, hits)
                assert _outcome(generated, fields, {}, hits) == expected, raw
                held += expected[0]
    assert held > 50  # the samples do exercise the conditions

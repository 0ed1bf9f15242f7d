"""The engine's shortcuts change nothing: the same matches, alerts and saved state as an
engine that runs every condition of every rule on every line.

The shortcuts under test: each rule (each sequence step, each context condition) is skipped
on a line without its own literals, and a rule on an event whose program or message start
its condition rules out; steps with the same condition are tested once; the regex
branches of an `any` on one field run as one closure, without scratch copies. The reference
engine has them all switched off. Input: the benchmark generator's auth.log (real
subprocess, several formats) and the hand-written pack samples, through the shipped packs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatchd.alerts import Alert, jsonable
from logwatchd.config import load_text
from logwatchd.config.model import Config
from logwatchd.events import Line
from logwatchd.pipeline import Pipeline, ReplayClock, build_engine
from logwatchd.rules import Engine, Match, predicates, prefilter
from logwatchd.rules.dispatch import Dispatch
from logwatchd.rules.fused import combine_anchored
from logwatchd.rules.literals import always, literal_check

ROOT = Path(__file__).resolve().parent.parent
PACKS = ROOT / "config" / "rules.d"
GENERATOR = ROOT / "bench" / "gen_authlog.py"
SAMPLES = Path(__file__).resolve().parent / "packs"
READ_TIME = 1_795_687_200.0  # 2026-11-26T10:00:00Z


def config_for(tmp: Path) -> Config:
    packs = ", ".join(str(p) for p in sorted(PACKS.glob("*.yaml")))
    text = (
        "version: 1\ndaemon: {timezone: UTC, max_keys_per_rule: 500}\n"
        f"include: [{packs}]\nsources:\n  - {{id: auth, type: stdin, parser: syslog}}\n"
    )
    return load_text(text, str(tmp / "logwatchd.yaml"), base_dir=str(tmp))


def slow(engine: Engine) -> Engine:
    """The same engine with every shortcut switched off: all conditions run on every line."""

    def plan(source_id: str) -> tuple[Any, ...]:
        plans = []
        for rule in engine.rules_for(source_id):
            checks = len(rule.steps) + 1 if rule.is_sequence else 3 if rule.context else 1
            plans.append((rule, (always,) * checks))
        return tuple(plans)

    engine._plan = plan  # type: ignore[method-assign]
    engine._dispatch_for = lambda source: Dispatch.everything(plan(source))  # type: ignore[method-assign]
    for rule in engine.rules:
        rule.same_step = tuple(range(len(rule.steps)))
        rule.context_starts = (None, None, None)
    return engine


@contextmanager
def fused(on: bool) -> Iterator[None]:
    """Compile regex branches of an `any` fused (the engine's way) or one closure each."""
    before = predicates.FUSE_REGEX_RUNS
    predicates.FUSE_REGEX_RUNS = on
    try:
        yield
    finally:
        predicates.FUSE_REGEX_RUNS = before


def replay(config: Config, lines: list[str], *, fast: bool, prefilter: bool = True) -> Any:
    clock = ReplayClock()
    with fused(fast):
        engine, parsers = build_engine(config, clock, host="h")
    if not fast:
        slow(engine)
    pipeline = Pipeline(engine, parsers, replay=clock, prefilter=prefilter)
    matches: list[Match] = []
    alerts: list[Alert] = []
    for number, raw in enumerate(lines, 1):
        line = Line("auth", raw, READ_TIME, f"auth.log:{number}", "auth.log", number)
        alerts.extend(pipeline.handle(line, matches))
    changes = engine.drain_changes()
    state = (sorted(changes.upserts), sorted(changes.deletes))
    return [_match(m) for m in matches], [_alert(a) for a in alerts], state


def _match(match: Match) -> str:
    return json.dumps([match.rule, match.line, jsonable(match.fields)], sort_keys=True)


def _alert(alert: Alert) -> str:
    data = {name: getattr(alert, name) for name in Alert.__dataclass_fields__}
    return json.dumps(jsonable(data), sort_keys=True, default=str)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return config_for(tmp_path_factory.mktemp("speed"))


@pytest.mark.parametrize("form", ["rfc3164", "mix"])
def test_generated_auth_log_gives_the_same_matches_alerts_and_state(
    config: Config, tmp_path: Path, form: str
) -> None:
    out = tmp_path / "auth.log"
    subprocess.run(
        [sys.executable, str(GENERATOR), str(out), "--lines", "12000", "--format", form,
         "--sources", "60"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    lines = out.read_text(encoding="utf-8").splitlines()
    fast = replay(config, lines, fast=True)
    reference = replay(config, lines, fast=False)
    matches, alerts, _state = fast
    assert len(matches) > 1000 and len(alerts) > 20  # the log exercises the rules
    assert {m.split('"')[1] for m in matches} >= {
        "sshd-auth-failure", "sshd-login-after-failures", "sshd-preauth-disconnects",
    }  # fmt: skip
    assert fast == reference
    # without the prefilter, every parsed line reaches every condition: same outcome
    unfiltered = replay(config, lines, fast=False, prefilter=False)
    assert fast[:2] == unfiltered[:2]


def test_pack_samples_give_the_same_matches_and_alerts(config: Config) -> None:
    lines = []
    for name in ("sshd.log", "sudo.log"):
        text = (SAMPLES / name).read_text(encoding="utf-8")
        lines += [row for row in text.splitlines() if row and not row.startswith("#")]
    assert len(lines) > 20
    fast = replay(config, lines, fast=True)
    assert fast == replay(config, lines, fast=False)
    assert fast[:2] == replay(config, lines, fast=False, prefilter=False)[:2]
    assert fast[0]  # the samples match something


# --- fused regex branches, on their own ---------------------------------------------------

PIECES = [
    "Failed password for ", "invalid user ", "root", "admin", " from ", "192.0.2.7",
    "2001:db8::1", "::ffff:10.0.0.1", " port 22", " ssh2", ": ", "[preauth]", "Invalid user ",
    "Connection closed by ", "Accepted password for ", "error: ", "maximum authentication "
    "attempts exceeded for ", "Disconnecting: Too many authentication failures", " for ",
    "Received disconnect from ", "11: Bye", "3: x: Auth fail", "pam_unix(sshd:auth): "
    "authentication failure; ", "rhost=", " user=", "ruser=", "Connection from ", " ",
]  # fmt: skip


def all_conditions(config: Config) -> list[Any]:
    found = []
    for rule in config.rules:
        found += [rule.match] if rule.match else []
        found += [step.match for step in rule.sequence.steps] if rule.sequence else []
        if rule.context:
            found += [cond for cond in (rule.context.learn, rule.context.forget) if cond]
    return found


@pytest.fixture(scope="module")
def both_ways(config: Config) -> list[tuple[Any, Any]]:
    """Each condition of the shipped packs compiled fused and one closure per branch."""
    pairs = []
    for condition in all_conditions(config):
        with fused(True):
            fast = predicates.compile_predicate(condition, config.lists)
        with fused(False):
            plain = predicates.compile_predicate(condition, config.lists)
        pairs.append((fast, plain))
    return pairs


TEMPLATES = [
    "Failed password for root from 192.0.2.7 port 22 ssh2",
    "Failed password for invalid user admin from 2001:db8::1 port 22 ssh2: RSA SHA256:x",
    "Failed publickey for invalid user git from ::ffff:10.0.0.1 port 2 ssh2",
    "Invalid user oracle from 192.0.2.9 port 4000",
    "error: maximum authentication attempts exceeded for root from 192.0.2.7 port 1 ssh2 [preauth]",
    "Disconnecting: Too many authentication failures for admin [preauth]",
    "Received disconnect from 192.0.2.8 port 3:11: Bye Bye [preauth]",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
    "rhost=192.0.2.7  user=root",
    "Accepted password for alice from 192.0.2.10 port 5 ssh2",
    "Connection closed by authenticating user root 192.0.2.7 port 6 [preauth]",
    "User bob from 192.0.2.11 not allowed because not listed in AllowUsers",
    "Connection from 192.0.2.12 port 7 on 10.0.0.2 port 22",
]


MESSAGES = st.builds(
    # a real message, often whole, else cut and spliced with fragments of others
    lambda template, pieces, cut: (
        template if cut > 80 else template[:cut] + "".join(pieces) + template[cut:]
    ),
    st.sampled_from(TEMPLATES),
    st.lists(st.sampled_from(PIECES), max_size=4),
    st.integers(0, 120),
)


@settings(max_examples=400, deadline=None)
@given(MESSAGES, st.sampled_from([None, 1, 2, "3"]), st.booleans())
def test_fused_branches_agree_with_one_closure_per_branch(
    both_ways: list[tuple[Any, Any]], message: str, users: Any, prior: bool
) -> None:
    fields: dict[str, Any] = {"program": "sshd", "message": message, "raw": message}
    if users is not None:
        fields["users"] = users
    for pair in both_ways:
        outcomes = []
        for compiled in pair:
            ext: dict[str, Any] | None = {"ip": "198.51.100.1"} if prior else {}
            if not compiled.extracts:
                ext = None
            outcomes.append((compiled.test(fields, ext), ext))
        assert outcomes[0] == outcomes[1], message


# --- one regex for anchored branches ------------------------------------------------------


@pytest.mark.parametrize(
    "patterns",
    [
        [r"Failed (?P<u>\S+)", r"^Invalid (?P<u>\S+)"],  # the first is not anchored
        [r"^a|b", r"^c"],  # anchored in one alternative only
        [r"^(?P<a>x)(?P=a)", r"^y"],  # a back-reference
        [r"^(x)\1", r"^y"],
        [r"^a", r"^b(?P<x>c)(?(x)d|e)"],  # a conditional group
    ],
)
def test_branches_that_cannot_share_one_regex_are_left_alone(patterns: list[str]) -> None:
    assert combine_anchored([re.compile(p) for p in patterns]) is None


def test_differing_flags_and_multiline_are_left_alone() -> None:
    one, two = re.compile(r"^a"), re.compile(r"^b", re.IGNORECASE)
    assert combine_anchored([one, two]) is None
    for flag in (re.MULTILINE, re.VERBOSE):
        assert combine_anchored([re.compile(r"^a", flag), re.compile("^b", flag)]) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab]()[P<>?x\\: ", max_size=14))
def test_one_regex_finds_what_the_first_matching_branch_finds(text: str) -> None:
    # group syntax inside character classes and escapes must survive the renaming
    patterns = [
        re.compile(r"^\((?P<x>[^\]](?P<y>b*))[]P<(?P<z>]"),
        re.compile(r"\A(?:a|(?P<x>\[P<x>\]))+?(?P<y>b)?"),
        re.compile(r"^(?P<x>.*?):(?P<z>\\)?"),
    ]
    combined = combine_anchored(patterns)
    assert combined is not None
    match, groups = combined
    found = match(text)
    first = next((p.search(text) for p in patterns if p.search(text)), None)
    assert (found is None) == (first is None)
    if found is not None and first is not None:
        names = groups[found.lastgroup or ""]
        assert {name: found.group(new) for new, name in names} == first.groupdict()


# --- the per-source and per-rule raw-line checks as one closure ---------------------------

WORDS = ["sshd", "su", "Failed ", "Invalid user ", "Connection ", "closed", "sudo", "cron", "x"]
MANY = frozenset((f"{word}{n}", False) for word in WORDS for n in range(3))  # > LOOP_LIMIT


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*WORDS, "0", "1", "2", " "]), max_size=12))
def test_inline_checks_agree_with_one_check_per_literal_set(pieces: list[str]) -> None:
    raw = "".join(pieces)
    conjunctions = [
        (frozenset({("sshd", False)}), MANY),
        (frozenset({("sshd", False)}), frozenset({("Failed ", False), ("closed", False)})),
        (frozenset({("sudo", False)}),),
        (MANY, frozenset({("x", False)})),
    ]
    for count in range(1, len(conjunctions) + 1):
        chosen = conjunctions[:count]
        inline = prefilter.build_check(chosen)
        plain = prefilter._either(
            [(literal_check(c[0]), literal_check(c[1]) if len(c) > 1 else None) for c in chosen]
        )
        assert inline(raw) == plain(raw), (count, raw)

"""The engine's shortcuts change nothing: the same matches, alerts and saved state as an
engine that runs every condition of every rule on every line.

The shortcuts under test: each rule (each sequence step, each context condition) is skipped
on a line without its own literals; steps with the same condition are tested once. The
reference engine has them all switched off. Input: the benchmark generator's auth.log (real
subprocess, several formats) and the hand-written pack samples, through the shipped packs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from logwatchd.alerts import Alert, jsonable
from logwatchd.config import load_text
from logwatchd.config.model import Config
from logwatchd.events import Line
from logwatchd.pipeline import Pipeline, ReplayClock, build_engine
from logwatchd.rules import Engine, Match
from logwatchd.rules.literals import always

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
            checks = len(rule.steps) if rule.is_sequence else 3 if rule.context else 1
            plans.append((rule, (always,) * checks))
        return tuple(plans)

    engine._plan = plan  # type: ignore[method-assign]
    for rule in engine.rules:
        rule.same_step = tuple(range(len(rule.steps)))
    return engine


def replay(config: Config, lines: list[str], *, fast: bool, prefilter: bool = True) -> Any:
    clock = ReplayClock()
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

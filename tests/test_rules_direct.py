"""The short path (rules of the common shape counted from a line's framing) changes nothing
but speed: which rules take it, and the same matches and alerts as the full path on the
benchmark generator's auth.log, fail2ban's sshd sample log and hostile lines."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from logwatchd.commands import replay
from logwatchd.config import load_text
from logwatchd.config.model import Config
from logwatchd.events import Line
from logwatchd.parsers import produced_fields
from logwatchd.pipeline import ReplayClock, build_engine
from logwatchd.rules.direct import direct_rule
from tests.replay_paths import all_paths_agree, pipeline

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "bench" / "gen_authlog.py"
FAIL2BAN_SSHD = Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd")
FAILED = r"'^Failed \S+ for (?:invalid user )?\S+ from (?P<ip>\S+) port \d+'"
SSHD = "{field: program, in: [sshd, sshd-session]}"
JOURNAL_GUARD = (
    "{any: [{field: _TRANSPORT, exists: false},"
    " {all: [{field: comm, in: [sshd]}, {field: uid, equals: 0}]}]}"
)

# Rules of the common shape, each with a twist, and one that is not (distinct) on the same
# lines: a line some other rule wants takes the full path for all of them.
RULES = f"""
rules:
  - id: bruteforce
    match: {{all: [{SSHD}, {{field: message, regex: {FAILED}}}]}}
    group_by: [ip]
    threshold: {{count: 5, window: 10m}}
  - id: per-user-and-address
    match:
      all:
        - {{field: host, equals: web1}}
        - {{field: program, equals: sshd}}
        - {{field: message, regex: '^Invalid user (?P<user>\\S*) from (?P<ip>\\S+)'}}
        - {JOURNAL_GUARD}
    group_by: [ip, user]
    threshold: {{count: 2, window: 1m}}
    cooldown: 5m
  - id: optional-group
    match:
      all:
        - {SSHD}
        - field: message
          regex: '^Connection closed by (?:(?:invalid|authenticating) user (?P<user>\\S+) )?\\S+'
    group_by: [user]
    threshold: {{count: 3, window: 10m}}
  - id: anywhere-in-the-message
    match: {{all: [{SSHD}, {{field: message, regex: 'port (?P<port>\\d)\\d* \\[preauth\\]'}}]}}
    group_by: [port]
    threshold: {{count: 2, window: 2m}}
  - id: distinct-users
    match:
      all:
        - {{field: program, in: [sshd]}}
        - {{field: message, regex: '^Invalid user (?P<user>\\S*) from (?P<ip>\\S+)'}}
    group_by: [ip]
    threshold: {{count: 3, window: 10m, distinct: user}}
  - id: once-a-minute
    match: {{all: [{SSHD}, {{field: message, regex: '^Accepted \\S+ for (?P<user>\\S+)'}}]}}
    group_by: [user]
    cooldown: 1m
"""
NOT_DIRECT = """
  - id: not-root
    match:
      all:
        - {field: program, in: [sshd]}
        - {not: {field: message, contains: root}}
        - {field: message, regex: '^Failed \\S+ for \\S+ from (?P<ip>\\S+)'}
    group_by: [ip]
    threshold: {count: 3, window: 10m}
"""


def config_of(rules: str, tmp: Path, parser: str = "syslog") -> Config:
    text = (
        "version: 1\ndaemon: {timezone: UTC, max_keys_per_rule: 300}\n"
        f"sources:\n  - {{id: syslog, type: stdin, parser: {parser}}}\n{rules}"
    )
    return load_text(text, str(tmp / "logwatchd.yaml"), base_dir=str(tmp))


def shapes(config: Config, parser: str = "syslog") -> dict[str, bool]:
    engine, _ = build_engine(config, ReplayClock(), host="h")
    produces = produced_fields(parser, config.parsers).has
    return {rule.id: direct_rule(rule, produces) is not None for rule in engine.rules}


def test_rules_of_the_common_shape_take_the_short_path_and_others_do_not(tmp_path: Path) -> None:
    found = shapes(config_of(RULES + NOT_DIRECT, tmp_path))
    assert found == {
        "bruteforce": True, "per-user-and-address": True, "optional-group": True,
        "anywhere-in-the-message": True, "distinct-users": True, "once-a-minute": True,
        "not-root": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    "condition",
    [
        f"{{all: [{SSHD}, {{not: {{field: message, regex: {FAILED}}}}}]}}",
        f"{{all: [{SSHD}, {{field: message, regex: {FAILED}, icase: true}}]}}",
        f"{{all: [{SSHD}, {{field: raw, regex: {FAILED}}}]}}",
        f"{{all: [{{field: pid, equals: 1}}, {{field: message, regex: {FAILED}}}]}}",
        f"{{all: [{{field: program, in: [sshd, 22]}}, {{field: message, regex: {FAILED}}}]}}",
        f"{{any: [{SSHD}, {{field: message, regex: {FAILED}}}]}}",
        f"{{all: [{{field: message, regex: {FAILED}}}, {{field: message, contains: port}}]}}",
        f"{{all: [{{field: message, regex: {FAILED}}}, {{field: message, regex: 'ssh2'}}]}}",
        # a group named like a field the parser gives would stand for it
        "{field: message, regex: '^Failed \\S+ for (?P<host>\\S+) from (?P<ip>\\S+)'}",
    ],
)
def test_a_condition_the_short_path_cannot_prove_keeps_the_rule_on_the_full_path(
    tmp_path: Path, condition: str
) -> None:
    rule = f"rules:\n  - id: r\n    match: {condition}\n    group_by: [ip]\n"
    assert shapes(config_of(rule + "    threshold: {count: 2, window: 1m}\n", tmp_path)) == {
        "r": False
    }


def test_rules_that_fire_on_every_match_or_key_on_a_parser_field_stay_on_the_full_path(
    tmp_path: Path,
) -> None:
    match = f"{{all: [{SSHD}, {{field: message, regex: {FAILED}}}]}}"
    rules = (
        f"rules:\n  - id: each\n    match: {match}\n    group_by: [ip]\n"
        f"  - id: by-host\n    match: {match}\n    group_by: [host]\n"
        "    threshold: {count: 2, window: 1m}\n"
        f"  - id: distinct-host\n    match: {match}\n    group_by: [ip]\n"
        "    threshold: {count: 2, window: 1m, distinct: host}\n"
    )
    found = shapes(config_of(rules, tmp_path))
    assert found == {"each": False, "by-host": False, "distinct-host": False}


def generated(tmp: Path, form: str, lines: int = 12000) -> list[str]:
    out = tmp / f"gen-{form}.log"
    subprocess.run(
        [sys.executable, str(GENERATOR), str(out), "--lines", str(lines), "--format", form,
         "--sources", "60"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out.read_text(encoding="utf-8").splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["rfc3164", "mix"])
def test_the_generated_auth_log_gives_the_same_matches_and_alerts_on_the_short_path(
    tmp_path: Path, form: str
) -> None:
    for rules in (RULES, RULES + NOT_DIRECT):
        matches, alerts = all_paths_agree(
            config_of(rules, tmp_path), "syslog", generated(tmp_path, form), tmp_path
        )
        fired = {alert.split('"rule": "')[1].split('"')[0] for alert in alerts}
        assert fired >= {
            "bruteforce", "per-user-and-address", "anywhere-in-the-message", "distinct-users",
            "once-a-minute",
        }  # fmt: skip
        assert len(matches) > 1000


HOSTILE = [
    "Nov 26 10:00:01 web1 sshd[7]: Failed password for root from 203.0.113.9 port 4000 ssh2",
    "Nov 26 10:00:01 web1 sshd[7]: Failed password for root from 203.0.113.9 port 4000 ssh2",
    "Nov 26 10:00:02 web1 sshd[7]: Failed password for j\u00fcrgen from 203.0.113.9 port 4 ssh2",
    "Nov 26 10:00:03 web1 sshd[7]: Failed password for root\r from 203.0.113.9 port 4 ssh2",
    "Nov 26 10:00:04 web1 sshd[7]: message repeated 4 times: [ Failed password for root from "
    "203.0.113.9 port 4000 ssh2]",
    "2026-11-26T10:00:05+00:00 web1 sshd[7]: Failed password for root from 203.0.113.9 port 4",
    "Feb 30 10:00:06 web1 sshd[7]: Failed password for root from 203.0.113.9 port 4000 ssh2",
    "Nov 26 10:00:07 sshd[7]: Failed password for root from 203.0.113.9 port 4000 ssh2",
    "Nov 26 10:00:08 web1 [sshd]: Failed password for root from 203.0.113.9 port 4000 ssh2",
    "Nov 26 10:00:09 web1 sshd: Invalid user  from 198.51.100.1 port 22",
    "Nov 26 10:00:09 web1 sshd: Invalid user  from 198.51.100.1 port 22",
    "Nov 26 10:00:10 web2 sshd: Invalid user  from 198.51.100.1 port 22",
    "Nov 26 10:00:11 web1 sshd[9]: Connection closed by 192.0.2.7 port 22 [preauth]",
    "Nov 26 10:00:12 web1 sshd[9]: Connection closed by invalid user a 192.0.2.7 port 22 [preauth]",
    "Nov 26 10:00:13 web1 sshd[9]: Failed password for root from 203.0.113.10 port 1 ssh2",
    "Nov 26 09:59:00 web1 sshd[9]: Failed password for root from 203.0.113.10 port 1 ssh2",
]


def test_hostile_lines_give_the_same_matches_and_alerts_on_the_short_path(tmp_path: Path) -> None:
    for rules in (RULES, RULES + NOT_DIRECT):
        matches, alerts = all_paths_agree(
            config_of(rules, tmp_path), "syslog", HOSTILE * 4, tmp_path
        )
        assert matches and alerts


@pytest.mark.skipif(not FAIL2BAN_SSHD.is_file(), reason="fail2ban is not installed")
def test_fail2bans_sshd_samples_give_the_same_matches_and_alerts_on_the_short_path(
    tmp_path: Path,
) -> None:
    text = FAIL2BAN_SSHD.read_text(encoding="utf-8", errors="replace")
    texts = [line for line in text.splitlines() if line and not line.startswith("#")]
    matches, _ = all_paths_agree(config_of(RULES, tmp_path), "syslog", texts * 3, tmp_path)
    assert matches


def test_the_short_path_parses_only_the_lines_whose_alert_fires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_of(RULES, tmp_path)
    path = tmp_path / "auth.log"
    path.write_text("".join(line + "\n" for line in generated(tmp_path, "rfc3164", 4000)))
    found = pipeline(config)
    parser = found.parsers["syslog"]
    parsed: list[Line] = []
    parse = parser.parse
    monkeypatch.setattr(parser, "parse", lambda line: parsed.append(line) or parse(line))
    out = io.StringIO()
    replay.replay_file(
        str(path), config.source("syslog"), found, replay.Output(True, out), None,
        want_matches=False, limit=65536,
    )  # fmt: skip
    alerts = out.getvalue().count('"kind": "alert"')
    matches = sum(found.engine.match_counts().values())
    assert alerts > 10 and matches > 2 * alerts
    assert len(parsed) <= alerts  # every other matching line was counted from its framing

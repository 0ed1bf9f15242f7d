"""The shipped rule packs (config/rules.d) on hand-written sample logs (tests/packs/).

All packs are loaded together by the real loader (so their ids and parsers coexist), and
every sample line goes through what the daemon does: the engine's scan (natively when the
hyperscan wheel is there), the parser, the rule engine. Each sample line is preceded by
``#> RULE field=value ...`` for every rule that must match it (with those fields), or
``#> none``; ``#! parser NAME`` switches the parser. A rule matching a line it is not listed
for fails the test, so the samples also catch one pack's rule firing on another pack's lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from logwatchd.clock import ManualClock
from logwatchd.config import load_text
from logwatchd.config.model import Config
from logwatchd.events import Event, Line
from logwatchd.parsers import build_parser, produced_fields
from logwatchd.parsers.base import Parser
from logwatchd.parsers.journald import record_line
from logwatchd.rules import Engine, Match

ROOT = Path(__file__).resolve().parent.parent
PACKS = ROOT / "config" / "rules.d"
SAMPLES = Path(__file__).resolve().parent / "packs"
READ_TIME = 1_795_687_200.0  # 2026-11-26T10:00:00Z
PARSERS = ("syslog", "rfc5424", "journald", "nginx_error", "nginx_combined",
           "apache_error", "apache_combined", "dovecot_log", "app_events")  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    base = tmp_path_factory.mktemp("packs")
    text = "version: 1\ninclude: [" + ", ".join(str(p) for p in sorted(PACKS.glob("*.yaml")))
    text += "]\nsources:\n" + "".join(
        f"  - {{id: {name}, type: stdin, parser: {name}}}\n" for name in PARSERS
    )
    return load_text(text, str(base / "logwatchd.yaml"), base_dir=str(base))


def engine_for(config: Config, parsers: dict[str, Parser]) -> Engine:
    return Engine(
        config.rules, config.lists, host="test", max_keys_per_rule=1000,
        clock=ManualClock(READ_TIME),
        verbatim_fields={name: p.verbatim_fields for name, p in parsers.items()},
        produces={name: produced_fields(name, config.parsers).has for name in parsers},
    )  # fmt: skip


@pytest.fixture(scope="module")
def parsers(config: Config) -> dict[str, Parser]:
    return {name: build_parser(name, config.parsers, timezone="Europe/Berlin") for name in PARSERS}


# --- the annotated samples ----------------------------------------------------------------


@dataclass
class Expected:
    rule: str
    fields: dict[str, str]


@dataclass
class Sample:
    where: str
    parser: str
    text: str
    expected: list[Expected]


def read_samples(path: Path) -> Iterator[Sample]:
    parser = "syslog"
    expected: list[Expected] | None = None
    for lineno, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text.startswith("#! parser "):
            parser = text.split()[2]
        elif text.startswith("#> "):
            expected = expected or []
            words = text[3:].split()
            if words != ["none"]:
                fields = dict(word.split("=", 1) for word in words[1:])
                expected.append(Expected(words[0], fields))
        elif text.startswith("#") or not text.strip():
            continue
        else:
            assert expected is not None, f"{path.name}:{lineno}: sample line without #> line"
            yield Sample(f"{path.name}:{lineno}", parser, text, expected)
            expected = None


def run_line(engine: Engine, parsers: dict[str, Parser], sample: Sample) -> list[Match] | None:
    """The matches the daemon would record for this line; None if the scan skipped it."""
    line = Line(sample.parser, sample.text, READ_TIME, sample.where, lineno=1)
    if sample.parser == "journald":
        converted = record_line(line)
        assert converted is not None, f"{sample.where}: not a journal JSON record"
        line = converted
    hits = engine.scan(sample.parser).line(line.raw)
    if hits is None:
        return None
    fields = parsers[sample.parser].parse(line)
    assert fields is not None, f"{sample.where}: the {sample.parser} parser rejected it"
    stamp = fields.get("timestamp")
    event = Event(line, fields, stamp.timestamp() if stamp else READ_TIME)
    matches: list[Match] = []
    engine.process(event, matches, hits)
    return matches


SAMPLE_FILES = sorted(SAMPLES.glob("*.log"))


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_pack_rules_match_exactly_the_annotated_lines(
    path: Path, config: Config, parsers: dict[str, Parser]
) -> None:
    engine = engine_for(config, parsers)
    problems = []
    count = 0
    for sample in read_samples(path):
        count += 1
        matches = run_line(engine, parsers, sample) or []
        got = {match.rule: match.fields for match in matches}
        want = {item.rule for item in sample.expected}
        if set(got) != want:
            problems.append(f"{sample.where}: want {sorted(want)}, got {sorted(got)}")
            continue
        for item in sample.expected:
            for name, value in item.fields.items():
                if str(got[item.rule].get(name)) != value:
                    problems.append(
                        f"{sample.where}: {item.rule}.{name} = {got[item.rule].get(name)!r}, "
                        f"want {value!r}"
                    )
    assert count >= 3
    assert not problems, "\n".join(problems)


# --- thresholds, distinct counts and sequences as shipped ----------------------------------


def feed(engine: Engine, parsers: dict[str, Parser], parser: str, lines: list[str]) -> list[Any]:
    alerts = []
    for n, text in enumerate(lines, 1):
        sample = Sample(f"fed:{n}", parser, text, [])
        line = Line(parser, text, READ_TIME, f"fed:{n}", lineno=n)
        hits = engine.scan(parser).line(text)
        if hits is None:
            continue
        fields = parsers[parser].parse(line)
        assert fields is not None, sample.where
        event = Event(line, fields, fields["timestamp"].timestamp())
        alerts.extend(engine.process(event, None, hits))
    return alerts


def test_sshd_bruteforce_fires_on_the_fifth_failure_within_ten_minutes(
    config: Config, parsers: dict[str, Parser]
) -> None:
    engine = engine_for(config, parsers)
    lines = [
        f"Nov 26 10:0{n}:00 web1 sshd[{100 + n}]: Failed password for root from 203.0.113.9 "
        f"port {4000 + n} ssh2"
        for n in range(5)
    ]
    alerts = [a for a in feed(engine, parsers, "syslog", lines) if a.rule == "sshd-auth-failure"]
    assert len(alerts) == 1
    assert alerts[0].key == {"ip": "203.0.113.9"}
    assert alerts[0].count == 5


def test_sshd_failures_spread_over_more_than_ten_minutes_do_not_fire(
    config: Config, parsers: dict[str, Parser]
) -> None:
    engine = engine_for(config, parsers)
    lines = [
        f"Nov 26 1{n}:00:00 web1 sshd[{100 + n}]: Failed password for root from 203.0.113.9 "
        f"port {4000 + n} ssh2"
        for n in range(6)
    ]
    alerts = feed(engine, parsers, "syslog", lines)
    assert [a for a in alerts if a.rule == "sshd-auth-failure"] == []


def failed_sudo(minute: int, user: str) -> list[str]:
    """What one sudo invocation with three wrong passwords writes (sudo 1.9, pam_unix)."""
    stamp = f"Nov 26 10:{minute:02d}"
    return [
        f"{stamp}:01 web1 sudo: pam_unix(sudo:auth): authentication failure; logname={user} "
        f"uid=1000 euid=0 tty=/dev/pts/0 ruser={user} rhost=  user={user}",
        f"{stamp}:09 web1 sudo: PAM 2 more authentication failures; logname={user} uid=1000 "
        f"euid=0 tty=/dev/pts/0 ruser={user} rhost=  user={user}",
        f"{stamp}:09 web1 sudo:    {user} : 3 incorrect password attempts ; TTY=pts/0 ; "
        f"PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/id",
    ]


def test_sudo_auth_failure_counts_failed_invocations_not_their_log_lines(
    config: Config, parsers: dict[str, Parser]
) -> None:
    engine = engine_for(config, parsers)
    two = failed_sudo(0, "alice") + failed_sudo(1, "alice")
    assert [a for a in feed(engine, parsers, "syslog", two) if a.rule == "sudo-auth-failure"] == []
    alerts = feed(engine, parsers, "syslog", failed_sudo(2, "alice"))
    fired = [a for a in alerts if a.rule == "sudo-auth-failure"]
    assert [(a.key, a.count) for a in fired] == [({"user": "alice"}, 3)]


def test_scanner_rule_counts_distinct_missing_paths_per_client(
    config: Config, parsers: dict[str, Parser]
) -> None:
    def request(client: str, path: str, second: int) -> str:
        return (
            f'{client} - - [26/Nov/2026:10:00:{second:02d} +0100] "GET {path} HTTP/1.1" 404 '
            f'153 "-" "scanner"'
        )

    engine = engine_for(config, parsers)
    same_path = [request("198.51.100.1", "/favicon.ico", n) for n in range(30)]
    assert feed(engine, parsers, "nginx_combined", same_path) == []
    probing = [request("203.0.113.5", f"/probe{n}.php", n) for n in range(20)]
    alerts = feed(engine, parsers, "nginx_combined", probing)
    assert [(a.rule, a.key) for a in alerts] == [("web-scanner", {"ip": "203.0.113.5"})]


def test_login_after_three_failures_fires_but_not_after_one(
    config: Config, parsers: dict[str, Parser]
) -> None:
    engine = engine_for(config, parsers)
    failed = "Nov 26 10:00:0{} web1 sshd[1]: Failed password for root from {} port 1 ssh2"
    accepted = "Nov 26 10:00:30 web1 sshd[2]: Accepted password for root from {} port 2 ssh2"
    typo = [failed.format(0, "198.51.100.1"), accepted.format("198.51.100.1")]
    assert feed(engine, parsers, "syslog", typo) == []  # one mistyped password is no alert
    brute = [failed.format(n, "203.0.113.9") for n in range(3)] + [accepted.format("203.0.113.9")]
    alerts = feed(engine, parsers, "syslog", brute)
    fired = [a for a in alerts if a.rule == "sshd-login-after-failures"]
    assert len(fired) == 1
    assert fired[0].severity == "high"
    assert fired[0].key == {"ip": "203.0.113.9"}


# --- the pack contract ----------------------------------------------------------------------

PACK_FILES = sorted(PACKS.glob("*.yaml"))


@pytest.mark.parametrize("path", PACK_FILES, ids=[p.stem for p in PACK_FILES])
def test_pack_names_no_sources_and_no_handlers(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert set(document) <= {"rules", "parsers", "lists"}
    for rule in document["rules"]:
        assert "sources" not in rule and "handlers" not in rule, rule["id"]


def test_fail2ban_rules_extract_ip(config: Config) -> None:
    tagged = [rule for rule in config.rules if any(t.startswith("fail2ban:") for t in rule.tags)]
    assert len(tagged) >= 7
    for rule in tagged:
        assert re.search(r"\(\?P<ip>", repr(rule.match)), rule.id
        assert rule.group_by == ("ip",), rule.id


@pytest.mark.parametrize("parser", ["syslog", "journald", "nginx_error", "apache_error"])
def test_no_pack_rule_needs_every_line(
    parser: str, config: Config, parsers: dict[str, Parser]
) -> None:
    """With a parser whose message is verbatim, no pack rule makes every line be parsed."""
    assert engine_for(config, parsers).rules_on_every_line(parser) == []


def test_packs_load_with_the_example_config_and_use_its_default_handlers() -> None:
    main = (ROOT / "config" / "logwatchd.yaml").read_text()
    assert "# include: [rules.d/*.yaml]" in main
    text = main.replace("# include: [rules.d/*.yaml]", "include: [rules.d/*.yaml]")
    config = load_text(text, str(ROOT / "config" / "logwatchd.yaml"), base_dir=str(ROOT / "config"))
    pack_rules = [rule for rule in config.rules if rule.mark.file.startswith(str(PACKS))]
    assert len(pack_rules) >= 20
    assert all(rule.handlers == config.default_handlers for rule in pack_rules)

"""rsyslog's "message repeated N times: [ ... ]": the inner message is the event, N times.

A brute force of six tries that rsyslog logs as one failure and "message repeated 5 times"
must count six, as if the lines were there, for thresholds, sequences and match records.
fail2ban's own sample logs hold no folded line (fail2ban 1.0.2), so its sshd samples are
folded here: each must give exactly N times what the plain line gives.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from logwatchd.config import load_text
from logwatchd.config.model import Config
from logwatchd.events import Line
from logwatchd.parsers import build_parser
from logwatchd.parsers.repeated import MAX_REPEATED
from logwatchd.pipeline import Pipeline, ReplayClock, build_engine
from logwatchd.rules import Match

PACKS = Path(__file__).resolve().parent.parent / "config" / "rules.d"
READ_TIME = datetime(2026, 11, 26, 12, 0, tzinfo=UTC).timestamp()
FAILED = "Failed password for root from 203.0.113.9 port 4000 ssh2"


def parse(parser: str, raw: str) -> dict[str, Any] | None:
    return build_parser(parser, {}, timezone="UTC").parse(Line("s", raw, READ_TIME, "t:1"))


def test_syslog_unfolds_the_message_and_says_how_many_times() -> None:
    fields = parse("syslog", f"Nov 26 10:00:01 web1 sshd[7]: message repeated 5 times: [ {FAILED}]")
    assert fields is not None
    assert (fields["message"], fields["repeated"]) == (FAILED, 5)
    assert (fields["program"], fields["pid"], fields["host"]) == ("sshd", 7, "web1")


def test_rfc5424_unfolds_too() -> None:
    raw = f"<38>1 2026-11-26T10:00:01Z web1 sshd 7 - - message repeated 2 times: [{FAILED}]"
    fields = parse("rfc5424", raw)
    assert fields is not None
    assert (fields["message"], fields["repeated"]) == (FAILED, 2)


@pytest.mark.parametrize(
    "message",
    [
        "message repeated 5 times: [ unterminated",
        "message repeated five times: [ x]",
        "message repeated 0 times: [ x]",
        "a message repeated 5 times: [ x]",
    ],
)
def test_anything_else_is_left_as_it_is(message: str) -> None:
    fields = parse("syslog", f"Nov 26 10:00:01 web1 sshd[7]: {message}")
    assert fields is not None
    assert fields["message"] == message and "repeated" not in fields


def test_a_line_counts_at_most_max_repeated_times(tmp_path: Path) -> None:
    fields = parse("syslog", "Nov 26 10:00:01 w sshd[7]: message repeated 999999999 times: [ x]")
    assert fields is not None and fields["repeated"] == MAX_REPEATED
    pipeline = packs_pipeline(tmp_path)
    matches: list[Match] = []
    raw = f"Nov 26 10:00:01 w sshd[7]: message repeated 999999999 times: [ {FAILED}]"
    pipeline.handle(Line("auth", raw, READ_TIME, "auth.log:1", None, 1), matches)
    assert Counter(m.rule for m in matches)["sshd-auth-failure"] == MAX_REPEATED


# --- through the shipped packs ------------------------------------------------------------


def packs_config(tmp_path: Path) -> Config:
    packs = ", ".join(str(p) for p in sorted(PACKS.glob("*.yaml")))
    text = (
        f"version: 1\ndaemon: {{timezone: UTC}}\ninclude: [{packs}]\n"
        "sources:\n  - {id: auth, type: stdin, parser: syslog}\n"
    )
    return load_text(text, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))


def packs_pipeline(tmp_path: Path) -> Pipeline:
    clock = ReplayClock()
    engine, parsers = build_engine(packs_config(tmp_path), clock, host="h")
    return Pipeline(engine, parsers, replay=clock)


def replay(pipeline: Pipeline, lines: list[str]) -> tuple[list[Match], list[Any]]:
    matches: list[Match] = []
    alerts = []
    for number, raw in enumerate(lines, 1):
        line = Line("auth", raw, READ_TIME, f"auth.log:{number}", "auth.log", number)
        alerts += pipeline.handle(line, matches)
    return matches, alerts


def test_six_tries_folded_into_two_lines_count_six(tmp_path: Path) -> None:
    lines = [
        f"Nov 26 10:00:01 web1 sshd[7]: {FAILED}",
        f"Nov 26 10:00:09 web1 sshd[7]: message repeated 5 times: [ {FAILED}]",
    ]
    matches, alerts = replay(packs_pipeline(tmp_path), lines)
    assert Counter(m.rule for m in matches)["sshd-auth-failure"] == 6
    fired = [a for a in alerts if a.rule == "sshd-auth-failure"]
    assert len(fired) == 1  # on the fifth; the sixth falls in the cooldown
    assert fired[0].count == 5 and fired[0].key == {"ip": "203.0.113.9"}
    assert fired[0].events == [lines[0]] + [lines[1]] * 4  # the samples show the folded line


def test_folded_failures_advance_a_sequence_as_the_lines_would(tmp_path: Path) -> None:
    lines = [
        f"Nov 26 10:00:01 web1 sshd[7]: {FAILED}",
        f"Nov 26 10:00:05 web1 sshd[7]: message repeated 2 times: [ {FAILED}]",
        "Nov 26 10:00:09 web1 sshd[8]: Accepted password for root from 203.0.113.9 port 4001 ssh2",
    ]
    _matches, alerts = replay(packs_pipeline(tmp_path), lines)
    assert [a.rule for a in alerts if a.rule == "sshd-login-after-failures"] == [
        "sshd-login-after-failures"
    ]
    # two alerts of one line differ in id: each repetition has its own origin
    folded = [
        "Nov 26 10:00:01 web1 sshd[7]: message repeated 12 times: [ "
        f"{FAILED.replace('4000', str(port))}]"
        for port in (1, 2)
    ]
    ids = [a.id for a in replay(packs_pipeline(tmp_path), folded)[1]]
    assert len(ids) == len(set(ids))


F2B_SAMPLES = Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd")


@pytest.mark.skipif(not F2B_SAMPLES.is_file(), reason="fail2ban is not installed")
def test_folded_fail2ban_sshd_samples_count_three_times_what_the_line_does(tmp_path: Path) -> None:
    clock = ReplayClock()
    engine, parsers = build_engine(packs_config(tmp_path), clock, host="h")
    pipeline = Pipeline(engine, parsers, replay=clock)
    compared = 0
    lines = F2B_SAMPLES.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, text in enumerate(lines):
        fields = None if text.startswith("#") else parsers["auth"].parse(Line("auth", text, 0, ""))
        if fields is None or fields.get("program") not in ("sshd", "sshd-session"):
            continue
        # each line on a connection of its own (sshd's pid), so lines do not feed each other
        message, pid = fields["message"], fields.get("pid")
        header = text[: len(text) - len(message)]
        if pid is not None:
            header = header.replace(f"[{pid}]", f"[{900000 + 2 * number}]", 1)
        plain = found(pipeline, header + message)
        if plain:
            header = header.replace(f"[{900000 + 2 * number}]", f"[{900001 + 2 * number}]", 1)
            folded = found(pipeline, header + f"message repeated 3 times: [ {message}]")
            assert folded == Counter({key: 3 * n for key, n in plain.items()}), text
            compared += 1
    assert compared > 50


def found(pipeline: Pipeline, raw: str) -> Counter[tuple[str, str]]:
    """(rule, ip) of each match recorded for the line."""
    matches: list[Match] = []
    pipeline.handle(Line("auth", raw, READ_TIME, "x:1"), matches)
    return Counter((m.rule, str(m.fields.get("ip"))) for m in matches)

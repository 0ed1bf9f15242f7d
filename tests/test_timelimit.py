"""No line can stall the pipeline: a regex that backtracks for minutes is cut off per line.

The catastrophic case: ``(a+)+$`` on 34 ``a`` and a ``!`` takes minutes in Python's ``re``,
holding the GIL. The limit aborts it from a signal handler (``re`` checks for signals while it
backtracks), counts the line, logs it once per rule and goes on with the next line.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logwatchd.clock import ManualClock
from logwatchd.config import load_text
from logwatchd.events import Line
from logwatchd.pipeline import Pipeline, build_engine
from logwatchd.timelimit import Interrupted, LineTimeLimit, LineTimeout
from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config

EVIL = "(a+)+$"
BAD_LINE = "a" * 34 + "!"  # minutes in `re` without the limit


@pytest.fixture
def limit() -> Iterator[LineTimeLimit]:
    found = LineTimeLimit(0.2)
    assert found.install()
    yield found
    signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    signal.signal(signal.SIGVTALRM, signal.SIG_IGN)


def test_a_catastrophic_match_is_cut_off_after_the_limit(limit: LineTimeLimit) -> None:
    started = time.monotonic()
    limit.lines += 1
    with limit, pytest.raises(LineTimeout):
        re.search(EVIL, BAD_LINE)
    assert time.monotonic() - started < 5
    assert not limit.active


def test_lines_that_keep_moving_are_never_cut_off(limit: LineTimeLimit) -> None:
    # two seconds of CPU, far past the limit, but no single line takes long
    deadline = time.process_time() + 2 * limit.seconds
    with limit:
        while time.process_time() < deadline:
            limit.lines += 1
            re.search(EVIL, "a" * 12 + "!")


def test_outside_the_main_thread_the_limit_is_inert() -> None:
    found: list[bool] = []
    worker = threading.Thread(target=lambda: found.append(LineTimeLimit().install()))
    worker.start()
    worker.join()
    assert found == [False]


def test_interrupt_aborts_only_a_line_in_evaluation(limit: LineTimeLimit) -> None:
    limit.interrupt()  # nothing in evaluation: nothing happens
    with pytest.raises(Interrupted), limit:
        limit.interrupt()


# --- the pipeline: count, log once per rule, go on ---------------------------------------

CONFIG = f"""
version: 1
parsers:
  slowparse: {{regex: '^(?P<word>(x+)+y)'}}
sources:
  - {{id: s, type: stdin, parser: none}}
  - {{id: p, type: stdin, parser: slowparse}}
rules:
  - id: bad
    sources: [s]
    match: {{field: message, regex: '{EVIL}'}}
  - id: good
    match: {{field: message, contains: alert}}
"""


def pipeline(tmp_path: Path, limit: LineTimeLimit) -> Pipeline:
    config = load_text(CONFIG, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))
    engine, parsers = build_engine(config, ManualClock(1000.0), host="h")
    return Pipeline(engine, parsers, limit=limit)


def line(source: str, raw: str, number: int = 1) -> Line:
    return Line(source, raw, 1000.0, f"x:{number}", None, number)


def test_a_slow_line_is_skipped_and_counted_and_the_next_one_is_handled(
    tmp_path: Path, limit: LineTimeLimit, caplog: Any
) -> None:
    lines = [line("s", BAD_LINE, 1), line("s", "aaa alert", 2), line("s", BAD_LINE, 3)]
    lines += [line("p", "x" * 30 + "z alert", 4), line("p", "xxy alert", 5)]
    found = pipeline(tmp_path, limit)
    alerts = found.handle_batch(lines)
    assert [(a.rule, a.raw) for a in alerts] == [("good", "aaa alert"), ("good", "xxy alert")]
    stats = found.stats
    assert stats.timed_out == 3
    assert dict(stats.slow) == {"rule bad": 2, "parser slowparse": 1}


def test_rules_before_the_slow_one_keep_what_they_made_of_the_line(
    tmp_path: Path, limit: LineTimeLimit
) -> None:
    text = CONFIG.replace(
        "  - id: bad", "  - id: first\n    match: {field: message, contains: a}\n  - id: bad"
    )
    config = load_text(text, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))
    engine, parsers = build_engine(config, ManualClock(1000.0), host="h")
    alerts = Pipeline(engine, parsers, limit=limit).handle(line("s", BAD_LINE))
    assert [a.rule for a in alerts] == ["first"]


# --- the daemon: a real subprocess -------------------------------------------------------


def daemon_config(tmp_path: Path, line_timeout: str) -> Path:
    config = {
        "version": 1,
        "daemon": {
            "state_dir": str(tmp_path / "state"),
            "commit_interval": "100ms",
            "line_timeout": line_timeout,
            "shutdown_timeout": "2s",
        },
        "sources": [
            {"id": name, "type": "file", "paths": [str(tmp_path / f"{name}.log")], "parser": "none"}
            for name in ("slow", "other")
        ],
        "rules": [
            {"id": "bad", "sources": ["slow"], "match": {"field": "message", "regex": EVIL}},
            {"id": "breach", "sources": ["other"], "match": {"field": "message", "contains": "b"}},
        ],
        "defaults": {"handlers": ["sink"]},
        "handlers": {"sink": {"type": "file", "path": str(tmp_path / "alerts.jsonl")}},
    }
    return write_config(tmp_path / "c.yaml", config)


def append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text + "\n")


def rules_alerted(tmp_path: Path) -> list[str]:
    return [alert["rule"] for alert in read_jsonl(tmp_path / "alerts.jsonl")]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_daemon_skips_a_catastrophic_line_and_serves_its_other_source(tmp_path: Path) -> None:
    for name in ("slow.log", "other.log"):
        (tmp_path / name).touch()
    with DaemonProcess(daemon_config(tmp_path, "300ms")) as daemon:
        daemon.wait_ready()
        append(tmp_path / "slow.log", BAD_LINE)
        append(tmp_path / "slow.log", BAD_LINE)
        append(tmp_path / "other.log", "a breach")
        wait_for(lambda: "breach" in rules_alerted(tmp_path), timeout=20)
        append(tmp_path / "slow.log", "aaaa")  # the offset moved on past the slow lines
        wait_for(lambda: "bad" in rules_alerted(tmp_path), timeout=20)
        assert daemon.terminate() == 0
        events = daemon.log_events()
    skipped = [e for e in events if e.get("event", "").startswith("line skipped")]
    assert len(skipped) == 1  # logged once for the rule, however many lines
    assert skipped[0]["where"] == "rule bad" and skipped[0]["source"] == "slow"


@pytest.mark.slow
def test_sigterm_stops_the_daemon_while_a_line_is_in_flight(tmp_path: Path) -> None:
    for name in ("slow.log", "other.log"):
        (tmp_path / name).touch()
    with DaemonProcess(daemon_config(tmp_path, "10m")) as daemon:
        daemon.wait_ready()
        append(tmp_path / "slow.log", "aaaa")  # an alert: committed with the offset after it
        wait_for(lambda: "bad" in rules_alerted(tmp_path), timeout=20)
        before = cpu_seconds(daemon.proc.pid)
        append(tmp_path / "slow.log", BAD_LINE)
        # the match is under way once the daemon burns CPU (idle, it uses next to none)
        wait_for(lambda: cpu_seconds(daemon.proc.pid) - before > 1.0, timeout=30)
        started = time.monotonic()
        assert daemon.terminate(timeout=10) == 0
        assert time.monotonic() - started < 2 + 1  # shutdown_timeout, and a margin
    # the next start reads the line again (it was never committed), skips it, goes on
    with DaemonProcess(daemon_config(tmp_path, "300ms")) as daemon:
        daemon.wait_ready()
        append(tmp_path / "other.log", "a breach")
        wait_for(lambda: "breach" in rules_alerted(tmp_path), timeout=20)
        assert daemon.terminate() == 0
        assert any(e.get("where") == "rule bad" for e in daemon.log_events())


def test_check_warns_about_nested_quantifiers(tmp_path: Path) -> None:
    from logwatchd.commands.check import warnings

    config = load_text(CONFIG, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))
    found = [w for w in warnings(config) if "nests quantifiers" in w]
    assert len(found) == 2
    assert "rules.bad" in found[1] and "c.yaml:" in found[1]
    assert "parsers.slowparse" in found[0]


@pytest.mark.parametrize(
    ("pattern", "nested"),
    [(EVIL, True), (r"(\w{1,3})*", True), (r"(?:x\d+){2,20}", True), (r"(?:a|b)+", False),
     (r"(?: (?:port \d+|on \S+)){0,3}", False), (r"(?:(?! from ).)*$", False)],
)  # fmt: skip
def test_nested_quantifiers(pattern: str, nested: bool) -> None:
    from logwatchd.rules.syntax import nests_quantifiers

    assert nests_quantifiers(re.compile(pattern)) is nested


def test_a_slow_line_on_the_short_path_is_skipped_and_counted_and_the_next_one_counts(
    tmp_path: Path, limit: LineTimeLimit
) -> None:
    # a threshold rule of the common shape (rules/direct.py) on a syslog source
    text = f"""
version: 1
daemon: {{timezone: UTC}}
sources: [{{id: s, type: stdin, parser: syslog}}]
rules:
  - id: slow
    match: {{all: [{{field: program, equals: app}}, {{field: message, regex: '(?P<k>{EVIL})'}}]}}
    group_by: [k]
    threshold: {{count: 2, window: 1m}}
"""
    config = load_text(text, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))
    engine, parsers = build_engine(config, ManualClock(1000.0), host="h")
    found = Pipeline(engine, parsers, limit=limit)
    stamp, read = "Nov 26 10:00:0{} web1 app[1]: ", 1_795_687_200.0  # read on 26 Nov 2026
    lines = [
        Line("s", stamp.format(n) + (BAD_LINE if n < 3 else "aaaa"), read, f"x:{n}", None, n)
        for n in (1, 2, 3, 4)
    ]
    assert engine.direct_of("s")(-1) is not None  # the rule takes the short path
    alerts = found.handle_batch(lines)
    assert [(a.rule, a.key, a.count) for a in alerts] == [("slow", {"k": "aaaa"}, 2)]
    assert found.stats.timed_out == 2
    assert dict(found.stats.slow) == {"rule slow": 2}

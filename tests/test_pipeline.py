"""The pipeline's batch path: a batch scanned at once, counted per source, one bad line alone."""

from __future__ import annotations

from pathlib import Path

from logwatchd.clock import ManualClock
from logwatchd.config import load_text
from logwatchd.events import Line
from logwatchd.pipeline import Pipeline, build_engine

CONFIG = """
version: 1
daemon: {timezone: UTC}
sources:
  - {id: auth, type: stdin, parser: syslog}
  - {id: app, type: stdin, parser: none}
rules:
  - id: failed
    sources: [auth]
    match: {field: message, regex: '^Failed password for (?P<user>\\S+) from (?P<ip>\\S+)'}
    group_by: [ip]
  - id: breach
    sources: [app]
    match: {field: message, contains: breach}
"""


def pipeline(tmp_path: Path) -> Pipeline:
    config = load_text(CONFIG, str(tmp_path / "c.yaml"), base_dir=str(tmp_path))
    engine, parsers = build_engine(config, ManualClock(1_795_687_200.0), host="h")
    return Pipeline(engine, parsers)


def lines(source: str, *texts: str) -> list[Line]:
    return [Line(source, text, 1_795_687_200.0, f"{source}:{n}", None, n) for n, text in
            enumerate(texts, 1)]  # fmt: skip


def test_a_batch_is_counted_per_source_and_only_selected_lines_are_parsed(tmp_path: Path) -> None:
    found = pipeline(tmp_path)
    batch = lines(
        "auth",
        "Nov 26 10:00:00 web1 sshd[1]: Failed password for root from 192.0.2.7 port 22 ssh2",
        "Nov 26 10:00:01 web1 cron[2]: (root) CMD (true)",
        "Failed password for root from 192.0.2.8, but no syslog header",
    ) + lines("app", "a breach", "all quiet")
    alerts = found.handle_batch(batch)
    assert [(a.rule, a.key) for a in alerts] == [("failed", {"ip": "192.0.2.7"}), ("breach", {})]
    stats = found.stats
    assert (stats.lines, stats.parsed, stats.unparsed, stats.skipped) == (5, 2, 1, 2)
    assert dict(stats.source_lines) == {"auth": 3, "app": 2}
    assert dict(stats.source_unparsed) == {"auth": 1}
    assert found.engine.match_counts() == {"failed": 1, "breach": 1}


def test_a_line_the_pipeline_chokes_on_does_not_stop_the_batch(
    tmp_path: Path, monkeypatch: object
) -> None:
    found = pipeline(tmp_path)
    parse = found.parsers["app"].parse

    def choke(line: Line) -> object:
        if "boom" in line.raw:
            raise RuntimeError("a bug")
        return parse(line)

    found.parsers["app"].parse = choke  # type: ignore[method-assign]
    alerts = found.handle_batch(lines("app", "boom breach", "a breach"))
    assert [a.raw for a in alerts] == ["a breach"]

"""The daemon's counts: lines per second over a minute, lag of a followed file, rule matches
counted without match records, and counts kept when a reload replaces the pipeline."""

from __future__ import annotations

import os
import time

from logwatchd.clock import SystemClock
from logwatchd.config import load_text
from logwatchd.events import Line
from logwatchd.outbox import Dispatcher
from logwatchd.pipeline import Pipeline, build_engine
from logwatchd.service.tally import RateWindow, Tally, lag_bytes, line_counts

CONFIG = """\
version: 1
sources:
  - {id: app, type: file, paths: [/nonexistent/*.log], parser: none}
rules:
  - {id: boom, match: {field: message, contains: boom}}
  - {id: bang, match: {field: message, contains: bang}, group_by: [message],
     threshold: {count: 2, window: 1m}}
"""


def wiring(tmp_path):
    config = load_text(CONFIG, "c.yaml", base_dir=str(tmp_path))
    engine, parsers = build_engine(config, SystemClock(), "h")
    dispatcher = Dispatcher(str(tmp_path / "state.db"), {}, {}, SystemClock())
    return Pipeline(engine, parsers), dispatcher


def feed(tally: Tally, pipeline: Pipeline, texts: list[str]) -> None:
    before = line_counts(pipeline)
    for n, text in enumerate(texts):
        pipeline.handle(Line("app", text, time.time(), f"x:{n}"))
    tally.read("app", len(texts), before, more=False, now=time.time())


def test_rules_count_matches_without_match_records(tmp_path):
    pipeline, _ = wiring(tmp_path)
    for n, text in enumerate(["boom", "bang", "bang", "quiet", "boom bang"]):
        pipeline.handle(Line("app", text, time.time(), f"x:{n}"))
    assert pipeline.engine.match_counts() == {"boom": 2, "bang": 3}


def test_counts_survive_a_reload(tmp_path):
    tally = Tally()
    first, dispatcher = wiring(tmp_path)
    tally.attach(first, dispatcher, {"app": {}})
    feed(tally, first, ["boom", "bang", "bang"])
    tally.retire()
    second, dispatcher = wiring(tmp_path)
    tally.attach(second, dispatcher, {"app": {}})
    feed(tally, second, ["boom", "bang"])
    snap = tally.snapshot()
    assert snap["sources"]["app"]["lines"] == 5
    assert snap["rules"]["boom"] == {"matches": 2, "alerts": 2, "keys": 0}
    assert snap["rules"]["bang"]["matches"] == 3 and snap["rules"]["bang"]["alerts"] == 1


def test_activity_rows_carry_only_what_is_new(tmp_path):
    tally = Tally()
    pipeline, dispatcher = wiring(tmp_path)
    tally.attach(pipeline, dispatcher, {"app": {}})
    feed(tally, pipeline, ["boom", "nothing"])
    status, activity = tally.for_commit(force=True)
    assert status is not None
    assert sorted((kind, name, n) for kind, _, name, n in activity) == [
        ("lines", "app", 2), ("matches", "boom", 1),
    ]  # fmt: skip
    assert tally.for_commit(force=True)[1] == []
    assert not tally.due()
    feed(tally, pipeline, ["boom"])
    assert [(kind, n) for kind, _, _, n in tally.for_commit(force=True)[1]] == [
        ("lines", 1), ("matches", 1),
    ]  # fmt: skip


def test_the_rate_is_lines_per_second_over_the_last_minute():
    window = RateWindow(started=0.0)
    for second in range(120):
        window.add(second + 0.5, 10)
    assert window.rate(119.9) == 10.0
    assert window.rate(150.0) == 10.0 * 29 / 60  # only 91..119 are inside the last minute
    assert window.rate(300.0) == 0.0
    young = RateWindow(started=100.0)
    young.add(101.0, 30)
    assert young.rate(103.0) == 10.0  # three seconds old: per second of its life


def test_lag_is_what_was_written_after_the_checkpoint(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"x" * 100)
    st = os.stat(log)
    record = {"path": str(log), "dev": st.st_dev, "ino": st.st_ino, "offset": 60}
    assert lag_bytes({"files": [record]}) == 40
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b"y" * 10)  # a new file under the old name: not the one being read
    assert lag_bytes({"files": [record]}) == 0
    assert lag_bytes({"cursor": "s=1"}) is None

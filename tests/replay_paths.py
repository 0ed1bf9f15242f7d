"""Every way lines go through the pipeline, to show they all give the same matches and alerts:

- the reference: every rule on every line, every condition run (no scan, no gate);
- ``test``'s file replay, scanning 1 MiB blocks natively (Hyperscan), with match records
  (every line on the full path) and without (rules of the common shape on the short path,
  ``rules/direct.py``);
- the daemon's batches of lines, scanned natively or with Python's ``re``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from logwatchd.alerts import Alert, jsonable
from logwatchd.commands import replay
from logwatchd.config.model import Config
from logwatchd.events import Line
from logwatchd.pipeline import Pipeline, ReplayClock, build_engine
from logwatchd.rules import Match
from logwatchd.rules.predicates import ALL_HITS

READ_TIME = 1_795_687_200.0  # 2026-11-26T10:00:00Z


Outcome = tuple[list[str], list[str]]  # matches and alerts, as JSON text


def pipeline(config: Config, *, native: bool = True) -> Pipeline:
    clock = ReplayClock()
    engine, parsers = build_engine(config, clock, host="h", native=native)
    return Pipeline(engine, parsers, replay=clock)


def lines_of(source: str, path: Path) -> list[Line]:
    """The file's lines as ``test`` reads them (the same origins, so the same alert ids)."""
    name = str(path)
    text = path.read_bytes().decode("utf-8", "replace")
    texts = text.replace("\r\n", "\n").split("\n")[:-1]
    return [
        Line(source, text, READ_TIME, f"{name}:{n}", name, n) for n, text in enumerate(texts, 1)
    ]


def by_batches(config: Config, source: str, path: Path, *, native: bool) -> Outcome:
    """The daemon's way: batches of lines, scanned at once (no match records: counts)."""
    found = pipeline(config, native=native)
    lines = lines_of(source, path)
    alerts = []
    for start in range(0, len(lines), 700):
        alerts += found.handle_batch(lines[start : start + 700])
    alerts += found.tick(float("inf"))
    matches = [f"{rule}:{n}" for rule, n in sorted(found.engine.match_counts().items())]
    return matches, [_alert(a) for a in alerts]


def reference(config: Config, source: str, path: Path) -> tuple[Outcome, list[str]]:
    """Every rule of the source on every line, every condition run: no scan, no gate."""
    found = pipeline(config)
    matches: list[Match] = []
    alerts = []
    for line in lines_of(source, path):
        found.stats.lines += 1
        alerts += found.evaluate(line, ALL_HITS, matches)
    alerts += found.tick(float("inf"))
    counts = [f"{rule}:{n}" for rule, n in sorted(found.engine.match_counts().items())]
    return ([_match(m) for m in matches], [_alert(a) for a in alerts]), counts


def by_file(config: Config, source: str, path: Path, *, want_matches: bool = True) -> Outcome:
    """``logwatchd test``'s way: the file in blocks, scanned natively where it can be. With
    ``want_matches`` the match records (every line takes the full path); without, the
    matches are counted per rule and the short path takes what it can."""
    found = pipeline(config)
    out = io.StringIO()
    spec = config.source(source)
    replay.replay_file(
        str(path), spec, found, replay.Output(True, out), None,
        want_matches=want_matches, limit=65536,
    )  # fmt: skip
    records = [json.loads(text) for text in out.getvalue().splitlines()]
    records += [{"kind": "alert", **a.to_dict()} for a in found.tick(float("inf"))]
    matches = [
        json.dumps([r["rule"], r["line"], r["fields"]], sort_keys=True)
        for r in records
        if r["kind"] == "match"
    ]
    alerts = [_alert_record(r) for r in records if r["kind"] == "alert"]
    if not want_matches:
        matches = [f"{rule}:{n}" for rule, n in sorted(found.engine.match_counts().items())]
    return matches, alerts


def _match(match: Match) -> str:
    return json.dumps([match.rule, match.line, jsonable(match.fields)], sort_keys=True)


def _alert(alert: Alert) -> str:
    return _alert_record(alert.to_dict())


def _alert_record(record: dict[str, Any]) -> str:
    kept = {k: v for k, v in record.items() if k not in ("fired_at", "line", "kind")}
    return json.dumps(jsonable(kept), sort_keys=True, default=str)


def all_paths_agree(config: Config, source: str, texts: list[str], tmp: Path) -> Outcome:
    path = tmp / f"{source}.log"
    path.write_bytes("".join(text + "\n" for text in texts).encode("utf-8"))
    os.utime(path, (READ_TIME, READ_TIME))  # what `test` takes as the time lines were read
    (wanted, wanted_alerts), counts = reference(config, source, path)
    assert by_file(config, source, path) == (wanted, wanted_alerts)
    assert by_file(config, source, path, want_matches=False) == (counts, wanted_alerts)
    for native in (True, False):
        assert by_batches(config, source, path, native=native) == (counts, wanted_alerts)
    return wanted, wanted_alerts

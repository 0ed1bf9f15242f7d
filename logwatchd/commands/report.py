"""``logwatchd report``: what happened, as a self-contained HTML page or a short text.

From the state database's history (``--since``, default 7 days) or, given log files, from a
replay of them through the rules (the ``test`` command's replay, handlers not run). The page
is rendered with Jinja2 from a template shipped in the package, autoescaped: keys and rule
names are data, never markup.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import IO, Any

import jinja2

from logwatchd.alerts import Alert
from logwatchd.config import load
from logwatchd.config.durations import parse_duration
from logwatchd.config.model import Config
from logwatchd.errors import ConfigError
from logwatchd.report_data import (
    ReportData,
    from_history,
    key_fields,
    replay_origin,
    replayed_alert,
    replayed_match,
)
from logwatchd.state_view import StateView

DEFAULT_SINCE = "7d"
TEXT_ROWS = 10
REPORT_MODE = 0o640


def report(args: argparse.Namespace) -> int:
    if args.files and args.since:
        raise ConfigError(
            "a replay reports the whole of its files; --since is for the state database",
            None,
            "--since",
        )
    data = _replayed(args) if args.files else _from_state(args)
    if args.output == "-":
        write_text(data, sys.stdout)
        return 0
    from logwatchd import charts

    try:
        page = render_html(data)
    except charts.ChartsUnavailable as exc:
        raise ConfigError(str(exc), None, "") from None
    # it holds keys and lines from logs: not for every local user to read
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, REPORT_MODE)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(page)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _since(text: str) -> float:
    try:
        return time.time() - parse_duration(text)
    except ValueError as exc:
        raise ConfigError(str(exc), None, "--since") from None


def _from_state(args: argparse.Namespace) -> ReportData:
    since = args.since or DEFAULT_SINCE
    start = _since(since)
    config = None
    if args.state_dir is None or os.path.exists(args.config):
        config = load(args.config)  # its state_dir, and the fields its rules group by
    state_dir = args.state_dir or (config.daemon.state_dir if config else "")
    path = os.path.join(state_dir, "state.db")
    if not os.path.exists(path):
        raise ConfigError(f"no state database at {path} (has the daemon run yet?)", None, "")
    with StateView(path) as view:
        return from_history(view, start, key_fields(config), f"state database {path}, last {since}")


def _replayed(args: argparse.Namespace) -> ReportData:
    from logwatchd.commands.replay import Output, line_limit, pick_source, replay_file
    from logwatchd.pipeline import Pipeline, ReplayClock, build_engine
    from logwatchd.service.tally import line_counts

    config: Config = load(args.config)
    clock = ReplayClock()
    engine, parsers = build_engine(config, clock, host=os.uname().nodename)
    pipeline = Pipeline(engine, parsers, replay=clock)
    data = ReportData(replay_origin(args.files), "matches")
    fields = key_fields(config)

    class Collect(Output):
        def match(self, match: Any, source: str, line: int) -> None:
            replayed_match(data, match, match.time, fields)

        def alert(self, alert: Alert, line: int) -> None:
            replayed_alert(data, alert, fields)

    out = Collect(False, sys.stdout)
    for name in args.files:
        source = pick_source(config, args.source, name)
        before = line_counts(pipeline)
        replay_file(
            name, source, pipeline, out, None, want_matches=True, limit=line_limit(config, source)
        )
        after = line_counts(pipeline)
        data.sources[source.id]["lines"] += after.lines - before.lines
        data.sources[source.id]["unparsed"] += after.unparsed - before.unparsed
    for alert in pipeline.tick(float("inf")):
        out.alert(alert, 0)
    data.notes.append("Replayed on the lines' own timestamps; no handler was run.")
    return data


# --- text ---------------------------------------------------------------------------------


def write_text(data: ReportData, stream: IO[str]) -> None:
    totals = _totals(data)
    stream.write(f"logwatchd report: {data.origin}\n{_period(data)}\n")
    stream.write(
        f"{totals['lines']:,} lines read, {totals['unparsed']:,} not parsed, "
        f"{totals['events']:,} {data.events_label}, {totals['alerts']:,} alerts\n"
    )
    _table(stream, ["rule", data.events_label, "alerts"], data.rules())
    for name, rows in data.top_keys().items():
        _table(
            stream,
            [f"top {name}", data.events_label, "alerts"],
            [(row.value, row.events, row.alerts) for row in rows],
        )
    _table(
        stream,
        ["source", "lines", "not parsed"],
        [(name, c["lines"], c["unparsed"]) for name, c in sorted(data.sources.items())],
    )
    handlers = _slowest(data)
    if handlers:
        _table(
            stream,
            ["handler", "delivered", "failed", "p95 send s", "slowest s"],
            [
                (name, t.delivered, t.failed, f"{t.p95_seconds:.3f}", f"{t.max_seconds:.3f}")
                for name, t in handlers
            ],
        )
    for note in data.notes:
        stream.write(f"\n{note}\n")


def _table(stream: IO[str], headers: list[str], rows: Sequence[Sequence[Any]]) -> None:
    rows = [[_cell(value) for value in row] for row in rows[:TEXT_ROWS]]
    if not rows:
        return
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    stream.write("\n")
    for row in (headers, *rows):
        cells = [
            str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        stream.write("  ".join(cells).rstrip() + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    text = str(value)
    return "".join(ch if ch.isprintable() else "?" for ch in text)  # a key from a log line


# --- HTML ---------------------------------------------------------------------------------


def render_html(data: ReportData) -> str:
    from logwatchd import charts

    starts, events = data.series("events")
    _, alerts = data.series("alerts")
    width = data.width()
    top = data.top_keys()
    title = f"{data.events_label} per rule"
    order = [rule for rule, _, _ in data.rules()]
    key_charts = {
        name: charts.top_bars(
            [(row.value, row.events or row.alerts) for row in rows],
            f"top {name} by {data.events_label if rows[0].events else 'alerts'}",
        )
        for name, rows in top.items()
    }
    template = _environment().get_template("report.html.j2")
    return template.render(
        origin=data.origin,
        period=_period(data),
        host=os.uname().nodename,
        made=dt.datetime.now().isoformat(sep=" ", timespec="seconds"),
        totals=_totals(data),
        events_label=data.events_label,
        notes=data.notes,
        events_chart=charts.timeline(starts, events, width, title, order) if events else None,
        alerts_chart=(
            charts.timeline(starts, alerts, width, "alerts per rule", order) if alerts else None
        ),
        key_charts=key_charts,
        rules=data.rules(),
        keys=top,
        sources=[(n, c["lines"], c["unparsed"]) for n, c in sorted(data.sources.items())],
        handlers=_slowest(data),
        replay=data.events_label == "matches",
        latest=[
            {
                "when": _when(row.at),
                "rule": row.rule,
                "severity": row.severity,
                "key": json.dumps(row.key, ensure_ascii=False, default=str),
                "count": row.count,
            }
            for row in data.latest_alerts()
        ],
    )


def _environment() -> jinja2.Environment:
    text = resources.files("logwatchd").joinpath("data/report.html.j2").read_text("utf-8")
    return jinja2.Environment(
        loader=jinja2.DictLoader({"report.html.j2": text}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


# --- shared -------------------------------------------------------------------------------


def _totals(data: ReportData) -> dict[str, int]:
    rules = data.rules()
    return {
        "lines": sum(c["lines"] for c in data.sources.values()),
        "unparsed": sum(c["unparsed"] for c in data.sources.values()),
        "events": sum(events for _, events, _ in rules),
        "alerts": sum(alerts for _, _, alerts in rules),
    }


def _slowest(data: ReportData) -> list[tuple[str, Any]]:
    return sorted(data.handlers.items(), key=lambda item: -item[1].p95_seconds)


def _period(data: ReportData) -> str:
    if data.start is None or data.end is None:
        return "nothing recorded"
    return f"{_when(data.start)} to {_when(data.end)}"


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")

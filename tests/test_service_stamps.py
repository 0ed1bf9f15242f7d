"""A time_format that fits none of the lines is never silent: check, test, the daemon, status.

The lines still count (at the time they were read), so a wrong format does not switch the
rules off; but every such line is counted per source and shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from logwatchd.service.stamps import StampWatch
from logwatchd.state import StateStore
from tests.daemon_helpers import DaemonProcess, wait_for, write_config
from tests.test_cli import APP_REGEX, logwatchd

ISO_LINES = "".join(
    f"2023-09-04 10:0{minute}:01 LoginFailed - IP: 192.0.2.7\n" for minute in (0, 2, 4, 6, 8)
)


def wrong_format_config(tmp_path: Path, **parser_extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "daemon": {"state_dir": str(tmp_path / "state"), "timezone": "UTC"},
        "sources": [
            {"id": "app", "type": "file", "paths": [str(tmp_path / "app.log")], "parser": "app"}
        ],
        "parsers": {"app": {"regex": APP_REGEX, "time_format": "%d/%m/%Y", **parser_extra}},
        "rules": [
            {
                "id": "failed-logins",
                "match": {"field": "event_type", "equals": "LoginFailed"},
                "group_by": ["ip"],
                "threshold": {"count": 5, "window": "1m"},
            }
        ],
    }


def test_check_tries_time_format_on_the_parsers_example_and_the_daemon_refuses_it(
    tmp_path: Path,
) -> None:
    example = "2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9"
    path = write_config(tmp_path / "c.yaml", wrong_format_config(tmp_path, example=example))
    proc = logwatchd("check", "-c", str(path))
    assert proc.returncode == 2
    line = path.read_text().splitlines().index(f"    example: '{example}'") + 1
    assert proc.stderr.strip() == (
        f"logwatchd: {path}:{line}: parsers.app.example: time_format '%d/%m/%Y' does not fit the "
        "example's timestamp '2023-09-04 10:00:01' (it is ISO 8601: leave time_format out)"
    )
    proc = logwatchd("run", "-c", str(path))
    assert proc.returncode == 78
    assert "parsers.app.example: time_format" in proc.stderr

    config = wrong_format_config(tmp_path, example="not a line of this log")
    config["parsers"]["app"]["time_format"] = "%Y-%m-%d %H:%M:%S"
    proc = logwatchd("check", "-c", str(write_config(path, config)))
    assert proc.returncode == 2
    assert "parsers.app.example: the parser's regex does not match its own example" in proc.stderr

    config["parsers"]["app"]["example"] = example
    proc = logwatchd("check", "-c", str(write_config(path, config)))
    assert proc.returncode == 0, proc.stderr


def test_test_counts_and_shows_timestamps_that_do_not_parse(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", wrong_format_config(tmp_path))
    log = tmp_path / "app.log"
    log.write_text(ISO_LINES)
    proc = logwatchd("test", "-c", str(path), str(log))
    assert proc.returncode == 0, proc.stderr
    report = proc.stderr.split("timestamp_unparsed: ", 1)[1].splitlines()
    assert report[0].startswith(
        "5 lines of source app have a timestamp that does not fit time_format '%d/%m/%Y'"
    )
    assert report[1] == "  '2023-09-04 10:00:01'  2023-09-04 10:00:01 LoginFailed - IP: 192.0.2.7"
    assert len([line for line in report if line.startswith("  '2023-09-04")]) == 5


def test_the_daemon_warns_once_and_status_counts_per_source(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", wrong_format_config(tmp_path))
    log = tmp_path / "app.log"
    log.write_text("")
    state = tmp_path / "state"

    def counted() -> int:
        store = StateStore(str(state / "state.db"))
        try:
            entry = store.status()["sources"].get("app", {}).get("timestamp_unparsed")
        finally:
            store.close()
        return int(entry["count"]) if entry else 0

    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        with log.open("a") as handle:
            handle.write(ISO_LINES)
        wait_for(lambda: counted() == 5)
        with log.open("a") as handle:
            handle.write(ISO_LINES)
        wait_for(lambda: counted() == 10)
        assert daemon.terminate() == 0
        warnings = [
            event
            for event in daemon.log_events()
            if event.get("event", "").startswith("timestamp does not parse")
        ]
    assert len(warnings) == 1  # rate-limited: the second batch is counted, not warned again
    assert warnings[0]["source"] == "app"
    assert warnings[0]["time_format"] == "%d/%m/%Y"
    assert warnings[0]["sample"] == "2023-09-04 10:08:01"
    report = json.loads(logwatchd("status", "-c", str(path), "--json").stdout)
    assert report["sources"]["app"]["timestamp_unparsed"]["count"] == 10


class _Failures:
    def __init__(self) -> None:
        self.count = 0
        self.last = ""


class _Parser:
    time_format = "%d/%m/%Y"

    def __init__(self) -> None:
        self.stamp_failures = _Failures()


def test_the_warning_comes_again_after_its_interval_with_the_lines_since(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state.db"))
    parser = _Parser()
    watch = StampWatch({"app": parser, "other": object()})
    with capture_logs() as logs:
        for now, count in ((0.0, 3), (10.0, 5), (700.0, 9), (710.0, 9)):
            parser.stamp_failures.count, parser.stamp_failures.last = count, f"s{count}"
            watch.report(store, now)
    assert [(e["lines"], e["sample"]) for e in logs] == [(3, "s3"), (6, "s9")]
    assert store.status()["sources"]["app"]["timestamp_unparsed"]["count"] == 9
    store.close()

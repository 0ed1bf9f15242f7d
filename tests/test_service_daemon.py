"""The daemon loop: SIGHUP reload (bad config kept out, state kept), restarts keep rule state.

The tests wait on the daemon's notify STATUS ("N lines read") for the lines to be read, and
count the alerts in the outbox (every alert the daemon made, delivered or not) after it
stopped, so an alert made twice is caught without sleeping in the hope it would show up.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

from tests.daemon_helpers import DaemonProcess, app_config, read_jsonl, wait_for, write_config


def config(tmp_path: Path, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return app_config(tmp_path, rules=rules)


def rule(rule_id: str, event: str, count: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": rule_id,
        "match": {"field": "event_type", "equals": event},
        "group_by": ["ip"],
    }
    if count > 1:
        spec["threshold"] = {"count": count, "window": "10m"}
    return spec


def append(path: Path, *events: str, ip: str = "203.0.113.9", second: int = 0) -> None:
    with path.open("a") as handle:
        for i, event in enumerate(events):
            handle.write(f"2026-11-26 10:00:{second + i:02d} {event} - IP: {ip}\n")


def alerts(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "alerts.jsonl")


def queued(tmp_path: Path) -> list[str]:
    """The rule of every alert the daemon queued, in order (read after it stopped)."""
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        return [row[0] for row in db.execute("SELECT rule FROM outbox ORDER BY created, rowid")]
    finally:
        db.close()


def wait_reloaded(daemon: DaemonProcess, count: int) -> None:
    wait_for(lambda: daemon.has_message("RELOADING=1") and daemon.messages.count("READY=1") > count)


def test_reload_keeps_the_old_config_when_the_new_one_is_bad_and_applies_a_good_one(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, [rule("breach", "Breach")]))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        path.write_text(path.read_text().replace("rules:", "rules:\n- bogus: true\n", 1))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_reloaded(daemon, 1)
        assert daemon.proc.poll() is None
        errors = [e for e in daemon.log_events() if "reload failed" in e.get("event", "")]
        assert errors
        assert f"{path}:" in errors[0]["error"]
        append(log, "Breach")
        wait_for(lambda: len(alerts(tmp_path)) == 1)

        write_config(path, config(tmp_path, [rule("probe", "Probe")]))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_reloaded(daemon, 2)
        append(log, "Breach", "Probe", second=10)
        wait_for(lambda: len(alerts(tmp_path)) == 2)
        daemon.wait_lines_read(3)
        assert daemon.terminate() == 0
    assert queued(tmp_path) == ["breach", "probe"]
    assert [a["rule"] for a in alerts(tmp_path)] == ["breach", "probe"]


def test_threshold_state_survives_a_clean_restart(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, [rule("brute", "Fail", 5)]))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        append(log, "Fail", "Fail", "Fail", "Fail")
        assert daemon.wait_lines_read(4) == 4  # read (and counted) before SIGTERM
        assert daemon.terminate() == 0
    assert queued(tmp_path) == []
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        append(log, "Fail", second=30)
        fired = wait_for(lambda: alerts(tmp_path))
        assert daemon.wait_lines_read(1) == 1
        assert daemon.terminate() == 0
    assert queued(tmp_path) == ["brute"]
    assert fired[0]["count"] == 5


def test_after_kill_9_replayed_lines_do_not_deliver_an_alert_twice(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, [rule("brute", "Fail", 5)]))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        append(log, "Fail", "Fail", "Fail", "Fail", "Fail")
        wait_for(lambda: alerts(tmp_path))
        daemon.kill()
    append(log, "Fail", second=40)  # there before the start: read in the same first pass
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        daemon.wait_lines_read(1)  # 6 if the kill came before the first commit
        assert daemon.terminate() == 0
    assert queued(tmp_path) == ["brute"]
    assert len(alerts(tmp_path)) == 1


def test_rule_state_survives_reload_for_unchanged_rules_only(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    rules = [rule("kept", "Fail", 3), rule("changed", "Scan", 3)]
    path = write_config(tmp_path / "c.yaml", config(tmp_path, rules))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        append(log, "Fail", "Fail", "Scan", "Scan")
        assert daemon.wait_lines_read(4) == 4  # counted before the reload
        rules[1]["threshold"]["window"] = "20m"  # a changed rule starts counting again
        write_config(path, config(tmp_path, rules))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_reloaded(daemon, 1)
        append(log, "Fail", "Scan", second=20)
        wait_for(lambda: alerts(tmp_path))
        assert daemon.wait_lines_read(6) == 6
        assert daemon.terminate() == 0
    assert queued(tmp_path) == ["kept"]
    assert [a["rule"] for a in alerts(tmp_path)] == ["kept"]

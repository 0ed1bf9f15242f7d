"""`logwatchd status` tells the truth: whether the daemon runs, what it counted, and a
delivery error only while no delivery succeeded after it."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config
from tests.observe_helpers import attack_log, logwatchd, watch_config
from tests.smtp_helpers import Mailbox, free_port, smtp_server

START = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None) - dt.timedelta(hours=1)


def status_json(config: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(logwatchd("status", "-c", str(config), "--json").stdout)
    return report


def test_status_of_a_running_daemon_and_an_error_that_clears_after_a_success(tmp_path):
    smtp_port = free_port()
    config = write_config(tmp_path / "c.yaml", watch_config(tmp_path, smtp_port=smtp_port))
    (tmp_path / "logs").mkdir()
    attack = attack_log(START)
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        started = time.time()
        attack.write(tmp_path / "logs" / "app.log")
        wait_for(lambda: len(read_jsonl(tmp_path / "alerts.jsonl")) == attack.alerts())

        def counted() -> dict[str, Any] | None:
            report = status_json(config)
            mail = report["outbox"].get("mail", {})
            done = report["sources"]["app"].get("lines") == len(attack.lines)
            return report if done and mail.get("pending") == attack.alerts() else None

        report = wait_for(counted, timeout=30)
        assert report["running"] is True
        assert report["pid"] == daemon.proc.pid
        assert started - 15 < report["since"] <= started
        assert report["version"]
        app = report["sources"]["app"]
        assert (app["unparsed"], app["lag_bytes"], app["lag_seconds"]) == (attack.unparsed, 0, 0)
        assert app["lines_per_second"] > 0
        assert report["rules"]["security-breach"]["alerts"] == 3
        assert report["rules"]["brute-force"]["matches"] == sum(attack.failures.values())
        mail = report["outbox"]["mail"]
        assert "Connection refused" in mail["last_error"]
        assert mail["oldest_seconds"] > 0 and mail["last_success"] is None
        text = logwatchd("status", "-c", str(config)).stdout
        assert f"is running: pid {daemon.proc.pid} since" in text
        assert "mail: 15 pending" in text and "Connection refused" in text

        mailbox = Mailbox()
        with smtp_server(mailbox, port=smtp_port):
            wait_for(lambda: len(mailbox.snapshot()) == attack.alerts(), timeout=30)
            report = wait_for(
                lambda: (r := status_json(config))["outbox"]["mail"]["pending"] == 0 and r
            )
        mail = report["outbox"]["mail"]
        assert mail["last_error"] is None and mail["last_success"] is not None
        assert "error (" not in logwatchd("status", "-c", str(config)).stdout
        assert daemon.terminate() == 0

    stopped = status_json(config)
    assert stopped["running"] is False
    assert stopped["pid"] == daemon.proc.pid  # of the last run
    assert stopped["sources"]["app"]["lines"] == len(attack.lines)
    assert stopped["sources"]["app"]["lines_per_second"] == 0
    assert stopped["outbox"]["mail"]["delivered"] == attack.alerts()
    text = logwatchd("status", "-c", str(config)).stdout
    assert text.startswith(f"logwatchd is not running (last run: pid {daemon.proc.pid}, ")


def test_a_killed_daemon_is_not_running_and_what_it_left_unread_is_lag(tmp_path):
    config = write_config(tmp_path / "c.yaml", watch_config(tmp_path))
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    attack = attack_log(START)
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        attack.write(log)
        wait_for(
            lambda: status_json(config)["sources"].get("app", {}).get("lines") == len(attack.lines)
        )  # no source row until the first commit
        daemon.kill()
    before = log.stat().st_size
    attack.write(log)
    report = status_json(config)
    assert report["running"] is False
    app = report["sources"]["app"]
    assert app["lag_bytes"] == log.stat().st_size - before
    assert app["lag_seconds"] > 0
    assert app["files"] == [{"path": str(log), "offset": before, "lag_bytes": app["lag_bytes"]}]


def test_status_shows_what_other_parts_keep_for_it(tmp_path):
    """Timestamps that did not parse, per source, and alerts a rate limit holds back."""
    from logwatchd.state import StateStore

    config = write_config(tmp_path / "c.yaml", watch_config(tmp_path))
    store = StateStore.in_dir(str(tmp_path / "state"))
    try:
        store.commit(sources={"app": {"files": []}})
        store.add_source_count("app", "timestamp_unparsed", 4, "2026-13-45 99:99:99")
        store.record_held_back("mail", 7, time.time() - 60)
    finally:
        store.close()
    report = status_json(config)
    assert report["sources"]["app"]["timestamp_unparsed"]["count"] == 4
    assert (report["outbox"]["mail"]["held_back"], report["running"]) == (7, False)
    text = logwatchd("status", "-c", str(config)).stdout
    assert "4 timestamps did not parse (read time used instead), latest '2026-13-45" in text
    assert "7 held back by its rate limit since" in text

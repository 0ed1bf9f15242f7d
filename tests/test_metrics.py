"""/metrics of a real daemon, scraped over HTTP and parsed with prometheus_client's parser:
the counters are the lines written, the lines that did not parse, the alerts fired, and the
outbox depth while the SMTP server is down."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config
from tests.observe_helpers import (
    ATTACKERS,
    attack_log,
    attacked,
    samples,
    scrape,
    scrape_unix,
    value,
    watch_config,
)
from tests.smtp_helpers import Mailbox, free_port, smtp_server

START = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None) - dt.timedelta(hours=1)


def metrics_of(port: int) -> dict:
    status, text = scrape(port)
    assert status == 200
    return samples(text)


def test_counters_equal_what_was_written_and_the_outbox_holds_mail_while_smtp_is_down(tmp_path):
    smtp_port, metrics_port = free_port(), free_port()
    config = watch_config(tmp_path, smtp_port=smtp_port, metrics=f"127.0.0.1:{metrics_port}")
    (tmp_path / "logs").mkdir()
    attack = attack_log(START)
    with DaemonProcess(write_config(tmp_path / "c.yaml", config)) as daemon:
        daemon.wait_ready()
        attack.write(tmp_path / "logs" / "app.log")
        wait_for(lambda: len(read_jsonl(tmp_path / "alerts.jsonl")) == attack.alerts())

        def outbox_full() -> dict | None:
            got = metrics_of(metrics_port)
            waiting = value(got, "logwatchd_outbox_pending", handler="mail")
            written = value(got, "logwatchd_deliveries_total", handler="alerts-file",
                            result="delivered")  # fmt: skip
            return got if waiting and written == attack.alerts() else None

        got = wait_for(outbox_full, timeout=30)
        assert value(got, "logwatchd_lines_total", source="app") == len(attack.lines)
        assert value(got, "logwatchd_lines_unparsed_total", source="app") == attack.unparsed
        assert value(got, "logwatchd_alerts_total", rule="brute-force") == sum(
            attack.brute_force_alerts().values()
        )
        assert value(got, "logwatchd_alerts_total", rule="security-breach") == 3
        assert value(got, "logwatchd_matches_total", rule="brute-force") == sum(
            attack.failures.values()
        )
        assert value(got, "logwatchd_matches_total", rule="security-breach") == 3
        # the SMTP server is down: every alert waits for the mail handler
        assert value(got, "logwatchd_outbox_pending", handler="mail") == attack.alerts()
        assert value(got, "logwatchd_outbox_pending", handler="alerts-file") == 0
        assert value(got, "logwatchd_outbox_oldest_seconds", handler="mail") > 0
        assert value(got, "logwatchd_source_lag_bytes", source="app") == 0
        assert value(got, "logwatchd_rule_keys", rule="brute-force") > 0
        assert value(got, "logwatchd_actions_active", handler="mail") == 0
        assert value(got, "process_cpu_seconds_total") > 0
        assert value(got, "process_resident_memory_bytes") > 0

        mailbox = Mailbox()
        with smtp_server(mailbox, port=smtp_port):
            wait_for(lambda: len(mailbox.snapshot()) == attack.alerts(), timeout=30)

            def drained() -> dict | None:
                got = metrics_of(metrics_port)
                waiting = value(got, "logwatchd_outbox_pending", handler="mail")
                sent = value(got, "logwatchd_deliveries_total", handler="mail", result="delivered")
                return got if waiting == 0 and sent == attack.alerts() else None

            got = wait_for(drained, timeout=30)
        assert value(got, "logwatchd_outbox_oldest_seconds", handler="mail") == 0
        assert value(got, "logwatchd_deliveries_total", handler="mail", result="retried") > 0
        assert value(got, "logwatchd_deliveries_total", handler="mail", result="failed") == 0
        assert daemon.terminate() == 0


def test_no_label_carries_a_value_from_a_log_line(tmp_path):
    """Cardinality stays bounded by the config: addresses are never labels."""
    metrics_port = free_port()
    config = watch_config(tmp_path, metrics=f"127.0.0.1:{metrics_port}")
    with attacked(tmp_path, config, START):
        status, text = scrape(metrics_port)
    assert status == 200
    labels = {
        label for (name, pairs) in samples(text) if name.startswith("logwatchd_") for label in pairs
    }
    assert {name for name, _ in labels} <= {"source", "rule", "handler", "result", "version"}
    for ip in ATTACKERS:
        assert ip not in text


def test_counters_survive_a_reload_and_the_listener_moves_to_a_unix_socket(tmp_path):
    metrics_port = free_port()
    config = watch_config(tmp_path, metrics=f"127.0.0.1:{metrics_port}")
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    attack = attack_log(START)
    path = write_config(tmp_path / "c.yaml", config)
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        attack.write(log)
        wait_for(lambda: len(read_jsonl(tmp_path / "alerts.jsonl")) == attack.alerts())
        wait_for(
            lambda: (
                value(metrics_of(metrics_port), "logwatchd_lines_total", source="app")
                == len(attack.lines)
            )
        )
        socket_path = str(tmp_path / "metrics.sock")
        config["daemon"]["metrics"] = {"listen": f"unix:{socket_path}"}
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(socket_path))
        attack.write(log)  # the same lines again: the same ids, so no new alerts
        got = wait_for(
            lambda: (
                (parsed := samples(scrape_unix(socket_path)))
                and value(parsed, "logwatchd_lines_total", source="app") == 2 * len(attack.lines)
                and parsed
            )
        )
        assert value(got, "logwatchd_reloads_total", result="ok") == 1
        assert value(got, "logwatchd_lines_unparsed_total", source="app") == 2 * attack.unparsed
        assert value(got, "logwatchd_matches_total", rule="security-breach") == 6
        assert oct(os.stat(socket_path).st_mode & 0o777) == oct(0o660)
        with pytest.raises(OSError):
            scrape(metrics_port)  # the old address is closed
        assert daemon.terminate() == 0
    assert not Path(socket_path).exists()


def test_only_metrics_is_served(tmp_path):
    metrics_port = free_port()
    config = watch_config(tmp_path, metrics=f"127.0.0.1:{metrics_port}")
    with DaemonProcess(write_config(tmp_path / "c.yaml", config)) as daemon:
        daemon.wait_ready()
        assert scrape(metrics_port, "/")[0] == 404
        assert scrape(metrics_port, "/metrics?name[]=logwatchd_lines_total")[0] == 200


def test_a_port_in_use_is_logged_and_the_daemon_still_watches(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = watch_config(tmp_path, metrics=f"127.0.0.1:{port}")
        with attacked(tmp_path, config, START) as (daemon, _):
            events = wait_for(
                lambda: [e for e in daemon.log_events() if e.get("event") == "cannot serve metrics"]
            )
            assert events[0]["listen"] == f"127.0.0.1:{port}"


def exported_names(tmp_path: Path) -> set[str]:
    """Every metric name a daemon's /metrics can show, from its collectors in this process."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from logwatchd.clock import SystemClock
    from logwatchd.config import load
    from logwatchd.events import Line
    from logwatchd.metrics import DaemonCollector, build_registry
    from logwatchd.outbox import Dispatcher
    from logwatchd.pipeline import Pipeline, build_engine
    from logwatchd.service.tally import Tally, line_counts
    from logwatchd.state import StateStore

    config = load(str(write_config(tmp_path / "c.yaml", watch_config(tmp_path))))
    engine, parsers = build_engine(config, SystemClock(), "h")
    pipeline = Pipeline(engine, parsers)
    store = StateStore.in_dir(str(tmp_path / "state"))
    tally = Tally()
    tally.attach(pipeline, Dispatcher(store.path, {}, {}, SystemClock()), {"app": {"files": []}})
    before = line_counts(pipeline)
    pipeline.handle(Line("app", "2026-12-01 10:00:00 LoginFailed - IP: 192.0.2.1", 0.0, "x:1"))
    tally.read("app", 1, before, more=False, now=1.0)
    text = generate_latest(build_registry(DaemonCollector(tally.snapshot, store.path))).decode()
    store.close()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_the_shipped_alert_rules_and_dashboard_use_only_exported_metrics(tmp_path):
    import json
    import re

    repo = Path(__file__).resolve().parent.parent
    rules = yaml.safe_load((repo / "config/prometheus/logwatchd-alerts.yml").read_text())
    dashboard = json.loads((repo / "config/grafana/logwatchd-dashboard.json").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {
        name for expr in exprs for name in re.findall(r"\b((?:logwatchd|process)_[a-z_]+)\b", expr)
    }
    exported = exported_names(tmp_path)
    assert used, "no metric found in the shipped files"
    assert used <= exported, used - exported
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "LogwatchdOutboxBackingUp",
        "LogwatchdSourceSilent",
        "LogwatchdParseFailuresRising",
    } <= alerts


def test_timestamps_that_do_not_parse_are_counted_per_source(tmp_path):
    metrics_port = free_port()
    config = watch_config(tmp_path, metrics=f"127.0.0.1:{metrics_port}")
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    good = START.strftime("%Y-%m-%d %H:%M:%S")
    with DaemonProcess(write_config(tmp_path / "c.yaml", config)) as daemon:
        daemon.wait_ready()
        log.write_text(
            f"{good} LoginFailed - IP: 192.0.2.1\n"
            "2026-13-45 99:99:99 LoginFailed - IP: 192.0.2.2\n"  # fits the regex, not the format
            "2026-02-30 10:00:00 LoginFailed - IP: 192.0.2.3\n"
        )
        got = wait_for(
            lambda: (
                (parsed := metrics_of(metrics_port))
                and value(parsed, "logwatchd_lines_total", source="app") == 3
                and parsed
            )
        )
    assert value(got, "logwatchd_timestamps_unparsed_total", source="app") == 2
    assert value(got, "logwatchd_lines_unparsed_total", source="app") == 0  # timed when read
    assert value(got, "logwatchd_matches_total", rule="brute-force") == 3


def test_a_scrape_without_the_state_database_still_has_the_counts(tmp_path):
    from prometheus_client import generate_latest
    from structlog.testing import capture_logs

    from logwatchd.metrics import DaemonCollector, build_registry
    from logwatchd.service.tally import Tally

    collector = DaemonCollector(Tally().snapshot, str(tmp_path / "gone" / "state.db"))
    with capture_logs() as logs:
        text = generate_latest(build_registry(collector)).decode()
    assert "logwatchd_build_info" in text and "logwatchd_outbox_pending" not in text
    assert [e["event"] for e in logs] == ["metrics: cannot read the outbox"]

"""Default rate limits: a flood of log lines does not become a flood of mails or commands.

E-mail and webhook handlers deliver at most 20 times an hour unless told otherwise (the rest
goes out in digests), commands run at most 60 times a minute (the rest waits in the outbox);
local handlers (file, log) get every alert at once. Nothing is dropped.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from logwatchd.clock import ManualClock
from logwatchd.config.handler_settings import EmailSettings, SmtpSettings
from logwatchd.config.model import HandlerConfig, RateLimit, RetryConfig
from logwatchd.config.schema_handlers import DEFAULT_RATE_LIMITS
from logwatchd.outbox import Dispatcher
from logwatchd.state import StateStore
from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config
from tests.smtp_helpers import Mailbox, smtp_server
from tests.test_outbox import Recording, make_alerts, queue, start

FLOOD = 2000
REGEX = r"^(?P<timestamp>\S+ \S+) (?P<event_type>\w+) - IP: (?P<ip>\S+)"


def flood_config(tmp_path: Path, smtp_port: int, script: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "daemon": {"state_dir": str(tmp_path / "state"), "timezone": "UTC"},
        "sources": [
            {"id": "app", "type": "file", "paths": [str(tmp_path / "app.log")], "parser": "app"}
        ],
        "parsers": {"app": {"regex": REGEX, "time_format": "%Y-%m-%d %H:%M:%S"}},
        "rules": [
            {
                "id": "breach",
                "match": {"field": "event_type", "equals": "SecurityBreach"},
                "group_by": ["ip"],
                "handlers": ["mail", "run", "alerts"],
            }
        ],
        "handlers": {
            # no rate_limit anywhere: the defaults must hold
            "mail": {
                "type": "email",
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none"},
                "from": "logwatchd@example.com",
                "to": ["ops@example.com"],
                "subject": "breach {{ alert.key.ip }}",
            },
            "run": {"type": "command", "argv": [str(script), "{{ alert.key.ip }}"]},
            "alerts": {"type": "file", "path": str(tmp_path / "alerts.jsonl")},
        },
    }


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "runs.txt"
    script = tmp_path / "record"
    script.write_text(f'#!/bin/sh\necho "$1" >> {out}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


def outbox(state_dir: Path) -> dict[str, Any]:
    store = StateStore(str(state_dir / "state.db"))
    try:
        return store.status()["outbox"]
    finally:
        store.close()


def test_a_2000_alert_flood_without_limits_configured_sends_20_mails_and_60_commands(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    script, runs = recorder(tmp_path)
    box = Mailbox()
    with smtp_server(box) as port:
        config = write_config(tmp_path / "c.yaml", flood_config(tmp_path, port, script))
        with DaemonProcess(config) as daemon:
            daemon.wait_ready()
            with log.open("a") as handle:
                for n in range(FLOOD):
                    ip = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
                    handle.write(f"2026-01-05 10:00:00 SecurityBreach - IP: {ip}\n")
            alerts_file = tmp_path / "alerts.jsonl"
            wait_for(lambda: len(read_jsonl(alerts_file)) == FLOOD, timeout=60)
            state = tmp_path / "state"
            wait_for(lambda: outbox(state).get("mail", {}).get("held_back"), timeout=30)
            wait_for(lambda: outbox(state).get("run", {}).get("held_back"), timeout=30)
            mail, run = outbox(state)["mail"], outbox(state)["run"]
            events = daemon.log_events()
            assert daemon.terminate() == 0
        mails = box.snapshot()
    # the file handler (local, no default limit) wrote every alert, once
    assert len({alert["id"] for alert in read_jsonl(alerts_file)}) == FLOOD
    assert len(mails) == 20
    assert mail["done"] == 20 and mail["failed"] == 0
    assert mail["pending"] == FLOOD - 20 == mail["held_back"]  # held, not lost
    assert len(runs.read_text().splitlines()) == 60
    assert run["done"] == 60 and run["pending"] == FLOOD - 60 == run["held_back"]
    held = [e for e in events if e.get("event") == "rate limit reached, alerts held back"]
    assert {(e["handler"], e["held"]) for e in held} == {("mail", FLOOD - 20), ("run", FLOOD - 60)}


def test_held_back_mail_goes_out_in_digests_holding_every_alert_once(tmp_path: Path) -> None:
    """The 1,980 alerts over the default e-mail limit come an hour later in 20 digests."""
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(FLOOD, ("mail",)))
    clock = ManualClock(start=time.time() + 1)
    box = Mailbox()
    with smtp_server(box) as port:
        cfg = _mail(port, DEFAULT_RATE_LIMITS["email"])
        dispatcher = start(db, cfg, clock)
        wait_for(lambda: dispatcher.status()["outbox"]["mail"]["held_back"] == FLOOD - 20)
        assert len(box.snapshot()) == 20
        clock.advance(3601)
        dispatcher.notify()
        wait_for(lambda: dispatcher.status()["outbox"]["mail"]["done"] == FLOOD, timeout=60)
        wait_for(lambda: dispatcher.status()["outbox"]["mail"]["held_back"] == 0)
        dispatcher.stop(5)
    mails = box.snapshot()
    assert len(mails) == 40  # 20 single mails, then 20 digests of 100
    seen: list[int] = []
    for received in mails:
        body = received.message.get_content()
        seen.extend(int(part.split()[0]) for part in body.split("n=")[1:])
    assert sorted(seen) == list(range(FLOOD))


def test_a_command_over_its_limit_runs_each_held_alert_later_never_as_a_lump(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(100, ("run",)))
    clock = ManualClock(start=time.time() + 1)
    handler = Recording("run")
    handler.per_alert = True  # type: ignore[attr-defined]  # as the command handler says
    cfg = HandlerConfig(name="run", type="command", rate_limit=RateLimit(60, 60.0))
    dispatcher = Dispatcher(db, {"run": handler}, {"run": cfg}, clock, poll_interval=0.05)
    dispatcher.start()
    wait_for(lambda: dispatcher.status()["outbox"]["run"]["held_back"] == 40)
    assert len(handler.delivered()) == 60
    clock.advance(61)
    dispatcher.notify()
    wait_for(lambda: dispatcher.status()["outbox"]["run"]["done"] == 100)
    wait_for(lambda: dispatcher.status()["outbox"]["run"]["held_back"] == 0)
    dispatcher.stop(5)
    assert [len(ids) for ids in handler.delivered()] == [1] * 100


def _mail(port: int, limit: RateLimit | None) -> HandlerConfig:
    settings = EmailSettings(
        to=("ops@example.com",),
        subject="{{ alert.rule }} {{ alert.key.n }}",
        body="n={{ alert.key.n }}\n",
        sender="logwatchd@example.com",
        smtp=SmtpSettings(host="127.0.0.1", port=port, timeout=5),
    )
    retry = RetryConfig(max_attempts=10, backoff=0.05, max_backoff=0.2)
    return HandlerConfig(
        name="mail", type="email", timeout=5, settings=settings, rate_limit=limit, retry=retry
    )


def test_check_names_the_limits_in_force_and_none_opts_out(tmp_path: Path) -> None:
    config = flood_config(tmp_path, 25, Path("/bin/true"))
    config["handlers"]["hook"] = {
        "type": "webhook", "url": "http://127.0.0.1:9/x", "rate_limit": "none",
    }  # fmt: skip
    config["handlers"]["run"]["rate_limit"] = {"max": 5, "per": "10s"}
    path = write_config(tmp_path / "c.yaml", config)
    proc = subprocess.run(
        [sys.executable, "-m", "logwatchd", "check", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == (
        "rate limits: mail 20 per 1h (default), run 5 per 10s; none for alerts, hook, log"
    )


def test_status_json_shows_what_a_rate_limit_holds_back(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "state.db"))
    store.record_held_back("mail", 7, 1_700_000_000.0)
    entry = store.status()["outbox"]["mail"]
    assert (entry["held_back"], entry["held_back_since"]) == (7, 1_700_000_000.0)
    store.record_held_back("mail", 0, None)
    assert "mail" not in store.status()["outbox"]
    store.close()

"""The whole pipeline as a user runs it: `logwatchd run` follows a log, a rule fires, a real
SMTP server gets the mail, a real command gets the IP as one argument."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config

APP_REGEX = (
    r"^(?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?P<event_type>\w+) - IP: (?P<ip>\S+)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A real program that appends its argv (as JSON) to a file."""
    out = tmp_path / "argv.jsonl"
    script = tmp_path / "record-argv"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


def origin_config(tmp_path: Path, smtp_port: int, script: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "daemon": {"state_dir": str(tmp_path / "state")},
        "lists": {"trusted": ["127.0.0.0/8"]},
        "sources": [
            {
                "id": "app",
                "type": "file",
                "paths": [str(tmp_path / "logs" / "*.log")],
                "parser": "app",
                "start_at": "end",
            },
        ],
        "parsers": {
            "app": {"regex": APP_REGEX, "time_format": "%Y-%m-%d %H:%M:%S", "types": {"ip": "ip"}}
        },
        "rules": [
            {
                "id": "security-breach",
                "match": {
                    "all": [
                        {"field": "event_type", "equals": "SecurityBreach"},
                        {"not": {"field": "ip", "in_list": "trusted"}},
                    ]
                },
                "group_by": ["ip"],
                "severity": "critical",
                "handlers": ["mail-admin", "ban", "alerts-file"],
            }
        ],
        "handlers": {
            "mail-admin": {
                "type": "email",
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none"},
                "from": "logwatchd@example.com",
                "to": ["ops@example.com"],
                "subject": "[{{ alert.severity }}] {{ alert.rule }} {{ alert.key.ip }}",
                "body": "{{ alert.count }} x {{ alert.rule }}; last line: {{ alert.event.raw }}",
            },
            "ban": {
                "type": "command",
                "argv": [str(script), "ban", "{{ alert.key.ip }}"],
                "timeout": "5s",
            },
            "alerts-file": {"type": "file", "path": str(tmp_path / "alerts.jsonl")},
        },
    }


def test_security_breach_line_sends_the_mail_and_runs_the_command_within_a_second(
    tmp_path, smtp, recorder
):
    controller, inbox = smtp
    script, argv_log = recorder
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "server.log"
    log.write_text("2023-09-04 09:59:00 Startup - IP: 198.51.100.1\n")
    config = write_config(
        tmp_path / "logwatchd.yaml", origin_config(tmp_path, controller.port, script)
    )
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        line = "2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9"
        started = time.monotonic()
        with log.open("a") as handle:
            handle.write(line + "\n")
        wait_for(lambda: inbox.messages and argv_log.exists(), timeout=5)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"mail and command took {elapsed:.3f}s"

        mail_from, rcpts, message = inbox.messages[0]
        assert mail_from == "logwatchd@example.com"
        assert rcpts == ["ops@example.com"]
        assert message["Subject"] == "[critical] security-breach 203.0.113.9"
        assert message["To"] == "ops@example.com"
        body = message.get_payload(decode=True).decode()
        assert f"1 x security-breach; last line: {line}" in body
        assert json.loads(argv_log.read_text().splitlines()[0]) == ["ban", "203.0.113.9"]
        alert = wait_for(lambda: read_jsonl(tmp_path / "alerts.jsonl"))[0]
        assert alert["rule"] == "security-breach"
        assert alert["key"] == {"ip": "203.0.113.9"}
        assert alert["event"]["raw"] == line
        assert daemon.terminate() == 0


def test_trusted_and_other_events_do_not_fire_and_bad_lines_are_skipped(tmp_path, smtp, recorder):
    controller, _inbox = smtp
    script, _argv_log = recorder
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "server.log"
    log.touch()
    config = write_config(tmp_path / "c.yaml", origin_config(tmp_path, controller.port, script))
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        with log.open("ab") as handle:
            handle.write(b"2023-09-04 10:00:01 SecurityBreach - IP: 127.0.0.1\n")
            handle.write(b"2023-09-04 10:00:02 Login - IP: 203.0.113.9\n")
            handle.write(b"garbage \xff\xfe not a line of this format\n")
            handle.write(b"2023-09-04 10:00:03 SecurityBreach - IP: 203.0.113.77\n")
        alerts = wait_for(lambda: read_jsonl(tmp_path / "alerts.jsonl"))
        time.sleep(0.3)
        assert [a["key"]["ip"] for a in read_jsonl(tmp_path / "alerts.jsonl")] == ["203.0.113.77"]
        assert alerts[0]["event"]["raw"].endswith("203.0.113.77")
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0


def test_a_failing_handler_does_not_stop_the_others(tmp_path, recorder):
    script, argv_log = recorder
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "server.log"
    log.touch()
    # nothing listens on this port: the mail handler fails and retries
    config = write_config(tmp_path / "c.yaml", origin_config(tmp_path, free_port(), script))
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        with log.open("a") as handle:
            handle.write("2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9\n")
        wait_for(lambda: argv_log.exists() and read_jsonl(tmp_path / "alerts.jsonl"), timeout=5)
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0


def test_sigterm_stops_the_daemon_cleanly_within_two_seconds(tmp_path, recorder):
    script, _ = recorder
    (tmp_path / "logs").mkdir()
    config = write_config(tmp_path / "c.yaml", origin_config(tmp_path, free_port(), script))
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        started = time.monotonic()
        assert daemon.terminate(timeout=5) == 0
        assert time.monotonic() - started < 2.0
        assert daemon.has_message("STOPPING=1")


def test_a_bad_config_exits_78_naming_file_line_and_key(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "version: 1\nsources:\n  - {id: app, type: stdin, parser: none}\nrules:\n"
        "  - id: x\n    match: {field: a, equals: b}\n    cooldown: 10 minutes\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "logwatchd", "run", "-c", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 78
    assert f"{config}:7: rules[0].cooldown" in proc.stderr
    assert "Traceback" not in proc.stderr

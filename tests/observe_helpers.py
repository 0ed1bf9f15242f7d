"""A generated attack in the project's original ``server.log`` format, a config that watches
it, and a scrape of ``/metrics``: shared by the metrics, status and report tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import random
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config

APP_REGEX = (
    r"^(?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?P<event_type>\w+) - IP: (?P<ip>\S+)"
)
THRESHOLD = 5  # brute-force: the 5th failure of an address within a minute fires

# address -> failed logins; the loud ones first. 50 one-off addresses follow.
ATTACKERS = {"203.0.113.9": 42, "198.51.100.23": 17, "192.0.2.44": 9, "203.0.113.77": 4}
BREACHES = {"203.0.113.9": 2, "198.51.100.7": 1}


@dataclass
class AttackLog:
    lines: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    breaches: Counter[str] = field(default_factory=Counter)
    logins: int = 0
    unparsed: int = 0  # lines with a rule's words that the parser cannot read

    def brute_force_alerts(self) -> Counter[str]:
        return Counter({ip: n // THRESHOLD for ip, n in self.failures.items() if n >= THRESHOLD})

    def alerts(self) -> int:
        return sum(self.brute_force_alerts().values()) + sum(self.breaches.values())

    def write(self, path: Path) -> Path:
        with path.open("a", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in self.lines)
        return path


def attack_log(start: dt.datetime, *, garbage: int = 3, seed: int = 7) -> AttackLog:
    """One line a second: each attacker's failures come in one burst (so every fifth one
    fires), between shuffled logins, one-off failures and breaches."""
    noise: list[tuple[str, str]] = [("LoginFailed", f"192.0.2.{100 + n}") for n in range(50)]
    noise.extend(("UserLogin", f"198.51.100.{n}") for n in range(30))
    for ip, count in BREACHES.items():
        noise.extend(("SecurityBreach", ip) for _ in range(count))
    random.Random(seed).shuffle(noise)
    events: list[tuple[str, str]] = []
    step = len(noise) // (len(ATTACKERS) + 1)
    for n, (ip, count) in enumerate(ATTACKERS.items()):
        events.extend(noise[n * step : (n + 1) * step])
        events.extend(("LoginFailed", ip) for _ in range(count))
    events.extend(noise[len(ATTACKERS) * step :])
    log = AttackLog()
    for n, (kind, ip) in enumerate(events):
        stamp = (start + dt.timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
        log.lines.append(f"{stamp} {kind} - IP: {ip}")
        if kind == "LoginFailed":
            log.failures[ip] += 1
        elif kind == "SecurityBreach":
            log.breaches[ip] += 1
        else:
            log.logins += 1
    for n in range(garbage):  # the words a rule needs, in a line the parser cannot read
        log.lines.insert(10 * n + 5, f"garbled LoginFailed line {n}")
        log.unparsed += 1
    return log


def watch_config(
    tmp_path: Path,
    *,
    smtp_port: int | None = None,
    metrics: str | None = None,
    start_at: str = "beginning",
) -> dict[str, Any]:
    """brute-force and security-breach over ``logs/*.log``; alerts to a file, and to mail
    when ``smtp_port`` is given (retried quickly: tests wait for the sink to come back)."""
    handlers: dict[str, Any] = {
        "alerts-file": {"type": "file", "path": str(tmp_path / "alerts.jsonl")}
    }
    if smtp_port is not None:
        handlers["mail"] = {
            "type": "email",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "timeout": "2s"},
            "from": "logwatchd@example.com",
            "to": ["ops@example.com"],
            "subject": "{{ alert.rule }} {{ alert.key.ip }}",
            "retry": {"max_attempts": 1000, "backoff": "100ms", "max_backoff": "300ms"},
            # failed attempts count toward the default flood guard (20 an hour): without this,
            # the mail would wait an hour once the server is back
            "rate_limit": "none",
        }
    daemon: dict[str, Any] = {"state_dir": str(tmp_path / "state"), "timezone": "UTC"}
    if metrics is not None:
        daemon["metrics"] = {"listen": metrics}
    return {
        "version": 1,
        "daemon": daemon,
        "sources": [
            {
                "id": "app",
                "type": "file",
                "paths": [str(tmp_path / "logs" / "*.log")],
                "parser": "app",
                "start_at": start_at,
            }
        ],
        "parsers": {
            "app": {"regex": APP_REGEX, "time_format": "%Y-%m-%d %H:%M:%S", "types": {"ip": "ip"}}
        },
        "rules": [
            {
                "id": "brute-force",
                "match": {"field": "event_type", "equals": "LoginFailed"},
                "group_by": ["ip"],
                "threshold": {"count": THRESHOLD, "window": "1m"},
                "severity": "high",
            },
            {
                "id": "security-breach",
                "match": {"field": "event_type", "equals": "SecurityBreach"},
                "group_by": ["ip"],
                "severity": "critical",
            },
        ],
        "defaults": {"handlers": sorted(handlers)},
        "handlers": handlers,
    }


@contextlib.contextmanager
def attacked(tmp_path: Path, config: dict[str, Any], start: dt.datetime,
             ) -> Iterator[tuple[DaemonProcess, AttackLog]]:  # fmt: skip
    """A daemon on ``config`` that has read the attack written to ``logs/app.log`` and put
    every alert into the alerts file."""
    (tmp_path / "logs").mkdir()
    attack = attack_log(start)
    with DaemonProcess(write_config(tmp_path / "c.yaml", config)) as daemon:
        daemon.wait_ready()
        attack.write(tmp_path / "logs" / "app.log")
        wait_for(lambda: len(read_jsonl(tmp_path / "alerts.jsonl")) == attack.alerts(), timeout=30)
        yield daemon, attack


# --- /metrics -----------------------------------------------------------------------------


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


def scrape_unix(path: str) -> str:
    connection = UnixConnection(path)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        connection.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client: (name, labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:  # fmt: skip
    return parsed.get((name, tuple(sorted(labels.items()))))


def logwatchd(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "logwatchd", *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"logwatchd {' '.join(argv)}: {done.returncode}\n{done.stderr}")
    return done

"""A fleet on loopback for the tests and the bench: host daemons and an aggregator, all real
``logwatchd run`` subprocesses, talking through a real nats-server (or a cluster).

Each host follows its own auth log (RFC 3339 syslog lines) and publishes every sshd failure
to NATS (rule ``auth-failure``, no threshold). The aggregator reads them with a ``nats``
source and fires ``fleet-bruteforce`` when one address failed on two distinct hosts; its
decision goes back through NATS to every host, whose ``apply-ban`` rule runs a recorder
program (a ``command`` handler that appends ``host ip`` to a file), or, for a host started in
a network namespace of its own (``netns``), bans with the real ``nftables`` handler there.
The aggregator also writes every alert it received (``seen``) and
every alert id it counted twice (``twice``: must stay empty) to JSON-lines files.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
import sys
from pathlib import Path
from typing import Any

from logwatchd.state import StateStore
from tests.daemon_helpers import DaemonProcess, read_jsonl, write_config
from tests.nft_helpers import LINK_RANGE

FAILURE_REGEX = r"Failed password for (?P<user>\S+) from (?P<ip>\S+) port"


def recorder(directory: Path) -> tuple[Path, Path]:
    """A real program that appends its arguments as one JSON line to a file."""
    out = directory / "bans.jsonl"
    script = directory / "record-ban"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


# never the links to the nats-server: a host must not cut itself off from the fleet
NFTABLES_BAN: dict[str, Any] = {"type": "nftables", "duration": "1h", "never": [str(LINK_RANGE)]}


def host_config(
    directory: Path,
    name: str,
    servers: list[str],
    ban_program: Path,
    *,
    replicas: int = 1,
    ban: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "version": 1,
        "daemon": {"state_dir": str(directory / "state"), "host": name, "timezone": "UTC"},
        "sources": [
            {
                "id": "auth",
                "type": "file",
                "paths": [str(directory / "logs" / "*.log")],
                "parser": "syslog",
                "start_at": "beginning",
            },
            {
                "id": "decisions",
                "type": "nats",
                "servers": servers,
                "subjects": ["logwatchd.decisions.>"],
                "ack_wait": "2s",
            },
        ],
        "rules": [
            {
                "id": "auth-failure",
                "sources": ["auth"],
                "match": {
                    "all": [
                        {"field": "program", "equals": "sshd"},
                        {"field": "message", "regex": FAILURE_REGEX},
                    ]
                },
                "group_by": ["ip"],
                "handlers": ["fleet"],
            },
            {
                "id": "apply-ban",
                "sources": ["decisions"],
                "match": {"field": "rule", "equals": "fleet-bruteforce"},
                "group_by": ["ip"],
                "handlers": ["ban"],
            },
        ],
        "handlers": {
            "fleet": {
                "type": "nats",
                "servers": servers,
                "replicas": replicas,
                "retry": {"max_attempts": 1000, "backoff": "200ms", "max_backoff": "1s"},
            },
            "ban": {
                **(
                    ban
                    or {
                        "type": "command",
                        "argv": [str(ban_program), "{{ host.name }}", "{{ alert.key.ip }}"],
                    }
                ),
                "retry": {"backoff": "200ms", "max_backoff": "1s"},
            },
        },
    }


def aggregator_config(
    directory: Path, servers: list[str], *, replicas: int = 1, durable: str = "aggregator"
) -> dict[str, Any]:
    def jsonl(name: str) -> dict[str, Any]:
        return {"type": "file", "path": str(directory / f"{name}.jsonl")}

    return {
        "version": 1,
        "daemon": {"state_dir": str(directory / "state"), "host": "agg1", "timezone": "UTC"},
        "sources": [
            {
                "id": "fleet",
                "type": "nats",
                "servers": servers,
                "subjects": ["logwatchd.alerts.*.auth-failure"],
                "durable": durable,
                "start_at": "beginning",
                "ack_wait": "2s",
            }
        ],
        "rules": [
            {
                "id": "fleet-bruteforce",
                "match": {"field": "rule", "equals": "auth-failure"},
                "group_by": ["ip"],
                "threshold": {"count": 2, "window": "10m", "distinct": "host"},
                "cooldown": "1h",
                "handlers": ["decisions", "fleet-alerts"],
            },
            {
                "id": "seen",
                "match": {"field": "rule", "equals": "auth-failure"},
                "group_by": ["alert_id"],
                "handlers": ["seen"],
            },
            {
                "id": "twice",
                "match": {"field": "rule", "equals": "auth-failure"},
                "group_by": ["alert_id"],
                "threshold": {"count": 2, "window": "1d"},
                "handlers": ["twice"],
            },
        ],
        "handlers": {
            "decisions": {
                "type": "nats",
                "servers": servers,
                "replicas": replicas,
                "subject": "logwatchd.decisions.{{ alert.rule }}",
                "retry": {"max_attempts": 1000, "backoff": "200ms", "max_backoff": "1s"},
            },
            "fleet-alerts": jsonl("fleet"),
            "seen": jsonl("seen"),
            "twice": jsonl("twice"),
        },
    }


class Host:
    def __init__(
        self,
        directory: Path,
        name: str,
        servers: list[str],
        *,
        netns: str | None = None,
        **options: Any,
    ) -> None:
        self.dir = directory
        self.name = name
        self.netns = netns
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        self.log = directory / "logs" / "auth.log"
        self.log.touch()
        program, self.bans_file = recorder(directory)
        if netns is not None:
            options["ban"] = NFTABLES_BAN
        self.config = write_config(
            directory / "host.yaml", host_config(directory, name, servers, program, **options)
        )
        self.daemon: DaemonProcess | None = None
        self.written = 0

    def start(self) -> Host:
        prefix = ("ip", "netns", "exec", self.netns) if self.netns else ()
        self.daemon = DaemonProcess(self.config, prefix=prefix)
        self.daemon.wait_ready()
        return self

    def fail(self, ip: str, user: str = "root") -> None:
        """One sshd failure line; the syslog host field is a lie the daemon must ignore."""
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        with open(self.log, "a") as log:
            log.write(
                f"{stamp} spoofed sshd[{1000 + self.written}]: "
                f"Failed password for {user} from {ip} port 22 ssh2\n"
            )
        self.written += 1

    def bans(self) -> list[list[str]]:
        return [list(entry) for entry in read_jsonl(self.bans_file)]

    def outbox(self, handler: str = "fleet") -> dict[str, Any]:
        return outbox(self.dir / "state", handler)

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()


class Aggregator:
    def __init__(self, directory: Path, servers: list[str], **options: Any) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.config = write_config(
            directory / "aggregator.yaml", aggregator_config(directory, servers, **options)
        )
        self.daemon: DaemonProcess | None = None

    def start(self) -> Aggregator:
        self.daemon = DaemonProcess(self.config)
        self.daemon.wait_ready()
        return self

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.kill()
        self.daemon.close()
        self.daemon = None

    def jsonl(self, name: str) -> list[dict[str, Any]]:
        return read_jsonl(self.dir / f"{name}.jsonl")

    def seen_ids(self) -> list[str]:
        return [alert["key"]["alert_id"] for alert in self.jsonl("seen")]

    def fleet_ips(self) -> list[str]:
        return [alert["key"]["ip"] for alert in self.jsonl("fleet")]

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.close()


def outbox(state_dir: Path, handler: str) -> dict[str, Any]:
    """The outbox counts of one handler (pending, done, failed, last_error)."""
    path = state_dir / "state.db"
    if not path.exists():
        return {}
    store = StateStore(str(path))
    try:
        return dict(store.status()["outbox"].get(handler, {}))
    finally:
        store.close()


def alert_ids_of(messages: list[dict[str, Any]]) -> list[str]:
    return [message["data"]["id"] for message in messages]


def dump(*parts: Any) -> str:
    """Context for a failed assertion: the daemons' logs, tails only."""
    out = []
    for part in parts:
        daemon = getattr(part, "daemon", None)
        if daemon is not None:
            out.append(f"--- {getattr(part, 'name', 'aggregator')}\n{daemon.stderr()[-3000:]}")
    return "\n".join(out) or json.dumps(parts, default=str)[:2000]

"""The fleet's configuration: ``daemon.host``, the ``nats`` handler and the ``nats`` source."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logwatchd.config import load, load_text
from logwatchd.config.model import Config
from logwatchd.errors import ConfigError
from logwatchd.templates import HostInfo

# Six lines; what a test appends starts on line 7.
BASE = """\
version: 1
sources:
  - id: app
    type: file
    paths: [app.log]
    parser: none
"""


def config(tmp_path: Path, extra: str = "", *, base: str = BASE) -> Config:
    return load_text(base + textwrap.dedent(extra), "c.yaml", base_dir=str(tmp_path))


def error(tmp_path: Path, extra: str = "", *, base: str = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, extra, base=base)
    return str(info.value)


# --- daemon.host ----------------------------------------------------------------------------


def test_daemon_host_names_this_host_and_defaults_to_the_short_host_name(tmp_path: Path) -> None:
    assert config(tmp_path, "daemon:\n  host: web-1_a\n").daemon.host == "web-1_a"
    assert config(tmp_path).daemon.host is None
    assert HostInfo.local("web1").name == "web1"
    assert HostInfo.local().name == HostInfo.local(None).name
    assert "." not in HostInfo.local().name


@pytest.mark.parametrize("name", ["web1.example.com", "web 1", "web*", "-web", "a" * 64, ""])
def test_daemon_host_is_one_subject_token(tmp_path: Path, name: str) -> None:
    message = error(tmp_path, f"daemon:\n  host: '{name}'\n")
    assert message.startswith("c.yaml:8: daemon.host: ")


# --- the example configs ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fleet-host.yaml", "fleet-aggregator.yaml"])
def test_the_example_fleet_configs_pass_check(name: str) -> None:
    pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[fleet]')")
    path = Path(__file__).parent.parent / "config" / name
    result = subprocess.run(
        [sys.executable, "-m", "logwatchd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {path}: ")


def test_the_example_host_publishes_every_failure_and_bans_on_decision() -> None:
    config = load(str(Path(__file__).parent.parent / "config" / "fleet-host.yaml"))
    rules = {rule.id: rule for rule in config.rules}
    assert rules["sshd-failure"].threshold is None
    assert rules["sshd-failure"].handlers == ("fleet",)
    assert rules["fleet-ban"].handlers == ("ban",)
    decisions = config.source("decisions")
    assert decisions.nats is not None
    assert decisions.nats.durable == f"decisions-{HostInfo.local().name}"[:64]
    aggregator = load(str(Path(__file__).parent.parent / "config" / "fleet-aggregator.yaml"))
    [fleet_rule] = aggregator.rules
    assert fleet_rule.threshold is not None and fleet_rule.threshold.distinct == "host"


def test_without_the_client_library_check_says_how_to_get_it_for_a_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logwatchd.commands.check import validate

    fleet_source = "  - {id: fleet, type: nats, subjects: ['logwatchd.alerts.>']}\n"
    loaded = config(tmp_path, base=BASE + fleet_source)
    monkeypatch.setitem(sys.modules, "nats", None)  # import nats now raises ImportError
    with pytest.raises(ConfigError) as info:
        validate(loaded)
    assert str(info.value) == (
        "c.yaml:7: sources[1]: NATS needs the fleet extra: "
        "pip install 'logwatchd[fleet]' (the nats-py client)"
    )


ALERTS_CONFIG = """\
version: 1
sources: [{id: fleet, type: stdin, parser: alert}]
rules:
  - id: fleet-bruteforce
    match: {field: rule, equals: sshd-failure}
    group_by: [ip]
    threshold: {count: 2, window: 10m, distinct: host}
"""


def test_distinct_host_counts_publishing_daemons_in_a_replay_of_published_alerts(
    tmp_path: Path,
) -> None:
    """`logwatchd test` replays a file of alerts (what the file handler writes) through a
    fleet rule: the address seen on two hosts fires, the one seen twice on one host does not,
    and the host name a log line carried counts for nothing."""
    import json

    def alert(index: int, host: str, ip: str) -> str:
        return json.dumps(
            {"id": f"{index:032d}", "rule": "sshd-failure", "host": host, "key": {"ip": ip},
             "last_seen": f"2026-12-03T10:00:0{index}+00:00",
             "event": {"fields": {"host": "same-in-every-line", "ip": ip}, "raw": "x"}}
        )  # fmt: skip

    (tmp_path / "c.yaml").write_text(ALERTS_CONFIG)
    (tmp_path / "alerts.jsonl").write_text(
        "\n".join(
            [
                alert(1, "web1", "198.51.100.7"),
                alert(2, "web1", "198.51.100.7"),
                alert(3, "web1", "203.0.113.9"),
                alert(4, "web2", "203.0.113.9"),
            ]
        )
        + "\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "logwatchd", "test", "-c", str(tmp_path / "c.yaml"), "--json",
         str(tmp_path / "alerts.jsonl")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fired = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(a["key"], a["count"], a["line"]) for a in fired] == [({"ip": "203.0.113.9"}, 2, 4)]


def test_status_says_how_many_messages_of_a_nats_source_await_acknowledgement(
    tmp_path: Path,
) -> None:
    from logwatchd.state import StateStore

    store = StateStore.in_dir(str(tmp_path / "state"))
    unacked = [["agg", 7, "a" * 32], ["agg", 8, "b" * 32]]
    store.commit(sources={"fleet": {"stream": "LOGWATCHD", "unacked": unacked}})
    store.close()
    result = subprocess.run(
        [sys.executable, "-m", "logwatchd", "status", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "nats stream LOGWATCHD: 2 messages awaiting acknowledgement" in result.stdout

"""A command handler with ``undo``: the action runs, its undo runs once ``after`` later, also
when that time passed while the daemon was stopped; a key already acted on is not acted on
again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from logwatchd.config import load
from logwatchd.errors import ConfigError
from logwatchd.handlers import build_handler
from logwatchd.state import StateStore
from logwatchd.templates import HostInfo, Templates
from tests.daemon_helpers import DaemonProcess, wait_for, write_config

REGEX = r"^(?P<timestamp>\S+ \S+) (?P<event_type>\w+) - IP: (?P<ip>\S+)"
# Records each run as "<unix time> <LOGWATCHD_ACTION> <args...>": one line per run.
RECORDER = """#!/bin/sh
printf '%s %s %s\\n' "$(date +%s.%N)" "$LOGWATCHD_ACTION" "$*" >> {out}
"""


def config(tmp_path: Path, after: str) -> dict[str, Any]:
    script = tmp_path / "record.sh"
    script.write_text(RECORDER.format(out=tmp_path / "runs.txt"))
    script.chmod(0o755)
    return {
        "version": 1,
        "daemon": {"state_dir": str(tmp_path / "state"), "commit_interval": "100ms"},
        "sources": [
            {"id": "app", "type": "file", "paths": [str(tmp_path / "app.log")], "parser": "app"}
        ],
        "parsers": {"app": {"regex": REGEX, "time_format": "%Y-%m-%d %H:%M:%S"}},
        "rules": [
            {
                "id": "breach",
                "match": {"field": "event_type", "equals": "Breach"},
                "group_by": ["ip"],
                "handlers": ["lock"],
            }
        ],
        "handlers": {
            "lock": {
                "type": "command",
                "argv": [str(script), "lock", "{{ alert.key.ip }}"],
                "undo": {"argv": [str(script), "unlock", "{{ alert.key.ip }}"], "after": after},
            }
        },
    }


def append(log: Path, ip: str = "203.0.113.9") -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time()))
    with log.open("a") as handle:
        handle.write(f"{stamp} Breach - IP: {ip}\n")


def runs(tmp_path: Path) -> list[tuple[float, str, str]]:
    path = tmp_path / "runs.txt"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        stamp, action, args = line.split(" ", 2)
        found.append((float(stamp), action, args))
    return found


def actions_rows(tmp_path: Path) -> list[tuple[str, float, str]]:
    store = StateStore.in_dir(str(tmp_path / "state"))
    try:
        return store.db.execute("SELECT key, until, state FROM actions").fetchall()
    finally:
        store.close()


def pending_rows(tmp_path: Path) -> int:
    store = StateStore.in_dir(str(tmp_path / "state"))
    try:
        return store.pending_count()
    finally:
        store.close()


def test_the_undo_runs_once_after_its_time_also_when_that_passed_while_stopped(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, after="3s"))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        append(log)
        wait_for(lambda: runs(tmp_path))
        assert daemon.terminate() == 0
    assert [(a, args) for _, a, args in runs(tmp_path)] == [("do", "lock 203.0.113.9")]
    [(key, until, state)] = actions_rows(tmp_path)
    assert (key, state) == ("203.0.113.9", "active")

    wait_for(lambda: time.time() > until + 0.5, timeout=10)  # due while the daemon is down
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        wait_for(lambda: len(runs(tmp_path)) == 2)
        wait_for(lambda: pending_rows(tmp_path) == 0)
        assert daemon.terminate() == 0
    _, (unlocked, action, args) = runs(tmp_path)
    assert (action, args) == ("undo", "unlock 203.0.113.9")
    assert unlocked >= until
    assert actions_rows(tmp_path) == []  # undone and forgotten

    with DaemonProcess(path) as daemon:  # never twice
        daemon.wait_ready()
        wait_for(lambda: pending_rows(tmp_path) == 0)
        assert daemon.terminate() == 0
    assert len(runs(tmp_path)) == 2


def test_a_key_under_an_active_action_is_not_acted_on_again_and_the_undo_comes_after(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, after="2s"))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        append(log)
        wait_for(lambda: runs(tmp_path))
        append(log)  # the same address again while it is locked
        append(log, ip="198.51.100.7")
        wait_for(lambda: len(runs(tmp_path)) == 2)
        wait_for(lambda: len(runs(tmp_path)) == 4, timeout=10)
        assert daemon.terminate() == 0
        events = daemon.log_events()
    done = [(action, args) for _, action, args in runs(tmp_path)]
    assert sorted(done) == [
        ("do", "lock 198.51.100.7"),
        ("do", "lock 203.0.113.9"),
        ("undo", "unlock 198.51.100.7"),
        ("undo", "unlock 203.0.113.9"),
    ]
    first = {args.split()[1]: stamp for stamp, action, args in runs(tmp_path) if action == "do"}
    for stamp, action, args in runs(tmp_path):
        if action == "undo":
            assert stamp - first[args.split()[1]] >= 1.9
    skipped = [e for e in events if e.get("event", "").startswith("not acted on")]
    assert len(skipped) == 1
    assert "203.0.113.9 is already acted on until" in skipped[0]["event"]


def test_undo_is_checked_like_argv(tmp_path):
    base = config(tmp_path, after="1m")
    base["handlers"]["lock"]["undo"] = {"argv": ["unlock", "x"], "after": "1m"}
    path = write_config(tmp_path / "c.yaml", base)
    with pytest.raises(ConfigError, match=r"undo\.argv\[0\].*absolute path"):
        load(str(path))
    base["handlers"]["lock"]["undo"] = {"argv": ["/bin/true"]}
    write_config(path, base)
    with pytest.raises(ConfigError, match=r"handlers\.lock\.undo: missing required key 'after'"):
        load(str(path))
    base["handlers"]["lock"]["undo"] = {"argv": ["/bin/true", "{{ alert.key.ip"], "after": "1m"}
    write_config(path, base)
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: handlers\.lock\.undo\.argv\[1\]"):
        load(str(path))


def test_a_handler_with_undo_runs_one_program_at_a_time_and_keys_by_the_alert_key(tmp_path):
    cfg = load(str(write_config(tmp_path / "c.yaml", config(tmp_path, after="1m"))))
    handler: Any = build_handler(cfg.handlers["lock"], templates=Templates(), host=HostInfo.local())
    assert handler.concurrency == 1
    assert handler.undoes and handler.duration == 60.0
    assert handler.action_key({"key": {"ip": "192.0.2.1"}}) == "192.0.2.1"
    assert handler.action_key({"key": {"user": "bob", "host": "w1"}}) == "user=bob,host=w1"
    undo = {"key": {"ip": "192.0.2.1"}, "action": {"step": "undo"}}
    assert handler.argv(undo)[1:] == ["unlock", "192.0.2.1"]
    assert handler.environment(undo)["LOGWATCHD_ACTION"] == "undo"

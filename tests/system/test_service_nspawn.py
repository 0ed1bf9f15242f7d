"""logwatchd as a real systemd service: installed with systemd/install.sh in a booted Debian.

One story, in order: install from a wheelhouse (the container has no network), start (returns
only after READY=1), an alert reaches the alerts file and the journal with the right PRIORITY
and RULE, a broken config on reload keeps the old one running and says why, a fixed one is
taken, and stop ends it cleanly. Needs root, debootstrap and systemd-container; the Debian
root is built once (about a minute) and cached under /var/cache/logwatchd-test.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import nspawn

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
CONFIG = "/etc/logwatchd/logwatchd.yaml"
APP_LOG = "/var/log/testapp/app.log"
ALERTS = "/var/log/logwatchd/alerts.jsonl"
WATCHDOG_DROP_IN = "/etc/systemd/system/logwatchd.service.d/test-watchdog.conf"
NSPAWN_DROP_IN = "/etc/systemd/system/logwatchd.service.d/test-nspawn.conf"
NSPAWN_RELAXATIONS = """\
[Service]
ProtectKernelTunables=no
ProtectControlGroups=no
ProtectProc=default
"""

CONFIG_TEXT = """\
version: 1
daemon:
  state_dir: /var/lib/logwatchd
  commit_interval: 250ms
sources:
  - id: app
    type: file
    paths: [{app_log}]
    parser: app
    start_at: end
  - id: journal
    type: journald
    parser: journald
parsers:
  app:
    regex: '^(?P<timestamp>\\S+ \\S+) (?P<event_type>\\w+) - IP: (?P<ip>\\S+)'
    time_format: '%Y-%m-%d %H:%M:%S'
rules:
  - id: security-breach
    sources: [app]
    match: {{field: event_type, equals: SecurityBreach}}
    group_by: [ip]
    severity: {severity}
    handlers: [alerts-file, log]
  - id: journal-breach
    sources: [journal]
    match: {{field: message, contains: SecurityBreach}}
    severity: high
    handlers: [alerts-file]
handlers:
  alerts-file:
    type: file
    path: {alerts}
"""
SEVERITY_PRIORITY = {"critical": "2", "high": "3"}
# A typo'd key: the loader must reject it with file:line, and the old config must keep running.
BROKEN_CONFIG = CONFIG_TEXT.replace("    group_by: [ip]\n", "    group_by: [ip]\n    treshold: 3\n")


def config_text(severity: str) -> str:
    return CONFIG_TEXT.format(app_log=APP_LOG, alerts=ALERTS, severity=severity)


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nspawn.Container]:
    reason = nspawn.missing_requirements()
    if reason:
        pytest.skip(reason)
    root = nspawn.ensure_rootfs()
    work = tmp_path_factory.mktemp("nspawn")
    wheels = nspawn.build_wheelhouse(REPO, work / "wheels")
    booted = nspawn.boot(
        root,
        name=f"logwatchd-test-{os.getpid()}",
        binds_ro=[(str(wheels), "/mnt/wheels"), (str(REPO), "/mnt/src")],
        console=work / "console.log",
    )
    try:
        yield booted
    finally:
        # Shown by pytest only when the test failed: what the service said about itself.
        for argv in (
            ("systemctl", "status", "logwatchd", "--no-pager", "-l"),
            ("journalctl", "-u", "logwatchd", "--no-pager", "-a", "-n", "80"),
        ):
            with contextlib.suppress(Exception):
                print(booted.run(*argv, check=False).stdout)
        nspawn.shutdown(booted.nspawn)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.2)


def journal(box: nspawn.Container, *terms: str) -> list[dict[str, Any]]:
    """The daemon's own entries (not systemd's about it), oldest first."""
    out = box.run(
        "journalctl", "-u", "logwatchd", "-o", "json", "--no-pager", "-a", *terms, check=False
    ).stdout
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [entry for entry in entries if entry.get("SYSLOG_IDENTIFIER") == "logwatchd"]


def wait_for_entry(
    box: nspawn.Container,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    *,
    after: int = 0,
    timeout: float = 30,
) -> dict[str, Any]:
    """Poll the journal for the first daemon entry past index ``after`` matching predicate."""
    deadline = time.monotonic() + timeout
    while True:
        entries = journal(box)
        for entry in entries[after:]:
            if predicate(entry):
                return entry
        if time.monotonic() > deadline:
            messages = "\n".join(str(entry.get("MESSAGE")) for entry in entries[-20:])
            raise AssertionError(f"no journal entry for {what} within {timeout}s:\n{messages}")
        time.sleep(0.3)


def alerts(box: nspawn.Container) -> list[dict[str, Any]]:
    done = box.run("cat", ALERTS, check=False)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def wait_for_alert(box: nspawn.Container, ip: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for alert in alerts(box):
            if alert.get("key", {}).get("ip") == ip or ip in alert["event"]["raw"]:
                return alert
        if time.monotonic() > deadline:
            status = box.run("systemctl", "status", "logwatchd", "--no-pager", check=False)
            raise AssertionError(
                f"no alert for {ip} in {ALERTS} within {timeout}s\n{status.stdout}"
            )
        time.sleep(0.3)


def append_breach(box: nspawn.Container, ip: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    box.run("tee", "-a", APP_LOG, input=f"{stamp} SecurityBreach - IP: {ip}\n")


def service(box: nspawn.Container, *props: str) -> dict[str, str]:
    out = box.run("systemctl", "show", "logwatchd", "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def install_with_a_test_config(box: nspawn.Container) -> None:
    # Install exactly as the README says, from wheels: the container has no network.
    done = box.run(
        "/mnt/src/systemd/install.sh", "--wheels", "/mnt/wheels", "--no-start", timeout=300
    )
    assert "installed" in done.stdout
    groups = set(box.run("id", "-nG", "logwatchd").stdout.split())
    assert {"logwatchd", "adm", "systemd-journal"} <= groups
    assert service(box, "UnitFileState")["UnitFileState"] == "enabled"
    box.write_file(APP_LOG, "2026-01-01 00:00:00 Boot - IP: 192.0.2.1\n")
    box.write_file(CONFIG, config_text("critical"))
    box.run("/opt/logwatchd/bin/logwatchd", "check", "-c", CONFIG)
    # A short watchdog for the whole story: a loop that stops pinging gets killed (and
    # restarted, which the NRestarts check at the end would reveal).
    box.write_file(WATCHDOG_DROP_IN, "[Service]\nWatchdogSec=2s\n")
    # nspawn overlays the container's boot ID on /proc; these three options give the service a
    # fresh /proc with the host's, and journalctl --follow then shows nothing of "this boot".
    # On a real host both IDs are the kernel's: the unit keeps them (see its comment).
    box.write_file(NSPAWN_DROP_IN, NSPAWN_RELAXATIONS)
    box.run("systemctl", "daemon-reload")


def start_returns_after_ready(box: nspawn.Container) -> str:
    # Type=notify: start returns only after READY=1, so the unit is active right away.
    box.run("systemctl", "start", "logwatchd", timeout=120)
    state = service(box, "ActiveState", "SubState", "StatusText", "MainPID")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["StatusText"], "READY=1 came with a STATUS="
    started = wait_for_entry(box, lambda e: e["MESSAGE"].startswith("started"), "started")
    assert started["PRIORITY"] == "6"
    assert started["_TRANSPORT"] == "journal", "native protocol, not the stdout stream"
    assert started["_PID"] == state["MainPID"]
    first_ping = service(box, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
    wait_until(
        lambda: (
            service(box, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != first_ping
        ),
        "a WATCHDOG=1 ping",
    )
    return state["MainPID"]


def breach_line_alerts_to_file_and_journal(box: nspawn.Container) -> None:
    # An appended SecurityBreach line becomes an alert in the file and in the journal.
    append_breach(box, "203.0.113.9")
    alert = wait_for_alert(box, "203.0.113.9")
    assert alert["rule"] == "security-breach"
    assert alert["severity"] == "critical"
    logged = wait_for_entry(
        box,
        lambda e: e.get("RULE") == "security-breach" and e.get("PRIORITY") == "2",
        "the log handler's alert at PRIORITY 2",
    )
    assert "203.0.113.9" in logged["MESSAGE"] and "SecurityBreach" in logged["MESSAGE"]
    # The journal source works under the hardening (group systemd-journal, ProcSubset=pid).
    box.run("logger", "-t", "testapp", "SecurityBreach - IP: 198.51.100.20")
    from_journal = wait_for_alert(box, "198.51.100.20")
    assert from_journal["rule"] == "journal-breach"
    assert from_journal["event"]["source"] == "journal"
    # The source follows the whole journal, where the daemon's own log of the alert above
    # says "SecurityBreach" too, earlier: it never reads its own records
    from_journal_rule = [a for a in alerts(box) if a["rule"] == "journal-breach"]
    assert [a["event"]["raw"] for a in from_journal_rule] == [from_journal["event"]["raw"]]
    by_field = journal(box, "RULE=security-breach")
    assert by_field, "journalctl RULE=security-breach finds the alert"
    assert any(e.get("PRIORITY") == "2" for e in journal(box, "-p", "warning"))


def broken_reload_keeps_the_old_config(box: nspawn.Container) -> None:
    # A broken config on reload: the old config keeps running and the error names file:line.
    seen = len(journal(box))
    box.write_file(CONFIG, BROKEN_CONFIG.format(app_log=APP_LOG, alerts=ALERTS, severity="high"))
    box.run("systemctl", "reload", "logwatchd")
    failed = wait_for_entry(
        box, lambda e: e["MESSAGE"].startswith("reload failed"), "reload failed", after=seen
    )
    assert failed["PRIORITY"] == "3"
    assert f"{CONFIG}:" in failed["MESSAGE"] and "treshold" in failed["MESSAGE"]
    assert service(box, "ActiveState")["ActiveState"] == "active"
    append_breach(box, "203.0.113.10")
    assert wait_for_alert(box, "203.0.113.10")["severity"] == "critical"  # still the old config


def fixed_reload_is_taken(box: nspawn.Container) -> None:
    # A fixed config is taken: the next alert has the new severity.
    seen = len(journal(box))
    box.write_file(CONFIG, config_text("high"))
    box.run("systemctl", "reload", "logwatchd")
    wait_for_entry(box, lambda e: e["MESSAGE"].startswith("reloaded"), "reloaded", after=seen)
    assert service(box, "ActiveState")["ActiveState"] == "active"
    append_breach(box, "203.0.113.11")
    assert wait_for_alert(box, "203.0.113.11")["severity"] == "high"
    wait_for_entry(
        box,
        lambda e: e.get("RULE") == "security-breach" and e.get("PRIORITY") == "3",
        "the alert at PRIORITY 3 after the reload",
    )
    assert len([a for a in alerts(box) if a["key"].get("ip") == "203.0.113.9"]) == 1


def stop_ends_cleanly(box: nspawn.Container, main_pid: str) -> None:
    # Stop: SIGTERM, drain, exit 0.
    box.run("systemctl", "stop", "logwatchd", timeout=120)
    final = service(box, "ActiveState", "Result", "ExecMainStatus", "NRestarts", "ExecMainPID")
    assert final["NRestarts"] == "0", final
    assert final["ExecMainPID"] == main_pid, "one process from start to stop"
    assert final["ActiveState"] == "inactive", final
    assert final["Result"] == "success", final
    assert final["ExecMainStatus"] == "0", final
    wait_for_entry(box, lambda e: e["MESSAGE"].startswith("stopped"), "stopped")


def test_logwatchd_lives_and_dies_well_under_systemd(container: nspawn.Container) -> None:
    install_with_a_test_config(container)
    main_pid = start_returns_after_ready(container)
    breach_line_alerts_to_file_and_journal(container)
    broken_reload_keeps_the_old_config(container)
    fixed_reload_is_taken(container)
    stop_ends_cleanly(container, main_pid)


def test_reinstall_keeps_the_config_and_uninstall_reverses(container: nspawn.Container) -> None:
    box = container
    box.write_file(CONFIG, config_text("critical"))
    box.write_file(APP_LOG, "")

    # The default path checks the config, then enables and starts the service.
    done = box.run("/mnt/src/systemd/install.sh", "--wheels", "/mnt/wheels", timeout=300)
    assert f"keeping existing {CONFIG}" in done.stdout
    assert box.read_file(CONFIG) == config_text("critical")
    assert service(box, "ActiveState")["ActiveState"] == "active"

    # A bad config at start exits 78, and RestartPreventExitStatus keeps it from looping.
    box.write_file(CONFIG, BROKEN_CONFIG.format(app_log=APP_LOG, alerts=ALERTS, severity="high"))
    assert box.run("systemctl", "restart", "logwatchd", check=False).returncode != 0
    failed = service(box, "ActiveState", "ExecMainStatus", "NRestarts")
    assert failed == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}, failed
    box.write_file(CONFIG, config_text("critical"))

    done = box.run("/mnt/src/systemd/uninstall.sh")
    assert service(box, "LoadState")["LoadState"] == "not-found"
    assert box.run("test", "-e", "/opt/logwatchd", check=False).returncode != 0
    assert box.read_file(CONFIG) == config_text("critical")
    assert box.run("test", "-d", "/var/lib/logwatchd", check=False).returncode == 0

    box.run("/mnt/src/systemd/uninstall.sh", "--purge")
    for path in ("/etc/logwatchd", "/var/lib/logwatchd", "/var/log/logwatchd"):
        assert box.run("test", "-e", path, check=False).returncode != 0, path
    assert box.run("id", "logwatchd", check=False).returncode != 0

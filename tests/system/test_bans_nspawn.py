"""Bans under a real systemd: the installed service with the ban drop-in bans an address.

A Debian container with a network of its own (so nft never touches the host's ruleset) gets
logwatchd installed with systemd/install.sh, the capability drop-in from
systemd/ban-drop-in.conf.example, and a config that reads sshd from the journal by
``_SYSTEMD_UNIT=ssh.service``. sshd-style failure lines written by a unit named ssh.service
get the address banned in the container's nft set, the journal shows the ban under
``HANDLER=ban``, and ``logwatchd actions`` lists it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import nspawn
from .test_service_nspawn import NSPAWN_RELAXATIONS, journal, service, wait_for_entry

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
CONFIG = "/etc/logwatchd/logwatchd.yaml"
DROP_INS = "/etc/systemd/system/logwatchd.service.d"
ATTACKER = "203.0.113.77"
CONFIG_TEXT = """\
version: 1
daemon:
  state_dir: /var/lib/logwatchd
  commit_interval: 250ms
lists:
  trusted: [127.0.0.0/8, "::1"]
sources:
  - id: ssh-journal
    type: journald
    match: [_SYSTEMD_UNIT=ssh.service]
    parser: journald
rules:
  - id: sshd-ban
    sources: [ssh-journal]
    match:
      all:
        - {field: program, in: [sshd, sshd-session]}
        - field: message
          regex: '^Failed password for \\S+ from (?P<ip>[0-9A-Fa-f:.]+) port \\d+ ssh2$'
    group_by: [ip]
    threshold: {count: 3, window: 10m}
    severity: high
    handlers: [ban]
handlers:
  ban:
    type: nftables
    duration: 1h
    increase: {factor: 2, max: 1w}
    never: [trusted]
"""


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nspawn.Container]:
    reason = nspawn.missing_requirements()
    if reason:
        pytest.skip(reason)
    root = nspawn.ensure_rootfs()
    work = tmp_path_factory.mktemp("nspawn-bans")
    wheels = nspawn.build_wheelhouse(REPO, work / "wheels")
    booted = nspawn.boot(
        root,
        name=f"logwatchd-bans-{os.getpid()}",
        binds_ro=[(str(wheels), "/mnt/wheels"), (str(REPO), "/mnt/src")],
        console=work / "console.log",
        private_network=True,
    )
    try:
        yield booted
    finally:
        for argv in (
            ("systemctl", "status", "logwatchd", "--no-pager", "-l"),
            ("journalctl", "-u", "logwatchd", "--no-pager", "-a", "-n", "80"),
            ("nft", "list", "ruleset"),
        ):
            with contextlib.suppress(Exception):
                print(booted.run(*argv, check=False).stdout)
        nspawn.shutdown(booted.nspawn)


def banned(box: nspawn.Container) -> dict[str, dict[str, object]]:
    done = box.run("nft", "-j", "list", "set", "inet", "logwatchd", "banned4", check=False)
    if done.returncode != 0:
        return {}
    found = {}
    for entry in json.loads(done.stdout)["nftables"]:
        for item in entry.get("set", {}).get("elem", []):
            elem = item.get("elem", {"val": item})
            found[str(elem["val"])] = elem
    return found


def test_the_service_with_the_drop_in_bans_an_address_from_sshd_lines(
    container: nspawn.Container,
) -> None:
    box = container
    box.run("/mnt/src/systemd/install.sh", "--wheels", "/mnt/wheels", "--no-start", timeout=300)
    box.write_file(CONFIG, CONFIG_TEXT)
    box.run("/opt/logwatchd/bin/logwatchd", "check", "-c", CONFIG)
    drop_in = (REPO / "systemd" / "ban-drop-in.conf.example").read_text()
    box.write_file(f"{DROP_INS}/ban.conf", drop_in)
    box.write_file(f"{DROP_INS}/test-nspawn.conf", NSPAWN_RELAXATIONS)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "logwatchd", timeout=120)
    assert service(box, "ActiveState")["ActiveState"] == "active"
    # the table, sets and drop rule exist from the start, made by the unprivileged service
    box.wait_for(("nft", "list", "chain", "inet", "logwatchd", "input"), timeout=30)

    # sshd-style failures logged by a unit named ssh.service: journald sets _SYSTEMD_UNIT
    line = f"Failed password for root from {ATTACKER} port 4242 ssh2"
    box.run(
        "systemd-run", "--unit=ssh.service", "--collect", "--wait", "-p", "SyslogIdentifier=sshd",
        "/bin/sh", "-c", f"for n in 1 2 3; do echo '{line}'; done",
    )  # fmt: skip
    entry = wait_for_entry(
        box, lambda e: e.get("HANDLER") == "ban" and ATTACKER in e["MESSAGE"], "the ban"
    )
    assert entry["MESSAGE"].startswith(f"banned {ATTACKER} for 1h")
    assert entry["PRIORITY"] == "6"
    assert journal(box, "HANDLER=ban"), "journalctl -u logwatchd HANDLER=ban shows it"
    element = banned(box)[ATTACKER]
    assert 3500 < int(element["expires"]) <= 3600  # type: ignore[call-overload]
    rules = box.run("nft", "list", "chain", "inet", "logwatchd", "input").stdout
    assert "ip saddr @banned4 drop" in rules

    listed = box.run("/opt/logwatchd/bin/logwatchd", "actions", "-c", CONFIG, "--json").stdout
    [row] = json.loads(listed)
    assert (row["handler"], row["key"], row["state"]) == ("ban", ATTACKER, "applied")

    box.run("/opt/logwatchd/bin/logwatchd", "actions", "-c", CONFIG, "revert", "ban", ATTACKER)
    box.wait_for(("sh", "-c", f"! nft list set inet logwatchd banned4 | grep -q {ATTACKER}"))
    box.run("systemctl", "stop", "logwatchd", timeout=120)
    assert service(box, "Result")["Result"] == "success"

"""The daemon on the journal: the shipped sshd pack over real journal files, resumed by cursor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config
from tests.journal_helpers import append_journal, entry, have_journal_remote

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not have_journal_remote(), reason="needs systemd-journal-remote (tests/run installs it)"
)


def packs_on_a_journal(tmp_path: Path, packs: list[str], match: list[str] | None = None) -> Path:
    """A config: the shipped ``packs`` over the journal files in tmp_path/journal, from the
    beginning, alerts to tmp_path/alerts.jsonl."""
    (tmp_path / "journal").mkdir()
    (tmp_path / "rules.d").mkdir()
    for pack in packs:
        shutil.copy(REPO / "config" / "rules.d" / pack, tmp_path / "rules.d" / pack)
    source = {
        "id": "journal",
        "type": "journald",
        "directory": str(tmp_path / "journal"),
        "parser": "journald",
        "start_at": "beginning",
        **({"match": match} if match else {}),
    }
    config = {
        "version": 1,
        "include": ["rules.d/*.yaml"],
        "daemon": {"state_dir": str(tmp_path / "state"), "commit_interval": "200ms"},
        "sources": [source],
        "defaults": {"handlers": ["sink"]},
        "handlers": {"sink": {"type": "file", "path": str(tmp_path / "alerts.jsonl")}},
    }
    return write_config(tmp_path / "logwatchd.yaml", config)


def failures(first: int, count: int, ip: str) -> list[dict[str, str | bytes]]:
    return [
        entry(
            n,
            f"Failed password for invalid user admin{n} from {ip} port {40000 + n} ssh2",
            ident="sshd-session",
        )
        for n in range(first, first + count)
    ]


def test_sshd_pack_on_the_journal_fires_once_and_resumes_from_the_cursor(tmp_path):
    path = packs_on_a_journal(tmp_path, ["sshd.yaml"], match=["_SYSTEMD_UNIT=ssh.service"])
    journal = str(tmp_path / "journal" / "remote.journal")
    # an unrelated unit's entry that happens to say the same thing must not count
    append_journal(
        journal,
        [
            *failures(0, 4, "203.0.113.9"),
            entry(
                10, "Failed password for root from 203.0.113.9 port 1 ssh2", unit="other.service"
            ),
        ],
    )
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        append_journal(journal, failures(20, 1, "203.0.113.9"))
        alert = wait_for(lambda: read_jsonl(tmp_path / "alerts.jsonl"))[0]
        assert alert["rule"] == "sshd-auth-failure"
        assert alert["key"] == {"ip": "203.0.113.9"}
        assert alert["count"] == 5
        assert alert["event"]["fields"]["program"] == "sshd-session"
        assert daemon.terminate() == 0
    # while it was down: five more failures from another address
    append_journal(journal, failures(30, 5, "2001:db8::7"))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        alerts = wait_for(
            lambda: (
                len(read_jsonl(tmp_path / "alerts.jsonl")) == 2
                and read_jsonl(tmp_path / "alerts.jsonl")
            )
        )
        assert [a["key"]["ip"] for a in alerts] == ["203.0.113.9", "2001:db8::7"]
        assert daemon.terminate() == 0


def forged(n: int, message: str, ident: str) -> dict[str, str | bytes]:
    """What `logger -t IDENT MESSAGE` by user 1000 leaves in the journal."""
    return entry(
        n, message, ident=ident, unit="session-2.scope",
        _COMM="logger", _EXE="/usr/bin/logger", _UID="1000",
    )  # fmt: skip


def test_forged_journal_entries_do_not_alert_only_genuine_ones_do(tmp_path):
    """Any local user can claim to be sshd or sudo on the journal (SYSLOG_IDENTIFIER); the
    packs also check what journald itself recorded: the process name and its user."""
    path = packs_on_a_journal(tmp_path, ["sshd.yaml", "sudo.yaml"])
    journal_dir = tmp_path / "journal"
    failed = "Failed password for root from {} port 22 ssh2"
    pam = (
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={}"
    )
    sudo = "{} : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/{} ; USER=root ; COMMAND=x"
    entries = [
        # forged: logger run by user 1000, and a copy of logger renamed to sshd
        *(forged(n, failed.format("192.0.2.88"), "sshd") for n in range(0, 6)),
        *(
            entry(n, failed.format("192.0.2.89"), _COMM="sshd", _EXE="/home/eve/sshd", _UID="1000")
            for n in range(6, 12)
        ),
        *(forged(n, pam.format("192.0.2.99"), "sshd") for n in range(12, 18)),
        *(forged(n, sudo.format("mallory", "mallory"), "sudo") for n in range(18, 22)),
        # genuine: sshd and sudo, as journald records them (root, their own names)
        *(entry(n, failed.format("203.0.113.9"), ident="sshd-session") for n in range(30, 35)),
        *(entry(n, pam.format("198.51.100.5")) for n in range(35, 40)),
        *(entry(n, sudo.format("alice", "alice"), ident="sudo") for n in range(40, 43)),
    ]
    append_journal(str(journal_dir / "remote.journal"), entries)
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        alerts = wait_for(
            lambda: (
                len(read_jsonl(tmp_path / "alerts.jsonl")) >= 3
                and read_jsonl(tmp_path / "alerts.jsonl")
            )
        )
        assert daemon.terminate() == 0
    alerts = read_jsonl(tmp_path / "alerts.jsonl")  # all read: the genuine ones came last
    assert sorted((a["rule"], json.dumps(a["key"])) for a in alerts) == [
        ("pam-auth-failure", '{"ip": "198.51.100.5"}'),
        ("sshd-auth-failure", '{"ip": "203.0.113.9"}'),
        ("sudo-auth-failure", '{"user": "alice"}'),
    ]
    assert {a["event"]["fields"]["comm"] for a in alerts} == {"sshd", "sshd-session", "sudo"}

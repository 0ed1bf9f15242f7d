"""The daemon on the journal: the shipped sshd pack over real journal files, resumed by cursor."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config
from tests.journal_helpers import append_journal, entry, have_journal_remote

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not have_journal_remote(), reason="needs systemd-journal-remote (tests/run installs it)"
)


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
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    journal = str(journal_dir / "remote.journal")
    (tmp_path / "rules.d").mkdir()
    shutil.copy(REPO / "config" / "rules.d" / "sshd.yaml", tmp_path / "rules.d" / "sshd.yaml")
    config = {
        "version": 1,
        "include": ["rules.d/*.yaml"],
        "daemon": {"state_dir": str(tmp_path / "state"), "commit_interval": "200ms"},
        "sources": [
            {
                "id": "journal",
                "type": "journald",
                "directory": str(journal_dir),
                "match": ["_SYSTEMD_UNIT=ssh.service"],
                "parser": "journald",
                "start_at": "beginning",
            }
        ],
        "defaults": {"handlers": ["sink"]},
        "handlers": {"sink": {"type": "file", "path": str(tmp_path / "alerts.jsonl")}},
    }
    path = write_config(tmp_path / "logwatchd.yaml", config)
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

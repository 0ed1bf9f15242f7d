"""The banning example in config/logwatchd.yaml, uncommented, is a working config: sshd
brute force from the journal is banned (and a forged user name cannot choose the address),
and the recidive rule, a threshold over the daemon's own alerts, bans for a week."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from logwatchd.config import load
from logwatchd.handlers import build_handler
from logwatchd.templates import HostInfo, Templates

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "logwatchd.yaml"


def uncommented(text: str) -> str:
    """The example with every ``# >>> banning example`` ... ``# <<<`` block uncommented."""
    out, inside = [], False
    for line in text.splitlines():
        if ">>> banning example" in line:
            inside = True
        elif inside and line.strip() == "# <<<":
            inside = False
        elif inside:
            out.append(re.sub(r"^(\s*)# ?", r"\1", line))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def config_path(tmp_path: Path) -> Path:
    text = uncommented(EXAMPLE.read_text())
    assert "\n  - id: sshd-ban\n" in text and "\n  ban-long:\n" in text
    path = tmp_path / "logwatchd.yaml"
    path.write_text(text)
    return path


def logwatchd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logwatchd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def journal_record(message: str, second: int) -> str:
    stamp = int((time.time() - 60 + second) * 1_000_000)
    return json.dumps(
        {
            "MESSAGE": message,
            "SYSLOG_IDENTIFIER": "sshd",
            "_PID": "4242",
            "_SYSTEMD_UNIT": "ssh.service",
            "_HOSTNAME": "web1",
            "__REALTIME_TIMESTAMP": str(stamp),
        }
    )


def alerts_of(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    return [record for record in records if record["kind"] == "alert"]


def test_the_uncommented_example_passes_check(tmp_path):
    done = logwatchd("check", "-c", str(config_path(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "4 sources, 4 rules, 6 handlers" in done.stdout


def test_sshd_brute_force_from_the_journal_is_banned_and_a_user_name_cannot_choose(tmp_path):
    forged = (
        "Failed password for invalid user x from 192.0.2.1 port 1 from 203.0.113.5 port 22 ssh2"
    )
    lines = [journal_record(forged, n) for n in range(6)]
    lines += [
        journal_record(f"Failed password for root from 198.51.100.7 port {4000 + n} ssh2", 10 + n)
        for n in range(5)
    ]
    log = tmp_path / "journal.json"
    log.write_text("\n".join(lines) + "\n")
    path = config_path(tmp_path)
    found = alerts_of(
        logwatchd("test", "-c", str(path), "--source", "ssh-journal", "--json", str(log))
    )
    assert [(a["rule"], a["key"]) for a in found] == [("sshd-ban", {"ip": "198.51.100.7"})]
    ban = build_handler(
        load(str(path)).handlers["ban"], templates=Templates(), host=HostInfo.local()
    )
    assert ban.action_key(found[0]) == "198.51.100.7"  # type: ignore[attr-defined]


def test_recidive_bans_an_address_banned_three_times_in_a_day_for_a_week(tmp_path):
    def alert(rule: str, ip: str, n: int) -> str:
        return json.dumps({"id": f"id{n}", "rule": rule, "key": {"ip": ip}, "severity": "high"})

    lines = [alert("sshd-ban", "203.0.113.9", n) for n in range(3)]
    lines += [alert("sshd-ban", "198.51.100.1", 3), alert("other", "198.51.100.1", 4)]
    alerts_file = tmp_path / "alerts.jsonl"
    alerts_file.write_text("\n".join(lines) + "\n")
    path = config_path(tmp_path)
    found = alerts_of(
        logwatchd("test", "-c", str(path), "--source", "own-alerts", "--json", str(alerts_file))
    )
    assert [(a["rule"], a["key"]) for a in found] == [("recidive", {"key.ip": "203.0.113.9"})]
    cfg = load(str(path)).handlers["ban-long"]
    assert (cfg.settings.duration, cfg.settings.set) == (7 * 86400, "recidive")
    long_ban = build_handler(cfg, templates=Templates(), host=HostInfo.local())
    assert long_ban.action_key(found[0]) == "203.0.113.9"  # type: ignore[attr-defined]

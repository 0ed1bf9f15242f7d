"""The shipped unit: systemd itself accepts it, and rates its hardening at most 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "logwatchd.service"
EXEC_START = "/opt/logwatchd/bin/logwatchd"
MAX_EXPOSURE = 2.0

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def unit_with_existing_binary(tmp_path: Path, extra: str = "") -> Path:
    """A copy whose ExecStart exists here: verify checks that the binary is there."""
    binary = tmp_path / "bin" / "logwatchd"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    copy = tmp_path / "logwatchd.service"
    copy.write_text(UNIT.read_text().replace(EXEC_START, str(binary)) + extra)
    return copy


def analyze(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *argv], capture_output=True, text=True, timeout=60, check=False
    )


def exposure(unit: Path) -> float:
    done = analyze("security", "--offline=true", "--no-pager", str(unit))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def test_verify_accepts_the_unit(tmp_path: Path) -> None:
    done = analyze("verify", "--man=no", str(unit_with_existing_binary(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """Guards the test above: a typo in a directive must make verify complain."""
    unit = unit_with_existing_binary(tmp_path, "ProtectSystm=strict\n")
    done = analyze("verify", "--man=no", str(unit))
    assert "ProtectSystm" in done.stderr


def test_security_exposure_is_at_most_two(tmp_path: Path) -> None:
    score = exposure(unit_with_existing_binary(tmp_path))
    assert score <= MAX_EXPOSURE


def test_exposure_measure_reacts_to_dropping_hardening(tmp_path: Path) -> None:
    hardened = exposure(unit_with_existing_binary(tmp_path))
    weak_dir = tmp_path / "weak"
    weak_dir.mkdir()
    text = (
        UNIT.read_text().split("# --- hardening")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    )
    weak = weak_dir / "logwatchd.service"
    weak.write_text(text)
    assert exposure(weak) > hardened + 3


def test_the_unit_has_the_service_contract() -> None:
    text = UNIT.read_text()
    settings = {
        line.partition("=")[0]: line.partition("=")[2]
        for line in text.splitlines()
        if line and not line.startswith(("#", "["))
    }
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["ExecStart"] == f"{EXEC_START} run -c /etc/logwatchd/logwatchd.yaml"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["RestartPreventExitStatus"] == "78"
    assert settings["User"] == "logwatchd"
    assert set(settings["SupplementaryGroups"].split()) == {"adm", "systemd-journal"}
    assert settings["StateDirectory"] == "logwatchd"
    assert "WatchdogSec" in settings


def test_sysusers_file_declares_the_user_and_groups() -> None:
    entries = [
        line.split()
        for line in (SYSTEMD_DIR / "logwatchd.sysusers").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert entries[0][:2] == ["u", "logwatchd"]
    assert {e[2] for e in entries if e[0] == "m"} == {"adm", "systemd-journal"}


def test_scripts_parse_as_posix_shell() -> None:
    for script in ("install.sh", "uninstall.sh"):
        done = subprocess.run(
            ["sh", "-n", str(SYSTEMD_DIR / script)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr


def test_the_ban_drop_in_is_valid_and_keeps_the_bar(tmp_path: Path) -> None:
    unit = unit_with_existing_binary(tmp_path)
    drop_ins = tmp_path / "logwatchd.service.d"
    drop_ins.mkdir()
    (drop_ins / "ban.conf").write_text((SYSTEMD_DIR / "ban-drop-in.conf.example").read_text())
    done = analyze("verify", "--man=no", str(unit))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = analyze("security", "--offline=true", "--no-pager", str(unit)).stdout
    assert re.search(r"✗ CapabilityBoundingSet=~CAP_NET_ADMIN", report), "the drop-in was read"
    assert exposure(unit) <= MAX_EXPOSURE


def test_the_descriptor_limit_leaves_room_above_the_files_held_open() -> None:
    """The daemon holds at most half its descriptor limit in followed files: the unit's
    limit must not cut the default max_open_files down."""
    from logwatchd.config.model import DaemonConfig

    limits = [ln for ln in UNIT.read_text().splitlines() if ln.startswith("LimitNOFILE=")]
    assert len(limits) == 1
    assert int(limits[0].partition("=")[2]) >= 2 * DaemonConfig().max_open_files


def test_the_local_only_drop_in_takes_ip_away(tmp_path: Path) -> None:
    """For hosts whose handlers and metrics listener need no IP: verify accepts it, and the
    exposure only goes down."""
    unit = unit_with_existing_binary(tmp_path)
    base = exposure(unit)
    drop_ins = tmp_path / "logwatchd.service.d"
    drop_ins.mkdir()
    example = SYSTEMD_DIR / "local-only-drop-in.conf.example"
    (drop_ins / "local-only.conf").write_text(example.read_text())
    done = analyze("verify", "--man=no", str(unit))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = analyze("security", "--offline=true", "--no-pager", str(unit)).stdout
    assert "✓ RestrictAddressFamilies=~AF_(INET|INET6)" in report, report
    assert exposure(unit) < base


def test_the_unit_gives_the_metrics_socket_a_directory() -> None:
    text = UNIT.read_text()
    assert "RuntimeDirectory=logwatchd" in text.splitlines()

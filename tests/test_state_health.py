"""A damaged state database is a clear refusal (exit 78, no traceback, no restart loop) and
`state check --recover` keeps what is readable; a full disk delays commits and deliveries
and loses nothing."""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import (
    DaemonProcess,
    app_config,
    logwatchd,
    read_jsonl,
    wait_for,
    write_config,
)

PAGE = 4096


def config(tmp_path: Path, state: Path, handler: dict[str, Any] | None = None) -> dict[str, Any]:
    return app_config(tmp_path, state=state, handler=handler)


def breaches(log: Path, first: int, count: int) -> None:
    with log.open("a") as handle:
        for n in range(first, first + count):
            handle.write(f"2026-11-26 10:00:00 Breach - IP: 10.0.{n // 250}.{n % 250 + 1}\n")


def run_once(path: Path, log: Path, alerts: Path, first: int, count: int) -> None:
    """A daemon that reads ``count`` breaches, delivers them, and stops cleanly."""
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        breaches(log, first, count)
        wait_for(lambda: len(read_jsonl(alerts)) >= first + count)
        assert daemon.terminate() == 0


def add_history(db_path: Path, rows: int) -> None:
    """Delivered alerts of the past week, as a long-running daemon's outbox holds them."""
    db = sqlite3.connect(db_path)
    payload = json.dumps({"id": "x", "raw": "p" * 600})
    db.executemany(
        "INSERT INTO outbox (alert_id, handler, rule, alert, created, next_attempt, updated,"
        " status) VALUES (?, 'old', 'breach', ?, 1, 1, 1, 'done')",
        [(f"{n:032x}", payload) for n in range(rows)],
    )
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def damage(db_path: Path, first_page: int, pages: int) -> None:
    with db_path.open("r+b") as handle:
        handle.seek(first_page * PAGE)
        handle.write(b"\xa5" * (pages * PAGE))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    log, alerts, state = tmp_path / "app.log", tmp_path / "alerts.jsonl", tmp_path / "state"
    log.touch()
    return write_config(tmp_path / "c.yaml", config(tmp_path, state)), log, alerts, state


@pytest.mark.slow
def test_a_damaged_database_stops_the_daemon_with_exit_78_and_recover_keeps_the_rest(setup):
    path, log, alerts, state = setup
    run_once(path, log, alerts, 0, 3)
    db = state / "state.db"
    add_history(db, 2000)
    pages = db.stat().st_size // PAGE
    damage(db, pages // 2, 8)

    started = logwatchd("run", "-c", str(path))
    assert started.returncode == 78, started.stderr
    assert f"state database {db} is damaged: " in started.stderr
    assert "move it aside to start fresh (offsets and pending alerts in it are lost)" in (
        started.stderr
    )
    assert "Traceback" not in started.stderr

    checked = logwatchd("state", "check", "-c", str(path))
    assert checked.returncode == 2
    assert f"state database {db} is damaged:" in checked.stderr

    recovered = logwatchd("state", "check", "--recover", "-c", str(path))
    assert recovered.returncode == 0, recovered.stderr
    assert "sources: 1 rows kept" in recovered.stdout
    kept = sqlite3.connect(db).execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert 1500 < kept < 2003  # what the damaged pages held is gone, the rest is kept
    asides = [p.name for p in state.iterdir() if ".damaged-" in p.name]
    assert any(name.endswith(tuple("0123456789")) for name in asides)
    assert logwatchd("state", "check", "-c", str(path)).returncode == 0

    # the offsets survived: the next daemon neither repeats nor misses an alert
    run_once(path, log, alerts, 3, 2)
    assert len(read_jsonl(alerts)) == 5


@pytest.mark.slow
def test_a_database_that_is_not_one_any_more_is_refused_in_one_line(setup):
    path, log, alerts, state = setup
    run_once(path, log, alerts, 0, 1)
    damage(state / "state.db", 0, 1)  # the header: "file is not a database"
    started = logwatchd("run", "-c", str(path))
    assert started.returncode == 78
    assert f"state database {state / 'state.db'} is damaged: file is not a database" in (
        started.stderr
    )
    assert "Traceback" not in started.stderr
    status = logwatchd("status", "-c", str(path))
    assert status.returncode != 0
    assert "is damaged: file is not a database" in status.stderr
    assert "Traceback" not in status.stderr
    recovered = logwatchd("state", "check", "--recover", "-c", str(path))
    assert recovered.returncode == 0, recovered.stderr
    assert "nothing readable in:" in recovered.stdout
    assert logwatchd("state", "check", "-c", str(path)).returncode == 0


def test_recover_is_refused_while_a_daemon_runs(setup):
    path = setup[0]
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        recovered = logwatchd("state", "check", "--recover", "-c", str(path))
        assert recovered.returncode == 75
        assert f"is in use by pid {daemon.proc.pid}" in recovered.stderr
        daemon.kill()


# --- a really full filesystem -------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs for the disk-full test: {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"x" * PAGE)
    assert full.value.errno == errno.ENOSPC
    return filler


def events(daemon: DaemonProcess, text: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if text in e.get("event", "")]


@pytest.mark.slow
def test_a_full_disk_delays_the_commit_and_loses_nothing(tmp_path, small_fs):
    log, alerts = tmp_path / "app.log", tmp_path / "alerts.jsonl"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, small_fs / "state"))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        filler = fill(small_fs)
        breaches(log, 0, 300)  # a commit far larger than what the WAL has room for
        failure = wait_for(lambda: events(daemon, "state database commit failed, retrying"))[0]
        assert failure["level"] == "error"
        assert "database or disk is full" in failure["error"]
        assert daemon.proc.poll() is None
        assert read_jsonl(alerts) == []  # not committed: nothing was queued for delivery
        filler.unlink()
        wait_for(lambda: len(read_jsonl(alerts)) == 300, timeout=30)
        assert events(daemon, "state database commit succeeded again")
        assert len(events(daemon, "commit failed, retrying")) <= 2  # rate-limited
        assert daemon.terminate() == 0
    assert sorted(a["key"]["ip"] for a in read_jsonl(alerts)) == sorted(
        {f"10.0.{n // 250}.{n % 250 + 1}" for n in range(300)}
    )


@pytest.mark.slow
def test_a_full_disk_while_recording_a_delivery_does_not_repeat_it(tmp_path, small_fs):
    log, out, go = tmp_path / "app.log", tmp_path / "delivered", tmp_path / "go"
    log.touch()
    script = f'while [ ! -e {go} ]; do sleep 0.02; done; echo "$1" >> {out}'
    handler = {"type": "command", "argv": ["/bin/sh", "-c", script, "sh", "{{ alert.key.ip }}"]}
    path = write_config(tmp_path / "c.yaml", config(tmp_path, small_fs / "state", handler))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        breaches(log, 0, 1)
        wait_for(lambda: any(p.name == "sh" for p in running_children(daemon.proc.pid)))
        filler = fill(small_fs)
        go.touch()  # the command delivers while the disk is full
        wait_for(lambda: events(daemon, "recording a delivery failed, retrying"))
        assert out.read_text() == "10.0.0.1\n"
        filler.unlink()
        wait_for(lambda: events(daemon, "recording a delivery succeeded again"))
        assert daemon.terminate() == 0
    with DaemonProcess(path) as daemon:  # a delivery not recorded would be repeated here
        daemon.wait_ready()
        breaches(log, 1, 1)
        wait_for(lambda: len(out.read_text().splitlines()) == 2)
        assert daemon.terminate() == 0
    assert out.read_text() == "10.0.0.1\n10.0.0.2\n"


def running_children(pid: int) -> list[Path]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(Path((entry / "comm").read_text().strip()))
    return found

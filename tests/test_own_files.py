"""The daemon's own files: a symlink another user planted at the pidfile, the log file, the
alert file or in the state directory is refused and the file it points to stays untouched;
the state database is private whatever the umask."""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from logwatchd import own_files, state_lock
from logwatchd.errors import StateError
from logwatchd.state import StateStore
from tests.daemon_helpers import DaemonProcess, app_config, logwatchd, wait_for, write_config

SHADOW = "root:$y$j9T$hash:19000:0:99999:7:::\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to nobody")


def config(tmp_path: Path, alerts: Path, state: Path | None = None) -> dict[str, Any]:
    sink = {"type": "file", "path": str(alerts), "retry": {"backoff": "100ms"}}
    return app_config(tmp_path, state=state, handler=sink)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-only file, standing for /etc/shadow."""
    path = tmp_path / "shadow"
    path.write_text(SHADOW)
    path.chmod(0o600)
    return path


def planted(link: Path, target: Path) -> Path:
    """A symlink made by another user (nobody), as in a directory that user can write."""
    link.symlink_to(target)
    nobody = pwd.getpwnam("nobody")
    os.lchown(link, nobody.pw_uid, nobody.pw_gid)
    return link


@pytest.mark.parametrize("option", ["--pidfile", "--log-file"])
def test_a_planted_pidfile_or_log_file_symlink_is_refused(tmp_path, secret, option):
    (tmp_path / "app.log").touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, tmp_path / "alerts.jsonl"))
    link = planted(tmp_path / "planted", secret)
    other = "--log-file" if option == "--pidfile" else "--pidfile"
    done = logwatchd(
        "run", "-c", str(path), "--daemon", option, str(link), other, str(tmp_path / "other")
    )
    assert done.returncode == 78
    assert f"{link}: cannot open the" in done.stderr
    assert "symbolic link" in done.stderr
    assert "Traceback" not in done.stderr
    assert secret.read_text() == SHADOW
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_the_file_handler_refuses_a_planted_symlink_and_delivers_once_it_is_gone(tmp_path, secret):
    alerts = tmp_path / "alerts.jsonl"
    log = tmp_path / "app.log"
    log.touch()
    planted(alerts, secret)
    path = write_config(tmp_path / "c.yaml", config(tmp_path, alerts))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        with log.open("a") as handle:
            handle.write("2026-11-26 10:00:00 Breach - IP: 203.0.113.9\n")

        def refused() -> list[dict[str, Any]]:
            return [e for e in daemon.log_events() if "symbolic link" in str(e.get("error", ""))]

        failure = wait_for(refused)[0]
        assert failure["event"] == "delivery failed, will retry"
        assert secret.read_text() == SHADOW
        alerts.unlink()
        wait_for(alerts.exists)
        assert daemon.terminate() == 0
    assert secret.read_text() == SHADOW
    assert len(alerts.read_text().splitlines()) == 1


def test_a_state_directory_that_is_a_symlink_or_world_writable_is_refused(tmp_path):
    (tmp_path / "app.log").touch()
    real = tmp_path / "real-state"
    real.mkdir(mode=0o750)
    link = planted(tmp_path / "state", real)
    path = write_config(tmp_path / "c.yaml", config(tmp_path, tmp_path / "a.jsonl", link))
    done = logwatchd("run", "-c", str(path))
    assert done.returncode == 78
    assert f"state directory {link} is a symbolic link" in done.stderr
    assert list(real.iterdir()) == []

    real.chmod(0o777)
    path = write_config(tmp_path / "c.yaml", config(tmp_path, tmp_path / "a.jsonl", real))
    done = logwatchd("run", "-c", str(path))
    assert done.returncode == 78
    assert "is writable by every user (mode 0777)" in done.stderr
    assert list(real.iterdir()) == []


@pytest.mark.parametrize("name", ["lock", "state.db", "state.db-wal", "state.db-shm"])
def test_a_symlink_planted_in_the_state_directory_is_not_followed(tmp_path, secret, name):
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    planted(state / name, secret)
    opener = state_lock.acquire if name == "lock" else StateStore.in_dir
    with pytest.raises(StateError, match="symbolic link"):
        opener(str(state))
    assert secret.read_text() == SHADOW


def test_the_state_database_and_its_wal_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        store = StateStore.in_dir(str(tmp_path / "state"))
        store.commit(sources={"app": {"offset": 1}})
        modes = {
            name: stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode)
            for name in ("state.db", "state.db-wal", "state.db-shm")
        }
        store.close()
    finally:
        os.umask(old)
    assert modes == {"state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600}
    assert sqlite3.connect(tmp_path / "state" / "state.db").execute(
        "SELECT count(*) FROM sources"
    ).fetchone() == (1,)


def test_open_own_refuses_hard_links_and_fifos(tmp_path, secret):
    os.link(secret, tmp_path / "hard")
    with pytest.raises(OSError, match="2 hard links"):
        own_files.open_own(str(tmp_path / "hard"), os.O_WRONLY | os.O_APPEND)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        own_files.open_own(str(tmp_path / "fifo"), os.O_WRONLY)
    assert secret.read_text() == SHADOW

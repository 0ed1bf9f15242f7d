"""One daemon per state directory: a second `run`, `run --daemon` or `test --execute` is
refused at once, and a daemon killed with SIGKILL leaves nothing that blocks the next."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from logwatchd import state_lock
from tests.daemon_helpers import (
    DaemonProcess,
    app_config,
    logwatchd,
    read_jsonl,
    wait_for,
    write_config,
)


def breach(log: Path, ip: str) -> None:
    with log.open("a") as handle:
        handle.write(f"2026-11-26 10:00:00 Breach - IP: {ip}\n")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "app.log"
    log.touch()
    return write_config(tmp_path / "c.yaml", app_config(tmp_path)), log


def test_a_second_run_is_refused_at_once_and_the_first_delivers_each_alert_once(tmp_path, setup):
    path, log = setup
    state = tmp_path / "state"
    with DaemonProcess(path) as first:
        first.wait_ready()
        started = time.monotonic()
        second = logwatchd("run", "-c", str(path))
        assert time.monotonic() - started < 10
        assert second.returncode == 75
        expected = f"state directory {state} is in use by pid {first.proc.pid}"
        assert expected in second.stderr
        assert "Traceback" not in second.stderr
        assert state_lock.holder(str(state)) == first.proc.pid

        breach(log, "203.0.113.1")
        wait_for(lambda: read_jsonl(tmp_path / "alerts.jsonl"))
        assert first.terminate() == 0
    assert [a["key"]["ip"] for a in read_jsonl(tmp_path / "alerts.jsonl")] == ["203.0.113.1"]
    assert state_lock.holder(str(state)) is None


@pytest.mark.slow
def test_test_execute_and_run_daemon_are_refused_while_a_daemon_runs(tmp_path, setup):
    path, log = setup
    breach(log, "203.0.113.2")
    with DaemonProcess(path) as first:
        first.wait_ready()
        message = f"is in use by pid {first.proc.pid}"
        replay = logwatchd("test", "-c", str(path), "--execute", str(log))
        assert replay.returncode == 75
        assert message in replay.stderr
        detached = logwatchd(
            "run", "-c", str(path), "--daemon", "--pidfile", str(tmp_path / "d.pid")
        )
        assert detached.returncode == 75
        assert message in detached.stderr
        assert not (tmp_path / "d.pid").exists()
        assert first.terminate() == 0
    assert read_jsonl(tmp_path / "alerts.jsonl") == []  # start_at: end; nothing executed
    replay = logwatchd("test", "-c", str(path), "--execute", str(log))
    assert replay.returncode == 0, replay.stderr
    assert len(read_jsonl(tmp_path / "alerts.jsonl")) == 1


def test_after_kill_9_a_new_daemon_starts_and_takes_over(tmp_path, setup):
    path, log = setup
    with DaemonProcess(path) as first:
        first.wait_ready()
        first.kill()
    assert (tmp_path / "state" / "lock").read_text() == f"{first.proc.pid}\n"  # stale text...
    assert state_lock.holder(str(tmp_path / "state")) is None  # ...but nobody holds it
    with DaemonProcess(path) as second:
        second.wait_ready()
        assert state_lock.holder(str(tmp_path / "state")) == second.proc.pid
        breach(log, "203.0.113.3")
        wait_for(lambda: read_jsonl(tmp_path / "alerts.jsonl"))
        assert second.terminate() == 0


def test_a_detached_daemon_holds_the_lock_under_its_own_pid(tmp_path, setup):
    path, _ = setup
    pidfile = tmp_path / "d.pid"
    launched = logwatchd("run", "-c", str(path), "--daemon", "--pidfile", str(pidfile))
    assert launched.returncode == 0, launched.stderr
    pid = wait_for(lambda: pidfile.exists() and int(pidfile.read_text() or 0))
    try:
        state = str(tmp_path / "state")
        assert wait_for(lambda: state_lock.holder(state) == pid)
        second = logwatchd("run", "-c", str(path))
        assert second.returncode == 75
        assert f"is in use by pid {pid}" in second.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists())
    assert wait_for(lambda: state_lock.holder(str(tmp_path / "state")) is None)


def test_acquire_waits_out_a_status_probe_and_refuses_a_real_holder(tmp_path):
    state = str(tmp_path / "state")
    with state_lock.acquire(state) as held:
        assert held.fd is not None
        assert state_lock.holder(state) == os.getpid()
        with pytest.raises(state_lock.StateDirInUse, match=f"in use by pid {os.getpid()}"):
            state_lock.acquire(state, wait=0.1)
    assert state_lock.holder(state) is None

    # a reader's probe (shared, for an instant) must not make a starting daemon give up
    probe = os.open(os.path.join(state, "lock"), os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH)
    timer = threading.Timer(0.3, os.close, (probe,))
    timer.start()
    try:
        with state_lock.acquire(state) as lock:
            assert lock.fd is not None
    finally:
        timer.join()


def test_holder_creates_nothing(tmp_path):
    assert state_lock.holder(str(tmp_path / "missing")) is None
    assert not (tmp_path / "missing").exists()

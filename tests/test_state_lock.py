"""Who holds a state directory: a real process's flock, gone when the process is killed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from logwatchd import state_lock
from logwatchd.errors import ConfigError
from tests.daemon_helpers import wait_for

HOLD = (
    "import sys, time; from logwatchd import state_lock; "
    "state_lock.hold(sys.argv[1]); print('held', flush=True); time.sleep(60)"
)


def test_nobody_holds_a_directory_without_a_lock_file(tmp_path):
    assert state_lock.holder(str(tmp_path)) is None


def test_the_holder_is_the_live_process_and_nobody_after_kill(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        assert state_lock.holder(str(tmp_path)) == proc.pid
        with pytest.raises(ConfigError, match=f"is in use by pid {proc.pid}"):
            state_lock.hold(str(tmp_path))
    finally:
        proc.kill()
        proc.wait()
    # the pid is still in the file; the lock, not the file, says who runs
    assert (tmp_path / "lock").read_text().strip() == str(proc.pid)
    wait_for(lambda: state_lock.holder(str(tmp_path)) is None)


def test_holding_twice_in_one_process_is_harmless(tmp_path):
    fd = state_lock.hold(str(tmp_path))
    assert fd is not None
    try:
        assert state_lock.hold(str(tmp_path)) is None
    finally:
        os.close(fd)

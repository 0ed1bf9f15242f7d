"""run --daemon: real detached processes, a real flock()ed pidfile, a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatchd.service import daemonize

# A tiny daemon: detach, note where it runs and with which umask, then wait for signals.
SCRIPT = """
import os, sys, time
from logwatchd.service.daemonize import detach
pidfile, marker = sys.argv[1], sys.argv[2]
with detach(pidfile, [], stderr_path=marker + ".err"):
    mask = os.umask(0); os.umask(mask)
    with open(marker, "w") as out:
        out.write(f"{os.getpid()} {os.getcwd()} {mask:o} {os.getsid(0)}")
    while True:
        time.sleep(1)
"""


def launch(pidfile: Path, marker: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "NOTIFY_SOCKET")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(pidfile), str(marker)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def wait_until(predicate: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def pid_in(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[int]]:
    """Pids of the daemons a test started: each is killed afterwards, by pid."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_detaching_writes_the_daemons_pid(tmp_path: Path, started: list[int]) -> None:
    pidfile, marker = tmp_path / "d.pid", tmp_path / "marker"
    done = launch(pidfile, marker)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: marker.exists() and marker.read_text())
    pid, cwd, mask, session = marker.read_text().split()
    started.append(int(pid))
    assert pid_in(pidfile) == int(pid)
    assert cwd == "/"
    assert mask == "27"
    assert int(session) != os.getsid(0)  # left the launcher's session and terminal
    assert int(session) != int(pid)  # and is not a session leader: cannot regain a terminal


def test_second_start_is_refused_while_running(tmp_path: Path, started: list[int]) -> None:
    pidfile, marker = tmp_path / "d.pid", tmp_path / "marker"
    assert launch(pidfile, marker).returncode == 0
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    first = pid_in(pidfile)
    started.append(first)
    second = launch(pidfile, tmp_path / "marker2")
    assert second.returncode != 0
    assert f"already running (pid {first})" in second.stderr
    assert pid_in(pidfile) == first
    assert not (tmp_path / "marker2").exists()


def test_a_start_after_sigkill_succeeds(tmp_path: Path, started: list[int]) -> None:
    pidfile, marker = tmp_path / "d.pid", tmp_path / "marker"
    assert launch(pidfile, marker).returncode == 0
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    first = pid_in(pidfile)
    started.append(first)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not alive(first))
    assert pid_in(pidfile) == first  # the stale file is still there...
    done = launch(pidfile, tmp_path / "marker2")
    assert done.returncode == 0, done.stderr  # ...and does not block the next start
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() not in ("", str(first)))
    second = pid_in(pidfile)
    started.append(second)
    assert alive(second)


def test_sigterm_removes_the_pidfile(tmp_path: Path, started: list[int]) -> None:
    pidfile, marker = tmp_path / "d.pid", tmp_path / "marker"
    assert launch(pidfile, marker).returncode == 0
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = pid_in(pidfile)
    started.append(pid)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists())


@pytest.mark.parametrize("variable", ["INVOCATION_ID", "NOTIFY_SOCKET"])
def test_refuses_to_detach_under_systemd(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "x")
    pidfile = tmp_path / "d.pid"
    with (
        pytest.raises(daemonize.DetachRefused, match=f"started by systemd .\\${variable}"),
        daemonize.detach(str(pidfile), []),
    ):
        pytest.fail("must not get here")
    assert not pidfile.exists()

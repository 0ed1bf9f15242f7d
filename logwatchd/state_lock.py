"""Who runs on a state directory: the daemon holds an ``flock`` on ``<state_dir>/lock``.

The kernel drops the lock when the holder exits, even after ``kill -9``, so a lock that can
be taken means no daemon runs there, whatever an old pid in the file says.
"""

from __future__ import annotations

import fcntl
import os

from logwatchd.errors import ConfigError

LOCK_NAME = "lock"


def holder(state_dir: str) -> int | None:
    """The pid of the daemon holding ``state_dir``'s lock (0 if it wrote none), else None."""
    try:
        fd = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def hold(state_dir: str) -> int | None:
    """Take the lock for this process and write its pid; returns the descriptor to keep open
    (None if this process holds it already). Raises ConfigError when another process does."""
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    fd = os.open(
        os.path.join(state_dir, LOCK_NAME),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o640,
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _pid_in(fd)
        os.close(fd)
        if pid == os.getpid():
            return None
        raise ConfigError(f"state directory {state_dir} is in use by pid {pid}", None, "") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _pid_in(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii", "replace").strip() or 0)
    except ValueError:
        return 0

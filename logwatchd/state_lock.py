"""One daemon per state directory: an flock()ed ``lock`` file that holds the daemon's pid.

A daemon (``run``, ``run --daemon``, ``test --execute``) takes the lock before it opens the
state database and keeps it for its whole life; the kernel drops it when the process dies,
even by SIGKILL, so a crash never leaves a stale lock behind. A second daemon on the same
directory is refused at once: it would deliver every alert a second time. Readers
(``status``) never take the lock; ``holder`` tells them whether a daemon runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time

from logwatchd.errors import StateError
from logwatchd.own_files import open_own
from logwatchd.releasing import Releasing

__all__ = ["LOCK_NAME", "StateDirInUse", "StateLock", "acquire", "check_state_dir", "holder"]

LOCK_NAME = "lock"
# holder() holds a shared lock for an instant: a start that meets one tries again this long
ACQUIRE_WAIT = 2.0
RETRY_EVERY = 0.01
PID_WAIT = 0.5  # a daemon that just took the lock writes its pid right after


class StateDirInUse(StateError):
    """Another process holds the state directory's lock."""

    exit_code = 75  # EX_TEMPFAIL: under systemd the unit starts once the other one stops


class StateLock(Releasing):
    """The held lock; ``fd`` must survive a detach (``run --daemon`` keeps it open)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    def write_pid(self, pid: int | None = None) -> None:
        """Record the holder's pid (again after a fork: the lock goes with the descriptor)."""
        assert self.fd is not None
        data = f"{os.getpid() if pid is None else pid}\n".encode()
        # write first, then cut: a reader never sees an empty file once a pid was written
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        # The file stays: unlinking it would let a second daemon lock a new inode while a
        # late starter still holds the old one.
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def acquire(state_dir: str, *, wait: float = ACQUIRE_WAIT) -> StateLock:
    """Lock ``state_dir`` (created when missing) for this process, or raise StateDirInUse."""
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        os.makedirs(state_dir, mode=0o750, exist_ok=True)
        check_state_dir(state_dir)
        fd = open_own(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"cannot lock state directory {state_dir}: {exc.strerror}") from None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(RETRY_EVERY)
                continue
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            raise StateDirInUse(f"state directory {state_dir} is in use by {who}") from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot lock {path}: {exc.strerror}") from None
        lock = StateLock(path, fd)
        lock.write_pid()
        return lock


def check_state_dir(state_dir: str) -> None:
    """The daemon's files live here: no symlink to elsewhere, nobody else may add files."""
    info = os.lstat(state_dir)
    if stat.S_ISLNK(info.st_mode):
        raise StateError(
            f"state directory {state_dir} is a symbolic link: give the directory it points to"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise StateError(f"state directory {state_dir} is not a directory")
    if info.st_mode & stat.S_IWOTH:
        raise StateError(
            f"state directory {state_dir} is writable by every user "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): run chmod o-w on it"
        )


def holder(state_dir: str) -> int | None:
    """The pid of the daemon that holds ``state_dir``, or None when none does.

    Probes with a shared lock that is released at once, and never creates anything. 0 when a
    process holds the lock but its pid cannot be read.
    """
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None  # no daemon ever ran here
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _wait_for_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _wait_for_pid(fd: int) -> int:
    deadline = time.monotonic() + PID_WAIT
    while True:
        pid = _read_pid(fd)
        if pid or time.monotonic() > deadline:
            return pid or 0
        time.sleep(RETRY_EVERY)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text.isdigit() else None
    return None

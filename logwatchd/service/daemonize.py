"""``run --daemon``: detach with python-daemon, for hosts without systemd.

The pidfile is locked with ``flock`` by the launcher before it detaches, so a second start is
refused on the terminal with a non-zero exit, and the lock is held by the daemon for its whole
life. The kernel drops the lock when the process dies, even by SIGKILL, so a stale pidfile
never blocks the next start (``lockfile``'s TimeoutPIDLockFile does block it: NOTES.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Self, TextIO

import daemon

from logwatchd.errors import ConfigError
from logwatchd.own_files import open_own
from logwatchd.releasing import Releasing

__all__ = ["AlreadyRunning", "DetachRefused", "PidFile", "detach", "refuse_under_systemd"]

UMASK = 0o027  # state and alert files readable by the group, never by everyone


class DetachRefused(ConfigError):
    """``--daemon`` under systemd: the unit would lose track of its main process."""


class AlreadyRunning(ConfigError):
    """Another daemon holds the pidfile's lock."""


def refuse_under_systemd(env: Mapping[str, str] | None = None) -> None:
    environ = os.environ if env is None else env
    for variable in ("INVOCATION_ID", "NOTIFY_SOCKET"):
        if environ.get(variable):
            raise DetachRefused(
                f"refusing to detach: started by systemd (${variable} is set); "
                "run in the foreground (Type=notify) instead",
                key="--daemon",
            )


class PidFile(Releasing):
    """An flock()ed pidfile, usable as python-daemon's ``pidfile`` context."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now, in the launcher, so a refusal reaches the terminal."""
        try:
            fd = open_own(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open the pidfile: {exc.strerror}", key=self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"already running (pid {holder})", key=self.path) from None
        except OSError:
            os.close(fd)
            raise
        self.fd = fd

    def __enter__(self) -> Self:
        # Called by DaemonContext after the final fork: this is the daemon's own pid.
        if self.fd is None:
            self.acquire()
        assert self.fd is not None
        data = f"{os.getpid()}\n".encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        # Remove the file only while it is still ours (nobody replaced it meanwhile).
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def _open_log(path: str) -> TextIO:
    try:
        fd = open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as exc:
        raise ConfigError(f"cannot open the log file: {exc.strerror}", key=path) from None
    return open(fd, "a", encoding="utf-8")  # closed by detach()


@contextlib.contextmanager
def detach(
    pidfile: str, keep_fds: Sequence[int] = (), *, stderr_path: str | None = None
) -> Iterator[PidFile]:
    """Detach from the terminal; the body runs in the daemon, holding the pidfile lock.

    ``keep_fds`` survive (python-daemon closes every other descriptor). ``stderr_path``, when
    given, receives stdout and stderr (appended); otherwise they go to /dev/null. Raises
    DetachRefused under systemd and AlreadyRunning while another daemon holds the pidfile,
    both before anything forks.
    """
    refuse_under_systemd()
    lock = PidFile(os.path.abspath(pidfile))
    lock.acquire()
    assert lock.fd is not None
    output = _open_log(stderr_path) if stderr_path else None
    try:
        context = daemon.DaemonContext(
            detach_process=True,  # even when the launcher's parent is init: --daemon was asked for
            umask=UMASK,
            working_directory="/",
            pidfile=lock,
            files_preserve=[lock.fd, *keep_fds],
            stdout=output,
            stderr=output,
        )
        with context:
            yield lock
    finally:
        lock.release()
        if output is not None:
            output.close()

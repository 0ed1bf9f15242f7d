"""Opening the daemon's own files without following what someone else planted there.

The pidfile, ``--log-file``, the state directory's lock and database, and a ``file``
handler's alerts are opened by a daemon that may run as root, often in a directory other
users can write to. A symbolic link or a hard link planted at such a path would make the
daemon truncate or append to a file it never meant to touch (``/etc/shadow``), so these paths
are opened with ``O_NOFOLLOW`` and must be regular files with one link. The refusal is an
``OSError`` whose ``strerror`` says why, for the caller's "cannot open PATH: ..." message.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["check_existing", "open_own"]

_SAFE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # FIFOs: fail, never wait


def open_own(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` for one of the daemon's own files; raises OSError with a plain reason."""
    try:
        fd = os.open(path, flags | _SAFE, mode)
    except OSError as exc:
        raise _explained(exc, path) from None
    try:
        _check(os.fstat(fd), path)
    except OSError:
        os.close(fd)
        raise
    return fd


def check_existing(path: str) -> None:
    """Refuse ``path`` if it exists and is not a plain file of its own (a symlink, a device,
    a hard link to another file); for files another library opens (SQLite's database)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise OSError(errno.ELOOP, _SYMLINK, path)
    _check(info, path)


_SYMLINK = "it is a symbolic link, which the daemon does not follow"


def _check(info: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "it is not a regular file", path)
    if info.st_nlink > 1:
        raise OSError(
            errno.EMLINK, f"it has {info.st_nlink} hard links; the daemon writes only its own", path
        )


def _explained(exc: OSError, path: str) -> OSError:
    if exc.errno == errno.ELOOP:
        return OSError(errno.ELOOP, _SYMLINK, path)
    if exc.errno == errno.ENXIO:  # a FIFO without a reader, a socket
        return OSError(errno.ENXIO, "it is not a regular file", path)
    return exc

"""The daemon's own log into the journal: encoding entries in the native protocol, sending them.

One datagram per entry to ``/run/systemd/journal/socket``; an entry too large for a datagram
is written to a memfd, sealed, and its descriptor passed with SCM_RIGHTS, as sd_journal_send
does. Field names are sanitised here so event keys (which may come from log data) can never
forge a trusted field (``_PID``...) or break the format.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import re
import socket
import threading
from typing import Any

__all__ = ["JOURNAL_SOCKET", "JournalSender", "as_bytes", "encode_journal_entry", "field_name"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
_FIELD_NAME_MAX = 64


def field_name(key: str) -> str:
    """A journal field name for an event key: ``[A-Z0-9_]``, not starting with ``_`` or a digit."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:_FIELD_NAME_MAX]


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "replace")
    return str(value).encode("utf-8", "replace")


def encode_journal_entry(fields: list[tuple[str, Any]]) -> bytes:
    """Serialise fields in the native format.

    A value containing a newline uses the binary form (name, newline, 64-bit little-endian
    length, data) so log content can never start a field of its own.
    """
    out = bytearray()
    for name, value in fields:
        data = as_bytes(value)
        out += name.encode("ascii")
        if b"\n" in data:
            out += b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += b"=" + data + b"\n"
    return bytes(out)


class JournalSender:
    """Sends encoded entries to journald; falls back to the memfd path for large ones."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, entry: bytes) -> bool:
        """True when journald has the entry; False means the caller must write it elsewhere."""
        with self._lock:
            try:
                sock = self._socket()
                try:
                    sock.sendto(entry, self.path)
                except OSError as error:
                    if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):  # too big for a datagram
                        raise
                    self._send_memfd(sock, entry)
            except OSError:
                self._close()
                return False
        return True

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._sock

    def _send_memfd(self, sock: socket.socket, entry: bytes) -> None:
        # journald only accepts a memfd sealed against change, so it can map it safely.
        fd = os.memfd_create("logwatchd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with open(fd, "wb", closefd=False) as memfd:
                memfd.write(entry)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            sock.sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._close()

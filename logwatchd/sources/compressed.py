"""The unread rest of a file that was rotated and compressed while we were not looking.

When the daemon was down (or a copytruncate copy was compressed before the truncation was
seen), the bytes after the committed offset may now exist only inside ``app.log.2.gz``. The
archive is never read as text: it is decompressed as a stream, its first bytes checked against
the stored fingerprint and the bytes before the offset against the marker, and only the rest
is kept, in an anonymous memory file at the same offsets (the part before is a sparse hole),
so the ordinary reader drains it with the same origins and line numbers.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Callable
from typing import IO, Any

from logwatchd.sources.identity import (
    FINGERPRINT_BYTES,
    MARKER_BYTES,
    Fingerprint,
    Marker,
    marker_holds,
)

_OPENERS: dict[str, Callable[..., Any]] = {
    ".gz": gzip.open,
    ".xz": lzma.open,
    ".lzma": lzma.open,
    ".bz2": bz2.open,
}
_CHUNK = 1 << 20
# Beyond this much unread text the archive is left alone (logged as a loss by the caller).
MAX_UNREAD_BYTES = 256 * 1024 * 1024


def archive_head(path: str) -> bytes | None:
    """The first decompressed bytes of an archive (for its fingerprint), or None."""
    opener = _OPENERS.get(os.path.splitext(path)[1].lower())
    if opener is None:
        return None
    try:
        with opener(path, "rb") as stream:
            head: bytes = stream.read(FINGERPRINT_BYTES)
            return head
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return None


def unread_rest(
    path: str, fp: Fingerprint, keep_from: int, check_at: int, marker: Marker
) -> int | None:
    """A descriptor holding the archive's text from ``keep_from`` on, if it is the identity:
    it starts with ``fp`` and holds ``marker`` just before ``check_at`` (>= keep_from)."""
    opener = _OPENERS.get(os.path.splitext(path)[1].lower())
    if opener is None or fp.length == 0 or check_at < keep_from:
        return None
    try:
        with opener(path, "rb") as stream:
            return _extract(stream, fp, keep_from, check_at, marker)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return None


def _extract(
    stream: IO[bytes], fp: Fingerprint, keep_from: int, check_at: int, marker: Marker
) -> int | None:
    head = stream.read(FINGERPRINT_BYTES)
    if not fp.matches(head):
        return None
    # Keep a little before keep_from too, so the marker can be checked on the copy itself.
    write_from = max(0, keep_from - MARKER_BYTES)
    fd = os.memfd_create("logwatchd-unread", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, write_from)
        pos = _copy(stream, head, fd, write_from)
        if pos < check_at or not marker_holds(fd, check_at, marker):
            raise OSError("not the same content")
    except OSError:
        os.close(fd)
        return None
    return fd


def _copy(stream: IO[bytes], head: bytes, fd: int, write_from: int) -> int:
    """Write the stream's bytes from ``write_from`` on into ``fd`` at the same offsets."""
    pos = 0
    chunk = head
    while chunk:
        end = pos + len(chunk)
        if end > write_from:
            piece = chunk[max(0, write_from - pos) :]
            os.pwrite(fd, piece, end - len(piece))
            if end - write_from > MAX_UNREAD_BYTES:
                raise OSError("too much unread text in the archive")
        pos = end
        chunk = stream.read(_CHUNK)
    return pos

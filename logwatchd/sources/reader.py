"""One open file of a followed source: large-block reads, one split per block, exact offsets.

The reader never decides anything about rotation, nor knows how a position is stored: it
reads what its descriptor holds and keeps the position just after the last line handed out
(``offset``) with the fingerprint and marker that identify it. Bytes read beyond that (lines
not yet handed out, a partial last line) stay in memory, bounded by one block plus
``max_line_bytes``.
"""

from __future__ import annotations

import os
import secrets
from itertools import accumulate, repeat

from logwatchd.events import Line
from logwatchd.sources.identity import (
    FINGERPRINT_BYTES,
    MARKER_BYTES,
    NO_MARKER,
    Fingerprint,
    Marker,
    fingerprint,
    marker_at,
    marker_of,
    read_head,
)

BLOCK_BYTES = 256 * 1024


def new_tag() -> str:
    """The stable name of one content stream, used in every line's ``origin``.

    Random rather than derived from content: two files that begin with the same bytes (or are
    empty when first seen) must never share origins. It is stored in the checkpoint, so lines
    read again after a crash get the same origin.
    """
    return secrets.token_hex(8)


class FileReader:
    """The descriptor and read position of one file identity."""

    # a follower may hold 100,000 of them: no per-instance dict
    __slots__ = (
        "_checked", "_ends", "_last_cut", "_next", "_next_lineno", "_parked_marker",
        "_parse_skipping", "_pending", "_pending_start", "_ready", "_seen", "_tail",
        "_verify_start", "dev", "eof", "fd", "fixed_fp", "fp", "head", "ino", "last_data",
        "lineno", "max_line_bytes", "name", "offset", "orphan_since", "parked", "parked_stat",
        "path", "path_followed", "read_pos", "skipping", "source", "tag", "watched_size",
    )  # fmt: skip

    def __init__(
        self,
        fd: int,
        *,
        source: str,
        path: str | None,
        tag: str,
        offset: int,
        lineno: int,
        skipping: bool,
        max_line_bytes: int,
        fp: Fingerprint | None = None,
    ) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.source = source
        self.path = path  # where it is now (a rotated name once rotated)
        self.name = path  # the name a glob followed it by: where its rotations are looked for
        self.tag = tag
        # A given fingerprint is kept: the descriptor holds only part of the file (an archive's
        # unread rest), so its first bytes are not the file's.
        self.fixed_fp = fp is not None
        self.head = b"" if fp is not None else read_head(fd)  # the first bytes we know of
        self.fp: Fingerprint = fp if fp is not None else fingerprint(self.head)
        self.max_line_bytes = max_line_bytes
        self.offset = offset  # just after the last line handed out
        self.lineno = lineno  # of the last line handed out
        self.skipping = skipping  # offset is inside an over-long line whose rest is dropped
        self.orphan_since: float | None = None  # when the file lost its followed name
        self.path_followed = True  # a glob names this file now
        self.last_data = 0.0  # monotonic time of the last read that got bytes (set by the caller)
        self.watched_size = -1  # for a suspected copy that is not read: its size when last seen
        self._seen: tuple[int, int, int] = (-1, 0, 0)  # size, mtime, ctime at the last size()
        # Closed to stay under the open-file cap: the position stays, the descriptor does not.
        self.parked = False
        self.parked_stat: tuple[int, int] = (-1, 0)  # size and mtime when it was closed
        self._parked_marker = NO_MARKER
        self._verify_start = False  # re-opened: compare the first bytes at the next check
        self._start_reading_at(offset, skipping)

    # --- position ---------------------------------------------------------------------------

    def _start_reading_at(self, offset: int, skipping: bool) -> None:
        self.read_pos = offset
        self.eof = False
        self._pending = b""  # a partial line, starting at self._pending_start
        self._pending_start = offset
        self._parse_skipping = skipping
        self._tail = os.pread(self.fd, min(MARKER_BYTES, offset), max(0, offset - MARKER_BYTES))
        # (read_pos, _seen) when the bytes before read_pos last compared equal to _tail
        self._checked: tuple[int, tuple[int, int, int]] | None = None
        self._ready: list[Line] = []
        self._ends: list[int] = []
        self._next = 0
        self._last_cut = False  # the last ready line was cut and the rest is being skipped
        self._next_lineno = self.lineno

    def restart(self, tag: str) -> None:
        """The content was replaced (truncation): a new identity read from byte 0."""
        self.tag = tag
        self.head = read_head(self.fd)
        self.fp = fingerprint(self.head)
        self.offset = 0
        self.lineno = 0
        self.skipping = False
        self._start_reading_at(0, False)

    def rewind(self, offset: int, lineno: int, tag: str) -> None:
        """Continue another identity from its offset (a copytruncate copy of it)."""
        self.tag = tag
        self.offset = offset
        self.lineno = lineno
        self.skipping = False
        self._start_reading_at(offset, False)

    def start_at_end(self, size: int | None = None) -> None:
        """Skip what is there (or was, at ``size``), up to the last complete line."""
        size = os.fstat(self.fd).st_size if size is None else size
        look = min(size, self.max_line_bytes + 1)
        tail = os.pread(self.fd, look, size - look)
        nl = tail.rfind(b"\n")
        end = size - look + nl + 1 if nl >= 0 else (size if look > self.max_line_bytes else 0)
        self.offset = end
        self._start_reading_at(end, False)

    # --- checks -----------------------------------------------------------------------------

    def size(self) -> int:
        st = os.fstat(self.fd)
        self._seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return st.st_size

    def replaced(self, size: int) -> bool:
        """Was the file truncated, or rewritten so that the bytes we read are no longer there?

        Call right after ``size()``. The bytes before ``read_pos`` are compared again only when
        the file changed since they last compared equal: a quiet file costs one fstat."""
        if size < self.read_pos:
            return True
        if self._verify_start:  # re-opened by name: the inode may be a reused one
            self._verify_start = False
            if self.fp.length and not self.fp.matches(read_head(self.fd)):
                return True
        tail = self._tail
        if not tail:
            return False
        # size, mtime and ctime as when the same bytes last compared equal: no write since
        # (ctime cannot be set back by anyone; a write changes it)
        checked = (self.read_pos, self._seen)
        if self._seen[0] == size and checked == self._checked:
            return False
        if os.pread(self.fd, len(tail), self.read_pos - len(tail)) != tail:
            return True
        if self._seen[0] == size:
            self._checked = checked
        return False

    def tail_bytes(self) -> bytes:
        """The last bytes read (up to MARKER_BYTES), ending at ``read_pos``."""
        return self._tail

    def read_ready_only(self) -> list[Line]:
        """Lines already read but not handed out, without reading further."""
        return self._take(len(self._ready))

    def has_ready(self) -> bool:
        return self._next < len(self._ready)

    def marker(self) -> Marker:
        if self.parked:
            return self._parked_marker
        if self.offset == self.read_pos:
            return marker_of(self._tail)
        return marker_at(self.fd, self.offset)

    # --- reading ----------------------------------------------------------------------------

    def read(self, max_lines: int, now: float) -> list[Line]:
        """Up to ``max_lines`` complete lines; never blocks (regular files do not)."""
        out: list[Line] = []
        while len(out) < max_lines:
            try:
                if not self.has_ready() and not self._fill(now):
                    break
            except OSError:
                if out:  # hand out what was taken (the offset has moved past it)
                    break
                raise
            out.extend(self._take(max_lines - len(out)))
        return out

    def _take(self, n: int) -> list[Line]:
        start = self._next
        stop = min(start + n, len(self._ready))
        if stop == start:
            return []
        got = self._ready[start:stop]
        self._next = stop
        self.offset = self._ends[stop - 1]
        self.lineno = got[-1].lineno
        exhausted = stop == len(self._ready)
        self.skipping = exhausted and self._last_cut
        if exhausted:
            self._ready = []
            self._ends = []
            self._next = 0
        return got

    def _fill(self, now: float) -> bool:
        """Read one block and split it; False when nothing new is there."""
        chunk = os.pread(self.fd, BLOCK_BYTES, self.read_pos)
        if not chunk:
            self.eof = True
            return False
        self.eof = len(chunk) < BLOCK_BYTES
        self.read_pos += len(chunk)
        self._tail = (self._tail + chunk)[-MARKER_BYTES:]
        if not self.fixed_fp and self.fp.length < min(self.read_pos, FINGERPRINT_BYTES):
            self.head = read_head(self.fd)
            self.fp = fingerprint(self.head)
        data = self._pending + chunk if self._pending else chunk
        self._split(data, self._pending_start, now)
        return True

    def _split(self, data: bytes, base: int, now: float) -> None:
        pos = 0
        self._last_cut = False
        if self._parse_skipping:
            nl = data.find(b"\n")
            if nl < 0:
                self._pending, self._pending_start = b"", base + len(data)
                self.offset, self.skipping = base + len(data), True
                return
            pos = nl + 1
            self._parse_skipping = False
            self.offset, self.skipping = base + pos, False
        last = data.rfind(b"\n", pos)
        if last >= pos:
            self._emit(data[pos:last], base + pos, now)
            pos = last + 1
        rest = data[pos:]
        if len(rest) >= self.max_line_bytes:
            self._emit_cut(rest[: self.max_line_bytes], base + pos, now)
            self._parse_skipping = True
            self._last_cut = True
            rest = b""
            pos = len(data)
        self._pending, self._pending_start = rest, base + pos

    def _emit(self, body: bytes, start: int, now: float) -> None:
        """Turn complete lines (joined by newlines, without the last one) into Line objects."""
        chunks: list[bytes] | None = None
        if body.isascii():  # the common case: one decode, and byte lengths are text lengths
            texts = body.decode("ascii").split("\n")
            lengths = list(map(len, texts))
        else:
            chunks = body.split(b"\n")
            texts = [c.decode("utf-8", "replace") for c in chunks]
            lengths = list(map(len, chunks))
        starts = list(accumulate(map((1).__add__, lengths), initial=start))
        first = self._next_lineno + 1
        self._next_lineno += len(texts)
        src, tag, path = self.source, self.tag, self.path
        limit = self.max_line_bytes
        if max(lengths) <= limit:
            # map() over C-level callables: about 20% cheaper per line than a comprehension
            origins = map((tag + ":").__add__, map(str, starts))
            numbers = range(first, first + len(texts))
            lines = list(map(Line, repeat(src), texts, repeat(now), origins, repeat(path), numbers))
        else:
            chunks = chunks if chunks is not None else body.split(b"\n")
            lines = []
            for c, t, s, n in zip(
                chunks, texts, starts, range(first, first + len(texts)), strict=False
            ):
                long = len(c) > limit
                text = c[:limit].decode("utf-8", "replace") if long else t
                lines.append(Line(src, text, now, f"{tag}:{s}", path, n, long))
        self._ready.extend(lines)
        self._ends.extend(starts[1:])

    def _emit_cut(self, head: bytes, start: int, now: float) -> None:
        self._next_lineno += 1
        text = head.decode("utf-8", "replace")
        self._ready.append(
            Line(self.source, text, now, f"{self.tag}:{start}", self.path, self._next_lineno, True)
        )
        self._ends.append(start + len(head))

    def flush_partial(self, now: float) -> list[Line]:
        """A last line that never got its newline, handed out when its file is given up."""
        if self.has_ready() or not self._pending or self._parse_skipping:
            return []
        self._emit_cut(self._pending, self._pending_start, now)
        self._ready[-1].truncated = False
        self._pending = b""
        self._last_cut = False
        return self._take(1)

    # --- identity ---------------------------------------------------------------------------

    def refresh_fingerprint(self) -> None:
        """Extend a short fingerprint to what the file holds now, if it still starts the same.

        Taken at checkpoints, so a file rotated by copy before we read it is still recognised.
        """
        if self.fixed_fp or self.parked or self.fp.length >= FINGERPRINT_BYTES:
            return
        head = read_head(self.fd)
        if len(head) > self.fp.length and self.fp.matches(head):
            self.head, self.fp = head, fingerprint(head)

    def park(self) -> None:
        """Close the descriptor, keeping the position and what identifies the content."""
        self.refresh_fingerprint()
        self._parked_marker = self.marker()
        st = os.fstat(self.fd)
        self.parked_stat = (st.st_size, st.st_mtime_ns)
        self.close()
        self.parked = True

    def unpark(self, fd: int) -> bool:
        """Take ``fd`` back if it is the same inode (else the caller keeps it). Whether the
        content is still the same (first bytes, bytes before the position) is asked by the
        next ``replaced()``, as after a truncation."""
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.dev, self.ino):
            return False
        self.fd = fd
        self.parked = False
        self.eof = True  # read on only after a size check
        self._checked = None
        self._verify_start = True
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

"""The set of files a follower follows, one ``FileReader`` per identity, in reading order.

Keyed by (dev, ino): an open descriptor pins its inode, so within one run that pair is an
identity. Opening goes through here only, so every descriptor is opened the same way
(read-only, non-blocking, never a terminal, closed on exec) and a permission error is logged
once per path, not once per rescan.

At most ``cap`` followed files are held open. To open one more, the followed file that has
been quiet longest (read to its end) is parked: its descriptor is closed and its reader kept,
to be re-opened by identity when it changes. Orphans (rotated files being drained) come on
top of the cap until they go quiet and are never parked, nor are files a copy check holds;
an urgent open (an orphan, a copytruncate copy) never waits, and ``settle()`` parks back
under the cap once the reading is done.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
import sys
from collections.abc import Callable, Iterator

import structlog

from logwatchd.clock import Clock
from logwatchd.sources.identity import Fingerprint, is_compressed, without_compression
from logwatchd.sources.reader import FileReader, new_tag

log = structlog.get_logger()

Key = tuple[int, int]

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
STARVED_LOG_EVERY = 60.0  # seconds between two "out of descriptors" warnings


def descriptor_budget(configured: int) -> int:
    """How many files to hold open: at most half the process's descriptor limit, since the
    state database, handlers (pipes, sockets) and the journal reader need the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // 2))


class OpenFiles:
    def __init__(
        self,
        source: str,
        *,
        max_line_bytes: int,
        clock: Clock,
        cap: int | None = None,
        keep_open: Callable[[FileReader], bool] = lambda reader: False,
        exclude: frozenset[Key] = frozenset(),
    ) -> None:
        self.source = source
        self.cap = cap or sys.maxsize
        self._orphans_open = 0  # counted once per poll (``recount``): they are not capped
        self._max_line_bytes = max_line_bytes
        self._clock = clock
        self._keep_open = keep_open
        self._exclude = exclude
        self._readers: dict[Key, FileReader] = {}  # insertion order = reading order
        self._open: dict[Key, FileReader] = {}  # those holding a descriptor, in that order
        self._denied: set[str] = set()
        self._parked_at: dict[str, FileReader] = {}  # a parked reader by its followed name
        self._parked_name: dict[FileReader, str] = {}
        self._wanted: dict[FileReader, None] = {}  # parked, and changed (or unread): re-open
        self._spare: list[FileReader] | None = None  # park candidates, most recently busy last
        self._starved_logged = -STARVED_LOG_EVERY

    def __contains__(self, key: object) -> bool:
        return key in self._readers

    def __len__(self) -> int:
        return len(self._readers)

    def __iter__(self) -> Iterator[FileReader]:
        return iter(list(self._readers.values()))

    def get(self, key: Key | None) -> FileReader | None:
        return self._readers.get(key) if key is not None else None

    def excluded(self, key: Key) -> bool:
        return key in self._exclude

    @property
    def open_count(self) -> int:
        return len(self._open)

    def open_readers(self) -> list[FileReader]:
        """The readers holding a descriptor (parked ones left out: cheap with many files)."""
        return list(self._open.values())

    def reading_order(self) -> list[FileReader]:
        """Open readers, orphans (rotated away) first: their last lines precede the new
        file's first lines."""
        readers = list(self._open.values())
        return [r for r in readers if r.orphan_since is not None] + [
            r for r in readers if r.orphan_since is None
        ]

    def open(self, path: str, *, urgent: bool = False) -> int | None:
        """A read-only descriptor on the regular file at ``path``, or None (logged). Makes
        room under the cap first; ``urgent``: open even if there is none."""
        if is_compressed(path) or not self.room(urgent=urgent):
            return None
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except PermissionError as exc:
            if path not in self._denied:
                self._denied.add(path)
                log.warning(
                    "permission denied; will retry", source=self.source, path=path, error=str(exc)
                )
            return None
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                self._starved(path, exc)
            elif exc.errno != errno.ENOENT:  # it went away between the scan and the open
                log.warning("cannot open file", source=self.source, path=path, error=str(exc))
            return None
        if path in self._denied:
            self._denied.discard(path)
            log.info("file readable again", source=self.source, path=path)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def add(
        self, fd: int, path: str, *, followed: bool, tag: str | None = None, offset: int = 0,
        lineno: int = 0, skipping: bool = False, fp: Fingerprint | None = None,
    ) -> FileReader | None:  # fmt: skip
        """Follow the file behind ``fd`` (taken over: closed here if it is already followed).

        ``followed``: a glob names it; otherwise it is an orphan, read before the followed
        files. ``fp``: the fingerprint when the descriptor holds only part of the file."""
        reader = FileReader(
            fd,
            source=self.source,
            path=path,
            tag=tag or new_tag(),
            offset=offset,
            lineno=lineno,
            skipping=skipping,
            max_line_bytes=self._max_line_bytes,
            fp=fp,
        )
        key = (reader.dev, reader.ino)
        if key in self._readers or key in self._exclude:
            reader.close()
            return None
        reader.path_followed = followed
        if is_compressed(path):  # an archive's rest: its rotations are those of the plain name
            reader.name = without_compression(path) or path
        reader.last_data = self._clock.monotonic()
        if not followed:
            reader.orphan_since = reader.last_data
        self._readers[key] = reader
        self._open[key] = reader
        return reader

    def move_first(self, reader: FileReader) -> None:
        key = (reader.dev, reader.ino)
        rest = {k: r for k, r in self._readers.items() if k != key}
        self._readers = {key: reader, **rest}
        if key in self._open:
            self._open = {key: reader, **{k: r for k, r in self._open.items() if k != key}}

    def close(self, reader: FileReader) -> None:
        """Stop following ``reader``'s file."""
        key = (reader.dev, reader.ino)
        if self._readers.get(key) is reader:
            del self._readers[key]
            self._open.pop(key, None)
        self._unpark_bookkeeping(reader)
        reader.close()

    def close_all(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._open.clear()
        self._parked_at.clear()
        self._parked_name.clear()
        self._wanted.clear()

    # --- the cap ------------------------------------------------------------------------------

    def room(self, *, urgent: bool = False) -> bool:
        """Is there room for one more descriptor (parking a quiet file if need be)? An urgent
        open is made at once and parks nothing: it may come in the middle of reading, and
        ``settle()`` parks back under the cap once the reading is done."""
        return urgent or not self._full() or self._park_quietest()

    def park(self, reader: FileReader) -> None:
        """Close ``reader``'s descriptor, keeping it followed (re-opened by identity)."""
        unread = reader.size() > reader.read_pos or reader.has_ready()
        reader.park()
        self._open.pop((reader.dev, reader.ino), None)
        if reader.path:
            self._parked_at[reader.path] = reader
            self._parked_name[reader] = reader.path
        if unread:
            self._wanted[reader] = None

    def reopened(self, reader: FileReader) -> None:
        """``reader`` holds a descriptor again."""
        self._open[(reader.dev, reader.ino)] = reader
        self._unpark_bookkeeping(reader)

    def want(self, reader: FileReader) -> None:
        """A parked file changed: re-open it when there is room."""
        if reader.parked:
            self._wanted[reader] = None

    def parked_at(self, path: str) -> FileReader | None:
        return self._parked_at.get(path)

    def parked_name(self, reader: FileReader) -> str | None:
        """The name ``reader`` had when it was parked."""
        return self._parked_name.get(reader)

    def wanted(self) -> list[FileReader]:
        """Parked files to re-open, orphans (rotated while parked) and originals of a
        suspected copy first."""
        first: list[FileReader] = []
        then: list[FileReader] = []
        for reader in self._wanted:
            urgent = reader.orphan_since is not None or self._keep_open(reader)
            (first if urgent else then).append(reader)
        return first + then

    def recount(self) -> None:
        """Count the open orphans again (they change with each scan)."""
        self._orphans_open = sum(1 for r in self._open.values() if r.orphan_since is not None)

    def over_cap(self) -> bool:
        return self.open_count - self._orphans_open > self.cap

    def settle(self) -> None:
        """Park back under the cap (after urgent opens); forget this poll's candidates."""
        self.recount()
        while self.over_cap() and self._park_quietest():
            pass
        self._spare = None

    def _full(self) -> bool:
        return self.open_count - self._orphans_open >= self.cap

    def _park_quietest(self) -> bool:
        if self._spare is None:
            spare = [r for r in self._open.values() if self._parkable(r)]
            spare.sort(key=lambda r: r.last_data, reverse=True)
            self._spare = spare
        while self._spare:
            reader = self._spare.pop()
            if self._parkable(reader):
                try:
                    self.park(reader)
                except OSError:
                    continue
                return True
        return False

    def _parkable(self, reader: FileReader) -> bool:
        """A followed file read to its end (a pending partial line stays in memory), its
        content unchanged."""
        if reader.parked or reader.fd < 0 or not reader.path_followed or reader.has_ready():
            return False
        if reader.orphan_since is not None or self._keep_open(reader):
            return False
        try:
            size = reader.size()
            # truncated and refilled to the same size looks read to the end: ask the content
            return size == reader.read_pos and not reader.replaced(size)
        except OSError:
            return False

    def _unpark_bookkeeping(self, reader: FileReader) -> None:
        self._wanted.pop(reader, None)
        name = self._parked_name.pop(reader, None)
        if name is not None and self._parked_at.get(name) is reader:
            del self._parked_at[name]

    def _starved(self, path: str, exc: OSError) -> None:
        """Out of descriptors (another part of the process holds them): not an error of this
        file; it is opened again later. Said once a minute, not once per file."""
        now = self._clock.monotonic()
        if now - self._starved_logged >= STARVED_LOG_EVERY:
            self._starved_logged = now
            log.warning(
                "out of file descriptors; files wait to be opened",
                source=self.source,
                path=path,
                open_files=self.open_count,
                error=str(exc),
            )

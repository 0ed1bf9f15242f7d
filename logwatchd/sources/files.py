"""FileFollower: follow the files a source's globs name, losing and repeating nothing.

Design (see docs/ARCHITECTURE.md, SPEC section 5):
- Every followed file is a ``FileReader`` keyed by (dev, ino) while its descriptor is open.
  An open descriptor pins the inode, so within one run (dev, ino) is an identity; across
  restarts the fingerprint and the marker before the offset decide.
- Inotify only wakes us. All checks run in ``poll()`` on the caller's thread: a re-stat of
  open files at least every ``stat_interval`` (always after a wake), a glob rescan every
  ``rescan_interval`` (at once after a create/move/delete event).
- Rename rotation: a file that no glob names any more is an orphan; it stays open and is read
  before its successor until it has been quiet for ``orphan_grace`` seconds, then closed.
- Truncation (size below the read position, or the bytes before it changed): a copytruncate
  copy is looked for among the rotated names and continued from the old offset under the old
  identity; the truncated file restarts at 0 as a new identity.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from logwatchd.clock import Clock
from logwatchd.config.model import SourceConfig
from logwatchd.events import Line
from logwatchd.sources import discovery
from logwatchd.sources.copies import CopyHandling
from logwatchd.sources.identity import Fingerprint, is_compressed, without_compression
from logwatchd.sources.reader import FileReader, new_tag
from logwatchd.sources.restore import MIN_KNOWN_FINGERPRINT, Restoring, fingerprints
from logwatchd.sources.watch import DirWatcher

log = structlog.get_logger()

CHECKPOINT_VERSION = 1
RETIRED_KEPT = 64
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

Key = tuple[int, int]


class FileFollower(CopyHandling, Restoring):
    def __init__(
        self,
        config: SourceConfig,
        *,
        saved: dict[str, Any] | None,
        max_line_bytes: int,
        stat_interval: float,
        rescan_interval: float,
        clock: Clock,
        orphan_grace: float = 3.0,
        inotify: bool = True,
    ) -> None:
        self.id = config.id
        self._patterns = config.paths
        self._start_at = config.start_at
        self._first_run = saved is None
        self._saved: list[dict[str, Any]] = list((saved or {}).get("files", []))
        saved_at = (saved or {}).get("time")
        self._saved_at = float(saved_at) if isinstance(saved_at, (int, float)) else None
        # Identities drained and closed lately: after a restart, a rotated file holding one of
        # them is not new. Bounded: only the recent past can be confused.
        self._retired: deque[Fingerprint] = deque(
            fingerprints((saved or {}).get("retired", [])), maxlen=RETIRED_KEPT
        )
        self._max_line_bytes = max_line_bytes
        self._stat_interval = stat_interval
        self._rescan_interval = rescan_interval
        self._clock = clock
        self._grace = orphan_grace
        self._inotify = inotify  # False: stat checks only (tests, filesystems without events)
        self._readers: dict[Key, FileReader] = {}  # insertion order = reading order
        self._copy_of: dict[Key, Key] = {}  # a suspected copytruncate copy -> its original
        self._denied: set[str] = set()
        self._woken = threading.Event()
        self._structural = False
        self._rescan_due = False
        self._again = False  # more to do at once: ask the daemon to poll again
        self._retired_heads: deque[bytes] = deque(maxlen=RETIRED_KEPT)
        self._known_heads: list[bytes] = []
        self._last_scan: float | None = None  # wall time (file mtimes are compared with it)
        # (dev, ino, size, mtime) of files drained and closed: not to be read again
        self._closed: deque[tuple[int, int, int, int]] = deque(maxlen=RETIRED_KEPT * 4)
        self._next_stat = 0.0
        self._next_rescan = 0.0
        self._wake: Callable[[], None] = lambda: None
        self._watcher = DirWatcher(self.id, self._on_event)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        if self._inotify:
            self._watcher.start()  # before the first scan, so nothing created meanwhile is missed
        self._resume_saved()
        self._rescan(initial=True)

    def stop(self) -> None:
        self._watcher.stop()
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._copy_of.clear()

    def _on_event(self, structural: bool) -> None:
        if structural:
            self._structural = True
        self._woken.set()
        self._wake()

    # --- polling ------------------------------------------------------------------------------

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        mono = self._clock.monotonic()
        now = self._clock.now()
        woken = self._woken.is_set()
        check = woken or mono >= self._next_stat
        self._woken.clear()
        # Whether a followed name now points to another file is asked on every check when no
        # events come, else when one woke us: a lost event is found by the next rescan (idle
        # cost: one fstat per quiet file and check, no stat by name)
        events = self._inotify and not self._watcher.polling
        names = check and (woken or not events)
        if check:
            self._next_stat = mono + self._stat_interval
            self._watcher.check()
        if self._structural or self._rescan_due or mono >= self._next_rescan:
            self._structural = False
            self._rescan()
        out: list[Line] = []
        for key, reader in self._reading_order():
            if len(out) >= max_lines:
                break
            if key not in self._readers:
                continue
            try:
                if self._should_read(reader, check, names, now, out):
                    before = reader.read_pos
                    out.extend(reader.read(max_lines - len(out), now))
                    if reader.read_pos != before:
                        reader.last_data = mono
            except OSError as exc:  # EIO on a network filesystem, say: try again next time
                log.warning("cannot read file", source=self.id, path=reader.path, error=str(exc))
        if check:
            self._retire_quiet(mono, now, out, max_lines)
        if self._rescan_due or self._again:
            self._again = False
            self._wake()  # a name changed or a copy waits: come back soon
        return out

    def _reading_order(self) -> list[tuple[Key, FileReader]]:
        # Orphans (rotated away) first: their last lines precede the new file's first lines.
        items = list(self._readers.items())
        return [kv for kv in items if kv[1].orphan_since is not None] + [
            kv for kv in items if kv[1].orphan_since is None
        ]

    def _should_read(
        self, reader: FileReader, check: bool, names: bool, now: float, out: list[Line]
    ) -> bool:
        """``names``: also ask whether the reader's path now names another file."""
        key = (reader.dev, reader.ino)
        if key in self._copy_of:
            if check:
                self._review_copy(key, reader)
            return False
        if reader.has_ready() or not (reader.eof or check):
            return True
        try:
            size = reader.size()
            if (size != reader.read_pos or check) and reader.replaced(size):
                return self._truncated(reader, now, out)
        except OSError as exc:
            log.warning("cannot check file", source=self.id, path=reader.path, error=str(exc))
            return False
        if names and size == reader.read_pos and reader.orphan_since is None:
            self._rescan_due |= discovery.regular_key(reader.path or "") != key
        return size > reader.read_pos

    def _retire_quiet(self, mono: float, now: float, out: list[Line], max_lines: int) -> None:
        """Close orphans read to the end and quiet for the grace period."""
        for key, reader in list(self._readers.items()):
            since = reader.orphan_since
            if since is None or len(out) >= max_lines:
                continue
            if reader.has_ready() or mono - max(since, reader.last_data) < self._grace:
                continue
            try:
                more = reader.read(max_lines - len(out), now)
            except OSError:
                more = []
            if more:
                out.extend(more)
                reader.last_data = mono
                continue
            out.extend(reader.flush_partial(now))
            self._retire(reader)
            self._closed.append(_stat_key(reader.fd))
            reader.close()
            del self._readers[key]
            for copy_key, orig in list(self._copy_of.items()):
                if orig == key:
                    self._release_copy(copy_key, drained=False)

    # --- discovery ----------------------------------------------------------------------------

    def _rescan(self, *, initial: bool = False) -> None:
        self._rescan_due = False
        self._next_rescan = self._clock.monotonic() + self._rescan_interval
        self._watcher.update(discovery.watch_dirs(self._patterns))
        seen: set[Key] = set()
        matched = discovery.expand(self._patterns)
        for path in matched:
            key = discovery.regular_key(path)
            reader = self._readers.get(key) if key else None
            if reader is None and key is not None:
                reader = self._discover(path, initial=initial)
            if reader is not None:
                reader.path, reader.name = path, path
                reader.path_followed, reader.orphan_since = True, None
                seen.add((reader.dev, reader.ino))
        mono = self._clock.monotonic()
        for key, reader in self._readers.items():
            if key in seen:
                continue
            reader.path_followed = False
            if reader.orphan_since is None:
                reader.orphan_since = mono
                reader.path = self._current_name(reader) or reader.path
        names = {r.name for r in self._readers.values() if r.name}
        self._catch_missed_rotations(names, set(matched), initial)

    def _catch_missed_rotations(self, names: set[str], followed: set[str], initial: bool) -> None:
        """A file created and rotated away between two scans was never seen under its name:
        a rotated file written to since the last scan that we do not know is read from 0."""
        since, self._last_scan = self._last_scan, time.time()
        if initial or since is None:
            return
        known = [r.fp for r in self._readers.values()] + list(self._retired)
        known = [fp for fp in known if fp.length >= MIN_KNOWN_FINGERPRINT]
        # the bytes too: a copy still being written is a prefix of them, not yet a match
        self._known_heads = [r.head for r in self._readers.values()] + list(self._retired_heads)
        listing = discovery.Listing()
        for family in sorted({discovery.family(n) for n in names}):
            self._read_rotated_since(family, since, known, followed, listing)

    def _discover(self, path: str, *, initial: bool) -> FileReader | None:
        fd = self._open(path)
        if fd is None:
            return None
        reader = self._register(fd, path, followed=True)
        if reader is None:
            return None
        original = self._original_of(reader)
        if original is not None:
            self._copy_of[(reader.dev, reader.ino)] = original
            reader.start_at_end()
        elif initial and self._first_run and self._start_at == "end":
            reader.start_at_end()
        return reader

    def _open(self, path: str) -> int | None:
        if is_compressed(path):
            return None
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except PermissionError as exc:
            if path not in self._denied:
                self._denied.add(path)
                log.warning(
                    "permission denied; will retry", source=self.id, path=path, error=str(exc)
                )
            return None
        except OSError as exc:
            if exc.errno != 2:  # ENOENT: it went away between the scan and the open
                log.warning("cannot open file", source=self.id, path=path, error=str(exc))
            return None
        if path in self._denied:
            self._denied.discard(path)
            log.info("file readable again", source=self.id, path=path)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def _register(
        self, fd: int, path: str, *, followed: bool, tag: str | None = None, offset: int = 0,
        lineno: int = 0, skipping: bool = False, fp: Fingerprint | None = None,
    ) -> FileReader | None:  # fmt: skip
        reader = FileReader(
            fd,
            source=self.id,
            path=path,
            tag=tag or new_tag(),
            offset=offset,
            lineno=lineno,
            skipping=skipping,
            max_line_bytes=self._max_line_bytes,
            fp=fp,
        )
        key = (reader.dev, reader.ino)
        if key in self._readers:
            reader.close()
            return None
        reader.path_followed = followed
        if is_compressed(path):  # an archive's rest: its rotations are those of the plain name
            reader.name = without_compression(path) or path
        reader.last_data = self._clock.monotonic()
        if not followed:
            reader.orphan_since = reader.last_data
        self._readers[key] = reader
        return reader

    def _current_name(self, reader: FileReader) -> str | None:
        """The rotated name an orphan now has (for Line.path), if it is still in its directory."""
        if reader.name is None:
            return None
        for path in discovery.rotated_siblings(reader.name):
            if discovery.regular_key(path) == (reader.dev, reader.ino):
                return path
        return None

    # --- checkpoint ---------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        files = []
        for reader in self._readers.values():
            try:
                files.append(reader.state())
            except OSError as exc:
                log.warning(
                    "cannot checkpoint file", source=self.id, path=reader.path, error=str(exc)
                )
        retired = [{"fp": fp.digest, "fp_len": fp.length} for fp in self._retired]
        # Wall time from the system, not the injected clock: it is compared with file mtimes.
        return {
            "version": CHECKPOINT_VERSION,
            "time": time.time(),
            "files": files,
            "retired": retired,
        }


def _stat_key(fd: int) -> tuple[int, int, int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

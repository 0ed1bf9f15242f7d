"""FileFollower: follow the files a source's globs name, losing and repeating nothing.

The follower drives; each hard part is an object that owns its state (docs/ARCHITECTURE.md):
``OpenFiles`` (openfiles.py) the readers by identity, in reading order, and the cap on
descriptors; ``Reopener`` (reopen.py) parked files taken back by identity; ``Copies``
(copies.py) truncation and copytruncate copies; ``Restorer`` (restore.py) finding saved
identities again at start; ``Unseen`` (unseen.py) rotated files never seen under their name;
``Retired`` (retired.py) content drained and closed; ``checkpoint.py`` the stored form.

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
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from logwatchd.clock import Clock
from logwatchd.config.model import SourceConfig
from logwatchd.events import Line
from logwatchd.sources import checkpoint, discovery
from logwatchd.sources.copies import Copies
from logwatchd.sources.openfiles import OpenFiles
from logwatchd.sources.reader import FileReader
from logwatchd.sources.reopen import Reopener
from logwatchd.sources.restore import Restorer
from logwatchd.sources.retired import Retired
from logwatchd.sources.unseen import Unseen
from logwatchd.sources.watch import DirWatcher

log = structlog.get_logger()


class FileFollower:
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
        max_open_files: int | None = None,
        exclude: frozenset[tuple[int, int]] = frozenset(),
    ) -> None:
        """``exclude``: identities (dev, ino) never followed, whatever their name (the
        daemon's own log)."""
        self.id = config.id
        self._patterns = config.paths
        self._olddir = config.olddir
        self._start_at = config.start_at
        self._first_run = saved is None
        restored = checkpoint.decode(saved, self.id)
        self._saved: checkpoint.Saved | None = restored
        self._stat_interval = stat_interval
        self._rescan_interval = rescan_interval
        self._clock = clock
        self._grace = orphan_grace
        self._inotify = inotify  # False: stat checks only (tests, filesystems without events)
        # Identities drained and closed lately: after a restart, a rotated file holding one of
        # them is not new.
        self._retired = Retired(restored.retired)
        self._files = OpenFiles(
            self.id,
            max_line_bytes=max_line_bytes,
            clock=clock,
            cap=max_open_files,
            keep_open=self._keep_open,
            exclude=exclude,
        )
        self._copies = Copies(
            self._files,
            self._retired,
            clock=clock,
            grace=orphan_grace,
            olddir=config.olddir,
        )
        self._unseen = Unseen(self._files, self._retired, olddir=config.olddir, copies=self._copies)
        self._reopener = Reopener(self._files, self._copies, olddir=config.olddir)
        self._woken = threading.Event()
        self._touched: set[str] = set()  # paths events named since the last poll
        # Files a scan found while the cap left no room, opened as room frees: the size at
        # first sight, when what was there before the first start is to be skipped.
        self._waiting: dict[str, tuple[tuple[int, int], int] | None] = {}
        self._structural = False
        self._rescan_due = False
        self._again = False  # more to do at once: ask the daemon to poll again
        self._last_scan: float | None = None  # wall time (file mtimes are compared with it)
        self._dir_stamps: dict[str, int] = {}  # directory mtimes at the last scan
        self._next_stat = 0.0
        self._next_rescan = 0.0
        self._rescan_allowed = 0.0  # no rescan on an event before (a costly scan is spaced)
        self._wake: Callable[[], None] = lambda: None
        self._watcher = DirWatcher(self.id, self._on_event)
        self._encoder = checkpoint.Encoder(self.id)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        if self._inotify:
            self._watcher.start()  # before the first scan, so nothing created meanwhile is missed
        if self._saved is not None:
            restorer = Restorer(
                self._files,
                self._unseen,
                patterns=self._patterns,
                olddir=self._olddir,
            )
            restorer.resume(self._saved)
            self._saved = None
        self._rescan(initial=True)

    def stop(self) -> None:
        self._watcher.stop()
        self._files.close_all()
        self._copies.clear()

    def _on_event(self, structural: bool, paths: tuple[str, ...]) -> None:
        if structural:
            self._structural = True
        self._touched.update(paths)
        self._woken.set()
        self._wake()

    def _keep_open(self, reader: FileReader) -> bool:
        return self._copies.involved(reader)

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
        asked = (self._structural or self._rescan_due) and mono >= self._rescan_allowed
        if asked or mono >= self._next_rescan:
            self._structural = False
            self._rescan()
        self._files.recount()
        touched, self._touched = self._touched, set()
        for path in touched:
            parked = self._files.parked_at(path)
            if parked is not None:
                self._files.want(parked)
        opened, gone = self._reopener.reopen_wanted(mono)
        self._rescan_due |= gone
        opened += self._open_waiting()
        out: list[Line] = []
        for reader in self._files.reading_order():
            if len(out) >= max_lines:
                break
            if reader.fd < 0:
                continue  # closed meanwhile (a drained copy's original, say)
            try:
                if self._should_read(reader, check, names, out):
                    before = reader.read_pos
                    out.extend(reader.read(max_lines - len(out), now))
                    if reader.read_pos != before:
                        reader.last_data = mono
            except OSError as exc:  # EIO on a network filesystem, say: try again next time
                log.warning("cannot read file", source=self.id, path=reader.path, error=str(exc))
        closed = self._retire_quiet(mono, now, out, max_lines) if check else 0
        self._files.settle()
        # more files wait for a descriptor: come back at once while some could be opened
        self._again |= bool(opened + closed) and bool(self._waiting or self._files.wanted())
        if self._again or (self._rescan_due and mono >= self._rescan_allowed):
            self._again = False
            self._wake()  # a name changed or a copy waits: come back soon
        return out

    def _should_read(self, reader: FileReader, check: bool, names: bool, out: list[Line]) -> bool:
        """``names``: also ask whether the reader's path now names another file."""
        if self._copies.held(reader):
            if check:
                self._copies.review(reader)
            return False
        if reader.has_ready() or not (reader.eof or check):
            return True
        try:
            size = reader.size()
            if (size != reader.read_pos or check) and reader.replaced(size):
                ready = self._copies.truncated(reader, out)
                self._again |= not ready  # the copy's lines go first; the new content next poll
                return ready
        except OSError as exc:
            log.warning("cannot check file", source=self.id, path=reader.path, error=str(exc))
            return False
        if names and size == reader.read_pos and reader.orphan_since is None:
            self._rescan_due |= discovery.regular_key(reader.path or "") != (reader.dev, reader.ino)
        return size > reader.read_pos

    def _retire_quiet(self, mono: float, now: float, out: list[Line], max_lines: int) -> int:
        """Close orphans read to the end and quiet for the grace period; how many."""
        closed = 0
        for reader in self._files.open_readers():
            since = reader.orphan_since
            if since is None or reader.parked or len(out) >= max_lines:
                continue
            if self._copies.held(reader):
                continue  # a suspected copy is decided by Copies.review first
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
            self._retired.retire(reader)
            self._retired.closing(reader.fd)
            self._files.close(reader)
            self._copies.original_closed(reader)
            closed += 1
        return closed

    # --- discovery ----------------------------------------------------------------------------

    def _rescan(self, *, initial: bool = False) -> None:
        self._rescan_due = False
        began = self._clock.monotonic()
        dirs = discovery.watch_dirs(self._patterns)
        self._watcher.update(dirs)
        self._copies.forget_names()
        seen: set[FileReader] = set()
        followed_names = {r.name for r in self._files if r.name}
        matched = discovery.expand(self._patterns)
        for path in matched:
            st = discovery.regular_stat(path)
            if st is None:
                continue
            reader = self._files.get((st.st_dev, st.st_ino))
            if reader is None and self._files.excluded((st.st_dev, st.st_ino)):
                continue
            if reader is None:
                # a rotated name of a followed file: maybe a copy, to be compared at once
                family = discovery.family(path)
                urgent = family != path and family in followed_names
                reader = self._discover(path, st, initial=initial, urgent=urgent)
            elif reader.parked and (st.st_size, st.st_mtime_ns) != reader.parked_stat:
                self._files.want(reader)  # written to (or replaced) since it was closed
            if reader is not None:
                reader.path, reader.name = path, path
                reader.path_followed, reader.orphan_since = True, None
                seen.add(reader)
        mono = self._clock.monotonic()
        listing = discovery.Listing(self._olddir)
        for reader in self._files:
            if reader in seen:
                continue
            reader.path_followed = False
            if reader.parked:
                self._files.want(reader)  # found (renamed) and drained, or gone
            if reader.orphan_since is None:
                reader.orphan_since = mono
                reader.path = self._current_name(reader, listing) or reader.path
        orphans = [r for r in self._files.open_readers() if r.orphan_since is not None]
        dirs |= {os.path.dirname(r.name) for r in orphans if r.name}
        self._catch_missed_rotations(dirs, matched, initial)
        # A scan of many files is costly (100,000: half a second): events may ask for one at
        # most every 10 scan times, the periodic one comes every 50 (at most 10%, 2% of a core)
        ended = self._clock.monotonic()
        self._rescan_allowed = ended + 10 * (ended - began)
        self._next_rescan = ended + max(self._rescan_interval, 50 * (ended - began))

    def _catch_missed_rotations(self, dirs: set[str], matched: list[str], initial: bool) -> None:
        """A file created and rotated away between two scans was never seen under its name:
        a rotated file written to since the last scan that we do not know is read from 0."""
        since, self._last_scan = self._last_scan, time.time()
        # no name created, renamed or removed in those directories since: nothing to find
        stamps, self._dir_stamps = self._dir_stamps, discovery.dir_stamps(dirs, self._olddir)
        if initial or since is None or stamps == self._dir_stamps:
            return
        readers = list(self._files)
        followed = set(matched)
        self._unseen.read_rotated_since(
            {r.name for r in readers if r.name},
            since,
            followed=followed,
            known=[r.fp for r in readers] + list(self._retired.fingerprints),
            # the bytes too: a copy still being written is a prefix of them, not yet a match
            heads=[r.head for r in readers] + list(self._retired.heads),
        )

    def _discover(
        self, path: str, st: os.stat_result, *, initial: bool, urgent: bool
    ) -> FileReader | None:
        skip = initial and self._first_run and self._start_at == "end"
        if not urgent and (path in self._waiting or not self._files.room()):
            # what was there at the first start is skipped even if it is opened later
            self._waiting.setdefault(path, ((st.st_dev, st.st_ino), st.st_size) if skip else None)
            return None
        skip_to = ((st.st_dev, st.st_ino), st.st_size) if skip else None
        return self._follow_new(path, skip_to, urgent=urgent)

    def _follow_new(
        self, path: str, skip: tuple[tuple[int, int], int] | None, *, urgent: bool = False
    ) -> FileReader | None:
        """``skip``: identity and size at the first start, to be skipped up to there."""
        self._waiting.pop(path, None)
        fd = self._files.open(path, urgent=urgent)
        if fd is None:
            return None
        reader = self._files.add(fd, path, followed=True)
        if reader is None:
            return None
        if self._copies.suspect(reader):
            return reader  # held unread for now
        if skip is not None and skip[0] == (reader.dev, reader.ino):
            reader.start_at_end(skip[1])
        return reader

    def _open_waiting(self) -> int:
        """Open files the scan found while the cap left no room, as room frees."""
        opened = 0
        for path, skip in list(self._waiting.items()):
            if not self._files.room():
                break
            del self._waiting[path]  # gone or unreadable: the next scan says again
            opened += self._follow_new(path, skip) is not None
        return opened

    def _current_name(self, reader: FileReader, listing: discovery.Listing) -> str | None:
        """The name an orphan has now (for Line.path), if it is still in its directory or the
        olddir: a rotated name is tried first (cheap), then any name."""
        if reader.name is None:
            return None
        key = (reader.dev, reader.ino)
        for path in discovery.rotated_siblings(reader.name, self._olddir):
            if discovery.regular_key(path) == key:
                return path
        return listing.find([reader.name], key)

    # --- checkpoint ---------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        return self._encoder.encode(self._files, self._retired.fingerprints)

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
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from logwatchd.clock import Clock
from logwatchd.config.model import SourceConfig
from logwatchd.events import Line
from logwatchd.sources import discovery
from logwatchd.sources.compressed import archive_head, unread_rest
from logwatchd.sources.identity import (
    MIN_COPY_FINGERPRINT,
    NO_MARKER,
    Fingerprint,
    Marker,
    fingerprint,
    is_compressed,
    marker_holds,
    marker_of,
    read_head,
    rotated_from,
    without_compression,
)
from logwatchd.sources.reader import FileReader, new_tag
from logwatchd.sources.watch import DirWatcher

log = structlog.get_logger()

CHECKPOINT_VERSION = 1
RETIRED_KEPT = 64
MIN_KNOWN_FINGERPRINT = 16
MTIME_MARGIN = 1.0
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

Key = tuple[int, int]


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
            _fingerprints((saved or {}).get("retired", [])), maxlen=RETIRED_KEPT
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
        check = self._woken.is_set() or mono >= self._next_stat
        self._woken.clear()
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
            if key in self._readers and self._should_read(reader, check, now, out):
                before = reader.read_pos
                out.extend(reader.read(max_lines - len(out), now))
                if reader.read_pos != before:
                    reader.last_data = mono
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

    def _should_read(self, reader: FileReader, check: bool, now: float, out: list[Line]) -> bool:
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
        if check and size == reader.read_pos and reader.orphan_since is None:
            self._rescan_due |= discovery.regular_key(reader.path or "") != key
        return size > reader.read_pos

    # --- rotation, truncation, copies ---------------------------------------------------------

    def _truncated(self, reader: FileReader, now: float, out: list[Line]) -> bool:
        """Handle a truncated file; True when it may be read from its new start right away."""
        key = (reader.dev, reader.ino)
        copy = self._find_copy(reader)
        if copy is None:
            # What was read before the truncation is real content: hand it out, drop the rest.
            out.extend(reader.read_ready_only())
            log.info("file truncated; reading it from the start", source=self.id, path=reader.path)
        else:
            copy.rewind(reader.offset, reader.lineno, reader.tag)
            if not copy.path_followed:
                copy.orphan_since = self._clock.monotonic()
            self._move_first(copy)
            log.info(
                "file truncated after a copy; draining the copy",
                source=self.id,
                path=reader.path,
                copy=copy.path,
            )
        for copy_key, orig in list(self._copy_of.items()):
            if orig == key:
                chosen = copy is not None and copy_key == (copy.dev, copy.ino)
                self._release_copy(copy_key, drained=chosen)
        self._retired.append(reader.fp)  # that content is done with: a copy of it is not new
        reader.restart(new_tag())
        if copy is not None:
            self._again = True  # the copy's lines go first; the new content next poll
        return copy is None

    def _find_copy(self, reader: FileReader) -> FileReader | None:
        """A copytruncate copy of ``reader``: same first bytes, holds what we read, other inode."""
        me = (reader.dev, reader.ino)
        marker = marker_of(reader.tail_bytes())
        if reader.fp.length == 0 or reader.name is None:
            return None
        base = os.path.basename(reader.name)
        for key, cand in self._readers.items():
            if key == me or not cand.path or not rotated_from(os.path.basename(cand.path), base):
                continue
            if _holds(cand.fd, reader.fp, reader.read_pos, marker):
                return cand
        for path in discovery.rotated_siblings(reader.name):
            key = discovery.regular_key(path)
            if key is None or key in self._readers:
                continue
            fd = self._open(path)
            if fd is None:
                continue
            if _holds(fd, reader.fp, reader.read_pos, marker):
                copy = self._register(fd, path, followed=False)
                if copy is not None:
                    return copy
            else:
                os.close(fd)
        # The copy may already be compressed (copytruncate + compress, seen late).
        for path in discovery.compressed_siblings(reader.name):
            fd = unread_rest(path, reader.fp, reader.offset, reader.read_pos, marker)
            if fd is not None:
                return self._register(fd, path, followed=False, fp=reader.fp)
        return None

    def _review_copy(self, key: Key, copy: FileReader) -> None:
        """Decide about a suspected copy whose original has not been truncated (yet)."""
        original = self._readers.get(self._copy_of[key])
        if original is None:
            self._release_copy(key, drained=False)
            return
        if original.size() < original.read_pos:
            return  # truncated: the original's own check drains this copy
        if not _copy_like(read_head(copy.fd), original):
            del self._copy_of[key]  # not a copy after all: a new file, read from its start
            copy.rewind(0, 0, copy.tag)
            return
        size, mono = copy.size(), self._clock.monotonic()
        if size != copy.watched_size:  # still being written (a slow copy): wait for it
            copy.watched_size, copy.last_data = size, mono
        elif mono - copy.last_data >= self._grace:
            self._release_copy(key, drained=False)  # an exact copy: its content is known

    def _release_copy(self, copy_key: Key, *, drained: bool) -> None:
        del self._copy_of[copy_key]
        copy = self._readers.get(copy_key)
        if copy is not None and not drained:
            copy.start_at_end()

    def _move_first(self, reader: FileReader) -> None:
        key = (reader.dev, reader.ino)
        rest = {k: r for k, r in self._readers.items() if k != key}
        self._readers = {key: reader, **rest}

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
            self._retired.append(reader.fp)
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
        for path in discovery.expand(self._patterns):
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

    def _original_of(self, reader: FileReader) -> Key | None:
        """Might this new file be a copy of one we follow (copytruncate's copy, maybe mid-copy)?

        It is held unread until the original is truncated (then it is drained from the old
        offset), or it turns out to differ (then it is read from its start), or it stays an
        exact copy for the grace period (then its content is known and it is followed from its end).
        """
        if reader.path is None:
            return None
        name = os.path.basename(reader.path)
        head = read_head(reader.fd)
        for key, other in self._readers.items():
            if other is reader or other.name is None:
                continue
            if not rotated_from(name, os.path.basename(other.name)):
                continue
            if _copy_like(head, other):
                return key
        return None

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

    # --- restart ------------------------------------------------------------------------------

    def _resume_saved(self) -> None:
        """Find each checkpointed identity by dev/ino + fingerprint, or as a renamed copy."""
        unresolved = []
        for entry in self._saved:  # exact finds first, so no fallback takes another's file
            try:
                if self._resume_one(entry, archives=False) is None:
                    unresolved.append(entry)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring a bad checkpoint entry", source=self.id, error=str(exc))
        for entry in unresolved:
            self._resume_one(entry, archives=True)
        known = _fingerprints(self._saved) + list(self._retired)
        known = [fp for fp in known if fp.length >= MIN_KNOWN_FINGERPRINT]
        paths = {
            discovery.family(str(e.get("name") or e["path"])) for e in self._saved if e.get("path")
        }
        self._saved = []
        if self._saved_at is not None:
            for path in sorted(paths):
                self._read_rotated_since(path, self._saved_at, known)

    def _read_rotated_since(self, path: str, since: float, known: list[Fingerprint]) -> None:
        """Rotated names of ``path`` written to after the checkpoint hold lines never committed.

        The checkpointed identities were resumed above; any other rotated file modified since
        (the file that was current for a while during a downtime with several rotations) is
        read from its start, unless it is one we already read (its fingerprint is known).
        """
        followed = set(discovery.expand(self._patterns))
        newer = []
        plain, packed = discovery.rotations(path)
        for cand in plain + packed:
            try:
                mtime = os.stat(cand).st_mtime
            except OSError:
                continue
            # file times are coarse (a clock tick): allow a margin; a known file is skipped anyway
            if cand not in followed and mtime >= since - MTIME_MARGIN:
                newer.append((mtime, cand))
        for _, cand in sorted(newer):
            self._read_whole(cand, known)

    def _read_whole(self, path: str, known: list[Fingerprint]) -> None:
        if is_compressed(path):
            head = archive_head(path)
            if not head or any(fp.matches(head) for fp in known):
                return
            fp = fingerprint(head)
            fd = unread_rest(path, fp, 0, 0, NO_MARKER)
            if fd is not None:
                self._register(fd, path, followed=False, fp=fp)
            return
        key = discovery.regular_key(path)
        if key is None or key in self._readers:
            return
        fd = self._open(path)
        if fd is None:
            return
        if any(fp.matches(read_head(fd)) for fp in known):
            os.close(fd)
            return
        self._register(fd, path, followed=False)
        log.info("reading a file rotated while down", source=self.id, path=path)

    def _resume_one(self, entry: dict[str, Any], *, archives: bool) -> FileReader | None:
        fp = Fingerprint(str(entry["fp"]), int(entry["fp_len"]))
        marker = Marker(str(entry["marker"]), int(entry["marker_len"]))
        offset = int(entry["offset"])
        want: Key = (int(entry["dev"]), int(entry["ino"]))
        path = str(entry["path"])
        name = str(entry.get("name") or path)  # rotations are named after the followed name
        followed = set(discovery.expand(self._patterns))
        plain, packed = discovery.rotations(name)
        rotated = set(plain) | set(discovery.rotations(path)[0])
        candidates = [path, *sorted(followed), *sorted(rotated)]
        # Same inode first; then any inode holding the same bytes (a copy, or a move).
        ordered = sorted(dict.fromkeys(candidates), key=lambda p: discovery.regular_key(p) != want)
        for cand in ordered:
            key = discovery.regular_key(cand)
            if key is None or key in self._readers or is_compressed(cand):
                continue
            if key != want and (cand == path or not _trusted_elsewhere(fp, cand, rotated)):
                continue  # another inode at the same name, or a fingerprint too weak to trust
            fd = self._open(cand)
            if fd is None:
                continue
            if _holds(fd, fp, offset, marker, same_inode=key == want):
                return self._resumed(self._register(
                    fd, cand, followed=cand in followed, tag=str(entry["tag"]), offset=offset,
                    lineno=int(entry["lineno"]), skipping=bool(entry.get("skip", False)),
                ), name)  # fmt: skip
            os.close(fd)
        if not archives:
            return None
        for archive in packed:  # rotated and compressed while down
            fd = unread_rest(archive, fp, offset, offset, marker)
            if fd is not None:
                log.info("draining a file compressed while down", source=self.id, path=archive)
                return self._resumed(self._register(
                    fd, archive, followed=False, tag=str(entry["tag"]), offset=offset,
                    lineno=int(entry["lineno"]), skipping=bool(entry.get("skip", False)), fp=fp,
                ), name)  # fmt: skip
        log.warning(
            "a checkpointed file is gone; its unread lines are lost", source=self.id, path=path
        )
        return None

    @staticmethod
    def _resumed(reader: FileReader | None, name: str) -> FileReader | None:
        if reader is not None and not reader.path_followed:
            reader.name = name
        return reader

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


def _holds(
    fd: int, fp: Fingerprint, offset: int, marker: Marker, *, same_inode: bool = False
) -> bool:
    """Does the file behind ``fd`` start with ``fp`` and hold ``marker`` just before ``offset``?

    An empty fingerprint (the file was empty) identifies nothing, except on the same inode.
    """
    try:
        if os.fstat(fd).st_size < offset or (fp.length == 0 and not same_inode):
            return False
        return fp.matches(read_head(fd)) and marker_holds(fd, offset, marker)
    except OSError:
        return False


def _fingerprints(entries: Iterable[dict[str, Any]]) -> list[Fingerprint]:
    out = []
    for entry in entries:
        try:
            out.append(Fingerprint(str(entry["fp"]), int(entry["fp_len"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _trusted_elsewhere(fp: Fingerprint, path: str, rotated: set[str]) -> bool:
    """May a file at another inode be taken for this identity on its fingerprint?

    Under a rotated name of the file, any non-empty fingerprint will do (the marker before the
    offset is checked too); anywhere else it must be long enough to be unambiguous.
    """
    return fp.length >= MIN_COPY_FINGERPRINT or (fp.length > 0 and path in rotated)


def _copy_like(head: bytes, original: FileReader) -> bool:
    """Could a file starting with ``head`` be a copy of ``original``?

    It starts with what we read of the original (which may be truncated already), or it is a
    prefix of the original's current first bytes (a copy still being written).
    """
    if original.fp.length and original.fp.matches(head):
        return True
    current = read_head(original.fd)
    return bool(current) and current.startswith(head)

"""Copytruncate and truncation: find the copy, drain it from the old offset, restart at 0.

A copy is recognised by the first bytes we read of its original and the bytes just before the
position we read up to. ``Copies`` owns the suspects: a new file under a rotated name that
starts like a followed file is held unread until its original is truncated (then drained from
the old offset), proves different (then read as new), or stays an exact copy for the grace
period (then its content is known and it is followed from its end).
"""

from __future__ import annotations

import os

import structlog

from logwatchd.clock import Clock
from logwatchd.events import Line
from logwatchd.sources import discovery
from logwatchd.sources.compressed import unread_rest
from logwatchd.sources.identity import (
    holds,
    marker_of,
    read_head,
    rotated_from,
    rotation_bases,
)
from logwatchd.sources.openfiles import Key, OpenFiles
from logwatchd.sources.reader import FileReader, new_tag
from logwatchd.sources.retired import Retired

log = structlog.get_logger()


class Copies:
    def __init__(
        self,
        files: OpenFiles,
        retired: Retired,
        *,
        clock: Clock,
        grace: float,
        olddir: str | None = None,
    ) -> None:
        self._files = files
        self._olddir = olddir
        self._retired = retired
        self._clock = clock
        self._grace = grace
        self._copy_of: dict[Key, Key] = {}  # a suspected copy -> its original
        # followed files by the basename of their name, taken at the first new file after each
        # scan (``forget_names``): a new file is compared only with those it may rotate from
        self._by_base: dict[str, list[FileReader]] | None = None

    def held(self, reader: FileReader) -> bool:
        """Is ``reader`` a suspected copy, not to be read for now?"""
        return (reader.dev, reader.ino) in self._copy_of

    def involved(self, reader: FileReader) -> bool:
        """Is ``reader`` a suspect or the original of one (both are compared while open)?"""
        key = (reader.dev, reader.ino)
        return key in self._copy_of or key in self._copy_of.values()

    def suspect(self, reader: FileReader, *, live_only: bool = False) -> bool:
        """Hold a new file that might be a copy of one we follow (copytruncate's copy, maybe
        mid-copy); it is then followed from its end unless its original is truncated.
        ``live_only``: only a file a glob names now can be the original (logrotate copies
        the live file, never one rotated away)."""
        original = self._original_of(reader, live_only)
        if original is None:
            return False
        self._copy_of[(reader.dev, reader.ino)] = original
        reader.start_at_end()
        return True

    def truncated(self, reader: FileReader, out: list[Line]) -> bool:
        """Handle a truncated file; True when it may be read from its new start right away,
        False when a copy was found whose lines must go first."""
        copy = self._continue_in_copy(reader)
        if copy is None:
            # What was read before the truncation is real content: hand it out, drop the rest.
            out.extend(reader.read_ready_only())
            log.info(
                "file truncated; reading it from the start",
                source=self._files.source,
                path=reader.path,
            )
        else:
            log.info(
                "file truncated after a copy; draining the copy",
                source=self._files.source,
                path=reader.path,
                copy=copy.path,
            )
        reader.restart(new_tag())
        return copy is None

    def gone(self, reader: FileReader) -> bool:
        """A parked file was replaced or removed before it could be looked at again: its
        content goes on in a copy if there is one (copytruncate while it was closed)."""
        copy = self._continue_in_copy(reader)
        if copy is not None:
            log.info(
                "a closed file was replaced after a copy; draining the copy",
                source=self._files.source,
                path=reader.path,
                copy=copy.path,
            )
        return copy is not None

    def _continue_in_copy(self, reader: FileReader) -> FileReader | None:
        """Find a copy of ``reader``'s content and continue it there from ``reader``'s
        offset, ahead of every other file; ``reader``'s content is done with."""
        copy = self._find_copy(reader)
        if copy is not None:
            copy.rewind(reader.offset, reader.lineno, reader.tag)
            if not copy.path_followed:
                copy.orphan_since = self._clock.monotonic()
            self._files.move_first(copy)
        key = (reader.dev, reader.ino)
        for copy_key, orig in list(self._copy_of.items()):
            if orig == key:
                chosen = copy is not None and copy_key == (copy.dev, copy.ino)
                self._release(copy_key, drained=chosen)
        self._retired.retire(reader)  # that content is done with: a copy of it is not new
        return copy

    def review(self, copy: FileReader) -> None:
        """Decide about a suspected copy whose original has not been truncated (yet)."""
        key = (copy.dev, copy.ino)
        original = self._files.get(self._copy_of[key])
        if original is None:
            self._release(key, drained=False)
            return
        if original.parked:
            self._files.want(original)  # compared once it is open again
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
            # an exact copy: its content is known (up to ``size``: what comes later is new)
            self._release(key, drained=False, size=size)

    def original_closed(self, original: FileReader) -> None:
        """The original was drained and closed: its suspects are followed from their end."""
        key = (original.dev, original.ino)
        for copy_key, orig in list(self._copy_of.items()):
            if orig == key:
                self._release(copy_key, drained=False)

    def forget_names(self) -> None:
        """Names may have changed (a scan): index them again when next needed."""
        self._by_base = None

    def clear(self) -> None:
        self._copy_of.clear()
        self._by_base = None

    def _release(self, copy_key: Key, *, drained: bool, size: int | None = None) -> None:
        del self._copy_of[copy_key]
        copy = self._files.get(copy_key)
        if copy is not None and not drained:
            copy.start_at_end(size)

    def _find_copy(self, reader: FileReader) -> FileReader | None:
        """A copytruncate copy of ``reader``: same first bytes, holds what we read, other inode."""
        me = (reader.dev, reader.ino)
        marker = marker_of(reader.tail_bytes())
        if reader.fp.length == 0 or reader.name is None:
            return None
        base = os.path.basename(reader.name)
        for cand in self._files:
            key = (cand.dev, cand.ino)
            if key == me or cand.parked or not cand.path:
                continue
            if not rotated_from(os.path.basename(cand.path), base):
                continue
            if holds(cand.fd, reader.fp, reader.read_pos, marker):
                return cand
        for path in discovery.rotated_siblings(reader.name, self._olddir):
            found = discovery.regular_key(path)
            if found is None or found in self._files:
                continue
            fd = self._files.open(path, urgent=True)
            if fd is None:
                continue
            if holds(fd, reader.fp, reader.read_pos, marker):
                copy = self._files.add(fd, path, followed=False)
                if copy is not None:
                    return copy
            else:
                os.close(fd)
        # The copy may already be compressed (copytruncate + compress, seen late).
        for path in discovery.compressed_siblings(reader.name, self._olddir):
            fd = unread_rest(path, reader.fp, reader.offset, reader.read_pos, marker)
            if fd is not None:
                return self._files.add(fd, path, followed=False, fp=reader.fp)
        return None

    def _original_of(self, reader: FileReader, live_only: bool = False) -> Key | None:
        if reader.path is None:
            return None
        name = os.path.basename(reader.path)
        head = read_head(reader.fd)
        found = None
        for other in self._named(rotation_bases(name)):
            if other is reader or other.name is None or (live_only and not other.path_followed):
                continue
            if not rotated_from(name, os.path.basename(other.name)):
                continue
            if _copy_like(head, other):
                found = (other.dev, other.ino)
                break
        if self._by_base is not None:
            self._by_base.setdefault(name, []).append(reader)
        return found

    def _named(self, bases: set[str]) -> list[FileReader]:
        """Followed files whose name has one of these basenames, in reading order."""
        if self._by_base is None:
            self._by_base = {}
            for other in self._files:
                if other.name is not None:
                    self._by_base.setdefault(os.path.basename(other.name), []).append(other)
        found = [
            r
            for base in bases
            for r in self._by_base.get(base, ())
            if self._files.get((r.dev, r.ino)) is r  # not closed since
        ]
        if len(found) > 1:
            order = {r: i for i, r in enumerate(self._files)}
            found.sort(key=lambda r: order.get(r, len(order)))
        return found


def _copy_like(head: bytes, original: FileReader) -> bool:
    """Could a file starting with ``head`` be a copy of ``original``?

    It starts with what we read of the original (which may be truncated already), or it is a
    prefix of the original's current first bytes (a copy still being written).
    """
    if original.fp.length and original.fp.matches(head):
        return True
    current = original.head if original.parked else read_head(original.fd)
    return bool(current) and current.startswith(head)

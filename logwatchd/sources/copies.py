"""Copytruncate and truncation: find the copy, drain it from the old offset, restart at 0.

A mixin of ``FileFollower`` (files.py): the follower's state is shared, the concept kept apart.
A copy is recognised by the first bytes we read of its original and the bytes just before the
position we read up to; a suspected copy that a glob names is held unread until its original
is truncated (then drained), proves different (then read as new), or stays an exact copy.
"""

from __future__ import annotations

import os
from collections import deque

import structlog

from logwatchd.clock import Clock
from logwatchd.events import Line
from logwatchd.sources import discovery
from logwatchd.sources.compressed import unread_rest
from logwatchd.sources.identity import Fingerprint, holds, marker_of, read_head, rotated_from
from logwatchd.sources.reader import FileReader, FollowerHooks, new_tag

log = structlog.get_logger()

Key = tuple[int, int]


class CopyHandling(FollowerHooks):
    """Truncation and copy handling for FileFollower."""

    id: str
    _readers: dict[Key, FileReader]
    _copy_of: dict[Key, Key]
    _clock: Clock
    _grace: float
    _retired: deque[Fingerprint]
    _retired_heads: deque[bytes]
    _again: bool

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
        self._retire(reader)  # that content is done with: a copy of it is not new
        reader.restart(new_tag())
        if copy is not None:
            self._again = True  # the copy's lines go first; the new content next poll
        return copy is None

    def _retire(self, reader: FileReader) -> None:
        """Remember an identity we are done with, so a rotated copy of it is not read again."""
        self._retired.append(reader.fp)
        if reader.head:
            self._retired_heads.append(reader.head)

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
            if holds(cand.fd, reader.fp, reader.read_pos, marker):
                return cand
        for path in discovery.rotated_siblings(reader.name):
            found = discovery.regular_key(path)
            if found is None or found in self._readers:
                continue
            fd = self._open(path)
            if fd is None:
                continue
            if holds(fd, reader.fp, reader.read_pos, marker):
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


def _copy_like(head: bytes, original: FileReader) -> bool:
    """Could a file starting with ``head`` be a copy of ``original``?

    It starts with what we read of the original (which may be truncated already), or it is a
    prefix of the original's current first bytes (a copy still being written).
    """
    if original.fp.length and original.fp.matches(head):
        return True
    current = read_head(original.fd)
    return bool(current) and current.startswith(head)

"""Restart: find each checkpointed identity again, wherever logrotate moved it meanwhile.

Each saved file is looked for by dev/ino and fingerprint (at its name, at the glob's names, at
its rotated names), then by fingerprint and the marker before the offset at another inode (a
copy), then inside a compressed archive. Rotated files written to after the checkpoint that
hold nothing we know are read from 0: during a long downtime with several rotations, the file
that was current for a while.
"""

from __future__ import annotations

import os
from itertools import chain

import structlog

from logwatchd.sources import discovery
from logwatchd.sources.checkpoint import Saved, SavedFile
from logwatchd.sources.compressed import unread_rest
from logwatchd.sources.identity import Fingerprint, holds, is_compressed
from logwatchd.sources.openfiles import OpenFiles
from logwatchd.sources.reader import FileReader
from logwatchd.sources.unseen import Unseen

log = structlog.get_logger()

MIN_COPY_FINGERPRINT = 64  # bytes; shorter fingerprints identify only under rotated names


class Restorer:
    def __init__(
        self,
        files: OpenFiles,
        unseen: Unseen,
        *,
        patterns: tuple[str, ...],
        olddir: str | None = None,
    ) -> None:
        self._files = files
        self._unseen = unseen
        self._patterns = patterns
        self._olddir = olddir
        # Taken once per resume: with many saved files, a glob or listing per file would
        # make the start quadratic.
        self._followed: list[str] = []
        self._followed_set: set[str] = set()
        self._keys: dict[str, tuple[int, int] | None] = {}
        self._by_key: dict[tuple[int, int], str] = {}  # followed paths by identity
        self._listing = discovery.Listing(olddir)

    def resume(self, saved: Saved) -> None:
        """Find each saved identity by dev/ino + fingerprint, or as a renamed copy."""
        self._followed = discovery.expand(self._patterns)
        self._followed_set = set(self._followed)
        self._keys, self._by_key = {}, {}
        self._listing = discovery.Listing(self._olddir)
        unresolved = []
        # Exact finds first, so no fallback takes another's file; the longest fingerprints
        # first, since a reused inode must go to the identity whose bytes it holds.
        for entry in sorted(saved.files, key=lambda e: e.evidence, reverse=True):
            if entry.evidence == 0:
                continue  # nothing read and no bytes known: as good as a new file
            if self._resume_one(entry, archives=False) is None:
                unresolved.append(entry)
        for entry in unresolved:
            self._resume_one(entry, archives=True)
        if saved.time is not None:
            self._unseen.read_rotated_since(
                saved.names,
                saved.time,
                followed=self._followed_set,
                known=saved.known + saved.retired,
                heads=[],
            )

    def _key(self, path: str) -> tuple[int, int] | None:
        if path not in self._keys:
            self._keys[path] = discovery.regular_key(path)
        return self._keys[path]

    def _resume_one(self, entry: SavedFile, *, archives: bool) -> FileReader | None:
        want = (entry.dev, entry.ino)
        if not archives and self._key(entry.path) == want and want not in self._files:
            resumed = self._resume_at(entry.path, entry, same_inode=True)
            if resumed is not None:  # the common case: no listing of the directory needed
                return resumed
        plain, packed = self._listing.rotations(entry.name)
        rotated = set(plain) | set(self._listing.rotations(entry.path)[0])
        # Same inode first; then any inode holding the same bytes (a copy, or a move).
        same = self._same_inode(entry, want, sorted(rotated))
        # lazily: with many files, the list of every followed name per saved file was quadratic
        everywhere = chain([entry.path], self._followed, sorted(rotated))
        others = (p for p in everywhere if p not in same)
        for cand in chain(same, others):
            key = self._key(cand)
            if key is None or key in self._files or is_compressed(cand):
                continue
            elsewhere = cand == entry.path or not _trusted_elsewhere(entry.fp, cand, rotated)
            if key != want and elsewhere:
                continue  # another inode at the same name, or a fingerprint too weak to trust
            resumed = self._resume_at(cand, entry, same_inode=key == want)
            if resumed is not None:
                return resumed
        if not archives:
            return None
        for archive in packed:  # rotated and compressed while down
            fd = unread_rest(archive, entry.fp, entry.offset, entry.offset, entry.marker)
            if fd is not None:
                log.info(
                    "draining a file compressed while down", source=self._files.source, path=archive
                )
                return self._resumed(fd, archive, entry, followed=False, fp=entry.fp)
        log.warning(
            "a checkpointed file is gone; its unread lines are lost",
            source=self._files.source,
            path=entry.path,
        )
        return None

    def _resume_at(self, path: str, entry: SavedFile, *, same_inode: bool) -> FileReader | None:
        fd = self._files.open(path, urgent=True)
        if fd is None:
            return None
        if holds(fd, entry.fp, entry.offset, entry.marker, same_inode=same_inode):
            return self._resumed(fd, path, entry, followed=path in self._followed_set)
        os.close(fd)
        return None

    def _same_inode(self, entry: SavedFile, want: tuple[int, int], rotated: list[str]) -> list[str]:
        """The names the saved inode has now: its own, a followed or a rotated one, or else
        any name in its directory or olddir (a rename no pattern knows)."""
        if not self._by_key:
            for path in self._followed:
                key = self._key(path)
                if key is not None:
                    self._by_key.setdefault(key, path)
        found = [entry.path, *filter(None, [self._by_key.get(want)]), *rotated]
        same = [p for p in dict.fromkeys(found) if self._key(p) == want]
        if not same:
            same = list(filter(None, [self._listing.find([entry.path, entry.name], want)]))
        return same

    def _resumed(
        self, fd: int, path: str, entry: SavedFile, *, followed: bool, fp: Fingerprint | None = None
    ) -> FileReader | None:
        reader = self._files.add(
            fd, path, followed=followed, tag=entry.tag, offset=entry.offset,
            lineno=entry.lineno, skipping=entry.skipping, fp=fp,
        )  # fmt: skip
        if reader is not None and followed and self._files.over_cap():
            self._files.park(reader)  # re-opened by identity when there is room
        if reader is not None and not followed:
            reader.name = entry.name  # rotations are named after the followed name
        if reader is not None and path != entry.path and not followed and fp is None:
            log.info("draining a file renamed while down", source=self._files.source, path=path)
        return reader


def _trusted_elsewhere(fp: Fingerprint, path: str, rotated: set[str]) -> bool:
    """May a file at another inode be taken for this identity on its fingerprint?

    Under a rotated name of the file, any non-empty fingerprint will do (the marker before the
    offset is checked too); anywhere else it must be long enough to be unambiguous.
    """
    return fp.length >= MIN_COPY_FINGERPRINT or (fp.length > 0 and path in rotated)

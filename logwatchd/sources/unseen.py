"""Rotated files never seen under their followed name: read them whole, once.

A file can be created and rotated away between two scans (several rotations within one
rescan interval), or be current for a while during a downtime with several rotations. Such a
file carries a rotated name, was written to since the last look, and holds nothing we know:
it is read from its start. Files we hold, drained, or whose first bytes we know are skipped.

An empty one says nothing yet: it may be a copytruncate copy about to be written, or a file
rotated away before the application wrote to it, which the application may still write to
until it reopens its log. It is followed from its start, held as a suspected copy while the
live file it was rotated from has content (``Copies``), so what fills it is read once either
way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import structlog

from logwatchd.sources import discovery
from logwatchd.sources.compressed import archive_head, unread_rest
from logwatchd.sources.copies import Copies
from logwatchd.sources.identity import NO_MARKER, Fingerprint, fingerprint, is_compressed, read_head
from logwatchd.sources.openfiles import OpenFiles
from logwatchd.sources.retired import Retired

log = structlog.get_logger()

MIN_KNOWN_FINGERPRINT = 16  # bytes; shorter first bytes say too little to call a file known
MTIME_MARGIN = 1.0  # seconds: file times are coarse (a clock tick)


class Unseen:
    def __init__(
        self,
        files: OpenFiles,
        retired: Retired,
        *,
        olddir: str | None = None,
        copies: Copies | None = None,
    ) -> None:
        """``copies``: where an empty rotated file is held while it may be a copy."""
        self._files = files
        self._olddir = olddir
        self._retired = retired
        self._copies = copies

    def read_rotated_since(
        self,
        names: Iterable[str],
        since: float,
        *,
        followed: set[str],
        known: Iterable[Fingerprint],
        heads: list[bytes],
    ) -> None:
        """Read the unknown rotated files of each of ``names`` written to since ``since``.

        ``followed``: paths a glob names (followed as such, not here); ``known``: fingerprints
        of content seen; ``heads``: first bytes seen (a copy still being written is a prefix
        of them)."""
        fps = [fp for fp in known if fp.length >= MIN_KNOWN_FINGERPRINT]
        listing = discovery.Listing(self._olddir)
        for family in sorted({discovery.family(n) for n in names}):
            newer = []
            plain, packed = listing.rotations(family)
            for cand in plain + packed:
                try:
                    mtime = os.stat(cand).st_mtime
                except OSError:
                    continue
                # file times are coarse: allow a margin; a known file is skipped anyway
                if cand not in followed and mtime >= since - MTIME_MARGIN:
                    newer.append((mtime, cand))
            for _, cand in sorted(newer):
                self._read_whole(cand, fps, heads)

    def _read_whole(self, path: str, known: list[Fingerprint], heads: list[bytes]) -> None:
        if is_compressed(path):
            head = archive_head(path)
            if not head or any(fp.matches(head) for fp in known) or _head_known(head, heads):
                return
            fp = fingerprint(head)
            fd = unread_rest(path, fp, 0, 0, NO_MARKER)
            if fd is not None:
                self._files.add(fd, path, followed=False, fp=fp)
            return
        key = discovery.regular_key(path)
        if key is None or key in self._files:
            return
        fd = self._files.open(path, urgent=True)  # an orphan: never waits for room
        if fd is None:
            return
        done = self._retired.was_closed(fd)
        head = read_head(fd)
        if done or (head and (any(fp.matches(head) for fp in known) or _head_known(head, heads))):
            os.close(fd)
            return
        reader = self._files.add(fd, path, followed=False)
        if reader is None:
            return
        if not head and self._copies is not None and self._copies.suspect(reader, live_only=True):
            return  # maybe a copytruncate copy not yet written: held until Copies knows
        log.info(
            "reading a rotated file never seen under its name", source=self._files.source, path=path
        )


def _head_known(head: bytes, heads: list[bytes]) -> bool:
    """Is a file starting with ``head`` one we know: a prefix of known first bytes (a copy
    still being written), or an extension of long enough ones?"""
    for known in heads:
        if known.startswith(head) or (
            len(known) >= MIN_KNOWN_FINGERPRINT and head.startswith(known)
        ):
            return True
    return False

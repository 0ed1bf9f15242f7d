"""Re-opening files parked under the open-file cap, by identity, wherever they went.

A parked file (``OpenFiles.park``) has no descriptor: its inode is not pinned, so while it is
closed it may be renamed, truncated, deleted, or its inode number given to a new file.
``Reopener`` takes back the files that changed, when there is room, those that cannot wait
first (rotated while parked, or the original of a suspected copy). At the name it was parked
with, the content is checked by the next size check, as for any open file; under another
name it must hold its first bytes and the bytes before its position before it is taken.
"""

from __future__ import annotations

import os

import structlog

from logwatchd.sources import discovery
from logwatchd.sources.copies import Copies
from logwatchd.sources.identity import holds
from logwatchd.sources.openfiles import OpenFiles
from logwatchd.sources.reader import FileReader

log = structlog.get_logger()


class Reopener:
    def __init__(self, files: OpenFiles, copies: Copies, *, olddir: str | None = None) -> None:
        self._files = files
        self._copies = copies
        self._olddir = olddir

    def reopen_wanted(self, mono: float) -> tuple[int, bool]:
        """Re-open parked files that changed; how many, and whether one turned out gone
        (what has its name or inode number now is a new file: scan again)."""
        opened, gone = 0, False
        listing = discovery.Listing(self._olddir)
        for reader in self._files.wanted():
            urgent = reader.orphan_since is not None or self._copies.involved(reader)
            if not self._files.room(urgent=urgent):
                break
            taken = self._reopen(reader, listing, mono)
            opened += taken is True
            gone |= taken is None
        return opened, gone

    def _reopen(self, reader: FileReader, listing: discovery.Listing, mono: float) -> bool | None:
        """True: open again (renamed away: then an orphan, drained before the new file);
        False: not now (out of descriptors, say: it stays wanted); None: gone."""
        key = (reader.dev, reader.ino)
        path = reader.path if reader.path and discovery.regular_key(reader.path) == key else None
        moved = path is None
        path = path or listing.find([reader.name or ""], key)
        if path is not None:
            fd = self._files.open(path, urgent=True)
            if fd is None:
                return False
            if self._take_back(reader, path, fd):
                if moved:
                    reader.path, reader.path_followed = path, False
                    reader.orphan_since = reader.orphan_since or mono
                return True
        if not self._copies.gone(reader):
            log.info(
                "a file closed to stay under max_open_files is gone; "
                "what was written to it after it was closed is lost",
                source=self._files.source,
                path=reader.path,
            )
        self._files.close(reader)
        return None

    def _take_back(self, reader: FileReader, path: str, fd: int) -> bool:
        """Give a parked reader the descriptor ``fd`` of its inode at ``path``. Under another
        name than the one it was parked with, the inode number may be a reused one (the file
        was deleted meanwhile): it must hold the first bytes and the marker before the offset."""
        renamed = path != self._files.parked_name(reader)
        if (renamed and not holds(fd, reader.fp, reader.offset, reader.marker())) or not (
            reader.unpark(fd)
        ):
            os.close(fd)
            return False
        self._files.reopened(reader)
        return True

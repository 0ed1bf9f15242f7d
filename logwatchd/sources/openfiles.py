"""The set of files a follower holds open, one ``FileReader`` per identity, in reading order.

Keyed by (dev, ino): an open descriptor pins its inode, so within one run that pair is an
identity. Opening goes through here only, so every descriptor is opened the same way
(read-only, non-blocking, never a terminal, closed on exec) and a permission error is logged
once per path, not once per rescan.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator

import structlog

from logwatchd.clock import Clock
from logwatchd.sources.identity import Fingerprint, is_compressed, without_compression
from logwatchd.sources.reader import FileReader, new_tag

log = structlog.get_logger()

Key = tuple[int, int]

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class OpenFiles:
    def __init__(self, source: str, *, max_line_bytes: int, clock: Clock) -> None:
        self.source = source
        self._max_line_bytes = max_line_bytes
        self._clock = clock
        self._readers: dict[Key, FileReader] = {}  # insertion order = reading order
        self._denied: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._readers

    def __len__(self) -> int:
        return len(self._readers)

    def __iter__(self) -> Iterator[FileReader]:
        return iter(list(self._readers.values()))

    def get(self, key: Key | None) -> FileReader | None:
        return self._readers.get(key) if key is not None else None

    def reading_order(self) -> list[FileReader]:
        """Orphans (rotated away) first: their last lines precede the new file's first lines."""
        readers = list(self._readers.values())
        return [r for r in readers if r.orphan_since is not None] + [
            r for r in readers if r.orphan_since is None
        ]

    def open(self, path: str) -> int | None:
        """A read-only descriptor on the regular file at ``path``, or None (logged)."""
        if is_compressed(path):
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
            if exc.errno != errno.ENOENT:  # it went away between the scan and the open
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

    def move_first(self, reader: FileReader) -> None:
        key = (reader.dev, reader.ino)
        rest = {k: r for k, r in self._readers.items() if k != key}
        self._readers = {key: reader, **rest}

    def close(self, reader: FileReader) -> None:
        """Stop following ``reader``'s file."""
        self._readers.pop((reader.dev, reader.ino), None)
        reader.close()

    def close_all(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

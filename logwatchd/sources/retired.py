"""What the follower is done with: content drained and closed, so a rotated copy is not new.

After a file is drained and closed (an orphan gone quiet, a truncated file's old content), a
rotated file holding the same content must not be read again as new. Three bounded memories
serve that: fingerprints (kept in the checkpoint, so they survive a restart), the first bytes
(a copy still being written is a prefix of them), and (dev, ino, size, mtime) of each closed
file (the same file seen again, unchanged, under a rotated name). Only the recent past can be
confused, so the memories are bounded.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable

from logwatchd.sources.identity import Fingerprint
from logwatchd.sources.reader import FileReader

RETIRED_KEPT = 64

StatKey = tuple[int, int, int, int]


class Retired:
    def __init__(self, fingerprints: Iterable[Fingerprint] = ()) -> None:
        self.fingerprints: deque[Fingerprint] = deque(fingerprints, maxlen=RETIRED_KEPT)
        self.heads: deque[bytes] = deque(maxlen=RETIRED_KEPT)
        self._closed: deque[StatKey] = deque(maxlen=RETIRED_KEPT * 4)

    def retire(self, reader: FileReader) -> None:
        """Remember the content ``reader`` holds now as done with."""
        self.fingerprints.append(reader.fp)
        if reader.head:
            self.heads.append(reader.head)

    def closing(self, fd: int) -> None:
        """Remember the file behind ``fd``, drained and about to be closed, as it is now."""
        self._closed.append(stat_key(fd))

    def was_closed(self, fd: int) -> bool:
        """Is the file behind ``fd`` one we closed, unchanged since?"""
        return stat_key(fd) in self._closed


def stat_key(fd: int) -> StatKey:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

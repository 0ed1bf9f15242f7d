"""Restart: find each checkpointed identity again, wherever logrotate moved it meanwhile.

A mixin of ``FileFollower`` (files.py). Each saved file is looked for by dev/ino and
fingerprint (at its name, at the glob's names, at its rotated names), then by fingerprint and
the marker before the offset at another inode (a copy), then inside a compressed archive.
Rotated files written to after the checkpoint that hold nothing we know are read from 0:
during a long downtime with several rotations, the file that was current for a while.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from typing import Any

import structlog

from logwatchd.sources import discovery
from logwatchd.sources.compressed import archive_head, unread_rest
from logwatchd.sources.identity import (
    NO_MARKER,
    Fingerprint,
    Marker,
    fingerprint,
    holds,
    is_compressed,
    read_head,
)
from logwatchd.sources.reader import FileReader, FollowerHooks

log = structlog.get_logger()

Key = tuple[int, int]

MIN_COPY_FINGERPRINT = 64  # bytes; shorter fingerprints identify only under rotated names
MIN_KNOWN_FINGERPRINT = 16
MTIME_MARGIN = 1.0  # seconds: file times are coarse (a clock tick)


class Restoring(FollowerHooks):
    """Checkpoint resolution for FileFollower."""

    id: str
    _patterns: tuple[str, ...]
    _readers: dict[Key, FileReader]
    _saved: list[dict[str, Any]]
    _saved_at: float | None
    _retired: deque[Fingerprint]
    _closed: deque[tuple[int, int, int, int]]
    _known_heads: list[bytes]

    def _resume_saved(self) -> None:
        """Find each checkpointed identity by dev/ino + fingerprint, or as a renamed copy."""
        unresolved = []
        # Exact finds first, so no fallback takes another's file; the longest fingerprints
        # first, since a reused inode must go to the identity whose bytes it holds.
        for entry in sorted(self._saved, key=_evidence, reverse=True):
            if _evidence(entry) == 0:
                continue  # nothing read and no bytes known: as good as a new file
            try:
                if self._resume_one(entry, archives=False) is None:
                    unresolved.append(entry)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring a bad checkpoint entry", source=self.id, error=str(exc))
        for entry in unresolved:
            self._resume_one(entry, archives=True)
        known = fingerprints(self._saved) + list(self._retired)
        known = [fp for fp in known if fp.length >= MIN_KNOWN_FINGERPRINT]
        paths = {
            discovery.family(str(e.get("name") or e["path"])) for e in self._saved if e.get("path")
        }
        self._saved = []
        if self._saved_at is not None:
            followed = set(discovery.expand(self._patterns))
            listing = discovery.Listing()
            for path in sorted(paths):
                self._read_rotated_since(path, self._saved_at, known, followed, listing)

    def _read_rotated_since(
        self,
        path: str,
        since: float,
        known: list[Fingerprint],
        followed: set[str],
        listing: discovery.Listing,
    ) -> None:
        """Rotated names of ``path`` written to since ``since`` hold lines we never saw.

        Used after a restart (since = the checkpoint: during a downtime with several rotations,
        the file that was current for a while) and after each scan (a file created and rotated
        away between two scans). Such a file is read from its start, unless it is one we hold
        or already read (its fingerprint is known).
        """
        newer = []
        plain, packed = listing.rotations(path)
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
            if not head or any(fp.matches(head) for fp in known) or self._head_known(head):
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
        st = os.fstat(fd)
        done = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) in self._closed
        head = read_head(fd)
        if done or any(fp.matches(head) for fp in known) or self._head_known(head):
            os.close(fd)
            return
        self._register(fd, path, followed=False)
        log.info("reading a rotated file never seen under its name", source=self.id, path=path)

    def _head_known(self, head: bytes) -> bool:
        """Is a file starting with ``head`` one we know: a prefix of known first bytes (a copy
        still being written, or an empty file), or an extension of long enough ones?"""
        for known in self._known_heads:
            if known.startswith(head) or (
                len(known) >= MIN_KNOWN_FINGERPRINT and head.startswith(known)
            ):
                return True
        return False

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
            if holds(fd, fp, offset, marker, same_inode=key == want):
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


def fingerprints(entries: Iterable[dict[str, Any]]) -> list[Fingerprint]:
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


def _evidence(entry: dict[str, Any]) -> int:
    """How much of a saved file's content is known (0: it was empty and nothing was read)."""
    try:
        return max(int(entry.get("fp_len", 0)), int(entry.get("offset", 0)))
    except (TypeError, ValueError):
        return 0

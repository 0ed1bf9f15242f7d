"""File identity: which content stream a descriptor or path holds, across renames and restarts.

A name says nothing (logrotate moves names around) and an inode number alone is reused after a
delete. A file is therefore known by device, inode and a SHA-256 fingerprint of its first bytes
(up to ``FINGERPRINT_BYTES``; while the file was shorter, the fingerprint covers what existed
and later candidates are compared on that prefix). A stored offset is validated by a marker: a
hash of the bytes just before it, so truncate-then-rewrite past the offset, which looks exactly
like an append, is still recognised.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

FINGERPRINT_BYTES = 1024
MARKER_BYTES = 128

COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".lz4", ".lzma", ".z", ".zip", ".tgz")
# What logrotate and friends append to a rotated name: .1, -20261126, .old, -2026-11-26-10 ...
_ROTATED_TAIL = re.compile(r"^(?:[.-]\d+(?:[-_.]\d+)*|[.-]old|[.-]bak|[.-]save|[.-]rotated)+$")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """SHA-256 (hex) of the first ``length`` bytes of a file."""

    digest: str
    length: int

    def matches(self, head: bytes) -> bool:
        """Does a file whose first bytes are ``head`` start with the fingerprinted bytes?"""
        if len(head) < self.length:
            return False
        return hashlib.sha256(head[: self.length]).hexdigest() == self.digest


def fingerprint(head: bytes) -> Fingerprint:
    head = head[:FINGERPRINT_BYTES]
    return Fingerprint(hashlib.sha256(head).hexdigest(), len(head))


def read_head(fd: int) -> bytes:
    return os.pread(fd, FINGERPRINT_BYTES, 0)


@dataclass(frozen=True, slots=True)
class Marker:
    """SHA-256 (hex) of the ``length`` bytes ending at an offset."""

    digest: str
    length: int


NO_MARKER = Marker(hashlib.sha256(b"").hexdigest(), 0)


def marker_of(before: bytes) -> Marker:
    before = before[-MARKER_BYTES:]
    return Marker(hashlib.sha256(before).hexdigest(), len(before))


def marker_at(fd: int, offset: int) -> Marker:
    length = min(MARKER_BYTES, offset)
    return marker_of(os.pread(fd, length, offset - length)) if length else NO_MARKER


def marker_holds(fd: int, offset: int, marker: Marker) -> bool:
    """Are the bytes before ``offset`` still the ones the marker was taken from?"""
    if marker.length == 0:
        return True
    data = os.pread(fd, marker.length, offset - marker.length) if offset >= marker.length else b""
    return len(data) == marker.length and hashlib.sha256(data).hexdigest() == marker.digest


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSED_SUFFIXES)


def without_compression(name: str) -> str | None:
    """``app.log.2.gz`` -> ``app.log.2``; None for a name that is not compressed."""
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def family_name(name: str) -> str:
    """The live name a rotated basename came from (app.log.2, app-20261126.log -> app.log)."""
    for i, ch in enumerate(name):
        if i and ch in ".-" and _ROTATED_TAIL.match(name[i:]):
            return name[:i]
    stem, dot, ext = name.rpartition(".")
    if dot and stem and not ext.isdigit():
        for i, ch in enumerate(stem):
            if i and ch in ".-" and _ROTATED_TAIL.match(stem[i:]):
                return f"{stem[:i]}.{ext}"
    return name


def rotated_from(name: str, base: str) -> bool:
    """Is basename ``name`` a rotated form of basename ``base`` (app.log -> app.log.1, app-1.log)?

    Only used to narrow where a copytruncate copy is looked for; identity is always decided by
    the fingerprint.
    """
    if name == base or is_compressed(name):
        return False
    if name.startswith(base):
        return bool(_ROTATED_TAIL.match(name[len(base) :]))
    stem, dot, ext = base.rpartition(".")
    if dot and stem and name.startswith(stem) and name.endswith("." + ext):
        middle = name[len(stem) : len(name) - len(ext) - 1]
        return bool(middle) and bool(_ROTATED_TAIL.match(middle))
    return False


def rotation_bases(name: str) -> set[str]:
    """Every basename ``name`` may be a rotated form of: ``rotated_from(name, b)`` implies
    ``b`` is in this set, so a lookup by these names replaces a scan of all followed files."""
    dot, ext = "." in name, name.rpartition(".")[2]
    bases = set()
    for i, ch in enumerate(name):
        if i and ch in ".-":
            bases.add(name[:i])
            if dot and i < len(name) - len(ext) - 1:
                bases.add(f"{name[:i]}.{ext}")
    return bases


def holds(
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

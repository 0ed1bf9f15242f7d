"""Which paths a source's globs name now, and which directories to watch for them."""

from __future__ import annotations

import glob
import os
import stat

from logwatchd.sources.identity import (
    family_name,
    is_compressed,
    rotated_from,
    without_compression,
)


def expand(patterns: tuple[str, ...]) -> list[str]:
    """Regular-file candidates named by the globs, compressed names left out, sorted."""
    found: set[str] = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            found.update(glob.glob(pattern))
        elif os.path.lexists(pattern):
            found.add(pattern)
    return sorted(p for p in found if not is_compressed(p))


def watch_dirs(patterns: tuple[str, ...]) -> set[str]:
    """The existing parent directories of the globs (watching a file itself fails on rotation)."""
    dirs: set[str] = set()
    for pattern in patterns:
        parent = os.path.dirname(pattern) or "."
        if glob.has_magic(parent):
            dirs.update(d for d in glob.glob(parent) if os.path.isdir(d))
        elif os.path.isdir(parent):
            dirs.add(parent)
    return dirs


def rotated_siblings(path: str) -> list[str]:
    """Names in the same directory that look like rotated forms of ``path`` (app.log.1, ...)."""
    parent, base = os.path.split(path)
    try:
        names = os.listdir(parent or ".")
    except OSError:
        return []
    return [os.path.join(parent, n) for n in sorted(names) if rotated_from(n, base)]


def compressed_siblings(path: str) -> list[str]:
    """Compressed forms of ``path`` and of its rotations (app.log.1.gz, app.log.2.gz)."""
    parent, base = os.path.split(path)
    try:
        names = os.listdir(parent or ".")
    except OSError:
        return []
    found = []
    for name in sorted(names):
        plain = without_compression(name)
        if plain is not None and (plain == base or rotated_from(plain, base)):
            found.append(os.path.join(parent, name))
    return found


def regular_key(path: str) -> tuple[int, int] | None:
    """(dev, ino) of a regular file at ``path``, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def family(path: str) -> str:
    """``/var/log/app.log.2`` -> ``/var/log/app.log``: where the rotations of a file live."""
    parent, base = os.path.split(path)
    return os.path.join(parent, family_name(base))


def rotations(path: str) -> tuple[list[str], list[str]]:
    """Plain and compressed rotated names of ``path`` and of the file it was rotated from."""
    return Listing().rotations(path)


class Listing:
    """Directory listings taken once per scan, names grouped by the live name they rotate
    from, so looking up the rotations of many files costs one listdir per directory."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, list[str]]] = {}

    def rotations(self, path: str) -> tuple[list[str], list[str]]:
        parent, base = os.path.split(path)
        groups = self._groups.get(parent)
        if groups is None:
            groups = self._groups[parent] = _grouped(parent)
        fam = family_name(base)
        plain: list[str] = []
        packed: list[str] = []
        for name in groups.get(fam, []):
            full = os.path.join(parent, name)
            stripped = without_compression(name)
            if stripped is None:
                if full != path and (rotated_from(name, base) or rotated_from(name, fam)):
                    plain.append(full)
            elif (
                stripped in (base, fam)
                or rotated_from(stripped, base)
                or rotated_from(stripped, fam)
            ):
                packed.append(full)
        return plain, packed


def _grouped(parent: str) -> dict[str, list[str]]:
    try:
        names = os.listdir(parent or ".")
    except OSError:
        return {}
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(family_name(without_compression(name) or name), []).append(name)
    return groups

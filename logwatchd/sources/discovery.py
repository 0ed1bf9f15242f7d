"""Which paths a source's globs name now, and which directories to watch for them."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable

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


def rotation_dirs(path: str, olddir: str | None = None) -> list[str]:
    """Where rotations of ``path`` are: its directory, and logrotate's ``olddir`` if named
    (a relative one is relative to the file's directory, as logrotate reads it)."""
    parent = os.path.dirname(path)
    if not olddir:
        return [parent]
    old = os.path.normpath(os.path.join(parent, olddir))
    return [parent] if old == os.path.normpath(parent or ".") else [parent, old]


def dir_stamps(dirs: Iterable[str], olddir: str | None = None) -> dict[str, int]:
    """The mtime (ns) of these directories and their olddirs: it changes whenever a name
    there is created, renamed or removed."""
    stamps = {}
    for parent in dirs:
        for d in rotation_dirs(os.path.join(parent, "x"), olddir):
            try:
                stamps[d] = os.stat(d or ".").st_mtime_ns
            except OSError:
                stamps[d] = -1
    return stamps


def rotated_siblings(path: str, olddir: str | None = None) -> list[str]:
    """Names that look like rotated forms of ``path`` (app.log.1, ...), in its directory and
    its olddir."""
    base = os.path.basename(path)
    return [
        os.path.join(parent, n)
        for parent in rotation_dirs(path, olddir)
        for n in _names(parent)
        if rotated_from(n, base)
    ]


def compressed_siblings(path: str, olddir: str | None = None) -> list[str]:
    """Compressed forms of ``path`` and of its rotations (app.log.1.gz, app.log.2.gz)."""
    base = os.path.basename(path)
    found = []
    for parent in rotation_dirs(path, olddir):
        for name in _names(parent):
            plain = without_compression(name)
            if plain is not None and (plain == base or rotated_from(plain, base)):
                found.append(os.path.join(parent, name))
    return found


def _names(parent: str) -> list[str]:
    try:
        return sorted(os.listdir(parent or "."))
    except OSError:
        return []


def regular_key(path: str) -> tuple[int, int] | None:
    """(dev, ino) of a regular file at ``path``, or None."""
    st = regular_stat(path)
    return (st.st_dev, st.st_ino) if st is not None else None


def regular_stat(path: str) -> os.stat_result | None:
    """The stat of a regular file at ``path``, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def family(path: str) -> str:
    """``/var/log/app.log.2`` -> ``/var/log/app.log``: where the rotations of a file live."""
    parent, base = os.path.split(path)
    return os.path.join(parent, family_name(base))


class Listing:
    """Directory listings taken once, so looking up the rotations of many files costs one
    listdir per directory: names grouped by the live name they rotate from, and (only when
    asked) the identity of each regular file."""

    def __init__(self, olddir: str | None = None) -> None:
        self._olddir = olddir
        self._groups: dict[str, dict[str, list[str]]] = {}
        self._keys: dict[str, dict[tuple[int, int], str]] = {}

    def rotations(self, path: str) -> tuple[list[str], list[str]]:
        """Plain and compressed rotated names of ``path`` and of the file it was rotated
        from, in its directory and the olddir."""
        base = os.path.basename(path)
        fam = family_name(base)
        plain: list[str] = []
        packed: list[str] = []
        for parent in rotation_dirs(path, self._olddir):
            groups = self._groups.get(parent)
            if groups is None:
                groups = self._groups[parent] = _grouped(parent)
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

    def find(self, paths: Iterable[str], key: tuple[int, int]) -> str | None:
        """The name the file ``key`` has now in the directories or olddirs of ``paths``,
        whatever it is (a rename to a name no pattern knows). Each directory is stat'ed once
        per listing."""
        dirs = [d for path in paths for d in rotation_dirs(path, self._olddir)]
        for parent in dict.fromkeys(dirs):
            keys = self._keys.get(parent)
            if keys is None:
                keys = self._keys[parent] = _regular_files(parent)
            if key in keys:
                return keys[key]
        return None


def _regular_files(parent: str) -> dict[tuple[int, int], str]:
    found = {}
    try:
        with os.scandir(parent or ".") as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found[(st.st_dev, st.st_ino)] = os.path.join(parent, entry.name)
    except OSError:
        return {}
    return found


def _grouped(parent: str) -> dict[str, list[str]]:
    try:
        names = os.listdir(parent or ".")
    except OSError:
        return {}
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(family_name(without_compression(name) or name), []).append(name)
    return groups

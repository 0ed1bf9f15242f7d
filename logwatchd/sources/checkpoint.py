"""How a file source's position is stored: one JSON-able mapping, written and read here only.

The mapping holds, per followed file, its identity (dev, ino, fingerprint), the offset just
after the last line handed out and the marker before it, plus the fingerprints of content
lately drained and closed. The reader and the follower never see the stored form: they get
``SavedFile`` values back, and a damaged entry is logged and left out, never fatal.

Version 2 stores a file as a list in the order of ``FIELDS`` (``name`` null when it is the
path): with 100,000 files the mapping is written at each commit, and lists take a quarter of
the time mappings with keys take to encode. Version 1 (one mapping per file) is still read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from logwatchd.sources.identity import Fingerprint, Marker
from logwatchd.sources.reader import FileReader

log = structlog.get_logger()

VERSION = 2
FIELDS = (
    "path", "name", "dev", "ino", "fp", "fp_len", "tag", "offset", "lineno", "skip", "marker",
    "marker_len", "orphan",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SavedFile:
    """One followed file as the last checkpoint left it."""

    path: str  # where it was (a rotated name once rotated)
    name: str  # the name a glob followed it by: where its rotations are looked for
    dev: int
    ino: int
    fp: Fingerprint
    tag: str
    offset: int
    lineno: int
    skipping: bool
    marker: Marker

    @property
    def evidence(self) -> int:
        """How much of the file's content is known (0: it was empty and nothing was read)."""
        return max(self.fp.length, self.offset)


@dataclass(frozen=True)
class Saved:
    """A decoded checkpoint. ``known`` also holds the fingerprints of entries too damaged to
    resume: their content was seen, so a rotated copy of it is not new."""

    files: list[SavedFile] = field(default_factory=list)
    retired: list[Fingerprint] = field(default_factory=list)
    known: list[Fingerprint] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # followed names whose rotations may hold lines
    time: float | None = None  # wall time of the checkpoint


class Encoder:
    """Writes checkpoints. A parked reader's entry stays the same until it is opened again:
    with many files most are parked, and building their entries was most of the cost, so
    those are kept from one checkpoint to the next."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._parked: dict[FileReader, list[Any]] = {}

    def encode(
        self, readers: Iterable[FileReader], retired: Iterable[Fingerprint]
    ) -> dict[str, Any]:
        files = []
        parked: dict[FileReader, list[Any]] = {}
        for reader in readers:
            try:
                files.append(self._entry(reader, parked))
            except OSError as exc:
                log.warning(
                    "cannot checkpoint file", source=self._source, path=reader.path, error=str(exc)
                )
        self._parked = parked  # closed readers are forgotten
        # Wall time from the system, not the injected clock: it is compared with file mtimes.
        return {
            "version": VERSION,
            "time": time.time(),
            "files": files,
            "retired": [{"fp": fp.digest, "fp_len": fp.length} for fp in retired],
        }

    def _entry(self, reader: FileReader, parked: dict[FileReader, list[Any]]) -> list[Any]:
        if not reader.parked:
            return _entry(reader)
        entry = self._parked.get(reader)
        orphan = int(reader.orphan_since is not None)
        now = (reader.path, _name(reader), orphan)  # what a scan may change while parked
        if entry is None or (entry[0], entry[1], entry[12]) != now:
            entry = _entry(reader)
        parked[reader] = entry
        return entry


def _name(reader: FileReader) -> str | None:
    return None if reader.name == reader.path else reader.name


def _entry(reader: FileReader) -> list[Any]:
    reader.refresh_fingerprint()
    marker = reader.marker()
    return [
        reader.path,
        _name(reader),
        reader.dev,
        reader.ino,
        reader.fp.digest,
        reader.fp.length,
        reader.tag,
        reader.offset,
        reader.lineno,
        int(reader.skipping),
        marker.digest,
        marker.length,
        int(reader.orphan_since is not None),
    ]


def decode(saved: dict[str, Any] | None, source: str) -> Saved:
    if not saved:
        return Saved()
    stored = saved.get("files")
    stored = stored if isinstance(stored, list) else []
    # version 2: lists in FIELDS order; version 1: mappings
    entries = [dict(zip(FIELDS, e, strict=False)) if isinstance(e, list) else e for e in stored]
    entries = [e for e in entries if isinstance(e, dict)]
    files = []
    for entry in entries:
        try:
            files.append(_saved_file(entry))
        except (KeyError, TypeError, ValueError) as exc:
            if _evidence(entry):
                log.warning("ignoring a bad checkpoint entry", source=source, error=str(exc))
    stamp = saved.get("time")
    retired = saved.get("retired")
    return Saved(
        files=files,
        retired=fingerprints(retired if isinstance(retired, list) else []),
        known=fingerprints(entries),
        names={str(e.get("name") or e["path"]) for e in entries if e.get("path")},
        time=float(stamp) if isinstance(stamp, (int, float)) else None,
    )


def readable(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The stored mapping with each file as a mapping of ``FIELDS`` (for status, metrics and
    ``status --json``); anything else unchanged."""
    files = saved.get("files")
    if not isinstance(files, list):
        return dict(saved)
    shown = []
    for entry in files:
        if not isinstance(entry, list):
            shown.append(entry)
            continue
        fields = dict(zip(FIELDS, entry, strict=False))
        fields["name"] = fields.get("name") or fields.get("path")
        shown.append(fields)
    return {**saved, "files": shown}


def _saved_file(entry: dict[str, Any]) -> SavedFile:
    path = str(entry["path"])
    if "\x00" in path:
        raise ValueError("a path with a NUL byte")
    return SavedFile(
        path=path,
        name=str(entry.get("name") or path),
        dev=int(entry["dev"]),
        ino=int(entry["ino"]),
        fp=Fingerprint(str(entry["fp"]), int(entry["fp_len"])),
        tag=str(entry["tag"]),
        offset=int(entry["offset"]),
        lineno=int(entry["lineno"]),
        skipping=bool(entry.get("skip", False)),
        marker=Marker(str(entry["marker"]), int(entry["marker_len"])),
    )


def fingerprints(entries: Iterable[Any]) -> list[Fingerprint]:
    out = []
    for entry in entries:
        try:
            out.append(Fingerprint(str(entry["fp"]), int(entry["fp_len"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _evidence(entry: dict[str, Any]) -> int:
    try:
        return max(int(entry.get("fp_len", 0)), int(entry.get("offset", 0)))
    except (TypeError, ValueError):
        return 0

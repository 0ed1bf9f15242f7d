"""Restorer and the checkpoint form alone: each saved identity found again, or given up."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from logwatchd.clock import ManualClock
from logwatchd.sources import checkpoint
from logwatchd.sources.openfiles import OpenFiles
from logwatchd.sources.restore import Restorer
from logwatchd.sources.retired import Retired
from logwatchd.sources.unseen import Unseen

NOW = 1_700_000_000.0


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "app.log"
        self.clock = ManualClock()
        self.files = OpenFiles("src", max_line_bytes=4096, clock=self.clock)

    def saved_after_reading(self, count: int) -> dict[str, Any]:
        """Follow app.log, hand out ``count`` lines, and checkpoint (as before a crash)."""
        files = OpenFiles("src", max_line_bytes=4096, clock=self.clock)
        fd = files.open(str(self.log))
        assert fd is not None
        reader = files.add(fd, str(self.log), followed=True)
        assert reader is not None
        reader.read(count, NOW)
        saved = checkpoint.Encoder("src").encode(files, [])
        files.close_all()
        return saved

    def resume(
        self, saved: dict[str, Any], patterns: tuple[str, ...] = (), olddir: str | None = None
    ) -> list[str]:
        unseen = Unseen(self.files, Retired(), olddir=olddir)
        patterns = patterns or (str(self.log),)
        restorer = Restorer(self.files, unseen, patterns=patterns, olddir=olddir)
        restorer.resume(checkpoint.decode(saved, "src"))
        return [ln.raw for r in self.files.reading_order() for ln in r.read(1000, NOW)]


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Setup]:
    setup = Setup(tmp_path)
    yield setup
    setup.files.close_all()


def lines(count: int, start: int = 1) -> bytes:
    return b"".join(b"line %04d of the application log\n" % n for n in range(start, start + count))


def texts(data: bytes) -> list[str]:
    return data.decode().splitlines()


def test_the_same_inode_at_its_name_resumes_after_the_offset(s: Setup) -> None:
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(3)
    assert s.resume(saved) == texts(lines(5))[3:]


def test_the_same_inode_under_a_rotated_name_is_drained_as_an_orphan(s: Setup) -> None:
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(3)
    os.rename(s.log, s.root / "app.log.1")
    s.log.write_bytes(lines(2, start=100))
    got = s.resume(saved)
    assert got == texts(lines(5))[3:]  # the new app.log is found by the follower's scan
    (reader,) = list(s.files)
    assert reader.path == str(s.root / "app.log.1")
    assert reader.name == str(s.log)  # its rotations are still looked for as app.log's
    assert reader.orphan_since is not None


def test_a_rename_to_a_name_no_pattern_knows_is_found_by_inode(s: Setup) -> None:
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(3)
    os.rename(s.log, s.root / "app.log.k1.old")
    with open(s.root / "app.log.k1.old", "ab") as fh:
        fh.write(lines(2, start=6))
    s.log.write_bytes(lines(2, start=100))
    assert s.resume(saved) == texts(lines(7))[3:]
    (reader,) = list(s.files)
    assert (reader.path, reader.orphan_since is not None) == (str(s.root / "app.log.k1.old"), True)


@pytest.mark.parametrize("olddir", ["old", "ABS"])
def test_a_file_moved_to_the_olddir_is_found_there(s: Setup, olddir: str) -> None:
    (s.root / "old").mkdir()
    olddir = str(s.root / "old") if olddir == "ABS" else olddir
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(3)
    os.rename(s.log, s.root / "old" / "app.log-20261126")
    assert s.resume(saved) == []  # without the olddir it is gone
    s.files.close_all()
    assert s.resume(saved, olddir=olddir) == texts(lines(5))[3:]


def test_a_copy_under_a_rotated_name_continues_from_the_offset(s: Setup) -> None:
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(3)
    shutil.copy(s.log, s.root / "app.log.1")  # copytruncate while down
    os.truncate(s.log, 0)
    assert s.resume(saved) == texts(lines(5))[3:]


def test_a_short_fingerprint_identifies_a_copy_only_under_a_rotated_name(s: Setup) -> None:
    s.log.write_bytes(b"a\nb\n")
    saved = s.saved_after_reading(1)
    shutil.copy(s.log, s.root / "elsewhere.log")
    os.unlink(s.log)
    assert s.resume(saved, patterns=(str(s.root / "*.log"),)) == []


def test_a_reused_inode_with_other_bytes_is_not_the_saved_file(s: Setup) -> None:
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(5)
    with open(s.log, "r+b") as fh:  # same inode, other content: a new file now
        fh.write(b"LINE")
    with structlog.testing.capture_logs() as logs:
        assert s.resume(saved) == []
    assert "a checkpointed file is gone; its unread lines are lost" in [e["event"] for e in logs]


def test_a_file_compressed_while_down_is_drained_from_the_archive(s: Setup) -> None:
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(2)
    with gzip.open(s.root / "app.log.1.gz", "wb") as gz:
        gz.write(s.log.read_bytes())
    os.unlink(s.log)
    assert s.resume(saved) == texts(lines(5))[2:]


def test_a_rotated_file_written_since_the_checkpoint_is_read_whole(s: Setup) -> None:
    """Two rotations while down: the middle file was never seen by the follower."""
    s.log.write_bytes(lines(3))
    saved = s.saved_after_reading(3)
    os.rename(s.log, s.root / "app.log.2")
    (s.root / "app.log.1").write_bytes(lines(2, start=50))
    s.log.write_bytes(b"")
    assert s.resume(saved) == texts(lines(2, start=50))


def test_the_checkpoint_form_round_trips_and_damage_is_left_out(s: Setup) -> None:
    s.log.write_bytes(lines(5))
    saved = s.saved_after_reading(3)
    decoded = checkpoint.decode(saved, "src")
    (entry,) = decoded.files
    assert (entry.path, entry.name, entry.offset, entry.lineno) == (
        str(s.log),
        str(s.log),
        len(lines(3)),
        3,
    )
    assert decoded.names == {str(s.log)}
    as_v1 = dict(zip(checkpoint.FIELDS, saved["files"][0], strict=True))  # one mapping a file
    assert checkpoint.decode({**saved, "files": [as_v1]}, "src").files == [entry]
    damaged = {k: v for k, v in as_v1.items() if k != "marker"}
    nul = {**as_v1, "path": "a\x00b"}
    with structlog.testing.capture_logs() as logs:
        bad = checkpoint.decode({**saved, "files": [damaged, nul, 7, "x"]}, "src")
    assert bad.files == []
    assert [e["event"] for e in logs] == ["ignoring a bad checkpoint entry"] * 2
    assert bad.known == [entry.fp, entry.fp]  # its content was seen all the same
    assert checkpoint.decode({"files": "nonsense", "time": "x"}, "src") == checkpoint.Saved()

"""Copies alone: which new file is held as a copy, and what a truncation does with it."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatchd.clock import ManualClock
from logwatchd.events import Line
from logwatchd.sources.copies import Copies
from logwatchd.sources.openfiles import OpenFiles
from logwatchd.sources.reader import FileReader
from logwatchd.sources.retired import Retired

NOW = 1_700_000_000.0
GRACE = 3.0


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = ManualClock()
        self.files = OpenFiles("src", max_line_bytes=4096, clock=self.clock)
        self.retired = Retired()
        self.copies = Copies(self.files, self.retired, clock=self.clock, grace=GRACE)
        self.log = root / "app.log"

    def follow(self, path: Path, *, followed: bool = True) -> FileReader:
        fd = self.files.open(str(path))
        assert fd is not None
        reader = self.files.add(fd, str(path), followed=followed)
        assert reader is not None
        return reader


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Setup]:
    setup = Setup(tmp_path)
    yield setup
    setup.files.close_all()


def lines(data: int, start: int = 1) -> bytes:
    return b"".join(b"line %04d of the application log\n" % n for n in range(start, start + data))


def raws(got: list[Line]) -> list[str]:
    return [ln.raw for ln in got]


def texts(data: bytes) -> list[str]:
    return data.decode().splitlines()


def test_a_new_file_under_a_rotated_name_that_starts_like_a_followed_one_is_held(
    s: Setup,
) -> None:
    s.log.write_bytes(lines(10))
    original = s.follow(s.log)
    (s.root / "app.log.1").write_bytes(lines(10))
    copy = s.follow(s.root / "app.log.1")
    assert s.copies.suspect(copy)
    assert s.copies.held(copy)
    assert copy.offset == len(lines(10))  # followed from its end unless drained
    (s.root / "other.log").write_bytes(lines(10))
    assert not s.copies.suspect(s.follow(s.root / "other.log"))  # not a rotated name
    assert not s.copies.held(original)


def test_a_truncation_drains_the_copy_from_the_old_offset_first(s: Setup) -> None:
    s.log.write_bytes(lines(10))
    original = s.follow(s.log)
    original.read(1000, NOW)
    with open(s.log, "ab") as fh:
        fh.write(lines(5, start=11))  # written before the copy, never read from app.log
    (s.root / "app.log.1").write_bytes(s.log.read_bytes())
    os.truncate(s.log, 0)
    old_fp, old_tag = original.fp, original.tag
    out: list[Line] = []
    assert s.copies.truncated(original, out) is False  # the copy's lines go first
    copy = s.files.reading_order()[0]
    assert copy.path == str(s.root / "app.log.1")
    assert copy.orphan_since is not None
    assert raws(copy.read(1000, NOW)) == texts(lines(5, start=11))
    assert copy.tag == old_tag  # the copy continues the original's origins
    assert original.tag != old_tag and original.offset == 0
    assert old_fp in s.retired.fingerprints


def test_a_truncation_without_a_copy_hands_out_what_was_read_and_restarts(s: Setup) -> None:
    s.log.write_bytes(lines(3))
    original = s.follow(s.log)
    original.read(1, NOW)  # two lines read but not handed out yet
    os.truncate(s.log, 0)
    out: list[Line] = []
    assert s.copies.truncated(original, out) is True
    assert raws(out) == texts(lines(3))[1:]
    assert (original.offset, original.lineno) == (0, 0)


def test_a_copy_already_compressed_is_drained_from_the_archive(s: Setup) -> None:
    s.log.write_bytes(lines(10))
    original = s.follow(s.log)
    original.read(1000, NOW)
    with open(s.log, "ab") as fh:
        fh.write(lines(3, start=11))
    with gzip.open(s.root / "app.log.1.gz", "wb") as gz:
        gz.write(s.log.read_bytes())
    os.truncate(s.log, 0)
    assert s.copies.truncated(original, []) is False
    copy = s.files.reading_order()[0]
    assert copy.path == str(s.root / "app.log.1.gz")
    assert raws(copy.read(1000, NOW)) == texts(lines(3, start=11))


def test_a_suspect_that_turns_out_different_is_read_from_its_start(s: Setup) -> None:
    s.log.write_bytes(lines(10))
    s.follow(s.log)
    half = lines(10)[:100]
    (s.root / "app.log.1").write_bytes(half)  # a copy being written: a prefix so far
    copy = s.follow(s.root / "app.log.1")
    assert s.copies.suspect(copy)
    (s.root / "app.log.1").write_bytes(half + b"but then something else\n")
    s.copies.review(copy)
    assert not s.copies.held(copy)
    assert copy.read(1000, NOW)[0].origin == f"{copy.tag}:0"


def test_an_exact_copy_quiet_for_the_grace_period_is_followed_from_its_end(s: Setup) -> None:
    s.log.write_bytes(lines(10))
    s.follow(s.log)
    (s.root / "app.log.1").write_bytes(lines(10))
    copy = s.follow(s.root / "app.log.1")
    assert s.copies.suspect(copy)
    s.copies.review(copy)  # first look: its size is noted
    s.clock.advance(GRACE / 2)
    s.copies.review(copy)
    assert s.copies.held(copy)
    s.clock.advance(GRACE)
    s.copies.review(copy)
    assert not s.copies.held(copy)
    assert copy.read(1000, NOW) == []  # its content is known


def test_when_the_original_is_closed_its_suspects_are_released(s: Setup) -> None:
    s.log.write_bytes(lines(10))
    original = s.follow(s.log)
    (s.root / "app.log.1").write_bytes(lines(10))
    copy = s.follow(s.root / "app.log.1")
    assert s.copies.suspect(copy)
    s.files.close(original)
    s.copies.original_closed(original)
    assert not s.copies.held(copy)

"""FileReader alone: exact offsets across blocks, partial and long lines, replaced content."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatchd.sources import reader as reader_module
from logwatchd.sources.identity import fingerprint, marker_at
from logwatchd.sources.reader import FileReader

NOW = 1_700_000_000.0


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 16 bytes, so every test crosses block boundaries inside lines."""
    monkeypatch.setattr(reader_module, "BLOCK_BYTES", 16)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "app.log"


@pytest.fixture
def opened(log: Path) -> Iterator[list[FileReader]]:
    readers: list[FileReader] = []
    yield readers
    for reader in readers:
        reader.close()


def make(
    log: Path, opened: list[FileReader], *, offset: int = 0, skipping: bool = False, limit: int = 64
) -> FileReader:
    log.touch()
    reader = FileReader(
        os.open(log, os.O_RDONLY),
        source="src",
        path=str(log),
        tag="t",
        offset=offset,
        lineno=0,
        skipping=skipping,
        max_line_bytes=limit,
    )
    opened.append(reader)
    return reader


def append(log: Path, data: bytes) -> None:
    with open(log, "ab") as fh:
        fh.write(data)


def read_all(reader: FileReader) -> list[tuple[str, str, bool]]:
    return [(ln.raw, ln.origin, ln.truncated) for ln in reader.read(1000, NOW)]


@pytest.mark.usefixtures("small_blocks")
def test_each_line_carries_its_start_offset_and_the_offset_follows_what_was_handed_out(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"first line here\nsecond, a longer line\nthird\n")
    reader = make(log, opened)
    got = reader.read(2, NOW)
    assert [(ln.raw, ln.origin, ln.lineno) for ln in got] == [
        ("first line here", "t:0", 1),
        ("second, a longer line", "t:16", 2),
    ]
    assert reader.offset == 38  # just after the second line, though more was read
    assert reader.read_pos > reader.offset
    assert [ln.origin for ln in reader.read(10, NOW)] == ["t:38"]
    assert reader.offset == os.path.getsize(log)


@pytest.mark.usefixtures("small_blocks")
def test_multibyte_text_keeps_byte_offsets(log: Path, opened: list[FileReader]) -> None:
    append(log, "héllo wörld\n".encode() + b"bad \xff byte\nnext\n")
    reader = make(log, opened)
    assert read_all(reader) == [
        ("héllo wörld", "t:0", False),
        ("bad \ufffd byte", "t:14", False),
        ("next", "t:25", False),
    ]


@pytest.mark.usefixtures("small_blocks")
def test_a_partial_line_is_held_and_handed_out_only_when_given_up(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"done\nhalf a li")
    reader = make(log, opened)
    assert read_all(reader) == [("done", "t:0", False)]
    assert reader.offset == 5
    append(log, b"ne\nthe last, never ended")
    assert read_all(reader) == [("half a line", "t:5", False)]
    assert [(ln.raw, ln.truncated) for ln in reader.flush_partial(NOW)] == [
        ("the last, never ended", False)
    ]
    assert reader.offset == os.path.getsize(log)


@pytest.mark.usefixtures("small_blocks")
def test_a_long_line_is_cut_flagged_and_its_rest_skipped_even_across_a_restart(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"x" * 40)
    reader = make(log, opened, limit=24)
    assert read_all(reader) == [("x" * 24, "t:0", True)]
    assert (reader.offset, reader.skipping) == (40, True)  # inside the long line
    # a restart from this position drops the rest of that line too
    again = make(log, opened, offset=reader.offset, skipping=True, limit=24)
    append(log, b"yyy\nshort\n")
    assert read_all(reader) == [("short", "t:44", False)]
    assert read_all(again) == [("short", "t:44", False)]


def test_truncation_and_a_rewrite_of_the_bytes_read_are_both_replaced_content(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"one\ntwo\n")
    reader = make(log, opened)
    read_all(reader)
    assert not reader.replaced(reader.size())
    log.write_bytes(b"ONE\ntwo\n")  # same size, other bytes before the read position
    assert reader.replaced(reader.size())
    os.truncate(log, 2)
    assert reader.replaced(reader.size())


def test_an_append_is_not_a_replacement(log: Path, opened: list[FileReader]) -> None:
    append(log, b"one\n")
    reader = make(log, opened)
    read_all(reader)
    append(log, b"two\n")
    assert not reader.replaced(reader.size())


def test_restart_reads_from_zero_under_a_new_tag(log: Path, opened: list[FileReader]) -> None:
    append(log, b"old content\n")
    reader = make(log, opened)
    read_all(reader)
    log.write_bytes(b"new\n")
    reader.restart("t2")
    assert read_all(reader) == [("new", "t2:0", False)]
    assert reader.fp == fingerprint(b"new\n")


def test_rewind_continues_another_identity_from_its_offset(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"one\ntwo\nthree\n")
    reader = make(log, opened)
    reader.rewind(4, 1, "orig")
    assert [(ln.raw, ln.origin, ln.lineno) for ln in reader.read(10, NOW)] == [
        ("two", "orig:4", 2),
        ("three", "orig:8", 3),
    ]


def test_start_at_end_skips_to_after_the_last_complete_line(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"old\nolder\npartial")
    reader = make(log, opened)
    reader.start_at_end()
    assert reader.offset == 10
    append(log, b" end\n")
    assert read_all(reader) == [("partial end", "t:10", False)]


def test_marker_is_taken_before_the_offset_not_the_read_position(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"one\ntwo\nthree\n")
    reader = make(log, opened)
    reader.read(1, NOW)
    assert reader.offset == 4
    assert reader.marker() == marker_at(reader.fd, 4)
    read_all(reader)
    assert reader.marker() == marker_at(reader.fd, 14)


def test_a_short_fingerprint_grows_only_while_the_file_starts_the_same(
    log: Path, opened: list[FileReader]
) -> None:
    append(log, b"ab")
    reader = make(log, opened)
    assert reader.fp.length == 2
    append(log, b"cd\n")
    reader.refresh_fingerprint()
    assert reader.fp == fingerprint(b"abcd\n")
    log.write_bytes(b"XYcd\nmore\n")  # rewritten: the fingerprint is not extended over it
    reader.refresh_fingerprint()
    assert reader.fp == fingerprint(b"abcd\n")

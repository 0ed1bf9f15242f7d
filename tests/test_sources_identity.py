"""File identity: fingerprints compared as a prefix, markers before an offset, rotated names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logwatchd.sources.identity import (
    FINGERPRINT_BYTES,
    MARKER_BYTES,
    family_name,
    fingerprint,
    holds,
    is_compressed,
    marker_at,
    marker_holds,
    read_head,
    rotated_from,
    rotation_bases,
    without_compression,
)


def test_fingerprint_covers_at_most_the_first_kibibyte() -> None:
    data = os.urandom(5000)
    fp = fingerprint(data)
    assert fp.length == FINGERPRINT_BYTES
    assert fp.matches(data[:FINGERPRINT_BYTES])
    assert fp.matches(data[:FINGERPRINT_BYTES] + b"anything after")
    assert not fp.matches(b"X" + data[1:FINGERPRINT_BYTES])


def test_short_file_fingerprint_is_compared_as_a_prefix() -> None:
    """Recorded while the file had 30 bytes: the grown file still matches; a shorter one not."""
    fp = fingerprint(b"2026-11-26 first line of app\n")
    assert fp.length == 29
    assert fp.matches(b"2026-11-26 first line of app\nand much more later")
    assert not fp.matches(b"2026-11-26 first line")
    assert not fp.matches(b"2026-11-27 first line of app\n")


def test_marker_detects_rewritten_bytes_before_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 300 + b"b" * 300)
    fd = os.open(path, os.O_RDONLY)
    try:
        marker = marker_at(fd, 500)
        assert marker.length == MARKER_BYTES
        assert marker_holds(fd, 500, marker)
        with open(path, "r+b") as fh:  # rewrite the bytes just before the offset
            fh.seek(450)
            fh.write(b"c")
        assert not marker_holds(fd, 500, marker)
        os.truncate(path, 100)
        assert not marker_holds(fd, 500, marker)
    finally:
        os.close(fd)


def test_marker_at_the_start_of_a_file_is_empty_and_always_holds(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert marker_at(fd, 0).length == 0
        assert marker_holds(fd, 0, marker_at(fd, 0))
        assert marker_at(fd, 2).length == 2
        assert read_head(fd) == b"x\n"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("app.log.1", "app.log"),
        ("app.log.12", "app.log"),
        ("app.log-20261126", "app.log"),
        ("app.log-2026-11-26", "app.log"),
        ("app.log-20261126-1732600000", "app.log"),
        ("app.log.old", "app.log"),
        ("app-20261126.log", "app.log"),
        ("app.1.log", "app.log"),
    ],
)
def test_rotated_names_are_recognised(name: str, base: str) -> None:
    assert rotated_from(name, base)


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("app.log", "app.log"),
        ("app.log.1.gz", "app.log"),
        ("app.log.2.xz", "app.log"),
        ("application.log", "app.log"),
        ("app.logger", "app.log"),
        ("other.log.1", "app.log"),
    ],
)
def test_other_names_are_not_rotated_forms(name: str, base: str) -> None:
    assert not rotated_from(name, base)


@pytest.mark.parametrize("name", ["a.gz", "a.log.1.GZ", "a.xz", "a.bz2", "a.zst", "a.log.2.lz4"])
def test_compressed_names_are_never_text(name: str) -> None:
    assert is_compressed(name)
    assert not is_compressed("a.log")


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("app.log.2", "app.log"),
        ("app.log-20261126", "app.log"),
        ("app-20261126.log", "app.log"),
        ("app.log", "app.log"),
        ("syslog.7", "syslog"),
        ("access.log.old", "access.log"),
    ],
)
def test_family_name_is_the_live_name_a_rotation_came_from(name: str, family: str) -> None:
    assert family_name(name) == family


def test_holds_needs_the_first_bytes_and_the_marker_before_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"head of the file\n" + b"body\n" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        fp, marker = fingerprint(read_head(fd)), marker_at(fd, 300)
        assert holds(fd, fp, 300, marker)
        assert not holds(fd, fp, 10_000, marker)  # the file is shorter than the offset
        assert not holds(fd, fingerprint(b"other head"), 300, marker)
        assert not holds(fd, fp, 301, marker)  # other bytes before that offset
    finally:
        os.close(fd)


def test_an_empty_fingerprint_identifies_only_the_same_inode(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"written after we saw it empty\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        empty = fingerprint(b"")
        assert not holds(fd, empty, 0, marker_at(fd, 0))
        assert holds(fd, empty, 0, marker_at(fd, 0), same_inode=True)
    finally:
        os.close(fd)


def test_without_compression_strips_only_an_archive_suffix() -> None:
    assert without_compression("app.log.2.gz") == "app.log.2"
    assert without_compression("app.log.2.XZ") == "app.log.2"
    assert without_compression("app.log.2") is None


@given(
    name=st.text("ab.-1_0ol", min_size=1, max_size=12),
    base=st.text("ab.-1_0ol", min_size=1, max_size=8),
)
def test_rotation_bases_holds_every_base_a_name_is_rotated_from(name: str, base: str) -> None:
    if rotated_from(name, base):
        assert base in rotation_bases(name)


def test_rotation_bases_of_common_names() -> None:
    assert {"app.log", "app"} <= rotation_bases("app.log.1")
    assert "app.log" in rotation_bases("app-20261126.log")

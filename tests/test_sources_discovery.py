"""Discovery alone: what the globs name, which directories are watched, where rotations are."""

from __future__ import annotations

import os
from pathlib import Path

from logwatchd.sources import discovery


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")


def test_expand_names_each_file_once_sorted_without_archives(tmp_path: Path) -> None:
    touch(tmp_path, "b.log", "a.log", "a.log.1.gz", "c.txt")
    (tmp_path / "dir.log").mkdir()  # not a regular file, but a candidate: opening decides
    patterns = (str(tmp_path / "*.log"), str(tmp_path / "a.log"), str(tmp_path / "*.gz"))
    got = discovery.expand(patterns)
    assert got == [str(tmp_path / n) for n in ("a.log", "b.log", "dir.log")]
    assert discovery.expand((str(tmp_path / "missing.log"),)) == []


def test_watch_dirs_are_the_existing_parents_of_the_globs(tmp_path: Path) -> None:
    touch(tmp_path, "x/app.log", "y/app.log")
    patterns = (str(tmp_path / "*" / "app.log"), str(tmp_path / "gone" / "*.log"))
    assert discovery.watch_dirs(patterns) == {str(tmp_path / "x"), str(tmp_path / "y")}


def test_rotations_are_grouped_by_the_live_name_they_came_from(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "app.log",
        "app.log.1",
        "app.log.2.gz",
        "app-20261126.log",
        "app.log-20261125.xz",
        "application.log.1",
        "other.log.1",
    )
    live = str(tmp_path / "app.log")
    plain, packed = discovery.Listing().rotations(live)
    assert plain == [str(tmp_path / n) for n in ("app-20261126.log", "app.log.1")]
    assert packed == [str(tmp_path / n) for n in ("app.log-20261125.xz", "app.log.2.gz")]
    # from a rotated name, its siblings and the live name's other rotations, not itself
    plain, _ = discovery.Listing().rotations(str(tmp_path / "app.log.1"))
    assert str(tmp_path / "app.log.1") not in plain
    assert discovery.rotated_siblings(live) == [*plain, str(tmp_path / "app.log.1")]
    assert discovery.compressed_siblings(live) == packed


def test_one_listing_serves_many_lookups_in_a_directory(tmp_path: Path) -> None:
    touch(tmp_path, "a.log", "a.log.1", "b.log", "b.log.1")
    listing = discovery.Listing()
    first = listing.rotations(str(tmp_path / "a.log"))
    touch(tmp_path, "b.log.2")  # after the listing was taken: not seen through it
    assert first == ([str(tmp_path / "a.log.1")], [])
    assert listing.rotations(str(tmp_path / "b.log")) == ([str(tmp_path / "b.log.1")], [])


def test_regular_key_is_dev_and_inode_of_a_regular_file_only(tmp_path: Path) -> None:
    touch(tmp_path, "a.log")
    st = os.stat(tmp_path / "a.log")
    assert discovery.regular_key(str(tmp_path / "a.log")) == (st.st_dev, st.st_ino)
    assert discovery.regular_key(str(tmp_path)) is None
    assert discovery.regular_key(str(tmp_path / "missing")) is None
    assert discovery.family(str(tmp_path / "a.log.3")) == str(tmp_path / "a.log")

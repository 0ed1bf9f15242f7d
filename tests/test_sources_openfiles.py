"""More followed files than the cap on files held open: quiet files are closed and re-opened
by identity when they change, and a closed file never loses or repeats a line."""

from __future__ import annotations

import os
from pathlib import Path

from logwatchd.sources.openfiles import descriptor_budget
from tests.sources_helpers import Run, Writer, follow, lost_and_repeated, numbers_of

CAP = 2


def ours(root: Path) -> int:
    """Descriptors of this process on the test's files, the writers' excluded (they are
    opened for appending; ours read-only)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
            flags = info.split("flags:")[1].split()[0]
        except (OSError, IndexError):
            continue
        if target.startswith(str(root)) and int(flags, 8) & os.O_ACCMODE == os.O_RDONLY:
            count += 1
    return count


def closed(run: Run, path: Path) -> bool:
    """Is the follower's reader of ``path`` parked (descriptor closed, position kept)?"""
    return any(r.parked for r in run.follower._files if r.path == str(path))


def test_many_files_are_read_through_a_few_descriptors(tmp_path: Path) -> None:
    writers = [Writer(str(tmp_path / f"f{i}.log"), tag=f"f{i}") for i in range(12)]
    for w in writers:
        w.write(5)
    run = follow([str(tmp_path / "*.log")], max_open_files=CAP)
    assert ours(tmp_path) <= CAP
    run.until(lambda: len(run.lines) >= 60)
    for w in writers:  # each of the closed files written again: found by its event
        w.write(3)
    run.until(lambda: len(run.lines) >= 96)
    run.settle()
    for w in writers:
        assert numbers_of(run.lines, w.tag) == list(range(1, 9))
    assert ours(tmp_path) <= CAP
    run.stop()


def test_a_closed_file_rotated_away_is_drained_before_its_successor(tmp_path: Path) -> None:
    busy = [Writer(str(tmp_path / f"b{i}.log"), tag=f"b{i}") for i in range(3)]
    log = tmp_path / "app.log"
    app = Writer(str(log))
    app.write(10)
    run = follow([str(tmp_path / "*.log")], max_open_files=CAP, orphan_grace=0.3)
    run.until(lambda: len(numbers_of(run.lines)) == 10)
    for w in busy:  # the quiet app.log gets closed to make room
        w.write(5)
    run.until(lambda: sum(len(numbers_of(run.lines, w.tag)) for w in busy) == 15)
    assert closed(run, log)
    os.rename(log, tmp_path / "app.log.1")  # rotated while closed...
    app.write(5)  # ...and written to before the application reopens
    app.reopen()
    app.write(5)
    run.until(lambda: len(numbers_of(run.lines)) == 20)
    run.settle(0.6)
    seen = numbers_of(run.lines)
    assert seen == list(range(1, 21))  # the old file's lines first, none twice
    paths = {ln.path for ln in run.lines if numbers_of([ln]) and numbers_of([ln])[0] > 10}
    assert paths == {str(tmp_path / "app.log.1"), str(log)}
    run.stop()


def test_a_closed_file_deleted_and_recreated_is_read_from_its_start(tmp_path: Path) -> None:
    """Its inode number may come back for the new file: the first bytes tell them apart."""
    others = [Writer(str(tmp_path / f"b{i}.log"), tag=f"b{i}") for i in range(3)]
    log = tmp_path / "app.log"
    Writer(str(log)).write(10)
    run = follow([str(tmp_path / "*.log")], max_open_files=CAP)
    run.until(lambda: len(numbers_of(run.lines)) == 10)
    for w in others:
        w.write(2)
    run.until(lambda: len(run.lines) == 16)
    assert closed(run, log)
    os.unlink(log)
    fresh = Writer(str(log), tag="new")
    fresh.write(12)
    run.until(lambda: len(numbers_of(run.lines, "new")) == 12)
    run.settle()
    assert lost_and_repeated(numbers_of(run.lines), 10) == ([], [])
    assert numbers_of(run.lines, "new") == list(range(1, 13))
    run.stop()


def test_the_budget_is_at_most_half_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert descriptor_budget(10**9) == soft // 2
    assert descriptor_budget(16) == min(16, soft // 2)

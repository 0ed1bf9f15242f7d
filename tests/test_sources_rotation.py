"""Real logrotate (the Debian package) rotating a file the follower is reading.

Each test forces rotations with ``logrotate -f`` and a private state file while a writer
appends numbered lines, then checks no line was lost and none repeated. The application's
SIGHUP is played by the writer reopening its file after logrotate returned, so lines land
in the old file after the rename, as they do in real life. Between rotations the follower is
polled, as the daemon polls on every inotify wake-up: a file that exists for a moment and is
rotated away before anyone looks is a different test (see test_sources_files).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.sources_helpers import (
    BackgroundWriter,
    Run,
    Writer,
    deleted_fds,
    follow,
    held_paths,
    logrotate,
    lost_and_repeated,
    run_while_polling,
)

pytestmark = pytest.mark.skipif(
    shutil.which("logrotate") is None and not os.path.exists("/usr/sbin/logrotate"),
    reason="logrotate is not installed",
)


def finish(run: Run, writer: BackgroundWriter) -> int:
    written = writer.stop()
    try:
        run.until_count(written, timeout=30)
    except AssertionError:
        lost, _ = lost_and_repeated(run.numbers(), written)
        where = {}
        for path in sorted(Path(writer.path).parent.glob("app.log*")):
            text = (
                gzip.decompress(path.read_bytes()).decode()
                if path.suffix == ".gz"
                else path.read_text()
            )
            found = set(numbers_of_text(text)) & set(lost)
            if found:
                where[path.name] = (min(found), max(found), len(found))
        raise AssertionError(
            f"lost {len(lost)} of {written}: {lost[:5]}...; on disk: {where}"
        ) from None
    run.settle(0.5)
    return written


def assert_exact(run: Run, written: int) -> None:
    lost, repeated = lost_and_repeated(run.numbers(), written)
    assert (len(lost), len(repeated)) == (0, 0), (lost[:10], repeated[:10])


def no_deleted_file_held(tmp_path: Path, run: Run) -> None:
    run.until(lambda: not [p for p in deleted_fds() if p.startswith(str(tmp_path))], timeout=10)


def test_create_with_lines_written_to_the_old_file_before_the_hup(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=2000)
    run = follow([str(log)], orphan_grace=0.5)
    argv = logrotate(str(tmp_path), str(log), ["create 0640"])
    for _ in range(3):
        run.settle(0.2)
        run_while_polling(argv, run)
        run.settle(0.1)  # the application is told late: these lines go to app.log.1
        writer.reopen()
    written = finish(run, writer)
    assert written > 1000
    assert_exact(run, written)
    no_deleted_file_held(tmp_path, run)
    run.stop()


def test_copytruncate_with_the_writer_paused_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=2000)
    run = follow([str(log)])
    argv = logrotate(str(tmp_path), str(log), ["copytruncate"])
    for _ in range(3):
        # A copy is known by its first bytes: the daemon reads within moments of a write
        # (inotify wakes it), so it is polling here, not sleeping.
        run.settle(0.2)
        writer.pause()
        run_while_polling(argv, run)
        writer.resume()
    written = finish(run, writer)
    assert_exact(run, written)
    run.stop()


def test_copytruncate_under_load_loses_only_what_logrotate_lost(tmp_path: Path) -> None:
    """Lines written between logrotate's copy and its truncate exist in no file: that is
    logrotate's race, not ours. Every other line comes exactly once."""
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=3000)
    run = follow([str(log)])
    argv = logrotate(str(tmp_path), str(log), ["copytruncate"], rotate=10)
    for _ in range(3):
        run.settle(0.2)
        run_while_polling(argv, run)
    written = writer.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        run.poll()
        time.sleep(0.02)
    on_disk = set()
    for path in tmp_path.glob("app.log*"):
        on_disk.update(numbers_of_text(path.read_text()))
    lost, repeated = lost_and_repeated(run.numbers(), written)
    assert repeated == []
    assert [n for n in lost if n in on_disk] == []
    assert len(lost) < written / 20
    run.stop()


def numbers_of_text(text: str) -> list[int]:
    return [int(parts[1]) for parts in (ln.split() for ln in text.splitlines()) if len(parts) > 1]


def test_compress_drains_the_old_file_before_gzip_removes_it(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=2000)
    run = follow([str(log)], orphan_grace=0.5)
    argv = logrotate(str(tmp_path), str(log), ["create", "compress"])
    for _ in range(3):
        run.settle(0.2)
        run_while_polling(argv, run)
        writer.reopen()
    written = finish(run, writer)
    assert_exact(run, written)
    assert (tmp_path / "app.log.1.gz").exists()
    assert numbers_of_text(gzip.decompress((tmp_path / "app.log.1.gz").read_bytes()).decode())
    no_deleted_file_held(tmp_path, run)
    run.stop()


def test_delaycompress_with_a_glob_that_matches_rotated_names(tmp_path: Path) -> None:
    """app.log* matches app.log.1: it is the file already followed, not a new one; the .gz
    it becomes next time is never opened."""
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=2000)
    run = follow([str(tmp_path / "app.log*")], orphan_grace=0.5)
    argv = logrotate(str(tmp_path), str(log), ["create", "compress", "delaycompress"])
    for _ in range(3):
        run.settle(0.2)
        run_while_polling(argv, run)
        writer.reopen()
    written = finish(run, writer)
    assert_exact(run, written)
    assert (tmp_path / "app.log.2.gz").exists()
    no_deleted_file_held(tmp_path, run)
    run.stop()


def test_several_rotations_within_a_second(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=2000)
    run = follow([str(log)], orphan_grace=0.5)
    argv = logrotate(str(tmp_path), str(log), ["create"], rotate=20)
    start = time.monotonic()
    for _ in range(5):
        run_while_polling(argv, run)
        writer.reopen()
    assert time.monotonic() - start < 5
    written = finish(run, writer)
    assert_exact(run, written)
    no_deleted_file_held(tmp_path, run)
    run.until(lambda: len(held_paths(str(tmp_path))) <= 1, timeout=10)  # the new app.log only
    run.stop()


def test_crash_while_logrotate_runs_then_restart_from_the_older_checkpoint(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=2000)
    run = follow([str(log)])
    time.sleep(0.3)
    run.poll()
    saved = run.checkpoint()
    committed = set(run.numbers())
    time.sleep(0.2)
    run.poll()
    run.stop()  # crash: what was read after `saved` is not committed
    argv = logrotate(str(tmp_path), str(log), ["create", "delaycompress", "compress"])
    for _ in range(2):
        run_while_polling(argv, follow([], start=False))
        writer.reopen()
        time.sleep(0.1)
    run2 = follow([str(log)], saved=saved, orphan_grace=0.5)
    written = writer.stop()
    run2.until(lambda: committed | set(run2.numbers()) >= set(range(1, written + 1)), timeout=30)
    run2.settle(0.5)
    seen = sorted(committed) + run2.numbers()
    lost, repeated = lost_and_repeated(seen, written)
    assert (lost, repeated) == ([], [])
    run2.stop()


def test_copytruncate_with_a_glob_that_matches_the_copies(tmp_path: Path) -> None:
    """app.log* names logrotate's copies too: each is held as a copy of app.log, drained from
    the old offset when app.log is truncated, and never read from its start."""
    log = tmp_path / "app.log"
    writer = BackgroundWriter(str(log), rate=2000)
    run = follow([str(tmp_path / "app.log*")], orphan_grace=0.5)
    argv = logrotate(str(tmp_path), str(log), ["copytruncate", "compress", "delaycompress"])
    for _ in range(3):
        run.settle(0.2)
        writer.pause()
        run_while_polling(argv, run)
        writer.resume()
    written = finish(run, writer)
    assert_exact(run, written)
    no_deleted_file_held(tmp_path, run)
    run.stop()


@pytest.mark.parametrize("olddir", ["old", "ABS"])
def test_copytruncate_into_olddir_drains_the_copy_found_there(tmp_path: Path, olddir: str) -> None:
    """Lines written since the last poll exist only in the copy logrotate put in olddir."""
    (tmp_path / "old").mkdir()
    olddir = str(tmp_path / "old") if olddir == "ABS" else olddir
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], olddir=olddir)
    writer.write(100)
    run.until_count(100)
    writer.write(50)  # not polled: only the copy will hold these
    argv = logrotate(str(tmp_path), str(log), [f"olddir {olddir}", "copytruncate"])
    subprocess.run(argv, check=True, capture_output=True)
    assert (tmp_path / "old" / "app.log.1").exists()
    writer.write(20)
    run.until_count(170)
    run.settle(0.5)
    assert_exact(run, 170)
    assert run.lines[120].path == str(tmp_path / "old" / "app.log.1")
    run.stop()

"""FileFollower, one situation per test: a writer appends numbered lines, the follower reads
them, and every test ends by checking that no line was lost and none repeated."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from logwatchd.clock import ManualClock
from logwatchd.sources import checkpoint, watch
from logwatchd.sources import reader as reader_module
from tests.sources_helpers import (
    Run,
    Writer,
    deleted_fds,
    follow,
    held_paths,
    lost_and_repeated,
    numbered,
    numbers_of,
    open_fds,
)


def assert_exact(seen: list[int], written: int) -> None:
    lost, repeated = lost_and_repeated(seen, written)
    assert (lost[:10], repeated[:10]) == ([], []), f"lost {len(lost)}, repeated {len(repeated)}"
    assert seen == sorted(seen), "lines out of order within a file"


def test_basic_tail_reads_every_appended_line_once(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    for _ in range(20):
        writer.write(50)
    run.until_count(1000)
    run.settle()
    assert_exact(run.numbers(), 1000)
    first = run.lines[0]
    assert first.source == "src"
    assert first.path == str(log)
    assert first.lineno == 1
    assert first.raw == numbered(1)
    assert first.origin.endswith(":0")
    assert run.lines[-1].lineno == 1000
    run.stop()


def test_wake_is_called_when_the_file_grows(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    before = run.wakes
    writer.write(3)
    deadline = time.monotonic() + 10
    while run.wakes == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run.wakes > before
    run.stop()


def test_start_at_end_skips_existing_content_on_the_first_run_only(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    writer.write(100)
    run = follow([str(log)], start_at="end")
    run.settle(0.2)
    assert run.lines == []
    writer.write(10)
    run.until_count(10)
    assert sorted(run.numbers()) == list(range(101, 111))
    saved = run.checkpoint()
    run.stop()
    # a file that appears while the daemon is down is not in the checkpoint: read from its start
    other = Writer(str(tmp_path / "new.log"), tag="new")
    other.write(5)
    run2 = follow([str(tmp_path / "*.log")], saved=saved, start_at="end")
    run2.until(lambda: len(run2.numbers("new")) == 5)
    run2.settle()
    assert run2.numbers() == []
    assert run2.numbers("new") == [1, 2, 3, 4, 5]
    run2.stop()


def test_start_at_beginning_reads_existing_content(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    Writer(str(log)).write(100)
    run = follow([str(log)], start_at="beginning")
    run.until_count(100)
    assert_exact(run.numbers(), 100)
    run.stop()


def test_start_at_end_keeps_a_partial_last_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"old 1\nold 2\nline 0000001 par")
    run = follow([str(log)], start_at="end")
    with open(log, "ab") as fh:
        fh.write(b"tial\n")
    run.until(lambda: len(run.lines) == 1)
    assert run.lines[0].raw == "line 0000001 partial"
    run.stop()


def test_partial_line_is_held_until_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    run = follow([str(log)])
    with open(log, "ab", buffering=0) as fh:
        fh.write(b"complete one\nhalf of a li")
        run.until(lambda: len(run.lines) == 1)
        run.settle(0.3)
        assert [ln.raw for ln in run.lines] == ["complete one"]
        cp = run.checkpoint()
        assert checkpoint.decode(cp, "src").files[0].offset == len(b"complete one\n")
        fh.write(b"ne\n")
    run.until(lambda: len(run.lines) == 2)
    assert run.lines[1].raw == "half of a line"
    assert run.lines[1].origin.endswith(f":{len(b'complete one' + bytes(1))}")
    run.stop()


def test_long_line_is_cut_flagged_and_its_rest_skipped(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    run = follow([str(log)], max_line_bytes=1000)
    huge = b"x" * 5_000_000  # far beyond one read block: must not be buffered whole
    log.write_bytes(b"before\n" + huge + b"\nafter\n")
    run.until(lambda: len(run.lines) == 3)
    run.settle()
    raws = [(ln.raw[:10], len(ln.raw), ln.truncated) for ln in run.lines]
    assert raws == [("before", 6, False), ("x" * 10, 1000, True), ("after", 5, False)]
    assert [ln.lineno for ln in run.lines] == [1, 2, 3]
    run.stop()


def test_long_partial_line_is_cut_before_its_newline_arrives(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    run = follow([str(log)], max_line_bytes=100)
    with open(log, "ab", buffering=0) as fh:
        fh.write(b"y" * 250)
        run.until(lambda: len(run.lines) == 1)
        assert run.lines[0].truncated
        assert len(run.lines[0].raw) == 100
        saved = run.checkpoint()
        fh.write(b"y" * 50 + b"\nnext\n")
    run.until(lambda: len(run.lines) == 2)
    assert run.lines[1].raw == "next"
    run.stop()
    # restarting from the checkpoint taken mid-line skips the rest of the long line again
    run2 = follow([str(log)], saved=saved)
    run2.until(lambda: len(run2.lines) == 1)
    run2.settle()
    assert [ln.raw for ln in run2.lines] == ["next"]
    run2.stop()


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"ok \xc3\xa9\nbad \xff\xfe end\nlast\n")
    run = follow([str(log)])
    run.until(lambda: len(run.lines) == 3)
    assert [ln.raw for ln in run.lines] == ["ok \u00e9", "bad \ufffd\ufffd end", "last"]
    # origins are byte offsets, also after multi-byte characters
    assert [ln.origin.split(":")[1] for ln in run.lines] == ["0", "6", "17"]
    run.stop()


def test_glob_that_matches_later(tmp_path: Path) -> None:
    run = follow([str(tmp_path / "sub" / "*.log")], start_at="end")
    run.settle(0.3)
    (tmp_path / "sub").mkdir()
    writer = Writer(str(tmp_path / "sub" / "late.log"))
    writer.write(30)
    run.until_count(30)
    assert_exact(run.numbers(), 30)  # created after the start: read from its beginning
    run.stop()


def test_two_hundred_new_files_in_a_glob(tmp_path: Path) -> None:
    run = follow([str(tmp_path / "*.log")])
    baseline = len(open_fds())
    for i in range(200):
        Writer(str(tmp_path / f"f{i:03d}.log"), tag=f"f{i}").write(5)
    run.until(lambda: len(run.lines) == 1000, timeout=30)
    run.settle()
    for i in range(200):
        got = [ln for ln in run.lines if ln.path == str(tmp_path / f"f{i:03d}.log")]
        assert numbers_of(got, f"f{i}") == [1, 2, 3, 4, 5]
    assert len(open_fds()) - baseline <= 200
    run.stop()


def test_rename_rotation_reads_lines_written_to_the_old_file_after_the_rename(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    writer.write(100)
    run.until_count(100)
    os.rename(log, tmp_path / "app.log.1")
    writer.write(50)  # the application has not been told yet: still the old file
    run.until_count(150)
    writer.reopen()  # SIGHUP: now the new app.log
    writer.write(50)
    run.until_count(200)
    run.settle()
    assert_exact(run.numbers(), 200)
    old = [ln for ln in run.lines if 100 < int(ln.raw.split()[1]) <= 150]
    # read before or after the rename was noticed: either name, never a third
    assert {ln.path for ln in old} <= {str(log), str(tmp_path / "app.log.1")}
    run.stop()


def test_a_rotation_whose_events_are_lost_is_found_by_the_rescan(tmp_path: Path) -> None:
    """Inotify overflow loses events silently: with the observer gone but the follower
    believing in it, the periodic checks see no rename; the rescan finds it, nothing lost."""
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], rescan_interval=0.5)
    writer.write(20)
    run.until_count(20)
    run.follower._watcher.stop()  # no more events; `polling` stays False
    os.rename(log, tmp_path / "app.log.1")
    writer.write(10)  # still into the old file
    writer.reopen()
    writer.write(10)  # the new app.log
    run.until_count(40, timeout=10)
    run.settle()
    assert_exact(run.numbers(), 40)
    assert {ln.path for ln in run.lines[-10:]} == {str(log)}
    run.stop()


def test_old_file_is_closed_once_drained_and_quiet(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], orphan_grace=0.3)
    writer.write(10)
    run.until_count(10)
    os.rename(log, tmp_path / "app.log.1")
    writer.reopen()
    writer.write(10)
    run.until_count(20)
    os.unlink(tmp_path / "app.log.1")
    run.until(lambda: str(tmp_path / "app.log.1") not in " ".join(held_paths(str(tmp_path))))
    assert not [p for p in deleted_fds() if p.startswith(str(tmp_path))]
    assert_exact(run.numbers(), 20)
    run.stop()


def test_truncate_to_zero_restarts_at_the_beginning(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    writer.write(100)
    run.until_count(100)
    os.truncate(log, 0)
    run.settle(0.3)
    writer.write(20)  # O_APPEND: continues at the new end, 0
    run.until_count(120)
    run.settle()
    assert_exact(run.numbers(), 120)
    assert run.lines[100].origin.endswith(":0")
    assert run.lines[100].lineno == 1
    assert run.lines[100].origin.split(":")[0] != run.lines[0].origin.split(":")[0]
    run.stop()


def test_truncate_to_shorter_then_write_past_the_old_offset(tmp_path: Path) -> None:
    """Looks exactly like an append to a size check; the marker before the offset tells."""
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], stat_interval=3600)  # only the wake and the EOF check may find it
    writer.write(100)
    run.until_count(100)
    old_size = log.stat().st_size
    keep = 20 * len(numbered(1) + "\n")  # cut at a line boundary, so no line is garbled
    os.truncate(log, keep)
    writer.write(200)  # written at 500 onwards, far past the old offset
    assert log.stat().st_size > old_size
    run.until_count(300)
    run.settle()
    seen = run.numbers()
    lost, repeated = lost_and_repeated(seen, 300)
    assert lost == []
    # the surviving first 500 bytes are a new file's content: read again, by design
    kept = [n for n in repeated if n <= 100]
    assert repeated == kept
    assert kept == list(range(1, 21))
    run.stop()


def test_a_rewrite_to_the_same_size_is_read_again_and_a_quiet_file_is_not_reread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size after a rewrite: only the bytes before the offset tell. A file that did not
    change since they last compared equal costs one fstat per check, no read."""
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    writer.write(30)
    run.until_count(30)
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(offset)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(reader_module.os, "pread", counting_pread)
    run.settle(0.5)  # ten checks or so (stat_interval 0.05 s)
    assert len(reads) <= 1  # the first check compares once; the rest see no change
    data = log.read_bytes()
    with open(log, "r+b") as fh:  # same inode, same size, the lines renumbered by "other"
        fh.write(data.replace(b"line ", b"othr "))
    run.until(lambda: len(run.numbers("othr")) == 30)
    run.settle()
    assert len(run.numbers()) == 30  # the old lines were not read twice
    run.stop()


def test_delete_and_recreate_reads_the_new_file_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], orphan_grace=0.2)
    writer.write(50)
    run.until_count(50)
    writer.close()
    os.unlink(log)
    writer = Writer(str(log))
    writer.next = 51
    writer.write(50)
    run.until_count(100)
    run.settle(0.5)
    assert_exact(run.numbers(), 100)
    assert not [p for p in deleted_fds() if p.startswith(str(tmp_path))]
    run.stop()


def test_inode_reused_while_down_is_a_new_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    writer.write(40)
    run = follow([str(log)])
    run.until_count(40)
    saved = run.checkpoint()
    run.stop()
    writer.close()
    ino = log.stat().st_ino
    # delete and re-create until the filesystem hands the same inode number back
    reused = False
    for _ in range(50):
        os.unlink(log)
        log.write_bytes(b"")
        if log.stat().st_ino == ino:
            reused = True
            break
    writer = Writer(str(log))
    writer.next = 41
    writer.write(60)  # more bytes than the old offset: a size check alone would be fooled
    run2 = follow([str(log)], saved=saved)
    run2.until_count(60)
    run2.settle()
    assert_exact(run.numbers() + run2.numbers(), 100)
    assert run2.numbers()[0] == 41
    run2.stop()
    if not reused:
        pytest.skip("the filesystem did not reuse the inode; identity was checked by fingerprint")


def test_same_inode_different_content_is_caught_by_fingerprint(tmp_path: Path) -> None:
    """Inode reuse constructed: the checkpoint names this inode, but its bytes are new."""
    log = tmp_path / "app.log"
    Writer(str(log)).write(10)
    run = follow([str(log)])
    run.until_count(10)
    saved = run.checkpoint()
    run.stop()
    with open(log, "r+b") as fh:  # same inode, same size, other first bytes
        fh.write(b"LINE")
    writer = Writer(str(log), tag="more")
    writer.write(3)
    run2 = follow([str(log)], saved=saved)
    run2.until(lambda: len(run2.numbers("more")) == 3)
    run2.settle()
    assert len(run2.lines) == 13  # everything: it is not the file we were in
    run2.stop()


def test_restart_resumes_exactly_after_the_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    writer.write(500)
    run.until_count(500)
    saved = run.checkpoint()
    writer.write(100)
    run.until_count(600)  # read, but the crash comes before they are committed
    run.stop()
    writer.write(100)
    run2 = follow([str(log)], saved=saved)
    run2.until_count(200)
    run2.settle()
    assert run2.numbers() == list(range(501, 701))
    # the same line gets the same origin and line number when it is read again
    again = {ln.raw: (ln.origin, ln.lineno) for ln in run2.lines}
    first = {ln.raw: (ln.origin, ln.lineno) for ln in run.lines if ln.raw in again}
    assert first and all(again[k] == v for k, v in first.items())
    run2.stop()


def test_crash_with_rename_rotation_while_down(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    writer.write(100)
    run.until_count(100)
    saved = run.checkpoint()
    writer.write(50)
    run.until_count(150)
    run.stop()  # crash: the last 50 were not committed
    writer.write(25)
    os.rename(log, tmp_path / "app.log.1")
    writer.write(25)
    writer.reopen()
    writer.write(100)
    run2 = follow([str(log)], saved=saved)
    run2.until_count(200)
    run2.settle(0.8)
    assert run2.numbers() == list(range(101, 301))
    assert not [p for p in deleted_fds() if p.startswith(str(tmp_path))]
    run2.stop()


def test_crash_with_truncation_while_down(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    writer.write(100)
    run.until_count(100)
    saved = run.checkpoint()
    run.stop()
    os.truncate(log, 0)
    writer.write(150)  # past the old offset again
    run2 = follow([str(log)], saved=saved)
    run2.until_count(150)
    run2.settle()
    assert run2.numbers() == list(range(101, 251))
    run2.stop()


def test_crash_with_copytruncate_while_down_drains_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)])
    writer.write(100)
    run.until_count(100)
    saved = run.checkpoint()
    run.stop()
    writer.write(30)
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    writer.write(20)
    run2 = follow([str(log)], saved=saved)
    run2.until_count(50)
    run2.settle(0.8)
    assert run2.numbers() == list(range(101, 151))
    run2.stop()


def test_rotated_names_matching_the_glob_are_not_new_files(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(tmp_path / "app.log*")])
    writer.write(100)
    run.until_count(100)
    os.rename(log, tmp_path / "app.log.1")
    writer.reopen()
    writer.write(10)
    (tmp_path / "app.log.2.gz").write_bytes(b"\x1f\x8b not text\n")
    run.until_count(110)
    run.settle(0.5)
    assert_exact(run.numbers(), 110)
    saved = run.checkpoint()
    run.stop()
    run2 = follow([str(tmp_path / "app.log*")], saved=saved)  # and not after a restart either
    run2.settle(0.5)
    assert run2.lines == []
    run2.stop()


def test_copy_under_a_rotated_name_is_not_read_as_new(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(tmp_path / "app.log*")], orphan_grace=0.3)
    writer.write(100)
    run.until_count(100)
    (tmp_path / "app.log.bak").write_bytes(log.read_bytes())  # an admin's copy, no truncation
    writer.write(10)
    run.until_count(110)
    run.settle(1.0)
    assert_exact(run.numbers(), 110)
    run.stop()


def test_copytruncate_drains_the_copy_then_restarts(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], stat_interval=3600)
    writer.write(100)
    run.until_count(100)
    writer.write(30)  # not read yet when the copy is made
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    writer.write(20)
    run.until_count(150)
    run.settle(0.5)
    assert_exact(run.numbers(), 150)
    run.stop()


def test_permission_denied_is_logged_once_and_retried_on_rescan() -> None:
    """Run as an unprivileged user (root reads any file): a forked child drops to nobody."""
    parent = tempfile.mkdtemp(prefix="lwd-perm-")
    try:
        os.chmod(parent, 0o755)  # noqa: S103 - the unprivileged child must reach the file
        log = os.path.join(parent, "app.log")
        Writer(log).write(5)
        os.chmod(log, 0o600)  # root's file: nobody cannot read it
        result = _as_nobody(log, lambda: os.chmod(log, 0o644))
        assert result["first_poll"] == []
        assert result["numbers"] == [1, 2, 3, 4, 5]
        assert result["denied_logs"] == 1
    finally:
        shutil.rmtree(parent)


def _as_nobody(log: str, grant: Callable[[], None]) -> dict[str, Any]:
    """Follow ``log`` as uid/gid 65534 in a child; ``grant`` runs once the child was refused."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    ready_r, ready_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with structlog.testing.capture_logs() as logs:
                run = follow([log], inotify=False)
                first = run.numbers()
                os.write(ready_w, b"r")
                run.until_count(5, timeout=20)
                run.stop()
            denied = [e for e in logs if "permission denied" in e["event"]]
            report = {"first_poll": first, "numbers": run.numbers(), "denied_logs": len(denied)}
            os.write(out_w, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(out_w)
    assert os.read(ready_r, 1) == b"r"
    grant()
    data = b""
    while chunk := os.read(out_r, 65536):
        data += chunk
    os.close(ready_r)
    os.close(out_r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


def test_inotify_unavailable_falls_back_to_polling_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch limit cannot be exhausted here without disturbing the machine: the observer
    is replaced by one that fails the way inotify does when out of instances."""

    class NoInotify:
        def __init__(self) -> None:
            raise OSError(errno.EMFILE, "inotify instance limit reached")

    monkeypatch.setattr(watch, "InotifyObserver", NoInotify)
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    with structlog.testing.capture_logs() as logs:
        run = follow([str(log)])
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "inotify unavailable; following by polling"
    ]
    writer.write(50)
    os.rename(log, tmp_path / "app.log.1")
    writer.write(5)
    writer.reopen()
    writer.write(5)
    run.until_count(60)
    run.settle()
    assert_exact(run.numbers(), 60)
    run.stop()


def test_permission_denied_as_root_via_a_directory_without_search(tmp_path: Path) -> None:
    """Root is not stopped by modes: a non-regular path (a directory) stands in for the
    unreadable file; the follower must neither crash nor open it, and pick up the real file."""
    (tmp_path / "app.log").mkdir()
    run = follow([str(tmp_path / "app.log")])
    run.settle(0.3)
    (tmp_path / "app.log").rmdir()
    Writer(str(tmp_path / "app.log")).write(5)
    run.until_count(5)
    run.stop()


def test_fd_count_returns_to_baseline_after_rotations(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    baseline = len(held_paths(str(tmp_path)))
    run = follow([str(log)], orphan_grace=0.2)
    for r in range(10):
        writer.write(20)
        run.until_count(20 * (r + 1))
        os.rename(log, tmp_path / f"app.log.{r}")
        writer.reopen()
        os.unlink(tmp_path / f"app.log.{r}")
    writer.write(20)
    run.until_count(220)
    run.until(lambda: len(held_paths(str(tmp_path))) <= baseline + 1)
    assert not [p for p in deleted_fds() if p.startswith(str(tmp_path))]
    assert_exact(run.numbers(), 220)
    run.stop()
    assert len(held_paths(str(tmp_path))) == baseline


def test_stat_and_rescan_are_rate_limited_by_the_clock(tmp_path: Path) -> None:
    """Without inotify wake-ups, a new file appears only when the rescan interval has passed."""
    clock = ManualClock()
    run = follow([str(tmp_path / "*.log")], clock=clock, stat_interval=1.0, rescan_interval=10.0)
    run.follower._watcher.stop()  # no wake-ups: the clock alone drives the checks
    Writer(str(tmp_path / "a.log")).write(3)
    run.poll()
    assert run.lines == []
    clock.advance(9.0)
    run.poll()
    assert run.lines == []
    clock.advance(1.5)
    run.poll()
    run.poll()
    assert run.numbers() == [1, 2, 3]
    assert {ln.read_time for ln in run.lines} == {clock.now()}
    run.stop()


def test_polling_alone_loses_nothing(tmp_path: Path) -> None:
    """What happens when inotify cannot be had (watch limit) or overflows: stat checks suffice."""
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], inotify=False)
    writer.write(100)
    os.rename(log, tmp_path / "app.log.1")
    writer.write(10)
    writer.reopen()
    writer.write(10)
    run.until_count(120)
    run.settle()
    assert_exact(run.numbers(), 120)
    run.stop()


def test_max_lines_bounds_one_poll_and_the_checkpoint_follows_what_was_returned(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    Writer(str(log)).write(1000)
    run = follow([str(log)])
    got = run.poll(max_lines=300)
    assert len(got) == 300
    saved = run.checkpoint()
    run.stop()
    run2 = follow([str(log)], saved=saved)
    run2.until_count(700)
    assert run2.numbers() == list(range(301, 1001))
    run2.stop()


def read_once_and_closed(run: Run, log: Path, written: int) -> None:
    """Every line written read exactly once, and nothing held but the live file (the
    writer's descriptor and ours): the rotated ones were drained and closed."""
    run.until_count(written)
    run.settle(0.6)
    assert_exact(sorted(run.numbers()), written)
    run.until(lambda: held_paths(str(log.parent)) == [str(log), str(log)])
    run.stop()


def rotated_once_unpolled(tmp_path: Path) -> tuple[Path, Writer, Run]:
    """app.log followed without inotify, its first 10 lines read, then rotated to app.log.1
    and reopened by the writer, with no poll since."""
    log = tmp_path / "app.log"
    writer = Writer(str(log))
    run = follow([str(log)], inotify=False, orphan_grace=0.3)
    writer.write(10)
    run.until_count(10)
    os.rename(log, tmp_path / "app.log.1")
    writer.reopen()
    return log, writer, run


def test_a_file_created_and_rotated_away_between_two_polls_is_still_read(
    tmp_path: Path,
) -> None:
    """Two rotations before the follower looked: the middle file never had the followed
    name while we looked, yet it is a rotated file written to since the last scan."""
    log, writer, run = rotated_once_unpolled(tmp_path)
    writer.write(10)  # the second file, never polled...
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    os.rename(log, tmp_path / "app.log.1")  # ...is rotated away
    writer.reopen()
    writer.write(10)
    read_once_and_closed(run, log, 30)


@pytest.mark.parametrize("live_has_content", [False, True])
def test_a_file_rotated_away_while_still_empty_is_read_once_written_to(
    tmp_path: Path, live_has_content: bool
) -> None:
    """Two rotations before the follower looked, the second while the file the first one
    created was still empty: when the follower finds it under its rotated name it holds
    nothing, and the lines the application writes to it next (before its HUP) are read.
    ``live_has_content``: another process already wrote to the new file, so the empty one
    could be a copy of it, until it fills with something else."""
    log, writer, run = rotated_once_unpolled(tmp_path)
    # the second file, created by the first rotation, still empty...
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    os.rename(log, tmp_path / "app.log.1")  # ...is rotated away
    log.touch()  # logrotate's `create`
    if live_has_content:
        other = Writer(str(log), tag="other")
        other.write(3)
        other.close()
    run.until(lambda: held_paths(str(tmp_path)).count(str(log)) == 1)  # the scan saw it all
    writer.write(10)  # to app.log.1, found empty
    writer.reopen()
    writer.write(10)
    read_once_and_closed(run, log, 30)


def test_a_copy_found_while_still_empty_is_drained_from_the_old_offset(tmp_path: Path) -> None:
    """copytruncate creates the copy before it writes it: found empty, it is held as a
    suspected copy, so the copied lines are not read again from its start."""
    log, copy = tmp_path / "app.log", tmp_path / "app.log.1"
    writer = Writer(str(log))
    run = follow([str(log)], inotify=False, orphan_grace=0.3)
    writer.write(10)
    run.until_count(10)
    copy.touch()
    run.until(lambda: str(copy) in held_paths(str(tmp_path)))  # the scan found it, empty
    writer.write(5)  # maybe not read before the copy is made
    copy.write_bytes(log.read_bytes())
    os.truncate(log, 0)
    writer.write(5)
    read_once_and_closed(run, log, 20)

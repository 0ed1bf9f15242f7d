"""The journald source reads real journal files through a real journalctl.

Journal files are built with systemd-journal-remote (tests/journal_helpers.py). "Exactly these
records" is checked by appending a sentinel entry and reading up to it: a duplicate or a
stray record would have to arrive before the sentinel, so no fixed sleep decides the outcome.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatchd.clock import ManualClock
from logwatchd.config.model import SourceConfig
from logwatchd.errors import ConfigError
from logwatchd.events import Line
from logwatchd.sources import journal_records
from logwatchd.sources.journal import (
    JournalSource,
    OwnEntries,
    journalctl_argv,
    local_machine_id,
    own_unit,
)
from tests.journal_helpers import BOOT_ID, append_journal, entry, have_journal_remote

pytestmark = pytest.mark.skipif(
    not (have_journal_remote() and shutil.which("journalctl")),
    reason="needs journalctl and systemd-journal-remote (apt-get install systemd-journal-remote)",
)

SENTINEL = "-- sentinel --"


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def read_lines(source: JournalSource, count: int, timeout: float = 20.0) -> list[Line]:
    """Poll until ``count`` lines came (more would show up as a failed comparison later)."""
    lines: list[Line] = []

    def enough() -> bool:
        lines.extend(source.poll(max_lines=count - len(lines)))
        return len(lines) >= count

    wait_for(enough, timeout)
    return lines


def read_until_sentinel(source: JournalSource, timeout: float = 20.0) -> list[Line]:
    lines: list[Line] = []

    def seen() -> bool:
        batch = source.poll()
        lines.extend(batch)
        return any(line.raw == SENTINEL for line in batch)

    wait_for(seen, timeout)
    assert lines[-1].raw == SENTINEL, "records after the sentinel"
    return lines[:-1]


def messages(lines: list[Line]) -> list[str]:
    return [line.raw for line in lines]


def sentinel(n: int) -> dict[str, str | bytes]:
    return entry(n, SENTINEL)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.0)


@pytest.fixture
def make_source(clock: ManualClock) -> Iterator[Callable[..., JournalSource]]:
    """Build and start sources; every one is stopped at teardown, even when a test fails."""
    started: list[JournalSource] = []

    def make(
        *,
        files: tuple[str, ...] = (),
        directory: str | None = None,
        match: tuple[str, ...] = (),
        start_at: str = "beginning",
        saved: dict[str, Any] | None = None,
        source_id: str = "auth",
        **options: Any,
    ) -> JournalSource:
        config = SourceConfig(
            id=source_id,
            type="journald",
            parser="journald",
            start_at=start_at,  # type: ignore[arg-type]
            match=match,
            journal_directory=directory,
            journal_files=files,
        )
        options.setdefault("poll_interval", 0.1)
        options.setdefault("restart_backoff", 0.1)
        source = JournalSource(config, saved=saved, clock=clock, **options)
        source.start(lambda: None)
        started.append(source)
        return source

    yield make
    for source in started:
        source.stop()


def test_reads_every_entry_of_a_file_from_the_beginning(tmp_path, make_source, clock):
    path = str(tmp_path / "j.journal")
    append_journal(path, [entry(n) for n in range(1, 11)])
    append_journal(path, [sentinel(11)])

    source = make_source(files=(path,))
    lines = read_lines(source, 11)

    assert messages(lines) == [*(f"msg {n}" for n in range(1, 11)), SENTINEL]
    first = lines[0]
    assert first.source == "auth"
    assert first.path is None
    assert first.read_time == clock.now()
    assert [line.lineno for line in lines] == list(range(1, 12))
    assert first.fields is not None
    assert first.fields["SYSLOG_IDENTIFIER"] == "sshd"
    assert first.fields["_SYSTEMD_UNIT"] == "ssh.service"
    assert first.fields["_PID"] == "1001"
    assert first.origin == first.fields["__CURSOR"]
    assert len({line.origin for line in lines}) == 11
    assert source.checkpoint() == {"cursor": lines[-1].origin}


def test_match_terms_on_different_fields_are_ored(tmp_path, make_source):
    path = str(tmp_path / "j.journal")
    append_journal(
        path,
        [
            entry(1, "ssh one", ident="sshd", unit="ssh.service"),
            entry(2, "cron noise", ident="CRON", unit="cron.service"),
            entry(3, "sudo one", ident="sudo", unit="session-1.scope"),
            entry(4, "kernel noise", ident="kernel", unit="init.scope"),
            entry(5, "ssh two", ident="sshd", unit="ssh.service"),
            entry(6, SENTINEL, ident="sudo", unit="x.scope"),
        ],
    )
    source = make_source(
        files=(path,), match=("_SYSTEMD_UNIT=ssh.service", "SYSLOG_IDENTIFIER=sudo")
    )
    assert messages(read_until_sentinel(source)) == ["ssh one", "sudo one", "ssh two"]


def test_a_followed_directory_delivers_entries_appended_later(tmp_path, make_source):
    directory = tmp_path / "journal"
    directory.mkdir()
    path = str(directory / "remote.journal")
    append_journal(path, [entry(n) for n in range(1, 6)])

    source = make_source(directory=str(directory), start_at="end")
    wait_for(source.checkpoint)  # the end of the journal is known: only later entries count
    assert source.pid is not None
    append_journal(path, [entry(n) for n in range(6, 9)])
    assert messages(read_lines(source, 3)) == ["msg 6", "msg 7", "msg 8"]

    # A new journal file in the directory is followed too.
    append_journal(str(directory / "other.journal"), [entry(9, "from another file")])
    assert messages(read_lines(source, 1)) == ["from another file"]
    append_journal(path, [sentinel(10)])
    assert read_until_sentinel(source) == []


@pytest.mark.parametrize("mode", ["files", "directory"])
def test_resume_from_checkpoint_reads_exactly_the_records_after_it(tmp_path, make_source, mode):
    directory = tmp_path / "journal"
    directory.mkdir()
    path = str(directory / "j.journal")
    append_journal(path, [entry(n) for n in range(1, 11)])
    where: dict[str, Any] = {"files": (path,)} if mode == "files" else {"directory": str(directory)}

    first = make_source(**where)
    assert messages(read_lines(first, 5)) == [f"msg {n}" for n in range(1, 6)]
    saved = first.checkpoint()
    first.stop()

    second = make_source(saved=saved, **where)
    assert messages(read_lines(second, 5)) == [f"msg {n}" for n in range(6, 11)]
    append_journal(path, [entry(n) for n in range(11, 14)])
    assert messages(read_lines(second, 3)) == ["msg 11", "msg 12", "msg 13"]
    append_journal(path, [sentinel(14)])
    assert read_until_sentinel(second) == []


def test_start_at_end_on_files_skips_the_past_and_survives_a_restart(tmp_path, make_source):
    path = str(tmp_path / "j.journal")
    append_journal(path, [entry(n) for n in range(1, 6)])

    first = make_source(files=(path,), start_at="end")
    saved = wait_for(first.checkpoint)
    assert saved["cursor"]
    assert first.poll() == []
    first.stop()

    # Entries written while the daemon was down are not skipped on the next start.
    append_journal(path, [entry(6), sentinel(7)])
    second = make_source(files=(path,), start_at="end", saved=saved)
    assert messages(read_until_sentinel(second)) == ["msg 6"]


def test_start_at_end_on_an_empty_journal_delivers_everything_that_comes(tmp_path, make_source):
    directory = tmp_path / "journal"
    directory.mkdir()
    source = make_source(directory=str(directory), start_at="end")
    assert wait_for(source.checkpoint) == {"cursor": None}
    append_journal(str(directory / "j.journal"), [entry(1), entry(2), sentinel(3)])
    assert messages(read_until_sentinel(source)) == ["msg 1", "msg 2"]


def test_awkward_messages_come_through(tmp_path, make_source):
    path = str(tmp_path / "j.journal")
    long_message = "x" * 5000 + " end"
    append_journal(
        path,
        [
            entry(1, b"user \xff\xfeadmin from 203.0.113.9"),
            entry(2, "first line\nsecond line"),
            entry(3, long_message),
            [(k, v) for k, v in entry(4).items() if k != "MESSAGE"],
            [*entry(5, "first copy").items(), ("MESSAGE", "second copy")],
            entry(6, "binary field", BLOB=b"\x00\x01bin"),
            entry(7, "trailing newline\n"),
            sentinel(8),
        ],
    )
    lines = read_until_sentinel(make_source(files=(path,)))

    assert messages(lines) == [
        "user \ufffd\ufffdadmin from 203.0.113.9",
        "first line\nsecond line",
        long_message,
        "",
        "first copy",
        "binary field",
        "trailing newline",
    ]
    assert not any(line.truncated for line in lines)
    assert lines[0].fields["MESSAGE"] == "user \ufffd\ufffdadmin from 203.0.113.9"
    assert lines[4].fields["MESSAGE"] == ["first copy", "second copy"]
    assert lines[5].fields["BLOB"] == "\x00\x01bin"


def test_oversized_records_and_messages_are_cut_and_flagged(tmp_path, make_source):
    path = str(tmp_path / "j.journal")
    append_journal(
        path,
        [
            entry(1, "short"),
            entry(2, "y" * 300_000, ident="huge"),
            entry(3, "z" * 3000),
            entry(4, "after"),
            sentinel(5),
        ],
    )
    source = make_source(files=(path,), max_record_bytes=20_000, max_line_bytes=1000)
    lines = read_until_sentinel(source)

    assert [line.raw[:5] for line in lines] == ["short", "yyyyy", "z" * 5, "after"]
    assert [line.truncated for line in lines] == [False, True, True, False]
    assert all(len(line.raw.encode()) <= 1000 for line in lines)
    cut = lines[1].fields
    assert cut is not None
    assert cut["__CURSOR"] == lines[1].origin
    assert lines[1].origin not in {lines[0].origin, lines[2].origin}


def test_a_killed_journalctl_is_restarted_from_the_last_cursor(tmp_path, make_source):
    directory = tmp_path / "journal"
    directory.mkdir()
    path = str(directory / "j.journal")
    append_journal(path, [entry(n) for n in range(1, 6)])

    with structlog.testing.capture_logs() as logs:
        source = make_source(directory=str(directory))
        assert messages(read_lines(source, 5)) == [f"msg {n}" for n in range(1, 6)]
        old_pid = source.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: source.pid not in (None, old_pid))
        append_journal(path, [entry(n) for n in range(6, 9)] + [sentinel(9)])
        assert messages(read_until_sentinel(source)) == ["msg 6", "msg 7", "msg 8"]

    warnings = [e for e in logs if e["log_level"] == "warning" and e.get("source") == "auth"]
    assert warnings
    assert warnings[0]["exit_status"] == -signal.SIGKILL


def test_a_failing_journalctl_is_retried_and_logged(tmp_path, make_source):
    directory = tmp_path / "not-yet"
    with structlog.testing.capture_logs() as logs:
        source = make_source(directory=str(directory))
        wait_for(lambda: len([e for e in logs if e.get("source") == "auth"]) >= 2)
        directory.mkdir()
        append_journal(str(directory / "j.journal"), [entry(1), sentinel(2)])
        assert messages(read_until_sentinel(source, timeout=30)) == ["msg 1"]
    assert "exit_status" in logs[0]


def test_stop_leaves_no_journalctl_process_and_no_thread(tmp_path, make_source):
    directory = tmp_path / "journal"
    directory.mkdir()
    append_journal(str(directory / "j.journal"), [entry(1)])
    before = {t.name for t in threading.enumerate()}
    source = make_source(directory=str(directory))
    read_lines(source, 1)
    pid = source.pid
    assert pid is not None

    source.stop()

    assert not Path(f"/proc/{pid}").exists()  # gone and reaped: a zombie keeps its /proc entry
    assert {t.name for t in threading.enumerate()} <= before
    assert source.pid is None
    source.stop()  # idempotent


_HOLDER = """
import sys, time
from logwatchd.clock import SystemClock
from logwatchd.config.model import SourceConfig
from logwatchd.sources.journal import JournalSource
config = SourceConfig(id="s", type="journald", parser="journald", journal_directory=sys.argv[1])
source = JournalSource(config, saved=None, clock=SystemClock())
source.start(lambda: None)


def following():
    # the first journalctl only looks up the newest record and exits: wait for the follower
    pid = source.pid
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read() if pid else b""
    except OSError:
        return None
    return pid if b"--follow" in argv else None


while (pid := following()) is None:
    time.sleep(0.01)
print(pid, flush=True)
time.sleep(600)
"""


def test_a_killed_daemon_leaves_no_journalctl_running(tmp_path):
    """journalctl --follow exits when its stdout reader goes, so kill -9 leaves no orphan."""
    directory = tmp_path / "journal"
    directory.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        pid = int(holder.stdout.readline())
        assert process_running(pid)
    finally:
        holder.kill()
        holder.wait()
    wait_for(lambda: not process_running(pid))


def process_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_slow_consumer_keeps_the_buffer_bounded_and_loses_nothing(tmp_path, make_source):
    path = str(tmp_path / "j.journal")
    append_journal(path, [entry(n) for n in range(1, 3001)] + [sentinel(3001)])
    source = make_source(files=(path,), max_buffer_bytes=16_384)

    wait_for(lambda: source.buffered_bytes > 8_000)
    peak = 0
    for _ in range(20):  # the reader is blocked, not buffering on
        peak = max(peak, source.buffered_bytes)
        time.sleep(0.01)
    assert peak <= 16_384

    lines = read_until_sentinel(source, timeout=60)
    assert messages(lines) == [f"msg {n}" for n in range(1, 3001)]


def test_missing_journalctl_is_a_clear_error_at_start(clock):
    config = SourceConfig(id="auth", type="journald", parser="journald")
    source = JournalSource(config, saved=None, clock=clock, journalctl="/nonexistent/journalctl")
    with pytest.raises(ConfigError, match="journalctl"):
        source.start(lambda: None)


def test_an_unusable_saved_cursor_falls_back_to_start_at(tmp_path, make_source):
    path = str(tmp_path / "j.journal")
    append_journal(path, [entry(1), sentinel(2)])
    with structlog.testing.capture_logs() as logs:
        source = make_source(files=(path,), saved={"cursor": "--garbage"})
    assert messages(read_until_sentinel(source)) == ["msg 1"]
    assert any("cursor" in e["event"] for e in logs)


def test_the_system_journal_is_followed_for_this_machine_with_ored_matches():
    config = SourceConfig(
        id="auth",
        type="journald",
        parser="journald",
        match=("_SYSTEMD_UNIT=ssh.service", "SYSLOG_IDENTIFIER=sudo"),
    )
    machine = "0123456789abcdef0123456789abcdef"
    argv = journalctl_argv(
        "/usr/bin/journalctl", config, cursor="s=1;i=2", follow=True, machine_id=machine
    )
    assert argv[0] == "/usr/bin/journalctl"
    assert "--after-cursor=s=1;i=2" in argv
    assert {"--follow", "--no-tail", "--merge", "--all", "--output=json"} <= set(argv)
    assert not any(a.startswith(("--directory", "--file", "--lines")) for a in argv)
    # ANDed with this machine in each OR group: --merge must not pull in other machines.
    assert argv[argv.index("--") :] == [
        "--",
        f"_MACHINE_ID={machine}",
        "_SYSTEMD_UNIT=ssh.service",
        "+",
        f"_MACHINE_ID={machine}",
        "SYSLOG_IDENTIFIER=sudo",
    ]
    no_terms = SourceConfig(id="all", type="journald", parser="journald")
    argv = journalctl_argv("journalctl", no_terms, cursor=None, follow=True, machine_id=machine)
    assert argv[argv.index("--") :] == ["--", f"_MACHINE_ID={machine}"]


def test_the_local_machine_id_is_read_and_checked(tmp_path):
    good = tmp_path / "machine-id"
    good.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    assert local_machine_id(str(good)) == "3d1219c7c4c5404aaa1f6d2a48adfda4"
    good.write_text("uninitialized\n")
    assert local_machine_id(str(good)) is None
    assert local_machine_id(str(tmp_path / "missing")) is None


def test_following_a_directory_crosses_boots(tmp_path, make_source):
    """journalctl --follow alone implies --boot: the rest of an earlier boot would be lost."""
    directory = tmp_path / "journal"
    directory.mkdir()
    path = str(directory / "j.journal")
    old_boot, new_boot = "a" * 32, "b" * 32
    append_journal(path, [entry(n, _BOOT_ID=old_boot) for n in range(1, 5)])

    first = make_source(directory=str(directory))
    assert messages(read_lines(first, 2)) == ["msg 1", "msg 2"]
    saved = first.checkpoint()
    first.stop()

    append_journal(path, [entry(n, _BOOT_ID=new_boot) for n in range(5, 7)])
    second = make_source(directory=str(directory), saved=saved)
    assert messages(read_lines(second, 4)) == ["msg 3", "msg 4", "msg 5", "msg 6"]
    append_journal(path, [sentinel(7)])
    assert read_until_sentinel(second) == []


@pytest.mark.slow
def test_100k_records_across_a_live_rotation_and_the_read_rate(tmp_path, make_source):
    """journal-remote rotates a growing file (to big@....journal). A directory source following
    while that happens, and later a directory source and a files source whose glob covers the
    rotated names, all read every record in order. Prints the read rates."""
    directory = tmp_path / "journal"
    directory.mkdir()
    live = make_source(directory=str(directory), source_id="live")
    append_journal(
        str(directory / "big.journal"),
        [entry(n, f"Failed password for invalid user u{n} from 203.0.113.{n % 250} port {n}")
         for n in range(100_000)]
        + [sentinel(100_000)],
    )  # fmt: skip
    assert len(list(directory.iterdir())) > 1, "expected journal-remote to rotate the file"
    check_100k(read_until_sentinel(live, timeout=120))

    for mode, where in [
        ("directory", {"directory": str(directory)}),
        ("files glob", {"files": (str(directory / "big*.journal"),)}),
    ]:
        started = time.perf_counter()
        source = make_source(**where)
        lines = read_until_sentinel(source, timeout=120)
        elapsed = time.perf_counter() - started
        source.stop()
        check_100k(lines)
        print(f"journal read rate ({mode}): {len(lines) / elapsed:,.0f} records/s")


def check_100k(lines: list[Line]) -> None:
    assert len(lines) == 100_000
    for n in (0, 1, 50_000, 99_999):
        assert lines[n].raw.startswith(f"Failed password for invalid user u{n} from ")
    assert len({line.origin for line in lines}) == 100_000


# --- reading journalctl's output: over-long records, at any chunk boundary -----------------

_values = st.one_of(
    st.text(max_size=300),
    st.just('fake "__CURSOR":"s=0;i=666" inside a value'),
    st.lists(st.integers(0, 255), max_size=50),
)


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.builds(
                lambda fields, message: {**fields, **message},
                st.dictionaries(st.from_regex(r"[A-Z][A-Z_]{0,8}", fullmatch=True), _values),
                st.fixed_dictionaries({}, optional={"MESSAGE": st.text(max_size=400)}),
            ),
            st.integers(0, 8),
        ),
        min_size=1,
        max_size=6,
    ),
    limit=st.integers(40, 400),
    chunk=st.integers(1, 50),
)  # fmt: skip
def test_every_record_keeps_its_cursor_however_long_and_wherever_it_is_cut(records, limit, chunk):
    lines, expected = [], []
    for number, (fields, cursor_at) in enumerate(records):
        cursor = f"s={number:032x};i={number + 1:x}"
        items = list(fields.items())
        items.insert(min(cursor_at, len(items)), ("__CURSOR", cursor))
        line = json.dumps(dict(items), ensure_ascii=False, separators=(",", ":")).encode()
        lines.append(line + b"\n")
        expected.append((cursor, len(line) + 1 > limit, dict(items)))
    stream = io.BufferedReader(io.BytesIO(b"".join(lines) + b'{"partial":"no newline'))

    got = list(journal_records.records(stream, limit, chunk))

    assert [(cursor, cut) for _, cursor, cut in got] == [(c, cut) for c, cut, _ in expected]
    for (data, _, cut), (_, _, original) in zip(got, expected, strict=True):
        assert len(data) <= limit
        if not cut:
            continue
        # complete fields survive a cut; a cut MESSAGE keeps its start
        prefix = journal_records.loads_prefix(data)
        for key, value in prefix.items():
            if key == "MESSAGE" and value != original[key]:
                assert value is None or original[key].startswith(value)
            else:
                assert original[key] == value


# --- the daemon's own records -------------------------------------------------------------


def test_the_services_own_unit_is_read_from_its_cgroup():
    assert own_unit("0::/system.slice/logwatchd.service\n") == "logwatchd.service"
    assert own_unit("12:pids:/system.slice/lwd.service\n0::/system.slice/lwd.service") == (
        "lwd.service"
    )
    assert own_unit("0::/user.slice/user-0.slice/session-3.scope\n") is None
    assert own_unit("0::/\n") is None and own_unit(None) is None
    here = OwnEntries.of_this_process({})
    assert here.pid == str(os.getpid()) and here.unit is None  # not started by systemd
    assert here.boot_id is None or len(here.boot_id) == 32


def test_records_the_daemon_wrote_itself_are_skipped_unless_its_unit_is_asked_for(
    tmp_path, make_source
):
    path = str(tmp_path / "j.journal")
    other_boot = "0" * 32
    append_journal(
        path,
        [
            entry(1, "sshd: Failed password from 203.0.113.9"),
            entry(2, "banned 203.0.113.9 for 1h", ident="logwatchd", unit="logwatchd.service"),
            entry(3, "alert from the daemon run by hand", ident="logwatchd", _PID="4242"),
            entry(4, "another process, pid 4242 before a reboot", _PID="4242", _BOOT_ID=other_boot),
            entry(5, "logger -t logwatchd from a user", ident="logwatchd", unit="session-1.scope"),
            sentinel(6),
        ],
    )
    own = OwnEntries("4242", BOOT_ID, "logwatchd.service")
    lines = read_until_sentinel(make_source(files=(path,), own=own))
    assert messages(lines) == [
        "sshd: Failed password from 203.0.113.9",
        "another process, pid 4242 before a reboot",
        "logger -t logwatchd from a user",
    ]
    assert [line.lineno for line in lines] == [1, 2, 3]

    asked = make_source(files=(path,), own=own, match=("_SYSTEMD_UNIT=logwatchd.service",))
    assert messages(read_lines(asked, 1)) == ["banned 203.0.113.9 for 1h"]

"""The daemon's own log: native journal protocol over a real socket, <N> lines, format choice."""

from __future__ import annotations

import array
import fcntl
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from logwatchd.handlers.log import PRIORITY
from logwatchd.service import logging as service_logging


def parse_native(data: bytes) -> dict[str, bytes]:
    """Parse the journal native format (both the NAME=value and the binary length form)."""
    fields: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        line = data[pos:newline]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = newline + 1
        else:
            name = line
            size = int.from_bytes(data[newline + 1 : newline + 9], "little")
            value = data[newline + 9 : newline + 9 + size]
            assert data[newline + 9 + size : newline + 10 + size] == b"\n"
            pos = newline + 10 + size
        assert name.decode() not in fields, f"duplicate field {name!r}"
        fields[name.decode()] = value
    return fields


class FakeJournald:
    """A datagram socket bound in a temp dir, receiving like journald's native socket does."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(5)
        self.seals: list[int] = []

    def receive(self) -> dict[str, bytes]:
        fd_size = array.array("i").itemsize
        data, ancillary, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fd_size))
        if not ancillary:
            return parse_native(data)
        assert data == b"", "a memfd entry comes with an empty datagram"
        level, kind, raw = ancillary[0]
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        fd = array.array("i", raw[:fd_size])[0]
        try:
            self.seals.append(fcntl.fcntl(fd, fcntl.F_GET_SEALS))
            # journald maps the memfd; reading it here must not depend on the sender's offset.
            size = os.fstat(fd).st_size
            return parse_native(os.pread(fd, size, 0))
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    server = FakeJournald(tmp_path / "journal.socket")
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks


def journal_logger(journald: FakeJournald, stream: io.StringIO | None = None) -> object:
    fmt = service_logging.configure(
        "journal", "debug", stream=stream or io.StringIO(), journal_socket=journald.path
    )
    assert fmt == "journal"
    return structlog.get_logger()


def test_event_keys_become_fields_and_message_is_readable(journald: FakeJournald) -> None:
    log = journal_logger(journald)
    log.warning("alert", rule="sshd-bruteforce", source="auth", handler="mail", count=5)
    fields = journald.receive()
    assert fields["PRIORITY"] == b"4"
    assert fields["SYSLOG_IDENTIFIER"] == b"logwatchd"
    assert fields["RULE"] == b"sshd-bruteforce"
    assert fields["SOURCE"] == b"auth"
    assert fields["HANDLER"] == b"mail"
    assert fields["COUNT"] == b"5"
    assert fields["MESSAGE"] == b"alert rule=sshd-bruteforce source=auth handler=mail count=5"
    assert fields["CODE_FUNC"] == b"test_event_keys_become_fields_and_message_is_readable"
    assert fields["CODE_FILE"].endswith(b"test_service_logging.py")


def test_a_group_key_reads_as_dotted_pairs_and_stays_json_in_its_field(
    journald: FakeJournald,
) -> None:
    log = journal_logger(journald)
    log.info("alert", rule="r", key={"ip": "203.0.113.9", "user": "root admin"})
    fields = journald.receive()
    assert fields["MESSAGE"] == b'alert rule=r key.ip=203.0.113.9 key.user="root admin"'
    assert json.loads(fields["KEY"]) == {"ip": "203.0.113.9", "user": "root admin"}


def test_explicit_priority_overrides_the_level(journald: FakeJournald) -> None:
    log = journal_logger(journald)
    log.info("alert fired", rule="security-breach", priority=PRIORITY["critical"])
    fields = journald.receive()
    assert fields["PRIORITY"] == b"2"
    assert "F_PRIORITY" not in fields and "PRIORITY_" not in fields


def test_levels_map_to_syslog_priorities(journald: FakeJournald) -> None:
    log = journal_logger(journald)
    for method, priority in [("debug", 7), ("info", 6), ("warning", 4), ("error", 3)]:
        getattr(log, method)("x")
        assert journald.receive()["PRIORITY"] == str(priority).encode()
    log.critical("x")
    assert journald.receive()["PRIORITY"] == b"2"


def test_hostile_keys_and_values_cannot_forge_fields(journald: FakeJournald) -> None:
    log = journal_logger(journald)
    raw = "Failed password\nPRIORITY=0\nMESSAGE=forged"
    log.info("line", raw=raw, **{"_pid": "1", "message": "m", "weird key-é": "v", "9x": "n"})
    fields = journald.receive()
    assert fields["RAW"] == raw.encode()
    assert fields["PRIORITY"] == b"6"
    assert fields["PID"] == b"1"  # leading underscores (trusted fields) are stripped
    assert fields["F_MESSAGE"] == b"m"
    assert fields["WEIRD_KEY__"] == b"v"
    assert fields["F_9X"] == b"n"
    assert b"\n" not in fields["MESSAGE"]
    assert all(name.replace("_", "").isalnum() and name.isupper() for name in fields)


def test_traceback_stays_one_entry(journald: FakeJournald) -> None:
    log = journal_logger(journald)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("handler crashed", handler="webhook")
    fields = journald.receive()
    message = fields["MESSAGE"].decode()
    assert message.startswith("handler crashed handler=webhook\nTraceback (most recent call last)")
    assert "ValueError: boom\nsecond line" in message
    assert fields["PRIORITY"] == b"3"
    journald.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        journald.sock.recv(1)


def test_an_entry_too_big_for_a_datagram_goes_through_a_sealed_memfd(
    journald: FakeJournald,
) -> None:
    log = journal_logger(journald)
    big = "x" * (4 << 20)
    log.info("big line", raw=big, rule="r")
    fields = journald.receive()
    assert fields["RAW"] == big.encode()
    assert fields["RULE"] == b"r"
    wanted = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
    assert journald.seals == [wanted]


def test_without_the_socket_entries_fall_back_to_prefixed_stderr(tmp_path: Path) -> None:
    stream = io.StringIO()
    service_logging.configure(
        "journal", stream=stream, journal_socket=str(tmp_path / "no-such-socket")
    )
    structlog.get_logger().error("smtp down", handler="mail")
    assert stream.getvalue() == "<3>smtp down handler=mail\n"


def test_stdlib_records_reach_the_same_sink(journald: FakeJournald) -> None:
    journal_logger(journald)
    logging.getLogger("watchdog.observers.inotify_buffer").warning("queue overflow %d", 3)
    fields = journald.receive()
    assert fields["MESSAGE"].startswith(b"queue overflow 3")
    assert fields["PRIORITY"] == b"4"
    assert fields["LOGGER"] == b"watchdog.observers.inotify_buffer"
    assert fields["CODE_FUNC"] == b"test_stdlib_records_reach_the_same_sink"


def test_stderr_format_is_one_prefixed_line_per_event() -> None:
    stream = io.StringIO()
    assert service_logging.configure("stderr", stream=stream) == "stderr"
    log = structlog.get_logger()
    log.warning("reload failed", error='config.yaml:3: rules[0].id: bad "id"\nmore')
    log.debug("not shown at info")
    try:
        raise RuntimeError("x")
    except RuntimeError:
        log.exception("crash", source="app")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == '<4>reload failed error="config.yaml:3: rules[0].id: bad \\"id\\"\\nmore"'
    assert lines[1].startswith('<3>crash source=app exception="Traceback')
    assert lines[1].endswith('RuntimeError: x"')


def test_json_format_is_one_object_per_line() -> None:
    stream = io.StringIO()
    service_logging.configure("json", stream=stream)
    structlog.get_logger().info("started", sources=2, rule="r")
    record = json.loads(stream.getvalue())
    assert record["event"] == "started"
    assert record["sources"] == 2
    assert record["level"] == "info"
    assert "timestamp" in record
    assert "_code" not in record


def test_journal_stream_must_match_stderr_not_merely_exist(tmp_path: Path) -> None:
    target = tmp_path / "stderr"
    with target.open("w") as stream:
        info = os.fstat(stream.fileno())
        matching = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        other = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"}
        fd = stream.fileno()
        assert service_logging.journal_stream_matches(fd, matching)
        assert not service_logging.journal_stream_matches(fd, other)
        assert not service_logging.journal_stream_matches(fd, {"JOURNAL_STREAM": "junk"})
        assert not service_logging.journal_stream_matches(fd, {})
        assert service_logging.resolve_format("auto", fd, matching) == "journal"
        assert service_logging.resolve_format("auto", fd, other) == "stderr"
        assert service_logging.resolve_format("json", fd, matching) == "json"


def test_auto_picks_console_on_a_terminal() -> None:
    primary, secondary = os.openpty()
    try:
        assert service_logging.resolve_format("auto", secondary, {}) == "console"
    finally:
        os.close(primary)
        os.close(secondary)


def test_auto_in_a_child_whose_stderr_is_the_journal_stream(
    journald: FakeJournald, tmp_path: Path
) -> None:
    """End to end as under systemd: JOURNAL_STREAM names the child's stderr -> native entries."""
    stderr_path = tmp_path / "stderr"
    script = (
        "import structlog, sys\n"
        "from logwatchd.service import logging as L\n"
        f"print(L.configure('auto', journal_socket={journald.path!r}), file=sys.stdout)\n"
        "structlog.get_logger().info('ready', source='app')\n"
    )
    with stderr_path.open("w") as err:
        info = os.fstat(err.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        done = subprocess.run(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
            timeout=30,
            check=True,
        )
    assert done.stdout.strip() == "journal"
    fields = journald.receive()
    assert fields["MESSAGE"] == b"ready source=app"
    assert fields["SOURCE"] == b"app"
    assert stderr_path.read_text() == ""


def run_child(script: str) -> subprocess.CompletedProcess[str]:
    prelude = "from logwatchd.service import logging as L\nL.configure('stderr')\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_crash_is_one_critical_line() -> None:
    done = run_child("def boom():\n    raise KeyError('gone')\nboom()\n")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith('<2>uncaught exception exception="Traceback')
    assert "KeyError: 'gone'" in lines[0]


def test_a_dying_thread_is_one_critical_line() -> None:
    script = (
        "import threading\n"
        "def boom():\n    raise OSError('inotify gone')\n"
        "t = threading.Thread(target=boom, name='observer'); t.start(); t.join()\n"
    )
    done = run_child(script)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("<2>uncaught exception in thread thread=observer exception=")
    assert "OSError: inotify gone" in lines[0]


def test_console_format_is_readable_and_keeps_tracebacks() -> None:
    stream = io.StringIO()
    assert service_logging.configure("console", stream=stream) == "console"
    log = structlog.get_logger()
    log.info("started", sources=2)
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("handler crashed", handler="mail")
    text = stream.getvalue()
    assert "started" in text and "sources=2" in text
    assert "handler crashed" in text and "ValueError: bad" in text
    assert "\x1b[" not in text, "no colours when the stream is not a terminal"
    assert "_code" not in text


TERMINAL_TRICKS = "x\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\rforged\x85line\x7f"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\x85", "\x7f")


def log_hostile_events() -> None:
    log = structlog.get_logger()
    log.warning("line failed", line=TERMINAL_TRICKS, key={"ip": TERMINAL_TRICKS})
    logging.getLogger("watchdog").warning("cannot watch %s", TERMINAL_TRICKS)
    try:
        raise ValueError(TERMINAL_TRICKS)
    except ValueError:
        log.exception(TERMINAL_TRICKS, source="app")


@pytest.mark.parametrize("fmt", ["stderr", "json", "console"])
def test_terminal_control_characters_in_values_are_escaped(fmt: str) -> None:
    stream = io.StringIO()
    service_logging.configure(fmt, stream=stream)
    log_hostile_events()
    text = stream.getvalue()
    assert [c for c in RAW_CONTROLS if c in text] == []
    assert "pwned" in text and "forged" in text  # shown, as escapes, not dropped
    if fmt == "stderr":
        assert len(text.splitlines()) == 3
        assert "\\u001b]0;pwned\\u0007" in text
        assert "\\u009b31m" in text
    if fmt == "json":
        records = [json.loads(line) for line in text.splitlines()]
        assert records[0]["line"] == TERMINAL_TRICKS  # still the same JSON value


def test_the_journal_message_escapes_them_too(journald: FakeJournald) -> None:
    journal_logger(journald)
    log_hostile_events()
    for _ in range(3):
        message = journald.receive()["MESSAGE"].decode()
        assert [c for c in RAW_CONTROLS if c in message] == []
        assert "pwned" in message

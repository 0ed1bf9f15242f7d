"""Chaos suite: the real daemon as a subprocess, the ``file`` handler as the sink.

A writer appends numbered lines; real logrotate rotates; the daemon is killed with SIGKILL
and restarted, also while files are rotated, truncated or replaced. Every scenario counts,
from the alerts the sink received (one rule matches every line, no threshold): lines
written, lost, and repeated (delivered more than once). A table is printed at the end.

Bars (README: "Guarantees, and where they stop"): nothing lost (copytruncate: only lines that
logrotate's own copy-to-truncate race left in no file); no line read twice under a new alert id
(the truncate-to-shorter scenario excepted, where the kept lines are a replaced file's
content); after a kill -9, an alert may be delivered again only under its same id, when its
delivery was in flight.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sources_helpers import BackgroundWriter, Writer, logrotate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/logrotate"), reason="needs logrotate"),
]

RATE = 500  # lines/s: enough to be mid-write at every rotation, light on a shared machine


@dataclass
class Outcome:
    scenario: str
    written: int
    lost: int
    repeated: int  # read twice: a second alert id for the same line
    redelivered: int  # the same alert id delivered again (in flight at a kill -9)
    note: str = ""


@pytest.fixture(scope="module")
def table(request: pytest.FixtureRequest) -> Iterator[list[Outcome]]:
    rows: list[Outcome] = []
    yield rows
    lines = [
        f"{'scenario':<60} {'written':>8} {'lost':>5} {'repeated':>8} {'redelivered':>11}  note",
        *(
            f"{r.scenario:<60} {r.written:>8} {r.lost:>5} {r.repeated:>8} {r.redelivered:>11}"
            f"  {r.note}"
            for r in rows
        ),
    ]
    text = "\n".join(lines)
    Path(os.environ.get("LOGWATCHD_CHAOS_TABLE", "/tmp/logwatchd-chaos-table.txt")).write_text(
        text + "\n", encoding="utf-8"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\nchaos suite:\n" + text)


@dataclass
class Harness:
    """One daemon, its config, its log directory and its sink."""

    root: Path
    pattern: str = "app.log"
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    log_lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.sink = self.root / "alerts.jsonl"
        self.conf = self.root / "logwatchd.yaml"
        self.conf.write_text(
            f"""version: 1
daemon:
  state_dir: {self.root / "state"}
  commit_interval: 250ms
  stat_interval: 250ms
  rescan_interval: 1s
sources:
  - id: app
    type: file
    paths: ["{self.logs / self.pattern}"]
    parser: numbered
    start_at: beginning
parsers:
  numbered:
    regex: '^(?P<tag>\\S+) (?P<n>\\d+) '
rules:
  - id: every-line
    match: {{field: n, exists: true}}
    severity: info
defaults:
  handlers: [sink]
handlers:
  sink:
    type: file
    path: {self.sink}
""",
            encoding="utf-8",
        )
        self.log = self.logs / "app.log"

    def start(self) -> None:
        """Start the daemon and return once it said READY=1 (its sources are open): a
        scenario's first rotation must not come before the daemon follows the file, however
        slowly it starts on a loaded machine."""
        notify_path = self.root / f"notify-{self.kills}-{time.monotonic_ns()}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        sock.settimeout(0.2)
        out = open(self.root / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logwatchd", "run", "-c", str(self.conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
        )
        out.close()
        try:
            self._wait_ready(sock)
        finally:
            sock.close()

    def _wait_ready(self, sock: socket.socket) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if b"READY=1" in sock.recv(65536).split(b"\n"):
                    return
            except TimeoutError:
                continue
        raise AssertionError(f"daemon not ready (exit {self.proc.poll()})")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.kills += 1

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def delivered(self) -> list[tuple[str, str, int]]:
        """(alert id, tag, number) per alert the sink holds (complete lines only)."""
        out = []
        try:
            data = self.sink.read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for text in data.splitlines(keepends=True):
            if not text.endswith("\n"):
                break
            alert = json.loads(text)
            tag, number = alert["event"]["raw"].split()[:2]
            out.append((alert["id"], tag, int(number)))
        return out

    def wait_for(self, expected: set[tuple[str, int]], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if expected <= {(t, n) for _, t, n in self.delivered()}:
                return
            time.sleep(0.1)

    def rotate(self, options: list[str], rotate: int = 5) -> None:
        conf_dir = self.root / "logrotate"
        conf_dir.mkdir(exist_ok=True)
        argv = logrotate(str(conf_dir), str(self.log), options, rotate=rotate)
        subprocess.run(argv, check=True, capture_output=True)


def numbers_in(path: Path) -> set[int]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    found = set()
    for text in data.decode("utf-8", "replace").splitlines():
        parts = text.split()
        if len(parts) > 1 and parts[1].isdigit():
            found.add(int(parts[1]))
    return found


def lines_on_disk(logs: Path) -> set[int]:
    return set().union(*(numbers_in(p) for p in logs.iterdir()))


def where(logs: Path, lost: list[tuple[str, int]]) -> dict[str, int]:
    wanted = {n for _, n in lost}
    return {p.name: len(numbers_in(p) & wanted) for p in sorted(logs.iterdir())}


def score(
    table: list[Outcome],
    name: str,
    harness: Harness,
    written: dict[str, int],
    *,
    allowed_lost: Callable[[int], bool] = lambda n: False,
    allowed_reread: int = 0,
    note: str = "",
) -> None:
    """Count and judge one scenario.

    Two kinds of repeat are told apart. A line read twice by the source under different
    origins gets a second alert id: that is a real repeat (``reread``; only a truncation that
    keeps old lines may cause it). A line read again after a kill -9 gets the same alert id,
    which the outbox does not queue twice; the same id can still be delivered twice when its
    delivery was in flight at the kill (``redelivered``): at most one per kill, as the outbox
    records each delivery in its own transaction right after it.
    """
    expected = {(tag, n) for tag, count in written.items() for n in range(1, count + 1)}
    harness.wait_for(expected)
    time.sleep(0.6)  # anything extra (a repeat) would arrive by now: commits are every 250 ms
    harness.stop()
    got = harness.delivered()
    per_line = Counter((t, n) for _, t, n in got)
    ids_per_line: dict[tuple[str, int], set[str]] = {}
    for alert_id, tag, n in got:
        ids_per_line.setdefault((tag, n), set()).add(alert_id)
    lost = sorted(k for k in expected if k not in per_line)
    repeated = sorted(k for k, c in per_line.items() if c > 1)
    reread = sorted(k for k, ids in ids_per_line.items() if len(ids) > 1)
    redelivered = sum(per_line[k] - len(ids_per_line[k]) for k in repeated)
    total = sum(written.values())
    if harness.kills:
        note = f"{note}; " if note else ""
        note += f"{harness.kills} kills"
    table.append(Outcome(name, total, len(lost), len(reread), redelivered, note))
    ours = [k for k in lost if not allowed_lost(k[1])]
    assert ours == [], f"{name}: lost {ours[:10]}; on disk in {where(harness.logs, ours)}"
    assert len(reread) <= allowed_reread, f"{name}: read twice {reread[:10]}"
    assert redelivered <= harness.kills, f"{name}: {redelivered} redeliveries"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.stop()


def test_create_with_delayed_hup(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    for _ in range(3):
        time.sleep(0.7)
        harness.rotate(["create"])
        time.sleep(0.3)  # the application is told late: its lines go to app.log.1 meanwhile
        writer.reopen()
    time.sleep(0.5)
    score(table, "logrotate create, HUP 0.3 s late (x3)", harness, {"line": writer.stop()})


def test_copytruncate(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    for _ in range(3):
        time.sleep(0.8)
        harness.rotate(["copytruncate"])
    time.sleep(0.5)
    written = writer.stop()
    on_disk = lines_on_disk(harness.logs)
    score(
        table,
        "logrotate copytruncate, writer running (x3)",
        harness,
        {"line": written},
        allowed_lost=lambda n: n not in on_disk,
        note="lost = lines logrotate's copy-to-truncate race left in no file",
    )


def test_copytruncate_writer_paused(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    for _ in range(3):
        time.sleep(0.8)
        writer.pause()
        harness.rotate(["copytruncate"])
        writer.resume()
    time.sleep(0.5)
    score(table, "logrotate copytruncate, writer paused (x3)", harness, {"line": writer.stop()})


def test_compress(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    for _ in range(3):
        time.sleep(0.7)
        harness.rotate(["create", "compress"])
        time.sleep(0.2)
        writer.reopen()
    time.sleep(0.5)
    score(table, "logrotate create + compress (x3)", harness, {"line": writer.stop()})


def test_delaycompress(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    for _ in range(3):
        time.sleep(0.7)
        harness.rotate(["create", "compress", "delaycompress"])
        time.sleep(0.2)
        writer.reopen()
    time.sleep(0.5)
    score(table, "logrotate create + delaycompress (x3)", harness, {"line": writer.stop()})


def test_several_rotations_within_a_second(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    time.sleep(0.8)
    start = time.monotonic()
    for _ in range(5):
        harness.rotate(["create"], rotate=20)
        writer.reopen()
    assert time.monotonic() - start < 2.0
    time.sleep(0.5)
    score(table, "5 logrotate rotations within a second", harness, {"line": writer.stop()})


def test_truncate_to_zero(harness: Harness, table: list[Outcome]) -> None:
    writer = Writer(str(harness.log))
    harness.start()
    for _ in range(3):
        writer.write(300)
        harness.wait_for({("line", writer.written)})
        os.truncate(harness.log, 0)
        time.sleep(0.5)
    writer.write(300)
    score(table, "truncate to zero (x3)", harness, {"line": writer.written})


def test_truncate_to_shorter_then_write_past_the_old_offset(
    harness: Harness, table: list[Outcome]
) -> None:
    writer = Writer(str(harness.log))
    harness.start()
    writer.write(300)
    harness.wait_for({("line", 300)})
    line_bytes = harness.log.stat().st_size // 300
    os.truncate(harness.log, 100 * line_bytes)
    writer.write(500)  # past the old offset at once: only the marker hash tells
    score(
        table,
        "truncate to shorter, then write past offset",
        harness,
        {"line": writer.written},
        allowed_reread=100,
        note="repeated = the 100 lines the cut kept: a replaced file is read from 0",
    )


def test_delete_and_recreate(harness: Harness, table: list[Outcome]) -> None:
    writer = Writer(str(harness.log))
    harness.start()
    for _ in range(4):
        writer.write(200)
        harness.wait_for({("line", writer.written)})
        writer.close()
        os.unlink(harness.log)
        next_number = writer.next
        writer = Writer(str(harness.log))
        writer.next = next_number
    writer.write(200)
    score(table, "delete and re-create (inode reuse likely) x4", harness, {"line": writer.written})


def test_two_hundred_new_files(tmp_path: Path, table: list[Outcome]) -> None:
    harness = Harness(tmp_path, pattern="*.log")
    try:
        harness.start()
        time.sleep(1.0)
        written = {}
        for i in range(200):
            tag = f"f{i:03d}"
            Writer(str(harness.logs / f"{tag}.log"), tag=tag).write(5)
            written[tag] = 5
        score(table, "200 new files appearing in a glob", harness, written)
    finally:
        harness.stop()


def test_repeated_kill9(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    for _ in range(5):
        time.sleep(1.2)
        harness.kill9()
        time.sleep(0.3)
        harness.start()
    time.sleep(0.5)
    score(
        table,
        "kill -9 and restart, writer running (x5)",
        harness,
        {"line": writer.stop()},
    )


def kill_during(harness: Harness, actions: list[Callable[[], object]]) -> None:
    """Kill -9 the daemon, do something to the files while it is down, start it again."""
    for action in actions:
        time.sleep(1.2)
        harness.kill9()
        time.sleep(0.2)
        action()
        time.sleep(0.2)
        harness.start()
    time.sleep(1.0)


def test_kill9_while_logrotate_rotates(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    options = ["create", "compress", "delaycompress"]

    def rotate() -> None:
        harness.rotate(options)
        writer.reopen()

    def rotate_twice() -> None:  # the daemon is down across two rotations
        rotate()
        time.sleep(0.3)
        rotate()

    kill_during(harness, [rotate, rotate_twice, rotate])
    score(
        table,
        "kill -9, logrotate delaycompress while down (x3)",
        harness,
        {"line": writer.stop()},
        note="one of the downtimes spans two rotations",
    )


def test_kill9_while_copytruncate(harness: Harness, table: list[Outcome]) -> None:
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()

    def copytruncate() -> None:
        writer.pause()  # logrotate's own race aside
        harness.rotate(["copytruncate"])
        writer.resume()

    kill_during(harness, [copytruncate] * 3)
    score(
        table,
        "kill -9, logrotate copytruncate while down (x3)",
        harness,
        {"line": writer.stop()},
    )


def test_kill9_while_truncated(harness: Harness, table: list[Outcome]) -> None:
    writer = Writer(str(harness.log))
    harness.start()
    for _ in range(3):
        writer.write(300)
        harness.wait_for({("line", writer.written)})
        time.sleep(0.5)  # committed: what a truncation destroys now was handled
        harness.kill9()
        os.truncate(harness.log, 0)
        writer.write(200)  # past nothing: the new content is shorter than the old offset...
        writer.write(200)  # ...and then longer: only the marker hash tells it is not an append
        harness.start()
    writer.write(100)
    score(
        table,
        "kill -9, truncate + refill past old offset while down (x3)",
        harness,
        {"line": writer.written},
    )


def test_kill9_then_delete_and_recreate_while_down(harness: Harness, table: list[Outcome]) -> None:
    writer = Writer(str(harness.log))
    harness.start()
    for _ in range(3):
        writer.write(200)
        harness.wait_for({("line", writer.written)})
        time.sleep(0.5)  # committed
        harness.kill9()
        writer.close()
        os.unlink(harness.log)
        next_number = writer.next
        writer = Writer(str(harness.log))
        writer.next = next_number
        writer.write(100)  # the new file is longer than nothing: only identity can tell
        harness.start()
    writer.write(100)
    score(
        table,
        "kill -9, delete + re-create while down (x3)",
        harness,
        {"line": writer.written},
    )


def test_fd_baseline_and_no_deleted_file_held(harness: Harness, table: list[Outcome]) -> None:
    """After rotations the daemon holds only the live file: nothing deleted, nothing extra."""
    writer = BackgroundWriter(str(harness.log), rate=RATE)
    harness.start()
    harness.wait_for({("line", 1)})  # the sink and the state are open too
    assert harness.proc is not None
    pid = harness.proc.pid
    baseline = _fds(pid)
    for _ in range(4):
        harness.rotate(["create", "compress"])
        writer.reopen()
        time.sleep(0.3)
    written = writer.stop()
    harness.wait_for({("line", n) for n in range(1, written + 1)})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (_deleted(pid) or len(_fds(pid)) > len(baseline)):
        time.sleep(0.2)
    assert _deleted(pid) == []
    assert len(_fds(pid)) <= len(baseline)
    score(table, "fd count after 4 rotations (compress)", harness, {"line": written})


def _fds(pid: int) -> list[str]:
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
    return out


def _deleted(pid: int) -> list[str]:
    return [t for t in _fds(pid) if t.endswith("(deleted)") and "/logs/" in t]


def test_cleanup_leaves_no_daemon(tmp_path: Path) -> None:
    """Sanity: a daemon stopped with SIGTERM exits 0 (the suite's restarts rely on it)."""
    harness = Harness(tmp_path)
    harness.start()
    time.sleep(1.0)
    assert harness.proc is not None
    proc = harness.proc
    harness.stop()
    assert proc.returncode == 0
    shutil.rmtree(tmp_path / "state", ignore_errors=True)

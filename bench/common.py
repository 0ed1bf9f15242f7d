"""Shared helpers for the benchmark scripts: measured subprocesses, /proc readings, a daemon
under test, the generated log, and plain tables. Not part of the logwatchd package."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = Path(os.environ.get("LOGWATCHD_BENCH_DIR", "/tmp/logwatchd-bench"))
PACKS_CONFIG = BENCH_DIR / "packs.yaml"
PYTHON = sys.executable
LOGWATCHD = [PYTHON, "-m", "logwatchd"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GNU_TIME = "/usr/bin/time"

# logwatchd runs from bytecode compiled once, as an installed package does (pip and Debian
# compile it at install time). Where PYTHONDONTWRITEBYTECODE is set (this build host sets it),
# every run would first compile logwatchd's sources again: some 0.15 s of each start-up.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def compile_tree(tree: Path) -> None:
    """Write the bytecode of ``tree``'s logwatchd (``__pycache__``, which git ignores) before
    any measured run, so that no run pays for compiling it."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree / "logwatchd")], check=True)


compile_tree(REPO)


# --- measured subprocesses ----------------------------------------------------------------


@dataclass
class Measured:
    argv: list[str]
    returncode: int
    wall: float  # seconds, from spawn to exit
    cpu: float  # user + system seconds of the process and the children it waited for
    max_rss_kib: int  # peak resident set of that process tree (ru_maxrss)
    stdout: str
    stderr: str

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kib / 1024


def run_measured(
    argv: Sequence[str],
    *,
    timeout: float = 900.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Measured:
    """Run argv to completion: wall time, CPU and peak RSS of exactly that child.

    The peak comes from GNU time when installed: a child forked (or vfork'ed) from this
    Python process inherits its high-water mark, so wait4's ru_maxrss alone would never read
    below this script's own size; GNU time's fork starts from its own small image.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
            command = list(argv)
            if os.access(GNU_TIME, os.X_OK):
                command = [GNU_TIME, "-f", "%M", "-o", rss.name, *command]
            started = time.perf_counter()
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd
            )
            # wait4 reports the rusage of this one child; getrusage(RUSAGE_CHILDREN) would
            # mix every child this script ever ran
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            peak = usage.ru_maxrss
            if command[0] == GNU_TIME:
                written = rss.read().strip().splitlines()
                peak = int(written[-1]) if written and written[-1].isdigit() else peak
        out.seek(0)
        err.seek(0)
        return Measured(
            list(argv),
            proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            peak,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


# --- /proc ---------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # after the command name: state is field 3, utime 14 and stime 15 (1-based, man proc)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_status_kib(pid: int, key: str) -> int:
    """A ``kB`` value from /proc/PID/status: VmRSS (now) or VmHWM (peak)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for row in handle:
            if row.startswith(key + ":"):
                return int(row.split()[1])
    raise KeyError(key)


def proc_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# --- the daemon under test ------------------------------------------------------------------


class Daemon:
    """``logwatchd run`` as a child, started and known ready through its sd_notify READY=1."""

    def __init__(self, config: Path, workdir: Path, prefix: Sequence[str] = ()) -> None:
        self.config = config
        self.workdir = workdir
        self.prefix = list(prefix)  # e.g. ip netns exec NS: it execs, so the pid is the daemon's
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "daemon.log"
        self._notify_path = workdir / "notify.sock"
        self._notify: socket.socket | None = None
        self._drainer: threading.Thread | None = None
        self.last_status = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for READY=1; returns the seconds it took."""
        self._notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(self._notify_path))
        env.pop("JOURNAL_STREAM", None)
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *LOGWATCHD, "--log-format", "json", "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.workdir,
            )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.tail_log()}")
            self._notify.settimeout(0.2)
            try:
                message = self._notify.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in message.split(b"\n"):
                self._drainer = threading.Thread(target=self._drain_notify, daemon=True)
                self._drainer.start()
                return time.perf_counter() - started
        self.stop()
        raise RuntimeError(f"daemon not ready after {timeout:.0f} s: {self.tail_log()}")

    def _drain_notify(self) -> None:
        """Keep reading STATUS= datagrams, as systemd does: a full queue (net.unix.
        max_dgram_qlen, 10 here) would block the daemon's sendto and stall its loop."""
        sock = self._notify
        while sock is not None and self._notify is sock:
            try:
                message = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for field in message.split(b"\n"):
                if field.startswith(b"STATUS="):
                    self.last_status = field[7:].decode("utf-8", "replace")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._notify is not None:
            sock, self._notify = self._notify, None
            if self._drainer is not None:
                self._drainer.join(2.0)  # it wakes within the socket's 0.2 s timeout
            sock.close()
        return self.proc.returncode

    def tail_log(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- inputs -------------------------------------------------------------------------------


def ensure_log(lines: int, fmt: str = "rfc3164", seed: int = 7) -> Path:
    """The generated auth.log for these parameters, written once and reused."""
    import gen_authlog

    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"auth-{lines}-{fmt}-s{seed}.log"
    if not path.exists():
        partial = path.with_suffix(".partial")
        print(f"generating {path} ...", file=sys.stderr)
        gen_authlog.main(
            [str(partial), "--lines", str(lines), "--format", fmt, "--seed", str(seed)]
        )
        partial.rename(path)
    return path


READ_SIZE = 1 << 20


def byte_blocks(path: Path) -> Iterator[bytes]:
    """Whole lines per block of about READ_SIZE bytes (the last one as it ends)."""
    with open(path, "rb") as handle:
        rest = b""
        while block := handle.read(READ_SIZE):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            yield block[:cut]
        if rest:
            yield rest + b"\n"


def blocks(path: Path) -> Iterator[str]:
    """Whole lines per block, decoded once (what replay.read_lines does before splitting)."""
    for block in byte_blocks(path):
        yield block.decode("utf-8", "replace")


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def fresh_dir(name: str) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=WORK))


# --- reporting ----------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for row in handle:
                if row.startswith("model name"):
                    model = row.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average {load} (shared machine)"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, so the output can be pasted into bench/README.md as it is."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in cells]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, round(share * len(values) + 0.5) - 1))
    return values[rank]

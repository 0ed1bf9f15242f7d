"""Latency of the running daemon, from a line's write to its alert in the ``file`` handler.

A daemon follows one local file with a rule (no threshold, no cooldown) that matches every
line, and a ``file`` handler. A writer appends lines at a fixed rate, each carrying its
sequence number and the time it was written; a reader tails the alerts file and records,
for every alert, how long after the write it landed. Per rate: p50/p99/max latency, alert
lines written vs alerts seen each second (the backlog), and how long the daemon took to
drain once the writer stopped. With ``--alert-every N`` only every Nth line is an alert
line (the others go through the same parser but match no rule), which separates the cost
of following and parsing lines from the cost of delivering alerts.

    python bench/latency.py                          # 1,000 then 20,000 lines/s, 10 s each
    python bench/latency.py --rates 1000 5000 --seconds 20
    python bench/latency.py --alert-every 100        # 1% of the lines make an alert
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common import Daemon, fresh_dir, machine, percentile, proc_cpu_seconds, table, wait_until

TICK = 0.0005  # writer pacing step, seconds
POLL = 0.001  # reader polling step, seconds
SEQ = re.compile(rb"seq=(\d+):(\d+) t=(\d+\.\d+)")

CONFIG = """\
version: 1
daemon:
  state_dir: {work}/state
  timezone: UTC
sources:
  - id: bench
    type: file
    paths: [{log}]
    parser: syslog
    start_at: beginning
rules:
  - id: every-line
    description: Every benchmark line is an alert (no threshold, no cooldown)
    match: {{field: message, startswith: "alert "}}
    severity: info
    handlers: [alerts]
handlers:
  alerts:
    type: file
    path: {alerts}
"""


class Reader(threading.Thread):
    """Tails the alerts file; records (phase, seq) -> latency in seconds."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: dict[tuple[int, int], float] = {}
        self.counts: dict[int, int] = {}
        self.stopping = threading.Event()
        self.malformed = 0

    def run(self) -> None:
        while not self.path.exists() and not self.stopping.is_set():
            time.sleep(POLL)
        with open(self.path, "rb") as handle:
            rest = b""
            while not self.stopping.is_set():
                chunk = handle.read()
                if not chunk:
                    time.sleep(POLL)
                    continue
                now = time.time()
                data = rest + chunk
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                for row in data[:cut].splitlines():
                    self._record(row, now)

    def _record(self, row: bytes, now: float) -> None:
        found = SEQ.search(row)  # the first one is in event.raw
        if found is None:
            self.malformed += 1
            return
        key = (int(found.group(1)), int(found.group(2)))
        if key not in self.seen:
            self.seen[key] = now - float(found.group(3))
            self.counts[key[0]] = self.counts.get(key[0], 0) + 1


@dataclass
class Phase:
    number: int
    rate: int
    seconds: float
    alert_every: int = 1
    written: int = 0  # lines
    alerts_written: int = 0
    seen_at_end: int = 0  # alerts seen when the drain ended (or timed out)
    write_end: float = 0.0
    drain: float | None = None  # seconds from the writer's end to the last alert
    backlog: list[tuple[float, int, int]] = field(default_factory=list)  # (t, alerts, seen)
    daemon_cpu: float = 0.0


def stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")


def write_lines(fd: int, phase: Phase, due: int) -> None:
    now = time.time()
    head = f"{stamp(now)} benchhost bench[{os.getpid()}]: "
    tail = f" seq={phase.number}:"
    every = phase.alert_every
    rows = [
        f"{head}{'alert' if n % every == 0 else 'quiet'}{tail}{n} t={now:.6f}\n"
        for n in range(phase.written, due)
    ]
    os.write(fd, "".join(rows).encode())
    phase.alerts_written += sum(1 for n in range(phase.written, due) if n % every == 0)
    phase.written = due


def write_phase(fd: int, phase: Phase, reader: Reader, daemon_pid: int) -> None:
    """Append ``rate`` lines per second for ``seconds``, in small paced batches."""
    cpu_before = proc_cpu_seconds(daemon_pid)
    total = int(phase.rate * phase.seconds)
    start = time.perf_counter()
    next_sample = 1.0
    while phase.written < total:
        elapsed = time.perf_counter() - start
        due = total if elapsed >= phase.seconds else min(int(phase.rate * elapsed) + 1, total)
        if due > phase.written:
            write_lines(fd, phase, due)
        if elapsed >= next_sample:
            seen = reader.counts.get(phase.number, 0)
            phase.backlog.append((elapsed, phase.alerts_written, seen))
            next_sample += 1.0
        time.sleep(TICK)
    phase.write_end = time.perf_counter()
    phase.daemon_cpu = proc_cpu_seconds(daemon_pid) - cpu_before


def drain(phase: Phase, reader: Reader, timeout: float) -> None:
    def done() -> bool:
        return reader.counts.get(phase.number, 0) >= phase.alerts_written

    if wait_until(done, timeout, interval=0.01):
        phase.drain = time.perf_counter() - phase.write_end
    phase.seen_at_end = reader.counts.get(phase.number, 0)


def backlog_slope(points: list[tuple[float, int, int]]) -> float:
    """Least-squares slope of (written - seen) over time, lines per second."""
    if len(points) < 2:
        return 0.0
    xs = [t for t, _, _ in points]
    ys = [w - s for _, w, s in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def summarize(phase: Phase, reader: Reader) -> list[str]:
    latencies = sorted(v for (p, _), v in reader.seen.items() if p == phase.number)
    slope = backlog_slope(phase.backlog)
    grows = slope > 0.05 * phase.rate / phase.alert_every
    ms = 1000.0
    return [
        f"{phase.rate:,}",
        f"1/{phase.alert_every}",
        f"{phase.seconds:.0f}",
        f"{phase.alerts_written:,}",
        f"{phase.seen_at_end:,}",
        f"{percentile(latencies, 0.50) * ms:.1f}",
        f"{percentile(latencies, 0.99) * ms:.1f}",
        f"{(latencies[-1] if latencies else float('nan')) * ms:.1f}",
        f"{slope:,.0f}" + (" (grows)" if grows else " (stable)"),
        f"{phase.drain:.2f}" if phase.drain is not None else "not drained",
        f"{phase.daemon_cpu / phase.seconds:.2f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--seconds", type=float, default=10.0, help="writing time per rate")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--alert-every", type=int, default=1, help="every Nth line alerts")
    args = parser.parse_args(argv)

    work = fresh_dir("latency")
    log, alerts = work / "input.log", work / "alerts.jsonl"
    log.touch()
    config = work / "latency.yaml"
    config.write_text(CONFIG.format(work=work, log=log, alerts=alerts), encoding="utf-8")
    print(f"# latency: daemon following {log}; alerts in {alerts}")
    print(f"# machine: {machine()}")

    reader = Reader(alerts)
    reader.start()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    phases: list[Phase] = []
    with Daemon(config, work) as daemon:
        took = daemon.start()
        print(f"daemon ready in {took:.2f} s (pid {daemon.pid})")
        warm = Phase(0, 100, 0.2)  # proves the path works before anything is timed
        write_phase(fd, warm, reader, daemon.pid)
        drain(warm, reader, args.drain_timeout)
        if warm.drain is None:
            sys.exit(f"no alerts arrived for the warm-up lines; daemon log:\n{daemon.tail_log()}")
        for number, rate in enumerate(args.rates, start=1):
            phase = Phase(number, rate, args.seconds, args.alert_every)
            write_phase(fd, phase, reader, daemon.pid)
            drain(phase, reader, args.drain_timeout)
            phases.append(phase)
            print(f"  {rate:,} lines/s: {phase.seen_at_end:,} of {phase.alerts_written:,} seen")
        stopping = time.perf_counter()
        status = daemon.stop(timeout=args.drain_timeout)
        print(f"daemon stopped with status {status} in {time.perf_counter() - stopping:.2f} s")
    os.close(fd)
    reader.stopping.set()
    reader.join(5)

    headers = ["lines/s", "alerting", "s", "alert lines", "alerts seen", "p50 ms", "p99 ms",
               "max ms",
               "backlog slope lines/s", "drain s", "daemon CPU s/s"]  # fmt: skip
    print()
    print(table(headers, [summarize(phase, reader) for phase in phases]))
    for phase in phases:
        series = ", ".join(f"{w - s}" for _, w, s in phase.backlog)
        print(
            f"backlog each second at {phase.rate:,} lines/s (alert lines - alerts seen): {series}"
        )
    if reader.malformed:
        print(f"{reader.malformed} alert lines without a sequence number")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

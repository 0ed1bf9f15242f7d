"""Many followed files: start-up, reading everything once, idle cost, memory, shutdown.

The daemon follows one glob over N files of one line each (start_at: beginning), under an
optional descriptor limit (RLIMIT_NOFILE, as `ulimit -n` or the unit's LimitNOFILE), with one
rule that matches nothing (so the figures are the follower's, not the outbox's). Measured:
READY after start; all lines read (the daemon's sd_notify STATUS, sent every 5 s, says how
many); then idle CPU seconds per minute, RSS and open descriptors; SIGTERM to exit; READY
again after a restart (every file found again from the checkpoint).

    python bench/many_files.py --files 5000
    python bench/many_files.py --files 100000 --nofile 8192 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from common import (
    Daemon,
    fresh_dir,
    machine,
    proc_cpu_seconds,
    proc_status_kib,
    table,
    wait_until,
)

CONFIG = """\
version: 1
daemon:
  state_dir: {work}/state
  max_open_files: {max_open}
sources:
  - id: many
    type: file
    paths: [{work}/logs/*.log]
    parser: none
    start_at: beginning
rules:
  - id: never
    match: {{field: message, contains: "no line holds this"}}
defaults:
  handlers: [log]
"""


def lines_read(status: str) -> int:
    try:
        return int(status.partition(" lines read")[0])
    except ValueError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--nofile", type=int, default=8192, help="RLIMIT_NOFILE (LimitNOFILE)")
    parser.add_argument("--max-open", type=int, default=1024, help="daemon.max_open_files")
    parser.add_argument("--seconds", type=float, default=60.0, help="idle time measured")
    parser.add_argument("--settle", type=float, default=15.0, help="wait before the idle part")
    args = parser.parse_args(argv)

    work = fresh_dir("many-files")
    logs = work / "logs"
    logs.mkdir()
    for number in range(args.files):
        (logs / f"f{number:06d}.log").write_text(f"line of file {number}\n", encoding="utf-8")
    config = work / "many.yaml"
    config.write_text(CONFIG.format(work=work, max_open=args.max_open), encoding="utf-8")
    print(f"# many files: {args.files} files, RLIMIT_NOFILE {args.nofile}, "
          f"max_open_files {args.max_open}")  # fmt: skip
    print(f"# machine: {machine()}")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, max(hard, args.nofile)))
    try:
        with Daemon(config, work) as daemon:  # the child inherits the limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            started = time.perf_counter()
            ready = daemon.start(timeout=600)
            wait_until(lambda: lines_read(daemon.last_status) >= args.files, timeout=1800)
            all_read = time.perf_counter() - started
            time.sleep(args.settle)
            cpu_start, wall_start = proc_cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu_end, wall_end = proc_cpu_seconds(daemon.pid), time.monotonic()
            rss = proc_status_kib(daemon.pid, "VmRSS") / 1024
            peak = proc_status_kib(daemon.pid, "VmHWM") / 1024
            fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
            stopping = time.perf_counter()
            code = daemon.stop(timeout=600)
            stop = time.perf_counter() - stopping
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, max(hard, args.nofile)))
        with Daemon(config, work) as again:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            restart = again.start(timeout=1800)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    per_minute = (cpu_end - cpu_start) / (wall_end - wall_start) * 60
    headers = ["files", "READY s", "all read s (±5)", "idle CPU s/min", "RSS MiB", "peak MiB",
               "open fds", "stop s", "exit", "restart READY s"]  # fmt: skip
    rows = [[args.files, f"{ready:.1f}", f"{all_read:.0f}", f"{per_minute:.3f}", f"{rss:.0f}",
             f"{peak:.0f}", fds, f"{stop:.2f}", code, f"{restart:.1f}"]]  # fmt: skip
    print()
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Idle cost of the daemon: CPU seconds per minute while it follows quiet files.

The daemon follows N files (a glob over one directory) that receive nothing, with the
shipped packs loaded; after it reported READY and settled, its utime+stime from
/proc/PID/stat is read at the start and end of the measured interval.

    python bench/idle.py                      # 100 files, 60 s
    python bench/idle.py --files 1000 --seconds 120
"""

from __future__ import annotations

import argparse
import os
import time

from common import (
    REPO,
    Daemon,
    fresh_dir,
    machine,
    proc_cpu_seconds,
    proc_status_kib,
    proc_threads,
    table,
)

CONFIG = """\
version: 1
daemon:
  state_dir: {work}/state
  timezone: UTC
include:
  - {repo}/config/rules.d/sshd.yaml
  - {repo}/config/rules.d/sudo*.yaml
  - {repo}/config/rules.d/pam*.yaml
sources:
  - id: quiet
    type: file
    paths: [{work}/logs/*.log]
    parser: syslog
    start_at: beginning
defaults:
  handlers: [log]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0, help="wait after READY first")
    args = parser.parse_args(argv)

    work = fresh_dir("idle")
    logs = work / "logs"
    logs.mkdir()
    for number in range(args.files):
        (logs / f"quiet-{number:04d}.log").write_text(
            f"Nov 26 10:00:00 host app[{number}]: started\n", encoding="utf-8"
        )
    config = work / "idle.yaml"
    config.write_text(CONFIG.format(work=work, repo=REPO), encoding="utf-8")
    print(f"# idle: {args.files} quiet files, {args.seconds:.0f} s measured")
    print(f"# machine: {machine()}")

    with Daemon(config, work) as daemon:
        took = daemon.start()
        time.sleep(args.settle)
        cpu_start, wall_start = proc_cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu_end, wall_end = proc_cpu_seconds(daemon.pid), time.monotonic()
        rss = proc_status_kib(daemon.pid, "VmRSS") / 1024
        threads = proc_threads(daemon.pid)
        open_fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        status = daemon.last_status

    per_minute = (cpu_end - cpu_start) / (wall_end - wall_start) * 60
    rows = [[args.files, f"{wall_end - wall_start:.0f}", f"{cpu_end - cpu_start:.3f}",
             f"{per_minute:.3f}", f"{rss:.1f}", threads, open_fds, f"{took:.2f}"]]  # fmt: skip
    headers = ["files", "measured s", "CPU s", "CPU s/min", "RSS MiB", "threads", "open fds",
               "ready after s"]  # fmt: skip
    print()
    print(table(headers, rows))
    print(f"\nlast sd_notify STATUS: {status}")
    print(f"idle: {per_minute:.3f} CPU-s/min (target < 0.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

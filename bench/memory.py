"""Memory: the daemon's RSS at rest, and peak RSS under a flood of distinct keys.

1. At rest: the daemon with the shipped packs follows an auth.log that gets nothing new;
   VmRSS (and the VmHWM peak) once it has settled after READY.
2. Key flood in ``logwatchd test``: it replays N lines of "Failed password ... from IP", every line
   from a different address and all within the rule's 10-minute window, through the shipped
   sshd pack (``sshd-auth-failure`` groups by ip, threshold 5, so no key ever fires and every
   key stays live). Peak RSS with ``daemon.max_keys_per_rule`` at its default, at a small
   limit, and at a limit above N (no bound in effect); a run where every line has the same
   address is the baseline.
3. Key flood in the daemon: the same N lines in a file the daemon follows from its beginning,
   with the small limit and the default one; VmHWM once the committed offset reached the end
   of the file (the daemon drains rule-state changes at each commit, ``test`` never does).

    python bench/memory.py                       # 1,000,000 keys; limit 10,000 vs default
    python bench/memory.py --keys 200000 --small-limit 5000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import (
    LOGWATCHD,
    REPO,
    WORK,
    Daemon,
    fresh_dir,
    machine,
    proc_status_kib,
    run_measured,
    table,
    wait_until,
)

CONFIG = """\
version: 1
daemon:
  state_dir: {work}/state
  timezone: UTC
{limit}include:
  - {repo}/config/rules.d/sshd.yaml
  - {repo}/config/rules.d/sudo*.yaml
  - {repo}/config/rules.d/pam*.yaml
sources:
  - id: auth
    type: file
    paths: [{log}]
    parser: syslog
    start_at: beginning
defaults:
  handlers: [log]
"""


def write_config(work: Path, name: str, log: Path, limit: int | None) -> Path:
    limit_line = f"  max_keys_per_rule: {limit}\n" if limit is not None else ""
    path = work / name
    path.write_text(
        CONFIG.format(work=work, limit=limit_line, repo=REPO, log=log), encoding="utf-8"
    )
    return path


def flood_file(keys: int, distinct: bool) -> Path:
    """N failed logins 0.5 ms apart (all inside 10 minutes), one address each or one for all."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"keyflood-{keys}-{'distinct' if distinct else 'same'}.log"
    if path.exists():
        return path
    start = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    step = timedelta(microseconds=500)
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as out:
        rows = []
        for n in range(keys):
            number = n + 1 if distinct else 1
            ip = f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
            when = (start + n * step).isoformat(timespec="microseconds")
            rows.append(
                f"{when} web1 sshd[{1000 + n % 50000}]: "
                f"Failed password for root from {ip} port {1024 + n % 60000} ssh2\n"
            )
            if len(rows) >= 10_000:
                out.write("".join(rows))
                rows.clear()
        out.write("".join(rows))
    partial.rename(path)
    return path


def at_rest(settle: float) -> list[str]:
    work = fresh_dir("memory-rest")
    log = work / "auth.log"
    log.write_text("Nov 26 10:00:00 web1 sshd[1]: Server listening on 0.0.0.0 port 22.\n")
    config = write_config(work, "rest.yaml", log, None)
    with Daemon(config, work) as daemon:
        daemon.start()
        time.sleep(settle)
        rss = proc_status_kib(daemon.pid, "VmRSS") / 1024
        peak = proc_status_kib(daemon.pid, "VmHWM") / 1024
    return [f"{rss:.1f}", f"{peak:.1f}"]


def flood(keys: int, small: int, default: int) -> list[list[str]]:
    work = fresh_dir("memory-flood")
    distinct, same = flood_file(keys, True), flood_file(keys, False)
    cases = [
        ("one address (baseline)", same, None),
        (f"distinct, max_keys_per_rule {small:,}", distinct, small),
        (f"distinct, max_keys_per_rule default ({default:,})", distinct, None),
        (f"distinct, max_keys_per_rule {keys * 2:,} (no bound)", distinct, keys * 2),
    ]
    rows = []
    for number, (label, log, limit) in enumerate(cases):
        config = write_config(work, f"flood-{number}.yaml", log, limit)
        argv = [*LOGWATCHD, "test", "-c", str(config), "--source", "auth", str(log)]
        measured = run_measured(argv)
        if measured.returncode != 0:
            raise SystemExit(f"{label}: exit {measured.returncode}\n{measured.stderr[-2000:]}")
        rows.append([label, f"{keys:,}", f"{measured.max_rss_mib:.0f}", f"{measured.wall:.1f}"])
    return rows


def committed_offset(config: Path) -> int:
    """Sum of the file offsets the daemon has committed, from ``logwatchd status --json``."""
    done = subprocess.run(
        [*LOGWATCHD, "status", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    try:
        sources = json.loads(done.stdout).get("sources", {})
    except ValueError:
        return 0
    return sum(
        int(entry.get("offset", 0))
        for source in sources.values()
        for entry in (source.get("state") or {}).get("files", [])
    )


def daemon_flood(keys: int, limit: int | None, label: str, timeout: float) -> list[str]:
    work = fresh_dir("memory-daemon-flood")
    log = work / "auth.log"
    shutil.copyfile(flood_file(keys, True), log)
    size = log.stat().st_size
    config = write_config(work, "flood.yaml", log, limit)
    with Daemon(config, work) as daemon:
        daemon.start(timeout=120)
        started = time.perf_counter()
        finished = wait_until(lambda: committed_offset(config) >= size, timeout, interval=2.0)
        took = time.perf_counter() - started
        rss = proc_status_kib(daemon.pid, "VmRSS") / 1024
        peak = proc_status_kib(daemon.pid, "VmHWM") / 1024
    state = work / "state" / "state.db"
    db = state.stat().st_size / 2**20 if state.exists() else 0.0
    return [
        label,
        f"{keys:,}",
        f"{peak:.0f}",
        f"{rss:.0f}",
        f"{took:.0f}" if finished else f"not done in {timeout:.0f}",
        f"{db:.0f}",
    ]


def main(argv: list[str] | None = None) -> int:
    from logwatchd.config.model import DaemonConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--small-limit", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--no-daemon", action="store_true", help="skip the at-rest daemon")
    parser.add_argument("--no-flood", action="store_true", help="skip the key flood")
    parser.add_argument("--no-daemon-flood", action="store_true", help="skip it in the daemon")
    parser.add_argument("--daemon-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    print(f"# machine: {machine()}")
    if not args.no_daemon:
        print()
        print(table(["daemon at rest: VmRSS MiB", "VmHWM MiB"], [at_rest(args.settle)]))
    if not args.no_flood:
        default = DaemonConfig().max_keys_per_rule
        print()
        rows = flood(args.keys, args.small_limit, default)
        print(table(["logwatchd test, sshd pack", "lines", "peak RSS MiB", "wall s"], rows))
    if not args.no_daemon_flood:
        default = DaemonConfig().max_keys_per_rule
        cases = [
            (args.small_limit, f"daemon, max_keys_per_rule {args.small_limit:,}"),
            (None, f"daemon, max_keys_per_rule default ({default:,})"),
        ]
        rows = [
            daemon_flood(args.keys, limit, label, args.daemon_timeout) for limit, label in cases
        ]
        headers = ["daemon following the flood", "lines", "VmHWM MiB", "VmRSS MiB at end",
                   "s to commit all", "state.db MiB"]  # fmt: skip
        print()
        print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

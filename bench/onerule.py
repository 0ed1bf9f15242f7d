"""One threshold rule, the job SEC and swatch are made for: five failed sshd passwords from
one address within ten minutes, over the generated auth.log, in the same run:

- ``logwatchd test`` with a config of that one rule (bench/onerule.yaml), timed with its
  alerts as text lines (a short line each, as SEC and swatchdog print theirs) and again with
  ``--json`` (whole alert objects, which are also what is checked);
- SEC (``SingleWithThreshold``) and swatchdog (``threshold``) with the same regex, on their
  own clock (they do not read the log's timestamps, so their alert counts differ);
- a straightforward Python implementation (regex, timestamp, a sliding window per address),
  whose alerts logwatchd's must equal exactly (address and time of each).

Each tool is timed from spawn to exit.

    python bench/onerule.py                    # 1,000,000 lines
    python bench/onerule.py --lines 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import BENCH_DIR, LOGWATCHD, WORK, ensure_log, machine, run_measured, table

CONFIG = BENCH_DIR / "onerule.yaml"
PATTERN = r"(?:sshd|sshd-session)\[\d+\]: Failed \S+ for (?:invalid user )?\S+ from (\S+) port \d+"
COUNT, WINDOW = 5, 600.0
MONTHS = {m: n for n, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
SEC_RULE = f"""type=SingleWithThreshold
ptype=RegExp
pattern={PATTERN}
desc=bruteforce $1
action=write - ALERT $1
window={int(WINDOW)}
thresh={COUNT}
"""
SWATCH_RULE = f"""watchfor /{PATTERN}/
  threshold track_by=$1,type=threshold,count={COUNT},seconds={int(WINDOW)}
  echo
"""


def reference(log: Path) -> tuple[float, list[tuple[str, float]]]:
    """The plain way, timed in-process: (seconds, [(address, time of the alert)])."""
    started = time.perf_counter()
    line_re = re.compile(r"(\w{3}) +(\d+) (\d\d):(\d\d):(\d\d) \S+ " + PATTERN)
    year = datetime.fromtimestamp(log.stat().st_mtime, UTC).year  # the log spans hours
    windows: dict[str, list[float]] = {}
    alerts = []
    with open(log, encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            found = line_re.match(raw)
            if found is None:
                continue
            mon, day, hour, minute, second, ip = found.groups()
            stamp = datetime(year, MONTHS[mon], int(day), int(hour), int(minute), int(second),
                             tzinfo=UTC).timestamp()  # fmt: skip
            seen = windows.setdefault(ip, [])
            seen.append(stamp)
            while seen[0] < stamp - WINDOW:
                del seen[0]
            if len(seen) >= COUNT:
                alerts.append((ip, stamp))
                seen.clear()
    return time.perf_counter() - started, alerts


def run_logwatchd(log: Path, times: int) -> tuple[float, float, list[tuple[str, float]]]:
    """Best wall time with alerts as text lines (one short line each, as SEC and swatchdog
    print theirs), best with ``--json`` (whole alert objects), and the alerts of the latter."""
    text, whole, alerts = float("inf"), float("inf"), []
    base = [*LOGWATCHD, "test", "-c", str(CONFIG), "--source", "auth"]
    for _ in range(times):
        measured = run_measured([*base, str(log)])
        if measured.returncode != 0:
            sys.exit(f"logwatchd failed:\n{measured.stderr[-2000:]}")
        text = min(text, measured.wall)
        measured = run_measured([*base, "--json", str(log)])
        whole = min(whole, measured.wall)
        records = [json.loads(line) for line in measured.stdout.splitlines()]
        alerts = [
            (r["key"]["ip"], datetime.fromisoformat(r["last_seen"]).timestamp())
            for r in records
            if r["kind"] == "alert"
        ]
    return text, whole, alerts


def run_tool(argv: list[str], times: int) -> float | None:
    if shutil.which(argv[0]) is None:
        return None
    best = float("inf")
    for _ in range(times):
        measured = run_measured(argv)
        if measured.returncode != 0:
            print(f"# {argv[0]} failed ({measured.returncode}): {measured.stderr[-300:]}")
            return None
        best = min(best, measured.wall)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    log = ensure_log(args.lines)
    work = WORK / "onerule"
    work.mkdir(parents=True, exist_ok=True)
    (work / "sec.conf").write_text(SEC_RULE)
    (work / "swatch.conf").write_text(SWATCH_RULE)
    print(f"# one threshold rule: {args.lines:,} lines from {log}")
    print(f"# machine: {machine()}")
    ours, as_json, alerts = run_logwatchd(log, args.repeat)
    sec = run_tool(["sec", f"--conf={work / 'sec.conf'}", f"--input={log}", "--notail",
                    "--fromstart", "--nointevents", "--log=/dev/null"], args.repeat)  # fmt: skip
    swatch = run_tool(["swatchdog", "-c", str(work / "swatch.conf"), f"--examine={log}",
                       f"--script-dir={work}"], args.repeat)  # fmt: skip
    plain, expected = min((reference(log) for _ in range(args.repeat)), key=lambda r: r[0])
    rows = [
        ["logwatchd test", f"{ours:.2f}", f"{args.lines / ours:,.0f}", "1"],
        ["logwatchd test --json", f"{as_json:.2f}", f"{args.lines / as_json:,.0f}",
         f"{as_json / ours:.2f}x"],
    ]  # fmt: skip
    for name, took in (("SEC (SingleWithThreshold)", sec), ("swatchdog (threshold)", swatch),
                       ("plain Python, in-process", plain)):  # fmt: skip
        if took is not None:
            rows.append([name, f"{took:.2f}", f"{args.lines / took:,.0f}", f"{took / ours:.2f}x"])
    print()
    print(table(["tool", "wall s", "lines/s", "logwatchd / tool"], rows))
    same = sorted(alerts) == sorted(expected)
    print(f"\nalerts: logwatchd {len(alerts):,}, plain Python {len(expected):,}: "
          f"{'the same' if same else 'DIFFERENT'}")  # fmt: skip
    if sec is not None:
        print(
            f"logwatchd / SEC: {sec / ours:.1f}x (target >= 4x); with --json {sec / as_json:.1f}x"
        )
    return 0 if same else 1


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    raise SystemExit(main())

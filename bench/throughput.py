"""Throughput of ``logwatchd test`` with the shipped packs against fail2ban-regex and grep.

All three read the same generated auth.log in the same run; each is timed from spawn to exit
(interpreter start-up and config loading included) and its peak RSS read from wait4().

    python bench/throughput.py                       # 1,000,000 lines, RFC 3164 stamps
    python bench/throughput.py --format rfc3339 --repeat 3
    python bench/throughput.py --lines 200000 --no-fail2ban
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    LOGWATCHD,
    PACKS_CONFIG,
    Measured,
    count_lines,
    ensure_log,
    machine,
    run_measured,
    table,
)

FAIL2BAN_FILTER = "/etc/fail2ban/filter.d/sshd.conf"
# what a shell one-liner would count as sshd authentication failures
GREP_REGEX = (
    r"sshd(-session)?\[[0-9]+\]: (error: )?(Failed [^ ]+ for|Invalid user|"
    r"maximum authentication attempts exceeded)"
)


@dataclass
class Result:
    tool: str
    runs: list[Measured]
    lines: int
    found: str  # what the tool reports having found, for plausibility
    in_loop_rate: float | None = None  # the tool's own lines/s, start-up excluded
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Measured:
        return min(self.runs, key=lambda m: m.wall)

    @property
    def rate(self) -> float:
        return self.lines / self.best.wall


def repeat(argv: list[str], times: int, env: dict[str, str] | None = None) -> list[Measured]:
    runs = []
    for _ in range(times):
        measured = run_measured(argv, env=env)
        if measured.returncode != 0:
            sys.exit(f"{argv[0]} failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
        runs.append(measured)
    return runs


# --- logwatchd ----------------------------------------------------------------------------


@dataclass
class Summary:
    read: int = 0
    parsed: int = 0
    unparsed: int = 0
    skipped: int = 0
    rate: float = 0.0
    rules: dict[str, tuple[int, int]] = field(default_factory=dict)  # rule -> (matches, alerts)


def parse_summary(stderr: str) -> Summary:
    """The summary ``logwatchd test`` writes to stderr (README: "Writing and testing a rule")."""
    summary = Summary()
    if found := re.search(
        r"Lines: (\d+) read, (\d+) parsed, (\d+) unparsed, (\d+) skipped", stderr
    ):
        summary.read, summary.parsed, summary.unparsed, summary.skipped = map(int, found.groups())
    if found := re.search(r"Rate: ([\d,.]+) lines/s", stderr):
        summary.rate = float(found.group(1).replace(",", ""))
    for row in re.finditer(r"^([a-z0-9][a-z0-9_-]*)\s+(\d+)\s+(\d+)\s*$", stderr, re.M):
        summary.rules[row.group(1)] = (int(row.group(2)), int(row.group(3)))
    return summary


def run_logwatchd(config: Path, log: Path, lines: int, times: int) -> tuple[Result, Summary]:
    argv = [*LOGWATCHD, "test", "-c", str(config), "--source", "auth", str(log)]
    runs = repeat(argv, times)
    summary = parse_summary(min(runs, key=lambda m: m.wall).stderr)
    alerts = sum(a for _, a in summary.rules.values())
    result = Result("logwatchd test", runs, lines, f"{alerts} alerts", summary.rate or None)
    return result, summary


def count_matches(config: Path, log: Path) -> Summary:
    """A separate, untimed run with --matches: how many lines each rule matched."""
    argv = [*LOGWATCHD, "test", "-c", str(config), "--source", "auth", "--matches", str(log)]
    measured = run_measured(argv)
    return parse_summary(measured.stderr)


# --- peers --------------------------------------------------------------------------------


def run_fail2ban(log: Path, lines: int, times: int, filt: str) -> Result | None:
    exe = shutil.which("fail2ban-regex")
    if exe is None:
        return None
    argv = [exe, "--print-no-missed", "--print-no-ignored", "-r", str(log), filt]
    runs = repeat(argv, times)
    out = min(runs, key=lambda m: m.wall).stdout
    found = re.search(r"Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out)
    took = re.search(r"\[processed in ([\d.]+) sec\]", out)
    matched = f"{found.group(3)} failures" if found else "?"
    own_rate = lines / float(took.group(1)) if took and float(took.group(1)) > 0 else None
    return Result("fail2ban-regex (sshd)", runs, lines, matched, own_rate)


def run_grep(log: Path, lines: int, times: int) -> Result | None:
    exe = shutil.which("grep")
    if exe is None:
        return None
    # LC_ALL=C: the byte-wise matcher, as an admin's fastest one-liner would run
    runs = repeat(
        [exe, "-cE", GREP_REGEX, str(log)], times, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
    )
    return Result("grep -cE (LC_ALL=C)", runs, lines, f"{runs[0].stdout.strip()} lines")


# --- report -------------------------------------------------------------------------------


def report(results: list[Result], ours: Result) -> str:
    rows = []
    for result in results:
        ratio = ours.rate / result.rate
        rows.append(
            [
                result.tool,
                f"{result.best.wall:.2f}",
                f"{result.rate:,.0f}",
                f"{result.in_loop_rate:,.0f}" if result.in_loop_rate else "-",
                f"{result.best.max_rss_mib:.0f}",
                result.found,
                "1" if result is ours else f"{ratio:.2f}x",
            ]
        )
    headers = ["tool", "wall s", "lines/s", "in-loop lines/s", "peak RSS MiB", "found",
               "logwatchd / tool"]  # fmt: skip
    return table(headers, rows)


def check_plausible(summary: Summary, lines: int, grep: Result | None) -> list[str]:
    """Problems with logwatchd's counts that point at a broken run rather than a slow one."""
    problems = []
    if summary.read != lines:
        problems.append(f"read {summary.read} lines of {lines}")
    if summary.unparsed:
        problems.append(f"{summary.unparsed} lines unparsed (every generated line is syslog)")
    failures = summary.rules.get("sshd-auth-failure", (0, 0))
    if failures[1] == 0:
        problems.append("sshd-auth-failure never fired on a log full of brute force")
    if grep is not None:
        grepped = int(grep.runs[0].stdout.strip() or 0)
        if failures[1] * 5 > grepped:
            problems.append(f"{failures[1]} alerts need more than the {grepped} failures grep saw")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("rfc3164", "rfc3339", "mix"), default="rfc3164")
    parser.add_argument("--file", type=Path, help="use this log instead of a generated one")
    parser.add_argument("--config", type=Path, default=PACKS_CONFIG)
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; the best counts")
    parser.add_argument("--no-fail2ban", action="store_true")
    parser.add_argument("--no-grep", action="store_true")
    parser.add_argument("--no-match-count", action="store_true", help="skip the --matches run")
    parser.add_argument("--fail2ban-filter", default=FAIL2BAN_FILTER)
    args = parser.parse_args(argv)

    log = args.file or ensure_log(args.lines, args.format)
    lines = args.lines if args.file is None else count_lines(log)
    print(f"# throughput: {lines:,} lines from {log} ({log.stat().st_size / 2**20:.0f} MiB)")
    print(f"# machine: {machine()}")

    ours, summary = run_logwatchd(args.config, log, lines, args.repeat)
    results = [ours]
    fail2ban = (
        None if args.no_fail2ban else run_fail2ban(log, lines, args.repeat, args.fail2ban_filter)
    )
    grep = None if args.no_grep else run_grep(log, lines, args.repeat)
    results += [r for r in (fail2ban, grep) if r is not None]
    print()
    print(report(results, ours))
    print()

    matched = Summary() if args.no_match_count else count_matches(args.config, log)
    print(
        f"logwatchd: {summary.read:,} read, {summary.skipped:,} rejected by the prefilter, "
        f"{summary.parsed:,} parsed, {summary.unparsed:,} unparsed"
    )
    rows = [
        [rule, f"{matched.rules.get(rule, (0, 0))[0]:,}" if matched.rules else "-", f"{alerts:,}"]
        for rule, (_, alerts) in sorted(summary.rules.items())
    ]
    print(table(["rule", "matches", "alerts"], rows))
    problems = check_plausible(summary, lines, grep)
    for problem in problems:
        print(f"IMPLAUSIBLE: {problem}")
    if fail2ban is not None:
        target = ours.rate / fail2ban.rate
        print(f"\nlogwatchd / fail2ban-regex: {target:.1f}x (target >= 40x)")
    print(f"logwatchd: {ours.rate:,.0f} lines/s end to end (target >= 1,500,000)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

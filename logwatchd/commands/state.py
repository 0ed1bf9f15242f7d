"""``logwatchd state check [--recover]``: is the state database sound; rebuild a damaged one."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from logwatchd import state_lock, state_recover
from logwatchd.config import load
from logwatchd.errors import StateError

EXIT_DAMAGED = 2


def state(args: argparse.Namespace) -> int:
    state_dir = os.path.abspath(args.state_dir or load(args.config).daemon.state_dir)
    path = os.path.join(state_dir, "state.db")
    if not os.path.exists(path):
        raise StateError(f"no state database at {path} (has the daemon run yet?)")
    # a recovery replaces the file: never under a running daemon
    with state_lock.acquire(state_dir) if args.recover else contextlib.nullcontext():
        found = state_recover.problems(path)
        if not found:
            print(f"state database {path}: OK")
            return 0
        print(f"state database {path} is damaged:", file=sys.stderr)
        for problem in found:
            print(f"  {problem}", file=sys.stderr)
        if not args.recover:
            print(
                "Stop the daemon and run `logwatchd state check --recover` to keep what is "
                "still readable, or move the file aside to start fresh.",
                file=sys.stderr,
            )
            return EXIT_DAMAGED
        _report(path, state_recover.recover(path))
    return 0


def _report(path: str, result: state_recover.Recovery) -> None:
    print(f"Recovered into a fresh {path}; the damaged file is now {result.aside}.")
    for table, kept in sorted(result.kept.items()):
        extra = []
        if result.dropped.get(table):
            extra.append(f"{result.dropped[table]} unusable dropped")
        if result.gaps.get(table):
            extra.append(f"{result.gaps[table]} damaged stretches skipped")
        print(f"  {table}: {kept} rows kept" + (f" ({', '.join(extra)})" if extra else ""))
    if result.unreadable:
        print(f"  nothing readable in: {', '.join(result.unreadable)}")
    print(
        "Offsets and rule state that were lost start over: lines may be read again or skipped "
        "(start_at applies to files without a saved offset)."
    )

"""``logwatchd actions``: the active actions (bans), and ``actions revert`` to end them now.

It reads and writes only the state database, so it works while the daemon runs (and needs
no lock of the daemon's): a revert moves the action's end to now, and the daemon undoes it
within a second, or when it next starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from typing import Any

from logwatchd.actions import active_actions, revert
from logwatchd.alerts import isoformat
from logwatchd.config import load
from logwatchd.errors import ConfigError
from logwatchd.state import StateStore

EXIT_NOT_FOUND = 1


def actions(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or load(args.config).daemon.state_dir
    path = os.path.join(state_dir, "state.db")
    if not os.path.exists(path):
        raise ConfigError(f"no state database at {path} (has the daemon run yet?)", None, "")
    store = StateStore(path)
    try:
        if args.actions_command == "revert":
            return _revert(store, args)
        rows = active_actions(store, time.time())
    finally:
        store.close()
    if args.json:
        print(json.dumps([_for_machines(row) for row in rows], indent=2))
    else:
        print(render(rows))
    return 0


def _revert(store: StateStore, args: argparse.Namespace) -> int:
    named = [bool(args.handler), bool(args.key)]
    if named != [not args.all, not args.all]:
        raise ConfigError("actions revert takes HANDLER KEY, or --all", None, "")
    now = time.time()
    if args.all:
        count = revert(store, now)
        print(f"reverted {count} active actions{_WHEN}")
        return 0
    keys = _matching(active_actions(store, now, handler=args.handler), args.key)
    if not keys:
        print(f"logwatchd: no active action of {args.handler} for {args.key}", file=sys.stderr)
        return EXIT_NOT_FOUND
    for key in keys:
        revert(store, now, handler=args.handler, key=key)
        print(f"reverted {args.handler} {key}{_WHEN}")
    return 0


_WHEN = ": the daemon undoes it within a second (or when it next starts)"


def _matching(rows: list[dict[str, Any]], wanted: str) -> list[str]:
    """The key itself, else the banned networks that hold the address given (a /64)."""
    keys = [str(row["key"]) for row in rows]
    if wanted in keys:
        return [wanted]
    try:
        address = ipaddress.ip_address(wanted)
    except ValueError:
        return []
    found = []
    for key in keys:
        try:
            if address in ipaddress.ip_network(key):
                found.append(key)
        except ValueError:
            continue
    return found


def _for_machines(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "since": isoformat(row["since"]),
        "until": isoformat(row["until"]),
        "remaining": round(max(0.0, row["until"] - time.time()), 3),
    }


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no active actions"
    table = [("HANDLER", "KEY", "SINCE", "UNTIL", "TIMES", "STATE")]
    for row in rows:
        state = row["state"] + (f" ({row['error']})" if row["error"] else "")
        table.append(
            (
                row["handler"],
                row["key"],
                isoformat(row["since"]),
                isoformat(row["until"]),
                str(row["times"]),
                state,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths, strict=True))
        + "  "
        + line[5]
        for line in table
    )

"""``logwatchd status``: what the state database says: offsets, lag, cursor, outbox."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from typing import Any

from logwatchd.config import load
from logwatchd.errors import ConfigError
from logwatchd.sources import checkpoint
from logwatchd.state import StateStore


def status(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or load(args.config).daemon.state_dir
    path = os.path.join(state_dir, "state.db")
    if not os.path.exists(path):
        raise ConfigError(f"no state database at {path} (has the daemon run yet?)", None, "")
    store = StateStore(path)
    try:
        report = store.status()
        report["failed"] = [
            {
                "alert_id": i.alert_id,
                "handler": i.handler,
                "rule": i.alert.get("rule"),
                "attempts": i.attempts,
                "error": i.last_error,
            }
            for i in store.failed()
        ]
    finally:
        store.close()
    if args.json:
        for entry in report["sources"].values():
            entry["state"] = checkpoint.readable(entry["state"])
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))
    return 0


def render(report: dict[str, Any]) -> str:
    out = ["Sources:"]
    for source, entry in report["sources"].items():
        updated = _when(entry["updated"])
        out.append(f"  {source} (committed {updated})")
        out.extend(f"    {line}" for line in _describe_source(entry["state"]))
    if not report["sources"]:
        out.append("  (nothing committed yet)")
    out.append("Outbox:")
    for handler, entry in sorted(report["outbox"].items()):
        age = entry["oldest_pending_age"]
        out.append(
            f"  {handler}: {entry['pending']} pending"
            + (f" (oldest {age:.0f}s)" if age is not None else "")
            + f", {entry['done']} delivered, {entry['failed']} failed"
        )
        if entry["last_error"]:
            out.append(f"    last error ({_when(entry['last_error_at'])}): {entry['last_error']}")
    if not report["outbox"]:
        out.append("  (empty)")
    for item in report["failed"]:
        out.append(
            f"  failed: {item['handler']} {item['rule']} {item['alert_id']}: {item['error']}"
        )
    return "\n".join(out)


def _describe_source(state: dict[str, Any]) -> list[str]:
    if "cursor" in state:
        return [f"journal cursor {state['cursor']}"]
    lines = []
    for record in checkpoint.decode(state, "status").files:
        path, offset = record.path, record.offset
        try:
            lag = max(0, os.stat(path).st_size - offset)
            lag_text = f"lag {lag} bytes"
        except OSError:
            lag_text = "file gone"
        lines.append(f"{path}: offset {offset}, {lag_text}")
    return lines or [json.dumps(state)[:200]]


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return dt.datetime.fromtimestamp(stamp).isoformat(timespec="seconds")

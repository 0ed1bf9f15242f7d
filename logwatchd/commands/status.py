"""``logwatchd status``: whether the daemon runs, and what it read, matched and delivered.

Everything comes from the state directory, read without its lock: the lock file says
whether a daemon runs (and its pid), the status row the daemon commits about once a second
gives its counts, and the outbox gives delivery. A stopped daemon's last counts are shown
as such.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from typing import Any

from logwatchd.config import load
from logwatchd.errors import ConfigError
from logwatchd.service.tally import lag_bytes
from logwatchd.sources.checkpoint import readable
from logwatchd.state_lock import holder
from logwatchd.state_view import StateView


def status(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or load(args.config).daemon.state_dir
    path = os.path.join(state_dir, "state.db")
    if not os.path.exists(path):
        raise ConfigError(f"no state database at {path} (has the daemon run yet?)", None, "")
    with StateView(path) as view:
        report = gather(view, holder(state_dir), time.time())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


def gather(view: StateView, pid: int | None, now: float) -> dict[str, Any]:
    row = view.daemon_status() or {}
    running = pid is not None
    current = running and row.get("pid") == pid  # the row was written by the running daemon
    report: dict[str, Any] = {
        "running": running,
        "pid": pid if running else row.get("pid"),
        "since": row.get("since") if current or not running else None,
        "version": row.get("version"),
        "config": row.get("config"),
        "counted_at": row.get("at"),
        "sources": _sources(view, row.get("sources", {}), running=running, now=now),
        "rules": row.get("rules", {}),
        "outbox": _handlers(view, row.get("handlers", {}), now),
        "actions": view.active_actions(),
        "failed": view.failed(),
    }
    return report


def _sources(
    view: StateView, counted: dict[str, Any], *, running: bool, now: float
) -> dict[str, Any]:
    sources: dict[str, Any] = {}
    kept = view.source_counts()  # counts the daemon keeps across restarts
    for source_id, (stored, committed) in view.sources().items():
        checkpoint = readable(stored)  # a file source's files as mappings
        entry = dict(counted.get(source_id, {}))
        entry.update(kept.get(source_id, {}))
        entry["state"], entry["updated"] = checkpoint, committed  # as committed, and when
        lag = lag_bytes(checkpoint)
        entry["lag_bytes"] = lag
        if not running:
            entry["lines_per_second"] = 0.0
            entry["lag_seconds"] = round(now - committed, 3) if lag else 0.0
        if "cursor" in checkpoint:
            entry["cursor"] = checkpoint["cursor"]
        if "unacked" in checkpoint:  # a nats source: messages read, not yet acknowledged
            entry["stream"] = checkpoint.get("stream")
            entry["unacked"] = len(checkpoint["unacked"])
        entry["files"] = [
            {
                "path": record.get("path"),
                "offset": int(record.get("offset", 0)),
                "lag_bytes": lag_bytes({"files": [record]}),
            }
            for record in checkpoint.get("files", [])
        ]
        sources[source_id] = entry
    return sources


def _handlers(view: StateView, counted: dict[str, Any], now: float) -> dict[str, Any]:
    depth, health, held = view.outbox(), view.handler_health(), view.held_back()
    handlers: dict[str, Any] = {}
    for name in sorted(set(counted) | set(depth) | set(health) | set(held)):
        queue = depth.get(name)
        state = health.get(name)
        held_back, held_since = held.get(name, (0, None))
        handlers[name] = {
            "pending": queue.pending if queue else 0,
            "oldest_seconds": round(now - queue.oldest, 3) if queue and queue.oldest else None,
            "failed": queue.failed if queue else 0,
            "delivered": counted.get(name, {}).get("delivered"),
            "last_success": state.last_success if state else None,
            "last_error": state.current_error if state else None,
            "last_error_at": state.last_error_at if state and state.current_error else None,
            "held_back": held_back,  # due, but held back by the handler's rate limit
            "held_back_since": held_since,
        }
    return handlers


# --- text ---------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    out = [_headline(report), "Sources:"]
    for source, entry in report["sources"].items():
        out.append(f"  {source}: {_source_counts(entry)}")
        for record in entry["files"]:
            lag = record["lag_bytes"]
            where = "file gone or replaced" if lag is None else f"lag {lag} bytes"
            out.append(f"    {record['path']}: offset {record['offset']}, {where}")
        if "cursor" in entry:
            out.append(f"    journal cursor {entry['cursor']}")
        if "unacked" in entry:
            waiting = f"{entry['unacked']} messages awaiting acknowledgement"
            out.append(f"    nats stream {entry['stream']}: {waiting}")
        stamps = entry.get("timestamp_unparsed")
        if stamps:
            out.append(
                f"    {stamps['count']} timestamps did not parse (read time used instead), "
                f"latest {stamps['sample']!r}"
            )
    if not report["sources"]:
        out.append("  (nothing committed yet)")
    out.extend(_rules(report["rules"]))
    out.append("Handlers:")
    for name, entry in report["outbox"].items():
        out.append(f"  {name}: {_handler_line(entry)}")
        if entry["held_back"]:
            since = _when(entry["held_back_since"])
            out.append(f"    {entry['held_back']} held back by its rate limit since {since}")
        if entry["last_error"]:
            out.append(f"    error ({_when(entry['last_error_at'])}): {entry['last_error']}")
    if report["actions"]:
        active = ", ".join(f"{handler} {n}" for handler, n in report["actions"].items())
        out.append(f"Actions in force: {active}")
    for item in report["failed"]:
        out.append(
            f"  failed: {item['handler']} {item['rule']} {item['alert_id']}: {item['error']}"
        )
    return "\n".join(out)


def _headline(report: dict[str, Any]) -> str:
    version = f"logwatchd {report['version']}" if report["version"] else "logwatchd"
    if report["running"]:
        since = f" since {_when(report['since'])}" if report["since"] else ""
        config = f", config {report['config']}" if report["config"] else ""
        return f"{version} is running: pid {report['pid']}{since}{config}"
    if report["counted_at"] is None:
        return "logwatchd is not running"
    return (
        f"logwatchd is not running (last run: pid {report['pid']}, "
        f"{_when(report['since'])} to {_when(report['counted_at'])}; counts are of that run)"
    )


def _source_counts(entry: dict[str, Any]) -> str:
    if "lines" not in entry:
        return "no counts yet"
    text = (
        f"{entry['lines']} lines ({entry['unparsed']} unparsed, {entry['skipped']} passed over "
        f"by the scan), {entry['lines_per_second']:.1f} lines/s over the last minute"
    )
    if entry["lag_bytes"] is not None or entry.get("lag_seconds"):
        text += f", lag {entry['lag_bytes'] or 0} bytes / {entry.get('lag_seconds', 0):g} s"
    return text


def _rules(rules: dict[str, Any]) -> list[str]:
    if not rules:
        return []
    width = max(len(rule) for rule in rules) + 2
    out = [f"Rules:{'':<{width - 4}}{'matches':>9}{'alerts':>9}{'keys':>8}"]
    for rule, entry in sorted(rules.items()):
        out.append(f"  {rule:<{width}}{entry['matches']:>9}{entry['alerts']:>9}{entry['keys']:>8}")
    return out


def _handler_line(entry: dict[str, Any]) -> str:
    oldest = entry["oldest_seconds"]
    text = f"{entry['pending']} pending" + (f" (oldest {oldest:.0f}s)" if oldest else "")
    text += f", {entry['failed']} failed"
    if entry["delivered"] is not None:
        text += f", {entry['delivered']} delivered by this run"
    return text + f", last success {_when(entry['last_success'])}"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return dt.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")

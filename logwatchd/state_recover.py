"""Checking the state database, and rebuilding a damaged one from what SQLite can still read.

``problems`` runs SQLite's integrity check on the file as it is (read-only). ``recover``
copies every readable row of every table into a fresh database with the current schema,
moves the damaged file (and its -wal and -shm) aside under a dated name, and puts the fresh
one in its place. A damaged page ends a plain table scan, so rows are read in rowid order and
the scan resumes at the next rowid it can reach past the damage (found by probing forward,
doubling the step, then narrowing it down). Rows whose JSON no longer parses are dropped too:
the daemon would choke on them later.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

from logwatchd.errors import StateError
from logwatchd.state import StateStore

__all__ = ["Recovery", "problems", "recover"]

MIN_ROWID = -(2**63)
MAX_ROWID = 2**63 - 1
JSON_COLUMNS = {
    ("sources", "state"), ("rule_keys", "state"), ("outbox", "alert"), ("actions", "alert"),
}  # fmt: skip
SIDE_FILES = ("-wal", "-shm")


@dataclass
class Recovery:
    aside: str  # where the damaged file went
    kept: dict[str, int] = field(default_factory=dict)  # rows copied, per table
    dropped: dict[str, int] = field(default_factory=dict)  # rows read but unusable
    gaps: dict[str, int] = field(default_factory=dict)  # damaged stretches skipped
    unreadable: list[str] = field(default_factory=list)  # tables nothing could be read from


def _read_only(path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None)


def problems(path: str, limit: int = 20) -> list[str]:
    """What SQLite's integrity check finds wrong in ``path``; [] when the file is sound."""
    try:
        db = _read_only(path)
        try:
            found = [str(row[0]) for row in db.execute(f"PRAGMA integrity_check({int(limit)})")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if found == ["ok"] else found


def recover(path: str) -> Recovery:
    """Replace the damaged database at ``path`` with the rows still readable in it.

    The caller holds the state directory's lock (no daemon writes meanwhile).
    """
    if not os.path.exists(path):
        raise StateError(f"no state database at {path}")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    fresh = f"{path}.recovering"
    for stale in (fresh, *(fresh + suffix for suffix in SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    StateStore(fresh).close()  # the current schema, created 0600
    result = Recovery(aside=f"{path}.damaged-{stamp}")
    _copy_all(path, fresh, result)
    owner = os.stat(path)
    with contextlib.suppress(PermissionError):  # root recovering the daemon user's file
        os.chown(fresh, owner.st_uid, owner.st_gid)
    for suffix in ("", *SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.rename(path + suffix, result.aside + suffix)
    os.rename(fresh, path)
    _sync_dir(os.path.dirname(os.path.abspath(path)))
    return result


def _copy_all(path: str, fresh: str, result: Recovery) -> None:
    old = _read_only(path)
    new = sqlite3.connect(fresh, isolation_level=None)
    try:
        wanted = _tables(new) or {}
        found = _tables(old)
        if found is None:
            result.unreadable = sorted(wanted)
            return
        new.execute("BEGIN")
        for table in sorted(wanted):
            columns = [c for c in wanted[table] if c in found.get(table, [])]
            if not columns:
                continue
            _copy_table(old, new, table, columns, result)
            if not result.kept.get(table) and result.gaps.get(table):
                result.unreadable.append(table)
        new.execute("COMMIT")
        # everything into the main file: only it is renamed into place
        new.execute("PRAGMA journal_mode=DELETE")
    finally:
        old.close()
        new.close()


def _tables(db: sqlite3.Connection) -> dict[str, list[str]] | None:
    """Table name -> column names; None when even the schema cannot be read."""
    try:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            name: [row[1] for row in db.execute(f'PRAGMA table_info("{name}")')] for name in names
        }
    except sqlite3.DatabaseError:
        return None


def _copy_table(
    old: sqlite3.Connection,
    new: sqlite3.Connection,
    table: str,
    columns: list[str],
    result: Recovery,
) -> None:
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    checked = [i for i, c in enumerate(columns) if (table, c) in JSON_COLUMNS]
    kept = dropped = 0
    for row in _readable_rows(old, table, names, result):
        if not all(_is_json(row[i]) for i in checked):
            dropped += 1
            continue
        try:
            new.execute(insert, row)
        except sqlite3.IntegrityError:  # a NULL where the schema forbids one
            dropped += 1
            continue
        kept += 1
    result.kept[table] = kept
    if dropped:
        result.dropped[table] = dropped


def _is_json(value: object) -> bool:
    try:
        json.loads(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _readable_rows(
    db: sqlite3.Connection, table: str, names: str, result: Recovery
) -> Iterator[tuple[object, ...]]:
    """Rows in rowid order; past a damaged stretch, from the next rowid that can be reached."""
    sql = f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ? ORDER BY rowid'
    after, resumed = MIN_ROWID, None
    while True:
        progressed = False
        try:
            for row in db.execute(sql, (after,)):
                progressed = True
                after = row[0]
                yield tuple(row[1:])
            return
        except sqlite3.DatabaseError:
            result.gaps[table] = result.gaps.get(table, 0) + 1
            if not progressed and resumed is not None:
                after = resumed  # the row we resumed at is itself unreadable: skip it
            start = _next_reachable(db, table, after + 1)
            if start is None:
                return
            after, resumed = start - 1, start


def _next_reachable(db: sqlite3.Connection, table: str, low: int) -> int | None:
    """The first rowid >= ``low`` that a lookup reaches, or None when there is none."""
    step = 0
    while True:
        try:
            found = _first_rowid(db, table, min(low + step, MAX_ROWID))
            break
        except sqlite3.DatabaseError:
            if low + step >= MAX_ROWID:
                return None
            step = max(1, step * 2)
    if step <= 1:
        return found
    # the damage ends somewhere in (low + step/2, low + step]: narrow it down
    bad, good = low + step // 2, low + step
    while good - bad > 1:
        middle = (bad + good) // 2
        try:
            found = _first_rowid(db, table, middle)
            good = middle
        except sqlite3.DatabaseError:
            bad = middle
    return found


def _first_rowid(db: sqlite3.Connection, table: str, start: int) -> int | None:
    row = db.execute(
        f'SELECT rowid FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1', (start,)
    ).fetchone()
    return None if row is None else int(row[0])


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The SQLite state store: source checkpoints, rule state and the alert outbox.

Everything the daemon must not lose or repeat lives in one database file, and the three kinds
of state change together in one transaction (README: "Guarantees, and where they stop"): the
offsets of the lines read, the rule windows they updated and the alerts they produced. Each
thread opens its own ``StateStore`` on the same path; WAL mode lets the delivery workers mark
rows while the main loop commits.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from logwatchd.alerts import Alert, jsonable
from logwatchd.errors import StateError
from logwatchd.own_files import check_existing, open_own
from logwatchd.state_health import damaged, is_damaged

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 30.0  # seconds a writer waits for the database's write lock
BUSY_RETRY = 0.0002  # seconds before the first retry to take it (then 2x, 3x ... 10x)
_BUSY_WAIT = f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}"
DONE_RETENTION = 7 * 86400.0  # delivered ids are remembered this long, so a replay is not re-sent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rule_keys (
    rule TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (rule, key));
CREATE TABLE IF NOT EXISTS outbox (
    alert_id TEXT NOT NULL, handler TEXT NOT NULL, rule TEXT NOT NULL, alert TEXT NOT NULL,
    created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', last_error TEXT, updated REAL NOT NULL,
    PRIMARY KEY (alert_id, handler));
CREATE TABLE IF NOT EXISTS source_counts (
    source TEXT NOT NULL, name TEXT NOT NULL, count INTEGER NOT NULL, sample TEXT,
    updated REAL NOT NULL, PRIMARY KEY (source, name));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (handler, status, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, updated);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (handler, status, created);
CREATE TABLE IF NOT EXISTS actions (
    handler TEXT NOT NULL, key TEXT NOT NULL, alert_id TEXT NOT NULL, alert TEXT NOT NULL,
    since REAL NOT NULL, until REAL NOT NULL, duration REAL NOT NULL, times INTEGER NOT NULL,
    state TEXT NOT NULL, forget REAL NOT NULL, PRIMARY KEY (handler, key));
CREATE INDEX IF NOT EXISTS actions_due ON actions (state, until);
CREATE INDEX IF NOT EXISTS actions_forget ON actions (state, forget);
CREATE TABLE IF NOT EXISTS alert_history (
    alert_id TEXT PRIMARY KEY, rule TEXT NOT NULL, source TEXT NOT NULL, severity TEXT NOT NULL,
    key TEXT NOT NULL, count INTEGER NOT NULL, suppressed INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL, fired_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS alert_history_fired ON alert_history (fired_at);
CREATE TABLE IF NOT EXISTS delivery_history (
    alert_id TEXT NOT NULL, handler TEXT NOT NULL, rule TEXT NOT NULL, result TEXT NOT NULL,
    attempts INTEGER NOT NULL, queued REAL NOT NULL, finished REAL NOT NULL, seconds REAL,
    PRIMARY KEY (alert_id, handler));
CREATE INDEX IF NOT EXISTS delivery_history_finished ON delivery_history (finished);
CREATE TABLE IF NOT EXISTS handler_status (
    handler TEXT PRIMARY KEY, last_success REAL, last_error TEXT, last_error_at REAL);
CREATE TABLE IF NOT EXISTS activity (
    kind TEXT NOT NULL, bucket INTEGER NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (kind, bucket, name));
"""
# The history tables (alerts, deliveries, lines and matches per 10 minutes) are what
# ``status`` and ``report`` read; they are pruned after ``daemon.history``, apart from the
# outbox, whose delivered rows only serve to recognise a replayed alert.
HISTORY_TABLES = {
    "alert_history": "fired_at",
    "delivery_history": "finished",
    "activity": "bucket",
}
PRUNE_CHUNK = 5000  # rows per transaction, so delivery workers get the write lock in between
SUCCESS_EVERY = 10.0  # seconds: how fresh a handler's stored "last success" is kept

CLAIM_SQL = (
    "SELECT alert_id, handler, alert, attempts, created, last_error FROM outbox "
    "INDEXED BY outbox_order "
    "WHERE handler = ? AND status = 'pending' AND next_attempt <= ? "
    "ORDER BY created, rowid LIMIT ?"
)


class RuleChanges(Protocol):
    """What ``rules.Engine.drain_changes()`` returns (kept structural to avoid an upward import)."""

    @property
    def digests(self) -> Mapping[str, str]: ...  # read-only, so a dict[str, str] field fits

    upserts: list[tuple[str, str, str]]  # (rule, key_json, state_json)
    deletes: list[tuple[str, str]]  # (rule, key_json)


class ActionRecorder(Protocol):
    """Queues the rows of a handler that acts and undoes (``actions.Recorder``), inside the
    commit's transaction, so an action is recorded together with its outbox row."""

    def queue(self, db: sqlite3.Connection, alert: Alert, now: float) -> int: ...


@dataclass(frozen=True, slots=True)
class OutboxItem:
    alert_id: str
    handler: str
    alert: dict[str, Any]
    attempts: int
    created: float
    last_error: str | None = None


class StateStore:
    def __init__(self, path: str) -> None:
        self.path = path
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, mode=0o750, exist_ok=True)
        _prepare_file(path)
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        self._success_written: dict[str, float] = {}  # per handler, when last_success was
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if is_damaged(exc):
                raise damaged(path, str(exc)) from None
            raise

    def _open(self) -> None:
        self._use_wal()
        # NORMAL under WAL: a commit survives a crash or kill -9 of the daemon (it is in the
        # kernel's page cache); only a power loss can roll back the last commits, which then
        # replays lines (same alert ids) rather than losing them. FULL fsynced every commit
        # and capped alerts at about 200/s.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self.transaction():
            for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _use_wal(self) -> None:
        """Switch to WAL once; later connections only read the mode.

        Setting the mode needs a lock that SQLite does not wait for (no busy handler), so a
        second connection opened while another one writes failed with "database is locked".
        """
        deadline = time.monotonic() + 30.0
        while True:
            try:
                mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() == "wal":
                    return
                self._db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @classmethod
    def in_dir(cls, state_dir: str) -> StateStore:
        return cls(os.path.join(state_dir, "state.db"))

    def close(self) -> None:
        self._db.close()

    # For modules that keep their own tables in this database (actions.py).
    @property
    def db(self) -> sqlite3.Connection:
        return self._db

    def transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # --- sources ----------------------------------------------------------------------

    def is_new(self) -> bool:
        """True until the first commit of any source: ``start_at`` applies only then."""
        row = self._db.execute("SELECT count(*) FROM sources").fetchone()
        return bool(row[0] == 0)

    def load_source(self, source_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT state FROM sources WHERE source = ?", (source_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def add_source_count(self, source_id: str, name: str, delta: int, sample: str) -> None:
        """Add to a per-source counter kept across restarts (e.g. timestamps that did not
        parse), with the latest example, for ``status``."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO source_counts (source, name, count, sample, updated) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, name) DO UPDATE SET "
                "count = count + excluded.count, sample = excluded.sample, "
                "updated = excluded.updated",
                (source_id, name, delta, sample, time.time()),
            )

    # --- rules ------------------------------------------------------------------------

    def load_rule_state(self) -> list[tuple[str, str, str, str]]:
        """Rows of (rule, digest, key_json, state_json) for ``Engine.load_state``."""
        cursor = self._db.execute("SELECT rule, digest, key, state FROM rule_keys")
        return [tuple(row) for row in cursor]

    def prune_rules(self, digests: Mapping[str, str]) -> None:
        """Drop state of rules that are gone or changed shape."""
        with self.transaction():
            rows = self._db.execute("SELECT DISTINCT rule, digest FROM rule_keys").fetchall()
            for rule, digest in rows:
                if digests.get(rule) != digest:
                    self._db.execute(
                        "DELETE FROM rule_keys WHERE rule = ? AND digest = ?", (rule, digest)
                    )

    # --- the one commit ---------------------------------------------------------------

    def commit(
        self,
        sources: Mapping[str, dict[str, Any]] | None = None,
        rules: RuleChanges | None = None,
        alerts: Iterable[Alert] = (),
        acting: Mapping[str, ActionRecorder] | None = None,
        *,
        status: str | None = None,
        activity: Iterable[tuple[str, int, str, int]] = (),
    ) -> int:
        """Commit checkpoints, rule state and new outbox rows atomically.

        Returns how many outbox rows were queued; an alert id already queued (or delivered)
        for a handler is ignored, which is what makes a replay after a crash harmless.
        ``status`` (the daemon's counters as JSON) and ``activity`` ((kind, bucket, name,
        count) to add) ride along, for ``status`` and ``report``.
        """
        now = time.time()
        queued = 0
        with self.transaction():
            for source_id, state in (sources or {}).items():
                self._db.execute(
                    "INSERT INTO sources (source, state, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (source) DO UPDATE SET state = excluded.state, "
                    "updated = excluded.updated",
                    (source_id, json.dumps(state, separators=(",", ":")), now),
                )
            if rules is not None:
                self._write_rules(rules)
            for alert in alerts:
                queued += self._queue(alert, now, acting or {})
            if status is not None:
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('status', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (status,),
                )
            self._db.executemany(
                "INSERT INTO activity (kind, bucket, name, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, bucket, name) DO UPDATE SET value = value + excluded.value",
                activity,
            )
        return queued

    def _write_rules(self, rules: RuleChanges) -> None:
        self._db.executemany(
            "INSERT INTO rule_keys (rule, key, digest, state) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (rule, key) DO UPDATE SET digest = excluded.digest, "
            "state = excluded.state",
            [(rule, key, rules.digests.get(rule, ""), state) for rule, key, state in rules.upserts],
        )
        self._db.executemany("DELETE FROM rule_keys WHERE rule = ? AND key = ?", rules.deletes)

    def _queue(self, alert: Alert, now: float, acting: Mapping[str, ActionRecorder]) -> int:
        payload = json.dumps(alert.to_dict(), separators=(",", ":"))
        queued = 0
        for handler in alert.handlers:
            if handler in acting:
                queued += acting[handler].queue(self._db, alert, now)
            else:
                queued += insert_outbox(self._db, alert.id, handler, alert.rule, payload, now=now)
        self._db.execute(
            "INSERT OR IGNORE INTO alert_history (alert_id, rule, source, severity, key, count, "
            "suppressed, first_seen, last_seen, fired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert.id, alert.rule, alert.source, alert.severity,
                _key_json(alert), alert.count,
                alert.suppressed, alert.first_seen, alert.last_seen, alert.fired_at,
            ),
        )  # fmt: skip
        return queued

    # --- the outbox, for delivery workers ---------------------------------------------

    def claim_due(self, handler: str, now: float, limit: int = 100) -> list[OutboxItem]:
        """Pending rows for ``handler`` whose next attempt is due, oldest first.

        Walks the rows in age order and stops at ``limit``: with a backlog of 150,000 the
        planner's own choice (the due index, then a sort of all of them) took 33 ms a claim.
        """
        cursor = self._db.execute(CLAIM_SQL, (handler, now, limit))
        return [
            OutboxItem(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5]) for row in cursor
        ]

    def next_due(self, handler: str) -> float | None:
        row = self._db.execute(
            "SELECT min(next_attempt) FROM outbox WHERE handler = ? AND status = 'pending'",
            (handler,),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def mark_done_many(self, items: Iterable[OutboxItem], seconds: float | None = None) -> None:
        """A whole digest in one transaction (one fsync instead of one per alert).

        ``seconds``: how long the send took (kept in the delivery history for ``report``)."""
        now = time.time()
        items = list(items)
        with self.transaction():
            self._db.executemany(
                "UPDATE outbox SET status = 'done', attempts = attempts + 1, updated = ? "
                "WHERE alert_id = ? AND handler = ?",
                [(now, item.alert_id, item.handler) for item in items],
            )
            self._outcome(items, "done", None, now, seconds)

    def mark_retry(
        self, item: OutboxItem, next_attempt: float, error: str, seconds: float | None = None
    ) -> None:
        """A row skipped while its send was under way (a ban superseded by its extension)
        stays skipped: retrying it would undo what superseded it."""
        self._set(
            item,
            "pending",
            item.attempts + 1,
            next_attempt,
            error,
            seconds=seconds,
            unless_skipped=True,
        )

    def mark_failed(self, item: OutboxItem, error: str, seconds: float | None = None) -> None:
        self._set(item, "failed", item.attempts + 1, None, error, seconds=seconds)

    def _set(
        self,
        item: OutboxItem,
        status: str,
        attempts: int,
        next_attempt: float | None,
        error: str | None,
        *,
        seconds: float | None = None,
        unless_skipped: bool = False,
    ) -> None:
        now = time.time()
        with self.transaction():
            self._db.execute(
                "UPDATE outbox SET status = ?, attempts = ?, "
                "next_attempt = coalesce(?, next_attempt), last_error = coalesce(?, last_error), "
                "updated = ? WHERE alert_id = ? AND handler = ?"
                + (" AND status != 'skipped'" if unless_skipped else ""),
                (status, attempts, next_attempt, error, now, item.alert_id, item.handler),
            )
            self._outcome([item], status, error, now, seconds)

    def _outcome(
        self,
        items: list[OutboxItem],
        status: str,
        error: str | None,
        now: float,
        seconds: float | None,
    ) -> None:
        """The handler's last success and last error, and the delivery history."""
        for handler in {item.handler for item in items}:
            if error is None:
                # a success is written at once after an error (it clears it), else only
                # every SUCCESS_EVERY seconds: "last success" need not cost a write each
                if now - self._success_written.get(handler, -math.inf) < SUCCESS_EVERY:
                    continue
                self._success_written[handler] = now
                self._db.execute(
                    "INSERT INTO handler_status (handler, last_success) VALUES (?, ?) "
                    "ON CONFLICT (handler) DO UPDATE SET last_success = excluded.last_success",
                    (handler, now),
                )
            else:
                self._success_written.pop(handler, None)
                self._db.execute(
                    "INSERT INTO handler_status (handler, last_error, last_error_at) "
                    "VALUES (?, ?, ?) ON CONFLICT (handler) DO UPDATE SET "
                    "last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                    (handler, error, now),
                )
        if status not in ("done", "failed"):
            return
        result = "delivered" if status == "done" else "failed"
        self._db.executemany(
            "INSERT OR REPLACE INTO delivery_history (alert_id, handler, rule, result, "
            "attempts, queued, finished, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    item.alert_id, item.handler, str(item.alert.get("rule", "")), result,
                    item.attempts + 1, item.created, now, seconds,
                )
                for item in items
            ],
        )  # fmt: skip

    def due_count(self, handler: str, now: float) -> int:
        """Pending rows of ``handler`` that are due: what a rate limit holds back right now."""
        row = self._db.execute(
            "SELECT count(*) FROM outbox WHERE handler = ? AND status = 'pending' "
            "AND next_attempt <= ?",
            (handler, now),
        ).fetchone()
        return int(row[0])

    def record_held_back(self, handler: str, held: int, since: float | None) -> None:
        """How many alerts ``handler``'s rate limit holds back (0: none), for ``status``."""
        key = f"held_back.{handler}"
        with self.transaction():
            if held:
                value = json.dumps({"held": held, "since": since})
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            else:
                self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def prune_delivered(self, older_than: float = DONE_RETENTION) -> int:
        with self.transaction():
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE status IN ('done', 'skipped') AND updated < ?",
                (time.time() - older_than,),
            )
        return cursor.rowcount

    def prune_history(self, older_than: float) -> int:
        """Drop history rows older than ``older_than`` seconds, a chunk per transaction."""
        cutoff = time.time() - older_than
        removed = 0
        for table, column in HISTORY_TABLES.items():
            while True:
                with self.transaction():
                    cursor = self._db.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                        f"WHERE {column} < ? LIMIT ?)",
                        (cutoff, PRUNE_CHUNK),
                    )
                removed += cursor.rowcount
                if cursor.rowcount < PRUNE_CHUNK:
                    break
        return removed

    # --- status -----------------------------------------------------------------------

    def pending_count(self) -> int:
        """Outbox depth, cheap enough for the daemon's periodic STATUS line."""
        row = self._db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
        return int(row[0])

    def status(self) -> dict[str, Any]:
        now = time.time()
        sources = {
            source: {"state": json.loads(state), "updated": updated}
            for source, state, updated in self._db.execute(
                "SELECT source, state, updated FROM sources ORDER BY source"
            )
        }
        for source, name, count, sample, updated in self._db.execute(
            "SELECT source, name, count, sample, updated FROM source_counts"
        ):
            entry = sources.setdefault(source, {"state": {}, "updated": None})
            entry[name] = {"count": count, "sample": sample, "updated": updated}
        handlers: dict[str, dict[str, Any]] = {}
        for handler, status, count, oldest in self._db.execute(
            "SELECT handler, status, count(*), min(created) FROM outbox GROUP BY handler, status"
        ):
            entry = handlers.setdefault(handler, _empty_handler_status())
            entry[status] = count
            if status == "pending":
                entry["oldest_pending_age"] = round(now - oldest, 3)
        for handler, error, updated in self._db.execute(
            "SELECT handler, last_error, max(updated) FROM outbox "
            "WHERE last_error IS NOT NULL AND status != 'skipped' GROUP BY handler"
        ):
            entry = handlers.setdefault(handler, _empty_handler_status())
            entry["last_error"] = error
            entry["last_error_at"] = updated
        for key, value in self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, 10) = 'held_back.'"
        ):
            held = json.loads(value)
            entry = handlers.setdefault(key.partition(".")[2], _empty_handler_status())
            entry["held_back"] = held["held"]
            entry["held_back_since"] = held["since"]
        return {"sources": sources, "outbox": handlers}

    def problems(self, *, thorough: bool = False, limit: int = 20) -> list[str]:
        """What SQLite's own check finds wrong in the file; [] when it is sound. The quick
        check reads every page (0.2 s for 165 MB); ``thorough`` also checks the indexes."""
        pragma = "integrity_check" if thorough else "quick_check"
        found = [str(row[0]) for row in self._db.execute(f"PRAGMA {pragma}({int(limit)})")]
        return [] if found == ["ok"] else found

    def failed(self, limit: int = 20) -> list[OutboxItem]:
        cursor = self._db.execute(
            "SELECT alert_id, handler, alert, attempts, created, last_error FROM outbox "
            "WHERE status = 'failed' ORDER BY updated DESC LIMIT ?",
            (limit,),
        )
        return [
            OutboxItem(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5]) for row in cursor
        ]


def insert_outbox(
    db: sqlite3.Connection,
    alert_id: str,
    handler: str,
    rule: str,
    payload: str,
    *,
    now: float,
    status: str = "pending",
    error: str | None = None,
) -> int:
    """One outbox row, unless (alert_id, handler) is already there: returns 1 or 0.

    ``status='skipped'`` records an alert a handler decided not to act on (with the reason
    as ``last_error``): it is never claimed, and a replay of the alert is still recognised.
    """
    cursor = db.execute(
        "INSERT OR IGNORE INTO outbox (alert_id, handler, rule, alert, created, next_attempt, "
        "status, last_error, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (alert_id, handler, rule, payload, now, now, status, error, now),
    )
    return cursor.rowcount


def _key_json(alert: Alert) -> str:
    return json.dumps(jsonable(alert.key), separators=(",", ":"), sort_keys=True)


def _prepare_file(path: str) -> None:
    """Create the database 0600 whatever the umask (SQLite gives its -wal and -shm the same
    mode), and refuse a symlink at any of its paths: SQLite itself would follow one."""
    try:
        for name in (path, *(path + suffix for suffix in ("-wal", "-shm", "-journal"))):
            check_existing(name)
        if not os.path.lexists(path):
            with contextlib.suppress(FileExistsError):
                os.close(open_own(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise StateError(f"state database {exc.filename or path}: {exc.strerror}") from None


def _empty_handler_status() -> dict[str, Any]:
    return {
        "pending": 0,
        "done": 0,
        "failed": 0,
        "skipped": 0,
        "oldest_pending_age": None,
        "last_error": None,
        "last_error_at": None,
        "held_back": 0,  # alerts due but held back by the handler's rate limit
        "held_back_since": None,
    }


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        # SQLite's own busy handler sleeps 1, 2, 5, 10 ms... between tries, so a writer that
        # found the lock held for 1.5 ms waited 3, and the outbox worker's p99 wait for the
        # main loop's commit was 8 ms (34 at worst) at 1,000 alerts/s. Try again after 0.2,
        # 0.4, 0.6 ... ms (at most 2 ms): commits hold the lock for about a millisecond.
        deadline = time.monotonic() + BUSY_TIMEOUT
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            tries = 0
            while True:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise
                tries += 1
                time.sleep(min(BUSY_RETRY * tries, 10 * BUSY_RETRY))
        finally:
            self._db.execute(_BUSY_WAIT)  # back to what connect(timeout=) set

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()  # a COMMIT the disk refused may leave it open: start clean
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite rolls back by itself after some errors (a full disk, an I/O error), and a
        # second ROLLBACK would raise over the error that matters
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text

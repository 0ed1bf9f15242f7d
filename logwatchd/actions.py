"""Actions that undo themselves: their bookkeeping in the state database.

A handler that acts on a key and undoes it later (the ``nftables`` handler, a ``command``
with ``undo``) keeps one row per (handler, key) in the ``actions`` table:

- At commit, in the transaction that writes the outbox row (``Recorder.queue``): a key with
  no active action gets one (``since``, ``until``, ``duration``), and the outbox row carries
  it to the handler as ``alert.action``. A key under an active action is not acted on
  again: its alert is recorded as a ``skipped`` outbox row. If the alert's first line came
  after the action began, the key offended again while acted on: that counts (``times``),
  and with ``increase`` the action is extended instead (``Recorder._again``).
- Once ``until`` has passed (``ActionBook.tick`` from the daemon's loop, and at start for
  what fell due while the daemon was down) the undo becomes an outbox row of its own,
  ``<alert id>/undo``: delivered, retried and never repeated like any other.
- An ended action is remembered until ``forget`` (its end plus ``increase.max``), so a key
  that offends again within that time gets a longer one; a reverted action is forgotten.

All of it goes through the database, so ``logwatchd actions revert`` works from another
process while the daemon runs: it moves ``until`` to now, and the daemon's next tick (within
a second) queues the undo.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from logwatchd.alerts import Alert, isoformat
from logwatchd.config.handler_settings import Increase
from logwatchd.errors import ActionRefused
from logwatchd.state import StateStore, insert_outbox

log = structlog.get_logger("logwatchd.actions")

UNDO_SUFFIX = "/undo"  # the undo's outbox row: <id of the alert that started the action>/undo
TICK_INTERVAL = 0.25  # seconds between checks for due undos while the daemon is busy
FORGET_INTERVAL = 60.0


class Acting(Protocol):
    """What a handler that acts and undoes offers the bookkeeping."""

    name: str
    undoes: bool  # False for a command handler without ``undo``
    duration: float  # how long an action lasts before its undo
    increase: Increase | None

    def action_key(self, alert: dict[str, Any]) -> str:
        """The key acted on (an address, a user name); raises ActionRefused."""
        ...


class Restoring(Protocol):
    def restore(self, active: list[dict[str, Any]]) -> None:
        """Make the outside world hold exactly these active actions (after a reboot)."""


class Checking(Protocol):
    """A handler whose actions can vanish behind its back (``nft flush ruleset``)."""

    check_interval: float  # seconds between checks

    def intact(self) -> bool:
        """Is what holds the actions still there? Raises DeliveryError if it cannot tell."""
        ...

    def restore(self, active: list[dict[str, Any]]) -> None: ...


def acting_handlers(handlers: Mapping[str, object]) -> dict[str, Acting]:
    return {
        name: handler  # type: ignore[misc]
        for name, handler in handlers.items()
        if getattr(handler, "undoes", False)
    }


def action_duration(base: float, increase: Increase | None, times: int) -> float:
    """The ``times``-th action on a remembered key lasts base x factor^(times-1), capped."""
    if increase is None or times <= 1:
        return base
    try:
        return min(increase.max, base * increase.factor ** (times - 1))
    except OverflowError:
        return increase.max


class Recorder:
    """Records one acting handler's alerts at commit (``StateStore.commit(acting=...)``)."""

    def __init__(self, handler: Acting) -> None:
        self.handler = handler
        self.name = handler.name

    def queue(self, db: sqlite3.Connection, alert: Alert, now: float) -> int:
        """Outbox row and action for one alert; returns 1 when a delivery was queued."""
        payload = alert.to_dict()
        try:
            key = self.handler.action_key(payload)
        except ActionRefused as refused:
            self._skip(db, alert, payload, now, str(refused), refused=refused)
            return 0
        except Exception as exc:
            # a bug must not fail the commit that also holds the offsets and other alerts
            log.exception("action key failed", handler=self.name, alert_id=alert.id)
            self._skip(db, alert, payload, now, f"no key: {type(exc).__name__}: {exc}")
            return 0
        row = db.execute(
            "SELECT alert_id, until, times, state, forget, since, duration FROM actions "
            "WHERE handler = ? AND key = ?",
            (self.name, key),
        ).fetchone()
        if row is not None and row[3] == "active" and row[1] > now:
            return self._again(db, alert, payload, key, row=row, now=now)
        remembered = row is not None and row[4] > now
        times = row[2] + 1 if remembered else 1
        duration = action_duration(self.handler.duration, self.handler.increase, times)
        until = now + duration
        payload["action"] = _doing(key, since=now, until=until, duration=duration, times=times)
        text = _dumps(payload)
        if not insert_outbox(db, alert.id, self.name, alert.rule, text, now=now):
            return 0  # the same alert again, after a crash: recorded the first time
        if row is not None:
            # The previous action's undo, if still undelivered, would lift this one.
            _skip_pending(db, row[0] + UNDO_SUFFIX, self.name, "superseded by a new action", now)
        forget = until + (self.handler.increase.max if self.handler.increase else 0.0)
        db.execute(
            "INSERT INTO actions (handler, key, alert_id, alert, since, until, duration, times, "
            "state, forget) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?) "
            "ON CONFLICT (handler, key) DO UPDATE SET alert_id = excluded.alert_id, "
            "alert = excluded.alert, since = excluded.since, until = excluded.until, "
            "duration = excluded.duration, times = excluded.times, state = 'active', "
            "forget = excluded.forget",
            (self.name, key, alert.id, text, now, until, duration, times, forget),
        )
        return 1

    def _again(
        self,
        db: sqlite3.Connection,
        alert: Alert,
        payload: dict[str, Any],
        key: str,
        *,
        row: tuple[Any, ...],
        now: float,
    ) -> int:
        """An alert for a key under an active action. If its first line came before the
        action began, it is the rest of the offence the action is for (a burst's lines
        logged before the ban took hold): recorded, nothing more. Otherwise the key kept
        offending while acted on (where the ban does not reach, or a ban lost): a repeat,
        counted, and with ``increase`` the action is extended to factor x its duration
        (from its start, at most ``max``) and delivered again, since an nft element carries
        its own timeout. (The line's own timestamp against the time the action began, as
        fail2ban tells a ban's latency from a ban that does not hold.)"""
        alert_id, until, times, _state, _forget, since, duration = row
        note = f"{key} is already acted on until {isoformat(until)}"
        if alert.first_seen < since:
            self._skip(db, alert, payload, now, note)
            return 0
        increase = self.handler.increase
        longer = duration if increase is None else min(increase.max, duration * increase.factor)
        if increase is None or since + longer <= until:  # or already at its longest
            if self._skip(db, alert, payload, now, f"{note}; counted as a repeat"):
                db.execute(
                    "UPDATE actions SET times = times + 1 WHERE handler = ? AND key = ?",
                    (self.name, key),
                )
            return 0
        until = since + longer
        payload["action"] = _doing(
            key, since=since, until=until, duration=longer, times=times + 1, extended=now
        )
        text = _dumps(payload)
        if not insert_outbox(db, alert.id, self.name, alert.rule, text, now=now):
            return 0  # a replay after a crash: extended the first time
        # the earlier delivery, if it has not run yet, would set the shorter time
        _skip_pending(db, alert_id, self.name, "superseded by an extension", now)
        forget = until + increase.max
        db.execute(
            "UPDATE actions SET alert_id = ?, alert = ?, until = ?, duration = ?, "
            "times = times + 1, forget = ? WHERE handler = ? AND key = ?",
            (alert.id, text, until, longer, forget, self.name, key),
        )
        log.info(
            f"extending: {key} offended again while acted on; now until {isoformat(until)}",
            handler=self.name,
            rule=alert.rule,
            alert_id=alert.id,
        )
        return 1

    def _skip(
        self,
        db: sqlite3.Connection,
        alert: Alert,
        payload: dict[str, Any],
        now: float,
        reason: str,
        *,
        refused: ActionRefused | None = None,
    ) -> bool:
        """Record the alert as not acted on; log why, once (a replay finds the row)."""
        text = _dumps(payload)
        inserted = insert_outbox(
            db, alert.id, self.name, alert.rule, text, now=now, status="skipped", error=reason
        )
        if inserted:
            quiet = refused is None or refused.expected
            (log.info if quiet else log.warning)(
                f"not acted on: {reason}", handler=self.name, rule=alert.rule, alert_id=alert.id
            )
        return bool(inserted)


def _doing(
    key: str, *, since: float, until: float, duration: float, times: int, **more: float
) -> dict[str, Any]:
    """What a handler's ``send`` gets as ``alert["action"]`` for an action (step ``do``)."""
    return {
        "key": key,
        "since": since,
        "until": until,
        "duration": duration,
        "times": times,
        "step": "do",
        **more,
    }


class ActionBook:
    """The acting handlers of one wiring, over the daemon's own store (its main thread)."""

    def __init__(self, store: StateStore, handlers: Mapping[str, object], *, dry_run: bool):
        self._store = store
        self._dry_run = dry_run
        self.handlers = acting_handlers(handlers)
        self.recorders = {name: Recorder(handler) for name, handler in self.handlers.items()}
        self._next_tick = 0.0
        self._next_forget = 0.0
        self._checking: dict[str, Checking] = {}  # set by start()
        self._next_check: dict[str, float] = {}

    def start(self, now: float) -> set[str]:
        """Queue the undos that fell due while the daemon was down, then re-apply the active
        actions (nft sets do not survive a reboot). Call before the workers start."""
        due = queue_due_undos(self._store, now)
        forget_old(self._store, now)
        self._warn_orphans(now)
        for name, handler in self.handlers.items():
            restore = getattr(handler, "restore", None)
            if restore is None or self._dry_run:
                continue
            active = active_actions(self._store, now, handler=name)
            try:
                restore(active)
            except Exception as exc:
                log.error("could not re-apply active actions", handler=name, error=str(exc))
            else:
                log.info(f"re-applied {len(active)} active actions", handler=name)
        self._checking = {
            name: handler  # type: ignore[misc]
            for name, handler in self.handlers.items()
            if hasattr(handler, "intact") and not self._dry_run
        }
        return due

    def _warn_orphans(self, now: float) -> None:
        """Active actions of a handler that no longer acts cannot be undone until it does."""
        for row in active_actions(self._store, now):
            if row["handler"] not in self.handlers:
                log.warning(
                    f"{row['key']} is under an action of handler {row['handler']}, which is "
                    "not configured (or has no undo): it is undone when the handler is back; "
                    "`logwatchd actions revert` forgets it",
                    handler=row["handler"],
                )

    def tick(self, now: float, monotonic: float) -> set[str]:
        """Queue due undos (at most every TICK_INTERVAL); returns the handlers to wake."""
        if monotonic < self._next_tick:
            return set()
        self._next_tick = monotonic + TICK_INTERVAL
        due = queue_due_undos(self._store, now)
        if monotonic >= self._next_forget:
            self._next_forget = monotonic + FORGET_INTERVAL
            forget_old(self._store, now)
        self._check_intact(now, monotonic)
        return due

    def _check_intact(self, now: float, monotonic: float) -> None:
        """Actions that vanished behind the daemon's back (``systemctl restart nftables``
        flushes the whole ruleset) are re-applied within a ``check_interval``."""
        for name, handler in self._checking.items():
            next_check = self._next_check.setdefault(name, monotonic + handler.check_interval)
            if monotonic < next_check:
                continue
            self._next_check[name] = monotonic + handler.check_interval
            try:
                if handler.intact():
                    continue
                active = active_actions(self._store, now, handler=name)
                handler.restore(active)
            except Exception as exc:
                log.error("could not check the active actions", handler=name, error=str(exc))
            else:
                log.warning(
                    f"re-applied {len(active)} active actions: they were gone (a flushed ruleset?)",
                    handler=name,
                )


def queue_due_undos(store: StateStore, now: float) -> set[str]:
    """Turn every active action whose time has come into an undo row; returns handlers."""
    db = store.db
    if db.execute(_DUE, (now,)).fetchone() is None:
        return set()  # the common case, without taking the write lock
    handlers: set[str] = set()
    with store.transaction():
        rows = db.execute(
            "SELECT handler, key, alert_id, alert FROM actions "
            "WHERE state = 'active' AND until <= ?",
            (now,),
        ).fetchall()
        for handler, key, alert_id, text in rows:
            payload = json.loads(text)
            payload["action"].update(step="undo", ended=now)
            undo_id = alert_id + UNDO_SUFFIX
            if insert_outbox(db, undo_id, handler, payload["rule"], _dumps(payload), now=now):
                handlers.add(handler)
            _skip_pending(db, alert_id, handler, "undone before it ran", now)
            db.execute(
                "UPDATE actions SET state = 'ended' WHERE handler = ? AND key = ?", (handler, key)
            )
    return handlers


_DUE = "SELECT 1 FROM actions WHERE state = 'active' AND until <= ? LIMIT 1"
_FORGOTTEN = "SELECT 1 FROM actions WHERE state = 'ended' AND forget <= ? LIMIT 1"


def forget_old(store: StateStore, now: float) -> int:
    """Drop ended actions past their memory (``increase.max`` after their end)."""
    if store.db.execute(_FORGOTTEN, (now,)).fetchone() is None:
        return 0
    with store.transaction():
        cursor = store.db.execute(
            "DELETE FROM actions WHERE state = 'ended' AND forget <= ?", (now,)
        )
    return cursor.rowcount


def active_actions(
    store: StateStore, now: float | None = None, *, handler: str | None = None
) -> list[dict[str, Any]]:
    """Active actions as plain rows, oldest first: handler, key, since, until, duration,
    times, rule, alert_id, state (how the delivery of the action itself went: applied,
    pending, retrying or failed) and error (its last error, if not applied)."""
    now = time.time() if now is None else now
    query = (
        "SELECT a.handler, a.key, a.since, a.until, a.duration, a.times, a.alert_id, "
        "json_extract(a.alert, '$.rule'), o.status, o.attempts, o.last_error "
        "FROM actions a LEFT JOIN outbox o ON o.alert_id = a.alert_id AND o.handler = a.handler "
        "WHERE a.state = 'active' AND a.until > ?"
    )
    args: tuple[Any, ...] = (now,)
    if handler is not None:
        query += " AND a.handler = ?"
        args += (handler,)
    rows = []
    for (
        name,
        key,
        since,
        until,
        duration,
        times,
        alert_id,
        rule,
        status,
        attempts,
        error,
    ) in store.db.execute(query + " ORDER BY a.since, a.key", args):
        rows.append(
            {
                "handler": name,
                "key": key,
                "since": since,
                "until": until,
                "duration": duration,
                "times": times,
                "rule": rule,
                "alert_id": alert_id,
                "state": _delivery_state(status, attempts),
                "error": error if status != "done" else None,
            }
        )
    return rows


def _delivery_state(status: str | None, attempts: int | None) -> str:
    if status is None or status == "done":
        return "applied"  # a delivered row may have been pruned already
    if status == "pending":
        return "retrying" if attempts else "pending"
    return status


def revert(
    store: StateStore, now: float, *, handler: str | None = None, key: str | None = None
) -> int:
    """End active actions now (all, one handler's, or one key's) and forget them; the
    daemon queues their undos at its next tick. Returns how many were active."""
    query = "UPDATE actions SET until = ?, forget = ? WHERE state = 'active' AND until > ?"
    args: tuple[Any, ...] = (now, now, now)
    if handler is not None:
        query += " AND handler = ?"
        args += (handler,)
    if key is not None:
        query += " AND key = ?"
        args += (key,)
    with store.transaction():
        cursor = store.db.execute(query, args)
    return cursor.rowcount


def _skip_pending(
    db: sqlite3.Connection, alert_id: str, handler: str, why: str, now: float
) -> None:
    db.execute(
        "UPDATE outbox SET status = 'skipped', last_error = ?, updated = ? "
        "WHERE alert_id = ? AND handler = ? AND status = 'pending'",
        (why, now, alert_id, handler),
    )


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))

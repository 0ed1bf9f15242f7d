"""Delivery workers: one thread per handler, taking alerts from the durable outbox.

An alert leaves the outbox only when its handler delivered it, or after ``max_attempts``
(then it is marked failed and kept for ``status``). Alerts held back by a batch window or a
rate limit stay pending in the database until the digest that carries them was sent, so a
crash at any moment delays them and loses none. Each worker has its own SQLite connection and
its own thread: a slow or dead handler never holds up the reader or another handler.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from logwatchd.clock import Clock
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import Handler
from logwatchd.state import OutboxItem, StateStore
from logwatchd.state_health import WriteRetry, detail, is_damaged, is_unwritable

log = structlog.get_logger("logwatchd.outbox")

POLL_INTERVAL = 1.0  # due retries are found at least this often, even without notify()
CLAIM_LIMIT = 100
DIGEST_MAX = 100  # alerts per digest when a rate limit defers them and no batch.max is set
JITTER = 0.1


class InFlight:
    """Alert ids being sent right now, per handler, shared by the Dispatchers of one daemon.

    After a reload the old Dispatcher may still be finishing a send when the new one starts:
    the new worker must not pick up the same rows, or the alert would go out twice. The
    daemon passes one InFlight to every Dispatcher it builds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._ids: dict[str, set[str]] = {}

    def claim(self, handler: str, fetch: Callable[[], list[OutboxItem]]) -> list[OutboxItem]:
        """Read due rows and drop those in flight, atomically with respect to ``holding``.

        A holder releases only after it recorded the outcome, so under the handler's lock
        either the row is still held (and dropped here) or its new status is what we read.
        """
        with self._handler_lock(handler):
            items = fetch()
            busy = self._ids.get(handler)
            if not busy:
                return items
            return [item for item in items if item.alert_id not in busy]

    @contextlib.contextmanager
    def holding(self, handler: str, items: list[OutboxItem]) -> Iterator[None]:
        ids = {item.alert_id for item in items}
        with self._handler_lock(handler):
            self._ids.setdefault(handler, set()).update(ids)
        try:
            yield
        finally:
            with self._handler_lock(handler):
                self._ids[handler] -= ids

    def _handler_lock(self, handler: str) -> threading.Lock:
        with self._lock:
            lock = self._locks.get(handler)
            if lock is None:
                lock = self._locks[handler] = threading.Lock()
            return lock


IDLE_WAIT = 60.0  # seconds a worker with an empty outbox sleeps unless notified


@dataclass
class WorkerStats:
    sent: int = 0  # alerts delivered
    sends: int = 0  # send() calls that succeeded (a digest is one)
    retried: int = 0
    failed: int = 0
    last_error: str | None = None
    seconds: float = 0.0  # time spent in send(), successful or not


class Dispatcher:
    def __init__(
        self,
        store_path: str,
        handlers: dict[str, Handler],
        configs: dict[str, HandlerConfig],
        clock: Clock,
        *,
        dry_run: bool = False,
        poll_interval: float = POLL_INTERVAL,
        in_flight: InFlight | None = None,
    ) -> None:
        self.store_path = store_path
        in_flight = in_flight or InFlight()
        self._handlers = handlers
        self._stopping = threading.Event()
        self._workers = [
            Worker(
                handler,
                configs.get(name) or HandlerConfig(name=name, type="log"),
                store_path,
                clock,
                self._stopping,
                dry_run=dry_run,
                poll_interval=poll_interval,
                in_flight=in_flight,
            )
            for name, handler in handlers.items()
        ]

    def start(self) -> Dispatcher:
        """Start the workers (separate from construction: a reload builds before it swaps)."""
        for worker in self._workers:
            if not worker.is_alive() and worker.ident is None:
                worker.start()
        return self

    def notify(self, handlers: Collection[str] | None = None) -> None:
        """New outbox rows were committed for ``handlers`` (None: any): wake their workers."""
        for worker in self._workers:
            if handlers is None or worker.handler.name in handlers:
                worker.wake.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Take no new work, let in-flight sends finish up to ``timeout``, close handlers.

        Returns False when some worker was still busy at the deadline (its alerts stay
        pending and are delivered after the next start).
        """
        self._stopping.set()
        self.notify()
        deadline = time.monotonic() + timeout
        clean = True
        for worker in self._workers:
            if worker.ident is None:
                continue  # never started
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                clean = False
                log.warning("handler still busy at shutdown", handler=worker.name)
        for name, handler in self._handlers.items():
            try:
                handler.close()
            except Exception:
                log.exception("handler close failed", handler=name)
        return clean

    def damage(self) -> str | None:
        """What a worker found damaged in the state database (the daemon must stop), or None."""
        return next((worker.damage for worker in self._workers if worker.damage), None)

    def stats(self) -> dict[str, WorkerStats]:
        return {worker.handler.name: worker.stats for worker in self._workers}

    def status(self) -> dict[str, Any]:
        """The store's status (outbox depth, oldest age, last error per handler)."""
        store = StateStore(self.store_path)
        try:
            return store.status()
        finally:
            store.close()


class Worker(threading.Thread):
    """Delivers one handler's outbox rows: plain, batched into digests, or rate limited."""

    def __init__(
        self,
        handler: Handler,
        cfg: HandlerConfig,
        store_path: str,
        clock: Clock,
        stopping: threading.Event,
        *,
        dry_run: bool,
        poll_interval: float,
        in_flight: InFlight,
    ) -> None:
        super().__init__(name=f"outbox-{handler.name}", daemon=True)
        self._in_flight = in_flight
        self.handler = handler
        self.cfg = cfg
        self.stats = WorkerStats()
        self.wake = threading.Event()
        self._store_path = store_path
        self._clock = clock
        self._stopping = stopping
        self._poll = poll_interval
        self._deliver: Callable[[list[dict[str, Any]]], None] = (
            self._dry_run if dry_run else handler.send
        )
        self._sends: deque[float] = deque()  # times of recent sends, for the rate limit
        self._deferred = False  # the rate limit held alerts back: they go out as digests
        # a command runs once per alert of a digest: its overflow waits, one run per slot
        self._digests = not getattr(handler, "per_alert", False)
        self._held_since: float | None = None  # the rate limit has held alerts back since
        self._held = 0
        self._sent_at_hold = 0
        self._window_start: float | None = None
        self._parallel = max(1, int(getattr(handler, "concurrency", 1)))
        self._writes = WriteRetry("recording a delivery", clock)
        self.damage: str | None = None  # the database is damaged: this worker stopped

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        store = None
        while not self._stopping.is_set():
            self.wake.clear()
            delay = self._poll
            try:
                store = store or StateStore(self._store_path)
                delay = self._cycle(store)
            except Exception as exc:
                if is_damaged(exc):
                    self.damage = detail(exc)  # the daemon stops and says so
                    break
                # the store or the handler broke in a way nobody planned for: keep the worker
                log.exception("delivery worker error", handler=self.handler.name)
            if delay > 0:
                # nothing pending: only notify() (a commit, or stop) brings new work
                self.wake.wait(IDLE_WAIT if delay == math.inf else min(delay, self._poll))
        if store is not None:
            store.close()

    def _cycle(self, store: StateStore) -> float:
        """Deliver what is due now; return seconds until something may be due again."""
        now = self._clock.now()
        batch = self.cfg.batch
        limit = batch.max if batch else CLAIM_LIMIT
        items = self._in_flight.claim(
            self.handler.name, lambda: store.claim_due(self.handler.name, now, limit)
        )
        if not items:
            self._window_start = None
            self._deferred = False
            self._release(store)
            return self._until_next_due(store, now)
        if batch is not None:
            if self._window_start is None:
                self._window_start = now
            window_left = self._window_start + batch.window - now
            retrying = any(item.attempts for item in items)
            if window_left > 0 and not retrying and len(items) < batch.max:
                return window_left
        wait = self._rate_wait(now)
        if wait > 0:
            self._deferred = self._digests
            self._hold(store, now, wait)
            return wait
        if batch is not None or self._deferred:
            # after a hold, the backlog goes out as digests until it is drained
            self._send(store, items[: batch.max if batch else DIGEST_MAX])
        elif self.cfg.rate_limit is None and getattr(self.handler, "idempotent", False):
            # the handler never repeats an id it wrote: all claimed alerts in one send
            self._send(store, items)
        elif self._parallel > 1:
            self._send_parallel(store, items[: self._room(now)])
        else:
            self._send_each(store, items)
        return 0.0

    def _send_each(self, store: StateStore, items: list[OutboxItem]) -> None:
        """One send per alert, each recorded at once: a kill -9 may repeat only the delivery
        that was in flight (README: "Guarantees"), never a batch of already delivered ones."""
        with self._in_flight.holding(self.handler.name, items):
            for item in items:
                if self._stopping.is_set():
                    break
                if self._rate_wait(self._clock.now()) > 0:
                    break  # the next cycle holds the rest back (see _hold)
                self._sends.append(self._clock.now())
                self._record(store, [item], *self._attempt([item.alert]))

    def _until_next_due(self, store: StateStore, now: float) -> float:
        due = store.next_due(self.handler.name)
        return math.inf if due is None else max(0.0, due - now)

    def _rate_wait(self, now: float) -> float:
        limit = self.cfg.rate_limit
        if limit is None:
            return 0.0
        while self._sends and self._sends[0] <= now - limit.per:
            self._sends.popleft()
        if len(self._sends) < limit.max:
            return 0.0
        return self._sends[0] + limit.per - now

    def _room(self, now: float) -> int:
        """How many sends the rate limit allows now (after ``_rate_wait`` said some)."""
        limit = self.cfg.rate_limit
        if limit is None:
            return CLAIM_LIMIT
        self._rate_wait(now)
        return max(0, limit.max - len(self._sends))

    def _hold(self, store: StateStore, now: float, wait: float) -> None:
        """The rate limit holds due alerts back: say so once, and keep the count for status."""
        held = store.due_count(self.handler.name, now)
        if held == self._held:
            return
        first = self._held_since is None
        if first:
            self._held_since = self._clock.now()
            self._sent_at_hold = self.stats.sent
        self._held = held
        store.record_held_back(self.handler.name, held, self._held_since)
        if first:
            limit = self.cfg.rate_limit
            assert limit is not None  # only a rate limit makes a wait
            log.warning(
                "rate limit reached, alerts held back",
                handler=self.handler.name,
                held=held,
                limit=f"{limit.max} per {limit.per:g}s",
                then="one digest per send" if self._digests else "one run per free slot",
                resumes_in=round(wait, 1),
            )

    def _release(self, store: StateStore) -> None:
        """The backlog the rate limit held is delivered (or in retry): clear the count."""
        if self._held_since is None:
            return
        store.record_held_back(self.handler.name, 0, None)
        log.info(
            "rate-limited backlog delivered",
            handler=self.handler.name,
            delivered=self.stats.sent - self._sent_at_hold,
            held_for=round(self._clock.now() - self._held_since, 1),
        )
        self._held_since, self._held = None, 0

    # --- delivering ----------------------------------------------------------------------

    def _send(self, store: StateStore, items: list[OutboxItem]) -> None:
        if self._stopping.is_set():
            return
        self._sends.append(self._clock.now())
        with self._in_flight.holding(self.handler.name, items):
            error, seconds = self._attempt([item.alert for item in items])
            self._record(store, items, error, seconds)

    def _send_parallel(self, store: StateStore, items: list[OutboxItem]) -> None:
        """For handlers with ``concurrency`` > 1: sends overlap, the store stays in this thread."""

        def attempt(item: OutboxItem) -> tuple[bool, tuple[DeliveryError | None, float]]:
            if self._stopping.is_set():
                return False, (None, 0.0)  # skipped at shutdown: stays pending
            return True, self._attempt([item.alert])

        self._sends.extend([self._clock.now()] * len(items))
        with self._in_flight.holding(self.handler.name, items):
            with ThreadPoolExecutor(self._parallel) as pool:
                results = list(pool.map(attempt, items))
            for item, (tried, outcome) in zip(items, results, strict=True):
                if tried:
                    self._record(store, [item], *outcome)

    def _attempt(self, alerts: list[dict[str, Any]]) -> tuple[DeliveryError | None, float]:
        """The error, if the send failed, and the seconds it took."""
        started = time.monotonic()
        try:
            self._deliver(alerts)
        except DeliveryError as exc:
            return exc, time.monotonic() - started
        except Exception as exc:
            log.exception("handler raised", handler=self.handler.name, alert_id=alerts[0]["id"])
            error = DeliveryError(f"unexpected {type(exc).__name__}: {exc}")
            return error, time.monotonic() - started
        return None, time.monotonic() - started

    def _record(
        self,
        store: StateStore,
        items: list[OutboxItem],
        error: DeliveryError | None,
        seconds: float = 0.0,
    ) -> None:
        self.stats.seconds += seconds
        if error is None:
            self._durably(functools.partial(store.mark_done_many, items, seconds=seconds))
            self.stats.sent += len(items)
            self.stats.sends += 1
            return
        self.stats.last_error = str(error)
        retry = self.cfg.retry
        exhausted = [i for i in items if error.permanent or i.attempts + 1 >= retry.max_attempts]
        for item in exhausted:
            self._durably(functools.partial(store.mark_failed, item, str(error), seconds=seconds))
            self.stats.failed += 1
            log.error(
                "delivery failed",
                handler=self.handler.name,
                alert_id=item.alert_id,
                attempts=item.attempts + 1,
                permanent=error.permanent,
                error=str(error),
            )
        gone = {item.alert_id for item in exhausted}
        again = [item for item in items if item.alert_id not in gone]
        if not again:
            return
        # one delay for the whole digest, so its alerts come due together and stay one digest
        attempts = max(item.attempts for item in again) + 1
        delay = backoff(attempts, retry.backoff, retry.max_backoff, error.retry_after)
        next_attempt = self._clock.now() + delay
        for item in again:
            self._durably(
                functools.partial(store.mark_retry, item, next_attempt, str(error), seconds=seconds)
            )
        self.stats.retried += len(again)
        log.warning(
            "delivery failed, will retry",
            handler=self.handler.name,
            alert_id=again[0].alert_id,
            alerts=len(again),
            attempts=attempts,
            retry_in=round(delay, 3),
            error=str(error),
        )

    def _durably(self, write: Callable[[], None]) -> None:
        """Record an outcome, waiting out a full disk: a delivery that is not recorded would
        be repeated. Gives up only at shutdown (the row stays pending, sent once more later)."""
        while True:
            try:
                write()
            except sqlite3.OperationalError as exc:
                if not is_unwritable(exc) or self._stopping.is_set():
                    raise
                self._stopping.wait(self._writes.failed(exc, handler=self.handler.name))
                continue
            self._writes.succeeded()
            return

    def _dry_run(self, alerts: list[dict[str, Any]]) -> None:
        preview = self.handler.preview(alerts)
        log.info(
            "dry run: not sent",
            handler=self.handler.name,
            alert_ids=[a["id"] for a in alerts],
            would_send=preview,
        )


def backoff(attempts: int, first: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: doubling from ``first``, capped, jittered."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    delay = min(first * 2.0 ** (attempts - 1), cap)
    return min(delay * (1 + random.uniform(0, JITTER)), cap)

"""Follow a NATS JetStream stream: durable pull consumers, one per subject filter.

Messages are fetched in batches by an asyncio loop in the source's own thread and handed
to the daemon's ``poll()`` as lines (the payload as text). A message is acknowledged only
after the daemon committed what it changed: ``checkpoint()`` lists every message polled
whose acknowledgement the server has not confirmed, and ``committed()`` (called after the
commit) sends the acknowledgements and drops each one the server confirmed.

Redeliveries change nothing. A message's identity is its ``Nats-Msg-Id`` (for alerts: the
alert id), else its stream sequence. Ids seen in this run (the last 65,536) are skipped;
after a restart, the listed unconfirmed ones are skipped, since the server redelivers
exactly those. An entry leaves the list when its acknowledgement is confirmed, or when the
consumer's acknowledgement floor passed it (acknowledged by an earlier run).

Several daemons may use the same ``durable``: the server hands each message to one of them.
The subjects are one consumer each (nats-server 2.9 filters a consumer by one subject):
named ``durable`` for one subject, ``durable-<hash of the subject>`` for several.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from logwatchd import natsconn
from logwatchd.clock import Clock
from logwatchd.config.model import NatsSourceConfig, SourceConfig
from logwatchd.events import Line

log = structlog.get_logger("logwatchd.sources")

FETCH_WAIT = 2.0  # seconds one fetch waits on the server for messages
REQUEST_TIMEOUT = 5.0  # JetStream API calls and acknowledgements
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # reconnect backoff
FLOOR_EVERY = 30.0  # how often the consumers' acknowledgement floors prune the list
RECENT = 65_536  # message ids remembered to skip repeats
# Messages delivered and not yet acknowledged, per consumer: acknowledgements wait for the
# daemon's commit (commit_interval, 1 s, when nothing fired), so this bounds the rate at
# about MAX_ACK_PENDING a second (and the memory held: about 2 KiB a message).
MAX_ACK_PENDING = 20_000
MAX_UNCONFIRMED = 100_000  # the list in the checkpoint is cut to this (lowest sequences go)
STREAM_NOT_FOUND = 10059


@dataclass(slots=True)
class Delivered:
    """A message polled (``msg`` None: listed by a previous run's checkpoint)."""

    consumer: str
    seq: int
    key: str
    msg: Any = None


class Recent:
    """The last ``size`` ids seen, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already there."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


def consumer_names(config: NatsSourceConfig) -> dict[str, str]:
    """Subject -> consumer name."""
    if len(config.subjects) == 1:
        return {config.subjects[0]: config.durable}
    return {
        subject: f"{config.durable[:55]}-{hashlib.sha256(subject.encode()).hexdigest()[:8]}"
        for subject in config.subjects
    }


class NatsSource:
    def __init__(
        self,
        config: SourceConfig,
        *,
        saved: dict[str, Any] | None,
        clock: Clock,
        host: str = "",
    ) -> None:
        assert config.nats is not None
        natsconn.require(config.mark, f"sources.{config.id}")
        self.id = config.id
        self._cfg = config.nats
        self._deliver_new = config.start_at == "end"
        self._clock = clock
        self._host = host
        self._consumers = consumer_names(self._cfg)
        self._what = {"source": config.id}
        self._events = natsconn.Events(self._what)
        self._loop = natsconn.LoopThread(f"nats-{config.id}")
        self._lock = threading.Lock()
        self._ready: deque[tuple[str, Any]] = deque()  # fetched, not yet polled
        self._polled: list[Delivered] = []  # polled since the last checkpoint()
        self._committing: list[Delivered] = []  # in the checkpoint being committed
        self._unconfirmed: dict[tuple[str, int], Delivered] = {}
        self._recent = Recent(RECENT)
        self._uncommitted: set[str] = set()  # ids of lines polled, not yet committed
        self._room: asyncio.Event | None = None
        self._wake: Callable[[], None] = _nothing
        self._follow: Any = None
        self._acks: set[asyncio.Task[None]] = set()
        self.skipped = 0  # repeats dropped
        self.problem = ""  # what keeps it from following (logged once, not once per retry)
        self._load(saved or {})

    def _load(self, saved: dict[str, Any]) -> None:
        for entry in saved.get("unacked", []):
            try:
                consumer, seq, key = str(entry[0]), int(entry[1]), str(entry[2])
            except (TypeError, ValueError, IndexError):
                continue
            self._unconfirmed[(consumer, seq)] = Delivered(consumer, seq, key)
            self._recent.add(key)

    # --- the Source protocol (the daemon's thread) ---------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._follow = self._loop.submit(self._run())

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        lines: list[Line] = []
        with self._lock:
            taken = [self._ready.popleft() for _ in range(min(max_lines, len(self._ready)))]
        if not taken:
            return lines
        now = self._clock.now()
        polled: list[Delivered] = []
        repeats: list[Delivered] = []
        for consumer, msg in taken:
            delivered, line = self._line(consumer, msg, now)
            if line is not None:
                lines.append(line)
                polled.append(delivered)
                self._uncommitted.add(delivered.key)
            elif delivered.key in self._uncommitted:
                polled.append(delivered)  # its first copy is not committed yet: ack with it
            else:
                repeats.append(delivered)  # what it stands for is committed: ack at once
        with self._lock:
            self._polled.extend(polled)
            self._unconfirmed.update(((d.consumer, d.seq), d) for d in repeats)
        self.skipped += len(taken) - len(lines)
        if repeats:
            self._loop.call_soon(self._start_acks, repeats)
        if self._room is not None:
            self._loop.call_soon(self._room.set)
        return lines

    def checkpoint(self) -> dict[str, Any]:
        with self._lock:
            self._committing.extend(self._polled)
            self._polled = []
            listed = {(d.consumer, d.seq): d for d in self._committing}
            listed.update(self._unconfirmed)
        entries = sorted((d.consumer, d.seq, d.key) for d in listed.values())
        if len(entries) > MAX_UNCONFIRMED:
            entries = sorted(entries, key=lambda entry: entry[1])[-MAX_UNCONFIRMED:]
        return {"stream": self._cfg.stream, "unacked": [list(entry) for entry in entries]}

    def committed(self) -> None:
        """The last checkpoint is in the database: acknowledge what it covered."""
        with self._lock:
            done, self._committing = self._committing, []
            for delivered in done:
                self._unconfirmed[(delivered.consumer, delivered.seq)] = delivered
        self._uncommitted.difference_update(delivered.key for delivered in done)
        if done:
            self._loop.call_soon(self._start_acks, done)

    def stop(self) -> None:
        self._events.closing = True
        with contextlib.suppress(Exception):
            self._loop.run(self._finish(), REQUEST_TIMEOUT + 1.0)
        self._loop.stop()

    def _line(self, consumer: str, msg: Any, now: float) -> tuple[Delivered, Line | None]:
        meta = msg.metadata
        seq = int(meta.sequence.stream)
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        key = str(msg_id) if msg_id else f"{self._cfg.stream}:{seq}"
        delivered = Delivered(consumer, seq, key, msg)
        if not self._recent.add(key):
            return delivered, None
        stamp = meta.timestamp.timestamp() if meta.timestamp is not None else now
        return delivered, Line(
            source=self.id,
            raw=msg.data.decode("utf-8", "replace"),
            read_time=stamp,
            origin=f"nats:{key}",
            path=msg.subject,
            lineno=seq,
        )

    # --- in the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        self._room = asyncio.Event()
        delay = RETRY_MIN
        while True:
            try:
                client = await natsconn.connect(
                    self._cfg.connection,
                    name=f"logwatchd {self._host} {self.id}".strip(),
                    timeout=REQUEST_TIMEOUT,
                    events=self._events,
                )
            except (ConnectionError, OSError, ValueError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            try:
                subscriptions = await self._subscribe(client)
                delay = RETRY_MIN
                if self.problem:
                    self.problem = ""
                    log.info("nats source following", stream=self._cfg.stream, **self._what)
                async with asyncio.TaskGroup() as group:
                    for consumer, subscription in subscriptions:
                        group.create_task(self._fetch(consumer, subscription))
                    group.create_task(self._prune(client))
            except Exception as exc:
                if not client.is_closed:  # else the connection's own event said it
                    self._problem(_first(exc))
            finally:
                with contextlib.suppress(Exception):
                    await client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _problem(self, text: str) -> None:
        if text != self.problem:
            self.problem = text
            log.warning("nats source waiting", error=text, **self._what)

    async def _subscribe(self, client: Any) -> list[tuple[str, Any]]:
        from nats.js import api
        from nats.js.errors import NotFoundError

        js = client.jetstream(timeout=REQUEST_TIMEOUT)
        stream = self._cfg.stream
        found = []
        for subject, name in self._consumers.items():
            try:
                info = await js.consumer_info(stream, name)
            except NotFoundError as exc:
                if exc.err_code == STREAM_NOT_FOUND:
                    raise LookupError(
                        f"stream {stream} does not exist yet (a nats handler creates it "
                        "at its first alert)"
                    ) from None
                policy = api.DeliverPolicy.NEW if self._deliver_new else api.DeliverPolicy.ALL
                await js.add_consumer(
                    stream,
                    api.ConsumerConfig(
                        durable_name=name,
                        filter_subject=subject,
                        deliver_policy=policy,
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=self._cfg.ack_wait,
                        max_ack_pending=max(MAX_ACK_PENDING, 8 * self._cfg.batch),
                    ),
                )
            else:
                if info.config.filter_subject != subject:
                    raise ValueError(
                        f"consumer {name} of stream {stream} follows "
                        f"{info.config.filter_subject}, not {subject}: give this source "
                        "another durable name, or delete the consumer"
                    )
            subscription = await js.pull_subscribe_bind(durable=name, stream=stream)
            found.append((name, subscription))
        return found

    async def _fetch(self, consumer: str, subscription: Any) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        room = self._room
        assert room is not None
        high = 2 * self._cfg.batch
        while True:
            while True:
                room.clear()
                if len(self._ready) < high:
                    break
                await room.wait()
            try:
                messages = await subscription.fetch(self._cfg.batch, timeout=FETCH_WAIT)
            except (TimeoutError, NatsTimeout):
                continue
            with self._lock:
                self._ready.extend((consumer, msg) for msg in messages)
            self._wake()

    async def _prune(self, client: Any) -> None:
        """Drop listed messages the consumers' acknowledgement floors passed."""
        js = client.jetstream(timeout=REQUEST_TIMEOUT)
        while True:
            for name in self._consumers.values():
                info = await js.consumer_info(self._cfg.stream, name)
                floor = int(info.ack_floor.stream_seq) if info.ack_floor else 0
                with self._lock:
                    passed = [k for k in self._unconfirmed if k[0] == name and k[1] <= floor]
                    for done in passed:
                        del self._unconfirmed[done]
            await asyncio.sleep(FLOOR_EVERY)

    def _start_acks(self, done: list[Delivered]) -> None:
        task = asyncio.get_running_loop().create_task(self._acknowledge(done))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _acknowledge(self, done: list[Delivered]) -> None:
        live = [d for d in done if d.msg is not None]
        results = await asyncio.gather(
            *(d.msg.ack_sync(timeout=REQUEST_TIMEOUT) for d in live), return_exceptions=True
        )
        failed = 0
        with self._lock:
            for delivered, result in zip(live, results, strict=True):
                if isinstance(result, BaseException):
                    failed += 1
                else:
                    self._unconfirmed.pop((delivered.consumer, delivered.seq), None)
        if failed:
            # the server redelivers them after ack_wait, and they are skipped as seen
            log.info("acknowledgements not confirmed", count=failed, **self._what)

    async def _finish(self) -> None:
        """At stop: let the last acknowledgements complete, then end the follower."""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while self._acks and time.monotonic() < deadline:
            await asyncio.wait(set(self._acks), timeout=deadline - time.monotonic())
        if self._follow is not None:
            self._follow.cancel()


def _first(exc: BaseException) -> str:
    """The message of an exception, or of the first one in a task group's exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return natsconn.describe(exc)


def _nothing() -> None:
    return None

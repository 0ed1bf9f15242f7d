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
import itertools
import json
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
        self._ready: deque[tuple[str, Any]] = deque()  # (consumer, message) fetched, not polled
        self._polled: list[Delivered] = []  # polled since the last checkpoint()
        self._committing: list[Delivered] = []  # in the checkpoint being committed
        self._unconfirmed: dict[tuple[str, int], Delivered] = {}
        self._recent = Recent(RECENT)
        self._uncommitted: set[str] = set()  # ids of lines polled, not yet committed
        self._room: asyncio.Event | None = None
        self._wake: Callable[[], None] = _nothing
        self._follow: Any = None
        self._acks: set[asyncio.Task[None]] = set()
        self._client: Any = None  # the connection, while there is one
        self._ack_inbox = ""
        self._awaiting: dict[str, Delivered] = {}  # acknowledgement sent, answer not yet in
        self._tokens = itertools.count()
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
        ready = self._ready  # deque appends and pops are atomic: the loop appends meanwhile
        taken = [ready.popleft() for _ in range(min(max_lines, len(ready)))]
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
        seq, stamp = sequence_and_time(msg.reply, now)
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        key = str(msg_id) if msg_id else f"{self._cfg.stream}:{seq}"
        delivered = Delivered(consumer, seq, key, msg)
        if not self._recent.add(key):
            return delivered, None
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
                await self._subscribe(client)
                await self._listen_for_acks(client)
                delay = RETRY_MIN
                if self.problem:
                    self.problem = ""
                    log.info("nats source following", stream=self._cfg.stream, **self._what)
                async with asyncio.TaskGroup() as group:
                    for consumer in self._consumers.values():
                        group.create_task(self._pull(client, consumer))
                    group.create_task(self._prune(client))
            except Exception as exc:
                if not client.is_closed:  # else the connection's own event said it
                    self._problem(_first(exc))
            finally:
                self._client = None
                self._awaiting.clear()  # those stay listed: the server redelivers them
                with contextlib.suppress(Exception):
                    await client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _problem(self, text: str) -> None:
        if text != self.problem:
            self.problem = text
            log.warning("nats source waiting", error=text, **self._what)

    async def _subscribe(self, client: Any) -> None:
        """Make the consumers that do not exist; refuse one that follows another subject."""
        from nats.js import api
        from nats.js.errors import NotFoundError

        js = client.jetstream(timeout=REQUEST_TIMEOUT)
        stream = self._cfg.stream
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

    async def _pull(self, client: Any, consumer: str) -> None:
        """Fetch batches with JetStream's pull requests: one request per batch, and each
        message goes to the ready queue from the subscription's callback (nats-py's fetch
        sets a timer per message, which cost more than the daemon's work on it)."""
        room = self._room
        assert room is not None
        inbox = client.new_inbox()
        request = f"$JS.API.CONSUMER.MSG.NEXT.{self._cfg.stream}.{consumer}"
        body = json.dumps({"batch": self._cfg.batch, "expires": int(FETCH_WAIT * 1e9)}).encode()
        ended = asyncio.Event()
        got = 0
        raise_later: list[Exception] = []

        async def arrived(msg: Any) -> None:
            nonlocal got
            status = (msg.headers or {}).get("Status") if not msg.data else None
            if status is None:
                self._ready.append((consumer, msg))
                got += 1
                self._wake()  # an Event.set: cheap, and a message never waits for a timeout
            elif status == "409" and "deleted" in str(msg.headers.get("Description", "")).lower():
                ended.set()
                raise_later.append(LookupError(f"consumer {consumer} was deleted"))
            elif status != "100":  # 404 no messages, 408 expired, 409 leader change: done
                ended.set()
            if got >= self._cfg.batch:
                ended.set()

        await client.subscribe(inbox, cb=arrived)
        high = 2 * self._cfg.batch
        while True:
            while True:
                room.clear()
                if len(self._ready) < high:
                    break
                await room.wait()
            ended.clear()
            got = 0
            await client.publish(request, body, reply=inbox)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), FETCH_WAIT + REQUEST_TIMEOUT)
            if raise_later:
                raise raise_later[0]
            if not client.is_connected:
                raise ConnectionError("connection lost")

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

    async def _listen_for_acks(self, client: Any) -> None:
        """Acknowledgements carry a reply subject, so the server confirms each one it applied
        (what nats-py's ack_sync does, without a request and a timer per message)."""
        self._ack_inbox = client.new_inbox()
        self._awaiting.clear()

        async def confirmed(msg: Any) -> None:
            delivered = self._awaiting.pop(msg.subject.rpartition(".")[2], None)
            if delivered is not None:
                with self._lock:
                    self._unconfirmed.pop((delivered.consumer, delivered.seq), None)

        await client.subscribe(f"{self._ack_inbox}.*", cb=confirmed)
        self._client = client

    def _start_acks(self, done: list[Delivered]) -> None:
        task = asyncio.get_running_loop().create_task(self._acknowledge(done))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _acknowledge(self, done: list[Delivered]) -> None:
        """Send the acknowledgements; unanswered ones stay listed (the server redelivers those
        messages after ack_wait, and they are skipped as seen)."""
        client = self._client
        if client is None or not client.is_connected:
            return
        awaiting = self._awaiting
        for delivered in done:
            if delivered.msg is None or not delivered.msg.reply:
                continue
            token = str(next(self._tokens))
            awaiting[token] = delivered
            await client.publish(delivered.msg.reply, b"+ACK", reply=f"{self._ack_inbox}.{token}")
        while len(awaiting) > MAX_ACK_PENDING * 2:  # answers that never came
            del awaiting[next(iter(awaiting))]

    async def _finish(self) -> None:
        """At stop: let the last acknowledgements go out and be confirmed, then end."""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while self._acks and time.monotonic() < deadline:
            await asyncio.wait(set(self._acks), timeout=deadline - time.monotonic())
        client = self._client
        if client is not None and client.is_connected:
            with contextlib.suppress(Exception):
                await client.flush(REQUEST_TIMEOUT)
            while self._awaiting and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        if self._follow is not None:
            self._follow.cancel()


def sequence_and_time(reply: str, now: float) -> tuple[int, float]:
    """Stream sequence and store time of a JetStream message, from its acknowledgement
    subject ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>``
    (with ``<domain>.<account>`` before the stream in the newer 12-token form). nats-py's
    ``Msg.metadata`` parses the same, at several times the cost of the daemon's own work."""
    tokens = reply.split(".")
    first = 2 if len(tokens) == 9 else 4
    try:
        return int(tokens[first + 3]), int(tokens[first + 5]) / 1e9
    except (IndexError, ValueError):
        return 0, now


def _first(exc: BaseException) -> str:
    """The message of an exception, or of the first one in a task group's exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return natsconn.describe(exc)


def _nothing() -> None:
    return None

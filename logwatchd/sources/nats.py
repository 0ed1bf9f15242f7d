"""Follow a NATS JetStream stream: durable pull consumers, one per subject filter.

Messages are fetched in batches by an asyncio loop in the source's own thread and handed
to the daemon's ``poll()`` as lines (the payload as text). A message is acknowledged only
after the daemon committed what it changed: ``committed()`` (called after each commit)
sends the acknowledgements of what that checkpoint covered. Redeliveries change nothing: a
message's identity is its ``Nats-Msg-Id`` (for alerts: the alert id), else its stream
sequence, and ``ledger.Ledger`` keeps what was counted, committed and confirmed.

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
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from logwatchd import natsconn
from logwatchd.clock import Clock
from logwatchd.config.model import NatsSourceConfig, SourceConfig
from logwatchd.events import Line
from logwatchd.sources.ledger import Delivered, Ledger

log = structlog.get_logger("logwatchd.sources")

FETCH_WAIT = 2.0  # seconds one fetch waits on the server for messages
REQUEST_TIMEOUT = 5.0  # JetStream API calls and acknowledgements
RETRY_MIN, RETRY_MAX = 0.5, 5.0  # reconnect backoff
FLOOR_EVERY = 30.0  # how often the consumers' acknowledgement floors prune the list
# Messages delivered and not yet acknowledged, per consumer: acknowledgements wait for the
# daemon's commit (commit_interval, 1 s, when nothing fired), so this bounds the rate at
# about MAX_ACK_PENDING a second (and the memory held: about 2 KiB a message).
MAX_ACK_PENDING = 20_000
STREAM_NOT_FOUND = 10059


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
        self._ready: deque[tuple[str, Any]] = deque()  # (consumer, message) fetched, not polled
        self._ledger = Ledger(saved)
        self._room: asyncio.Event | None = None
        self._wake: Callable[[], None] = _nothing
        self._follow: Any = None
        self._acks: set[asyncio.Task[None]] = set()
        self._client: Any = None  # the connection, while there is one
        self._ack_inbox = ""
        self._awaiting: dict[str, Delivered] = {}  # acknowledgement sent, answer not yet in
        self._tokens = itertools.count()
        self.problem = ""  # what keeps it from following (logged once, not once per retry)

    @property
    def skipped(self) -> int:
        """Repeats not counted (redeliveries, a second copy of an alert)."""
        return self._ledger.skipped

    # --- the Source protocol (the daemon's thread) ---------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._follow = self._loop.submit(self._run())

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        ready = self._ready  # deque appends and pops are atomic: the loop appends meanwhile
        taken = [ready.popleft() for _ in range(min(max_lines, len(ready)))]
        if not taken:
            return []
        now = self._clock.now()
        batch = [self._delivered(consumer, msg, now) for consumer, msg in taken]
        fresh, at_once = self._ledger.admit([delivered for delivered, _stamp in batch])
        lines = [
            self._line(delivered, stamp)
            for (delivered, stamp), new in zip(batch, fresh, strict=True)
            if new
        ]
        if at_once:
            self._loop.call_soon(self._start_acks, at_once)
        if self._room is not None:
            self._loop.call_soon(self._room.set)
        return lines

    def checkpoint(self) -> dict[str, Any]:
        return self._ledger.checkpoint(self._cfg.stream)

    def committed(self) -> None:
        """The last checkpoint is in the database: acknowledge what it covered."""
        done = self._ledger.committed()
        if done:
            self._loop.call_soon(self._start_acks, done)

    def stop(self) -> None:
        self._events.closing = True
        with contextlib.suppress(Exception):
            self._loop.run(self._finish(), REQUEST_TIMEOUT + 1.0)
        self._loop.stop()

    def _delivered(self, consumer: str, msg: Any, now: float) -> tuple[Delivered, float]:
        seq, stamp = sequence_and_time(msg.reply, now)
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        key = str(msg_id) if msg_id else f"{self._cfg.stream}:{seq}"
        return Delivered(consumer, seq, key, msg), stamp

    def _line(self, delivered: Delivered, stamp: float) -> Line:
        msg = delivered.msg
        return Line(
            source=self.id,
            raw=msg.data.decode("utf-8", "replace"),
            read_time=stamp,
            origin=f"nats:{delivered.key}",
            path=msg.subject,
            lineno=delivered.seq,
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
                self._ledger.passed(name, int(info.ack_floor.stream_seq) if info.ack_floor else 0)
            await asyncio.sleep(FLOOR_EVERY)

    async def _listen_for_acks(self, client: Any) -> None:
        """Acknowledgements carry a reply subject, so the server confirms each one it applied
        (what nats-py's ack_sync does, without a request and a timer per message)."""
        self._ack_inbox = client.new_inbox()
        self._awaiting.clear()

        async def confirmed(msg: Any) -> None:
            delivered = self._awaiting.pop(msg.subject.rpartition(".")[2], None)
            if delivered is not None:
                self._ledger.confirmed(delivered)

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

"""What the ``nats`` handler and the ``nats`` source share: the optional client library, the
connection options, one asyncio loop in a thread, the stream, and subject checks.

The rest of logwatchd is synchronous (a handler's ``send``, a source's ``poll``), and
``nats-py`` is asyncio only: each handler or source owns a ``LoopThread`` that runs its
connection, and calls into it from its own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from logwatchd.config.handler_settings import NatsConnection
from logwatchd.errors import ConfigError, Mark

log = structlog.get_logger("logwatchd.nats")

STREAM_SUBJECTS = ("logwatchd.>",)
INSTALL_HINT = "pip install 'logwatchd[fleet]' (the nats-py client)"
CONNECT_TIMEOUT = 5.0
RECONNECT_WAIT = 0.25
MAX_SUBJECT = 1024

T = TypeVar("T")


def require(mark: Mark | None, key: str) -> None:
    """The client library is an extra: say how to get it, at the line that needs it."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise ConfigError(f"NATS needs the fleet extra: {INSTALL_HINT}", mark, key) from None


def subject_problem(subject: str) -> str | None:
    """Why a rendered subject must not be published, or None when it is fine.

    A subject is tokens separated by dots; a wildcard or an empty token would publish to
    a pattern or nowhere, and only subjects under ``logwatchd.`` reach the stream.
    """
    if not subject or len(subject) > MAX_SUBJECT:
        return "is empty or longer than 1024 characters"
    if any(char.isspace() or not char.isprintable() for char in subject):
        return "contains spaces or control characters"
    tokens = subject.split(".")
    if "" in tokens:
        return "has an empty token (two dots, or a dot at an end)"
    if any("*" in token or ">" in token for token in tokens):
        return "contains a wildcard ('*' or '>')"
    if tokens[0] != "logwatchd" or len(tokens) < 2:
        return "is not under logwatchd.> (the stream's subjects)"
    return None


def connect_options(conn: NatsConnection, *, name: str, timeout: float) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``: servers, TLS context, credentials.

    Files are read here, at connect time, so a rotated certificate or seed needs no restart.
    nats-py's own reconnecting is off: its first connect would retry forever, and a lost
    connection is simply made again by the owner (the next send, the source's loop), to
    whichever server of the list answers. Raises OSError or ssl.SSLError for unusable files.
    """
    options: dict[str, Any] = {
        "servers": list(conn.servers),
        "name": name,
        "connect_timeout": min(timeout, CONNECT_TIMEOUT),
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,  # each server of the list is tried, then the connect fails
        "reconnect_time_wait": RECONNECT_WAIT,
    }
    wants_tls = any(server.startswith("tls://") for server in conn.servers)
    if wants_tls or conn.tls_ca_file or conn.tls_cert_file:
        context = ssl.create_default_context(cafile=conn.tls_ca_file)
        if conn.tls_cert_file and conn.tls_key_file:
            context.load_cert_chain(conn.tls_cert_file, conn.tls_key_file)
        options["tls"] = context
    if conn.creds_file:
        options["user_credentials"] = conn.creds_file
    if conn.nkey_file:
        options["nkeys_seed"] = conn.nkey_file
    return options


async def connect(conn: NatsConnection, *, name: str, timeout: float, events: Events) -> Any:
    """A connected nats-py client; raises with a readable message when no server answers."""
    import nats

    options = connect_options(conn, name=name, timeout=timeout)
    try:
        client = await nats.connect(**options, **events.as_options())
    except Exception as exc:
        servers = ", ".join(conn.servers)
        raise ConnectionError(f"cannot connect to {servers}: {describe(exc)}") from None
    events.connected()
    return client


def describe(exc: BaseException) -> str:
    """An exception as a short line for logs and outbox errors (never a secret's content)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or text}"
    return text[:300]


class LoopThread:
    """One asyncio loop in a daemon thread; coroutines are run in it from other threads."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` in the loop and wait for it; TimeoutError after ``timeout``."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g}s") from None

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(callback, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs in the loop, then end the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class StreamSpec:
    """The stream a handler creates when it is missing (an existing one is left as it is)."""

    name: str
    duplicate_window: float
    max_age: float
    replicas: int


async def ensure_stream(js: Any, spec: StreamSpec) -> None:
    """Create the stream when it does not exist; a peer creating it at the same time is fine."""
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        await js.stream_info(spec.name)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(
            name=spec.name,
            subjects=list(STREAM_SUBJECTS),
            duplicate_window=spec.duplicate_window,
            max_age=spec.max_age or None,
            num_replicas=spec.replicas,
        )
        log.info("stream created", stream=spec.name, replicas=spec.replicas)
    except BadRequestError:
        await js.stream_info(spec.name)  # created by a peer meanwhile, else this raises


class Events:
    """nats-py's connection events as log lines (its default prints tracebacks); one
    warning for an outage, however many attempts it takes, and one line when it ends."""

    def __init__(self, what: dict[str, str]) -> None:
        self._what = what
        self._failing = False
        self.closing = False  # set before a close of our own: that is no disconnect to report

    async def error(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("nats connection failed", error=describe(exc), **self._what)

    async def disconnected(self) -> None:
        if not self._failing and not self.closing:
            log.warning("nats disconnected", **self._what)

    def connected(self) -> None:
        if self._failing:
            self._failing = False
            log.info("nats connected again", **self._what)

    def as_options(self) -> dict[str, Any]:
        return {"error_cb": self.error, "disconnected_cb": self.disconnected}

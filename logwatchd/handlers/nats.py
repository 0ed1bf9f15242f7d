"""Publish alerts to a NATS JetStream stream, for the fleet's aggregators and hosts.

Each alert goes out as its JSON object with ``Nats-Msg-Id`` = the alert id, and counts as
delivered only when the stream acknowledged it; a publish repeated after a lost
acknowledgement is dropped by the stream's duplicate window. The subject is a template
rendered per alert; a rendered subject that is empty, has spaces, wildcards or empty tokens,
or lies outside ``logwatchd.>`` is a permanent delivery error and is never published. Log
data reaches a subject only through what the subject template puts there.

The connection is made at the first send and kept; nats-py reconnects on its own (to any
server of the list). While it is away, sends fail at once and the outbox retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from logwatchd import natsconn
from logwatchd.config.handler_settings import NatsConnection, NatsSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import compile_setting, render_or_fail, settings_of
from logwatchd.templates import HostInfo, Templates

DEFAULT_TIMEOUT = 5.0  # for the publish acknowledgement, unless the handler sets `timeout`
RETRY_CONNECT = 1.0  # after a failed connect, sends fail at once for this long


class NatsHandler:
    concurrency = 64  # sends in flight at once (each waits for its own acknowledgement)

    def __init__(self, cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> None:
        natsconn.require(cfg.mark, f"handlers.{cfg.name}")
        settings = settings_of(cfg, NatsSettings)
        self.name = cfg.name
        self._templates = templates
        self._host = host
        self._subject = compile_setting(cfg, templates, "subject", settings.subject)
        self._connection: NatsConnection = settings.connection
        self._stream = natsconn.StreamSpec(
            name=settings.stream,
            duplicate_window=settings.duplicate_window,
            max_age=settings.max_age,
            replicas=settings.replicas,
        )
        self._timeout = cfg.timeout if "timeout" in cfg.marks else DEFAULT_TIMEOUT
        self._loop = natsconn.LoopThread(f"nats-{cfg.name}")
        self._what = {"handler": cfg.name}
        self._events = natsconn.Events(self._what)
        self._nc: Any = None
        self._js: Any = None
        self._stream_ready = False
        self._lock: asyncio.Lock | None = None
        self._retry_at = 0.0
        self._last_error = ""

    # --- what goes out ------------------------------------------------------------------

    def subject(self, alert: dict[str, Any]) -> str:
        subject = render_or_fail(self._templates, self._subject, alert, self._host).strip()
        problem = natsconn.subject_problem(subject)
        if problem is not None:
            shown = subject[:200].encode("unicode_escape").decode("ascii")
            raise DeliveryError(f'subject "{shown}" {problem}: not published', permanent=True)
        return subject

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "servers": list(self._connection.servers),
            "stream": self._stream.name,
            "messages": [{"subject": self.subject(a), "msg_id": a["id"]} for a in alerts],
        }

    def send(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            subject = self.subject(alert)
            payload = json.dumps(alert, separators=(",", ":")).encode()
            try:
                self._loop.run(
                    self._publish(subject, payload, str(alert["id"])), self._timeout + 1.0
                )
            except TimeoutError:
                raise DeliveryError(f"no acknowledgement within {self._timeout:g}s") from None

    def close(self) -> None:
        """Flush what is in flight and close the connection, then end the loop's thread."""
        self._events.closing = True
        if self._nc is not None:
            try:
                self._loop.run(self._nc.drain(), self._timeout)
            except Exception as exc:
                error = natsconn.describe(exc)
                natsconn.log.warning("nats drain failed", error=error, **self._what)
        self._loop.stop()

    # --- in the loop --------------------------------------------------------------------

    async def _publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        from nats.errors import Error as NatsError
        from nats.errors import MaxPayloadError, NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import APIError, NoStreamResponseError

        js = await self._jetstream()
        try:
            await js.publish(
                subject,
                payload,
                timeout=self._timeout,
                stream=self._stream.name,
                headers={"Nats-Msg-Id": msg_id},
            )
        except MaxPayloadError:
            raise DeliveryError(
                f"alert of {len(payload)} bytes is larger than the server's max_payload",
                permanent=True,
            ) from None
        except (NoRespondersError, NoStreamResponseError):
            self._stream_ready = False  # a NATS started afresh lost the stream: create it again
            raise DeliveryError(
                f"no stream answered for {subject} (stream {self._stream.name} missing, "
                "or JetStream unavailable)"
            ) from None
        except NatsTimeout:
            raise DeliveryError(f"no acknowledgement within {self._timeout:g}s") from None
        except (APIError, NatsError) as exc:
            raise DeliveryError(f"publish failed: {natsconn.describe(exc)}") from None

    async def _jetstream(self) -> Any:
        """The JetStream context, connecting (and creating the stream) when needed."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._nc is None or not self._nc.is_connected:
                await self._discard()
                await self._connect()
            if not self._stream_ready:
                try:
                    await natsconn.ensure_stream(self._js, self._stream)
                except Exception as exc:
                    raise DeliveryError(
                        f"stream {self._stream.name}: {natsconn.describe(exc)}"
                    ) from None
                self._stream_ready = True
            return self._js

    async def _discard(self) -> None:
        client, self._nc = self._nc, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                await client.close()

    async def _connect(self) -> None:
        if time.monotonic() < self._retry_at:
            raise DeliveryError(self._last_error)
        name = f"logwatchd {self._host.name} {self.name}"
        try:
            self._nc = await natsconn.connect(
                self._connection, name=name, timeout=self._timeout, events=self._events
            )
        except (ConnectionError, OSError, ValueError) as exc:
            self._retry_at = time.monotonic() + RETRY_CONNECT
            self._last_error = natsconn.describe(exc)
            raise DeliveryError(self._last_error) from None
        self._js = self._nc.jetstream(timeout=self._timeout)
        self._stream_ready = False

"""Real ``nats-server`` processes for the fleet tests: one server, or a cluster of three.

Every server listens on free loopback ports and keeps its JetStream store in its own
directory, so a test can kill one (``kill``), start it again on the same port and store
(``start``), and see what survived. Tests skip, with the reason in pytest's summary, when
``nats-server`` or the ``nats-py`` client is missing (``tests/run`` installs both).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import wait_for

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
)


def require_nats() -> None:
    """Skip the calling test (loudly: pytest -ra lists the reason) without server or client."""
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server; tests/run does)")
    try:
        import nats  # noqa: F401
    except ImportError:
        pytest.skip("nats-py is not installed (pip install -e '.[fleet]'; tests/run does)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One ``nats-server -js`` on loopback (or on ``host``, an address of this machine that
    daemons in network namespaces reach); ``extra_conf`` is appended to its config file."""

    def __init__(
        self, directory: Path, *, name: str = "n0", extra_conf: str = "", host: str = "127.0.0.1"
    ) -> None:
        require_nats()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.host = host
        self.port = free_port(host)
        self.url = f"nats://{host}:{self.port}"
        self.conf = self.dir / "nats.conf"
        self.conf.write_text(
            f'server_name: "{name}"\nlisten: "{host}:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.dir / "store"}" }}\n{extra_conf}\n'
        )
        self.log = self.dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> NatsServer:
        assert NATS_SERVER is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(ready, timeout)

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut of the NATS host looks like to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class NatsCluster:
    """Three servers joined by ``cluster`` routes on loopback: JetStream with R3 streams."""

    def __init__(self, directory: Path, size: int = 3, *, extra_conf: str = "") -> None:
        require_nats()
        route_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in route_ports)
        self.servers = []
        for index, port in enumerate(route_ports):
            cluster = (
                f'cluster {{ name: "lwd"\n listen: "127.0.0.1:{port}"\n routes: [{routes}] }}\n'
            )
            name = f"n{index}"
            self.servers.append(
                NatsServer(directory / name, name=name, extra_conf=cluster + extra_conf)
            )

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self) -> NatsCluster:
        for server in self.servers:
            server.start(wait=False)
        for server in self.servers:
            server.wait_ready()
        # JetStream answers only once the servers elected a meta leader
        wait_for(lambda: run(_jetstream_ready(self.urls)), timeout=30, interval=0.2)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _jetstream_ready(urls: list[str]) -> bool:
    import nats

    try:
        client = await nats.connect(urls, connect_timeout=1, allow_reconnect=False)
    except Exception:
        return False
    try:
        await client.jetstream(timeout=1).account_info()
        return True
    except Exception:
        return False
    finally:
        await client.close()


async def _stream_messages(urls: list[str], stream: str) -> list[dict[str, Any]]:
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(urls, connect_timeout=2, allow_reconnect=False)
    try:
        js = client.jetstream(timeout=5)
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return []
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                continue
            found.append(
                {
                    "seq": seq,
                    "subject": msg.subject,
                    "headers": dict(msg.headers or {}),
                    "data": json.loads(msg.data) if msg.data else None,
                }
            )
        return found
    finally:
        await client.close()


def stream_messages(urls: list[str] | str, stream: str = "LOGWATCHD") -> list[dict[str, Any]]:
    """Every message the stream holds: seq, subject, headers, data (JSON-decoded)."""
    return run(_stream_messages([urls] if isinstance(urls, str) else urls, stream))


async def _stream_info(urls: list[str], stream: str) -> Any:
    import nats

    client = await nats.connect(urls, connect_timeout=2, allow_reconnect=False)
    try:
        return await client.jetstream(timeout=5).stream_info(stream)
    finally:
        await client.close()


def stream_info(urls: list[str] | str, stream: str = "LOGWATCHD") -> Any:
    return run(_stream_info([urls] if isinstance(urls, str) else urls, stream))


async def _publish(urls: list[str], items: list[tuple[str, bytes, str | None]]) -> None:
    import nats

    client = await nats.connect(urls, connect_timeout=2, allow_reconnect=False)
    try:
        js = client.jetstream(timeout=5)
        for subject, data, msg_id in items:
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            await js.publish(subject, data, headers=headers)
    finally:
        await client.close()


def publish(urls: list[str] | str, items: list[tuple[str, bytes, str | None]]) -> None:
    """Publish (subject, payload, msg id) to JetStream, each acknowledged."""
    run(_publish([urls] if isinstance(urls, str) else urls, items))


def wait_until(predicate: Any, timeout: float = 20.0) -> Any:
    """``wait_for`` with the longer default that a NATS round trip through daemons needs."""
    return wait_for(predicate, timeout, interval=0.05)


NO_PEERS = 10005  # JetStream's "no suitable peers for placement": the cluster still forming


async def _create_stream(urls: list[str], replicas: int, duplicate_window: float) -> bool:
    """True once the stream exists; False while a fresh cluster cannot place its replicas yet
    (its meta leader answers before every peer is current)."""
    import nats
    from nats.js.errors import BadRequestError

    client = await nats.connect(urls, connect_timeout=2, allow_reconnect=False)
    try:
        await client.jetstream(timeout=10).add_stream(
            name="LOGWATCHD",
            subjects=["logwatchd.>"],
            num_replicas=replicas,
            duplicate_window=duplicate_window,
        )
    except BadRequestError as exc:
        if exc.err_code != NO_PEERS:
            raise
        return False
    finally:
        await client.close()
    return True


def create_stream(
    urls: list[str] | str, *, replicas: int = 1, duplicate_window: float = 120.0
) -> None:
    """The stream as a nats handler creates it (subjects logwatchd.>)."""
    servers = [urls] if isinstance(urls, str) else urls
    wait_until(lambda: run(_create_stream(servers, replicas, duplicate_window)), timeout=30)


async def _consumer_info(urls: list[str], name: str) -> Any:
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(urls, connect_timeout=2, allow_reconnect=False)
    try:
        return await client.jetstream(timeout=5).consumer_info("LOGWATCHD", name)
    except (NotFoundError, nats.errors.TimeoutError):
        return None  # not there yet (a busy cluster may also take a while to answer)
    finally:
        await client.close()


def consumer_info(urls: list[str] | str, name: str) -> Any:
    """The consumer's info, or None while it does not exist (or the servers do not answer)."""
    return run(_consumer_info([urls] if isinstance(urls, str) else urls, name))


class AckDroppingProxy:
    """A TCP proxy in front of a nats-server that can lose a client's acknowledgements.

    Everything passes both ways, except that while ``dropping`` is set, the client's
    ``PUB``/``HPUB`` commands to ``$JS.ACK.*`` subjects (message acknowledgements) never
    reach the server: the client believes it acknowledged, the server redelivers after the
    consumer's ack_wait. This is the window between a commit and its acknowledgements that
    a kill -9 can hit, made as wide as a test needs.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.dropping = False
        self.dropped = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        down = asyncio.ensure_future(self._pipe(up_reader, writer))
        try:
            await self._filter(reader, up_writer)
        finally:
            down.cancel()
            up_writer.close()
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _filter(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while data := await reader.read(65536):
            buffer += data
            out, buffer = self._commands(buffer)
            if out:
                writer.write(out)
                await writer.drain()

    def _commands(self, buffer: bytes) -> tuple[bytes, bytes]:
        """Forward whole protocol commands, minus dropped acknowledgements; keep the rest."""
        out = bytearray()
        while (end := buffer.find(b"\r\n")) != -1:
            line = buffer[:end]
            parts = line.split()
            op = parts[0].upper() if parts else b""
            size = 0
            if op in (b"PUB", b"HPUB"):
                size = int(parts[-1]) + 2  # the payload and its CRLF follow the line
                if len(buffer) < end + 2 + size:
                    break
            command, buffer = buffer[: end + 2 + size], buffer[end + 2 + size :]
            if self.dropping and op in (b"PUB", b"HPUB") and parts[1].startswith(b"$JS.ACK."):
                self.dropped += 1
                continue
            out += command
        return bytes(out), buffer

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

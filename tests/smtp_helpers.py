"""Real servers for handler and outbox tests: aiosmtpd SMTP and an HTTP webhook receiver.

aiosmtpd's Controller needs a concrete free port (port=0 is unsupported). TLS uses a
self-signed certificate made at test time with the openssl command line tool.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = "alerts"
PASSWORD = "s3cret pass"  # noqa: S105 - the test server's own


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also its own CA for the client)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed for TLS tests")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


@dataclass
class Mailbox:
    """What the server accepted; tests poll it."""

    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_with: str | None = None  # e.g. "451 try later": answer DATA with this

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_with:
            return self.fail_with
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), message, raw)  # type: ignore[arg-type]
            )
        return "250 OK"

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == USER.encode()
        and data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@contextlib.contextmanager
def smtp_server(
    mailbox: Mailbox,
    *,
    port: int | None = None,
    tls: str = "none",
    cert: tuple[Path, Path] | None = None,
    auth: bool = False,
) -> Iterator[int]:
    """Run a server until the block ends; yields its port. tls: none | starttls | tls."""
    port = port or free_port()
    kwargs: dict[str, Any] = {}
    if tls != "none":
        assert cert is not None
        context = server_context(*cert)
        if tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            kwargs.update(ssl_context=context, auth_require_tls=False)  # aiosmtpd#281
    if auth:
        kwargs.update(authenticator=authenticator, auth_required=True)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def make_alert(
    n: int = 0, *, key: dict[str, Any] | None = None, raw: str = "", **over: Any
) -> dict[str, Any]:
    """An alert object (README: "The alert object") as the outbox hands it to a handler."""
    from logwatchd.alerts import Alert

    key = {"ip": f"203.0.113.{n % 250}"} if key is None else key
    alert = Alert(
        id=f"{n:032x}", rule=over.pop("rule", "ssh-bruteforce"),
        severity=over.pop("severity", "high"), tags=["ssh"], key=key, count=5, suppressed=0,
        first_seen=1_700_000_000.0, last_seen=1_700_000_060.0, fired_at=1_700_000_060.5,
        host="web1", source="auth", path="/var/log/auth.log",
        raw=raw or f"Failed password for root from {key.get('ip', '?')} port 22 ssh2 #{n}",
        fields={**key, "program": "sshd"}, events=[raw or "sample"],
    )  # fmt: skip
    data = alert.to_dict()
    data.update(over)
    return data


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookServer:
    """A loopback HTTP server answering with scripted statuses (then ``default``)."""

    def __init__(self, statuses: list[int] | None = None, *, default: int = 200,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.requests: list[HttpRequest] = []
        self._statuses = list(statuses or [])
        self._default = default
        self._headers = headers or {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = server._record(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in server._headers.items():
                    self.send_header(name, value)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_PUT = do_POST

            def log_message(self, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.requests.append(HttpRequest(method, path, headers, body))
            return self._statuses.pop(0) if self._statuses else self._default

    def snapshot(self) -> list[HttpRequest]:
        with self._lock:
            return list(self.requests)

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

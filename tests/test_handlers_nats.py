"""The ``nats`` handler against a real nats-server: what it publishes, what it refuses, and
how it lives through the server going away."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logwatchd.alerts import sample_alert
from logwatchd.config import load_text
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ConfigError, DeliveryError
from logwatchd.handlers import build_handler
from logwatchd.templates import HostInfo, Templates
from tests.nats_helpers import NatsServer, stream_info, stream_messages

HOST = HostInfo("web1", "web1.example.com")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats = NatsServer(tmp_path / "nats").start()
    yield nats
    nats.kill()


def handler_config(tmp_path: Path, settings: str) -> HandlerConfig:
    text = textwrap.dedent(
        """\
        version: 1
        sources: [{id: app, type: stdin, parser: none}]
        handlers:
          fleet:
            type: nats
        """
    ) + textwrap.indent(textwrap.dedent(settings), "    ")
    return load_text(text, "c.yaml", base_dir=str(tmp_path)).handlers["fleet"]


def make(tmp_path: Path, settings: str) -> Any:
    return build_handler(handler_config(tmp_path, settings), templates=Templates(), host=HOST)


def alert(**changes: Any) -> dict[str, Any]:
    item = copy.deepcopy(sample_alert())
    item["host"] = "web1"
    item.update(changes)
    return item


def test_publishes_the_alert_object_with_its_id_and_the_stream_drops_a_repeat(
    tmp_path: Path, server: NatsServer
) -> None:
    handler = make(tmp_path, f"servers: [{server.url}]\nduplicate_window: 5m\nmax_age: 1d\n")
    try:
        first = alert(id="a" * 32)
        handler.send([first])
        handler.send([first])  # a retry after a lost acknowledgement
        handler.send([alert(id="b" * 32)])
    finally:
        handler.close()
    messages = stream_messages(server.url)
    assert [m["headers"]["Nats-Msg-Id"] for m in messages] == ["a" * 32, "b" * 32]
    assert messages[0]["subject"] == "logwatchd.alerts.web1.sample-rule"
    assert messages[0]["data"] == first
    config = stream_info(server.url).config
    assert config.subjects == ["logwatchd.>"]
    assert (config.duplicate_window, config.max_age, config.num_replicas) == (300.0, 86400.0, 1)


def test_the_subject_is_rendered_per_alert(tmp_path: Path, server: NatsServer) -> None:
    handler = make(
        tmp_path,
        f"servers: [{server.url}]\n"
        'subject: \'logwatchd.fail.{{ alert.key.ip | replace(".", "-") }}.{{ alert.host }}\'\n',
    )
    try:
        handler.send([alert(id="1" * 32, key={"ip": "198.51.100.7"})])
        handler.send([alert(id="2" * 32, key={"ip": "2001:db8::1"}, host="web2")])
    finally:
        handler.close()
    subjects = [m["subject"] for m in stream_messages(server.url)]
    assert subjects == ["logwatchd.fail.198-51-100-7.web1", "logwatchd.fail.2001:db8::1.web2"]


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("bob smith", "contains spaces or control characters"),
        ("bob\nlogwatchd.x", "contains spaces or control characters"),
        ("*", "contains a wildcard"),
        ("a.>", "contains a wildcard"),
        ("", "has an empty token"),
        ("a..b", "has an empty token"),
    ],
)
def test_a_rendered_subject_that_is_not_one_subject_is_never_published(
    tmp_path: Path, server: NatsServer, user: str, problem: str
) -> None:
    """Log data reaches the subject only through the template: whatever it holds, it cannot
    turn a publish into a wildcard or move it to another subject."""
    subject = "subject: 'logwatchd.u.{{ alert.key.user }}'\n"
    handler = make(tmp_path, f"servers: [{server.url}]\n" + subject)
    try:
        handler.send([alert(id="0" * 32, key={"user": "ok"})])  # creates the stream
        with pytest.raises(DeliveryError) as info:
            handler.send([alert(id="1" * 32, key={"user": user})])
    finally:
        handler.close()
    assert info.value.permanent
    assert problem in str(info.value)
    assert [m["subject"] for m in stream_messages(server.url)] == ["logwatchd.u.ok"]


def test_a_subject_outside_the_stream_is_a_config_error_at_check(tmp_path: Path) -> None:
    pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[fleet]')")
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            version: 1
            sources: [{id: app, type: stdin, parser: none}]
            handlers:
              fleet:
                type: nats
                subject: 'alerts.{{ alert.rule }}'
            rules:
              - {id: r, match: {field: message, contains: x}, handlers: [fleet]}
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "logwatchd", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "c.yaml:6: handlers.fleet.subject: " in result.stderr
    assert "is not under logwatchd.>" in result.stderr


def test_a_server_that_is_down_is_a_retryable_error_and_the_next_send_reconnects(
    tmp_path: Path, server: NatsServer
) -> None:
    handler = make(tmp_path, f"servers: [{server.url}]\ntimeout: 2s\n")
    try:
        handler.send([alert(id="1" * 32)])
        server.kill()
        started = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            handler.send([alert(id="2" * 32)])
        assert not info.value.permanent
        assert time.monotonic() - started < 4.0
        server.start()
        time.sleep(1.1)  # a failed connect is not retried for a second (no connect storm)
        handler.send([alert(id="2" * 32)])
    finally:
        handler.close()
    ids = [m["headers"]["Nats-Msg-Id"] for m in stream_messages(server.url)]
    assert ids == ["1" * 32, "2" * 32]


def test_several_servers_the_one_that_answers_is_used(tmp_path: Path, server: NatsServer) -> None:
    from tests.nats_helpers import free_port

    dead = f"nats://127.0.0.1:{free_port()}"
    handler = make(tmp_path, f"servers: [{dead}, {server.url}]\n")
    try:
        for index in range(5):
            handler.send([alert(id=f"{index:032d}")])
    finally:
        handler.close()
    assert len(stream_messages(server.url)) == 5


def test_the_stream_is_created_again_when_a_fresh_server_lost_it(
    tmp_path: Path, server: NatsServer
) -> None:
    handler = make(tmp_path, f"servers: [{server.url}]\n")
    try:
        handler.send([alert(id="1" * 32)])
        server.kill()
        subprocess.run(["rm", "-rf", str(server.dir / "store")], check=True)
        server.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                handler.send([alert(id="2" * 32)])
                break
            except DeliveryError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        handler.close()
    assert [m["headers"]["Nats-Msg-Id"] for m in stream_messages(server.url)] == ["2" * 32]


def test_preview_shows_subject_and_id_and_sends_nothing(tmp_path: Path, server: NatsServer) -> None:
    handler = make(tmp_path, f"servers: [{server.url}]\n")
    try:
        preview = handler.preview([alert(id="1" * 32)])
    finally:
        handler.close()
    subject = "logwatchd.alerts.web1.sample-rule"
    assert preview["messages"] == [{"subject": subject, "msg_id": "1" * 32}]
    assert stream_messages(server.url) == []


# --- credentials ----------------------------------------------------------------------------


def test_an_nkey_seed_file_authenticates(tmp_path: Path) -> None:
    nkeys = pytest.importorskip("nkeys", reason="nkeys is part of the fleet extra")

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    server = NatsServer(
        tmp_path / "nats", extra_conf=f'authorization {{ users: [ {{ nkey: "{public}" }} ] }}'
    ).start()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed + b"\n")
    seed_file.chmod(0o600)
    try:
        handler = make(tmp_path, f"servers: [{server.url}]\nnkey_file: user.nk\n")
        try:
            handler.send([alert(id="1" * 32)])
        finally:
            handler.close()
        anonymous = make(tmp_path, f"servers: [{server.url}]\n")
        try:
            with pytest.raises(DeliveryError) as info:
                anonymous.send([alert(id="2" * 32)])
        finally:
            anonymous.close()
        assert not info.value.permanent
        assert "cannot connect" in str(info.value)
        assert seed.decode() not in str(info.value)
    finally:
        server.kill()


def make_certificates(directory: Path) -> dict[str, Path]:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate."""
    files = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key",
                                                          "client", "client-key")}  # fmt: skip

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", str(files["ca-key"]), "-out", str(files["ca"]))  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        request = directory / f"{name}.csr"
        ext = directory / f"{name}.ext"
        ext.write_text(extension + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(files[f"{name}-key"]), "-out", str(request))  # fmt: skip
        openssl("x509", "-req", "-in", str(request), "-CA", str(files["ca"]),
                "-CAkey", str(files["ca-key"]), "-CAcreateserial", "-days", "2",
                "-extfile", str(ext), "-out", str(files[name]))  # fmt: skip
    return files


def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    tls = (
        f'tls {{ cert_file: "{certs["server"]}"\n key_file: "{certs["server-key"]}"\n'
        f' ca_file: "{certs["ca"]}"\n verify: true }}'
    )
    server = NatsServer(tmp_path / "nats", extra_conf=tls).start()
    url = f"tls://127.0.0.1:{server.port}"
    try:
        handler = make(
            tmp_path,
            f"servers: [{url}]\n"
            f"tls: {{ca_file: ca.pem, cert_file: client.pem, key_file: client-key.pem}}\n",
        )
        try:
            handler.send([alert(id="1" * 32)])
        finally:
            handler.close()
        no_cert = make(tmp_path, f"servers: [{url}]\ntls: {{ca_file: ca.pem}}\n")
        try:
            with pytest.raises(DeliveryError):
                no_cert.send([alert(id="2" * 32)])
        finally:
            no_cert.close()
        assert stored_over_tls(server.port, certs) == 1
    finally:
        server.kill()


def stored_over_tls(port: int, certs: dict[str, Path]) -> int:
    """How many messages the stream holds, asked over TLS with the client certificate."""
    import asyncio
    import ssl

    import nats

    async def count() -> int:
        context = ssl.create_default_context(cafile=str(certs["ca"]))
        context.load_cert_chain(str(certs["client"]), str(certs["client-key"]))
        client = await nats.connect(f"tls://127.0.0.1:{port}", tls=context, allow_reconnect=False)
        try:
            info = await client.jetstream().stream_info("LOGWATCHD")
            return int(info.state.messages)
        finally:
            await client.close()

    return asyncio.run(count())


# --- configuration ----------------------------------------------------------------------------


def config_error(tmp_path: Path, settings: str) -> str:
    with pytest.raises(ConfigError) as info:
        handler_config(tmp_path, settings)
    return str(info.value)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("servers: [http://x:1]\n", 'c.yaml:6: handlers.fleet.servers[0]: "http://x:1" is not'),
        ("servers: ['nats://u:p@x:4222']\n", "c.yaml:6: handlers.fleet.servers[0]: put no user"),
        ("stream: 'A.B'\n", 'c.yaml:6: handlers.fleet.stream: "A.B" is not a stream name'),
        ("replicas: 7\n", "c.yaml:6: handlers.fleet.replicas: must be at most 5"),
        ("tls: {cert_file: c.pem}\n", "c.yaml:6: handlers.fleet.tls: a client certificate needs"),
        ("creds_file: a\nnkey_file: b\n", "c.yaml:6: handlers.fleet.creds_file: give either"),
        ("subject: '{{ alert.rule'\n", "c.yaml:6: handlers.fleet.subject: template syntax error"),
        ("stream_name: X\n", "c.yaml:6: handlers.fleet.stream_name: unknown key 'stream_name'"),
    ],
)
def test_config_errors_name_file_line_and_key(tmp_path: Path, settings: str, expected: str) -> None:
    assert config_error(tmp_path, settings).startswith(expected)


def test_defaults_retry_for_about_a_week_of_outage(tmp_path: Path) -> None:
    cfg = handler_config(tmp_path, "stream: LOGWATCHD\n")
    assert cfg.settings.subject == "logwatchd.alerts.{{ alert.host }}.{{ alert.rule }}"
    assert (cfg.retry.backoff, cfg.retry.max_backoff) == (1.0, 60.0)
    assert cfg.retry.max_attempts * cfg.retry.max_backoff >= 7 * 86400


def test_without_the_client_library_check_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = handler_config(tmp_path, "stream: LOGWATCHD\n")
    monkeypatch.setitem(sys.modules, "nats", None)  # import nats now raises ImportError
    with pytest.raises(ConfigError) as info:
        build_handler(cfg, templates=Templates(), host=HOST)
    assert str(info.value) == (
        "c.yaml:4: handlers.fleet: NATS needs the fleet extra: "
        "pip install 'logwatchd[fleet]' (the nats-py client)"
    )


def test_check_names_a_credentials_file_it_cannot_read(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            version: 1
            sources: [{id: app, type: stdin, parser: none}]
            handlers:
              fleet:
                type: nats
                tls: {ca_file: missing-ca.pem}
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "logwatchd", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"c.yaml:6: handlers.fleet.tls.ca_file: {tmp_path}/missing-ca.pem is not readable" in (
        result.stderr
    )

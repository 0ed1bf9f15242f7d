"""The email handler against a real aiosmtpd server: plain, STARTTLS + AUTH, implicit TLS."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from logwatchd.config import load_text
from logwatchd.config.handler_settings import EmailSettings, SmtpSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ConfigError, DeliveryError, Mark
from logwatchd.handlers import build_handler
from logwatchd.templates import HostInfo, Templates
from tests.smtp_helpers import (
    PASSWORD,
    USER,
    Mailbox,
    free_port,
    make_alert,
    make_certificate,
    smtp_server,
)

HOST = HostInfo(name="web1", fqdn="web1.example.com")
TO = ("ops@example.com", "oncall@example.com")
HOSTILE = [
    "$(touch /tmp/x)",
    "`id`",
    "a; rm -rf /",
    "a | cat",
    "a && b",
    "\"quoted\" 'single'",
    "-rf",
    "nul\x00byte",
    "\r\nBcc: evil@example.com",
    "x\nBcc: evil2@example.com\r\nX-Evil: 1",
]


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def handler(port: int, cc: tuple[str, ...] = (), marks: dict[str, Mark] | None = None,
            **smtp: Any) -> Any:  # fmt: skip
    settings = EmailSettings(
        to=TO,
        subject="[{{ alert.severity }}] {{ alert.rule }} {{ alert.key.ip }}",
        body="{{ alert.count }} x {{ alert.rule }}; last line: {{ alert.event.raw }}",
        sender="logwatchd@example.com",
        cc=cc,
        smtp=SmtpSettings(host="127.0.0.1", port=port, timeout=10, **smtp),
    )
    cfg = HandlerConfig(
        name="mail-admin", type="email", timeout=10, settings=settings, marks=marks or {}
    )
    return build_handler(cfg, templates=Templates(), host=HOST)


def test_one_alert_is_one_mail_with_configured_headers() -> None:
    box = Mailbox()
    with smtp_server(box) as port:
        handler(port).send([make_alert(7)])
    [got] = box.snapshot()
    msg = got.message
    assert got.mail_from == "logwatchd@example.com"
    assert got.rcpt_tos == list(TO)
    assert msg["Subject"] == "[high] ssh-bruteforce 203.0.113.7"
    assert msg["Message-ID"] == f"<{7:032x}.mail-admin@logwatchd>"
    assert msg["Date"]
    assert "5 x ssh-bruteforce; last line: Failed password for root" in msg.get_content()


def test_hostile_fields_add_no_recipient_and_no_header() -> None:
    box = Mailbox()
    big = "A" * 100_000
    alerts = [make_alert(i, key={"ip": text}, raw=text) for i, text in enumerate([*HOSTILE, big])]
    with smtp_server(box) as port:
        mail = handler(port)
        for alert in alerts:
            mail.send([alert])
    received = box.snapshot()
    assert len(received) == len(alerts)
    expected_headers = {
        "from", "to", "date", "message-id", "subject", "x-logwatchd-alert-ids",
        "content-type", "content-transfer-encoding", "mime-version",
    }  # fmt: skip
    for got in received:
        assert got.rcpt_tos == list(TO)
        assert {name.lower() for name in got.message} <= expected_headers
        assert got.message["Bcc"] is None
        assert got.message["X-Evil"] is None
        assert "\n" not in got.message["Subject"]
        assert b"\nBcc:" not in got.raw.split(b"\r\n\r\n", 1)[0]
        assert len(got.message["Subject"]) <= 250
    bodies = [got.message.get_content() for got in received]
    assert "$(touch /tmp/x)" in bodies[0]
    assert big in bodies[-1].replace("\n", "")


def test_cc_recipients_are_in_the_envelope_and_header() -> None:
    box = Mailbox()
    with smtp_server(box) as port:
        handler(port, cc=("audit@example.com",)).send([make_alert(8)])
    [got] = box.snapshot()
    assert got.rcpt_tos == [*TO, "audit@example.com"]
    assert got.message["Cc"] == "audit@example.com"


def test_digest_lists_every_alert_in_one_mail() -> None:
    box = Mailbox()
    alerts = [make_alert(i) for i in range(3)]
    with smtp_server(box) as port:
        handler(port).send(alerts)
    [got] = box.snapshot()
    body = got.message.get_content()
    assert got.message["Subject"].startswith("[logwatchd] 3 alerts on web1")
    for i in range(3):
        assert f"203.0.113.{i}" in body
    assert got.message["Message-ID"].startswith("<digest-")


def test_starttls_with_auth_and_password_file(cert: tuple[Path, Path], tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    box = Mailbox()
    with smtp_server(box, tls="starttls", cert=cert, auth=True) as port:
        handler(
            port, tls="starttls", username=USER, password_file=str(secret), ca_file=str(cert[0])
        ).send([make_alert(1)])
    assert len(box.snapshot()) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_systemd_credential(
    cert: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mail-admin").write_text(PASSWORD)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    box = Mailbox()
    with smtp_server(box, tls="tls", cert=cert, auth=True) as port:
        handler(port, tls="tls", username=USER, ca_file=str(cert[0])).send([make_alert(2)])
    assert len(box.snapshot()) == 1


def test_wrong_password_is_a_retryable_failure(cert: tuple[Path, Path], tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("wrong")
    box = Mailbox()
    with smtp_server(box, tls="starttls", cert=cert, auth=True) as port:
        mail = handler(
            port, tls="starttls", username=USER, password_file=str(secret), ca_file=str(cert[0])
        )
        with pytest.raises(DeliveryError) as caught:
            mail.send([make_alert(3)])
    assert not caught.value.permanent
    assert "wrong" not in str(caught.value)
    assert box.snapshot() == []


def test_untrusted_certificate_never_falls_back_to_plaintext(cert: tuple[Path, Path]) -> None:
    box = Mailbox()
    with (
        smtp_server(box, tls="starttls", cert=cert) as port,
        pytest.raises(DeliveryError) as caught,
    ):
        handler(port, tls="starttls").send([make_alert(4)])
    assert not caught.value.permanent
    assert box.snapshot() == []


def test_verify_false_accepts_a_self_signed_server(cert: tuple[Path, Path]) -> None:
    box = Mailbox()
    with smtp_server(box, tls="starttls", cert=cert) as port:
        handler(port, tls="starttls", verify=False).send([make_alert(4)])
    assert len(box.snapshot()) == 1


def test_nothing_listening_is_retryable() -> None:
    with pytest.raises(DeliveryError) as caught:
        handler(free_port()).send([make_alert(5)])
    assert not caught.value.permanent


@pytest.mark.parametrize(("reply", "permanent"), [("451 4.3.0 try later", False),
                                                  ("554 5.7.1 rejected", True)])  # fmt: skip
def test_4xx_is_retried_and_5xx_is_permanent(reply: str, permanent: bool) -> None:
    box = Mailbox(fail_with=reply)
    with smtp_server(box) as port, pytest.raises(DeliveryError) as caught:
        handler(port).send([make_alert(6)])
    assert caught.value.permanent is permanent


def test_template_error_names_the_handler_key() -> None:
    cfg = HandlerConfig(
        name="m", type="email",
        settings=EmailSettings(to=TO, subject="{{ alert.rule ", body="", smtp=SmtpSettings("x")),
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        build_handler(cfg, templates=Templates(), host=HOST)
    assert caught.value.key == "handlers.m.subject"


def test_a_value_one_alert_lacks_renders_empty_and_is_logged_once() -> None:
    box = Mailbox()
    with smtp_server(box) as port, capture_logs() as logs:
        mail = handler(port, marks={"subject": Mark("conf.yaml", 9)})
        for n in range(3):  # the subject wants key.ip
            mail.send([make_alert(n, key={"user": "root"})])
    assert [m.message["Subject"] for m in box.snapshot()] == ["[high] ssh-bruteforce"] * 3
    missing = [entry for entry in logs if entry["event"].startswith("a template value")]
    assert [(e["handler"], e["field"], e["template"]) for e in missing] == [
        ("mail-admin", "ip", "conf.yaml:9: handlers.mail-admin.subject")
    ]


def test_template_failing_on_one_alert_falls_back_and_still_delivers() -> None:
    box = Mailbox()
    with smtp_server(box) as port:
        mail = handler(port, marks={"subject": Mark("conf.yaml", 9)})
        mail._subject = mail._templates.compile("{{ alert.count + 'x' }}", "conf.yaml:9: subj")
        mail.send([make_alert(1, key={"user": "root"})])
    [got] = box.snapshot()
    assert got.message["Subject"] == "[high] ssh-bruteforce on web1"
    body = got.message.get_content()
    note = "(the configured template failed: conf.yaml:9: subj: TypeError"
    assert body.startswith(note)
    assert "root" in body


OFFLINE = handler(25)  # builds messages only; an SSL context per example would be slow


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_no_text_in_a_field_changes_the_header_set(text: str) -> None:
    msg = OFFLINE.message([make_alert(1, key={"ip": text}, raw=text)])
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    names = sorted(name.lower() for name in parsed)
    assert names == sorted(
        ["from", "to", "date", "message-id", "x-logwatchd-alert-ids", "subject",
         "content-type", "content-transfer-encoding", "mime-version"]
    )  # fmt: skip
    assert parsed["To"] == ", ".join(TO)
    assert "\n" not in str(parsed["Subject"]) and "\r" not in str(parsed["Subject"])


def test_a_carriage_return_in_a_field_cannot_forge_lines_of_the_body(tmp_path: Path) -> None:
    box = Mailbox()
    template = tmp_path / "body.txt"
    template.write_bytes(b"Rule: {{ alert.rule }}\r\nLine: {{ alert.event.raw }}\r\nEnd\r\n")
    forged = "Failed password\rRule: harmless\u2028Count: 0"
    with smtp_server(box) as port:
        mail = handler(port)
        mail.send([make_alert(1, raw=forged)])
        text = (
            "version: 1\nsources: [{id: app, type: stdin, parser: none}]\nhandlers:\n"
            f"  crlf: {{type: email, to: {TO[0]}, smtp: {{host: 127.0.0.1, port: {port}}},\n"
            f"         body_file: {template.name}}}\n"
        )
        crlf = load_text(text, "c.yaml", base_dir=str(tmp_path)).handlers["crlf"]
        build_handler(crlf, templates=Templates(), host=HOST).send(
            [make_alert(2, raw="a CRLF file's line\r")]
        )
    first, second = (got.message.get_content().splitlines() for got in box.snapshot())
    assert first == [
        "5 x ssh-bruteforce; last line: Failed password\\rRule: harmless\\u2028Count: 0"
    ]
    assert second == ["Rule: ssh-bruteforce", "Line: a CRLF file's line", "End"]

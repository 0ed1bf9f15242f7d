"""A webhook's secrets (userinfo, query values, path tokens, header files) never reach the
daemon's log, `status` or `test --execute`; the URL is shown with them masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from logwatchd.config.handler_settings import WebhookSettings
from logwatchd.config.model import HandlerConfig, RetryConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import build_handler
from logwatchd.handlers.redact import Scrubber, redact_url
from logwatchd.templates import HostInfo, Templates
from tests.daemon_helpers import DaemonProcess, app_config, logwatchd, wait_for, write_config
from tests.smtp_helpers import free_port, make_alert

SECRETS = ("alice", "s3cretPass", "AbCdEfGhIjKlMnOpQrStUvWx", "tok3nValue", "h3aderSecret")


def secret_url(port: int) -> str:
    return (
        f"http://alice:s3cretPass@127.0.0.1:{port}/services/T0001ABCD/B0002EFGH/"
        "AbCdEfGhIjKlMnOpQrStUvWx?token=tok3nValue&channel=ops"
    )


def shown_url(port: int) -> str:
    return f"http://***@127.0.0.1:{port}/services/T0001ABCD/B0002EFGH/***?token=***&channel=***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@h.example/x", "https://***@h.example/x"),
        ("https://h.example/hook?token=abc&v=2", "https://h.example/hook?token=***&v=***"),
        (
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://hooks.slack.com/services/T00000000/B00000000/***",
        ),
        (
            "https://discord.com/api/webhooks/123456789012345678/aBcD-eFgH_iJkLmNoPqRsTuV",
            "https://discord.com/api/webhooks/***/***",
        ),
        ("https://alerts.example.com/api/v2/alerts", "https://alerts.example.com/api/v2/alerts"),
        (
            "https://h.example/a-long-plain-path-segment",
            "https://h.example/a-long-plain-path-segment",
        ),
    ],
)
def test_redact_url_masks_credentials_and_tokens_but_keeps_names(url, shown):
    assert redact_url(url) == shown


def test_a_library_error_quoting_a_header_from_a_file_is_scrubbed(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("Bearer h3aderSecret\n")
    cfg = HandlerConfig(
        name="hook",
        type="webhook",
        timeout=5,
        retry=RetryConfig(),
        settings=WebhookSettings(secret_url(9), header_files={"Authorization": str(token)}),
    )
    handler = build_handler(cfg, templates=Templates(), host=HostInfo("h", "h"))

    def fails(request: Any, timeout: float) -> None:
        raise ValueError(f"cannot send {request.full_url} with {request.headers}")

    monkeypatch.setattr(handler._opener, "open", fails)
    with pytest.raises(DeliveryError) as failed:
        handler.send([make_alert(1)])
    message = str(failed.value)
    assert message.startswith("unexpected ValueError: cannot send ")
    assert not [s for s in SECRETS if s in message], message
    assert f"{shown_url(9)} with " in message
    assert "'Authorization': '***'" in message


def test_scrubber_masks_longest_first_and_ignores_tiny_values():
    scrub = Scrubber(["abcd", "abcdefgh", "x"])
    assert scrub("abcdefgh abcd x") == "*** *** x"
    scrub.add_header_value("Bearer 0123456789")
    assert scrub("token 0123456789") == "token ***"


def config(tmp_path: Path, port: int) -> dict[str, Any]:
    token = tmp_path / "token"
    token.write_text("Bearer h3aderSecret\n")
    hook = {
        "type": "webhook",
        "url": secret_url(port),
        "header_files": {"Authorization": str(token)},
        "retry": {"max_attempts": 2, "backoff": "100ms"},
    }
    return app_config(tmp_path, handler=hook)


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_a_failing_webhook_never_shows_its_secrets(tmp_path):
    port = free_port()  # nothing listens: connection refused
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, port))
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        with log.open("a") as handle:
            handle.write("2026-11-26 10:00:00 Breach - IP: 203.0.113.9\n")
        failed = wait_for(
            lambda: [e for e in daemon.log_events() if e.get("event") == "delivery failed"]
        )
        assert failed[0]["error"].startswith(shown_url(port) + ": ")
        retried = [e for e in daemon.log_events() if "will retry" in e.get("event", "")]
        assert retried
        assert daemon.terminate() == 0
        assert leaked(daemon.stderr()) == []

    status = logwatchd("status", "-c", str(path), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["outbox"]["sink"]["last_error"].startswith(shown_url(port))
    assert leaked(status.stdout) == []
    assert leaked(logwatchd("status", "-c", str(path)).stdout) == []

    replay = logwatchd("test", "-c", str(path), "--execute", str(log))
    assert f"handler sink failed: {shown_url(port)}: " in replay.stderr
    assert leaked(replay.stdout + replay.stderr) == []

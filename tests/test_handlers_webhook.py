"""The webhook handler against a loopback HTTP server: JSON, templated body, Alertmanager v2."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from logwatchd.alerts import Alert
from logwatchd.clock import SystemClock
from logwatchd.config.handler_settings import WebhookSettings
from logwatchd.config.model import HandlerConfig, RetryConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import build_handler
from logwatchd.handlers.webhook import label_name, retry_after
from logwatchd.outbox import Dispatcher
from logwatchd.state import StateStore
from logwatchd.templates import HostInfo, Templates
from tests.smtp_helpers import WebhookServer, free_port, make_alert

HOST = HostInfo(name="web1", fqdn="web1.example.com")


def config(url: str, **settings: Any) -> HandlerConfig:
    return HandlerConfig(
        name="hook",
        type="webhook",
        timeout=5,
        retry=RetryConfig(max_attempts=10, backoff=0.05, max_backoff=0.2),
        settings=WebhookSettings(url, **settings),
    )


def webhook(url: str, **settings: Any) -> Any:
    return build_handler(config(url, **settings), templates=Templates(), host=HOST)


def test_posts_the_alert_as_json_with_headers(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("Bearer t0ken\n")
    alert = make_alert(1, key={"user": "root\r\nX-Evil: 1 \u2603é"})
    with WebhookServer() as server:
        webhook(
            server.url,
            headers={"X-Rule": "{{ alert.rule }}", "X-User": "{{ alert.key.user }}"},
            header_files={"Authorization": str(token)},
        ).send([alert])
    [request] = server.snapshot()
    assert request.method == "POST"
    assert json.loads(request.body) == alert
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Rule"] == "ssh-bruteforce"
    assert request.headers["X-User"] == "root X-Evil: 1 ?é"
    assert "X-Evil" not in request.headers
    assert request.headers["Authorization"] == "Bearer t0ken"


def test_templated_body() -> None:
    with WebhookServer() as server:
        webhook(
            server.url, body='{"text": {{ (alert.rule ~ " " ~ alert.event.raw) | tojson }}}'
        ).send([make_alert(2, raw='quote " and \\ backslash')])
    body = json.loads(server.snapshot()[0].body)
    assert body == {"text": 'ssh-bruteforce quote " and \\ backslash'}


def test_alertmanager_format() -> None:
    alert = make_alert(3, key={"ip": "192.0.2.7", "user-name": "root", "host": "db1"})
    with WebhookServer() as server:
        webhook(server.url, format="alertmanager").send([alert])
    [posted] = json.loads(server.snapshot()[0].body)
    assert posted["labels"] == {
        "alertname": "ssh-bruteforce",
        "severity": "high",
        "rule": "ssh-bruteforce",
        "host": "web1",
        "ip": "192.0.2.7",
        "user_name": "root",
        "key_host": "db1",
    }
    assert posted["annotations"]["raw"] == alert["event"]["raw"]
    assert posted["annotations"]["count"] == "5"
    assert "ssh-bruteforce" in posted["annotations"]["summary"]
    assert posted["startsAt"] == alert["first_seen"]
    assert set(posted) == {"labels", "annotations", "startsAt"}


@pytest.mark.parametrize(
    ("field", "label"), [("ip", "ip"), ("9lives", "_9lives"), ("__x", "key_x"), ("a.b", "a_b")]
)
def test_label_names_are_valid_prometheus_names(field: str, label: str) -> None:
    assert label_name(field) == label


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (503, False), (408, False), (429, False),
                              (400, True), (404, True), (301, True), (307, True)],
)  # fmt: skip
def test_status_classification(status: int, permanent: bool) -> None:
    with WebhookServer([status]) as server:
        with pytest.raises(DeliveryError) as caught:
            webhook(server.url).send([make_alert(4)])
        assert caught.value.permanent is permanent
        assert len(server.snapshot()) == 1  # a redirect is not followed


def test_retry_after_is_passed_on() -> None:
    server = WebhookServer([503], headers={"Retry-After": "7"})
    with server, pytest.raises(DeliveryError) as caught:
        webhook(server.url).send([make_alert(5)])
    assert caught.value.retry_after == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_nothing_listening_is_retryable() -> None:
    with pytest.raises(DeliveryError) as caught:
        webhook(f"http://127.0.0.1:{free_port()}/x").send([make_alert(6)])
    assert not caught.value.permanent


def _alert(n: int, handlers: tuple[str, ...]) -> Alert:
    return Alert(
        id=f"w{n:031x}", rule="r", severity="low", tags=[], key={"n": n}, count=1, suppressed=0,
        first_seen=1.0, last_seen=1.0, fired_at=1.0, host="web1", source="s", path=None,
        raw=f"line {n}", fields={}, handlers=handlers,
    )  # fmt: skip


def test_five_500s_then_200_delivers_once_through_the_outbox(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    StateStore(db).commit(alerts=[_alert(1, ("hook",))])
    with WebhookServer([500] * 5) as server:
        cfg = config(server.url)
        hook = build_handler(cfg, templates=Templates(), host=HOST)
        dispatcher = Dispatcher(
            db, {"hook": hook}, {"hook": cfg}, SystemClock(), poll_interval=0.1
        ).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and dispatcher.stats()["hook"].sent == 0:
            time.sleep(0.05)
        time.sleep(0.3)  # a wrong second delivery would show up now
        dispatcher.stop(5)
    requests = server.snapshot()
    assert len(requests) == 6
    assert all(json.loads(r.body)["id"] == f"w{1:031x}" for r in requests)
    assert dispatcher.status()["outbox"]["hook"]["done"] == 1

"""Delivery workers over the real SQLite outbox: retries, restarts, digests, rate limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from logwatchd.alerts import Alert
from logwatchd.clock import ManualClock, SystemClock
from logwatchd.config.handler_settings import EmailSettings, FileSettings, SmtpSettings
from logwatchd.config.model import BatchConfig, HandlerConfig, RateLimit, RetryConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import build_handler
from logwatchd.outbox import CLAIM_LIMIT, Dispatcher, InFlight, backoff
from logwatchd.state import StateStore
from logwatchd.templates import HostInfo, Templates
from tests.smtp_helpers import PASSWORD, USER, Mailbox, free_port, make_certificate, smtp_server

HOST = HostInfo(name="web1", fqdn="web1.example.com")
FAST_RETRY = RetryConfig(max_attempts=10, backoff=0.05, max_backoff=0.2)


def make_alerts(count: int, handlers: tuple[str, ...], start: int = 0) -> list[Alert]:
    return [
        Alert(
            id=f"a{n:031x}", rule="ssh-bruteforce", severity="high", tags=[],
            key={"ip": f"198.51.100.{n % 250}", "n": n}, count=1, suppressed=0,
            first_seen=1_700_000_000.0, last_seen=1_700_000_000.0, fired_at=1_700_000_000.0,
            host="web1", source="auth", path="/var/log/auth.log", raw=f"line {n}",
            fields={}, handlers=handlers,
        )
        for n in range(start, start + count)
    ]  # fmt: skip


def queue(db: str, alerts: list[Alert]) -> None:
    store = StateStore(db)
    store.commit(alerts=alerts)
    store.close()


def wait_for(
    condition: Callable[[], bool], timeout: float = 20.0, tick: Callable[[], Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        if tick is not None:
            tick()
        time.sleep(0.02)


def mail_config(port: int, **kwargs: Any) -> HandlerConfig:
    smtp = SmtpSettings(host="127.0.0.1", port=port, timeout=5, **kwargs.pop("smtp", {}))
    settings = EmailSettings(
        to=("ops@example.com",),
        subject="{{ alert.rule }} {{ alert.key.n }}",
        body="n={{ alert.key.n }}",
        sender="logwatchd@example.com",
        smtp=smtp,
    )
    return HandlerConfig(name="mail", type="email", timeout=5, settings=settings, **kwargs)


def start(db: str, cfg: HandlerConfig, clock: Any = None, **kwargs: Any) -> Dispatcher:
    handler = build_handler(cfg, templates=Templates(), host=HOST)
    clock = clock or SystemClock()
    dispatcher = Dispatcher(
        db, {cfg.name: handler}, {cfg.name: cfg}, clock, poll_interval=0.05, **kwargs
    )
    return dispatcher.start()


class Recording:
    """A handler that records each send() (the list it got) and can fail on demand."""

    def __init__(
        self, name: str, fail: Callable[[int], BaseException | None] | None = None
    ) -> None:
        self.name = name
        self.sends: list[list[str]] = []
        self._fail = fail
        self._lock = threading.Lock()

    def send(self, alerts: list[dict[str, Any]]) -> None:
        with self._lock:
            calls = len(self.sends)
        error = self._fail(calls) if self._fail else None
        with self._lock:
            self.sends.append([a["id"] for a in alerts] if error is None else [])
        if error is not None:
            raise error

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"ids": [a["id"] for a in alerts]}

    def close(self) -> None:
        return None

    def delivered(self) -> list[list[str]]:
        with self._lock:
            return [ids for ids in self.sends if ids]


def run_recording(
    db: str, handler: Recording, cfg: HandlerConfig, clock: Any = None, **kw: Any
) -> Dispatcher:
    handlers: dict[str, Any] = {handler.name: handler}
    clock = clock or SystemClock()
    return Dispatcher(db, handlers, {handler.name: cfg}, clock, poll_interval=0.05, **kw).start()


# --- durability ---------------------------------------------------------------------------


def test_smtp_outage_then_restart_delivers_each_alert_once(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    port = free_port()
    cfg = mail_config(port, retry=FAST_RETRY)
    queue(db, make_alerts(10, ("mail",)))
    first = start(db, cfg)
    wait_for(lambda: first.stats()["mail"].retried >= 10)
    first.stop(5)  # the daemon goes away with everything still pending
    assert first.status()["outbox"]["mail"]["pending"] == 10

    box = Mailbox()
    with smtp_server(box, port=port):
        second = start(db, cfg)
        wait_for(lambda: second.status()["outbox"]["mail"]["done"] == 10)
        second.stop(5)
    ids = sorted(m.message["Message-ID"] for m in box.snapshot())
    assert len(ids) == 10
    assert len(set(ids)) == 10
    assert ids == sorted(f"<a{n:031x}.mail@logwatchd>" for n in range(10))


def test_a_file_handler_gets_each_claim_in_one_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It never writes an id twice, so the worker hands it all it claimed: one fsync per
    claim, not per alert (the README's one allowed repeat cannot become a batch of repeats)."""
    db = str(tmp_path / "state.db")
    path = tmp_path / "alerts.jsonl"
    queue(db, make_alerts(300, ("alerts",)))
    syncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd))[1])
    cfg = HandlerConfig(name="alerts", type="file", settings=FileSettings(str(path)))
    dispatcher = start(db, cfg)
    wait_for(lambda: dispatcher.status()["outbox"]["alerts"]["done"] == 300)
    dispatcher.stop(5)
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == [f"a{n:031x}" for n in range(300)]
    assert len(syncs) <= 300 // CLAIM_LIMIT + 1


def test_notify_wakes_only_the_workers_of_handlers_with_new_rows(tmp_path: Path) -> None:
    handlers: dict[str, Any] = {"a": Recording("a"), "b": Recording("b")}
    cfgs = {name: HandlerConfig(name=name, type="log") for name in handlers}
    dispatcher = Dispatcher(str(tmp_path / "state.db"), handlers, cfgs, SystemClock())
    dispatcher.notify({"a"})
    assert {w.handler.name: w.wake.is_set() for w in dispatcher._workers} == {
        "a": True, "b": False,
    }  # fmt: skip
    dispatcher.notify()
    assert all(w.wake.is_set() for w in dispatcher._workers)


KILLED_CHILD = """
import sys, time
from logwatchd.clock import SystemClock
from logwatchd.config.handler_settings import EmailSettings, SmtpSettings
from logwatchd.config.model import HandlerConfig, RetryConfig
from logwatchd.handlers import build_handler
from logwatchd.outbox import Dispatcher
from logwatchd.templates import HostInfo, Templates
db, port = sys.argv[1], int(sys.argv[2])
cfg = HandlerConfig(name="mail", type="email", timeout=5,
    retry=RetryConfig(max_attempts=100, backoff=0.05, max_backoff=0.2),
    settings=EmailSettings(("ops@example.com",), "s", "b", sender="l@example.com",
                           smtp=SmtpSettings("127.0.0.1", port, timeout=5)))
handler = build_handler(cfg, templates=Templates(), host=HostInfo("web1", "web1"))
dispatcher = Dispatcher(db, {"mail": handler}, {"mail": cfg}, SystemClock(), poll_interval=0.05)
dispatcher.start()
deadline = time.monotonic() + 30
while dispatcher.stats()["mail"].retried < 20:
    if time.monotonic() > deadline:
        sys.exit("never failed 20 times")
    time.sleep(0.01)
print("failing", file=sys.stderr, flush=True)  # stdout carries the log
time.sleep(60)
"""


def test_kill_9_during_an_outage_loses_and_repeats_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    port = free_port()
    queue(db, make_alerts(10, ("mail",)))
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, db, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stderr is not None
        assert child.stderr.readline() == "failing\n"
    finally:
        child.kill()  # SIGKILL: no stop(), no close()
        child.wait(10)
    box = Mailbox()
    with smtp_server(box, port=port):
        dispatcher = start(db, mail_config(port, retry=FAST_RETRY))
        wait_for(lambda: dispatcher.status()["outbox"]["mail"]["done"] == 10)
        dispatcher.stop(5)
    ids = [m.message["Message-ID"] for m in box.snapshot()]
    assert sorted(ids) == sorted(f"<a{n:031x}.mail@logwatchd>" for n in range(10))


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_wrong_password_is_retried_then_failed_not_a_crash(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    cert = make_certificate(tmp_path)
    secret = tmp_path / "pw"
    secret.write_text("wrong")
    retry = RetryConfig(max_attempts=3, backoff=0.05, max_backoff=0.1)
    box = Mailbox()
    with smtp_server(box, tls="tls", cert=cert, auth=True) as port, capture_logs() as logs:
        smtp = {
            "tls": "tls",
            "username": USER,
            "password_file": str(secret),
            "ca_file": str(cert[0]),
        }
        dispatcher = start(db, mail_config(port, retry=retry, smtp=smtp))
        queue(db, make_alerts(1, ("mail",)))
        dispatcher.notify()
        wait_for(lambda: dispatcher.status()["outbox"]["mail"]["failed"] == 1)
        secret.write_text(PASSWORD)  # fixed: the next alert goes out, the worker lived on
        queue(db, make_alerts(1, ("mail",), start=1))
        dispatcher.notify()
        wait_for(lambda: len(box.snapshot()) == 1)
        dispatcher.stop(5)
    failed = [e for e in logs if e["event"] == "delivery failed"]
    assert len(failed) == 1
    assert failed[0]["handler"] == "mail"
    assert failed[0]["alert_id"] == f"a{0:031x}"
    assert failed[0]["attempts"] == 3
    assert "wrong" not in str(logs)
    store = StateStore(db)
    [item] = store.failed()
    assert item.attempts == 3
    assert "authentication" in (item.last_error or "")


# --- digests and rate limits --------------------------------------------------------------


def test_batch_window_sends_one_digest_listing_every_alert(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(200, ("mail",)))
    clock = ManualClock(start=time.time() + 1)
    box = Mailbox()
    with smtp_server(box) as port:
        cfg = mail_config(port, batch=BatchConfig(window=300, max=500))
        dispatcher = start(db, cfg, clock)
        time.sleep(0.3)
        assert box.snapshot() == []  # the window is still open
        wait_for(lambda: len(box.snapshot()) == 1, tick=lambda: clock.advance(10))
        wait_for(lambda: dispatcher.status()["outbox"]["mail"]["done"] == 200)
        dispatcher.stop(5)
    [got] = box.snapshot()
    body = got.message.get_content().replace("\r\n", "\n")
    assert got.message["Subject"].startswith("[logwatchd] 200 alerts on web1")
    assert [n for n in range(200) if f"n={n}\n" not in body] == []


def test_batch_max_splits_into_several_digests(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(250, ("rec",)))
    handler = Recording("rec")
    cfg = HandlerConfig(name="rec", type="log", batch=BatchConfig(window=60, max=100))
    clock = ManualClock(start=time.time() + 1)
    dispatcher = run_recording(db, handler, cfg, clock)
    wait_for(lambda: sum(map(len, handler.delivered())) == 250, tick=lambda: clock.advance(5))
    dispatcher.stop(5)
    assert [len(ids) for ids in handler.delivered()] == [100, 100, 50]


def test_rate_limit_defers_into_one_digest_and_drops_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(12, ("mail",)))
    clock = ManualClock(start=time.time() + 1)
    box = Mailbox()
    with smtp_server(box) as port:
        dispatcher = start(db, mail_config(port, rate_limit=RateLimit(max=5, per=60)), clock)
        wait_for(lambda: len(box.snapshot()) == 5)
        time.sleep(0.3)
        assert len(box.snapshot()) == 5  # over the limit: held, not sent, not dropped
        assert dispatcher.status()["outbox"]["mail"]["pending"] == 7
        clock.advance(61)
        dispatcher.notify()
        wait_for(lambda: len(box.snapshot()) == 6)
        wait_for(lambda: dispatcher.status()["outbox"]["mail"]["done"] == 12)
        dispatcher.stop(5)
    mails = box.snapshot()
    assert [m.message["Subject"] for m in mails[:5]] == [f"ssh-bruteforce {n}" for n in range(5)]
    digest = mails[5].message
    assert digest["Subject"].startswith("[logwatchd] 7 alerts")
    body = digest.get_content().replace("\r\n", "\n")
    assert [n for n in range(5, 12) if f"n={n}\n" not in body] == []
    assert "n=4\n" not in body


def test_failed_attempts_do_not_use_up_the_rate_limit(tmp_path: Path) -> None:
    """An SMTP outage long enough for many retries: once the server is back, the mail goes
    out at once, not after the rate limit's window (only deliveries count toward it)."""
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(3, ("mail",)))
    port = free_port()
    cfg = mail_config(port, retry=FAST_RETRY, rate_limit=RateLimit(max=5, per=3600))
    dispatcher = start(db, cfg)
    try:
        wait_for(lambda: dispatcher.stats()["mail"].retried >= 6)  # more attempts than the limit
        box = Mailbox()
        with smtp_server(box, port=port):
            wait_for(lambda: dispatcher.status()["outbox"]["mail"]["done"] == 3, timeout=10)
        assert len(box.snapshot()) == 3
    finally:
        dispatcher.stop(5)


# --- failures -----------------------------------------------------------------------------


def test_unexpected_exception_is_a_failure_and_the_worker_lives(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(3, ("rec",)))
    handler = Recording("rec", fail=lambda call: RuntimeError("bug") if call < 2 else None)
    cfg = HandlerConfig(name="rec", type="log", retry=FAST_RETRY)
    with capture_logs() as logs:
        dispatcher = run_recording(db, handler, cfg)
        wait_for(lambda: dispatcher.status()["outbox"]["rec"]["done"] == 3)
        dispatcher.stop(5)
    delivered = sorted(i for ids in handler.delivered() for i in ids)
    assert delivered == [f"a{n:031x}" for n in range(3)]
    raised = [e for e in logs if e["event"] == "handler raised"]
    assert len(raised) == 2
    assert raised[0]["handler"] == "rec"


def test_permanent_error_fails_at_once(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(1, ("rec",)))
    handler = Recording("rec", fail=lambda call: DeliveryError("HTTP 404", permanent=True))
    dispatcher = run_recording(db, handler, HandlerConfig(name="rec", type="log", retry=FAST_RETRY))
    wait_for(lambda: dispatcher.status()["outbox"]["rec"]["failed"] == 1)
    dispatcher.stop(5)
    assert len(handler.sends) == 1


def test_slow_handler_does_not_hold_up_another(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    release, entered = threading.Event(), threading.Event()

    def blocking(call: int) -> None:
        entered.set()
        release.wait(30)

    slow = Recording("slow", fail=blocking)
    fast = Recording("fast")
    configs = {n: HandlerConfig(name=n, type="log") for n in ("slow", "fast")}
    handlers: dict[str, Any] = {"slow": slow, "fast": fast}
    dispatcher = Dispatcher(db, handlers, configs, SystemClock(), poll_interval=0.05).start()
    queue(db, make_alerts(2, ("slow", "fast")))
    dispatcher.notify()
    wait_for(lambda: len(fast.delivered()) == 2)
    assert entered.wait(10)
    assert slow.delivered() == []
    started = time.monotonic()
    assert dispatcher.stop(0.2) is False  # slow is still sending: shutdown is bounded anyway
    assert time.monotonic() - started < 2
    release.set()


def test_stop_lets_an_in_flight_send_finish(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(1, ("rec",)))
    entered = threading.Event()

    def slow_send(call: int) -> None:
        entered.set()
        time.sleep(0.3)

    handler = Recording("rec", fail=slow_send)
    dispatcher = run_recording(db, handler, HandlerConfig(name="rec", type="log"))
    assert entered.wait(10)
    assert dispatcher.stop(5) is True
    assert dispatcher.status()["outbox"]["rec"]["done"] == 1


def test_dry_run_renders_logs_and_sends_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(2, ("rec",)))
    handler = Recording("rec")
    with capture_logs() as logs:
        dispatcher = run_recording(db, handler, HandlerConfig(name="rec", type="log"), dry_run=True)
        wait_for(lambda: dispatcher.status()["outbox"]["rec"]["done"] == 2)
        dispatcher.stop(5)
    assert handler.sends == []
    previews = [e for e in logs if e["event"] == "dry run: not sent"]
    assert [p["would_send"]["ids"] for p in previews] == [[f"a{0:031x}"], [f"a{1:031x}"]]


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    delays = [backoff(n, 5.0, 60.0) for n in range(1, 7)]
    assert 5.0 <= delays[0] <= 5.5
    assert 10.0 <= delays[1] <= 11.0
    assert 40.0 <= delays[3] <= 44.0
    assert delays[4] == delays[5] == 60.0
    assert backoff(1, 5.0, 60.0, retry_after=30) == 30.0
    assert backoff(1, 5.0, 60.0, retry_after=9999) == 60.0


def test_concurrency_lets_sends_of_one_handler_overlap(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(3, ("rec",)))
    lock = threading.Lock()
    in_flight = [0, 0]  # now, highest seen
    all_in = threading.Barrier(3, timeout=10)

    def overlapping(call: int) -> None:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        all_in.wait()  # breaks (and fails the sends) unless three run at once
        with lock:
            in_flight[0] -= 1

    handler = Recording("rec", fail=overlapping)
    handler.concurrency = 3  # type: ignore[attr-defined]
    dispatcher = run_recording(db, handler, HandlerConfig(name="rec", type="command"))
    wait_for(lambda: dispatcher.status()["outbox"]["rec"]["done"] == 3)
    dispatcher.stop(5)
    assert in_flight[1] == 3


def test_nothing_is_sent_before_start(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(1, ("rec",)))
    handler = Recording("rec")
    cfg = HandlerConfig(name="rec", type="log")
    dispatcher = Dispatcher(db, {"rec": handler}, {"rec": cfg}, SystemClock(), poll_interval=0.05)
    dispatcher.notify()
    time.sleep(0.2)
    assert handler.sends == []
    dispatcher.start()
    wait_for(lambda: len(handler.delivered()) == 1)
    assert dispatcher.stop(5) is True


def test_a_failed_digest_is_retried_as_one_digest(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(3, ("rec",)))
    handler = Recording("rec", fail=lambda call: DeliveryError("451") if call == 0 else None)
    cfg = HandlerConfig(name="rec", type="log", retry=FAST_RETRY, batch=BatchConfig(window=60))
    clock = ManualClock(start=time.time() + 1)
    dispatcher = run_recording(db, handler, cfg, clock)
    wait_for(lambda: len(handler.delivered()) == 1, tick=lambda: clock.advance(5))
    dispatcher.stop(5)
    assert len(handler.sends) == 2
    assert handler.delivered() == [[f"a{n:031x}" for n in range(3)]]


def test_reload_while_a_send_is_in_flight_sends_it_once(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    queue(db, make_alerts(1, ("rec",)))
    release, entered = threading.Event(), threading.Event()

    def blocking(call: int) -> None:
        entered.set()
        release.wait(30)

    cfg = HandlerConfig(name="rec", type="log")
    old = Recording("rec", fail=blocking)
    in_flight = InFlight()  # one per daemon, handed to every dispatcher it builds
    first = run_recording(db, old, cfg, in_flight=in_flight)
    assert entered.wait(10)
    assert first.stop(0.1) is False  # the old send is still running when the new config starts
    new = Recording("rec")
    second = run_recording(db, new, cfg, in_flight=in_flight)
    time.sleep(0.3)
    assert new.sends == []
    release.set()
    wait_for(lambda: second.status()["outbox"]["rec"]["done"] == 1)
    second.stop(5)
    assert old.delivered() == [[f"a{0:031x}"]]
    assert new.sends == []

"""The history the daemon keeps for status and report, read back through a read-only view."""

from __future__ import annotations

import sqlite3
import time

import pytest

from logwatchd.alerts import Alert
from logwatchd.state import StateStore
from logwatchd.state_view import StateView


def make_alert(alert_id: str, *, ip: str = "192.0.2.1", fired_at: float | None = None) -> Alert:
    now = time.time() if fired_at is None else fired_at
    return Alert(
        id=alert_id, rule="ssh", severity="high", tags=[], key={"ip": ip}, count=5,
        suppressed=2, first_seen=now - 60, last_seen=now - 1, fired_at=now, host="h",
        source="auth", path="/x", raw="line", fields={}, events=["line"],
        handlers=("mail", "log"),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path):
    s = StateStore.in_dir(str(tmp_path / "state"))
    yield s
    s.close()


@pytest.fixture
def view(store):
    v = StateView(store.path)
    yield v
    v.close()


def test_an_alert_is_in_the_history_once_whatever_its_handlers(store, view):
    store.commit(alerts=[make_alert("a1", ip="203.0.113.9")])
    store.commit(alerts=[make_alert("a1", ip="203.0.113.9")])  # rebuilt after a crash
    (alert,) = view.alerts(since=0)
    assert (alert.rule, alert.source, alert.key, alert.count, alert.suppressed) == (
        "ssh", "auth", {"ip": "203.0.113.9"}, 5, 2,
    )  # fmt: skip


def test_the_last_error_is_shown_until_a_later_delivery_succeeds(store, view):
    store.commit(alerts=[make_alert("a1"), make_alert("a2")])
    first, second = store.claim_due("mail", now=1e12)
    store.mark_retry(first, next_attempt=0, error="421 try later", seconds=0.5)
    assert view.handler_health()["mail"].current_error == "421 try later"
    store.mark_done_many([second], seconds=0.25)
    health = view.handler_health()["mail"]
    assert health.current_error is None
    assert health.last_error == "421 try later"  # still known, only not current
    store.mark_failed(store.claim_due("mail", now=1e12)[0], "550 no such user")
    assert view.handler_health()["mail"].current_error == "550 no such user"
    assert view.outbox()["mail"].failed == 1


def test_outbox_depth_counts_pending_and_the_oldest_per_handler(store, view):
    store.commit(alerts=[make_alert("a1")])
    time.sleep(0.01)  # distinct creation times
    store.commit(alerts=[make_alert("a2")])
    depth = view.outbox()
    assert depth["mail"].pending == 2 and depth["log"].pending == 2
    store.mark_done_many(store.claim_due("mail", now=1e12, limit=1))
    depth = view.outbox()
    assert depth["mail"].pending == 1 and depth["log"].pending == 2
    assert depth["mail"].oldest is not None and depth["log"].oldest is not None
    assert depth["mail"].oldest > depth["log"].oldest


def test_delivery_times_per_handler(store, view):
    store.commit(alerts=[make_alert(f"a{n}") for n in range(20)])
    for n, item in enumerate(store.claim_due("mail", now=1e12, limit=20)):
        if n == 0:
            store.mark_failed(item, "550", seconds=9.0)
        else:
            store.mark_done_many([item], seconds=float(n))
    times = view.handler_times(since=0)["mail"]
    assert (times.delivered, times.failed) == (19, 1)
    assert times.max_seconds == 19.0 and times.p95_seconds == 18.0
    assert times.mean_seconds == pytest.approx((sum(range(1, 20)) + 9) / 20)


def test_status_and_activity_ride_along_with_a_commit(store, view):
    store.commit(status='{"pid": 7}', activity=[("lines", 600, "auth", 10)])
    store.commit(activity=[("lines", 600, "auth", 5), ("matches", 600, "ssh", 3)])
    assert view.daemon_status() == {"pid": 7}
    assert view.activity("lines", since=0) == [(600, "auth", 15)]
    assert view.activity("matches", since=601) == []


def test_history_older_than_the_retention_is_pruned_in_chunks(store, view, monkeypatch):
    monkeypatch.setattr("logwatchd.state.PRUNE_CHUNK", 7)
    now = time.time()
    old = [make_alert(f"old{n}", fired_at=now - 40 * 86400) for n in range(20)]
    store.commit(alerts=[*old, make_alert("new")], activity=[("lines", 0, "auth", 1)])
    assert store.prune_history(30 * 86400) == 21  # 20 alerts and the ancient activity row
    assert [a.fired_at for a in view.alerts(since=0)] == [pytest.approx(now, abs=5)]


def test_a_view_of_a_database_from_before_the_history_reads_empty(tmp_path):
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (handler TEXT, status TEXT, created REAL)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.commit()
    db.close()
    with StateView(str(path)) as old:
        assert old.alerts(since=0) == [] and old.handler_health() == {}
        assert old.daemon_status() is None


def test_a_view_never_writes(store, view):
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        view._db.execute("DELETE FROM outbox")


def test_actions_in_force_are_counted_per_handler(store, view):
    now = time.time()
    rows = [
        ("ban", "203.0.113.9", now + 3600, "active"),
        ("ban", "203.0.113.10", now + 60, "active"),
        ("ban", "203.0.113.11", now - 1, "active"),  # its undo is due: no longer in force
        ("ban", "203.0.113.12", now + 3600, "reverted"),
        ("lock-user", "mallory", now + 600, "active"),
    ]
    for handler, key, until, state in rows:
        store._db.execute(
            "INSERT INTO actions (handler, key, alert_id, alert, since, until, duration, times, "
            "state, forget) VALUES (?, ?, 'a', '{}', ?, ?, 3600, 1, ?, ?)",
            (handler, key, now - 10, until, state, until + 86400),
        )
    assert view.active_actions() == {"ban": 2, "lock-user": 1}

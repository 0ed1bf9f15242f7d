"""The state store commits checkpoints, rule state and outbox rows together, and dedupes ids."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field

import pytest

from logwatchd.alerts import Alert
from logwatchd.state import CLAIM_SQL, StateStore


def make_alert(alert_id: str = "a1", handlers: tuple[str, ...] = ("mail", "log")) -> Alert:
    return Alert(
        id=alert_id, rule="r", severity="high", tags=[], key={"ip": "192.0.2.1"}, count=1,
        suppressed=0, first_seen=1.0, last_seen=2.0, fired_at=3.0, host="h", source="s",
        path="/x", raw="line", fields={}, events=["line"], handlers=handlers,
    )  # fmt: skip


@dataclass
class Changes:
    digests: dict[str, str] = field(default_factory=dict)
    upserts: list[tuple[str, str, str]] = field(default_factory=list)
    deletes: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def store(tmp_path):
    s = StateStore.in_dir(str(tmp_path / "state"))
    yield s
    s.close()


def test_a_new_store_is_new_until_a_source_is_committed(store):
    assert store.is_new()
    store.commit(sources={"app": {"files": []}})
    assert not store.is_new()
    assert store.load_source("app") == {"files": []}
    assert store.load_source("other") is None


def test_an_alert_is_queued_once_per_handler_even_when_rebuilt(store):
    assert store.commit(alerts=[make_alert()]) == 2
    assert store.commit(alerts=[make_alert()]) == 0
    due = store.claim_due("mail", now=1e12)
    assert [i.alert_id for i in due] == ["a1"]
    store.mark_done_many(due[:1])
    # delivered ids are remembered: a replay after a crash queues nothing
    assert store.commit(alerts=[make_alert()]) == 0
    assert store.claim_due("mail", now=1e12) == []


def test_a_claim_takes_the_oldest_due_rows_without_sorting_the_backlog(store):
    alerts = [make_alert(f"a{n:05d}", ("mail",)) for n in range(3000)]
    store.commit(alerts=alerts[:1000])
    store.commit(alerts=alerts[1000:])
    retrying = store.claim_due("mail", now=1e12, limit=1)[0]  # the oldest backs off
    store.mark_retry(retrying, next_attempt=2e12, error="down")
    due = store.claim_due("mail", now=1e12, limit=5)
    assert [i.alert_id for i in due] == [f"a{n:05d}" for n in range(1, 6)]
    plan = store._db.execute("EXPLAIN QUERY PLAN " + CLAIM_SQL, ("mail", 1e12, 5)).fetchall()
    assert not any("TEMP B-TREE" in row[-1] for row in plan), plan


def test_commit_is_atomic_when_anything_in_it_fails(store):
    class Broken:
        digests: dict[str, str] = {}
        upserts = [("r", "k", "s", "too many")]
        deletes: list[tuple[str, str]] = []

    with pytest.raises(ValueError):
        store.commit(sources={"app": {"offset": 10}}, rules=Broken(), alerts=[make_alert()])
    assert store.load_source("app") is None
    assert store.claim_due("mail", now=1e12) == []


def test_retry_and_failure_are_visible_in_status(store):
    store.commit(alerts=[make_alert("a1"), make_alert("a2")])
    first, second = store.claim_due("mail", now=1e12)
    store.mark_retry(first, next_attempt=1e13, error="421 try later")
    store.mark_failed(second, error="550 no such user")
    assert store.claim_due("mail", now=1e12) == []
    assert [i.alert_id for i in store.claim_due("mail", now=1e13)] == ["a1"]
    status = store.status()["outbox"]["mail"]
    assert status["pending"] == 1 and status["failed"] == 1
    assert status["last_error"] in {"421 try later", "550 no such user"}
    assert store.failed()[0].alert_id == "a2"


def test_a_row_skipped_while_its_send_failed_is_not_retried(store):
    store.commit(alerts=[make_alert("a1", ("ban",))])
    [sending] = store.claim_due("ban", now=1e12)
    # meanwhile the commit of an extension supersedes it (as actions.py does)
    store._db.execute("UPDATE outbox SET status = 'skipped' WHERE alert_id = 'a1'")
    store.mark_retry(sending, next_attempt=1e12, error="nft timed out")
    assert store.claim_due("ban", now=2e12) == []
    [[status]] = store._db.execute("SELECT status FROM outbox WHERE alert_id = 'a1'").fetchall()
    assert status == "skipped"


def test_rule_state_round_trips_and_changed_rules_are_pruned(store):
    store.commit(rules=Changes({"r": "d1"}, [("r", '{"ip":"x"}', "[1,2]")]))
    assert store.load_rule_state() == [("r", "d1", '{"ip":"x"}', "[1,2]")]
    store.commit(rules=Changes({"r": "d1"}, [], [("r", '{"ip":"x"}')]))
    assert store.load_rule_state() == []
    store.commit(rules=Changes({"r": "d1", "q": "d2"}, [("r", "k", "s"), ("q", "k", "s")]))
    store.prune_rules({"r": "changed"})
    assert store.load_rule_state() == []


def test_workers_on_their_own_connections_do_not_block_the_committer(tmp_path):
    path = str(tmp_path / "state.db")
    main = StateStore(path)
    main.commit(alerts=[make_alert(f"a{i}", ("mail",)) for i in range(50)])
    errors: list[BaseException] = []

    def worker() -> None:
        own = StateStore(path)
        try:
            for item in own.claim_due("mail", now=1e12, limit=100):
                own.mark_done_many([item])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            own.close()

    thread = threading.Thread(target=worker)
    thread.start()
    for i in range(50):
        main.commit(sources={"app": {"offset": i}})
    thread.join()
    assert not errors
    assert main.status()["outbox"]["mail"]["done"] == 50
    main.close()


def test_a_digest_is_marked_delivered_in_one_go(store):
    store.commit(alerts=[make_alert(f"a{i}", ("mail",)) for i in range(3)])
    store.mark_done_many(store.claim_due("mail", now=1e12))
    assert store.claim_due("mail", now=1e12) == []
    assert store.status()["outbox"]["mail"]["done"] == 3


def test_delivered_rows_are_pruned_after_the_retention_and_pending_ones_never(store):
    store.commit(alerts=[make_alert("old", ("mail",)), make_alert("new", ("mail",))])
    store.mark_done_many(store.claim_due("mail", now=1e12)[:1])
    assert store.pending_count() == 1
    assert store.prune_delivered(older_than=-1.0) == 1
    assert [i.alert_id for i in store.claim_due("mail", now=1e12)] == ["new"]


def test_a_writer_takes_the_lock_soon_after_it_is_released_and_other_errors_raise(tmp_path):
    """It retries every fraction of a millisecond (SQLite's own handler slept up to 10 ms
    past the release at these waits); an error other than "locked" is not retried."""
    path = str(tmp_path / "state.db")
    holder = StateStore(path)
    holder._db.execute("BEGIN IMMEDIATE")
    done: list[float] = []

    def commit_when_free() -> None:
        waiter = StateStore(path)  # opening (schema) and committing both wait for the lock
        waiter.commit(alerts=[make_alert()])
        done.append(time.monotonic())
        waiter.close()

    thread = threading.Thread(target=commit_when_free)
    thread.start()
    time.sleep(0.24)  # SQLite's own handler would try next at 0.328 s
    assert done == []  # still waiting for the lock
    released = time.monotonic()
    holder._db.execute("COMMIT")
    thread.join(10)
    assert done and done[0] - released < 0.05
    assert holder.pending_count() == 2
    holder._db.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        holder.commit(alerts=[make_alert("a2")])
    holder._db.execute("ROLLBACK")
    holder.close()


def test_a_store_opens_while_another_connection_holds_a_write_transaction(tmp_path):
    path = str(tmp_path / "state.db")
    writer = StateStore(path)
    writer._db.execute("BEGIN IMMEDIATE")
    opened: list[bool] = []

    def open_and_close() -> None:
        StateStore(path).close()
        opened.append(True)

    thread = threading.Thread(target=open_and_close)
    thread.start()
    thread.join(0.3)
    writer._db.execute("COMMIT")  # the opener waits for the lock instead of failing
    thread.join(10)
    assert opened == [True]
    writer.close()


def test_stores_opened_and_closed_while_another_commits_never_see_a_locked_database(tmp_path):
    path = str(tmp_path / "state.db")
    main = StateStore(path)
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(40):
                StateStore(path).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(200):
        main.commit(sources={"app": {"offset": i}})
    for thread in threads:
        thread.join(60)
    main.close()
    assert errors == []

"""The bookkeeping of actions that undo themselves, in the state database.

An action is recorded with its outbox row; a key under an active action is not acted on
again, but a new offence during it extends it; the undo is queued once when due; repeat
offenders get longer actions; a revert ends an action at once and forgets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from logwatchd import actions, state_recover
from logwatchd.alerts import Alert, isoformat
from logwatchd.config.handler_settings import Increase
from logwatchd.errors import ActionRefused
from logwatchd.state import StateStore

T0 = 1_800_000_000.0
HOUR = 3600.0


@dataclass
class FakeBan:
    """Acts on ``alert.key.ip``; refuses 10.x as a never-list would."""

    name: str = "ban"
    undoes: bool = True
    duration: float = HOUR
    increase: Increase | None = None

    def action_key(self, alert: dict[str, Any]) -> str:
        ip = str(alert["key"]["ip"])
        if ip.startswith("10."):
            raise ActionRefused(f"{ip} is in never list trusted", expected=True)
        if not ip[0].isdigit():
            raise ActionRefused(f"not an IP address: {ip!r}")
        if ip == "0.bug":
            raise ValueError("a bug")
        return ip


def make_alert(alert_id: str, ip: str = "192.0.2.1", first_seen: float = T0) -> Alert:
    """An alert whose lines span ``first_seen`` .. T0 (or .. ``first_seen``, if later)."""
    return Alert(
        id=alert_id, rule="brute", severity="high", tags=[], key={"ip": ip}, count=5,
        suppressed=0, first_seen=first_seen, last_seen=max(T0, first_seen),
        fired_at=max(T0, first_seen), host="h", source="s", path="/x", raw="line",
        fields={"ip": ip}, events=["line"], handlers=("ban",),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path):
    s = StateStore.in_dir(str(tmp_path / "state"))
    yield s
    s.close()


def record(store: StateStore, handler: FakeBan, alert: Alert, now: float) -> int:
    with store.transaction():
        return actions.Recorder(handler).queue(store.db, alert, now)


def outbox(store: StateStore) -> dict[str, tuple[str, str | None]]:
    rows = store.db.execute("SELECT alert_id, status, last_error FROM outbox ORDER BY rowid")
    return {alert_id: (status, error) for alert_id, status, error in rows}


def test_an_action_is_recorded_with_its_outbox_row_which_carries_it(store):
    assert record(store, FakeBan(), make_alert("a1"), T0) == 1
    [item] = store.claim_due("ban", now=T0)
    assert item.alert["action"] == {
        "key": "192.0.2.1", "since": T0, "until": T0 + HOUR, "duration": HOUR, "times": 1,
        "step": "do",
    }  # fmt: skip
    [row] = actions.active_actions(store, T0)
    assert (row["handler"], row["key"], row["until"], row["times"]) == (
        "ban",
        "192.0.2.1",
        T0 + HOUR,
        1,
    )
    assert (row["rule"], row["state"]) == ("brute", "pending")
    store.mark_done_many([item])
    assert actions.active_actions(store, T0)[0]["state"] == "applied"


def test_a_key_under_an_active_action_is_not_acted_on_again_but_a_new_offence_counts(store):
    ban = FakeBan()
    record(store, ban, make_alert("a1"), T0)
    assert record(store, ban, make_alert("a2", first_seen=T0 + 50), T0 + 60) == 0
    note = f"192.0.2.1 is already acted on until {isoformat(T0 + HOUR)}"
    assert outbox(store)["a2"] == ("skipped", f"{note}; counted as a repeat")
    [row] = actions.active_actions(store, T0 + 60)
    assert (row["times"], row["since"], row["until"], row["alert_id"]) == (2, T0, T0 + HOUR, "a1")
    # the same alert again (a replay after a crash) is recognised and not counted twice
    assert record(store, ban, make_alert("a2", first_seen=T0 + 50), T0 + 61) == 0
    assert actions.active_actions(store, T0 + 61)[0]["times"] == 2


def test_the_rest_of_the_offence_that_started_an_action_is_recorded_not_counted(store):
    """Lines of the burst logged before the ban took hold make an alert of their own: its
    first line came before the action began, so it is the same offence, not a repeat."""
    ban = FakeBan(increase=Increase(factor=2.0, max=100 * HOUR))
    record(store, ban, make_alert("a1"), T0 + 0.5)  # recorded at the commit after its lines
    assert record(store, ban, make_alert("a2", first_seen=T0 + 0.2), T0 + 1.5) == 0
    note = f"192.0.2.1 is already acted on until {isoformat(T0 + 0.5 + HOUR)}"
    assert outbox(store)["a2"] == ("skipped", note)
    [row] = actions.active_actions(store, T0 + 2)
    assert (row["times"], row["duration"], row["alert_id"]) == (1, HOUR, "a1")
    actions.queue_due_undos(store, T0 + 0.5 + HOUR)
    record(store, ban, make_alert("a3", first_seen=T0 + 2 * HOUR), T0 + 2 * HOUR)
    assert actions.active_actions(store, T0 + 2 * HOUR)[0]["duration"] == 2 * HOUR


def test_a_refused_key_is_recorded_as_skipped_with_the_reason_and_never_acted_on(store):
    ban = FakeBan()
    assert record(store, ban, make_alert("a1", ip="10.1.2.3"), T0) == 0
    assert record(store, ban, make_alert("a2", ip="host.example"), T0) == 0
    assert outbox(store) == {
        "a1": ("skipped", "10.1.2.3 is in never list trusted"),
        "a2": ("skipped", "not an IP address: 'host.example'"),
    }
    assert actions.active_actions(store, T0) == []
    assert store.claim_due("ban", now=T0 + 1) == []


def test_a_handler_bug_skips_the_alert_and_the_commit_still_happens(store):
    with capture_logs() as logs:
        store.commit(
            sources={"app": {"offset": 7}},
            alerts=[make_alert("a1", ip="0.bug")],
            acting={"ban": actions.Recorder(FakeBan())},
        )
    assert store.load_source("app") == {"offset": 7}
    assert outbox(store)["a1"] == ("skipped", "no key: ValueError: a bug")
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["action key failed"]


def test_a_skipped_alert_is_counted_in_status_and_its_reason_is_no_error(store):
    record(store, FakeBan(), make_alert("a1", ip="10.1.2.3"), T0)
    entry = store.status()["outbox"]["ban"]
    assert (entry["skipped"], entry["pending"], entry["last_error"]) == (1, 0, None)


def test_the_undo_is_queued_once_when_due_and_the_action_is_then_not_listed(store):
    record(store, FakeBan(), make_alert("a1"), T0)
    store.mark_done_many([store.claim_due("ban", now=T0)[0]])
    assert actions.queue_due_undos(store, T0 + HOUR - 1) == set()
    assert actions.queue_due_undos(store, T0 + HOUR) == {"ban"}
    assert actions.queue_due_undos(store, T0 + HOUR + 5) == set()
    [undo] = store.claim_due("ban", now=T0 + HOUR)
    assert undo.alert_id == "a1/undo"
    assert undo.alert["action"]["step"] == "undo"
    assert undo.alert["action"]["key"] == "192.0.2.1"
    assert actions.active_actions(store, T0 + HOUR) == []
    store.mark_done_many([undo])
    assert actions.queue_due_undos(store, T0 + 2 * HOUR) == set()
    assert store.claim_due("ban", now=T0 + 2 * HOUR) == []


def test_an_action_whose_delivery_never_ran_is_not_applied_after_its_undo(store):
    record(store, FakeBan(), make_alert("a1"), T0)
    actions.queue_due_undos(store, T0 + HOUR)
    assert outbox(store)["a1"] == ("skipped", "undone before it ran")
    assert [i.alert_id for i in store.claim_due("ban", now=T0 + HOUR)] == ["a1/undo"]


def test_a_repeat_offender_gets_factor_times_the_last_duration_up_to_max(store):
    ban = FakeBan(increase=Increase(factor=2.0, max=5 * HOUR))
    now = T0
    durations = []
    for n in range(5):
        record(store, ban, make_alert(f"a{n}"), now)
        [row] = actions.active_actions(store, now)
        durations.append(row["duration"])
        now = row["until"]
        actions.queue_due_undos(store, now)
        now += 60  # offends again a minute after the ban ended
    assert durations == [HOUR, 2 * HOUR, 4 * HOUR, 5 * HOUR, 5 * HOUR]


def test_an_offence_during_an_action_extends_it_by_factor_from_its_start_up_to_max(store):
    ban = FakeBan(increase=Increase(factor=2.0, max=5 * HOUR))
    record(store, ban, make_alert("a1"), T0)
    assert record(store, ban, make_alert("a2", first_seen=T0 + 600), T0 + 610) == 1
    # delivered again with the later end (an nft element carries its own timeout); the
    # first delivery, not run yet, would set the shorter one
    assert outbox(store)["a1"] == ("skipped", "superseded by an extension")
    [item] = store.claim_due("ban", now=T0 + 610)
    assert item.alert_id == "a2"
    assert item.alert["action"] == {
        "key": "192.0.2.1", "since": T0, "until": T0 + 2 * HOUR, "duration": 2 * HOUR,
        "times": 2, "step": "do", "extended": T0 + 610,
    }  # fmt: skip
    [row] = actions.active_actions(store, T0 + 610)
    assert (row["since"], row["until"], row["times"], row["alert_id"]) == (
        T0,
        T0 + 2 * HOUR,
        2,
        "a2",
    )
    assert record(store, ban, make_alert("a2", first_seen=T0 + 600), T0 + 611) == 0  # replay
    assert record(store, ban, make_alert("a3", first_seen=T0 + 700), T0 + 700) == 1
    assert record(store, ban, make_alert("a4", first_seen=T0 + 800), T0 + 800) == 1
    [row] = actions.active_actions(store, T0 + 800)
    assert (row["until"], row["duration"], row["times"]) == (T0 + 5 * HOUR, 5 * HOUR, 4)
    # at its longest: counted, not delivered again
    assert record(store, ban, make_alert("a5", first_seen=T0 + 900), T0 + 900) == 0
    assert outbox(store)["a5"][1].endswith("; counted as a repeat")
    [row] = actions.active_actions(store, T0 + 900)
    assert (row["until"], row["times"]) == (T0 + 5 * HOUR, 5)
    # the undo comes at the extended end, once, and undoes the latest delivery's action
    assert actions.queue_due_undos(store, T0 + 2 * HOUR) == set()
    assert actions.queue_due_undos(store, T0 + 5 * HOUR) == {"ban"}
    undos = [i for i in store.claim_due("ban", now=T0 + 5 * HOUR) if i.alert_id.endswith("/undo")]
    assert [(u.alert_id, u.alert["action"]["step"]) for u in undos] == [("a4/undo", "undo")]


def test_a_key_is_forgotten_once_max_has_passed_since_its_action_ended(store):
    ban = FakeBan(increase=Increase(factor=2.0, max=24 * HOUR))
    record(store, ban, make_alert("a1"), T0)
    actions.queue_due_undos(store, T0 + HOUR)
    assert actions.forget_old(store, T0 + 25 * HOUR - 1) == 0
    assert actions.forget_old(store, T0 + 25 * HOUR) == 1
    record(store, ban, make_alert("a2"), T0 + 25 * HOUR)
    [row] = actions.active_actions(store, T0 + 25 * HOUR)
    assert (row["duration"], row["times"]) == (HOUR, 1)


def test_revert_ends_the_action_now_queues_its_undo_and_forgets_the_key(store):
    ban = FakeBan(increase=Increase(factor=2.0, max=24 * HOUR))
    record(store, ban, make_alert("a1"), T0)
    record(store, ban, make_alert("a2", ip="192.0.2.2"), T0)
    assert actions.revert(store, T0 + 5, handler="ban", key="192.0.2.1") == 1
    assert actions.revert(store, T0 + 5, handler="ban", key="192.0.2.1") == 0
    assert [r["key"] for r in actions.active_actions(store, T0 + 5)] == ["192.0.2.2"]
    assert actions.queue_due_undos(store, T0 + 5) == {"ban"}
    actions.forget_old(store, T0 + 5)
    record(store, ban, make_alert("a3"), T0 + 10)
    assert actions.active_actions(store, T0 + 10)[0]["duration"] == HOUR  # not a repeat
    assert actions.revert(store, T0 + 20) == 2  # --all


def test_a_new_action_supersedes_an_undelivered_undo_of_the_previous_one(store):
    ban = FakeBan()
    record(store, ban, make_alert("a1"), T0)
    store.mark_done_many([store.claim_due("ban", now=T0)[0]])
    actions.queue_due_undos(store, T0 + HOUR)
    record(store, ban, make_alert("a2"), T0 + HOUR + 1)
    assert outbox(store)["a1/undo"] == ("skipped", "superseded by a new action")
    assert [i.alert_id for i in store.claim_due("ban", now=T0 + HOUR + 1)] == ["a2"]


def test_an_action_past_its_time_but_not_yet_undone_is_replaced_by_a_new_one(store):
    ban = FakeBan()
    record(store, ban, make_alert("a1"), T0)
    assert record(store, ban, make_alert("a2"), T0 + HOUR + 1) == 1
    [row] = actions.active_actions(store, T0 + HOUR + 1)
    assert (row["alert_id"], row["until"]) == ("a2", T0 + 2 * HOUR + 1)
    assert actions.queue_due_undos(store, T0 + HOUR + 2) == set()


def test_duration_grows_by_factor_and_never_overflows():
    increase = Increase(factor=3.0, max=10_000.0)
    assert actions.action_duration(10.0, increase, 1) == 10.0
    assert actions.action_duration(10.0, increase, 3) == 90.0
    assert actions.action_duration(10.0, increase, 100_000) == 10_000.0
    assert actions.action_duration(10.0, None, 7) == 10.0


@dataclass
class RestoringBan(FakeBan):
    restored: list[list[dict[str, Any]]] | None = None

    def restore(self, active: list[dict[str, Any]]) -> None:
        assert self.restored is not None
        self.restored.append(active)


def test_start_undoes_what_fell_due_and_restores_exactly_the_active_actions(store):
    ban = RestoringBan(restored=[])
    record(store, ban, make_alert("a1"), T0)
    record(store, ban, make_alert("a2", ip="192.0.2.2"), T0 + HOUR)
    book = actions.ActionBook(store, {"ban": ban, "mail": object()}, dry_run=False)
    assert set(book.recorders) == {"ban"}
    assert book.start(T0 + HOUR + 1) == {"ban"}
    [active] = ban.restored
    assert [row["key"] for row in active] == ["192.0.2.2"]
    # a1 never ran before its time was up: only its undo is left to deliver
    due = store.claim_due("ban", now=T0 + HOUR + 1)
    assert [i.alert_id for i in due] == ["a2", "a1/undo"]


def test_active_actions_of_a_handler_no_longer_configured_are_named_at_start(store):
    record(store, FakeBan(), make_alert("a1"), T0)
    with capture_logs() as logs:
        actions.ActionBook(store, {}, dry_run=False).start(T0 + 1)
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"].startswith("192.0.2.1 is under an action of handler ban, which is")


def test_tick_checks_for_due_undos_at_most_every_quarter_second(store):
    book = actions.ActionBook(store, {"ban": FakeBan()}, dry_run=False)
    record(store, FakeBan(), make_alert("a1"), T0)
    assert book.tick(T0 + 1, monotonic=100.0) == set()
    assert book.tick(T0 + HOUR, monotonic=100.1) == set()  # too soon after the last check
    assert book.tick(T0 + HOUR, monotonic=100.3) == {"ban"}


def test_state_recovery_keeps_actions_and_drops_one_whose_record_is_unreadable(tmp_path):
    store = StateStore.in_dir(str(tmp_path))
    record(store, FakeBan(), make_alert("a1"), T0)
    record(store, FakeBan(), make_alert("a2", ip="192.0.2.2"), T0)
    with store.transaction():
        store.db.execute("UPDATE actions SET alert = '{broken' WHERE key = '192.0.2.2'")
    store.close()
    result = state_recover.recover(str(tmp_path / "state.db"))
    assert (result.kept["actions"], result.dropped["actions"]) == (1, 1)
    store = StateStore.in_dir(str(tmp_path))
    assert [row["key"] for row in actions.active_actions(store, T0)] == ["192.0.2.1"]
    assert actions.queue_due_undos(store, T0 + HOUR) == {"ban"}  # the kept one still undoes
    store.close()

"""Rule semantics: thresholds, distinct counts, cooldowns, sequences, the key bound, state."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest

from logwatchd.alerts import Alert, alert_id
from logwatchd.clock import ManualClock
from logwatchd.config.model import (
    All,
    Predicate,
    RuleConfig,
    Sequence,
    SequenceStep,
    Text,
    Threshold,
)
from logwatchd.errors import Mark
from logwatchd.events import Event, Line
from logwatchd.rules import Engine, Match
from tests.condition_helpers import leaf

T0 = 1_700_000_000.0
FAILED = leaf(
    "message", "regex", re.compile(r"Failed password for (?P<user>\S+) from (?P<ip>[\d.]+)")
)


def failed(user: str = "root", ip: str = "203.0.113.9") -> str:
    return f"sshd[42]: Failed password for {user} from {ip} port 22 ssh2"


class Feed:
    """An engine and a log to feed it, line by line, on event time."""

    def __init__(self, *rules: RuleConfig, limit: int = 1000) -> None:
        self.clock = ManualClock(T0 + 1_000_000)
        self.rules = rules
        self.limit = limit
        self.engine = self.new_engine()
        self.lineno = 0

    def new_engine(self, rules: tuple[RuleConfig, ...] | None = None) -> Engine:
        return Engine(
            rules or self.rules, {}, host="web1", max_keys_per_rule=self.limit, clock=self.clock
        )

    def event(self, message: str, at: float, source: str = "auth", **fields: Any) -> Event:
        self.lineno += 1
        line = Line(source, message, T0 + at, f"fp:{self.lineno}", "/var/log/auth.log", self.lineno)
        return Event(line, {"message": message, "raw": message, **fields}, T0 + at)

    def send(self, message: str, at: float, **fields: Any) -> list[Alert]:
        return self.engine.process(self.event(message, at, **fields))


def rule(
    match: Predicate | None = FAILED,
    *,
    group_by: tuple[str, ...] = ("ip",),
    threshold: Threshold | None = None,
    cooldown: float = 0.0,
    sequence: Sequence | None = None,
    rule_id: str = "ssh",
) -> RuleConfig:
    return RuleConfig(
        rule_id,
        match,
        group_by=group_by,
        threshold=threshold,
        cooldown=cooldown,
        sequence=sequence,
        severity="high",
        tags=("fail2ban:sshd",),
        handlers=("mail-admin", "ban"),
    )


# --- plain matches ------------------------------------------------------------------------


def test_without_threshold_every_match_is_an_alert_with_extracted_fields() -> None:
    feed = Feed(rule())
    (alert,) = feed.send(failed(), 1)
    assert alert.rule == "ssh"
    assert alert.key == {"ip": "203.0.113.9"}
    assert alert.fields["user"] == "root"
    assert alert.fields["ip"] == "203.0.113.9"
    assert alert.count == 1
    assert alert.suppressed == 0
    assert alert.handlers == ("mail-admin", "ban")
    assert alert.tags == ["fail2ban:sshd"]
    assert alert.severity == "high"
    assert alert.host == "web1"
    assert alert.fired_at == feed.clock.now()
    assert alert.first_seen == alert.last_seen == T0 + 1
    assert alert.raw == failed()
    assert alert.events == [failed()]
    assert alert.path == "/var/log/auth.log"
    assert alert.id == alert_id("ssh", {"ip": "203.0.113.9"}, "fp:1", "web1")
    assert len(feed.send(failed(), 2)) == 1
    assert feed.send("sshd[42]: Accepted password for root", 3) == []
    assert feed.engine.stats()["ssh"]["keys"] == 0  # nothing to remember for a plain rule


def test_matches_are_reported_before_thresholds_with_extracted_fields() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60)))
    matches: list[Match] = []
    feed.engine.process(feed.event(failed(), 1), matches)
    feed.engine.process(feed.event("unrelated", 2), matches)
    assert [(m.rule, m.source, m.line, m.fields["user"]) for m in matches] == [
        ("ssh", "auth", 1, "root")
    ]


def test_event_without_a_group_by_field_matches_but_never_counts() -> None:
    feed = Feed(rule(leaf("message", "contains", "Failed"), group_by=("ip",)))
    matches: list[Match] = []
    assert feed.engine.process(feed.event("Failed something", 1), matches) == []
    assert len(matches) == 1
    assert len(feed.send("Failed something", 2, ip="198.51.100.7")) == 1


def test_group_by_values_of_any_type_become_strings() -> None:
    feed = Feed(rule(leaf("message", "contains", "x"), group_by=("ip", "port"), cooldown=60))
    (alert,) = feed.send("x", 1, ip=ipaddress.ip_address("2001:DB8::1"), port=22)
    assert alert.key == {"ip": "2001:db8::1", "port": "22"}
    assert feed.send("x", 2, ip="2001:db8::1", port="22") == []  # the same key: cooling down


def test_rules_apply_only_to_their_sources() -> None:
    only_web = RuleConfig("web", leaf("message", "contains", "x"), sources=("web",))
    anywhere = RuleConfig("any", leaf("message", "contains", "x"))
    feed = Feed(only_web, anywhere)
    assert [r.id for r in feed.engine.rules_for("web")] == ["web", "any"]
    assert [r.id for r in feed.engine.rules_for("auth")] == ["any"]
    assert [a.rule for a in feed.send("x", 1)] == ["any"]


# --- thresholds ---------------------------------------------------------------------------


def test_threshold_fires_on_exactly_the_nth_match_within_the_window() -> None:
    feed = Feed(rule(threshold=Threshold(5, 60)))
    for n in range(4):
        assert feed.send(failed(), 10 * n) == []
    (alert,) = feed.send(failed(), 40)
    assert alert.count == 5
    assert alert.first_seen == T0
    assert alert.last_seen == T0 + 40
    assert alert.events == [failed()] * 5
    assert alert.id == alert_id("ssh", {"ip": "203.0.113.9"}, "fp:1", "web1")


def test_threshold_n_minus_one_matches_never_fire() -> None:
    feed = Feed(rule(threshold=Threshold(5, 60)))
    assert all(feed.send(failed(), n) == [] for n in range(4))


def test_threshold_n_matches_spread_wider_than_the_window_do_not_fire() -> None:
    feed = Feed(rule(threshold=Threshold(5, 60)))
    assert all(feed.send(failed(), 20 * n) == [] for n in range(8))  # 4 per 60 s at most


def test_threshold_window_starts_over_after_firing() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60)))
    fired = [bool(feed.send(failed(), n)) for n in range(7)]
    assert fired == [False, False, True, False, False, True, False]


def test_the_second_window_has_its_own_first_line_and_id() -> None:
    feed = Feed(rule(threshold=Threshold(2, 60)))
    ids = [a.id for n in range(4) for a in feed.send(failed(), n)]
    key = {"ip": "203.0.113.9"}
    assert ids == [alert_id("ssh", key, "fp:1", "web1"), alert_id("ssh", key, "fp:3", "web1")]


def test_threshold_counts_each_key_separately() -> None:
    feed = Feed(rule(threshold=Threshold(2, 60)))
    assert feed.send(failed(ip="192.0.2.1"), 1) == []
    assert feed.send(failed(ip="192.0.2.2"), 2) == []
    (alert,) = feed.send(failed(ip="192.0.2.1"), 3)
    assert alert.key == {"ip": "192.0.2.1"}


def test_expired_matches_leave_the_window() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60)))
    feed.send(failed(), 0)
    feed.send(failed(), 50)
    assert feed.send(failed(), 100) == []  # the first one is 100 s old by now
    (alert,) = feed.send(failed(), 101)
    assert alert.first_seen == T0 + 50


def test_out_of_order_lines_within_skew_count_and_very_old_ones_do_not() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60)))
    feed.send(failed(), 100)
    assert feed.send(failed(), 10) == []  # 90 s before the newest: outside the window
    feed.send(failed(), 98)
    (alert,) = feed.send(failed(), 99)
    assert alert.count == 3
    assert alert.first_seen == T0 + 98


def test_a_very_late_line_after_a_fired_window_is_ignored() -> None:
    feed = Feed(rule(threshold=Threshold(2, 60)))
    feed.send(failed(), 100)
    assert len(feed.send(failed(), 101)) == 1
    assert feed.send(failed(), 5) == []  # older than the window: not counted, no crash
    assert feed.send(failed(), 102) == []
    assert len(feed.send(failed(), 103)) == 1


def test_samples_are_at_most_ten_and_long_lines_are_cut() -> None:
    feed = Feed(rule(threshold=Threshold(12, 60)))
    long_line = failed() + " " + "x" * 5000
    alerts = [a for n in range(12) for a in feed.send(long_line, n)]
    (alert,) = alerts
    assert alert.count == 12
    assert len(alert.events) == 10
    assert all(len(sample) <= 1024 for sample in alert.events)
    assert alert.raw == long_line  # the alert's own event stays whole


# --- distinct -----------------------------------------------------------------------------


def test_distinct_fires_on_the_nth_distinct_value_not_the_nth_event() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60, distinct="user")))
    for n in range(5):
        assert feed.send(failed(user="root"), n) == []
    assert feed.send(failed(user="admin"), 6) == []
    assert feed.send(failed(user="admin"), 7) == []
    (alert,) = feed.send(failed(user="oracle"), 8)
    assert alert.count == 3
    assert alert.first_seen == T0


def test_distinct_values_expire_with_the_window() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60, distinct="user")))
    feed.send(failed(user="a"), 0)
    feed.send(failed(user="b"), 30)
    assert feed.send(failed(user="c"), 70) == []  # "a" is gone
    (alert,) = feed.send(failed(user="d"), 71)
    assert alert.count == 3


# --- cooldown -----------------------------------------------------------------------------


def test_cooldown_suppresses_and_counts_then_reports_the_count() -> None:
    feed = Feed(rule(cooldown=600))
    assert len(feed.send(failed(), 0)) == 1
    for at in (10, 20, 30):
        assert feed.send(failed(), at) == []
    assert len(feed.send(failed(ip="192.0.2.1"), 40)) == 1  # another key is not silenced
    (alert,) = feed.send(failed(), 700)
    assert alert.suppressed == 3
    (_next,) = feed.send(failed(), 1400)
    assert _next.suppressed == 0


def test_cooldown_with_threshold_needs_a_fresh_window_after_it_ends() -> None:
    feed = Feed(rule(threshold=Threshold(2, 60), cooldown=300))
    fired = [a for at in (0, 1, 2, 3, 4) for a in feed.send(failed(), at)]
    assert len(fired) == 1
    assert feed.send(failed(), 400) == []
    (alert,) = feed.send(failed(), 401)
    assert alert.suppressed == 3
    assert alert.count == 2


# --- sequences ----------------------------------------------------------------------------

LOGIN_FAIL = leaf("message", "regex", re.compile(r"Failed password for (?P<user>\S+)"))
LOGIN_OK = leaf("message", "regex", re.compile(r"Accepted password for (?P<user>\S+)"))


def fail_then_success(window: float = 60) -> RuleConfig:
    seq = Sequence((SequenceStep(LOGIN_FAIL), SequenceStep(LOGIN_OK)), window=window)
    return rule(None, group_by=("user",), sequence=seq, rule_id="fail-then-ok")


def test_sequence_fires_when_the_last_step_comes_within_the_window() -> None:
    feed = Feed(fail_then_success())
    assert feed.send("Failed password for bob from x", 0) == []
    assert feed.send("Accepted password for alice from x", 10) == []  # another key
    (alert,) = feed.send("Accepted password for bob from x", 30)
    assert alert.key == {"user": "bob"}
    assert alert.count == 2
    assert alert.first_seen == T0
    assert alert.last_seen == T0 + 30
    assert alert.id == alert_id("fail-then-ok", {"user": "bob"}, "fp:1", "web1")
    assert alert.events == ["Failed password for bob from x", "Accepted password for bob from x"]
    assert feed.send("Accepted password for bob from x", 31) == []  # the key started over


def test_sequence_does_not_fire_out_of_order_or_too_late() -> None:
    feed = Feed(fail_then_success())
    assert feed.send("Accepted password for bob", 0) == []
    assert feed.send("Failed password for bob", 1) == []
    assert feed.send("Accepted password for bob", 62) == []


def test_sequence_restarts_from_the_latest_first_step() -> None:
    feed = Feed(fail_then_success())
    feed.send("Failed password for bob", 0)
    feed.send("Failed password for bob", 50)
    (alert,) = feed.send("Accepted password for bob", 100)
    assert alert.first_seen == T0 + 50


def test_three_step_sequence_needs_every_step_in_order() -> None:
    steps = tuple(
        SequenceStep(leaf("message", "regex", re.compile(rf"{word} (?P<user>\w+)")))
        for word in ("scan", "login", "sudo")
    )
    feed = Feed(rule(None, group_by=("user",), sequence=Sequence(steps, window=100)))
    assert feed.send("scan bob", 0) == []
    assert feed.send("sudo bob", 1) == []  # out of order: step 3 before step 2
    assert feed.send("login bob", 2) == []
    (alert,) = feed.send("sudo bob", 3)
    assert alert.count == 3
    assert alert.events == ["scan bob", "login bob", "sudo bob"]


def test_a_step_repeated_apart_is_tested_once_and_keeps_step_order() -> None:
    """Steps fail, ok, fail: one line that matches the first and the last step advances a
    sequence waiting for its last step, and starts another one (latest step first)."""
    seq = Sequence(
        (SequenceStep(LOGIN_FAIL), SequenceStep(LOGIN_OK), SequenceStep(LOGIN_FAIL)), window=60
    )
    feed = Feed(rule(None, group_by=("user",), sequence=seq))
    assert feed.send("Failed password for bob", 0) == []
    assert feed.send("Accepted password for bob", 1) == []
    (alert,) = feed.send("Failed password for bob", 2)
    assert (alert.count, alert.first_seen, alert.last_seen) == (3, T0, T0 + 2)
    assert alert.events == [
        "Failed password for bob", "Accepted password for bob", "Failed password for bob"
    ]  # fmt: skip
    # the line that completed the sequence also started the next one
    assert feed.send("Accepted password for bob", 3) == []
    (again,) = feed.send("Failed password for bob", 4)
    assert again.first_seen == T0 + 2


def test_one_line_never_advances_a_sequence_twice_whatever_its_steps_share() -> None:
    """Steps fail, any password line, fail: a failed line matches all three, and is applied
    latest step first, so two failed lines are not yet a sequence of three."""
    anything = SequenceStep(leaf("message", "regex", re.compile(r"password for (?P<user>\w+)")))
    seq = Sequence((SequenceStep(LOGIN_FAIL), anything, SequenceStep(LOGIN_FAIL)), window=60)
    feed = Feed(rule(None, group_by=("user",), sequence=seq))
    assert feed.send("Failed password for bob", 0) == []
    assert feed.send("Failed password for bob", 1) == []
    (alert,) = feed.send("Failed password for bob", 2)
    assert (alert.count, alert.first_seen) == (3, T0)


def test_sequence_completed_in_cooldown_is_suppressed_and_counted() -> None:
    seq = Sequence((SequenceStep(LOGIN_FAIL), SequenceStep(LOGIN_OK)), window=60)
    feed = Feed(rule(None, group_by=("user",), sequence=seq, cooldown=600))
    feed.send("Failed password for bob", 0)
    assert len(feed.send("Accepted password for bob", 1)) == 1
    feed.send("Failed password for bob", 2)
    assert feed.send("Accepted password for bob", 3) == []
    feed.send("Failed password for bob", 700)
    (alert,) = feed.send("Accepted password for bob", 701)
    assert alert.suppressed == 1


def backup_not_done(window: float = 3600) -> RuleConfig:
    seq = Sequence(
        (
            SequenceStep(leaf("message", "regex", re.compile(r"backup (?P<job>\w+) started"))),
            SequenceStep(
                leaf("message", "regex", re.compile(r"backup (?P<job>\w+) done")), absent=True
            ),
        ),
        window=window,
    )
    return rule(None, group_by=("job",), sequence=seq, rule_id="backup-missing")


def test_absent_step_fires_at_the_deadline_through_tick_once() -> None:
    feed = Feed(backup_not_done())
    assert feed.send("backup nightly started", 0) == []
    assert feed.engine.tick(T0 + 3599) == []
    (alert,) = feed.engine.tick(T0 + 3600)
    assert alert.key == {"job": "nightly"}
    assert alert.count == 1
    assert alert.raw == "backup nightly started"
    assert alert.fields["job"] == "nightly"
    assert alert.source == "auth"
    assert alert.id == alert_id("backup-missing", {"job": "nightly"}, "fp:1", "web1")
    assert feed.engine.tick(T0 + 99_999) == []


def test_absent_step_that_arrives_in_time_cancels() -> None:
    feed = Feed(backup_not_done())
    feed.send("backup nightly started", 0)
    assert feed.send("backup nightly done", 3000) == []
    assert feed.engine.tick(T0 + 10_000) == []


def test_absent_deadline_also_fires_from_event_time_in_replay() -> None:
    feed = Feed(backup_not_done())
    feed.send("backup nightly started", 0)
    feed.send("backup weekly started", 10)
    (alert,) = feed.send("something unrelated", 3605)
    assert alert.key == {"job": "nightly"}
    (late,) = feed.send("backup weekly done", 3700)  # too late: it fired at 3610 instead
    assert late.key == {"job": "weekly"}


# --- the key bound ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flood", [100_000, pytest.param(1_000_000, marks=pytest.mark.slow)], ids=["100k", "1M"]
)
def test_a_flood_of_distinct_keys_keeps_the_key_count_within_the_bound(flood: int) -> None:
    limit = 1000
    feed = Feed(rule(leaf("message", "contains", "x"), threshold=Threshold(3, 60)), limit=limit)
    engine = feed.engine
    line = Line("auth", "x", T0, "fp", None, 0)
    for n in range(flood):
        engine.process(Event(line, {"message": "x", "ip": str(n)}, T0 + n * 0.001))
        if n % 10_000 == 0:
            assert engine.stats()["ssh"]["keys"] <= limit
    stats = engine.stats()["ssh"]
    assert stats["keys"] == limit
    assert stats["evicted"] == flood - limit
    # the most recently updated keys are the ones kept, and they still count
    last = {"message": "x", "ip": str(flood - 1)}
    end = T0 + flood * 0.001
    engine.process(Event(line, last, end))
    assert len(engine.process(Event(line, last, end))) == 1


def test_eviction_drops_the_least_recently_updated_key_and_deletes_its_row() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60)), limit=2)
    feed.send(failed(ip="192.0.2.1"), 0)
    feed.send(failed(ip="192.0.2.2"), 1)
    feed.send(failed(ip="192.0.2.1"), 2)  # .1 is now the most recently updated
    feed.engine.drain_changes()
    feed.send(failed(ip="192.0.2.3"), 3)
    changes = feed.engine.drain_changes()
    assert changes.deletes == [("ssh", '["192.0.2.2"]')]
    assert [key for _rule, key, _state in changes.upserts] == ['["192.0.2.3"]']
    (alert,) = feed.send(failed(ip="192.0.2.1"), 4)
    assert alert.count == 3


def test_discarded_changes_are_not_drained_and_state_still_counts() -> None:
    """What `test` does instead of draining: the change sets empty, the windows kept."""
    feed = Feed(rule(threshold=Threshold(3, 60)), limit=2)
    for n in range(3):
        feed.send(failed(ip=f"192.0.2.{n}"), n)  # the third evicts .0
    feed.send(failed(ip="192.0.2.2"), 3)
    feed.engine.discard_changes()
    assert not feed.engine.drain_changes()
    (alert,) = feed.send(failed(ip="192.0.2.2"), 4)
    assert alert.count == 3


def test_quiet_keys_are_pruned_as_time_moves_on() -> None:
    feed = Feed(rule(threshold=Threshold(5, 60)))
    for n in range(20):
        feed.send(failed(ip=f"192.0.2.{n}"), n)
    for n in range(200):  # quiet keys are swept every SWEEP_EVERY events
        feed.send(failed(ip="198.51.100.1"), 1000 + n)
    assert feed.engine.stats()["ssh"]["keys"] <= 2


# --- state --------------------------------------------------------------------------------


def rows(engine: Engine) -> list[tuple[str, str, str, str]]:
    changes = engine.drain_changes()
    return [(r, changes.digests[r], key, state) for r, key, state in changes.upserts]


def test_state_round_trip_rebuilds_the_same_alert() -> None:
    """Feed 4 of 5, persist, restart, feed the 5th: it fires once, as without the restart."""
    messages = [(failed(), 10.0 * n) for n in range(5)]
    straight = Feed(rule(threshold=Threshold(5, 60)))
    (expected,) = [a for m, at in messages for a in straight.send(m, at)]

    before = Feed(rule(threshold=Threshold(5, 60)))
    for message, at in messages[:4]:
        assert before.send(message, at) == []
    saved = rows(before.engine)
    assert len(saved) == 1
    json.loads(saved[0][3])  # state is plain JSON

    after = Feed(rule(threshold=Threshold(5, 60)))
    after.lineno = 4
    after.engine.load_state(saved)
    (alert,) = after.send(*messages[4])
    assert alert.to_dict() == expected.to_dict()
    assert after.send(failed(), 41) == []


def test_cooldown_and_suppressed_count_survive_a_restart() -> None:
    before = Feed(rule(cooldown=600))
    before.send(failed(), 0)
    before.send(failed(), 10)
    after = Feed(rule(cooldown=600))
    after.engine.load_state(rows(before.engine))
    assert after.send(failed(), 20) == []
    (alert,) = after.send(failed(), 700)
    assert alert.suppressed == 2


def test_pending_absent_sequence_survives_a_restart() -> None:
    before = Feed(backup_not_done())
    before.send("backup nightly started", 0)
    after = Feed(backup_not_done())
    after.engine.load_state(rows(before.engine))
    (alert,) = after.engine.tick(T0 + 3600)
    assert alert.raw == "backup nightly started"
    assert alert.id == alert_id("backup-missing", {"job": "nightly"}, "fp:1", "web1")


def test_a_changed_rule_digest_drops_its_state() -> None:
    before = Feed(rule(threshold=Threshold(5, 60)))
    for n in range(4):
        before.send(failed(), n)
    saved = rows(before.engine)
    after = Feed(rule(threshold=Threshold(5, 120)))  # another window: another shape
    after.engine.load_state(saved)
    assert after.engine.drain_changes().deletes == [("ssh", '["203.0.113.9"]')]
    assert after.send(failed(), 5) == []
    assert after.engine.stats()["ssh"]["keys"] == 1


def test_digest_ignores_where_the_rule_sits_but_sees_every_bit_of_its_regex() -> None:
    """A comment added above a rule must not reset its windows; a changed regex must."""
    here = Text("message", "contains", "x", mark=Mark("a.yaml", 3))
    there = Text("message", "contains", "x", mark=Mark("b.yaml", 40))
    assert RuleConfig("r", here).digest() == RuleConfig("r", there, mark=Mark("b", 2)).digest()
    long_a = leaf("message", "regex", re.compile("x" * 300 + "a"))
    long_b = leaf("message", "regex", re.compile("x" * 300 + "b"))
    assert RuleConfig("r", long_a).digest() != RuleConfig("r", long_b).digest()


def test_rows_of_removed_rules_and_garbage_rows_are_deleted_not_loaded() -> None:
    feed = Feed(rule())
    feed.engine.load_state(
        [
            ("gone", "abc", '["x"]', "{}"),
            ("ssh", rule().digest(), "not json", "{}"),
            ("ssh", rule().digest(), '["y"]', "{broken"),
        ]
    )
    deletes = feed.engine.drain_changes().deletes
    assert sorted(deletes) == [("gone", '["x"]'), ("ssh", '["y"]'), ("ssh", "not json")]


def test_only_changed_keys_are_drained() -> None:
    feed = Feed(rule(threshold=Threshold(5, 60)))
    feed.send(failed(ip="192.0.2.1"), 0)
    feed.send(failed(ip="192.0.2.2"), 0)
    assert len(feed.engine.drain_changes().upserts) == 2
    assert not feed.engine.drain_changes()
    feed.send(failed(ip="192.0.2.2"), 1)
    assert [key for _r, key, _s in feed.engine.drain_changes().upserts] == ['["192.0.2.2"]']


def test_a_key_that_fires_without_cooldown_is_deleted() -> None:
    feed = Feed(rule(threshold=Threshold(2, 60)))
    feed.send(failed(), 0)
    feed.engine.drain_changes()
    feed.send(failed(), 1)
    changes = feed.engine.drain_changes()
    assert changes.upserts == []
    assert changes.deletes == [("ssh", '["203.0.113.9"]')]


def test_reload_keeps_state_of_unchanged_rules_only() -> None:
    # a reload is a new engine over what the old one committed (as the daemon does it)
    kept = rule(threshold=Threshold(3, 60), rule_id="kept")
    changed = rule(threshold=Threshold(3, 60), rule_id="changed")
    feed = Feed(kept, changed)
    feed.send(failed(), 0)
    feed.send(failed(), 1)
    saved = rows(feed.engine)
    feed.engine = feed.new_engine((kept, rule(threshold=Threshold(3, 30), rule_id="changed")))
    feed.engine.load_state(saved)
    assert [a.rule for a in feed.send(failed(), 2)] == ["kept"]
    changes = feed.engine.drain_changes()
    assert ("changed", '["203.0.113.9"]') not in changes.deletes  # re-created in this drain
    assert {r for r, _k, _s in changes.upserts} == {"changed"}


def test_reload_deletes_state_of_removed_rules() -> None:
    feed = Feed(rule(threshold=Threshold(3, 60)))
    feed.send(failed(), 0)
    saved = rows(feed.engine)
    reloaded = feed.new_engine((rule(All((FAILED,)), rule_id="other"),))
    reloaded.load_state(saved)
    assert reloaded.drain_changes().deletes == [("ssh", '["203.0.113.9"]')]

"""Per-key rule state on its own: sliding windows, distinct values, bounded tables."""

from __future__ import annotations

import json

from logwatchd.alerts import MAX_SAMPLES
from logwatchd.rules.windows import (
    SAMPLE_CHARS,
    KeyState,
    KeyTable,
    Last,
    Partial,
    cut,
    key_from_json,
    key_json,
)


def test_a_window_keeps_what_happened_in_its_span_of_the_newest_time() -> None:
    state = KeyState(0.0)
    assert [state.add_hit(t, f"o{t}", 10.0) for t in (0.0, 5.0, 10.0)] == [1, 2, 3]
    assert state.add_hit(15.0, "o15", 10.0) == 3  # 0.0 fell out
    assert state.first_hit() == (5.0, "o5.0")


def test_a_late_line_neither_crashes_nor_moves_the_window_back() -> None:
    state = KeyState(0.0)
    state.add_hit(100.0, "a", 10.0)
    assert state.add_hit(95.0, "b", 10.0) == 2  # inside [90, 100]
    assert state.add_hit(50.0, "c", 10.0) == 2  # too old to count
    assert state.newest == 100.0


def test_distinct_values_count_once_and_expire_by_their_last_sighting() -> None:
    state = KeyState(0.0)
    assert state.add_distinct("alice", 0.0, "o1", 10.0) == 1
    assert state.add_distinct("alice", 8.0, "o2", 10.0) == 1
    assert state.add_distinct("bob", 9.0, "o3", 10.0) == 2
    assert state.add_distinct("carol", 17.0, "o4", 10.0) == 3  # alice last seen at 8: in
    assert state.add_distinct("dave", 19.0, "o5", 10.0) == 3  # alice (8 < 9) is gone
    assert state.first_hit() == (9.0, "o3")


def test_samples_are_bounded_and_cut() -> None:
    state = KeyState(0.0)
    for n in range(MAX_SAMPLES + 3):
        state.add_sample(float(n), "x" * (SAMPLE_CHARS + n))
    assert len(state.samples) == MAX_SAMPLES
    assert all(len(raw) == SAMPLE_CHARS and raw.endswith("\u2026") for _, raw in state.samples)
    assert cut("short") == "short"
    assert state.window_samples(1.0) == [raw for t, raw in state.samples if t >= state.newest - 1]


def test_state_survives_a_dump_and_load() -> None:
    state = KeyState(5.0)
    state.add_hit(5.0, "o1", 60.0)
    state.add_distinct("v", 6.0, "o2", 60.0)
    state.add_sample(6.0, "line")
    partial = Partial(4.0, "o0")
    partial.see(4.0, "first", Last("s", "/p", "first", {"ip": "192.0.2.1"}))
    state.partials[1] = partial
    state.until, state.suppressed = 99.0, 3
    again = KeyState.load(state.dump())
    assert again.dump() == state.dump()
    assert json.loads(state.dump())["x"] == 3


def test_an_idle_state_has_nothing_left_worth_keeping() -> None:
    state = KeyState(0.0)
    assert state.idle(0.0)
    state.until = 10.0
    assert not state.idle(5.0) and state.idle(10.0)
    state.suppressed = 1
    assert not state.idle(20.0)


def test_a_table_holds_at_most_its_limit_evicting_the_least_recently_updated() -> None:
    table = KeyTable(2)
    for key in (("a",), ("b",), ("a",), ("c",)):
        table.touch(key, 0.0)
    assert list(table) == [("a",), ("c",)] and table.evicted == 1
    upserts, deletes = table.drain()
    assert sorted(key for key, _ in upserts) == [("a",), ("c",)] and deletes == [("b",)]
    assert table.drain() == ([], [])  # nothing changed since


def test_a_restored_key_is_not_written_again_until_it_changes() -> None:
    table = KeyTable(10)
    table.put(("a",), KeyState(0.0))
    assert table.drain() == ([], [])
    table.touch(("a",), 1.0)
    assert [key for key, _ in table.drain()[0]] == [("a",)]


def test_a_sweep_drops_quiet_keys_but_keeps_what_a_cooldown_silenced() -> None:
    table = KeyTable(10)
    table.touch(("quiet",), 0.0)
    table.touch(("silenced",), 0.0).suppressed = 2
    table.touch(("busy",), 0.0).newest = 100.0
    table.sweep(now=100.0, span=50.0)
    assert table.get(("quiet",)) is None
    kept = table.get(("silenced",))
    assert kept is not None and kept.suppressed == 2
    assert list(table)[-1] == ("silenced",)  # moved to the back, past the busy key


def test_keys_as_json_round_trip_and_bad_rows_read_as_none() -> None:
    assert key_from_json(key_json(("192.0.2.1", "root"))) == ("192.0.2.1", "root")
    assert key_from_json("not json") is None
    assert key_from_json('["a", 1]') is None
    assert key_from_json('{"a": 1}') is None

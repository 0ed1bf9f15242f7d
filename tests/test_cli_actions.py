"""``logwatchd actions``: lists active actions from the state database and reverts them."""

from __future__ import annotations

import json
import time

import pytest

from logwatchd import actions
from logwatchd.cli import main
from logwatchd.state import StateStore
from tests.test_actions import FakeBan, make_alert


@pytest.fixture
def state_dir(tmp_path):
    """Two active bans (one a /64) and one that already ended."""
    store = StateStore.in_dir(str(tmp_path))
    now = time.time()
    with store.transaction():
        for alert_id, ip in (("a1", "192.0.2.1"), ("a2", "2001:db8:1:2::/64"), ("a3", "192.0.2.3")):
            actions.Recorder(FakeBan()).queue(store.db, make_alert(alert_id, ip), now - 10)
    actions.revert(store, now - 5, handler="ban", key="192.0.2.3")
    store.close()
    return str(tmp_path)


def listed(state_dir: str, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    assert main(["actions", "--state-dir", state_dir, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_list_shows_active_actions_for_people_and_machines(state_dir, capsys):
    rows = listed(state_dir, capsys)
    assert [(r["handler"], r["key"], r["times"], r["state"]) for r in rows] == [
        ("ban", "192.0.2.1", 1, "pending"),
        ("ban", "2001:db8:1:2::/64", 1, "pending"),
    ]
    assert rows[0]["duration"] == 3600.0 and rows[0]["rule"] == "brute"
    assert rows[0]["until"].startswith(time.strftime("%Y-"))
    assert main(["actions", "--state-dir", state_dir]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split() == ["HANDLER", "KEY", "SINCE", "UNTIL", "TIMES", "STATE"]
    assert text[1].split()[:2] == ["ban", "192.0.2.1"]
    assert text[1].split()[4:] == ["1", "pending"]


def test_revert_takes_a_key_or_an_address_inside_a_banned_prefix(state_dir, capsys):
    assert main(["actions", "--state-dir", state_dir, "revert", "ban", "2001:db8:1:2::99"]) == 0
    assert "reverted ban 2001:db8:1:2::/64: the daemon undoes it" in capsys.readouterr().out
    assert [r["key"] for r in listed(state_dir, capsys)] == ["192.0.2.1"]
    # options may also follow `revert`
    assert main(["actions", "revert", "--state-dir", state_dir, "ban", "192.0.2.1"]) == 0
    assert "reverted ban 192.0.2.1" in capsys.readouterr().out
    assert listed(state_dir, capsys) == []


def test_revert_of_what_is_not_active_says_so_and_fails(state_dir, capsys):
    assert main(["actions", "--state-dir", state_dir, "revert", "ban", "192.0.2.3"]) == 1
    assert "no active action of ban for 192.0.2.3" in capsys.readouterr().err
    assert main(["actions", "--state-dir", state_dir, "revert", "mail", "192.0.2.1"]) == 1
    capsys.readouterr()
    assert len(listed(state_dir, capsys)) == 2


def test_revert_all_ends_every_active_action(state_dir, capsys):
    assert main(["actions", "--state-dir", state_dir, "revert", "--all"]) == 0
    assert "reverted 2 active actions" in capsys.readouterr().out
    assert listed(state_dir, capsys) == []


def test_revert_needs_a_handler_and_key_or_all(state_dir, capsys):
    assert main(["actions", "--state-dir", state_dir, "revert", "ban"]) == 2
    assert "actions revert takes HANDLER KEY, or --all" in capsys.readouterr().err
    assert main(["actions", "--state-dir", state_dir, "revert", "--all", "ban", "x"]) == 2


def test_without_a_state_database_it_says_where_it_looked(tmp_path, capsys):
    assert main(["actions", "--state-dir", str(tmp_path / "none")]) == 2
    assert "no state database at" in capsys.readouterr().err

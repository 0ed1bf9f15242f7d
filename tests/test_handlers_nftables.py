"""The nftables handler: which address it bans, and real bans with real nft.

The daemon tests run the daemon and nft inside a network namespace of the test's own (never
the host's ruleset): a threshold bans within a second, the ``never`` list is honoured, IPv6
is banned by its /64, a ban ends after its time, a repeat offender's next ban is longer, an
address failing again while banned has its ban extended, and after a kill -9 and a lost
ruleset (a reboot) the active bans come back (extended ones with their later end) and expired
ones not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from logwatchd import actions
from logwatchd.alerts import isoformat
from logwatchd.commands.check import warnings as check_warnings
from logwatchd.config import load
from logwatchd.errors import ActionRefused, ConfigError, DeliveryError
from logwatchd.handlers import build_handler
from logwatchd.state import StateStore
from logwatchd.templates import HostInfo, Templates
from tests import nft_helpers
from tests.daemon_helpers import DaemonProcess, wait_for, write_config
from tests.nft_helpers import elements, nft

REGEX = r"^(?P<timestamp>\S+ \S+) (?P<event_type>\w+) - IP: (?P<ip>\S+)"


def config(tmp_path: Path, **ban: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "daemon": {"state_dir": str(tmp_path / "state"), "commit_interval": "100ms"},
        "lists": {"trusted": ["10.0.0.0/8", "2001:db8:ffff::/48"]},
        "sources": [
            {"id": "app", "type": "file", "paths": [str(tmp_path / "app.log")], "parser": "app"}
        ],
        "parsers": {"app": {"regex": REGEX, "time_format": "%Y-%m-%d %H:%M:%S"}},
        "rules": [
            {
                "id": "brute",
                "match": {"field": "event_type", "equals": "Fail"},
                "group_by": ["ip"],
                "threshold": {"count": 3, "window": "1m"},
                "handlers": ["ban"],
            },
            {
                "id": "probe",
                "match": {"field": "event_type", "equals": "Probe"},
                "group_by": ["ip"],
                "handlers": ["short"],
            },
        ],
        "handlers": {
            "ban": {"type": "nftables", "never": ["trusted", "192.0.2.1"], **ban},
            "short": {"type": "nftables", "set": "short", "duration": "3s"},
        },
    }


def handler(tmp_path: Path, **ban: Any) -> Any:
    cfg = load(str(write_config(tmp_path / "c.yaml", config(tmp_path, **ban))))
    return build_handler(cfg.handlers["ban"], templates=Templates(), host=HostInfo.local())


def alert(key: dict[str, Any], fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key": key, "event": {"fields": fields or {}}}


# --- which address ----------------------------------------------------------------------


def test_the_address_comes_from_the_key_first_then_the_event(tmp_path):
    ban = handler(tmp_path)
    assert ban.action_key(alert({"ip": "203.0.113.9"}, {"ip": "198.51.100.1"})) == "203.0.113.9"
    assert ban.action_key(alert({"user": "bob"}, {"ip": "198.51.100.1"})) == "198.51.100.1"
    assert ban.action_key(alert({"ip": "::ffff:203.0.113.9"})) == "203.0.113.9"
    assert ban.action_key(alert({"ip": "2001:db8:1:2:a:b:c:d"})) == "2001:db8:1:2::/64"
    assert handler(tmp_path, prefix6=128).action_key(alert({"ip": "2001:db8::1"})) == "2001:db8::1"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("host.example.com", "not an IP address in 'ip': 'host.example.com'"),
        ("203.0.113.9; nft flush ruleset", "not an IP address"),
        ("fe80::1%eth0", "scoped address"),
        ("127.0.0.1", "never banned (loopback"),
        ("::", "never banned"),
        (None, "has no field 'ip'"),
    ],
)
def test_a_value_that_is_not_a_bannable_address_is_refused(tmp_path, value, reason):
    key = {} if value is None else {"ip": value}
    with pytest.raises(ActionRefused, match=reason.replace("(", r"\(")):
        handler(tmp_path).action_key(alert(key))


def test_never_lists_and_networks_are_never_banned_even_inside_a_prefix(tmp_path):
    ban = handler(tmp_path)
    with pytest.raises(
        ActionRefused, match=r"10\.9\.9\.9 is on the never list: 10\.0\.0\.0/8 \(list trusted\)"
    ) as refused:
        ban.action_key(alert({"ip": "10.9.9.9"}))
    assert refused.value.expected
    with pytest.raises(ActionRefused, match=r"192\.0\.2\.1/32$"):
        ban.action_key(alert({"ip": "192.0.2.1"}))
    # the /64 around this address would also cover the trusted /48: not banned
    with pytest.raises(ActionRefused, match="2001:db8:ffff::/64"):
        ban.action_key(alert({"ip": "2001:db8:ffff:0:1::5"}))
    assert ban.action_key(alert({"ip": "192.0.2.2"})) == "192.0.2.2"


def test_an_ip_family_table_refuses_ipv6(tmp_path):
    with pytest.raises(ActionRefused, match="table family ip has no IPv6 set"):
        handler(tmp_path, family="ip").action_key(alert({"ip": "2001:db8::1"}))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"never": ["nosuch"]}, r"c\.yaml:\d+: handlers\.ban\.never: unknown list 'nosuch'"),
        ({"never": ["not a list!"]}, r"handlers\.ban\.never\[0\]: .* neither an address"),
        ({"set": "bad name"}, r"handlers\.ban\.set: .* not an nftables name"),
        ({"family": "bridge"}, r"handlers\.ban\.family: \"bridge\" is not one of inet, ip, ip6"),
        ({"increase": {"factor": 1, "max": "1d"}}, r"increase\.factor: must be more than 1"),
        ({"increase": {"factor": 2, "max": "1m"}}, r"increase\.max: must not be shorter"),
        ({"prefix6": 8}, r"handlers\.ban\.prefix6: must be at least 32"),
        ({"nft": "nft"}, r"handlers\.ban\.nft: .* absolute path"),
        ({"set": "short"}, r"handlers\.short\.set: handler 'ban' already bans into"),
        ({"chain": "yes"}, r"handlers\.ban\.chain: expected true or false"),
    ],
)
def test_bad_nftables_settings_are_config_errors_with_file_and_line(tmp_path, settings, message):
    path = write_config(tmp_path / "c.yaml", config(tmp_path, **settings))
    with pytest.raises(ConfigError, match=message):
        load(str(path))


def test_a_ban_handler_gets_no_default_rate_limit_and_a_command_with_undo_the_commands(tmp_path):
    base = config(tmp_path)
    base["handlers"]["lock"] = {
        "type": "command",
        "argv": ["/bin/true"],
        "undo": {"argv": ["/bin/true"], "after": "1m"},
    }
    handlers = load(str(write_config(tmp_path / "c.yaml", base))).handlers
    assert handlers["ban"].rate_limit is None
    limit = handlers["lock"].rate_limit
    assert limit is not None and (limit.max, limit.per) == (60, 60.0)


def test_check_warns_when_a_banning_rule_does_not_group_by_the_address(tmp_path):
    base = config(tmp_path)
    base["rules"][0]["group_by"] = []
    found = check_warnings(load(str(write_config(tmp_path / "c.yaml", base))))
    assert any(
        "rules.brute: handler ban bans the address in 'ip', which is not in group_by" in w
        for w in found
    )
    assert not any("handler short" in w for w in found)


def test_a_list_without_addresses_cannot_be_a_never_list(tmp_path):
    base = config(tmp_path, never=["admins"])
    base["lists"]["admins"] = ["alice", "bob"]
    with pytest.raises(ConfigError, match="list 'admins' holds no address or network"):
        load(str(write_config(tmp_path / "c.yaml", base)))


# --- real bans in a network namespace ---------------------------------------------------


@pytest.fixture
def netns() -> Any:
    reason = nft_helpers.missing_requirements()
    if reason:
        pytest.skip(reason)
    with nft_helpers.network_namespace() as name:
        yield name


def in_namespace(tmp_path: Path, namespace: str, *, drop_cap: bool = False, **ban: Any) -> Any:
    """The handler, with an ``nft`` that runs the real one inside the test's namespace."""
    wrapper = tmp_path / "nft"
    drop = "setpriv --bounding-set=-net_admin --inh-caps=-net_admin " if drop_cap else ""
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {drop}nft "$@"\n')
    wrapper.chmod(0o755)
    return handler(tmp_path, nft=str(wrapper), **ban)


def ban_alert(ip: str, action: dict[str, Any] | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {"id": "a1", "rule": "brute", "key": {"ip": ip}, "event": {}}
    if action is not None:
        alert["action"] = action
    return alert


def test_without_bookkeeping_a_ban_lasts_duration_and_a_refusal_bans_nothing(tmp_path, netns):
    """`logwatchd test --execute`: no state database, the nft timeout ends the ban."""
    ban = in_namespace(tmp_path, netns, duration="10m")
    with capture_logs() as logs:
        ban.send([ban_alert("203.0.113.9"), ban_alert("10.0.0.5"), ban_alert("2001:db8::7")])
    four = elements(netns, "banned4")
    assert list(four) == ["203.0.113.9"] and four["203.0.113.9"]["timeout"] == 600
    assert list(elements(netns, "banned6")) == ["2001:db8::/64"]
    assert any("not acted on: 10.0.0.5 is on the never list" in e["event"] for e in logs)


def test_a_flushed_ruleset_comes_back_with_the_next_ban_and_rules_never_double(tmp_path, netns):
    ban = in_namespace(tmp_path, netns)
    until = time.time() + 600
    ban.send(
        [ban_alert("x", action={"step": "do", "key": "192.0.2.7", "until": until, "duration": 600})]
    )
    nft(netns, "flush", "ruleset")
    for n in (8, 9):
        key = f"192.0.2.{n}"
        ban.send(
            [ban_alert("x", action={"step": "do", "key": key, "until": until, "duration": 600})]
        )
    assert set(elements(netns, "banned4")) == {"192.0.2.8", "192.0.2.9"}
    rules = nft(netns, "-a", "list", "chain", "inet", "logwatchd", "input").stdout
    assert rules.count(" drop ") == 2
    ban.send([ban_alert("x", action={"step": "undo", "key": "192.0.2.8"})])
    ban.send([ban_alert("x", action={"step": "undo", "key": "192.0.2.8"})])  # already gone: fine
    assert set(elements(netns, "banned4")) == {"192.0.2.9"}


def test_intact_tells_whether_the_table_sets_and_chain_are_still_there(tmp_path, netns):
    ban = in_namespace(tmp_path, netns)
    assert not ban.intact()  # nothing made yet
    ban.restore([])
    assert ban.intact()
    nft(netns, "delete", "chain", "inet", "logwatchd", "input")
    assert not ban.intact()
    ban.restore([])
    nft(netns, "flush", "ruleset")  # what `systemctl restart nftables` does
    assert not ban.intact()
    with pytest.raises(DeliveryError, match="nft exited with status 1"):
        in_namespace(tmp_path, netns, drop_cap=True).intact()


def test_restore_leaves_exactly_the_active_bans_with_their_remaining_time(tmp_path, netns):
    ban = in_namespace(tmp_path, netns, prefix6=48)
    now = time.time()
    ban.send([ban_alert("198.51.100.1")])  # stale: not among the active ones
    ban.restore(
        [
            {"key": "192.0.2.7", "until": now + 100},
            {"key": "2001:db8:1::/48", "until": now + 200},
            {"key": "2001:db8:1:2::/64", "until": now + 300},  # inside the /48 (prefix6 was 64)
            {"key": "192.0.2.8", "until": now - 1},  # already over
        ]
    )
    four, six = elements(netns, "banned4"), elements(netns, "banned6")
    assert list(four) == ["192.0.2.7"] and 95 <= four["192.0.2.7"]["timeout"] <= 100
    assert list(six) == ["2001:db8:1::/48"] and 195 <= six["2001:db8:1::/48"]["timeout"] <= 200


def test_chain_false_makes_the_sets_and_leaves_the_rule_to_the_admin(tmp_path, netns):
    in_namespace(tmp_path, netns, chain=False, family="ip", table="filter").restore([])
    listed = nft(netns, "list", "table", "ip", "filter").stdout
    assert "set banned4" in listed and "banned6" not in listed and "chain" not in listed


def test_an_nft_failure_is_a_delivery_error_that_says_what_is_missing(tmp_path, netns):
    ban = in_namespace(tmp_path, netns, drop_cap=True)
    with pytest.raises(DeliveryError, match=r"Operation not permitted \(nft needs CAP_NET_ADMIN"):
        ban.send([ban_alert("203.0.113.9")])
    with pytest.raises(DeliveryError, match="cannot run /nonexistent/nft: No such file"):
        handler(tmp_path, nft="/nonexistent/nft").send([ban_alert("203.0.113.9")])


def start(path: Path, namespace: str) -> DaemonProcess:
    daemon = DaemonProcess(path, prefix=("ip", "netns", "exec", namespace))
    daemon.wait_ready()
    return daemon


def append(log: Path, event: str, ip: str, times: int = 1) -> None:
    # of time.time(): a bare strftime() reads the kernel's coarse clock, up to a tick behind
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time()))
    with log.open("a") as handle:
        handle.writelines(f"{stamp} {event} - IP: {ip}\n" for _ in range(times))


def active(tmp_path: Path) -> dict[str, dict[str, Any]]:
    store = StateStore.in_dir(str(tmp_path / "state"))
    try:
        return {row["key"]: row for row in actions.active_actions(store, time.time())}
    finally:
        store.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "logwatchd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").stdout)


def logged(daemon: DaemonProcess, text: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if text in e.get("event", "")]


@pytest.mark.slow
def test_a_threshold_bans_within_a_second_and_never_and_ipv6_prefixes_hold(tmp_path, netns):
    log = tmp_path / "app.log"
    log.touch()
    with start(write_config(tmp_path / "c.yaml", config(tmp_path)), netns) as daemon:
        assert elements(netns, "banned4") == {}  # the table exists from the start on
        began = time.monotonic()
        append(log, "Fail", "203.0.113.9", times=3)
        wait_for(lambda: "203.0.113.9" in elements(netns, "banned4"), timeout=5)
        assert time.monotonic() - began < 1.0
        assert elements(netns, "banned4")["203.0.113.9"]["timeout"] == 3600
        rules = nft(netns, "list", "chain", "inet", "logwatchd", "input").stdout
        assert "ip saddr @banned4 drop" in rules and "ip6 saddr @banned6 drop" in rules
        assert "hook input priority filter - 10" in rules

        append(log, "Fail", "10.1.2.3", times=3)  # in the trusted list
        wait_for(lambda: logged(daemon, "not acted on: 10.1.2.3 is on the never list"))
        [refusal] = logged(daemon, "not acted on")
        assert refusal["level"] == "info"
        append(log, "Fail", "2001:db8:1:2::5", times=3)
        wait_for(lambda: "2001:db8:1:2::/64" in elements(netns, "banned6"))
        assert list(elements(netns, "banned4")) == ["203.0.113.9"]
        assert set(active(tmp_path)) == {"203.0.113.9", "2001:db8:1:2::/64"}
        [banned] = logged(daemon, "banned 203.0.113.9 for 1h")
        assert banned["handler"] == "ban"

        listed = {row["key"]: row for row in cli_json("actions", "-c", str(daemon.config))}
        assert set(listed) == {"203.0.113.9", "2001:db8:1:2::/64"}
        row = listed["203.0.113.9"]
        assert (row["handler"], row["rule"], row["times"], row["state"]) == (
            "ban",
            "brute",
            1,
            "applied",
        )
        assert row["duration"] == 3600 and 3590 < row["remaining"] <= 3600

        # revert, from another process while the daemon runs; an address inside the /64 names it
        done = cli("actions", "-c", str(daemon.config), "revert", "ban", "2001:db8:1:2::77")
        committed = time.monotonic()  # the command's own start-up is not the daemon's
        assert "reverted ban 2001:db8:1:2::/64" in done.stdout
        wait_for(lambda: not elements(netns, "banned6"), timeout=5)
        # the daemon's next pass: within a second when idle, a little more on a loaded host
        assert time.monotonic() - committed < 2.0
        assert [r["key"] for r in cli_json("actions", "-c", str(daemon.config))] == ["203.0.113.9"]
        assert daemon.terminate() == 0
    # a clean stop leaves the bans in place: they are what the host should keep dropping
    assert set(elements(netns, "banned4")) == {"203.0.113.9"}


@pytest.mark.slow
def test_a_ban_ends_after_its_time_and_a_repeat_offender_gets_factor_times_longer(tmp_path, netns):
    log = tmp_path / "app.log"
    log.touch()
    settings = {"duration": "2s", "increase": {"factor": 2, "max": "1h"}}
    with start(write_config(tmp_path / "c.yaml", config(tmp_path, **settings)), netns) as daemon:
        append(log, "Fail", "198.51.100.7", times=3)
        wait_for(lambda: "198.51.100.7" in elements(netns, "banned4"))
        assert elements(netns, "banned4")["198.51.100.7"]["timeout"] == 2
        wait_for(lambda: not elements(netns, "banned4"), timeout=5)
        wait_for(lambda: logged(daemon, "lifted the ban on 198.51.100.7"), timeout=5)
        assert active(tmp_path) == {}

        append(log, "Fail", "198.51.100.7", times=3)
        wait_for(lambda: "198.51.100.7" in elements(netns, "banned4"))
        assert elements(netns, "banned4")["198.51.100.7"]["timeout"] == 4
        row = active(tmp_path)["198.51.100.7"]
        assert (row["duration"], row["times"]) == (4.0, 2)
        assert daemon.terminate() == 0


@pytest.mark.slow
def test_after_a_crash_and_a_reboot_active_bans_come_back_and_expired_ones_do_not(tmp_path, netns):
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path))
    with start(path, netns) as daemon:
        append(log, "Fail", "203.0.113.9", times=3)
        append(log, "Probe", "198.51.100.20")
        wait_for(lambda: "203.0.113.9" in elements(netns, "banned4"))
        wait_for(lambda: "198.51.100.20" in elements(netns, "short4"))
        daemon.kill()  # kill -9
    nft(netns, "delete", "table", "inet", "logwatchd")  # what a reboot does to the sets
    short_until = active(tmp_path)["198.51.100.20"]["until"]
    wait_for(lambda: time.time() > short_until, timeout=10)  # expires while down

    with start(path, netns) as daemon:
        back = elements(netns, "banned4")  # re-applied before READY=1
        assert list(back) == ["203.0.113.9"]
        assert 3500 < back["203.0.113.9"]["expires"] <= 3600
        assert elements(netns, "short4") == {}
        assert list(active(tmp_path)) == ["203.0.113.9"]
        wait_for(lambda: logged(daemon, "lifted the ban on 198.51.100.20"))
        assert logged(daemon, "re-applied 1 active actions")
        assert daemon.terminate() == 0


@pytest.mark.slow
def test_bans_lost_to_a_flushed_ruleset_are_re_applied_within_the_check_interval(tmp_path, netns):
    log = tmp_path / "app.log"
    log.touch()
    path = write_config(tmp_path / "c.yaml", config(tmp_path, check_interval="1s"))
    with start(path, netns) as daemon:
        append(log, "Fail", "203.0.113.9", times=3)
        wait_for(lambda: "203.0.113.9" in elements(netns, "banned4"))
        nft(netns, "flush", "ruleset")  # `systemctl restart nftables`, say
        flushed = time.monotonic()
        back = wait_for(lambda: elements(netns, "banned4"), timeout=10)
        assert time.monotonic() - flushed < 5  # one check interval, plus a loaded host
        assert list(back) == ["203.0.113.9"] and 3500 < back["203.0.113.9"]["timeout"] <= 3600
        [warning] = logged(daemon, "re-applied 1 active actions: they were gone")
        assert (warning["level"], warning["handler"]) == ("warning", "ban")
        assert "ip saddr @banned4 drop" in nft(netns, "list", "table", "inet", "logwatchd").stdout
        assert daemon.terminate() == 0


@pytest.mark.slow
def test_an_address_that_keeps_failing_while_banned_gets_its_ban_extended_across_a_restart(
    tmp_path, netns
):
    log = tmp_path / "app.log"
    log.touch()
    settings = {"duration": "40s", "increase": {"factor": 3, "max": "1h"}}  # room for a slow host
    path = write_config(tmp_path / "c.yaml", config(tmp_path, **settings))
    with start(path, netns) as daemon:
        # six failures at once: the ban, then an alert of the burst's rest, whose lines were
        # logged before the ban began: the same offence, neither counted nor extending
        append(log, "Fail", "203.0.113.9", times=6)
        wait_for(lambda: "203.0.113.9" in elements(netns, "banned4"), timeout=30)
        skipped = "not acted on: 203.0.113.9 is already acted on until"
        wait_for(lambda: logged(daemon, skipped), timeout=30)
        row = active(tmp_path)["203.0.113.9"]
        assert (row["duration"], row["times"]) == (40.0, 1)

        # failing again while banned (lines stamped after the ban began): 3 x 40s from its start
        wait_for(lambda: time.time() >= int(row["since"]) + 1, timeout=5)
        append(log, "Fail", "203.0.113.9", times=3)
        wait_for(lambda: logged(daemon, "extended the ban on 203.0.113.9 to 2m"), timeout=30)
        assert 80 < elements(netns, "banned4")["203.0.113.9"]["timeout"] <= 120
        [listed] = cli_json("actions", "-c", str(daemon.config))
        assert (listed["since"], listed["duration"], listed["times"], listed["state"]) == (
            isoformat(row["since"]),
            120.0,
            2,
            "applied",
        )
        assert listed["until"] == isoformat(row["since"] + 120)
        daemon.kill()  # kill -9

    nft(netns, "delete", "table", "inet", "logwatchd")  # a reboot
    with start(path, netns) as daemon:
        left = elements(netns, "banned4")["203.0.113.9"]["expires"]
        assert left > 40  # more than the first ban ever had: the extended end came back
        assert active(tmp_path)["203.0.113.9"]["until"] == row["since"] + 120
        assert daemon.terminate() == 0

"""Rule ``context``: fields carried across the lines of one connection (host + pid)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logwatchd.alerts import Alert
from logwatchd.clock import ManualClock
from logwatchd.config import load_text
from logwatchd.config.model import All, AnyOf, ContextConfig, RuleConfig, Threshold
from logwatchd.events import Event, Line
from logwatchd.parsers import build_parser
from logwatchd.rules import Engine, Match
from logwatchd.rules.predicates import ALL_HITS
from tests.condition_helpers import leaf

T0 = 1_700_000_000.0
ADDR = r"(?P<ip>[0-9a-f.:]+)"
TOO_MANY = leaf("message", "regex", re.compile(r"^Disconnecting: Too many authentication failures"))
ACCEPTED = leaf("message", "regex", re.compile(r"^Accepted \S+ for "))
LEARN = AnyOf(
    (
        leaf("message", "regex", re.compile(rf"^Connection from {ADDR}")),
        leaf("message", "regex", re.compile(rf"^Failed \S+ for (?P<user>\S+) from {ADDR}")),
        leaf("message", "regex", re.compile(rf"^Accepted \S+ for (?P<user>\S+) from {ADDR}")),
    )
)
FORGET = leaf("message", "startswith", "Connection closed")
CONTEXT = ContextConfig(
    by=("host", "pid"),
    remember=("ip",),
    learn=LEARN,
    forget=FORGET,
    distinct=(("users", "user"),),
    ttl=600.0,
)
HAS_IP = leaf("ip", "exists", True)
RULE = RuleConfig(
    id="too-many",
    match=AnyOf((All((TOO_MANY, HAS_IP)), All((ACCEPTED, leaf("users", "gte", 2), HAS_IP)))),
    group_by=("ip",),
    threshold=Threshold(2, 600.0),
    context=CONTEXT,
)


class Feed:
    def __init__(self, *rules: RuleConfig, limit: int = 1000) -> None:
        self.rules = rules or (RULE,)
        self.limit = limit
        self.engine = self.new_engine()
        self.lineno = 0
        self.alerts: list[Alert] = []

    def new_engine(self, rules: tuple[RuleConfig, ...] | None = None) -> Engine:
        return Engine(
            rules or self.rules, {}, host="h", max_keys_per_rule=self.limit,
            clock=ManualClock(T0), verbatim_fields={"json": {"*"}},
        )  # fmt: skip

    def send(
        self,
        message: str,
        at: float = 0.0,
        *,
        pid: int | None = 7,
        host: str | None = "srv",
        scanned: bool = False,
        **extra: Any,
    ) -> list[Match]:
        """Process a line ``HOST sshd[PID]: MESSAGE``: its matches (alerts go to ``alerts``).
        ``scanned``: run only what the scan of the line selects (else every condition)."""
        self.lineno += 1
        raw = f"{host or ''} sshd[{pid}]: {message}"
        line = Line("auth", raw, T0 + at, f"o{self.lineno}", None, self.lineno)
        fields: dict[str, Any] = {"message": message, "raw": raw, **extra}
        if host is not None:
            fields["host"] = host
        if pid is not None:
            fields["pid"] = pid
        matches: list[Match] = []
        hits = self.engine.scan("auth").hits(raw) if scanned else ALL_HITS
        self.alerts += self.engine.process(Event(line, fields, T0 + at), matches, hits)
        return matches


def ips(matches: list[Match]) -> list[Any]:
    return [match.fields.get("ip") for match in matches]


def test_an_address_from_an_earlier_line_of_the_connection_is_filled_in() -> None:
    feed = Feed()
    assert feed.send("Connection from 192.0.2.7 port 5000") == []
    matches = feed.send("Disconnecting: Too many authentication failures [preauth]", 3)
    assert ips(matches) == ["192.0.2.7"]
    assert matches[0].fields["users"] == 0  # the count is a field too


def test_other_connections_and_lines_without_the_key_get_nothing() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000", pid=7)
    assert feed.send("Disconnecting: Too many authentication failures", pid=8) == []
    assert feed.send("Disconnecting: Too many authentication failures", host="other") == []
    assert feed.send("Disconnecting: Too many authentication failures", pid=None) == []
    assert ips(feed.send("Disconnecting: Too many authentication failures", pid=7)) == ["192.0.2.7"]


def test_the_line_own_field_wins_over_memory() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000")
    matches = feed.send("Disconnecting: Too many authentication failures", ip="198.51.100.1")
    assert ips(matches) == ["198.51.100.1"]


def test_memory_expires_after_for_in_event_time() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000", 0)
    assert feed.send("Disconnecting: Too many authentication failures", 601) == []
    feed.send("Connection from 192.0.2.8 port 5000", 700)
    assert ips(feed.send("Disconnecting: Too many authentication failures", 1299)) == ["192.0.2.8"]


def test_forget_ends_the_connection() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000")
    feed.send("Connection closed by 192.0.2.7 port 5000")
    assert feed.send("Disconnecting: Too many authentication failures") == []


def test_distinct_counts_values_of_the_connection_including_this_line() -> None:
    feed = Feed()
    feed.send("Failed password for root from 192.0.2.7 port 5000 ssh2")
    feed.send("Failed password for root from 192.0.2.7 port 5000 ssh2")
    # the same user logging in after mistyping: no alert material
    assert feed.send("Accepted password for root from 192.0.2.7 port 5000 ssh2") == []
    other = Feed()
    other.send("Failed password for root from 192.0.2.9 port 5000 ssh2")
    matches = other.send("Accepted password for known from 192.0.2.9 port 5000 ssh2")
    assert ips(matches) == ["192.0.2.9"]
    assert matches[0].fields["users"] == 2
    assert matches[0].fields["user"] == "known"


def test_an_empty_value_is_not_a_distinct_value() -> None:
    rule = RuleConfig(
        id="u",
        match=leaf("users", "gte", 2),
        context=ContextConfig(by=("pid",), distinct=(("users", "user"),), learn=LEARN),
    )
    feed = Feed(rule)
    feed.send("Failed password for root from 192.0.2.7 port 1 ssh2")
    assert feed.send("Connection from 192.0.2.7", user="") == []
    assert len(feed.send("Connection from 192.0.2.7", user="admin")) == 1


def test_filled_matches_count_toward_the_threshold_and_the_alert_shows_the_field() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000")
    feed.send("Disconnecting: Too many authentication failures", 1)
    feed.send("Connection from 192.0.2.7 port 5001", 2, pid=9)
    assert feed.alerts == []
    feed.send("Disconnecting: Too many authentication failures", 3, pid=9)
    assert [(a.key, a.count, a.fields["ip"]) for a in feed.alerts] == [
        ({"ip": "192.0.2.7"}, 2, "192.0.2.7")
    ]


def test_connections_are_bounded_least_recently_written_first() -> None:
    feed = Feed(limit=3)
    for pid in range(10):
        feed.send(f"Connection from 192.0.2.{pid} port 5000", pid=pid)
    context = feed.engine.rules[0].context
    assert context is not None
    assert len(context.table) == 3 and context.table.evicted == 7
    assert feed.engine.stats()["too-many"] == {
        "keys": 0, "evicted": 0, "connections": 3, "connections_evicted": 7
    }  # fmt: skip
    assert feed.send("Disconnecting: Too many authentication failures", pid=6) == []
    assert ips(feed.send("Disconnecting: Too many authentication failures", pid=9)) == ["192.0.2.9"]


def test_hostile_values_stay_bounded() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7")
    for n in range(100):
        feed.send(f"Failed password for u{n} from 192.0.2.7 port 1 ssh2")
    feed.send("Failed password for " + "x" * 5000 + " from 192.0.2.7 port 1 ssh2")
    context = feed.engine.rules[0].context
    assert context is not None
    connection = context.table.get(("srv", "7"))
    assert connection is not None
    assert len(connection.distinct["users"]) == 32
    assert all(len(value) <= 1024 for value in connection.fields.values())


def test_memory_survives_a_restart_through_drain_and_load() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000")
    changes = feed.engine.drain_changes()
    rows = [(rule, changes.digests[rule], key, state) for rule, key, state in changes.upserts]
    assert any(key.startswith('{"context"') for _, _, key, _ in rows)
    feed.engine = feed.new_engine()
    feed.engine.load_state(rows)
    assert ips(feed.send("Disconnecting: Too many authentication failures", 5)) == ["192.0.2.7"]
    # a forgotten connection is deleted from the database at the next drain
    feed.send("Connection closed by 192.0.2.7", 6)
    assert ("too-many", '{"context":["srv","7"]}') in feed.engine.drain_changes().deletes


def test_rows_of_a_changed_context_or_bad_rows_are_dropped() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000")
    changes = feed.engine.drain_changes()
    rows = [(r, changes.digests[r], k, s) for r, k, s in changes.upserts]
    changed = RuleConfig(
        id="too-many", match=RULE.match, group_by=("ip",), context=CONTEXT.__class__(by=("pid",))
    )
    other = feed.new_engine((changed,))
    digest = changed.digest()
    other.load_state(
        [
            *rows,
            ("too-many", digest, '{"context":["1"]}', "not json"),
            ("too-many", digest, '{"context":["2"]}', '{"t":1,"f":[1]}'),
            ("too-many", digest, '{"context":["3","4"]}', '{"t":1,"f":{}}'),
            ("too-many", digest, '{"context":[5]}', '{"t":1,"f":{}}'),
            ("too-many", digest, '{"context":["6"]}', '{"t":1,"f":{"ip":["a"]},"h":[{"x":1}]}'),
        ]
    )
    deletes = other.drain_changes().deletes
    for key in ('["srv","7"]', '["1"]', '["2"]', '["3","4"]', "[5]"):
        assert ("too-many", '{"context":' + key + "}") in deletes
    context = other.rules[0].context
    assert context is not None
    kept = context.table.get(("6",))
    assert kept is not None and kept.fields == {"ip": "['a']"} and kept.held == [{"x": 1}]


def test_memory_is_kept_across_a_reload_of_an_unchanged_rule() -> None:
    feed = Feed()
    feed.send("Connection from 192.0.2.7 port 5000")
    changes = feed.engine.drain_changes()
    feed.engine = feed.new_engine()  # a reload: a new engine over what the old one committed
    feed.engine.load_state([(r, changes.digests[r], k, s) for r, k, s in changes.upserts])
    assert ips(feed.send("Disconnecting: Too many authentication failures", 5)) == ["192.0.2.7"]


def test_remembered_fields_are_not_taken_as_the_line_text_by_the_scan() -> None:
    # the json parser copies every field from the line: a condition on a remembered field
    # must not require that field's value in the raw line
    rule = RuleConfig(
        id="bob",
        match=All((leaf("program", "equals", "sshd"), leaf("user", "equals", "bob"))),
        context=ContextConfig(by=("pid",), remember=("user",)),
    )
    engine = Feed(rule).engine
    assert engine.wants("json", '{"program": "sshd", "pid": 1, "msg": "bye"}')
    assert not engine.wants("json", '{"program": "cron", "pid": 1}')


# --- matches held until the connection shows the group_by field --------------------------

HOLDING = RuleConfig(
    id="held",
    match=TOO_MANY,
    group_by=("ip",),
    threshold=Threshold(2, 600.0),
    context=ContextConfig(
        by=("host", "pid"),
        optional=("host",),
        remember=("ip",),
        learn=AnyOf(
            (
                leaf("message", "regex", re.compile(rf"^Connection from {ADDR}")),
                leaf("message", "regex", re.compile(rf"^Connection closed by {ADDR}")),
            )
        ),
        forget=FORGET,
    ),
)


def test_a_match_without_the_address_waits_for_a_later_line_of_the_connection() -> None:
    feed = Feed(HOLDING)
    assert feed.send("Disconnecting: Too many authentication failures for root", 0) == []
    assert feed.send("Connection closed by 61.0.0.1 [preauth]", 9, pid=8) == []  # other pid
    matches = feed.send("Connection closed by 61.0.0.1 [preauth]", 18)
    assert [(m.line, m.fields["ip"], m.fields["message"][:14]) for m in matches] == [
        (3, "61.0.0.1", "Disconnecting:")
    ]
    # the connection ended: nothing is held any more
    assert feed.send("Connection closed by 61.0.0.1 [preauth]", 19) == []


def test_a_released_match_counts_toward_the_threshold() -> None:
    feed = Feed(HOLDING)
    for pid in (1, 2):
        feed.send("Disconnecting: Too many authentication failures", pid, pid=pid)
        feed.send("Connection closed by 61.0.0.1", pid, pid=pid)
    assert [(a.key, a.count) for a in feed.alerts] == [({"ip": "61.0.0.1"}, 2)]


def test_held_matches_are_bounded_and_expire() -> None:
    feed = Feed(HOLDING)
    for n in range(20):
        feed.send("Disconnecting: Too many authentication failures", n)
    assert len(feed.send("Connection from 192.0.2.1", 30)) == 8
    feed.send("Disconnecting: Too many authentication failures", 40, pid=5)
    assert feed.send("Connection from 192.0.2.1", 641, pid=5) == []


def test_held_matches_survive_a_restart() -> None:
    feed = Feed(HOLDING)
    feed.send("Disconnecting: Too many authentication failures", 0, host="")
    changes = feed.engine.drain_changes()
    rows = [(r, changes.digests[r], k, st) for r, k, st in changes.upserts]
    assert ("held", changes.digests["held"], '{"context":["","7"]}') == rows[0][:3]
    feed.engine = feed.new_engine()
    feed.engine.load_state(rows)
    assert ips(feed.send("Connection closed by 61.0.0.1", 5, host="")) == ["61.0.0.1"]


def test_an_optional_key_field_may_be_missing_but_a_required_one_may_not() -> None:
    feed = Feed(HOLDING)
    feed.send("Connection from 192.0.2.4", pid=3, host=None)  # no host at all
    matches = feed.send("Disconnecting: Too many authentication failures", pid=3, host=None)
    assert ips(matches) == ["192.0.2.4"]
    # without pid there is no connection: the match is reported as it is, nothing filled in
    assert ips(feed.send("Disconnecting: Too many authentication failures", pid=None)) == [None]


# --- the scan's selection and gates stay sound: skipping changes nothing -----------------

FRAGMENTS = [
    "Connection from 192.0.2.7 port 1",
    "Connection closed by 192.0.2.7",
    "Failed password for root from 192.0.2.8 port 2 ssh2",
    "Accepted password for known from 192.0.2.9 port 3 ssh2",
    "Disconnecting: Too many authentication failures",
    "session opened for user x",
    "Connection",
    "from 10.0.0.1",
    "Accepted",
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS), st.integers(1, 3)),
        min_size=1,
        max_size=12,
    )
)
def test_lines_the_scan_passes_over_change_nothing(
    lines: list[tuple[str, str, int]],
) -> None:
    skipping, seeing = Feed(RULE, HOLDING), Feed(RULE, HOLDING)  # seeing: every condition runs
    for at, (head, tail, pid) in enumerate(lines):
        message = f"{head[: len(head) // 2]}{tail}" if pid == 3 else head
        raw = f"srv sshd[{pid}]: {message}"
        matched = seeing.send(message, at, pid=pid)
        if skipping.engine.wants("auth", raw):
            assert [m.fields for m in skipping.send(message, at, pid=pid, scanned=True)] == [
                m.fields for m in matched
            ]
        else:
            assert matched == []
    for one, two in zip(skipping.engine.rules, seeing.engine.rules, strict=True):
        assert one.context is not None and two.context is not None
        dump = {k: c.dump() for k, c in one.context.table.states.items()}
        assert dump == {k: c.dump() for k, c in two.context.table.states.items()}


# --- the shipped sshd pack follows connections --------------------------------------------

PACK = Path(__file__).resolve().parent.parent / "config" / "rules.d" / "sshd.yaml"


class Pack:
    """The sshd pack through the real loader, syslog parser, scan and engine."""

    def __init__(self, tmp: Path) -> None:
        text = (
            f"version: 1\ninclude: [{PACK}]\nsources:\n  - {{id: s, type: stdin, parser: syslog}}\n"
        )
        config = load_text(text, str(tmp / "c.yaml"), base_dir=str(tmp))
        self.parser = build_parser("syslog", {}, timezone="UTC")
        self.engine = Engine(
            config.rules, config.lists, host="h", max_keys_per_rule=100, clock=ManualClock(T0),
            verbatim_fields={"s": self.parser.verbatim_fields},
        )  # fmt: skip

    def send(self, text: str) -> list[tuple[Any, Any]]:
        """(ip, user) of each sshd-auth-failure match of the line ``web1 sshd[PID]: TEXT``."""
        raw = f"2026-11-26T10:00:00+00:00 web1 {text}"
        hits = self.engine.scan("s").hits(raw)
        if not self.engine.wants("s", raw):
            return []
        line = Line("s", raw, T0, "o", None, 1)
        fields = self.parser.parse(line)
        assert fields is not None
        matches: list[Match] = []
        self.engine.process(Event(line, fields, T0), matches, hits)
        return [
            (m.fields.get("ip"), m.fields.get("user"))
            for m in matches
            if m.rule == "sshd-auth-failure"
        ]


def test_the_sshd_pack_gives_too_many_failures_the_connection_address(tmp_path: Path) -> None:
    pack = Pack(tmp_path)
    assert (
        pack.send("sshd-session[300]: Connection from 203.0.113.5 port 4242 on 10.0.0.1 port 22")
        == []
    )
    assert pack.send(
        "sshd-session[300]: Disconnecting: Too many authentication failures for admin [preauth]"
    ) == [("203.0.113.5", "admin")]
    # no address seen yet: the failure waits for the connection's closing line
    assert pack.send("sshd[301]: Disconnecting: Too many authentication failures [preauth]") == []
    assert pack.send("sshd[302]: Connection closed by 198.51.100.2 port 22 [preauth]") == []
    assert pack.send("sshd[301]: Connection closed by 198.51.100.1 port 22 [preauth]") == [
        ("198.51.100.1", None)
    ]


def test_the_sshd_pack_counts_a_login_after_other_users_failed(tmp_path: Path) -> None:
    pack = Pack(tmp_path)
    pam = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh"
    # a mistyped password, then the same user logs in: the "Failed password" only
    assert pack.send(f"sshd[400]: {pam} ruser= rhost=192.0.2.40 user=alice") == []
    assert pack.send("sshd[400]: Failed password for alice from 192.0.2.40 port 5 ssh2") == [
        ("192.0.2.40", "alice")
    ]
    assert pack.send("sshd[400]: Accepted password for alice from 192.0.2.40 port 5 ssh2") == []
    # another user's PAM failure, then a login: both count
    assert pack.send(f"sshd[401]: {pam} ruser=root rhost=192.0.2.41") == []
    assert pack.send(f"sshd[401]: {pam} ruser=oracle rhost=192.0.2.41") == [
        ("192.0.2.41", "oracle")
    ]
    assert pack.send("sshd[401]: Accepted password for bob from 192.0.2.41 port 6 ssh2") == [
        ("192.0.2.41", "bob")
    ]

"""Hostile input: no parser raises, and every parser keeps its verbatim promise.

The rule engine skips lines by looking for literals in ``line.raw``, trusting that the
string value of each field a parser calls verbatim appears in ``raw`` unchanged. Here
hypothesis throws arbitrary text and mutated realistic lines at every parser and checks
both properties.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatchd.config.model import ParserConfig
from logwatchd.events import Line
from logwatchd.parsers import BUILTIN, build_parser, produced_fields
from logwatchd.parsers.base import Parser
from logwatchd.parsers.journald import record_line
from tests.test_parsers_syslog import framed_like_parse

CUSTOM = {
    "app": ParserConfig(
        id="app",
        regex=re.compile(
            r"^(?P<timestamp>\S+ \S+) (?P<event_type>\w+) - IP: (?P<ip>\S+)(?P<n> \d+)?"
        ),
        time_format="%Y-%m-%d %H:%M:%S",
        types={"ip": "ip", "n": "int"},
    )
}
PARSERS: dict[str, Parser] = {
    name: build_parser(name, CUSTOM, timezone="Europe/Berlin") for name in [*BUILTIN, "app"]
}
REALISTIC = [
    "Nov 26 10:00:01 web1 sshd[4242]: Failed password for root from 203.0.113.7 port 22 ssh2",
    "2026-11-26T10:00:01.123456+01:00 web1 sshd-session[1]: Invalid user x from 2001:db8::1",
    '<38>1 2026-11-26T10:00:01Z h sshd 12 - [a b="c"] Failed unknown for x',
    '203.0.113.9 - - [26/Nov/2026:10:00:00 +0100] "GET / HTTP/1.1" 404 1 "-" "ua"',
    '2026/11/26 10:00:01 [error] 1#1: *2 user "u": password mismatch, client: 192.0.2.1, '
    'server: s, request: "GET / HTTP/1.1", host: "h"',
    "[Thu Nov 26 10:00:01.1 2026] [auth_basic:error] [pid 1:tid 2] [client 192.0.2.1:3] AH01618: x",
    '{"MESSAGE": "Failed password", "SYSLOG_IDENTIFIER": "sshd", "_PID": "1"}',
    '{"time": 1795687200, "msg": "hello", "a": {"b": [1, 2]}}',
    "2026-11-26 10:00:01 SecurityBreach - IP: 203.0.113.9 42",
    '203.0.113.9 - john doe [26/Nov/2026:10:00:01 +0000] "GET / HTTP/1.1" 401 5 "-" "ua"',
    r'192.0.2.3 - a\"b [26/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 401 226 "-" "x"',
]


def verbatim_values(parser: Parser, fields: dict[str, Any]) -> list[tuple[str, str]]:
    wanted = parser.verbatim_fields
    return [
        (name, value)
        for name, value in fields.items()
        if isinstance(value, str) and ("*" in wanted or name in wanted)
    ]


def check(text: str) -> None:
    for name, parser in PARSERS.items():
        line = Line("s", text, 1_795_687_200.0, "o")
        if name == "journald":
            # as the pipeline feeds journalctl JSON text: first made a record line
            line = record_line(line) or line
        fields = parser.parse(line)
        if fields is None:
            continue
        assert_sound(name, parser, line, fields)


def assert_sound(name: str, parser: Parser, line: Line, fields: dict[str, Any]) -> None:
    """What every parse promises: message and raw, an aware timestamp, only the fields the
    parser declares (the config's field check relies on that), verbatim values in raw."""
    assert isinstance(fields["message"], str), name
    assert fields["raw"] == line.raw, name
    stamp = fields.get("timestamp")
    assert stamp is None or (isinstance(stamp, datetime) and stamp.tzinfo is not None), name
    declared = produced_fields(name, CUSTOM)
    assert [key for key in fields if not declared.has(key)] == [], name
    for field, value in verbatim_values(parser, fields):
        assert value in line.raw, (name, field, value, line.raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_and_verbatim_fields_hold(text: str) -> None:
    check(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(REALISTIC))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(base)))
        how = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(
            st.text(alphabet=st.sampled_from(list(' "[]:,{}\\\x00\ufffd\u00e9a1.-/')), max_size=6)
        )
        if how == "insert":
            base = base[:at] + piece + base[at:]
        elif how == "delete":
            base = base[:at] + base[at + len(piece) :]
        else:
            base = base[:at] + piece + base[at + len(piece) :]
    return base


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_real_lines_never_raise_and_verbatim_fields_hold(text: str) -> None:
    check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_source_decodes_them_never_raise(data: bytes) -> None:
    check(data.decode("utf-8", "replace"))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from(
                [
                    "MESSAGE",
                    "_PID",
                    "PRIORITY",
                    "__REALTIME_TIMESTAMP",
                    "SYSLOG_IDENTIFIER",
                    "_COMM",
                    "_EXE",
                    "_UID",
                    "_SYSTEMD_UNIT",
                    "_HOSTNAME",
                    "SYSLOG_PID",
                    "UNIT",
                ]
            ),
            st.text(max_size=8),
        ),
        st.one_of(
            st.text(max_size=40),
            st.lists(st.integers(-5, 300), max_size=10),
            st.none(),
            st.integers(),
            st.lists(st.text(max_size=5), max_size=3),
        ),
    )
)
def test_hostile_journal_records_never_raise(record: dict[str, Any]) -> None:
    text = json.dumps(record)
    line = record_line(Line("s", text, 0.0, "o"))
    for candidate in (line, Line("s", text, 0.0, "o")):
        if candidate is None:
            continue
        fields = PARSERS["journald"].parse(candidate)
        if fields is not None:
            assert fields["message"] in candidate.raw or candidate.fields is None
            assert all(isinstance(fields[k], int) for k in ("pid", "uid") if k in fields)
            if candidate.fields is not None:
                assert_sound("journald", PARSERS["journald"], candidate, fields)


def test_invalid_utf8_replaced_by_the_source_parses_like_any_text() -> None:
    raw = b"Nov 26 10:00:01 web1 sshd[1]: Invalid user \xff\xfe from 203.0.113.1".decode(
        "utf-8", "replace"
    )
    fields = PARSERS["syslog"].parse(Line("s", raw, 1_795_687_200.0, "o"))
    assert fields is not None
    assert fields["message"] == "Invalid user \ufffd\ufffd from 203.0.113.1"


def test_very_long_lines_parse_in_bounded_time() -> None:
    long_tail = "Nov 26 10:00:01 web1 sshd[1]: " + "a" * 60_000
    assert PARSERS["syslog"].parse(Line("s", long_tail, 0.0, "o")) is not None
    nginx = "2026/11/26 10:00:01 [error] 1#1: " + ", client: 1" * 6000
    assert PARSERS["nginx_error"].parse(Line("s", nginx, 0.0, "o")) is not None
    host = "Nov 26 10:00:01 " + "h" * 60_000 + " x"
    assert PARSERS["syslog"].parse(Line("s", host, 0.0, "o")) is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_syslog_framing_of_mutated_lines_is_what_parse_gives(text: str) -> None:
    # the short path of the rules (rules/direct.py) takes frame() instead of parse()
    framed_like_parse(text, 1_795_687_200.0)

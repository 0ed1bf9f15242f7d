"""Custom regex parsers from the config's ``parsers:`` section, and build_parser."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from logwatchd.config.model import ParserConfig
from logwatchd.events import Line
from logwatchd.parsers import BUILTIN, build_parser

APP = ParserConfig(
    id="app",
    regex=re.compile(
        r"^(?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?P<event_type>\w+) - IP: (?P<ip>\S+)"
        r"(?: took (?P<ms>\S+)ms)?(?: code=(?P<code>\S+))?"
    ),
    time_format="%Y-%m-%d %H:%M:%S",
    types={"ip": "ip", "ms": "float", "code": "int"},
)


def parse(raw: str, config: ParserConfig = APP, tz: str = "Europe/Berlin") -> dict | None:
    parser = build_parser(config.id, {config.id: config}, timezone=tz)
    return parser.parse(Line("app", raw, datetime(2026, 11, 26, tzinfo=UTC).timestamp(), "t"))


def test_named_groups_types_and_naive_time_in_the_configured_zone() -> None:
    fields = parse("2026-11-26 10:00:01 SecurityBreach - IP: 2001:db8::9 took 1.5ms code=7")
    assert fields is not None
    assert fields["event_type"] == "SecurityBreach"
    assert fields["ip"] == ipaddress.ip_address("2001:db8::9")
    assert (fields["ms"], fields["code"]) == (1.5, 7)
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert fields["message"] == fields["raw"]


def test_unmatched_optional_groups_are_absent() -> None:
    fields = parse("2026-11-26 10:00:01 LoginFailed - IP: 192.0.2.1")
    assert fields is not None
    assert "ms" not in fields and "code" not in fields


def test_a_value_that_does_not_convert_drops_that_field_only() -> None:
    fields = parse("2026-11-26 10:00:01 SecurityBreach - IP: not-an-ip code=x7")
    assert fields is not None
    assert "ip" not in fields
    assert fields["event_type"] == "SecurityBreach"
    assert "code" not in fields  # "x7" is no int


def test_a_timestamp_that_does_not_parse_is_dropped() -> None:
    fields = parse("2026-13-99 99:00:01 X - IP: 192.0.2.1")
    assert fields is not None
    assert "timestamp" not in fields


def test_a_timestamp_that_does_not_fit_time_format_is_counted_with_samples() -> None:
    config = ParserConfig(id="app", regex=APP.regex, time_format="%d/%m/%Y", types={"ip": "ip"})
    parser = build_parser("app", {"app": config}, timezone="UTC")
    lines = [f"2023-09-04 10:0{m}:01 LoginFailed - IP: 192.0.2.1" for m in range(8)]
    for raw in lines:
        fields = parser.parse(Line("app", raw, 1_700_000_000.0, "t"))
        assert fields is not None and "timestamp" not in fields
    failures = parser.stamp_failures  # type: ignore[attr-defined]
    assert failures.count == 8
    assert failures.last == "2023-09-04 10:07:01"
    assert list(failures.samples) == [(raw[:19], raw) for raw in lines[:5]]
    good = build_parser("app", {"app": APP}, timezone="UTC")
    good.parse(Line("app", lines[0], 1_700_000_000.0, "t"))
    assert good.stamp_failures.count == 0  # type: ignore[attr-defined]


def test_message_group_and_year_less_time_format() -> None:
    config = ParserConfig(
        id="bsd",
        regex=re.compile(r"^(?P<timestamp>\w{3} [ \d]\d \d\d:\d\d:\d\d) (?P<message>.*)$"),
        time_format="%b %d %H:%M:%S",
    )
    fields = parse("Dec 31 23:00:00 happy new year", config, tz="UTC")
    assert fields is not None
    assert fields["message"] == "happy new year"
    assert fields["timestamp"] == datetime(2025, 12, 31, 23, 0, tzinfo=UTC)


def test_no_time_format_means_iso8601() -> None:
    config = ParserConfig(id="iso", regex=re.compile(r"^(?P<timestamp>\S+) "))
    fields = parse("2026-11-26T10:00:00+02:00 x", config)
    assert fields is not None
    assert fields["timestamp"] == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def test_a_line_the_regex_does_not_match_is_unparsed() -> None:
    assert parse("something else") is None


def test_build_parser_knows_every_builtin_and_refuses_unknown_names() -> None:
    for name in BUILTIN:
        assert build_parser(name, {}, timezone="UTC").verbatim_fields
    with pytest.raises(ValueError, match="unknown parser"):
        build_parser("nope", {}, timezone="UTC")
    with pytest.raises(ValueError, match="unknown timezone"):
        build_parser("syslog", {}, timezone="Mars/Olympus")

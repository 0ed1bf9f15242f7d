"""The alert parser: a published alert object as the fields an aggregator's rules see."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from logwatchd.alerts import Alert
from logwatchd.events import Line
from logwatchd.parsers import BUILTIN, build_parser

PARSER = build_parser("alert", {}, timezone="UTC")


def published(**changes: Any) -> dict[str, Any]:
    alert = Alert(
        id="f" * 32,
        rule="sshd-failure",
        severity="medium",
        tags=["fleet"],
        key={"ip": "203.0.113.9"},
        count=1,
        suppressed=0,
        first_seen=1_795_687_200.0,
        last_seen=1_795_687_205.0,
        fired_at=1_795_687_205.5,
        host="web1",
        source="auth",
        path="/var/log/auth.log",
        raw="Nov 26 10:00:05 web1 sshd[7]: Failed password for root from 203.0.113.9",
        fields={
            "host": "spoofed-by-the-line",
            "program": "sshd",
            "user": "root",
            "ip": "203.0.113.9",
            "message": "Failed password for root from 203.0.113.9",
            "timestamp": "2026-11-26T10:00:05+00:00",
        },
    ).to_dict()
    alert.update(changes)
    return alert


def parse(raw: str) -> dict[str, Any] | None:
    return PARSER.parse(Line("fleet", raw, 0.0, "nats:x"))


def test_fields_are_the_event_fields_the_key_and_the_alerts_own() -> None:
    raw = json.dumps(published())
    fields = parse(raw)
    assert fields is not None
    assert fields["ip"] == "203.0.113.9"
    assert (fields["program"], fields["user"]) == ("sshd", "root")
    assert (fields["rule"], fields["severity"], fields["count"]) == ("sshd-failure", "medium", 1)
    assert (fields["tags"], fields["alert_id"]) == (["fleet"], "f" * 32)
    assert fields["message"] == "Failed password for root from 203.0.113.9"
    assert fields["raw"] == raw
    assert "alert" in BUILTIN


def test_the_publishing_daemons_host_wins_over_a_field_of_the_line() -> None:
    """distinct: host must count daemons, never a name a log line carried."""
    fields = parse(json.dumps(published()))
    assert fields is not None
    assert fields["host"] == "web1"


def test_event_time_is_last_seen() -> None:
    fields = parse(json.dumps(published()))
    assert fields is not None
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, 5, tzinfo=UTC)


def test_key_fields_win_over_event_fields() -> None:
    alert = published(key={"ip": "198.51.100.1"})
    fields = parse(json.dumps(alert))
    assert fields is not None
    assert fields["ip"] == "198.51.100.1"


def test_message_falls_back_to_the_original_line() -> None:
    alert = published()
    del alert["event"]["fields"]["message"]
    fields = parse(json.dumps(alert))
    assert fields is not None
    assert fields["message"] == alert["event"]["raw"]


def test_what_is_not_an_alert_does_not_parse() -> None:
    for raw in ("", "not json", "[1]", '{"rule": "r"}', '{"rule": 1, "host": "h"}', "{" * 5000):
        assert parse(raw) is None
    weird = published(event="x", key=["ip"], last_seen="yesterday")
    fields = parse(json.dumps(weird))
    assert fields is not None
    assert "timestamp" not in fields
    assert fields["message"] == fields["raw"]

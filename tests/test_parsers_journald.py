"""The journald parser: journal records from the source, and journalctl JSON text."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from logwatchd.events import Line
from logwatchd.parsers import build_parser
from logwatchd.parsers.journald import record_line

PARSER = build_parser("journald", {}, timezone="UTC")
RECORD = {
    "__CURSOR": "s=abc;i=1",
    "__REALTIME_TIMESTAMP": "1795687201123456",
    "_HOSTNAME": "web1",
    "_SYSTEMD_UNIT": "ssh.service",
    "SYSLOG_IDENTIFIER": "sshd-session",
    "_COMM": "sshd-session",
    "SYSLOG_PID": "4242",
    "_PID": "4242",
    "PRIORITY": "6",
    "_UID": "0",
    "MESSAGE": "Failed password for root from 2001:db8::1 port 22 ssh2",
}


def test_record_from_the_journal_source() -> None:
    line = Line("auth", RECORD["MESSAGE"], 0.0, "s=abc;i=1", fields=dict(RECORD))
    fields = PARSER.parse(line)
    assert fields is not None
    assert fields["message"] == fields["raw"] == RECORD["MESSAGE"]
    assert (fields["program"], fields["unit"], fields["host"]) == (
        "sshd-session",
        "ssh.service",
        "web1",
    )
    assert (fields["pid"], fields["priority"]) == (4242, 6)
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, 1, 123456, tzinfo=UTC)
    assert fields["_UID"] == "0"  # other journal fields keep their names
    assert fields["__CURSOR"] == "s=abc;i=1"


def test_program_falls_back_to_comm_and_unit_is_only_what_journald_records() -> None:
    record = {"MESSAGE": "Started x.", "_COMM": "systemd", "UNIT": "x.service", "_PID": "1"}
    fields = PARSER.parse(Line("j", "Started x.", 0.0, "c", fields=record))
    assert fields is not None
    assert (fields["program"], fields["comm"], fields["pid"]) == ("systemd", "systemd", 1)
    # UNIT is written by the logging process (anyone may claim ssh.service): not `unit`
    assert "unit" not in fields
    assert fields["UNIT"] == "x.service"
    assert "timestamp" not in fields


def test_the_fields_journald_sets_itself_tell_a_forged_entry_from_a_genuine_one() -> None:
    """`logger -t sshd -i ...` by a user: the claims are sshd's, journald's fields are not."""
    forged = {
        "MESSAGE": "Failed password for root from 192.0.2.88 port 22 ssh2",
        "SYSLOG_IDENTIFIER": "sshd", "SYSLOG_PID": "4242", "UNIT": "ssh.service",
        "_COMM": "logger", "_EXE": "/usr/bin/logger", "_UID": "1000", "_PID": "777",
        "_SYSTEMD_UNIT": "session-3.scope", "_TRANSPORT": "syslog",
    }  # fmt: skip
    fields = PARSER.parse(Line("j", forged["MESSAGE"], 0.0, "c", fields=forged))
    assert fields is not None
    assert fields["program"] == "sshd"  # the claim
    assert (fields["comm"], fields["exe"], fields["uid"]) == ("logger", "/usr/bin/logger", 1000)
    assert (fields["unit"], fields["pid"]) == ("session-3.scope", 777)
    genuine = PARSER.parse(Line("j", RECORD["MESSAGE"], 0.0, "c", fields=dict(RECORD)))
    assert genuine is not None
    assert (genuine["comm"], genuine["uid"], genuine["unit"]) == ("sshd-session", 0, "ssh.service")


def test_message_is_the_source_raw_even_when_the_source_cut_it() -> None:
    record = {"MESSAGE": "x" * 100, "SYSLOG_IDENTIFIER": "app"}
    fields = PARSER.parse(Line("j", "x" * 10, 0.0, "c", truncated=True, fields=record))
    assert fields is not None
    assert fields["message"] == "x" * 10  # verbatim in raw, as the scan assumes


def test_journalctl_json_text_with_non_utf8_message_and_repeated_field() -> None:
    record = dict(RECORD)
    record["MESSAGE"] = [73, 110, 118, 32, 255, 33]  # b"Inv \xff!"
    record["SYSLOG_IDENTIFIER"] = ["sshd", "other"]
    record["BIG"] = None
    text = json.dumps(record)
    fields = PARSER.parse(Line("stdin", text, 0.0, "t:1"))
    assert fields is not None
    assert fields["message"] == "Inv \ufffd!"
    assert fields["program"] == "sshd"
    assert "BIG" not in fields
    assert fields["raw"] == text
    converted = record_line(Line("stdin", text, 5.0, "t:1", lineno=1))
    assert converted is not None
    assert converted.raw == "Inv \ufffd!"
    assert converted.fields is not None and converted.read_time == 5.0
    again = PARSER.parse(converted)
    assert again is not None
    assert again["message"] in again["raw"]


def test_text_that_is_not_a_journal_record_does_not_parse() -> None:
    for text in ["plain text", "[1, 2]", "{broken", '{"NO_MESSAGE": "x"}', "{" * 100_000]:
        assert PARSER.parse(Line("stdin", text, 0.0, "t")) is None
        assert record_line(Line("stdin", text, 0.0, "t")) is None


def test_hostile_values_do_not_break_the_record() -> None:
    record = {"MESSAGE": "m", "_PID": "12x", "PRIORITY": "9" * 40, "__REALTIME_TIMESTAMP": "9" * 30}
    fields = PARSER.parse(Line("j", "m", 0.0, "c", fields=record))
    assert fields is not None
    assert "pid" not in fields and "priority" not in fields and "timestamp" not in fields

"""The rfc5424 parser."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from logwatchd.events import Line
from logwatchd.parsers import build_parser

PARSER = build_parser("rfc5424", {}, timezone="UTC")


def parse(raw: str) -> dict | None:
    return PARSER.parse(Line("s", raw, 0.0, "t"))


def test_full_line_with_structured_data() -> None:
    raw = (
        "<38>1 2026-11-26T17:40:16.954167-04:00 host.example.com sshd 57915 ID47 "
        '[timeQuality tzKnown="1"][x@123 a="[br\\"ack\\]ets]"] \ufeffFailed unknown for x'
    )
    fields = parse(raw)
    assert fields is not None
    assert (fields["facility"], fields["severity"]) == (4, 6)
    assert fields["timestamp"] == datetime(2026, 11, 26, 21, 40, 16, 954167, tzinfo=UTC)
    assert (fields["host"], fields["program"], fields["pid"], fields["msgid"]) == (
        "host.example.com", "sshd", 57915, "ID47",
    )  # fmt: skip
    assert fields["structured_data"].endswith('ets]"]')
    assert fields["message"] == "Failed unknown for x"


def test_nil_values_are_left_out_and_pri_is_optional() -> None:
    fields = parse("1 - - - - - -")
    assert fields is not None
    assert set(fields) == {"raw", "message"}
    assert fields["message"] == ""
    fields = parse("<13>1 2026-11-26T10:00:00Z h app worker-3 - - hello")
    assert fields is not None
    assert fields["procid"] == "worker-3"


@pytest.mark.parametrize(
    "raw",
    [
        "<999>1 2026-11-26T10:00:00Z h a 1 - - m",
        "<13>1 yesterday h a 1 - - m",
        "Nov 26 10:00:00 h p: m",
        "",
    ],
)
def test_not_rfc5424(raw: str) -> None:
    assert parse(raw) is None

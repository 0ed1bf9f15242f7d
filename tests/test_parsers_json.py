"""The json parser (JSON lines) and the none parser."""

from __future__ import annotations

from datetime import UTC, datetime

from logwatchd.events import Line
from logwatchd.parsers import build_parser
from logwatchd.parsers.jsonlines import json_object

PARSER = build_parser("json", {}, timezone="UTC")


def parse(raw: str) -> dict | None:
    return PARSER.parse(Line("s", raw, 0.0, "t"))


def test_keys_become_fields_and_nested_ones_are_dotted() -> None:
    fields = parse(
        '{"level":"warn","msg":"slow","http":{"status":503,"req":{"path":"/x"}},"tags":[1]}'
    )
    assert fields is not None
    assert fields["message"] == "slow"
    assert fields["http.status"] == 503
    assert fields["http.req.path"] == "/x"
    assert fields["tags"] == [1]


def test_timestamps_iso_and_epoch() -> None:
    fields = parse('{"@timestamp":"2026-11-26T10:00:00.5+01:00","message":"m"}')
    assert fields is not None
    assert fields["timestamp"] == datetime(2026, 11, 26, 9, 0, 0, 500000, tzinfo=UTC)
    for stamp in ("1795687200", "1795687200000", "1795687200.0"):
        fields = parse('{"time":' + stamp + "}")
        assert fields is not None
        assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
        assert fields["message"] == fields["raw"]


def test_a_timestamp_key_that_is_not_a_time_is_dropped_and_counted() -> None:
    parser = build_parser("json", {}, timezone="UTC")
    fields = parser.parse(Line("s", '{"timestamp":"soon","message":"m"}', 0.0, "t"))
    assert fields is not None
    assert "timestamp" not in fields
    parser.parse(Line("s", '{"message":"no time at all"}', 0.0, "t"))
    failures = parser.stamp_failures  # type: ignore[attr-defined]
    assert (failures.count, failures.last) == (1, "soon")


def test_non_objects_and_garbage_do_not_parse() -> None:
    for raw in ["[1,2]", "42", "{", "", "not json", '{"a": 1e999999}', "[" * 50_000]:
        result = parse(raw)
        assert result is None or isinstance(result, dict)
    assert parse("[1,2]") is None
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    assert parse(deep) is None or isinstance(parse(deep), dict)


def test_none_parser_keeps_only_the_line() -> None:
    fields = build_parser("none", {}, timezone="UTC").parse(Line("s", "anything at all", 0.0, "t"))
    assert fields == {"message": "anything at all", "raw": "anything at all"}


def test_json_object_takes_one_object_of_at_most_a_mebibyte() -> None:
    assert json_object(' {"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    for text in ("[1]", '"{"', "{", "{} {}", "1", "", "{" * 100_000 + "}" * 100_000):
        assert json_object(text) is None, text
    big = '{"x": "' + "a" * (1 << 20) + '"}'
    assert json_object(big) is None
    assert json_object(big[: 1 << 20]) is None  # cut: not JSON at all

"""Durations as written in the config become seconds; anything else gets the hint."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logwatchd.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (" 10m ", 600.0),
        ("45", 45.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_units_and_plain_numbers_become_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["10 minutes", "10min", "m", "", "1y", "-5s", "10s5", "1e3s", "ten"]
)
def test_anything_else_is_rejected_with_the_hint(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(use 10m, 1h, 30s\)"):
        parse_duration(text)


def test_the_message_quotes_what_was_written() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("10 minutes")
    assert str(info.value) == '"10 minutes" is not a duration (use 10m, 1h, 30s)'


@pytest.mark.parametrize("value", [True, -1, float("inf"), float("nan"), None, [1]])
def test_non_durations_of_other_types_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**7))
def test_formatting_round_trips_whole_seconds(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds

"""Durations as people write them in the config: ``250ms``, ``30s``, ``10m``, ``1h``, ``2d``,
``1w`` (a week: ban times)."""

from __future__ import annotations

import math
import re

UNITS: dict[str, float] = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
}  # fmt: skip
HINT = "use 10m, 1h, 30s"

# One or more number+unit parts, so "1h30m" reads as an administrator expects.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(text: str | float) -> float:
    """Seconds as a float. Plain numbers (and numeric strings) are seconds.

    Raises ValueError with a message meant for the person who wrote the value.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration ({HINT})")
    if isinstance(text, int | float):
        return _checked(float(text), str(text))
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration ({HINT})")
    compact = text.strip()
    if _NUMBER.fullmatch(compact):
        return _checked(float(compact), text)
    if not _WHOLE.fullmatch(compact):
        raise ValueError(f'"{text}" is not a duration ({HINT})')
    total = sum(float(num) * UNITS[unit] for num, unit in _PART.findall(compact))
    return _checked(total, text)


def _checked(seconds: float, text: str) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f'"{text}" is not a duration ({HINT})')
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for messages and ``check`` summaries."""
    for unit in ("d", "h", "m", "s"):
        size = UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"

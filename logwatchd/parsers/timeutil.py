"""Time helpers shared by the parsers: zones, syslog year inference, ISO 8601 and epochs.

Parsing runs once per line, so the costly parts (zone lookup, deciding the year of a
year-less syslog stamp, turning a read time into a date) are computed once and cached.
"""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTHS: dict[str, int] = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

# A stamp may lie this far ahead of the time it was read (clock skew between hosts).
_FUTURE_SLACK = timedelta(days=1)


def resolve_timezone(name: str) -> tzinfo:
    """``local``, ``UTC`` or an IANA name; unknown names raise ``ValueError``."""
    if name.upper() == "UTC":
        return UTC
    if name == "local":
        return _local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


def _local_zone() -> tzinfo:
    # A ZoneInfo (not a fixed offset) so stamps on both sides of a DST change get theirs.
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return ZoneInfo(tz_env)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return UTC


class YearGuesser:
    """Chooses the year of a year-less stamp (RFC 3164) from the time the line was read.

    The year is the latest one that does not put the stamp's day more than a day after the
    day it was read: a December line read in January belongs to the previous year.
    Decisions are cached per (month, day, day read).
    """

    __slots__ = ("_day_cache", "_tz", "_year_cache")

    def __init__(self, tz: tzinfo) -> None:
        self._tz = tz
        self._day_cache: dict[int, date] = {}
        self._year_cache: dict[tuple[int, int, date], int | None] = {}

    def reference_day(self, read_time: float) -> date:
        hour = int(read_time // 3600)
        day = self._day_cache.get(hour)
        if day is None:
            if len(self._day_cache) > 64:
                self._day_cache.clear()
            try:
                day = datetime.fromtimestamp(hour * 3600, self._tz).date()
            except (OverflowError, OSError, ValueError):
                day = date(1970, 1, 1)
            self._day_cache[hour] = day
        return day

    def year(self, month: int, day: int, read_time: float) -> int | None:
        """The year for (month, day); None when no year has that day (e.g. Feb 30)."""
        ref = self.reference_day(read_time)
        key = (month, day, ref)
        if key in self._year_cache:
            return self._year_cache[key]
        if len(self._year_cache) > 4096:
            self._year_cache.clear()
        chosen = _latest_year(month, day, ref + _FUTURE_SLACK)
        self._year_cache[key] = chosen
        return chosen


def _latest_year(month: int, day: int, limit: date) -> int | None:
    # Eight years back covers Feb 29 whatever the reference.
    for year in range(limit.year, limit.year - 9, -1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate <= limit:
            return year
    return None


_ISO_FAST = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:[.,]\d{1,9})?)?(?:Z|z|[+-]\d\d(?::?\d\d)?)?"
)


def parse_iso8601(text: str, tz: tzinfo) -> datetime | None:
    """An ISO 8601 / RFC 3339 stamp as an aware datetime (naive ones get ``tz``), or None."""
    if len(text) > 40 or not _ISO_FAST.fullmatch(text):
        return None
    # fromisoformat takes at most 6 fraction digits; nanosecond stamps are common.
    dot = text.find(".", 19)
    if dot == -1:
        dot = text.find(",", 19)
    if dot != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        if end - dot > 7:
            text = text[: dot + 7] + text[end:]
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=tz)
    return stamp


def from_epoch(value: float) -> datetime | None:
    """Epoch seconds (or milliseconds / microseconds, told apart by size) as UTC datetime."""
    seconds = float(value)
    if math.isnan(seconds):
        return None
    if abs(seconds) > 1e14:
        seconds /= 1_000_000
    elif abs(seconds) > 1e11:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@lru_cache(maxsize=256)
def fixed_offset(sign: str, hours: int, minutes: int) -> tzinfo | None:
    """A cached fixed-offset zone for ``+0200``-style offsets; None when out of range."""
    if hours > 23 or minutes > 59:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    if delta == timedelta(0):
        return UTC
    return timezone(-delta if sign == "-" else delta)

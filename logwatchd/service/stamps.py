"""Timestamps that did not parse, as the daemon reports them: a warning, and a count for status.

A line whose timestamp a parser cannot read still counts, at the time it was read (see the
parsers' ``stamp_failures``). That is right for the odd garbled line and wrong for a
``time_format`` that fits no line at all, so it must never be silent: after each commit the
daemon adds the new failures of each source to the state database (``status`` shows the
total) and logs a warning, at most once per source per ``WARN_EVERY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from logwatchd.state import StateStore

log = structlog.get_logger("logwatchd")

WARN_EVERY = 600.0  # seconds between two warnings about one source
COUNTER = "timestamp_unparsed"


class StampWatch:
    """Follows the ``stamp_failures`` of each source's parser between commits."""

    def __init__(self, parsers: Mapping[str, Any]) -> None:
        self._parsers = {
            source: parser
            for source, parser in parsers.items()
            if getattr(parser, "stamp_failures", None) is not None
        }
        self._stored = dict.fromkeys(self._parsers, 0)  # failures already in the database
        self._warned = dict.fromkeys(self._parsers, 0)  # failures already in a warning
        self._last_warning: dict[str, float] = {}

    def report(self, store: StateStore, now: float) -> None:
        """Store what is new; warn about a source whose last warning is old enough."""
        for source, parser in self._parsers.items():
            failures = parser.stamp_failures
            new = failures.count - self._stored[source]
            if not new:
                continue
            store.add_source_count(source, COUNTER, new, failures.last)
            self._stored[source] = failures.count
            last = self._last_warning.get(source)
            if last is not None and now - last < WARN_EVERY:
                continue
            fmt = getattr(parser, "time_format", None)
            log.warning(
                "timestamp does not parse; these lines are timed when they were read",
                source=source,
                lines=failures.count - self._warned[source],
                time_format=fmt or "ISO 8601",
                sample=failures.last,
                next_warning_in=f"{WARN_EVERY:g}s at the earliest",
            )
            self._warned[source] = failures.count
            self._last_warning[source] = now

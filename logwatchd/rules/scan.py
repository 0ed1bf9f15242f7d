"""The scan: which lines some rule may match, and which of its patterns each one shows.

Every pattern the rules need (``selection.ScanPattern``) gets a bit. A line's *hits* is an
int: the bits of the patterns found in it, OR the source's *assumed* bits (``ALWAYS``, and
every pattern this source does not look for: a condition gated on it must simply run). The
engine runs a rule on a line only when the line shows one of the rule's needs, and skips a
regex whose pattern the line does not show.

Two ways to find them, with the same results on every line:

- Hyperscan (the ``hyperscan`` wheel): one database per source holding every pattern,
  each followed by ``[^\\n]*$`` under ``HS_FLAG_MULTILINE`` so it reports once per line, at
  the line's end; a block of many lines (a 1 MiB read of a file, or a batch of lines joined
  by newlines) is scanned in one call. The native patterns are exact on ASCII lines; a line
  holding other bytes (or a carriage return) is reported by one more pattern and scanned
  again with Python.
- Python's ``re``, one line at a time: where the wheel is missing, and for those lines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

from logwatchd.rules.selection import Need, ScanPattern

try:  # a maintained wheel with Vectorscan built in; everything works without it, slower
    import hyperscan
except ImportError:  # pragma: no cover - the wheel is a dependency; exercised by forcing it off
    hyperscan = None  # type: ignore[assignment]

ALWAYS = 1  # bit 0: every line has it; a rule that needs no pattern is selected by it
Hits = int

_SPECIAL = rb"[\x80-\xff\r][^\n]*$"  # a line the native patterns are not exact on
_SPECIAL_ID = 0
_LINE_END = r"[^\n]*$"


def native_available() -> bool:
    return hyperscan is not None


class PatternTable:
    """A bit for each pattern the engine's rules use; shared by all sources of an engine."""

    def __init__(self) -> None:
        self.bits: dict[ScanPattern, int] = {}

    def mask(self, need: Need) -> int:
        """The bits one of which a line shows when the need holds (``ALWAYS`` for None)."""
        if need is None:
            return ALWAYS
        mask = 0
        for pattern in need:
            bit = self.bits.get(pattern)
            if bit is None:
                bit = self.bits[pattern] = 1 << (len(self.bits) + 1)
            mask |= bit
        return mask


class LineScan:
    """The scan for one source: the patterns its rules need, natively or with ``re``.

    ``everything``: some rule of the source needs no pattern, so every line is selected.
    """

    def __init__(
        self, table: PatternTable, scanned: Iterable[ScanPattern], *, everything: bool, native: bool
    ) -> None:
        wanted = {table.bits[pattern]: pattern for pattern in scanned}
        self.everything = everything
        self.scanned = sum(wanted)  # the bits a line must show one of to be selected
        self.assumed: Hits = ~self.scanned  # what every line has: ALWAYS and the rest
        checks = [(bit, p.python) for bit, p in sorted(wanted.items()) if p.python is not None]
        self._python = [(bit, re.compile(text).search) for bit, text in checks]
        self._python_assumed = self.assumed | sum(b for b, p in wanted.items() if p.python is None)
        self.native = _NativeScan.build(wanted) if native and wanted else None
        # the patterns both scans look for (on ASCII lines they must find the same ones)
        self.exact = ~self._python_assumed & ~(self.native.assumed if self.native else -1)

    def hits(self, raw: str) -> Hits:
        """One line, with ``re`` (any line at all)."""
        hits = self._python_assumed
        for bit, search in self._python:
            if search(raw) is not None:
                hits |= bit
        return hits

    def line(self, raw: str) -> Hits | None:
        """One line as a batch of one would find it: its hits, or None when no rule of the
        source can match it."""
        chosen = self.select([raw])
        if not chosen:
            return None
        hits = chosen[0][1]
        if hits is None:
            hits = self.hits(raw)
        return hits if self.everything or hits & self.scanned else None

    def select(self, raws: Sequence[str]) -> list[tuple[int, Hits | None]]:
        """(index, hits) of the lines to evaluate, in order; hits None: the caller scans that
        line with ``hits()`` (and drops it if it shows nothing of ``scanned``)."""
        count = len(raws)
        if not (self.scanned or self.everything):
            return []  # no rule of the source has anything to do with any line
        if self.native is not None and count:
            data = "\n".join(raws).encode("utf-8", "replace")
            if data.count(b"\n") == count - 1:  # no line holds a newline of its own
                found = self.native.lines(data)
                chosen = [(index, hits) for index, _end, hits in found]
                if self.everything:
                    seen = {index for index, _ in chosen}
                    chosen += [(i, self.native.assumed) for i in range(count) if i not in seen]
                    chosen.sort(key=_index)
                return chosen
        return [(index, None) for index in range(count)]

    def select_block(self, data: bytes) -> list[tuple[int, int, Hits | None]] | None:
        """For a block of a file's bytes (whole lines): (index, end offset, hits) of the lines
        to evaluate, hits None as in ``select``; None when only ``select`` can do it (no
        native scan, or every line is wanted)."""
        if not (self.scanned or self.everything):
            return []
        if self.native is None or self.everything:
            return None
        return self.native.lines(data)


def _index(item: tuple[int, Any]) -> int:
    return item[0]


class _NativeScan:
    """A Hyperscan database of a source's patterns (bit number = pattern id)."""

    def __init__(self, database: Any, ids: dict[int, int], assumed: Hits) -> None:
        self._database = database
        self._bits = [ids.get(pid, 0) for pid in range(max(ids) + 1)]  # pattern id -> its bit
        self.assumed = assumed  # ALWAYS, and patterns Hyperscan would not take

    @classmethod
    def build(cls, wanted: dict[int, ScanPattern]) -> _NativeScan | None:
        accepted = {bit.bit_length() - 1: pattern.native for bit, pattern in wanted.items()}
        database = _compile(accepted)
        if database is None:  # one pattern spoils the lot: keep the ones that compile
            accepted = {pid: text for pid, text in accepted.items() if _compile({pid: text})}
            database = _compile(accepted)
            if database is None:
                return None
        refused = sum(bit for bit in wanted if bit.bit_length() - 1 not in accepted)
        # id 0 is ALWAYS's bit, never a pattern's: it marks the lines to scan with Python
        ids = {pid: 1 << pid for pid in [_SPECIAL_ID, *accepted]}
        return cls(database, ids, ~sum(wanted) | refused)

    def lines(self, data: bytes) -> list[tuple[int, int, Hits | None]]:
        """(line index, end offset, hits) of every line of ``data`` that some pattern found,
        in order; hits None for a line to scan with Python."""
        found: dict[int, int] = {}
        bits = self._bits
        get = found.get

        def on_match(pid: int, start: int, end: int, flags: int, context: object) -> None:
            found[end] = get(end, 0) | bits[pid]

        self._database.scan(data, match_event_handler=on_match)
        chosen: list[tuple[int, int, Hits | None]] = []
        index = previous = 0
        count = data.count
        assumed = self.assumed
        for end in sorted(found):
            index += count(b"\n", previous, end)
            previous = end
            seen = found[end]
            chosen.append((index, end, None if seen & ALWAYS else seen | assumed))
        return chosen


def _compile(patterns: dict[int, str]) -> Any:
    """A database of the patterns (and the one for lines to scan with Python), or None
    when Hyperscan refuses one."""
    return _compiled(tuple(sorted(patterns.items())))


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[tuple[int, str], ...]) -> Any:
    """Compiling takes a while (tens of ms a pattern): a reload, or sources with the same
    parser, reuse the database (scans run in one thread, so its scratch space is never
    shared by two at once)."""
    sources = {pid: (text + _LINE_END).encode("ascii") for pid, text in patterns}
    sources[_SPECIAL_ID] = _SPECIAL
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(
            expressions=list(sources.values()),
            ids=list(sources),
            flags=[hyperscan.HS_FLAG_MULTILINE] * len(sources),
        )
    except hyperscan.error:
        return None
    return database

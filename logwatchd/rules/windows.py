"""Per-key rule state: threshold windows, distinct values, sequences, cooldowns.

One ``KeyState`` per (rule, group_by key) holds everything the rule remembers about that
key; a ``KeyTable`` holds a rule's keys, bounded, least recently updated evicted first, and
records which keys changed so only those are written to the state database.

Times are event times. A window keeps what happened in ``[newest - window, newest]``,
``newest`` being the latest event time the key has seen, so a line that arrives a little out of
order neither crashes nor moves the window backwards.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar

from logwatchd.alerts import MAX_SAMPLES

Key = tuple[str, ...]
SAMPLE_CHARS = 1024  # a sample line is cut here: state stays bounded whatever the lines are
_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}


def cut(raw: str) -> str:
    return raw if len(raw) <= SAMPLE_CHARS else raw[: SAMPLE_CHARS - 1] + "\u2026"


def key_json(key: Key) -> str:
    return json.dumps(list(key), **_COMPACT)  # type: ignore[arg-type]


def key_from_json(text: str) -> Key | None:
    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return tuple(values)


class Last:
    """What an alert fired later (by a deadline) needs of the last event it saw."""

    __slots__ = ("fields", "path", "raw", "source")

    def __init__(self, source: str, path: str | None, raw: str, fields: dict[str, Any]) -> None:
        self.source = source
        self.path = path
        self.raw = raw
        self.fields = fields

    def dump(self) -> list[Any]:
        return [self.source, self.path, self.raw, self.fields]

    @classmethod
    def load(cls, data: list[Any]) -> Last:
        source, path, raw, fields = data
        return cls(str(source), path, str(raw), dict(fields))


class Partial:
    """A sequence in progress: its first event, what it saw, and the next step it waits for."""

    __slots__ = ("first", "last", "last_time", "origin", "samples")

    def __init__(self, first: float, origin: str) -> None:
        self.first = first
        self.last_time = first
        self.origin = origin
        self.samples: list[str] = []
        self.last: Last | None = None

    def see(self, time: float, raw: str, last: Last | None) -> None:
        self.last_time = max(self.last_time, time)
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(cut(raw))
        self.last = last

    def dump(self) -> list[Any]:
        return [
            self.first,
            self.last_time,
            self.origin,
            self.samples,
            None if self.last is None else self.last.dump(),
        ]

    @classmethod
    def load(cls, data: list[Any]) -> Partial:
        first, last_time, origin, samples, last = data
        partial = cls(float(first), str(origin))
        partial.last_time = float(last_time)
        partial.samples = [str(s) for s in samples][:MAX_SAMPLES]
        partial.last = None if last is None else Last.load(last)
        return partial


class KeyState:
    """Everything one rule remembers about one key."""

    __slots__ = ("distinct", "hits", "newest", "partials", "samples", "suppressed", "until")

    def __init__(self, newest: float) -> None:
        self.newest = newest  # latest event time seen for this key
        # lists, not deques: an empty deque costs 600 bytes, and a window holds few entries
        self.hits: list[tuple[float, str]] = []  # (time, origin) of counted matches
        self.distinct: dict[str, list[Any]] = {}  # value -> [first, last, origin]
        self.samples: list[tuple[float, str]] = []  # the last MAX_SAMPLES lines
        self.partials: dict[int, Partial] = {}  # steps done -> sequence in progress
        self.until = 0.0  # cooldown end (event time)
        self.suppressed = 0  # matches silenced by the cooldown since the last alert

    # --- windows ------------------------------------------------------------------------

    def add_hit(self, time: float, origin: str, window: float) -> int:
        """Count a match; the number of matches now inside the window."""
        if time > self.newest:  # noqa: PLR1730 (max() costs a call, per counted match)
            self.newest = time
        start = self.newest - window
        hits = self.hits
        if time >= start:
            hits.append((time, origin))
        if hits and hits[0][0] < start:
            expired = 1
            while expired < len(hits) and hits[expired][0] < start:
                expired += 1
            del hits[:expired]
        return len(hits)

    def add_distinct(self, value: str, time: float, origin: str, window: float) -> int:
        """Note a value; the number of distinct values now inside the window."""
        self.newest = max(self.newest, time)
        start = self.newest - window
        if time >= start:
            seen = self.distinct.get(value)
            if seen is None:
                self.distinct[value] = [time, time, origin]
            else:
                seen[1] = max(seen[1], time)
        for old in [v for v, (_f, last, _o) in self.distinct.items() if last < start]:
            del self.distinct[old]
        return len(self.distinct)

    def add_sample(self, time: float, raw: str) -> None:
        samples = self.samples
        samples.append((time, raw if len(raw) <= SAMPLE_CHARS else cut(raw)))
        if len(samples) > MAX_SAMPLES:
            del samples[0]

    def first_hit(self) -> tuple[float, str]:
        """(time, origin) of the earliest match still in the window."""
        if self.distinct:
            first, _last, origin = min(self.distinct.values(), key=lambda entry: entry[0])
            return float(first), str(origin)
        return min(self.hits, key=lambda hit: hit[0])

    def window_samples(self, window: float) -> list[str]:
        start = self.newest - window
        return [raw for time, raw in self.samples if time >= start]

    def clear_window(self) -> None:
        self.hits.clear()
        self.distinct.clear()
        self.samples.clear()

    def idle(self, now: float) -> bool:
        """Nothing left worth keeping at event time ``now``."""
        return (
            not self.hits
            and not self.distinct
            and not self.partials
            and (self.until <= now and self.suppressed == 0)
        )

    # --- persistence --------------------------------------------------------------------

    def dump(self) -> str:
        data: dict[str, Any] = {"n": self.newest}
        if self.hits:
            data["h"] = [list(hit) for hit in self.hits]
        if self.distinct:
            data["d"] = self.distinct
        if self.samples:
            data["s"] = [list(sample) for sample in self.samples]
        if self.partials:
            data["p"] = {str(level): p.dump() for level, p in self.partials.items()}
        if self.until:
            data["c"] = self.until
        if self.suppressed:
            data["x"] = self.suppressed
        try:
            return json.dumps(data, **_COMPACT)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            # a field value JSON cannot hold (an int too long to print): keep the strings only
            for partial in self.partials.values():
                if partial.last is not None:
                    fields = partial.last.fields
                    partial.last.fields = {k: v for k, v in fields.items() if isinstance(v, str)}
            data["p"] = {str(level): p.dump() for level, p in self.partials.items()}
            return json.dumps(data, **_COMPACT)  # type: ignore[arg-type]

    @classmethod
    def load(cls, text: str) -> KeyState:
        """Rebuild from ``dump``; raises ValueError (or KeyError/TypeError) on a bad row."""
        data = json.loads(text)
        state = cls(float(data["n"]))
        state.hits.extend((float(t), str(o)) for t, o in data.get("h", ()))
        for value, (first, last, origin) in data.get("d", {}).items():
            state.distinct[str(value)] = [float(first), float(last), str(origin)]
        state.samples.extend((float(t), str(raw)) for t, raw in data.get("s", ()))
        del state.samples[:-MAX_SAMPLES]
        for level, partial in data.get("p", {}).items():
            state.partials[int(level)] = Partial.load(partial)
        state.until = float(data.get("c", 0.0))
        state.suppressed = int(data.get("x", 0))
        return state


class Stored(Protocol):
    def dump(self) -> str: ...


V = TypeVar("V", bound=Stored)


class LruTable(Generic[V]):
    """At most ``limit`` values by key, the least recently written evicted first; records
    which keys were written or deleted since the last drain, so only those reach the state
    database. Subclasses say how a value is written and when a quiet one expires."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.states: OrderedDict[Key, V] = OrderedDict()
        self.dirty: set[Key] = set()
        self.deleted: set[Key] = set()
        self.evicted = 0  # keys dropped to stay within the limit, for status and tests

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[Key]:
        return iter(self.states)

    def get(self, key: Key) -> V | None:
        return self.states.get(key)

    def add(self, key: Key, value: V) -> V:
        """A new key, written now (the caller marks it dirty)."""
        self.states[key] = value
        if len(self.states) > self.limit:
            self._evict()
        return value

    def put(self, key: Key, value: V) -> None:
        """Restore a key from the database: not dirty, since the database already has it."""
        self.states[key] = value
        self.states.move_to_end(key)
        if len(self.states) > self.limit:
            self._evict()

    def drop(self, key: Key) -> None:
        if self.states.pop(key, None) is not None:
            self.dirty.discard(key)
            self.deleted.add(key)

    def _evict(self) -> None:
        key, _value = self.states.popitem(last=False)
        self.dirty.discard(key)
        self.deleted.add(key)
        self.evicted += 1

    def drain(self) -> tuple[list[tuple[Key, str]], list[Key]]:
        """(key, state json) of keys changed since the last drain, and keys deleted since."""
        upserts = [(key, self.states[key].dump()) for key in self.dirty if key in self.states]
        deletes = [key for key in self.deleted if key not in self.states]
        self.dirty.clear()
        self.deleted.clear()
        return upserts, deletes

    def forget_changes(self) -> None:
        self.dirty.clear()
        self.deleted.clear()


class KeyTable(LruTable[KeyState]):
    """A rule's keys, at most ``limit`` of them; the least recently updated goes first."""

    def touch(self, key: Key, time: float) -> KeyState:
        """The key's state (created if new), marked as updated now."""
        state = self.states.get(key)
        if state is None:
            state = self.add(key, KeyState(time))
        else:
            self.states.move_to_end(key)
        self.dirty.add(key)
        return state

    def sweep(self, now: float, span: float, budget: int = 8) -> None:
        """Drop up to ``budget`` of the oldest-updated keys quiet for longer than ``span``."""
        states = self.states
        for _ in range(budget):
            if not states:
                return
            key, state = next(iter(states.items()))
            if state.newest + span >= now or state.until > now:
                return
            if not state.suppressed:
                self.drop(key)
                continue
            # past the span every window entry has expired, but the next alert for this key
            # still has to report what the cooldown silenced: keep that much, at the back
            state.clear_window()
            state.partials.clear()
            states.move_to_end(key)

"""Per-connection memory for a rule (``context:``): fields carried across the lines of one
connection, the way fail2ban's multi-line filters follow an sshd connection by its pid.

For each event of the rule's sources whose ``by`` fields are all present (the connection key):

1. ``learn`` runs on the event; its regex groups become fields of this line.
2. Fields in ``remember`` that the line lacks are filled in from the connection's memory;
   each ``distinct`` count is set (distinct values the connection has shown, this line's too).
3. The rule's own condition runs on that view (the engine does this).
4. If the line matched ``learn`` or the rule, the ``remember`` fields it has (its own, learned
   or extracted by the rule's regexes, never filled-in ones) and its ``distinct`` values are
   stored. A line matching ``forget`` then drops the connection.

A line that matches none of ``learn``, the rule and ``forget`` changes nothing, so the
scan may pass it over: the rule needs what the rule, ``learn`` or ``forget`` needs (see
``plans.py``). Reading memory never reorders the LRU, for the same reason.

Memory is bounded: at most ``limit`` connections (least recently written evicted first),
each forgotten ``ttl`` seconds of event time after its last write; values longer than
``MAX_VALUE_CHARS`` are not stored, and a ``distinct`` set stops growing at ``MAX_DISTINCT``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from logwatchd.config.model import ContextConfig, ListConfig
from logwatchd.rules.generated import compile_generated
from logwatchd.rules.predicates import (
    ALL_HITS,
    CompiledPredicate,
    Condition,
    GateMaker,
    extracted_names,
    field_names,
    no_gate_maker,
)
from logwatchd.rules.values import as_key
from logwatchd.rules.windows import Key, LruTable

MAX_VALUE_CHARS = 1024
MAX_DISTINCT = 32
MAX_HELD = 8  # matches held per connection, waiting for a group_by field
MAX_FIELDS = 64  # fields kept of a held match
SWEEP_BUDGET = 8  # expired connections dropped per write, oldest first
_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}


class Connection:
    """What one connection has shown so far."""

    __slots__ = ("distinct", "fields", "held", "seen")

    def __init__(self, seen: float) -> None:
        self.seen = seen  # latest event time that wrote here
        self.fields: dict[str, Any] = {}
        self.distinct: dict[str, list[str]] = {}  # count name -> values, first seen first
        self.held: list[dict[str, Any]] = []  # fields of matches waiting for their group_by

    def dump(self) -> str:
        data: dict[str, Any] = {"t": self.seen, "f": self.fields}
        if self.distinct:
            data["d"] = self.distinct
        if self.held:
            data["h"] = self.held
        return json.dumps(data, **_COMPACT)  # type: ignore[arg-type]

    @classmethod
    def load(cls, text: str) -> Connection:
        """Rebuild from ``dump``; raises ValueError (or KeyError/TypeError) on a bad row."""
        data = json.loads(text)
        connection = cls(float(data["t"]))
        connection.fields = _stored(data["f"])
        for name, values in data.get("d", {}).items():
            connection.distinct[str(name)] = [str(v) for v in values][:MAX_DISTINCT]
        connection.held = [_stored(held) for held in data.get("h", [])[:MAX_HELD]]
        return connection


def context_key_json(key: Key) -> str:
    """A context row's key in the state database: a JSON object, where group keys are arrays."""
    return json.dumps({"context": list(key)}, **_COMPACT)  # type: ignore[arg-type]


def context_key_from_json(text: str) -> Key | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    values = data.get("context") if isinstance(data, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return tuple(values)


def is_context_key(text: str) -> bool:
    return text.startswith("{")


class ConnectionTable(LruTable[Connection]):
    """Connections of one rule, at most ``limit``; the least recently written goes first."""

    def write(self, key: Key, time: float, connection: Connection | None) -> Connection:
        """``connection``: what the table holds under ``key`` (the caller looked it up)."""
        if connection is None:
            connection = self.add(key, Connection(time))
        else:
            connection.seen = max(connection.seen, time)
            self.states.move_to_end(key)
        self.dirty.add(key)
        return connection

    def sweep(self, now: float, ttl: float) -> None:
        states = self.states
        for _ in range(SWEEP_BUDGET):
            if not states:
                return
            key, connection = next(iter(states.items()))
            if connection.seen + ttl >= now:
                return
            self.drop(key)


@dataclass(slots=True)
class Visit:
    """One event as the context sees it, between ``enter`` and ``leave``."""

    key: Key
    own: dict[str, Any]  # the event's fields and what learn extracted
    view: dict[str, Any]  # own, plus filled-in fields and distinct counts: what the rule sees
    learned: bool  # learn matched
    stored: Connection | None  # the connection as stored when the visit began (maybe expired)


class Context:
    """A rule's compiled ``context``, with its connections."""

    def __init__(
        self,
        cfg: ContextConfig,
        lists: Mapping[str, ListConfig],
        limit: int,
        gates: GateMaker = no_gate_maker,
    ) -> None:
        self.cfg = cfg
        self.by = cfg.by
        self.optional = frozenset(cfg.optional)
        self.remember = cfg.remember
        self.distinct = cfg.distinct
        self.ttl = cfg.ttl
        learned = extracted_names(cfg.learn) if cfg.learn is not None else frozenset()
        # fields the rule may see that are not the line's own text
        self.adds = frozenset(cfg.remember) | {name for name, _ in cfg.distinct} | learned
        # learn sees the line; forget sees what the rule sees (the filled-in view)
        self.learn_condition = Condition(cfg.learn, learned) if cfg.learn is not None else None
        self.forget_condition = (
            Condition(cfg.forget, extracted_names(cfg.forget) | self.adds)
            if cfg.forget is not None
            else None
        )
        self.learn = _compiled(self.learn_condition, lists, gates)
        self.forget = _compiled(self.forget_condition, lists, gates)
        # whether forget looks at what memory fills in (else it can test the line as it is)
        memory = frozenset(cfg.remember) | {name for name, _ in cfg.distinct}
        self.forget_reads_memory = cfg.forget is not None and bool(field_names(cfg.forget) & memory)
        self.table = ConnectionTable(limit)
        self.newest = float("-inf")

    def key_of(self, fields: Mapping[str, Any]) -> Key | None:
        values = []
        for name in self.by:
            value = fields.get(name)
            cls = value.__class__
            # str and int (a pid) are the common cases: as_key gives the same text
            text = value if cls is str else str(value) if cls is int else as_key(value)
            if text is None or text == "":
                if name not in self.optional:
                    return None
                text = ""
            values.append(text)
        return tuple(values)

    def may_release(self, fields: Mapping[str, Any]) -> bool:
        """Whether the event's connection holds matches (which a line with the ``group_by``
        fields would complete): if not, a line that can neither match, learn nor forget
        changes nothing."""
        key = self.key_of(fields)
        if key is None:
            return False
        connection = self.table.get(key)
        return connection is not None and bool(connection.held)

    def enter(
        self,
        fields: dict[str, Any],
        time: float,
        *,
        learn: bool = True,
        hits: int = ALL_HITS,
        view: bool = True,
    ) -> Visit | None:
        """The view of the event the rule should test, or None if it has no connection.

        ``learn=False``: the caller knows ``learn`` cannot hold (the line lacks its text);
        ``hits``: what the scan found on the line; ``view=False``: nothing will look at the
        filled-in fields (the rule cannot match, and forget does not read memory).
        """
        key = self.key_of(fields)
        if key is None:
            return None
        own = fields
        learned = False
        if learn and self.learn is not None:
            ext: dict[str, Any] = {}
            learned = self.learn.test(fields, ext, hits)
            if learned and ext:
                own = {**fields, **ext}
        stored = connection = self.table.states.get(key)
        if connection is not None and time - connection.seen > self.ttl:
            connection = None  # expired: dropped at the next write
        if not view or (connection is None and not self.distinct):
            return Visit(key, own, own, learned, stored)
        view_fields = dict(own)
        if connection is not None:
            for name in self.remember:
                if view_fields.get(name) is None and name in connection.fields:
                    view_fields[name] = connection.fields[name]
        for name, counted in self.distinct:
            seen = connection.distinct.get(name, []) if connection is not None else []
            value = _distinct_value(own.get(counted))
            view_fields[name] = len(seen) + (value is not None and value not in seen)
        return Visit(key, own, view_fields, learned, stored)

    def leave(
        self,
        visit: Visit,
        matched: bool,
        extracted: dict[str, Any] | None,
        time: float,
        *,
        hold: dict[str, Any] | None = None,
        group_by: tuple[str, ...] = (),
        forget: bool = True,
        hits: int = ALL_HITS,
    ) -> list[dict[str, Any]]:
        """Store what the line showed (if it matched learn or the rule); forget if it ends.

        ``extracted``: what the rule's regexes set on a match (filled-in values are not
        stored again, so a value does not live on past ``ttl`` by being copied forward).
        ``hold``: a match that lacks a ``group_by`` field, to keep until a later line of the
        connection has it. Returns the held matches this line completes (its ``group_by``
        values filled in), for the engine to report and count now. ``forget=False``: the
        caller knows ``forget`` cannot hold.
        """
        own = {**visit.own, **extracted} if extracted else visit.own
        released = self._release(visit, own, group_by, time)
        if hold is not None:
            self._hold(visit.key, hold, time)
        if forget and self.forget is not None and self.forget.test(visit.view, None, hits):
            self.table.drop(visit.key)
            return released
        if matched or visit.learned:
            self._store(visit.key, own, time)
        return released

    def _release(
        self, visit: Visit, own: Mapping[str, Any], group_by: tuple[str, ...], time: float
    ) -> list[dict[str, Any]]:
        connection = visit.stored  # nothing has written since the visit began
        if connection is None or not connection.held or time - connection.seen > self.ttl:
            return []
        values = {name: own.get(name) for name in group_by}
        if any(value is None for value in values.values()):
            return []
        released = [{**held, **values} for held in connection.held]
        connection.held.clear()
        self.table.dirty.add(visit.key)
        return released

    def _hold(self, key: Key, fields: Mapping[str, Any], time: float) -> None:
        connection = self._connection(key, time)
        if len(connection.held) < MAX_HELD:
            kept = {name: _storable(value) for name, value in list(fields.items())[:MAX_FIELDS]}
            connection.held.append({k: v for k, v in kept.items() if v is not None})

    def _connection(self, key: Key, time: float) -> Connection:
        """The connection to write to (a new one if it expired), marked as written now."""
        self.newest = max(self.newest, time)
        table = self.table
        states = table.states
        if states:  # the sweep's first test, written out: it stops there almost always
            front = next(iter(states.values()))
            if front.seen + self.ttl < self.newest:
                table.sweep(self.newest, self.ttl)
        connection = states.get(key)
        if connection is not None and time - connection.seen > self.ttl:
            table.drop(key)  # an expired connection starts over
            connection = None
        return table.write(key, time, connection)

    def _store(self, key: Key, fields: Mapping[str, Any], time: float) -> None:
        connection = self._connection(key, time)
        for name in self.remember:
            value = _storable(fields.get(name))
            if value is not None:
                connection.fields[name] = value
        for name, counted in self.distinct:
            value = _distinct_value(fields.get(counted))
            if value is None:
                continue
            seen = connection.distinct.setdefault(name, [])
            if value not in seen and len(seen) < MAX_DISTINCT:
                seen.append(value)

    # --- state --------------------------------------------------------------------------

    def load(self, rows: Iterable[tuple[Key, str]]) -> list[Key]:
        """Restore rows; the keys of rows that could not be read (to delete)."""
        bad = []
        for key, text in rows:
            if len(key) != len(self.by):
                bad.append(key)
                continue
            try:
                connection = Connection.load(text)
            except (ValueError, KeyError, TypeError, AttributeError):
                bad.append(key)
                continue
            self.table.put(key, connection)
            self.newest = max(self.newest, connection.seen)
        return bad


def _compiled(
    condition: Condition | None, lists: Mapping[str, ListConfig], gates: GateMaker
) -> CompiledPredicate | None:
    if condition is None:
        return None
    return compile_generated(condition.pred, lists, gates(condition.ungated))


def _stored(fields: Any) -> dict[str, Any]:
    """Fields read back from the database, kept only as memory would have kept them."""
    if not isinstance(fields, dict):
        raise TypeError("fields must be a mapping")
    kept = {str(name): _storable(value) for name, value in list(fields.items())[:MAX_FIELDS]}
    return {name: value for name, value in kept.items() if value is not None}


def _storable(value: Any) -> Any:
    """The value as memory keeps it (JSON-able), or None when it is not kept."""
    if value is None:
        return None
    if value.__class__ is str:
        return value if len(value) <= MAX_VALUE_CHARS else None
    if value.__class__ in (float, bool) or (value.__class__ is int and abs(value) < 1 << 63):
        return value
    text = value if isinstance(value, str) else as_key(value)
    if text is None or len(text) > MAX_VALUE_CHARS:
        return None
    return text


def _distinct_value(value: Any) -> str | None:
    text = value if value.__class__ is str else as_key(value) if value is not None else None
    if not text or len(text) > MAX_VALUE_CHARS:
        return None  # an empty user name (sshd's "ruser=") is no user
    return text

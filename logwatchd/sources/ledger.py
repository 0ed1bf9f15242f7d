"""Which messages of a stream the daemon has counted, committed, and had acknowledged.

A message moves through: polled (the daemon counted it) -> committing (listed in the
checkpoint being stored) -> unconfirmed (stored; its acknowledgement is out, the server has
not confirmed it) -> gone (confirmed, or the consumer's acknowledgement floor passed it).
The checkpoint lists the committing and unconfirmed ones: after a crash the server redelivers
exactly those and what was never committed, so a restarted daemon skips the listed ones and
counts the rest. Within a run, an id seen among the last ``RECENT`` messages is a repeat too
(the same alert published twice, or seen through two overlapping subjects).

Thread-safe: the daemon's thread polls and commits, the source's loop confirms and prunes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

RECENT = 65_536  # message ids remembered to skip repeats
MAX_LISTED = 100_000  # the checkpoint's list is cut to this (lowest sequences go first)


@dataclass(slots=True)
class Delivered:
    """A delivered message: its consumer, stream sequence and id (``msg`` None: listed by a
    previous run's checkpoint)."""

    consumer: str
    seq: int
    key: str
    msg: Any = None

    @property
    def slot(self) -> tuple[str, int]:
        return self.consumer, self.seq


class Recent:
    """The last ``size`` ids seen, oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already there."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class Ledger:
    def __init__(self, saved: dict[str, Any] | None = None, *, recent: int = RECENT) -> None:
        self._lock = threading.Lock()
        self._recent = Recent(recent)
        self._polled: list[Delivered] = []  # since the last checkpoint()
        self._committing: list[Delivered] = []  # in the checkpoint being stored
        self._unconfirmed: dict[tuple[str, int], Delivered] = {}
        self._uncommitted: set[str] = set()  # ids counted, not yet committed
        self.skipped = 0  # repeats not counted
        for entry in (saved or {}).get("unacked", []):
            try:
                consumer, seq, key = str(entry[0]), int(entry[1]), str(entry[2])
            except (TypeError, ValueError, IndexError):
                continue
            self._unconfirmed[(consumer, seq)] = Delivered(consumer, seq, key)
            self._recent.add(key)

    def admit(self, batch: list[Delivered]) -> tuple[list[bool], list[Delivered]]:
        """Record polled messages. Returns, per message, whether it is new (to be counted),
        and the repeats to acknowledge at once: those whose first copy is committed. A repeat
        of something not yet committed is acknowledged with it, after the commit."""
        fresh: list[bool] = []
        polled: list[Delivered] = []
        at_once: list[Delivered] = []
        for delivered in batch:
            new = self._recent.add(delivered.key)
            fresh.append(new)
            if new:
                self._uncommitted.add(delivered.key)
                polled.append(delivered)
            elif delivered.key in self._uncommitted:
                polled.append(delivered)
            else:
                at_once.append(delivered)
        with self._lock:
            self._polled.extend(polled)
            self._unconfirmed.update((d.slot, d) for d in at_once)
        self.skipped += len(batch) - sum(fresh)
        return fresh, at_once

    def checkpoint(self, stream: str) -> dict[str, Any]:
        """What the next commit stores: every message counted whose acknowledgement the
        server has not confirmed."""
        with self._lock:
            self._committing.extend(self._polled)
            self._polled = []
            listed = {d.slot: d for d in self._committing}
            listed.update(self._unconfirmed)
        entries = sorted((d.consumer, d.seq, d.key) for d in listed.values())
        if len(entries) > MAX_LISTED:
            entries = sorted(entries, key=lambda entry: entry[1])[-MAX_LISTED:]
        return {"stream": stream, "unacked": [list(entry) for entry in entries]}

    def committed(self) -> list[Delivered]:
        """The last checkpoint is stored: what it covered, to acknowledge now."""
        with self._lock:
            done, self._committing = self._committing, []
            self._unconfirmed.update((d.slot, d) for d in done)
        self._uncommitted.difference_update(d.key for d in done)
        return done

    def confirmed(self, delivered: Delivered) -> None:
        with self._lock:
            self._unconfirmed.pop(delivered.slot, None)

    def passed(self, consumer: str, floor: int) -> None:
        """The consumer's acknowledgement floor: everything at or below it is acknowledged."""
        with self._lock:
            gone = [slot for slot in self._unconfirmed if slot[0] == consumer and slot[1] <= floor]
            for slot in gone:
                del self._unconfirmed[slot]

"""The shape every source has, so the daemon drives files, the journal and stdin alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from logwatchd.events import Line


@runtime_checkable
class Source(Protocol):
    id: str

    def start(self, wake: Callable[[], None]) -> None:
        """Begin following; ``wake()`` is called (from any thread) when data may be there."""
        ...

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        """The lines ready now, in order per file; never blocks."""
        ...

    def checkpoint(self) -> dict[str, Any]:
        """A JSON-able position just after the last line ``poll()`` returned."""
        ...

    def stop(self) -> None:
        """Release watches, threads and descriptors."""
        ...

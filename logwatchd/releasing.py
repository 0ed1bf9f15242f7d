"""``with thing:`` for what is held until ``release()``: a lock, a pidfile, an armed timer."""

from __future__ import annotations

from typing import Self

__all__ = ["Releasing"]


class Releasing:
    """Leaving the ``with`` block, by an exception too, calls ``release()``, which must be
    safe to call again (a caller may release early)."""

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

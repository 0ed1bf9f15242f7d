from __future__ import annotations

import pytest

from logwatchd.releasing import Releasing


class Held(Releasing):
    def __init__(self) -> None:
        self.releases = 0

    def release(self) -> None:
        self.releases += 1


def test_leaving_the_block_releases_once_and_the_block_gets_the_object() -> None:
    held = Held()
    with held as inside:
        assert inside is held
        assert held.releases == 0
    assert held.releases == 1


def test_an_exception_in_the_block_releases_and_goes_on() -> None:
    held = Held()
    with pytest.raises(KeyError), held:
        raise KeyError("x")
    assert held.releases == 1

"""Sources: where lines come from (followed files, standard input; the journal lives beside)."""

from logwatchd.sources.base import Source
from logwatchd.sources.files import FileFollower
from logwatchd.sources.stdin import StdinSource

__all__ = ["FileFollower", "Source", "StdinSource"]

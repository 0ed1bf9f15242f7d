"""Inotify as a wake-up hint only: the follower re-stats and re-reads on its own thread.

Events are not a record (they coalesce, overflow silently, and an exception in a handler kills
watchdog's dispatcher), so the handler does nothing but pass on whether the event was
structural (create, move, delete) and the paths it names, and call ``wake()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

import structlog
from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyObserver

log = structlog.get_logger()


class _QuietStop(logging.Filter):
    """watchdog 7 logs an ERROR from a harmless race each time an observer stops (a reload,
    a shutdown); it would read like a fault. Everything else it logs (queue overflow) stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in str(record.msg)


logging.getLogger("watchdog.observers.inotify").addFilter(_QuietStop())

_STRUCTURAL = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MOVED})
_IGNORED = frozenset({"opened", "closed_no_write", "attrib"})


class _Hint(FileSystemEventHandler):
    def __init__(self, on_event: Callable[[bool, tuple[str, ...]], None]) -> None:
        self._on_event = on_event

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type not in _IGNORED:
                paths = tuple(os.fsdecode(p) for p in (event.src_path, event.dest_path) if p)
                self._on_event(event.event_type in _STRUCTURAL, paths)
        except Exception:  # noqa: S110 - an exception here would kill the observer
            pass


class DirWatcher:
    """Watches directories; degrades to nothing (the caller polls) when inotify is unavailable."""

    def __init__(self, source: str, on_event: Callable[[bool, tuple[str, ...]], None]) -> None:
        self._source = source
        self._hint = _Hint(on_event)
        self._observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}
        self.polling = False

    def start(self) -> None:
        try:
            observer = InotifyObserver()
            observer.daemon = True
            observer.start()
        except Exception as exc:  # any failure means: poll instead
            self._fall_back(exc)
            return
        self._observer = observer

    def update(self, dirs: set[str]) -> None:
        """Watch exactly these directories (new ones added, vanished ones dropped)."""
        if self._observer is None:
            return
        for gone in set(self._watches) - dirs:
            with contextlib.suppress(Exception):  # the directory is already gone
                self._observer.unschedule(self._watches.pop(gone))
        for new in dirs - set(self._watches):
            try:
                self._watches[new] = self._observer.schedule(self._hint, new, recursive=False)
            except OSError as exc:  # inotify watch limit, or the directory vanished
                if exc.errno in (24, 28):  # EMFILE, ENOSPC: out of watches/instances
                    self._fall_back(exc)
                    return

    def check(self) -> None:
        """Notice a dead observer thread (it dies silently) and carry on by polling."""
        if self._observer is not None and not self._observer.is_alive():
            self._fall_back(RuntimeError("inotify observer thread died"))

    def _fall_back(self, exc: BaseException) -> None:
        log.warning(
            "inotify unavailable; following by polling", source=self._source, error=str(exc)
        )
        self.polling = True
        self.stop()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.clear()
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception:  # noqa: S110 - stopping must not fail the caller
            pass

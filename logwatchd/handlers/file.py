"""Append alerts as JSON lines to a file from the configuration; delivered once fsynced."""

from __future__ import annotations

import errno
import json
import os
from collections import deque
from typing import Any

import structlog

from logwatchd.config.handler_settings import FileSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import settings_of
from logwatchd.own_files import open_own
from logwatchd.templates import HostInfo, Templates

log = structlog.get_logger("logwatchd.handlers")

RECENT_IDS = 10_000  # ids of alerts written lately, remembered to never write one twice
TAIL_BYTES = 1 << 20  # read back at the first send: what an earlier process wrote last


class WrittenIds:
    """The ids of the alerts written last (a bounded set, oldest forgotten first)."""

    def __init__(self, ids: list[str]) -> None:
        self._order: deque[str] = deque()
        self._set: set[str] = set()
        self.add(ids)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._set

    def add(self, ids: list[str]) -> None:
        for alert_id in ids:
            if alert_id in self._set:
                continue
            self._order.append(alert_id)
            self._set.add(alert_id)
            if len(self._order) > RECENT_IDS:
                self._set.discard(self._order.popleft())


class FileHandler:
    # An alert id is written at most once (the ids of the last RECENT_IDS, and of what the
    # file's last MiB holds after a restart): the outbox may hand over many alerts in one
    # send, and a kill -9 between the fsync and their removal from the outbox repeats none.
    idempotent = True

    def __init__(self, cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> None:
        settings = settings_of(cfg, FileSettings)
        self.name = cfg.name
        self.path = settings.path
        self._mode = settings.mode
        self._written: WrittenIds | None = None  # read from the file's tail at the first send

    @staticmethod
    def lines(alerts: list[dict[str, Any]]) -> bytes:
        # json.dumps escapes every control character, so one alert is always one line
        return b"".join(json.dumps(a, ensure_ascii=False).encode() + b"\n" for a in alerts)

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"path": self.path, "lines": len(alerts)}

    def send(self, alerts: list[dict[str, Any]]) -> None:
        written = self._written_ids()
        fresh = [alert for alert in alerts if alert.get("id") not in written]
        if len(fresh) < len(alerts):
            # after a kill -9 (or `test --execute` run twice on the same log): say so
            log.info(
                "alerts already in the file are not written again",
                handler=self.name,
                path=self.path,
                count=len(alerts) - len(fresh),
            )
        if fresh:
            self._append(self.lines(fresh))
        written.add([str(alert.get("id")) for alert in fresh])

    def _written_ids(self) -> WrittenIds:
        if self._written is None:
            self._written = WrittenIds(tail_ids(self.path))
        return self._written

    def _append(self, data: bytes) -> None:
        # opened per send so logrotate can move the file away between alerts
        try:
            fd = open_own(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self._mode)
        except OSError as exc:
            raise DeliveryError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def close(self) -> None:
        return None


def tail_ids(path: str) -> list[str]:
    """The ids of the alerts on the last complete lines of the file (up to TAIL_BYTES), in
    file order. Each line is parsed as JSON: an id spelled inside a field (log text) is a
    string value there, never a top-level "id"."""
    try:
        # non-blocking, and regular files only: reading a FIFO would wait for a writer
        fd = open_own(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # not "no ids": try the send again later
            raise DeliveryError(f"cannot open {path}: {exc.strerror}") from None
        return []  # no file yet (or one the send refuses, and says why)
    try:
        start = max(0, os.fstat(fd).st_size - TAIL_BYTES)
        data = os.pread(fd, TAIL_BYTES, start)
    except OSError:
        return []
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one is cut
    ids = []
    for line in lines:
        try:
            alert = json.loads(line)
        except ValueError:
            continue
        if isinstance(alert, dict) and isinstance(alert.get("id"), str):
            ids.append(alert["id"])
    return ids

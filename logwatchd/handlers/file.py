"""Append alerts as JSON lines to a file from the configuration; delivered once fsynced."""

from __future__ import annotations

import json
import os
from typing import Any

from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ConfigError, DeliveryError
from logwatchd.templates import HostInfo, Templates

DEFAULT_MODE = 0o640


class FileHandler:
    def __init__(self, cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> None:
        path = cfg.settings.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ConfigError(
                "path must be an absolute file path",
                cfg.marks.get("path", cfg.mark),
                f"handlers.{cfg.name}.path",
            )
        self.name = cfg.name
        self.path = path
        self._mode = int(cfg.settings.get("mode", DEFAULT_MODE))

    @staticmethod
    def lines(alerts: list[dict[str, Any]]) -> bytes:
        # json.dumps escapes every control character, so one alert is always one line
        return b"".join(json.dumps(a, ensure_ascii=False).encode() + b"\n" for a in alerts)

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        return {"path": self.path, "lines": len(alerts)}

    def send(self, alerts: list[dict[str, Any]]) -> None:
        data = self.lines(alerts)
        # opened per send so logrotate can move the file away between alerts
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(self.path, flags, self._mode)
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

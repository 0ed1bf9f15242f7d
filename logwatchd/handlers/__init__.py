"""Handlers deliver alerts: e-mail, a command, a webhook, a JSON-lines file, the daemon's log.

``build_handler`` turns a validated ``HandlerConfig`` into an object with ``send(alerts)``.
``send`` gets one alert, or several for a digest (batch window or rate-limit overflow), and
either returns (delivered) or raises ``DeliveryError``; the outbox decides about retries.
A handler reads its type's settings dataclass as the schema made it: nothing is checked twice.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, Protocol, TypeVar

from logwatchd.config.handler_settings import HandlerSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ConfigError, DeliveryError
from logwatchd.templates import HostInfo, Template, TemplateError, Templates

__all__ = [
    "DeliveryError",
    "Handler",
    "HostInfo",
    "build_handler",
    "clean_header",
    "compile_setting",
    "read_secret",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
S = TypeVar("S", bound=HandlerSettings)
# handler type -> its module here and class; only the types a config uses are imported, so a
# config without mail never loads smtplib, nor one without nats the asyncio client
_BUILDERS = {
    "email": ("email", "EmailHandler"),
    "command": ("command", "CommandHandler"),
    "webhook": ("webhook", "WebhookHandler"),
    "file": ("file", "FileHandler"),
    "log": ("log", "LogHandler"),
    "nats": ("nats", "NatsHandler"),
    "nftables": ("nftables", "NftablesHandler"),
}


class Handler(Protocol):
    """What the outbox drives. Optional attributes, read with these defaults:
    ``concurrency = 1`` (sends in flight at once), ``idempotent = False`` (True: send() never
    repeats an alert id, so it may get everything claimed at once), ``per_alert = False``
    (True: a send of N alerts does N actions, so a rate limit never packs them into a digest).
    """

    name: str

    def send(self, alerts: list[dict[str, Any]]) -> None:
        """Deliver one alert, or a digest of several; raise DeliveryError when it failed."""
        ...

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        """What send() would deliver, rendered, for dry runs; sends nothing."""
        ...

    def close(self) -> None: ...


def build_handler(cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> Handler:
    """Build the handler; template sources are compiled here, once. Raises ConfigError."""
    module, name = _BUILDERS[cfg.type]
    builder = getattr(importlib.import_module(f"logwatchd.handlers.{module}"), name)
    handler: Handler = builder(cfg, templates=templates, host=host)
    return handler


def settings_of(cfg: HandlerConfig, kind: type[S]) -> S:
    """The handler's settings as its type's dataclass (the schema makes them so)."""
    if not isinstance(cfg.settings, kind):
        raise TypeError(f"handler {cfg.name!r}: {cfg.type} needs {kind.__name__}")
    return cfg.settings


def compile_setting(
    cfg: HandlerConfig, templates: Templates, key: str, source: str, *, lenient: bool = False
) -> Template:
    """Compile one template of a handler, turning a syntax error into a ConfigError.

    ``lenient``: a value one alert lacks renders as nothing (logged once per field) instead
    of failing: for text a person reads, never for a command's arguments.
    """
    path = f"handlers.{cfg.name}.{key}"
    mark = cfg.marks.get(key, cfg.mark)
    try:
        # the label carries the Mark, so a render failure at run time names file and line
        return templates.compile(source, f"{mark}: {path}", owner=cfg.name if lenient else None)
    except TemplateError as exc:
        raise ConfigError(exc.message, mark, path) from None


def render_or_fail(
    templates: Templates,
    template: Template,
    alert: dict[str, Any],
    host: HostInfo,
    alerts: list[dict[str, Any]] | None = None,
) -> str:
    """Render; a failure is permanent (the same alert renders the same way on every retry)."""
    try:
        return templates.render(template, alert, host, alerts)
    except TemplateError as exc:
        raise DeliveryError(f"template {exc}", permanent=True) from None


def clean_header(value: str, limit: int = 998) -> str:
    """A header value that log data cannot turn into a second header or line."""
    text = _CONTROL.sub(" ", value).strip()
    return text[:limit]


def read_secret(path: str) -> str:
    """A secret from a file, read at use time (rotation needs no restart); never logged."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    except OSError as exc:
        raise DeliveryError(f"cannot read secret file {path}: {exc.strerror}") from None


def credential_path(name: str) -> str | None:
    """systemd's LoadCredential= directory entry for ``name``, when running under it."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory or "/" in name or name in ("", ".", ".."):
        return None
    return os.path.join(directory, name)

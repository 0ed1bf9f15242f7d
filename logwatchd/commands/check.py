"""``logwatchd check``: the config is valid, every template renders, every file is readable."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Any

from logwatchd import natsconn
from logwatchd.config import load
from logwatchd.config.model import Config, HandlerConfig, NatsConnection
from logwatchd.errors import ConfigError, DeliveryError
from logwatchd.handlers import HostInfo, build_handler
from logwatchd.templates import Templates, check_templates, sample_for

FILE_SETTINGS = ("password_file", "body_file")


def check(args: argparse.Namespace) -> int:
    config = load(args.config)
    rendered = validate(config)
    for warning in warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    sys.stderr.flush()
    print(
        f"OK: {args.config}: {len(config.sources)} sources, {len(config.rules)} rules, "
        f"{len(config.handlers)} handlers, {rendered} templates rendered, "
        f"{len(config.files)} files read"
    )
    return 0


def validate(config: Config) -> int:
    """Everything ``load`` cannot know: templates against sample alerts, readable files."""
    templates = Templates()
    host = HostInfo.local(config.daemon.host)
    rendered = 0
    for index, source in enumerate(config.sources):
        if source.type == "nats":
            natsconn.require(source.mark, f"sources[{index}]")
    for handler in config.handlers.values():
        _check_files(handler)
        for key_fields in _key_shapes(config, handler.name):
            rendered += check_templates(
                handler.name,
                handler.type,
                handler.settings,
                templates=templates,
                host=host,
                key_fields=key_fields,
                marks=handler.marks,
                mark=handler.mark,
            )
        built = build_handler(handler, templates=templates, host=host)
        if handler.type == "nats":
            _check_subjects(handler, built, _key_shapes(config, handler.name))
    return rendered


def _check_subjects(handler: HandlerConfig, built: Any, shapes: list[tuple[str, ...]]) -> None:
    """A rendered subject must be one subject under logwatchd.> (it depends on the alert,
    so this catches a template that is wrong for every alert, not a hostile key value)."""
    for key_fields in shapes:
        try:
            built.subject(sample_for(key_fields))
        except DeliveryError as exc:
            mark = handler.marks.get("subject", handler.mark)
            raise ConfigError(str(exc), mark, f"handlers.{handler.name}.subject") from None


def _key_shapes(config: Config, handler: str) -> list[tuple[str, ...]]:
    """The group_by of every rule that sends to this handler: each must render."""
    shapes = {rule.group_by for rule in config.rules if handler in rule.handlers}
    return sorted(shapes) or [("ip",)]


def _check_files(handler: HandlerConfig) -> None:
    paths = [(key, handler.settings.get(key)) for key in FILE_SETTINGS]
    smtp = handler.settings.get("smtp") or {}
    paths.append(("smtp.password_file", smtp.get("password_file")))
    paths.extend(
        (f"header_files.{name}", path)
        for name, path in (handler.settings.get("header_files") or {}).items()
    )
    connection = handler.settings.get("connection")
    if isinstance(connection, NatsConnection):
        paths.extend(connection_files(connection))
    for key, path in paths:
        if path and not os.access(path, os.R_OK):
            raise ConfigError(
                f"{path} is not readable",
                handler.marks.get(key, handler.mark),
                f"handlers.{handler.name}.{key}",
            )


def warnings(config: Config) -> list[str]:
    """What is valid but probably not what the admin wants; printed, not fatal, because the
    example config and a fresh host legitimately have commands and logs that appear later."""
    found = []
    for handler in config.handlers.values():
        argv = handler.settings.get("argv") or ()
        if handler.type == "command" and argv and not os.access(argv[0], os.X_OK):
            where = handler.marks.get("argv[0]", handler.mark)
            found.append(f"{where}: handlers.{handler.name}.argv[0]: {argv[0]} is not executable")
    for source in config.sources:
        if source.type == "file" and not any(glob.glob(pattern) for pattern in source.paths):
            found.append(
                f"{source.mark}: sources.{source.id}.paths: no file matches yet "
                f"({', '.join(source.paths)}); it is followed once it appears"
            )
    return found


def connection_files(conn: NatsConnection) -> list[tuple[str, str | None]]:
    """(key, path) of the files a NATS connection reads: credentials and TLS."""
    return [
        ("creds_file", conn.creds_file),
        ("nkey_file", conn.nkey_file),
        ("tls.ca_file", conn.tls_ca_file),
        ("tls.cert_file", conn.tls_cert_file),
        ("tls.key_file", conn.tls_key_file),
    ]

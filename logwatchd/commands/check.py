"""``logwatchd check``: the config is valid, every template renders, every file is readable.

``verify`` is what ``test``, ``explain`` and the daemon run too: it stays on their start-up
path, so what only ``check`` needs (handler classes, the NATS client) is imported where used.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from logwatchd.config import load
from logwatchd.config.durations import format_duration
from logwatchd.config.handler_settings import (
    CommandSettings,
    EmailSettings,
    HandlerSettings,
    NatsConnection,
    NatsSettings,
    NftablesSettings,
    WebhookSettings,
    template_sources,
)
from logwatchd.config.model import (
    Config,
    HandlerConfig,
    Leaf,
    Not,
    ParserConfig,
    Predicate,
    Regex,
)
from logwatchd.errors import ConfigError, DeliveryError
from logwatchd.events import Line
from logwatchd.fields import RuleShape, check_fields, template_shape
from logwatchd.parsers import build_parser
from logwatchd.parsers.timeutil import parse_iso8601
from logwatchd.rules.syntax import nests_quantifiers


def check(args: argparse.Namespace) -> int:
    config = load(args.config)
    verified = validate(config)
    for warning in verified.warnings + warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    sys.stderr.flush()
    print(
        f"OK: {args.config}: {len(config.sources)} sources, {len(config.rules)} rules, "
        f"{len(config.handlers)} handlers, {verified.rendered} templates rendered, "
        f"{len(config.files)} files read"
    )
    print(f"rate limits: {rate_limits(config)}")
    return 0


def rate_limits(config: Config) -> str:
    """The limit each handler delivers under, and which are defaults."""
    limited, unlimited = [], []
    for name, handler in sorted(config.handlers.items()):
        limit = handler.rate_limit
        if limit is None:
            unlimited.append(name)
            continue
        given = "" if "rate_limit" in handler.marks else " (default)"
        limited.append(f"{name} {limit.max} per {format_duration(limit.per)}{given}")
    parts = [", ".join(limited)] if limited else []
    if unlimited:
        parts.append(f"none for {', '.join(unlimited)}")
    return "; ".join(parts)


@dataclass
class Verified:
    rendered: int  # templates rendered against sample alerts
    warnings: list[str]


def verify(config: Config) -> Verified:
    """What the daemon (at start and reload), ``test`` and ``explain`` check too: each
    parser's example line parses (timestamp included), rules and templates name only fields
    their sources can produce, every template renders. Raises ConfigError."""
    for index, source in enumerate(config.sources):
        if source.type == "nats":
            from logwatchd import natsconn  # asyncio and ssl: only for a nats source

            natsconn.require(source.mark, f"sources[{index}]")
    _check_examples(config)
    warnings = check_fields(config)
    return Verified(_render_templates(config), warnings)


def _check_examples(config: Config) -> None:
    for parser_id, parser_config in config.parsers.items():
        example = parser_config.example
        if example is None:
            continue
        mark = parser_config.marks.get("example", parser_config.mark)
        key = f"parsers.{parser_id}.example"
        parser = build_parser(parser_id, config.parsers, timezone=config.daemon.timezone)
        fields = parser.parse(Line("check", example, time.time(), "check:example"))
        if fields is None:
            raise ConfigError("the parser's regex does not match its own example", mark, key)
        failures = getattr(parser, "stamp_failures", None)
        if failures is not None and failures.count:
            raise ConfigError(_stamp_problem(parser_config, failures.last), mark, key)


def _stamp_problem(parser: ParserConfig, stamp: str) -> str:
    fmt = parser.time_format
    if fmt is None:
        return f"the example's timestamp {stamp!r} is not ISO 8601; give a time_format"
    hint = ""
    if parse_iso8601(stamp, UTC) is not None:
        hint = " (it is ISO 8601: leave time_format out)"
    return f"time_format {fmt!r} does not fit the example's timestamp {stamp!r}{hint}"


def validate(config: Config) -> Verified:
    """Everything ``load`` cannot know: ``verify``, and every file a handler reads is
    readable and every handler builds."""
    # smtplib, jinja2...: only the handler types the config uses, and only check builds them
    from logwatchd.handlers import HostInfo, build_handler
    from logwatchd.templates import Templates

    verified = verify(config)
    templates = Templates()
    host = HostInfo.local(config.daemon.host)
    for handler in config.handlers.values():
        _check_files(handler)
        built = build_handler(handler, templates=templates, host=host)
        if handler.type == "nats":
            _check_subjects(handler, built, _key_shapes(config, handler.name))
    return verified


def _render_templates(config: Config) -> int:
    """Every template of every handler, against a sample alert of each rule sending to it."""
    handlers = [h for h in config.handlers.values() if template_sources(h.settings)]
    if not handlers:
        return 0
    # jinja2 (and the host's name): only for a config whose handlers have templates
    from logwatchd.templates import HostInfo, Templates, check_templates

    templates = Templates()
    host = HostInfo.local(config.daemon.host)
    rendered = 0
    for handler in handlers:
        for shape in _rule_shapes(config, handler.name):
            rendered += check_templates(
                handler, templates=templates, host=host, key_fields=("ip",), shape=shape
            )
    return rendered


def _rule_shapes(config: Config, handler: str) -> list[RuleShape | None]:
    """What the alerts of each rule that sends to this handler hold: each must render (the
    rules of one shape once). None: no rule sends to it, render a generic sample."""
    shapes: dict[tuple[object, ...], RuleShape] = {}
    for rule in config.rules:
        if handler in rule.handlers:
            shape = template_shape(config, rule)
            same = (rule.group_by, shape.event_fields, rule.sources)
            shapes.setdefault(same, shape)
    return list(shapes.values()) or [None]


def _check_subjects(handler: HandlerConfig, built: Any, shapes: list[tuple[str, ...]]) -> None:
    """A rendered subject must be one subject under logwatchd.> (it depends on the alert,
    so this catches a template that is wrong for every alert, not a hostile key value)."""
    from logwatchd.templates import sample_for  # jinja2: check builds handlers, test does not

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
    for key, path in _files_read(handler.settings):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(
                f"{path} is not readable",
                handler.marks.get(key, handler.mark),
                f"handlers.{handler.name}.{key}",
            )


def _files_read(settings: HandlerSettings) -> list[tuple[str, str | None]]:
    """(key, path) of the files a handler reads when it sends (a mail's body_file is read,
    and so checked, by the loader)."""
    if isinstance(settings, EmailSettings):
        return [("smtp.password_file", settings.smtp.password_file)]
    if isinstance(settings, WebhookSettings):
        return [(f"header_files.{name}", path) for name, path in settings.header_files.items()]
    if isinstance(settings, NatsSettings):
        return connection_files(settings.connection)
    return []


def warnings(config: Config) -> list[str]:
    """What is valid but probably not what the admin wants; printed, not fatal, because the
    example config and a fresh host legitimately have commands and logs that appear later."""
    found = []
    for handler in config.handlers.values():
        settings = handler.settings
        if isinstance(settings, CommandSettings) and not os.access(settings.argv[0], os.X_OK):
            where = handler.marks.get("argv[0]", handler.mark)
            program = settings.argv[0]
            found.append(f"{where}: handlers.{handler.name}.argv[0]: {program} is not executable")
        if isinstance(settings, NftablesSettings) and not os.access(settings.nft, os.X_OK):
            where = handler.marks.get("nft", handler.mark)
            found.append(
                f"{where}: handlers.{handler.name}: {settings.nft} is not executable (apt-get "
                "install nftables)"
            )
    found.extend(_ban_key_warnings(config))
    for source in config.sources:
        if source.type == "file" and not any(glob.glob(pattern) for pattern in source.paths):
            found.append(
                f"{source.mark}: sources.{source.id}.paths: no file matches yet "
                f"({', '.join(source.paths)}); it is followed once it appears"
            )
    found.extend(_backtracking(config))
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


def _ban_key_warnings(config: Config) -> list[str]:
    """A rule that bans should count per address: with the address outside ``group_by``, one
    threshold counts every address together and the ban goes to whichever came last."""
    found = []
    for rule in config.rules:
        for name in rule.handlers:
            handler = config.handlers.get(name)
            settings = handler.settings if handler else None
            field = settings.field if isinstance(settings, NftablesSettings) else None
            if field and field not in rule.group_by:
                found.append(
                    f"{rule.mark}: rules.{rule.id}: handler {name} bans the address in "
                    f"'{field}', which is not in group_by (add group_by: [{field}])"
                )
    return found


def _backtracking(config: Config) -> list[str]:
    """Regexes shaped to backtrack for minutes on a line that almost matches: the daemon
    gives up on such a line after ``daemon.line_timeout``, but the rule then misses it."""
    found = []
    regexes = [(p.mark, f"parsers.{p.id}.regex", p.regex) for p in config.parsers.values()]
    for rule in config.rules:
        conditions = [rule.match] if rule.match is not None else []
        conditions += [step.match for step in rule.sequence.steps] if rule.sequence else []
        if rule.context is not None:
            conditions += [c for c in (rule.context.learn, rule.context.forget) if c is not None]
        for condition in conditions:
            found_here = _regex_leaves(condition)
            regexes += [(leaf.mark, f"rules.{rule.id}", leaf.pattern) for leaf in found_here]
    for mark, where, pattern in regexes:
        if nests_quantifiers(pattern):
            found.append(
                f"{mark}: {where}: the regex {pattern.pattern!r} nests quantifiers and can "
                "backtrack for minutes on a line that almost matches; such a line is skipped "
                "after daemon.line_timeout (write it so that each character can be matched "
                "one way only, e.g. (a+)+ as a+)"
            )
    return found


def _regex_leaves(pred: Predicate) -> list[Regex]:
    if isinstance(pred, Leaf):
        return [pred] if isinstance(pred, Regex) else []
    if isinstance(pred, Not):
        return _regex_leaves(pred.item)
    return [leaf for item in pred.items for leaf in _regex_leaves(item)]

"""Validation of the fleet's NATS settings: ``type: nats`` handlers and sources.

Both share the connection keys (servers, credentials, TLS files). Subjects and names that
reach the NATS protocol are checked here, so a typo is a config error with a line, never a
protocol error at run time. The one value checked only when it is known is a handler's
rendered subject (it depends on the alert): ``logwatchd.natsconn.subject_problem``.
"""

from __future__ import annotations

import re
import urllib.parse

from logwatchd.config import nodes
from logwatchd.config.handler_settings import NATS_STREAM, NatsConnection, NatsSettings
from logwatchd.config.model import NatsSourceConfig
from logwatchd.config.nodes import Node, template
from logwatchd.errors import Mark

CONNECTION_KEYS = ("servers", "creds_file", "nkey_file", "tls")
TLS_KEYS = ("ca_file", "cert_file", "key_file")
HANDLER_KEYS = (*CONNECTION_KEYS, "stream", "subject", "duplicate_window", "max_age", "replicas")
SOURCE_KEYS = (
    "id", "type", "parser", "start_at", *CONNECTION_KEYS, "stream", "subjects", "durable", "batch",
    "ack_wait",
)  # fmt: skip

DEFAULT_SUBJECT = "logwatchd.alerts.{{ alert.host }}.{{ alert.rule }}"
SCHEMES = ("nats", "tls")

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # stream and consumer names
_TOKEN_RE = re.compile(r"[^\s.*>]+|\*|>")


def connection(entries: nodes.Mapping, marks: dict[str, Mark] | None = None) -> NatsConnection:
    """The connection keys; with ``marks``, their marks are recorded for later checks."""
    values: dict[str, object] = {}
    if (item := entries.get("servers")) is not None:
        values["servers"] = tuple(_servers(item))
    for key in ("creds_file", "nkey_file"):
        if (item := entries.get(key)) is not None:
            values[key] = nodes.path(item)
    if (item := entries.get("creds_file")) is not None and "nkey_file" in entries:
        raise item.error("give either 'creds_file' or 'nkey_file', not both")
    if (tls := entries.get("tls")) is not None:
        tls_entries = nodes.mapping(tls, TLS_KEYS)
        for key in TLS_KEYS:
            if (item := tls_entries.get(key)) is not None:
                values[f"tls_{key}"] = nodes.path(item)
                if marks is not None:
                    marks[f"tls.{key}"] = item.mark
        if ("cert_file" in tls_entries) != ("key_file" in tls_entries):
            raise tls.error("a client certificate needs both 'cert_file' and 'key_file'")
    return NatsConnection(**values)  # type: ignore[arg-type]


def _servers(node: Node) -> list[str]:
    values = nodes.strings(node)
    members = node.value if isinstance(node.value, list) else [node]
    for text, member in zip(values, members, strict=True):
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in SCHEMES or not parts.hostname or parts.path not in ("", "/"):
            raise member.error(f'"{text}" is not a NATS server URL (nats://host:4222)')
        if parts.username or parts.password:
            raise member.error(
                "put no user or password in the URL (it would be logged): "
                "use creds_file or nkey_file"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise member.error(f'"{text}" has a bad port') from None
    return values


def stream_name(node: Node) -> str:
    name = nodes.string(node)
    if not _NAME_RE.fullmatch(name):
        raise node.error(f"\"{name}\" is not a stream name (letters, digits, '-', '_')")
    return name


def handler_settings(
    entries: nodes.Mapping, marks: dict[str, Mark], timeout: float
) -> NatsSettings:
    """``type: nats`` handler keys."""
    del timeout
    conn = connection(entries, marks)
    given = entries.given(
        {
            "stream": stream_name,
            "subject": template,
            "duplicate_window": lambda node: nodes.duration(node, positive=True),
            "max_age": nodes.duration,
            "replicas": lambda node: nodes.integer(node, minimum=1, maximum=5),
        }
    )
    return NatsSettings(given.pop("subject", DEFAULT_SUBJECT), conn, **given)


def source_settings(entries: nodes.Mapping, source_id: str, host: str) -> NatsSourceConfig:
    """``type: nats`` source keys. ``durable`` defaults to one name per source and host, so
    every host that follows the same subjects gets every message."""
    item = entries.get("stream")
    stream = stream_name(item) if item else NATS_STREAM
    subjects_node = entries.need("subjects")
    subjects = nodes.strings(subjects_node)
    members = subjects_node.value if isinstance(subjects_node.value, list) else [subjects_node]
    for subject, member in zip(subjects, members, strict=True):
        _filter_subject(member, subject)
    if len(set(subjects)) != len(subjects):
        raise subjects_node.error("a subject is given twice")
    item = entries.get("durable")
    durable = nodes.string(item) if item else re.sub(r"[^A-Za-z0-9_-]", "_", f"{source_id}-{host}")
    if item is not None and not _NAME_RE.fullmatch(durable):
        raise item.error(
            f"\"{durable}\" is not a consumer name (letters, digits, '-', '_', at most 64)"
        )
    item = entries.get("batch")
    batch = nodes.integer(item, minimum=1, maximum=10_000) if item else 256
    item = entries.get("ack_wait")
    ack_wait = nodes.duration(item, positive=True) if item else 30.0
    return NatsSourceConfig(
        connection(entries), stream, tuple(subjects), durable[:64], batch, ack_wait
    )


def _filter_subject(node: Node, subject: str) -> None:
    tokens = subject.split(".")
    if tokens[0] != "logwatchd" or len(tokens) < 2:
        raise node.error(f'"{subject}" is not under logwatchd.> (the stream\'s subjects)')
    for index, part in enumerate(tokens):
        if not _TOKEN_RE.fullmatch(part) or (part == ">" and index != len(tokens) - 1):
            raise node.error(
                f'"{subject}" is not a subject filter (tokens separated by dots, no spaces; '
                "'*' for one token, '>' only at the end)"
            )

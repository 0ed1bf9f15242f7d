"""Validation of ``handlers:`` into ``HandlerConfig`` (SPEC section 4).

Type-specific values go into ``HandlerConfig.settings`` and the mark of every key given in
YAML into ``HandlerConfig.marks`` (``"subject"``, ``"to[0]"``, ``"smtp.host"``, ...), so the
checks that run later (template rendering, file access) can still point at a line.
Templates are only parsed here, never rendered: rendering is ``logwatchd check``'s job.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from email.utils import parseaddr
from typing import Any

import jinja2

from logwatchd.config import nodes
from logwatchd.config.loader import read_file
from logwatchd.config.model import (
    LOG_HANDLER,
    BatchConfig,
    HandlerConfig,
    RateLimit,
    RetryConfig,
)
from logwatchd.config.nodes import Node
from logwatchd.errors import ConfigError, Mark

COMMON_KEYS = ("type", "timeout", "retry", "rate_limit")
TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "email": ("smtp", "from", "to", "cc", "subject", "body", "body_file"),
    "command": ("argv", "stdin", "concurrency", "env"),
    "webhook": ("url", "method", "headers", "header_files", "body", "format"),
    "file": ("path", "mode"),
    "log": (),
}
BATCHING_TYPES = ("email", "webhook")
SMTP_KEYS = (
    "host",
    "port",
    "tls",
    "username",
    "password_file",
    "credential",
    "ca_file",
    "verify",
    "timeout",
)
TEMPLATE_MARKERS = ("{{", "{%", "{#")

DEFAULT_SUBJECT = (
    "[{{ alert.severity }}] {{ alert.rule }}"
    "{% for name, value in alert.key | dictsort %} {{ name }}={{ value }}{% endfor %}"
    " on {{ host.name }}"
)
DEFAULT_BODY = """\
Rule:        {{ alert.rule }} ({{ alert.severity }})
Host:        {{ alert.host }}
Key:         {% for name, value in alert.key | dictsort %}{{ name }}={{ value }} {% endfor %}
Count:       {{ alert.count }}{% if alert.suppressed %} (+{{ alert.suppressed }} during cooldown)\
{% endif %}
First seen:  {{ alert.first_seen }}
Last seen:   {{ alert.last_seen }}
Source:      {{ alert.event.source }}{% if alert.event.path %} ({{ alert.event.path }}){% endif %}

Sample lines:
{% for line in alert.events %}  {{ line }}
{% endfor %}
-- logwatchd on {{ host.fqdn }}, alert {{ alert.id }}
"""

_ADDRESS_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARSE_ONLY = jinja2.Environment(autoescape=False)  # noqa: S701 (parsed, never rendered here)


class _Settings:
    """Collects typed values and the marks of the keys they came from."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.marks: dict[str, Mark] = {}

    def put(self, key: str, value: Any, node: Node | None) -> None:
        self.values[key] = value
        if node is not None:
            self.marks[key] = node.mark


def handlers_section(entries: list[tuple[str, Node]]) -> dict[str, HandlerConfig]:
    """Every declared handler, plus ``log`` which always exists."""
    handlers = {name: handler(name, node) for name, node in entries}
    handlers.setdefault("log", LOG_HANDLER)
    return handlers


def handler(name: str, node: Node) -> HandlerConfig:
    if not isinstance(node.value, dict):
        raise nodes.wrong_type(node, "a mapping (one handler)")
    kind = nodes.choice(nodes.Mapping(node, node.value).need("type"), tuple(TYPE_KEYS))
    if name == "log" and kind != "log":
        raise node.error("the name 'log' is reserved for type: log")
    batch = node.value.get("batch")
    if batch is not None and kind not in BATCHING_TYPES:
        raise batch.error(f"batch applies to {' and '.join(BATCHING_TYPES)} handlers only")
    allowed = COMMON_KEYS + (("batch",) if kind in BATCHING_TYPES else ()) + TYPE_KEYS[kind]
    entries = nodes.mapping(node, allowed, required=("type",))
    common = _common(entries)
    settings = _Settings()
    settings.marks.update((key, entry.mark) for key, entry in entries.entries.items())
    _TYPE_READERS[kind](entries, settings, common.get("timeout", 30.0))
    return HandlerConfig(
        name=name,
        type=kind,  # type: ignore[arg-type]
        settings=settings.values,
        marks=settings.marks,
        mark=node.mark,
        **common,
    )


def _common(entries: nodes.Mapping) -> dict[str, Any]:
    """The keys every handler type takes, as HandlerConfig keyword arguments."""
    common: dict[str, Any] = {}
    if (item := entries.get("timeout")) is not None:
        common["timeout"] = nodes.duration(item, positive=True)
    if (item := entries.get("retry")) is not None:
        common["retry"] = _retry(item)
    if (item := entries.get("rate_limit")) is not None:
        common["rate_limit"] = _rate_limit(item)
    if (item := entries.get("batch")) is not None:
        common["batch"] = _batch(item)
    return common


def _retry(node: Node) -> RetryConfig:
    entries = nodes.mapping(node, ("max_attempts", "backoff", "max_backoff"))
    default = RetryConfig()
    values = {
        "max_attempts": default.max_attempts,
        "backoff": default.backoff,
        "max_backoff": default.max_backoff,
    }
    if (item := entries.get("max_attempts")) is not None:
        values["max_attempts"] = nodes.integer(item, minimum=1)
    if (item := entries.get("backoff")) is not None:
        values["backoff"] = nodes.duration(item, positive=True)
    if (item := entries.get("max_backoff")) is not None:
        values["max_backoff"] = nodes.duration(item, positive=True)
    if values["max_backoff"] < values["backoff"]:
        raise node.error("max_backoff must not be shorter than backoff")
    return RetryConfig(**values)  # type: ignore[arg-type]


def _rate_limit(node: Node) -> RateLimit:
    entries = nodes.mapping(node, ("max", "per"), required=("max", "per"))
    return RateLimit(
        nodes.integer(entries.need("max"), minimum=1),
        nodes.duration(entries.need("per"), positive=True),
    )


def _batch(node: Node) -> BatchConfig:
    entries = nodes.mapping(node, ("window", "max"), required=("window",))
    window = nodes.duration(entries.need("window"), positive=True)
    if (item := entries.get("max")) is not None:
        return BatchConfig(window, nodes.integer(item, minimum=1))
    return BatchConfig(window)


# --- templates and addresses --------------------------------------------------------------


def template(node: Node) -> str:
    """A Jinja2 template string, syntax-checked (an error names the template's own line)."""
    text = nodes.string(node, empty_ok=True)
    first_line = node.value_line + 1 if node.block else node.value_line
    check_template_syntax(text, node.mark.file, first_line, node.path)
    return text


def check_template_syntax(text: str, file: str, first_line: int, key: str) -> None:
    try:
        _PARSE_ONLY.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise ConfigError(f"template syntax error: {exc.message}", Mark(file, line), key) from None


def email_address(node: Node) -> str:
    """A plain address (``ops@example.com``): smtplib would silently rewrite a bad one."""
    text = nodes.string(node)
    if (
        not text.isascii()
        or not _ADDRESS_RE.fullmatch(text)
        or ".." in text
        or text.startswith(".")
        or ".@" in text
        or parseaddr(text) != ("", text)
    ):
        shown = text.encode("unicode_escape").decode("ascii")
        raise node.error(
            f'"{shown}" is not a valid e-mail address (plain addresses only, like ops@example.com)'
        )
    return text


def _addresses(node: Node, key: str, settings: _Settings) -> tuple[str, ...]:
    nodes.strings(node)  # type check: a string or a non-empty list of strings
    members = node.value if isinstance(node.value, list) else [node]
    for index, member in enumerate(members):
        settings.marks[f"{key}[{index}]"] = member.mark
    return tuple(email_address(member) for member in members)


# --- per type -----------------------------------------------------------------------------


def _email(entries: nodes.Mapping, settings: _Settings, timeout: float) -> None:
    settings.put("smtp", _smtp(entries.get("smtp"), settings, timeout), entries.get("smtp"))
    sender = entries.get("from")
    settings.put("from", email_address(sender) if sender else None, sender)
    settings.put("to", _addresses(entries.need("to"), "to", settings), entries.get("to"))
    if (item := entries.get("cc")) is not None:
        settings.put("cc", _addresses(item, "cc", settings), item)
    else:
        settings.put("cc", (), None)
    subject = entries.get("subject")
    settings.put("subject", template(subject) if subject else DEFAULT_SUBJECT, subject)
    body, body_file = entries.get("body"), entries.get("body_file")
    if body is not None and body_file is not None:
        raise body_file.error("give either 'body' or 'body_file', not both")
    if body_file is not None:
        path = nodes.path(body_file)
        check_template_syntax(
            read_file(path, body_file.mark, body_file.path), path, 1, body_file.path
        )
        settings.put("body", None, None)
        settings.put("body_file", path, body_file)
    else:
        settings.put("body", template(body) if body else DEFAULT_BODY, body)
        settings.put("body_file", None, None)


def _smtp(node: Node | None, settings: _Settings, timeout: float) -> dict[str, Any]:
    smtp: dict[str, Any] = {
        "host": "localhost",
        "tls": "none",
        "username": None,
        "password_file": None,
        "credential": None,
        "ca_file": None,
        "verify": True,
        "timeout": timeout,
    }
    if node is None:
        smtp["port"] = 25
        return smtp
    entries = nodes.mapping(node, SMTP_KEYS)
    for key in entries:
        settings.marks[f"smtp.{key}"] = entries.entries[key].mark
    if (item := entries.get("host")) is not None:
        smtp["host"] = _hostname(item)
    if (item := entries.get("tls")) is not None:
        smtp["tls"] = nodes.choice(item, ("none", "starttls", "tls"))
    port = entries.get("port")
    default_port = 465 if smtp["tls"] == "tls" else 25
    smtp["port"] = nodes.integer(port, minimum=1, maximum=65535) if port else default_port
    for key in ("username", "credential"):
        if (item := entries.get(key)) is not None:
            smtp[key] = nodes.string(item)
    for key in ("password_file", "ca_file"):
        if (item := entries.get(key)) is not None:
            smtp[key] = nodes.path(item)
    if smtp["password_file"] and not smtp["username"]:
        raise entries.need("password_file").error("password_file needs a username")
    if (item := entries.get("verify")) is not None:
        smtp["verify"] = nodes.boolean(item)
    if (item := entries.get("timeout")) is not None:
        smtp["timeout"] = nodes.duration(item, positive=True)
    return smtp


def _hostname(node: Node) -> str:
    text = nodes.string(node)
    if any(char.isspace() or char in "/@" for char in text):
        raise node.error(f'"{text}" is not a host name')
    return text


def _command(entries: nodes.Mapping, settings: _Settings, timeout: float) -> None:
    del timeout
    argv_node = entries.need("argv")
    members = nodes.items(argv_node, "a list of strings (the program and its arguments)")
    if not members:
        raise argv_node.error("must name at least the program to run")
    program = nodes.string(members[0])
    if any(marker in program for marker in TEMPLATE_MARKERS):
        raise members[0].error("argv[0] is the program path and cannot be a template")
    if not os.path.isabs(program):
        raise members[0].error(f'"{program}" must be an absolute path (no shell, no $PATH)')
    argv = [program]
    for index, member in enumerate(members[1:], start=1):
        settings.marks[f"argv[{index}]"] = member.mark
        nodes.scalar_text(member)
        member_text = template(member) if isinstance(member.value, str) else str(member.value)
        argv.append(member_text)
    settings.marks["argv[0]"] = members[0].mark
    settings.put("argv", tuple(argv), argv_node)
    stdin = entries.get("stdin")
    settings.put("stdin", nodes.choice(stdin, ("none", "json")) if stdin else "none", stdin)
    item = entries.get("concurrency")
    settings.put("concurrency", nodes.integer(item, minimum=1, maximum=256) if item else 4, item)
    settings.put("env", _env(entries.get("env"), settings), entries.get("env"))


def _env(node: Node | None, settings: _Settings) -> dict[str, str]:
    if node is None:
        return {}
    if not isinstance(node.value, dict):
        raise nodes.wrong_type(node, "a mapping of variable name to value")
    env: dict[str, str] = {}
    for name, value in node.value.items():
        if not _ENV_NAME_RE.fullmatch(name):
            raise value.error(f"'{name}' is not a valid environment variable name")
        if name.startswith("LOGWATCHD_"):
            raise value.error(f"'{name}': LOGWATCHD_* variables are set by logwatchd itself")
        env[name] = nodes.scalar_text(value)
        settings.marks[f"env.{name}"] = value.mark
    return env


def _webhook(entries: nodes.Mapping, settings: _Settings, timeout: float) -> None:
    del timeout
    url = entries.need("url")
    settings.put("url", _url(url), url)
    method = entries.get("method")
    settings.put(
        "method", nodes.choice(method, ("POST", "PUT", "PATCH")) if method else "POST", method
    )
    fmt = entries.get("format")
    settings.put("format", nodes.choice(fmt, ("json", "alertmanager")) if fmt else "json", fmt)
    headers = _header_map(entries.get("headers"), "headers", settings, template)
    files = _header_map(entries.get("header_files"), "header_files", settings, nodes.path)
    for name in headers.keys() & files.keys():
        raise (
            entries.need("header_files")
            .value[name]
            .error(f"header '{name}' is given in both headers and header_files")
        )
    settings.put("headers", headers, entries.get("headers"))
    settings.put("header_files", files, entries.get("header_files"))
    settings.values["headers_files"] = files  # the spelling model.py documents
    body = entries.get("body")
    if body is not None and settings.values["format"] == "alertmanager":
        raise body.error("format: alertmanager builds its own body; remove 'body'")
    settings.put("body", template(body) if body else None, body)


def _url(node: Node) -> str:
    text = nodes.string(node)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise node.error(f'"{text}" is not an http:// or https:// URL')
    if any(char.isspace() for char in text) or any(m in text for m in TEMPLATE_MARKERS):
        raise node.error("the url cannot contain spaces or template syntax")
    return text


def _header_map(node: Node | None, key: str, settings: _Settings, read: Any) -> dict[str, str]:
    if node is None:
        return {}
    if not isinstance(node.value, dict):
        raise nodes.wrong_type(node, "a mapping of header name to value")
    result: dict[str, str] = {}
    for name, value in node.value.items():
        if not _HEADER_NAME_RE.fullmatch(name):
            raise value.error(f"'{name}' is not a valid HTTP header name")
        result[name] = read(value)
        settings.marks[f"{key}.{name}"] = value.mark
    return result


def _file(entries: nodes.Mapping, settings: _Settings, timeout: float) -> None:
    del timeout
    path = entries.need("path")
    settings.put("path", nodes.path(path), path)
    mode = entries.get("mode")
    settings.put("mode", _mode(mode) if mode else 0o640, mode)


def _mode(node: Node) -> int:
    """Permission bits, digits read as octal as chmod reads them: 640, 0640 and '0o640' agree."""
    value = node.value
    if isinstance(value, int | str) and not isinstance(value, bool) and node.text is not None:
        digits = node.text.strip().removeprefix("0o").lstrip("0") or "0"
        if re.fullmatch(r"[0-7]{1,4}", digits):
            return int(digits, 8)
    raise node.error(f"{value!r} is not a file mode (write it like 0640)")


def _log(entries: nodes.Mapping, settings: _Settings, timeout: float) -> None:
    del entries, settings, timeout


_TYPE_READERS = {
    "email": _email,
    "command": _command,
    "webhook": _webhook,
    "file": _file,
    "log": _log,
}

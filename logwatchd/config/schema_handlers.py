"""Validation of ``handlers:`` into ``HandlerConfig`` (README: "Handlers").

Type-specific values go into ``HandlerConfig.settings`` (one dataclass per type: a key left
out takes the dataclass's default) and the mark of every key given in YAML into
``HandlerConfig.marks`` (``"subject"``, ``"to[0]"``, ``"smtp.host"``, ...), so the checks that
run later (template rendering, file access) can still point at a line.
Templates are only parsed here, never rendered: rendering is ``logwatchd check``'s job.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from logwatchd.config import nodes
from logwatchd.config.handler_settings import (
    CommandSettings,
    FileSettings,
    HandlerSettings,
    LogSettings,
    Undo,
    WebhookSettings,
)
from logwatchd.config.model import LOG_HANDLER, BatchConfig, HandlerConfig, RateLimit, RetryConfig
from logwatchd.config.nodes import Node, template
from logwatchd.config.schema_actions import NFTABLES_KEYS, nftables_settings
from logwatchd.config.schema_email import email_settings
from logwatchd.config.schema_nats import HANDLER_KEYS as NATS_KEYS
from logwatchd.config.schema_nats import handler_settings as nats_settings
from logwatchd.errors import Mark

COMMON_KEYS = ("type", "timeout", "retry", "rate_limit")
TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "email": ("smtp", "from", "to", "cc", "subject", "body", "body_file"),
    "command": ("argv", "stdin", "concurrency", "env", "undo"),
    "webhook": ("url", "method", "headers", "header_files", "body", "format"),
    "file": ("path", "mode"),
    "log": (),
    "nats": NATS_KEYS,
    "nftables": NFTABLES_KEYS,
}
BATCHING_TYPES = ("email", "webhook")
# A flood of log lines must not become a flood of mails or commands: the limits that apply
# when a handler names none (``rate_limit: none`` opts out). Local handlers (file, log) have none.
DEFAULT_RATE_LIMITS = {
    "email": RateLimit(20, 3600.0),  # the overflow goes out as digests
    "webhook": RateLimit(20, 3600.0),
    "command": RateLimit(60, 60.0),  # the overflow waits in the outbox, one run per free slot
}
TEMPLATE_MARKERS = ("{{", "{%", "{#")
# A NATS outage is routine for a fleet: keep retrying for about a week, at most a minute apart.
NATS_RETRY = RetryConfig(max_attempts=10_080, backoff=1.0, max_backoff=60.0)

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    common = _common(entries, kind)
    if kind == "nats":
        common.setdefault("retry", NATS_RETRY)
    marks = {key: entry.mark for key, entry in entries.entries.items()}
    settings = _TYPE_READERS[kind](entries, marks, common.get("timeout", 30.0))
    return HandlerConfig(
        name=name,
        type=kind,  # type: ignore[arg-type]
        settings=settings,
        marks=marks,
        mark=node.mark,
        **common,
    )


def _common(entries: nodes.Mapping, kind: str) -> dict[str, Any]:
    """The keys every handler type takes, as HandlerConfig keyword arguments."""
    common: dict[str, Any] = {}
    if (item := entries.get("timeout")) is not None:
        common["timeout"] = nodes.duration(item, positive=True)
    if (item := entries.get("retry")) is not None:
        common["retry"] = _retry(item)
    if (item := entries.get("rate_limit")) is not None:
        common["rate_limit"] = _rate_limit(item)
    elif kind in DEFAULT_RATE_LIMITS:
        common["rate_limit"] = DEFAULT_RATE_LIMITS[kind]
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


def _rate_limit(node: Node) -> RateLimit | None:
    if node.value == "none":
        return None
    if not isinstance(node.value, dict):
        raise nodes.wrong_type(node, "{max: N, per: DURATION} or none")
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


# --- per type -----------------------------------------------------------------------------


def _command(entries: nodes.Mapping, marks: dict[str, Mark], timeout: float) -> CommandSettings:
    del timeout
    argv = argv_setting(entries.need("argv"), marks, "argv")
    return CommandSettings(
        argv,
        **entries.given(
            {
                "undo": lambda node: _undo(node, marks),
                "stdin": lambda node: nodes.choice(node, ("none", "json")),
                "concurrency": lambda node: nodes.integer(node, minimum=1, maximum=256),
                "env": lambda node: _env(node, marks),
            }
        ),
    )


def argv_setting(argv_node: Node, marks: dict[str, Mark], key: str) -> tuple[str, ...]:
    """A program and its arguments: argv[0] an absolute path, the rest templates."""
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
        marks[f"{key}[{index}]"] = member.mark
        nodes.scalar_text(member)
        member_text = template(member) if isinstance(member.value, str) else str(member.value)
        argv.append(member_text)
    marks[f"{key}[0]"] = members[0].mark
    return tuple(argv)


def _undo(node: Node, marks: dict[str, Mark]) -> Undo:
    """``undo: {argv, after}``: the command that reverses the action, run ``after`` later."""
    entries = nodes.mapping(node, ("argv", "after"), required=("argv", "after"))
    return Undo(
        argv_setting(entries.need("argv"), marks, "undo.argv"),
        nodes.duration(entries.need("after"), positive=True),
    )


def _env(node: Node, marks: dict[str, Mark]) -> dict[str, str]:
    return _named_values(
        node, "env", marks, nodes.scalar_text, names="variable name", problem=_env_problem
    )


def _env_problem(name: str) -> str | None:
    if not _ENV_NAME_RE.fullmatch(name):
        return f"'{name}' is not a valid environment variable name"
    if name.startswith("LOGWATCHD_"):
        return f"'{name}': LOGWATCHD_* variables are set by logwatchd itself"
    return None


def _named_values(
    node: Node,
    key: str,
    marks: dict[str, Mark],
    read: Callable[[Node], str],
    *,
    names: str,
    problem: Callable[[str], str | None],
) -> dict[str, str]:
    """A mapping of names to values (``env``, ``headers``): each name checked by ``problem``,
    each value read, and its mark kept as ``key.name`` for the errors found later."""
    if not isinstance(node.value, dict):
        raise nodes.wrong_type(node, f"a mapping of {names} to value")
    result: dict[str, str] = {}
    for name, value in node.value.items():
        wrong = problem(name)
        if wrong is not None:
            raise value.error(wrong)
        result[name] = read(value)
        marks[f"{key}.{name}"] = value.mark
    return result


def _webhook(entries: nodes.Mapping, marks: dict[str, Mark], timeout: float) -> WebhookSettings:
    del timeout
    url = _url(entries.need("url"))
    given = entries.given(
        {
            "method": _method,
            "format": lambda node: nodes.choice(node, ("json", "alertmanager")),
        }
    )
    headers = _header_map(entries.get("headers"), "headers", marks, template)
    files = _header_map(entries.get("header_files"), "header_files", marks, nodes.path)
    for name in headers.keys() & files.keys():
        raise (
            entries.need("header_files")
            .value[name]
            .error(f"header '{name}' is given in both headers and header_files")
        )
    body = entries.get("body")
    if body is not None and given.get("format") == "alertmanager":
        raise body.error("format: alertmanager builds its own body; remove 'body'")
    return WebhookSettings(
        url,
        headers=headers,
        header_files=files,
        body=template(body) if body else None,
        **given,
    )


def _method(node: Node) -> str:
    allowed = ("POST", "PUT", "PATCH")
    if isinstance(node.value, str) and node.value.upper() in allowed:
        return node.value.upper()
    return nodes.choice(node, allowed)  # raises, naming the allowed methods


def _url(node: Node) -> str:
    text = nodes.string(node)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise node.error(f'"{text}" is not an http:// or https:// URL')
    if any(char.isspace() for char in text) or any(m in text for m in TEMPLATE_MARKERS):
        raise node.error("the url cannot contain spaces or template syntax")
    return text


def _header_map(
    node: Node | None, key: str, marks: dict[str, Mark], read: Callable[[Node], str]
) -> dict[str, str]:
    if node is None:
        return {}
    return _named_values(node, key, marks, read, names="header name", problem=_header_problem)


def _header_problem(name: str) -> str | None:
    if _HEADER_NAME_RE.fullmatch(name):
        return None
    return f"'{name}' is not a valid HTTP header name"


def _file(entries: nodes.Mapping, marks: dict[str, Mark], timeout: float) -> FileSettings:
    del marks, timeout
    return FileSettings(nodes.path(entries.need("path")), **entries.given({"mode": _mode}))


def _mode(node: Node) -> int:
    """Permission bits, digits read as octal as chmod reads them: 640, 0640 and '0o640' agree."""
    value = node.value
    if isinstance(value, int | str) and not isinstance(value, bool) and node.text is not None:
        digits = node.text.strip().removeprefix("0o").lstrip("0") or "0"
        if re.fullmatch(r"[0-7]{1,4}", digits):
            return int(digits, 8)
    raise node.error(f"{value!r} is not a file mode (write it like 0640)")


def _log(entries: nodes.Mapping, marks: dict[str, Mark], timeout: float) -> LogSettings:
    del entries, marks, timeout
    return LogSettings()


_TYPE_READERS: dict[str, Callable[[nodes.Mapping, dict[str, Mark], float], HandlerSettings]] = {
    "email": email_settings,
    "command": _command,
    "webhook": _webhook,
    "file": _file,
    "log": _log,
    "nats": nats_settings,
    "nftables": nftables_settings,
}

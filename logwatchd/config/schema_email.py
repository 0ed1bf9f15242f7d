"""Validation of ``type: email`` handlers: SMTP settings, addresses, subject and body."""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Any

from logwatchd.config import nodes
from logwatchd.config.loader import read_file
from logwatchd.config.nodes import Node, Settings, check_template_syntax, template

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

DEFAULT_SUBJECT = (
    "[{{ alert.severity }}] {{ alert.rule }}"
    "{% for name, value in alert.key | dictsort %} {{ name }}={{ value }}{% endfor %}"
    " on {{ host.name }}"
)
DEFAULT_BODY = """\
Rule:        {{ alert.rule }} ({{ alert.severity }})
Host:        {{ alert.host }}
Key:         {% for name, value in alert.key | dictsort %}{{ name }}={{ value }}\
{{ " " if not loop.last else "" }}{% else %}(none){% endfor %}
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


def addresses(node: Node, key: str, settings: Settings) -> tuple[str, ...]:
    nodes.strings(node)  # type check: a string or a non-empty list of strings
    members = node.value if isinstance(node.value, list) else [node]
    for index, member in enumerate(members):
        settings.marks[f"{key}[{index}]"] = member.mark
    return tuple(email_address(member) for member in members)


def email_settings(entries: nodes.Mapping, settings: Settings, timeout: float) -> None:
    settings.put("smtp", _smtp(entries.get("smtp"), settings, timeout), entries.get("smtp"))
    sender = entries.get("from")
    settings.put("from", email_address(sender) if sender else None, sender)
    settings.put("to", addresses(entries.need("to"), "to", settings), entries.get("to"))
    if (item := entries.get("cc")) is not None:
        settings.put("cc", addresses(item, "cc", settings), item)
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


def _smtp(node: Node | None, settings: Settings, timeout: float) -> dict[str, Any]:
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
            smtp[key] = _token(item)
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


def _token(node: Node) -> str:
    """A user or credential name: it goes on the SMTP wire, so no spaces or control chars."""
    text = nodes.string(node)
    if any(char.isspace() or not char.isprintable() for char in text):
        raise node.error(f'"{text.encode("unicode_escape").decode()}" contains spaces or controls')
    return text


def _hostname(node: Node) -> str:
    text = nodes.string(node)
    if any(char.isspace() or char in "/@" for char in text):
        raise node.error(f'"{text}" is not a host name')
    return text

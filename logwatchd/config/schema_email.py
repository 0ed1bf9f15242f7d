"""Validation of ``type: email`` handlers: SMTP settings, addresses, subject and body."""

from __future__ import annotations

import re

from logwatchd.config import nodes
from logwatchd.config.handler_settings import EmailSettings, SmtpSettings
from logwatchd.config.loader import read_file
from logwatchd.config.nodes import Node, check_template_syntax, template
from logwatchd.errors import Mark

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
    from email.utils import parseaddr  # the e-mail package only for a config that sends mail

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


def addresses(node: Node, key: str, marks: dict[str, Mark]) -> tuple[str, ...]:
    nodes.strings(node)  # type check: a string or a non-empty list of strings
    members = node.value if isinstance(node.value, list) else [node]
    for index, member in enumerate(members):
        marks[f"{key}[{index}]"] = member.mark
    return tuple(email_address(member) for member in members)


def email_settings(entries: nodes.Mapping, marks: dict[str, Mark], timeout: float) -> EmailSettings:
    smtp = _smtp(entries.get("smtp"), marks, timeout)
    sender = entries.get("from")
    sender_address = email_address(sender) if sender else None
    to = addresses(entries.need("to"), "to", marks)
    cc = addresses(item, "cc", marks) if (item := entries.get("cc")) is not None else ()
    subject = entries.get("subject")
    body, body_file = _body(entries)
    return EmailSettings(
        to,
        template(subject) if subject else DEFAULT_SUBJECT,
        body,
        sender=sender_address,
        cc=cc,
        body_file=body_file,
        smtp=smtp,
    )


def _body(entries: nodes.Mapping) -> tuple[str, str | None]:
    """The body template and the file it was read from (None: written in the config)."""
    body, body_file = entries.get("body"), entries.get("body_file")
    if body is not None and body_file is not None:
        raise body_file.error("give either 'body' or 'body_file', not both")
    if body_file is None:
        return (template(body) if body else DEFAULT_BODY), None
    path = nodes.path(body_file)
    text = read_file(path, body_file.mark, body_file.path)
    check_template_syntax(text, path, 1, body_file.path)
    return text, path


def _smtp(node: Node | None, marks: dict[str, Mark], timeout: float) -> SmtpSettings:
    if node is None:
        return SmtpSettings(timeout=timeout)
    entries = nodes.mapping(node, SMTP_KEYS)
    for key in entries:
        marks[f"smtp.{key}"] = entries.entries[key].mark
    given = entries.given(
        {
            "host": _hostname,
            "tls": lambda item: nodes.choice(item, ("none", "starttls", "tls")),
            "port": lambda item: nodes.integer(item, minimum=1, maximum=65535),
            "username": _token,
            "credential": _token,
            "password_file": nodes.path,
            "ca_file": nodes.path,
            "verify": nodes.boolean,
            "timeout": lambda item: nodes.duration(item, positive=True),
        }
    )
    if "password_file" in given and "username" not in given:
        raise entries.need("password_file").error("password_file needs a username")
    if given.get("tls") == "tls":
        given.setdefault("port", 465)
    given.setdefault("timeout", timeout)
    return SmtpSettings(**given)


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

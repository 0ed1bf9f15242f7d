"""Each handler type's settings, as the schema makes them: one frozen dataclass per type.

``HandlerConfig.settings`` (``model.py``) holds one of these; a handler takes its own with
``handlers.settings_of(cfg, EmailSettings)`` and trusts it: the schema
(``schema_handlers.py``, ``schema_email.py``, ``schema_actions.py``, ``schema_nats.py``)
checked every value. A key left out of the YAML takes the dataclass's default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Increase:
    """A key acted on again within ``max`` of its last action's end gets ``factor`` x the
    last duration (at most ``max``)."""

    factor: float
    max: float


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    tls: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password_file: str | None = None
    credential: str | None = None  # under $CREDENTIALS_DIRECTORY; None: the handler name
    ca_file: str | None = None
    verify: bool = True
    timeout: float = 30.0  # the handler's timeout unless smtp.timeout is given


@dataclass(frozen=True)
class EmailSettings:
    to: tuple[str, ...]
    subject: str  # a template
    body: str  # a template: ``body``, or the text of ``body_file``
    sender: str | None = None  # ``from``; None: logwatchd@ the host's FQDN
    cc: tuple[str, ...] = ()
    body_file: str | None = None  # the file ``body`` was read from
    smtp: SmtpSettings = SmtpSettings()


@dataclass(frozen=True)
class Undo:
    """The command that reverses a command handler's action, run ``after`` seconds later."""

    argv: tuple[str, ...]  # like CommandSettings.argv
    after: float


@dataclass(frozen=True)
class CommandSettings:
    argv: tuple[str, ...]  # argv[0] an absolute path (never a template), the rest templates
    stdin: Literal["none", "json"] = "none"
    concurrency: int = 4
    env: dict[str, str] = field(default_factory=dict)  # static extras
    undo: Undo | None = None


@dataclass(frozen=True)
class WebhookSettings:
    url: str  # http:// or https://, never a template
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    format: Literal["json", "alertmanager"] = "json"
    headers: dict[str, str] = field(default_factory=dict)  # header name -> template
    header_files: dict[str, str] = field(default_factory=dict)  # header name -> secret's path
    body: str | None = None  # a template; None: the alert (or digest) as JSON


@dataclass(frozen=True)
class FileSettings:
    path: str  # absolute
    mode: int = 0o640  # permission bits of a file the handler creates


@dataclass(frozen=True)
class LogSettings:
    pass


@dataclass(frozen=True)
class NftablesSettings:
    family: Literal["inet", "ip", "ip6"] = "inet"
    table: str = "logwatchd"
    set: str = "banned"  # the prefix of the set names (<set>4, <set>6)
    field: str = "ip"  # where the address is: the alert's key, else its event's fields
    duration: float = 3600.0
    increase: Increase | None = None
    prefix6: int = 64  # an IPv6 address is banned with its /prefix6
    never: tuple[IpNetwork | str, ...] = ()  # networks and list names, as written
    never_networks: tuple[tuple[IpNetwork, str], ...] = ()  # (network, its list or "")
    chain: bool = True  # keep a drop rule for the sets in a chain of the table
    nft: str = "/usr/sbin/nft"
    check_interval: float = 60.0  # how often the table is checked (a flushed ruleset)


@dataclass(frozen=True)
class NatsConnection:
    """How to reach a NATS server or cluster (``nats`` handlers and sources)."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    creds_file: str | None = None  # a .creds file (user JWT and nkey seed)
    nkey_file: str | None = None  # a file holding an nkey seed (SU...)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None  # a client certificate (with tls_key_file)
    tls_key_file: str | None = None


NATS_STREAM = "LOGWATCHD"  # the stream of alerts, for handlers and sources that name none


@dataclass(frozen=True)
class NatsSettings:
    subject: str  # a template
    connection: NatsConnection = NatsConnection()
    stream: str = NATS_STREAM
    duplicate_window: float = 120.0  # NATS's own default
    max_age: float = 7 * 86400.0
    replicas: int = 1


HandlerSettings = (
    EmailSettings
    | CommandSettings
    | WebhookSettings
    | FileSettings
    | LogSettings
    | NftablesSettings
    | NatsSettings
)


def template_sources(settings: HandlerSettings) -> list[tuple[str, str]]:
    """(key, source) of every template a handler renders; the key is where the source was
    written (``body_file`` for a mail body read from a file)."""
    if isinstance(settings, EmailSettings):
        body_key = "body_file" if settings.body_file else "body"
        return [("subject", settings.subject), (body_key, settings.body)]
    if isinstance(settings, CommandSettings):
        undo = settings.undo.argv if settings.undo else ()
        # argv[0] is a literal path, never a template
        return [
            *((f"argv[{i}]", arg) for i, arg in enumerate(settings.argv) if i),
            *((f"undo.argv[{i}]", arg) for i, arg in enumerate(undo) if i),
        ]
    if isinstance(settings, WebhookSettings):
        found = [(f"headers.{name}", source) for name, source in settings.headers.items()]
        return found if settings.body is None else [*found, ("body", settings.body)]
    if isinstance(settings, NatsSettings):
        return [("subject", settings.subject)]
    return []

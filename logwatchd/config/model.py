"""The validated configuration: plain frozen data that every other piece reads.

``config.load`` builds it from YAML (with file/line marks for errors); nothing else in the
package parses YAML. Durations are seconds as floats. Every object keeps the ``Mark`` of the
YAML mapping it came from so later checks (templates, handler files) can name file and line.
Each handler type's own settings are in ``handler_settings.py``.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from logwatchd.config.handler_settings import (
    HandlerSettings,
    IpNetwork,
    LogSettings,
    NatsConnection,
)
from logwatchd.errors import Mark

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")

NOWHERE = Mark("<builtin>")


# --- daemon -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenAddress:
    """Where ``/metrics`` is served: ``host:port`` (``[::1]:9101`` for IPv6) or a unix socket."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = "/var/lib/logwatchd"
    timezone: str = "local"  # "local", "UTC" or an IANA name, for timestamps without offset
    max_line_bytes: int = 65536
    max_keys_per_rule: int = 20_000  # about 1 KB a key: 20 MB a rule under a key flood
    dry_run: bool = False  # render and log alerts, run no handler
    commit_interval: float = 1.0
    stat_interval: float = 1.0  # re-stat open files
    rescan_interval: float = 10.0  # re-expand globs
    max_open_files: int = 1024  # followed files held open at once (all file sources together)
    shutdown_timeout: float = 10.0  # bound on draining in-flight handler work at SIGTERM
    host: str | None = None  # names this host in alerts; None: the machine's short host name
    line_timeout: float = 0.5  # CPU seconds one line may take through parser and rules
    metrics_listen: ListenAddress | None = None  # off unless ``metrics: {listen: ...}``
    history: float = 30 * 86400.0  # alert and delivery history kept for ``report``
    mark: Mark = NOWHERE

    def host_name(self) -> str:
        return self.host or socket.gethostname().split(".")[0]


# --- lists --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListConfig:
    """A named list for ``in_list``; entries that parse as IPs or CIDRs also go to ``networks``."""

    id: str
    values: frozenset[str]
    networks: tuple[IpNetwork, ...] = ()
    mark: Mark = NOWHERE


# --- sources and parsers ------------------------------------------------------------------


@dataclass(frozen=True)
class NatsSourceConfig:
    """``type: nats``: durable pull consumers on a JetStream stream, one per subject."""

    connection: NatsConnection
    stream: str
    subjects: tuple[str, ...]
    durable: str
    batch: int = 256  # messages per fetch
    ack_wait: float = 30.0  # a message not acknowledged this long after delivery comes again


@dataclass(frozen=True)
class SourceConfig:
    id: str
    type: Literal["file", "journald", "stdin", "nats"]
    parser: str  # a builtin parser name or an id under ``parsers``
    paths: tuple[str, ...] = ()  # file: absolute globs
    start_at: Literal["end", "beginning"] = "end"
    olddir: str | None = None  # file: logrotate's olddir (relative: to each file's directory)
    match: tuple[str, ...] = ()  # journald: FIELD=value terms, OR'ed
    journal_directory: str | None = None  # journald: this directory, not the system journal
    journal_files: tuple[str, ...] = ()  # journald: read these journal files
    nats: NatsSourceConfig | None = None  # nats: the stream, subjects and consumer
    mark: Mark = NOWHERE


@dataclass(frozen=True)
class ParserConfig:
    """A custom regex parser (``parsers:`` section)."""

    id: str
    regex: re.Pattern[str]
    time_format: str | None = None  # strptime format of the ``timestamp`` group
    types: dict[str, Literal["str", "int", "float", "ip"]] = field(default_factory=dict)
    mark: Mark = NOWHERE
    example: str | None = None  # a line of the log, for `check` to parse (time_format too)
    marks: dict[str, Mark] = field(default_factory=dict, compare=False)  # key -> its Mark


# --- predicates ---------------------------------------------------------------------------

LeafOp = Literal[
    "equals", "in", "contains", "startswith", "endswith", "regex",
    "cidr", "in_list", "exists", "gt", "gte", "lt", "lte",
]  # fmt: skip
TextOp = Literal["contains", "startswith", "endswith"]
CompareOp = Literal["gt", "gte", "lt", "lte"]
Scalar = str | int | float  # what ``equals`` and ``in`` compare with


@dataclass(frozen=True)
class Leaf:
    """A condition on one field, ``{field: F, OP: V}``. Each kind of OP is a subclass that
    holds V as the loader typed and checked it, so the rule engine never checks it again."""

    field: str
    icase: bool = dataclasses.field(default=False, kw_only=True)
    mark: Mark = dataclasses.field(default=NOWHERE, kw_only=True)

    @property
    def op(self) -> LeafOp:
        raise NotImplementedError


@dataclass(frozen=True)
class Equals(Leaf):
    op: ClassVar[Literal["equals"]] = "equals"
    value: Scalar


@dataclass(frozen=True)
class In(Leaf):
    op: ClassVar[Literal["in"]] = "in"
    values: tuple[Scalar, ...]  # at least one


@dataclass(frozen=True)
class Text(Leaf):
    """``contains``, ``startswith`` or ``endswith`` a string."""

    operator: TextOp
    text: str

    @property
    def op(self) -> TextOp:
        return self.operator


@dataclass(frozen=True)
class Regex(Leaf):
    op: ClassVar[Literal["regex"]] = "regex"
    pattern: re.Pattern[str]  # compiled with re.IGNORECASE when icase


@dataclass(frozen=True)
class Cidr(Leaf):
    op: ClassVar[Literal["cidr"]] = "cidr"
    networks: tuple[IpNetwork, ...]


@dataclass(frozen=True)
class InList(Leaf):
    op: ClassVar[Literal["in_list"]] = "in_list"
    list_id: str  # a declared list


@dataclass(frozen=True)
class Exists(Leaf):
    op: ClassVar[Literal["exists"]] = "exists"
    present: bool  # false: the condition holds when the field is missing


@dataclass(frozen=True)
class Compare(Leaf):
    """``gt``, ``gte``, ``lt`` or ``lte`` a number."""

    operator: CompareOp
    limit: int | float

    @property
    def op(self) -> CompareOp:
        return self.operator


def operand(leaf: Leaf) -> object:
    """What the condition compares its field with (V of ``{field: F, OP: V}``), typed."""
    return getattr(leaf, _OPERANDS[type(leaf)])


_OPERANDS: dict[type[Leaf], str] = {
    Equals: "value", In: "values", Text: "text", Regex: "pattern", Cidr: "networks",
    InList: "list_id", Exists: "present", Compare: "limit",
}  # fmt: skip


@dataclass(frozen=True)
class All:
    items: tuple[Predicate, ...]
    mark: Mark = NOWHERE


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Predicate, ...]
    mark: Mark = NOWHERE


@dataclass(frozen=True)
class Not:
    item: Predicate
    mark: Mark = NOWHERE


Predicate = Leaf | All | AnyOf | Not


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    count: int
    window: float
    distinct: str | None = None  # count distinct values of this field instead of events


@dataclass(frozen=True)
class SequenceStep:
    match: Predicate
    absent: bool = False  # only the last step: fire when it did NOT arrive within the window


@dataclass(frozen=True)
class Sequence:
    steps: tuple[SequenceStep, ...]
    window: float  # from the first step to the last


@dataclass(frozen=True)
class ContextConfig:
    """Per-connection memory of a rule (``context:``): fields carried across the lines of
    one connection, as fail2ban's multi-line filters do for sshd.

    - by: fields forming the connection key (a line missing one has no connection, unless it
      is in ``optional``: then a missing one counts as empty)
    - remember: fields stored from a line that has them, filled into a later line that lacks them
    - learn: a condition run on each line first; its regex groups are fields of the line
    - forget: a condition for lines that end the connection (its memory is dropped)
    - distinct: (name, field) pairs: ``name`` = how many distinct ``field`` values the
      connection has shown, this line included
    - ttl: seconds (event time) a connection is remembered after its last stored line
    """

    by: tuple[str, ...]
    remember: tuple[str, ...] = ()
    learn: Predicate | None = None
    forget: Predicate | None = None
    distinct: tuple[tuple[str, str], ...] = ()
    ttl: float = 600.0
    optional: tuple[str, ...] = ()  # the ``by`` fields a line may lack
    mark: Mark = NOWHERE


@dataclass(frozen=True)
class RuleConfig:
    id: str
    match: Predicate | None  # None only for sequence rules
    sources: tuple[str, ...] = ()  # empty = all sources
    group_by: tuple[str, ...] = ()
    threshold: Threshold | None = None
    sequence: Sequence | None = None
    cooldown: float = 0.0
    severity: Severity = "medium"
    tags: tuple[str, ...] = ()
    handlers: tuple[str, ...] = ()  # resolved: defaults.handlers filled in by the loader
    description: str = ""
    mark: Mark = NOWHERE
    context: ContextConfig | None = None  # per-connection memory (match rules only)
    # where each key was written ("group_by", "threshold.distinct", "context.by", ...) and
    # the rule's key path ("rules[2]" in its file), for checks that run after loading
    marks: dict[str, Mark] = field(default_factory=dict, compare=False)
    path: str = ""

    def digest(self) -> str:
        """Changes when anything that shapes the rule's state changes (state survives reload).

        Marks are left out (a line added above the rule must not reset its windows), and a
        regex counts by its whole pattern and flags (its repr is cut at 200 characters).
        """
        import hashlib

        shape: tuple[Any, ...] = (
            self.match,
            self.sources,
            self.group_by,
            self.threshold,
            self.sequence,
            self.cooldown,
        )
        if self.context is not None:  # only then: digests of rules without one stay as they were
            shape = (*shape, self.context)
        text = repr(_shape(shape))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _shape(value: Any) -> Any:
    """A value as plain nested tuples, without the ``mark`` of any dataclass in it."""
    if isinstance(value, re.Pattern):
        return ("re", value.pattern, value.flags)
    if isinstance(value, Leaf):  # as when one class held every kind: digests stay the same
        fields = (("field", value.field), ("op", value.op), ("value", _shape(operand(value))))
        return ("Leaf", (*fields, ("icase", value.icase)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            tuple(
                (item.name, _shape(getattr(value, item.name)))
                for item in dataclasses.fields(value)
                if item.name != "mark"
            ),
        )
    if isinstance(value, tuple | list):
        return tuple(_shape(item) for item in value)
    if isinstance(value, frozenset | set):
        return tuple(sorted(repr(_shape(item)) for item in value))
    return value


# --- handlers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 10
    backoff: float = 5.0  # first delay; doubles per attempt, capped at max_backoff
    max_backoff: float = 3600.0


@dataclass(frozen=True)
class RateLimit:
    max: int
    per: float


@dataclass(frozen=True)
class BatchConfig:
    window: float
    max: int = 100


@dataclass(frozen=True)
class HandlerConfig:
    """A declared handler. ``settings`` holds its type's keys, validated and typed by the
    schema (``EmailSettings`` for ``type: email``, ...). ``marks`` maps each key given in
    YAML (e.g. "subject", "argv[2]", "smtp.host") to its Mark.
    """

    name: str
    type: Literal["email", "command", "webhook", "file", "log", "nats", "nftables"]
    timeout: float = 30.0
    retry: RetryConfig = RetryConfig()
    rate_limit: RateLimit | None = None
    batch: BatchConfig | None = None
    settings: HandlerSettings = LogSettings()  # noqa: RUF009 (frozen: one instance serves all)
    marks: dict[str, Mark] = field(default_factory=dict)
    mark: Mark = NOWHERE


LOG_HANDLER = HandlerConfig(name="log", type="log")


# --- the whole thing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    path: str  # the top-level file
    daemon: DaemonConfig
    lists: dict[str, ListConfig]
    sources: tuple[SourceConfig, ...]
    parsers: dict[str, ParserConfig]
    rules: tuple[RuleConfig, ...]
    handlers: dict[str, HandlerConfig]  # always contains "log"
    default_handlers: tuple[str, ...] = ("log",)
    files: tuple[str, ...] = ()  # every file read, includes too (for reload and messages)

    def source(self, source_id: str) -> SourceConfig:
        for src in self.sources:
            if src.id == source_id:
                return src
        raise KeyError(source_id)

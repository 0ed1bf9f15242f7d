"""Sandboxed Jinja2 for handler templates (subjects, bodies, argv elements, headers).

Template *sources* come only from the configuration; log data reaches a template only as
values inside ``alert``. Each source is compiled once, when the handler is built, and the
environment exposes nothing but ``alert``, ``alerts`` (a digest's list) and ``host``.

Undefined values are errors, except in templates compiled with an ``owner`` (the text of a
mail or a webhook): there a field one alert lacks (``alert.event.fields.user`` when this
line had no user) renders as nothing and is logged once per owner and field, so the alert is
still delivered. ``check`` renders every template strictly against samples that hold the
fields each rule can produce, and names a field no source gives before any alert exists.
"""

from __future__ import annotations

import contextvars
import copy
import difflib
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
import structlog
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from logwatchd.alerts import sample_alert
from logwatchd.config.handler_settings import template_sources
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ConfigError, Mark

if TYPE_CHECKING:
    from logwatchd.fields import RuleShape  # made by the field check; handlers never import it

log = structlog.get_logger("logwatchd.handlers")

MAX_OUTPUT_CHARS = 1_000_000  # a runaway loop in a template must not eat the daemon's memory

# names of the undefined values a lenient template rendered, during one render
_MISSING: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "logwatchd_template_missing", default=None
)


class _EmptyWhenMissing(jinja2.ChainableUndefined):
    """A value this alert lacks: renders as nothing, and is noted (``{% if %}`` and
    ``default()`` see it as missing without a note)."""

    __slots__ = ()

    def __str__(self) -> str:
        missing = _MISSING.get()
        if missing is not None:
            missing.append(str(self._undefined_name or "?"))
        return ""


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What templates see as ``host``."""

    name: str
    fqdn: str

    @classmethod
    def local(cls, name: str | None = None) -> HostInfo:
        """This machine; ``name`` (``daemon.host``) replaces its short host name."""
        machine = socket.gethostname()
        short = machine.split(".")[0]
        fqdn = socket.getfqdn(machine)
        # With "127.0.0.1 localhost web1" in /etc/hosts, getfqdn() answers "localhost": a mail
        # body saying web1 would be signed by localhost. A name that is not this host's is wrong.
        if fqdn.split(".")[0] != short:
            fqdn = machine
        return cls(name=name or short, fqdn=fqdn)

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "fqdn": self.fqdn}


class TemplateError(Exception):
    """A template failed to compile or render; ``label`` names where it came from."""

    def __init__(self, message: str, label: str = "") -> None:
        super().__init__(f"{label}: {message}" if label else message)
        self.message = message
        self.label = label


class Template:
    """One compiled template; ``label`` (e.g. ``handlers.mail.subject``) is for messages.
    ``missing`` (lenient templates only) hears the names of values that rendered empty."""

    __slots__ = ("_compiled", "_missing", "label", "source")

    def __init__(
        self,
        compiled: jinja2.Template,
        source: str,
        label: str,
        missing: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._compiled = compiled
        self.source = source
        self.label = label
        self._missing = missing

    def render(self, context: dict[str, Any]) -> str:
        token = _MISSING.set([]) if self._missing is not None else None
        try:
            text = self._compiled.render(context)
        except jinja2.TemplateError as exc:
            raise TemplateError(_describe(exc), self.label) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateError(f"{type(exc).__name__}: {exc}", self.label) from None
        finally:
            if token is not None:
                missing = _MISSING.get()
                _MISSING.reset(token)
        if token is not None and missing and self._missing is not None:
            self._missing(missing)
        if len(text) > MAX_OUTPUT_CHARS:
            raise TemplateError(f"output longer than {MAX_OUTPUT_CHARS} characters", self.label)
        return text


class Templates:
    """The sandboxed environment plus a cache, so one source is compiled once."""

    def __init__(self, *, finalize: Callable[[Any], Any] | None = None) -> None:
        """``finalize`` sees every ``{{ expression }}``'s value, never the template's text."""
        self._env = _environment(jinja2.StrictUndefined, finalize)
        self._lenient = _environment(_EmptyWhenMissing, finalize)
        self._cache: dict[tuple[str, bool], jinja2.Template] = {}
        self._reported: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def compile(self, source: str, label: str = "", *, owner: str | None = None) -> Template:
        """``owner`` (a handler name): a value an alert lacks renders empty, logged once."""
        lenient = owner is not None
        compiled = self._cache.get((source, lenient))
        if compiled is None:
            env = self._lenient if lenient else self._env
            try:
                compiled = env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"template syntax: {exc.message} (line {exc.lineno})", label
                ) from None
            self._cache[(source, lenient)] = compiled
        if owner is None:
            return Template(compiled, source, label)
        return Template(compiled, source, label, lambda names: self._report(owner, label, names))

    def _report(self, owner: str, label: str, names: list[str]) -> None:
        with self._lock:
            new = [name for name in dict.fromkeys(names) if (owner, name) not in self._reported]
            self._reported.update((owner, name) for name in new)
        for name in new:
            log.warning(
                "a template value this alert lacks rendered as nothing (said once per field)",
                handler=owner,
                field=name,
                template=label,
            )

    def render(
        self,
        template: Template,
        alert: dict[str, Any],
        host: HostInfo,
        alerts: Sequence[dict[str, Any]] | None = None,
    ) -> str:
        return template.render(context(alert, host, alerts))


def _environment(
    undefined: type[jinja2.Undefined], finalize: Callable[[Any], Any] | None
) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=undefined, autoescape=False, keep_trailing_newline=True, finalize=finalize
    )
    # range, lipsum, cycler, joiner, namespace: nothing but the data is reachable
    env.globals.clear()
    return env


def context(
    alert: dict[str, Any], host: HostInfo, alerts: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"alert": alert, "alerts": list(alerts or [alert]), "host": host.as_dict()}


def _describe(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined value: {exc.message}"
    return f"{type(exc).__name__}: {exc.message or exc}"


# --- check-time rendering -----------------------------------------------------------------


def sample_for(key_fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The sample alert; with ``key_fields`` (a rule's group_by) its key has exactly those."""
    alert = copy.deepcopy(sample_alert())
    if key_fields is not None:
        key = {name: alert["key"].get(name, f"sample-{name}") for name in key_fields}
        alert["key"] = key
        alert["event"]["fields"].update(key)
    return alert


def referenced_fields(source: str) -> tuple[list[str], list[str]]:
    """The fields a template reads by name: ``alert.event.fields.X`` and ``alert.key.X``
    (also ``a.event.fields.X`` in ``{% for a in alerts %}``), as (event, key) names."""
    try:
        tree = _PARSER.parse(source)
    except jinja2.TemplateSyntaxError:
        return [], []
    aliases = {"alert"}
    for loop in tree.find_all(nodes.For):
        over = loop.iter
        if isinstance(over, nodes.Name) and over.name == "alerts":
            target = loop.target
            names = [target] if isinstance(target, nodes.Name) else target.find_all(nodes.Name)
            aliases.update(name.name for name in names)
    event: dict[str, None] = {}
    key: dict[str, None] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if chain is None or chain[0] not in aliases:
            continue
        if chain[1:3] == ["event", "fields"] and len(chain) == 4:
            event[chain[3]] = None
        elif chain[1:2] == ["key"] and len(chain) == 3:
            key[chain[2]] = None
    return list(event), list(key)


_PARSER = jinja2.Environment(autoescape=False)  # noqa: S701 (parses only, renders nothing)


def _chain(node: nodes.Node) -> list[str] | None:
    """``a.b['c'].d`` as ["a", "b", "c", "d"]; None when a step is not a plain name."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem):
            if not (isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)):
                return None
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return parts[::-1]
        else:
            return None


def sample_for_rule(shape: RuleShape, extra: Iterable[str] = ()) -> dict[str, Any]:
    """A sample alert of the rule: its group_by as key, its fields (and ``extra``) as event
    fields, each with a sample value."""
    alert = sample_for(shape.key_fields)
    known = alert["event"]["fields"]
    alert["event"]["fields"] = {
        name: alert["first_seen"] if name == "timestamp" else known.get(name, f"sample-{name}")
        for name in dict.fromkeys([*shape.event_fields, *extra, *shape.key_fields])
    }
    return alert


def _field_errors(
    shape: RuleShape, source: str, mark: Mark | None, key: str
) -> Iterator[ConfigError]:
    event, key_names = referenced_fields(source)
    for name in event:
        problem = shape.problem(name)
        if problem is not None:
            yield ConfigError(f"{problem} (rule {shape.rule} uses this handler)", mark, key)
    for name in key_names:
        if name not in shape.key_fields:
            close = difflib.get_close_matches(name, shape.key_fields, n=1, cutoff=0.7)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            grouped = ", ".join(shape.key_fields) or "nothing"
            yield ConfigError(
                f"alert.key holds the rule's group_by fields only, and rule {shape.rule} "
                f"groups by {grouped}: no '{name}'{hint}",
                mark,
                key,
            )


def check_templates(
    cfg: HandlerConfig,
    *,
    templates: Templates,
    host: HostInfo,
    key_fields: Iterable[str] | None = None,
    shape: RuleShape | None = None,
) -> int:
    """Compile and render every template of one handler against a sample alert: the
    ``shape`` of one rule that sends to it, or a sample with ``key_fields`` as its key.

    Returns how many templates were rendered; raises ConfigError naming
    ``handlers.NAME.KEY`` and the Mark of that key (or of the handler). With a shape, a field
    the template names that the rule's events never hold gets the field check's message.
    """
    alert = sample_for(key_fields)
    sources = template_sources(cfg.settings)
    for key, source in sources:
        where, path = cfg.marks.get(key, cfg.mark), f"handlers.{cfg.name}.{key}"
        if shape is not None:
            for error in _field_errors(shape, source, where, path):
                raise error
            alert = sample_for_rule(shape, referenced_fields(source)[0])
        try:
            templates.render(templates.compile(source), alert, host)
        except TemplateError as exc:
            raise ConfigError(exc.message, where, path) from None
    return len(sources)

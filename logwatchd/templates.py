"""Sandboxed Jinja2 for handler templates (subjects, bodies, argv elements, headers).

Template *sources* come only from the configuration; log data reaches a template only as
values inside ``alert``. Each source is compiled once, when the handler is built, and the
environment exposes nothing but ``alert``, ``alerts`` (a digest's list) and ``host``.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from logwatchd.alerts import sample_alert
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ConfigError, Mark

MAX_OUTPUT_CHARS = 1_000_000  # a runaway loop in a template must not eat the daemon's memory


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What templates see as ``host``."""

    name: str
    fqdn: str

    @classmethod
    def local(cls) -> HostInfo:
        name = socket.gethostname()
        short = name.split(".")[0]
        fqdn = socket.getfqdn(name)
        # With "127.0.0.1 localhost web1" in /etc/hosts, getfqdn() answers "localhost": a mail
        # body saying web1 would be signed by localhost. A name that is not this host's is wrong.
        if fqdn.split(".")[0] != short:
            fqdn = name
        return cls(name=short, fqdn=fqdn)

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "fqdn": self.fqdn}


class TemplateError(Exception):
    """A template failed to compile or render; ``label`` names where it came from."""

    def __init__(self, message: str, label: str = "") -> None:
        super().__init__(f"{label}: {message}" if label else message)
        self.message = message
        self.label = label


class Template:
    """One compiled template; ``label`` (e.g. ``handlers.mail.subject``) is for messages."""

    __slots__ = ("_compiled", "label", "source")

    def __init__(self, compiled: jinja2.Template, source: str, label: str) -> None:
        self._compiled = compiled
        self.source = source
        self.label = label

    def render(self, context: dict[str, Any]) -> str:
        try:
            text = self._compiled.render(context)
        except jinja2.TemplateError as exc:
            raise TemplateError(_describe(exc), self.label) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateError(f"{type(exc).__name__}: {exc}", self.label) from None
        if len(text) > MAX_OUTPUT_CHARS:
            raise TemplateError(f"output longer than {MAX_OUTPUT_CHARS} characters", self.label)
        return text


class Templates:
    """The sandboxed environment plus a cache, so one source is compiled once."""

    def __init__(self, *, finalize: Callable[[Any], Any] | None = None) -> None:
        """``finalize`` sees every ``{{ expression }}``'s value, never the template's text."""
        env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=finalize,
        )
        # range, lipsum, cycler, joiner, namespace: nothing but the data is reachable
        env.globals.clear()
        self._env = env
        self._cache: dict[str, jinja2.Template] = {}

    def compile(self, source: str, label: str = "") -> Template:
        compiled = self._cache.get(source)
        if compiled is None:
            try:
                compiled = self._env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"template syntax: {exc.message} (line {exc.lineno})", label
                ) from None
            self._cache[source] = compiled
        return Template(compiled, source, label)

    def render(
        self,
        template: Template,
        alert: dict[str, Any],
        host: HostInfo,
        alerts: Sequence[dict[str, Any]] | None = None,
    ) -> str:
        return template.render(context(alert, host, alerts))


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


def handler_template_sources(settings: dict[str, Any], handler_type: str) -> list[tuple[str, str]]:
    """(key path, source) of every template a handler of this type renders."""
    found: list[tuple[str, str]] = []
    if handler_type == "email":
        for name in ("subject", "body"):
            if isinstance(settings.get(name), str):
                found.append((name, settings[name]))
        body_file = settings.get("body_file")
        if body_file:
            found.append(("body_file", read_template_file(body_file)))
    elif handler_type == "command":
        # argv[0] is a literal path, never a template
        found.extend((f"argv[{i}]", arg) for i, arg in enumerate(settings.get("argv", ())) if i)
        undo = settings.get("undo") or {}
        found.extend((f"undo.argv[{i}]", arg) for i, arg in enumerate(undo.get("argv", ())) if i)
    elif handler_type == "webhook":
        for header, source in (settings.get("headers") or {}).items():
            found.append((f"headers.{header}", source))
        if isinstance(settings.get("body"), str):
            found.append(("body", settings["body"]))
    return found


def read_template_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise TemplateError(f"cannot read template file {path}: {exc.strerror}") from None


def check_templates(
    name: str,
    handler_type: str,
    settings: dict[str, Any],
    *,
    templates: Templates,
    host: HostInfo,
    key_fields: Iterable[str] | None = None,
    marks: dict[str, Mark] | None = None,
    mark: Mark | None = None,
) -> int:
    """Compile and render every template of one handler against a sample alert.

    Returns how many templates were rendered; raises ConfigError naming
    ``handlers.NAME.KEY`` and the Mark of that key (or of the handler).
    """
    alert = sample_for(key_fields)
    marks = marks or {}
    try:
        sources = handler_template_sources(settings, handler_type)
    except TemplateError as exc:
        raise ConfigError(
            exc.message, marks.get("body_file", mark), f"handlers.{name}.body_file"
        ) from None
    for key, source in sources:
        try:
            templates.render(templates.compile(source), alert, host)
        except TemplateError as exc:
            raise ConfigError(exc.message, marks.get(key, mark), f"handlers.{name}.{key}") from None
    return len(sources)


def check_handler_templates(
    cfg: HandlerConfig,
    *,
    templates: Templates,
    host: HostInfo,
    key_fields: Iterable[str] | None = None,
) -> int:
    """``check_templates`` for a HandlerConfig: call once per rule using the handler, with the
    rule's ``group_by`` as ``key_fields`` (None: the sample's own key)."""
    return check_templates(
        cfg.name, cfg.type, cfg.settings, templates=templates, host=host,
        key_fields=key_fields, marks=cfg.marks, mark=cfg.mark,
    )  # fmt: skip

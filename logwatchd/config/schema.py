"""Validation of the loaded YAML layers into the ``Config`` dataclasses (README: "Configuration").

Sections are read in dependency order (lists and parsers before the sources and rules that
name them) so every cross reference is checked against what is actually declared.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import zoneinfo
from collections.abc import Collection, Iterable

from logwatchd.config import nodes, schema_nats
from logwatchd.config.handler_settings import IpNetwork
from logwatchd.config.loader import Layer
from logwatchd.config.model import (
    Config,
    DaemonConfig,
    ListConfig,
    ListenAddress,
    ParserConfig,
    SourceConfig,
)
from logwatchd.config.nodes import Node
from logwatchd.config.schema_actions import resolve_never_lists
from logwatchd.config.schema_handlers import handlers_section
from logwatchd.config.schema_rules import RuleContext, names, rules_section

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")

MAIN_KEYS = (
    "version",
    "include",
    "daemon",
    "defaults",
    "lists",
    "sources",
    "parsers",
    "rules",
    "handlers",
)
INCLUDED_KEYS = ("version", "lists", "sources", "parsers", "rules", "handlers")
DAEMON_KEYS = (
    "state_dir",
    "timezone",
    "max_line_bytes",
    "max_keys_per_rule",
    "dry_run",
    "commit_interval",
    "stat_interval",
    "rescan_interval",
    "shutdown_timeout",
    "host",
    "max_open_files",
    "line_timeout",
    "metrics",
    "history",
)
METRICS_KEYS = ("listen",)
SOURCE_KEYS = {
    "file": ("id", "type", "parser", "paths", "start_at", "olddir"),
    "journald": ("id", "type", "parser", "match", "directory", "files", "start_at"),
    "stdin": ("id", "type", "parser"),
    "nats": schema_nats.SOURCE_KEYS,
}
PARSER_KEYS = ("regex", "time_format", "types", "example")
FIELD_TYPES = ("str", "int", "float", "ip")
# A journal field name (upper-case ASCII letters, digits and "_", not a digit first, at most
# 64: journald stores no other), "=", and the value. The journald source trusts this check.
JOURNAL_MATCH_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}=.*", re.ASCII | re.DOTALL)


def builtin_parsers() -> frozenset[str]:
    """The parsers piece owns the list (imported late: parsers import the config model)."""
    from logwatchd.parsers import BUILTIN

    return BUILTIN


def build_config(layers: list[Layer]) -> Config:
    main = layers[0]
    top = _check_top(layers)
    _check_version(top[0])
    daemon = _daemon(top[0].get("daemon"))
    lists = {lid: _list(lid, node) for lid, node in named_entries(top, "lists", "list")}
    parsers = {pid: _parser(pid, node) for pid, node in named_entries(top, "parsers", "parser")}
    handlers = handlers_section(named_entries(top, "handlers", "handler"))
    handlers = resolve_never_lists(handlers, lists)
    defaults = _default_handlers(top[0].get("defaults"), handlers)
    sources = _sources(
        listed_entries(top, "sources", "source"), parsers, top[0].node, daemon.host_name()
    )
    context = RuleContext(
        lists=lists,
        sources={src.id for src in sources},
        handlers=set(handlers),
        default_handlers=defaults,
    )
    rules = rules_section(listed_entries(top, "rules", "rule"), context)
    return Config(
        path=main.file,
        daemon=daemon,
        lists=lists,
        sources=tuple(sources),
        parsers=parsers,
        rules=tuple(rules),
        handlers=handlers,
        default_handlers=defaults,
        files=tuple(layer.file for layer in layers),
    )


def _check_top(layers: list[Layer]) -> list[nodes.Mapping]:
    checked = [nodes.mapping(layers[0].root, MAIN_KEYS)]
    for layer in layers[1:]:
        include = layer.root.value.get("include")
        if include is not None:
            raise include.error("only the main config file may include other files")
        checked.append(nodes.mapping(layer.root, INCLUDED_KEYS))
    for top in checked[1:]:
        _check_layer_version(top)
    return checked


def _check_version(top: nodes.Mapping) -> None:
    version = top.get("version")
    if version is None:
        raise top.node.error("missing required key 'version' (add `version: 1` at the top)")
    _check_layer_version(top)


def check_id(node: Node, what: str, value: str | None = None) -> str:
    text = nodes.string(node) if value is None else value
    if not ID_RE.fullmatch(text):
        raise node.error(
            f"{what} id '{text}' must be lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return text


def named_entries(top: Iterable[nodes.Mapping], section: str, what: str) -> list[tuple[str, Node]]:
    """``section: {id: {...}}`` from every file, with ids unique across files."""
    seen: dict[str, Node] = {}
    result: list[tuple[str, Node]] = []
    for layer_top in top:
        node = layer_top.get(section)
        if node is None:
            continue
        if not isinstance(node.value, dict):
            raise nodes.wrong_type(node, f"a mapping of {what} ids")
        for key, entry in node.value.items():
            check_id(entry, what, key)
            _unique(seen, key, entry, what)
            result.append((key, entry))
    return result


def listed_entries(top: Iterable[nodes.Mapping], section: str, what: str) -> list[Node]:
    """``section: [{id: ...}, ...]`` from every file, with ids unique across files."""
    seen: dict[str, Node] = {}
    result: list[Node] = []
    for layer_top in top:
        node = layer_top.get(section)
        if node is None:
            continue
        for entry in nodes.items(node, f"a list of {what}s"):
            if not isinstance(entry.value, dict):
                raise nodes.wrong_type(entry, f"a mapping (one {what})")
            id_node = nodes.Mapping(entry, entry.value).need("id")
            ident = check_id(id_node, what)
            _unique(seen, ident, id_node, what)
            result.append(entry)
    return result


def _check_layer_version(top: nodes.Mapping) -> None:
    version = top.get("version")
    if version is not None and (version.value != 1 or isinstance(version.value, bool)):
        shown = version.value if isinstance(version.value, int | float | str) else "?"
        raise version.error(f"unsupported config version {shown} (this is version 1)")


def _unique(seen: dict[str, Node], ident: str, node: Node, what: str) -> None:
    first = seen.get(ident)
    if first is not None:
        raise node.error(f"duplicate {what} id '{ident}' (also defined at {first.mark})")
    seen[ident] = node


# --- daemon -------------------------------------------------------------------------------


def _daemon(node: Node | None) -> DaemonConfig:
    if node is None:
        return DaemonConfig()
    entries = nodes.mapping(node, DAEMON_KEYS)
    values: dict[str, object] = {"mark": node.mark}
    if (item := entries.get("state_dir")) is not None:
        values["state_dir"] = nodes.path(item)
    if (item := entries.get("timezone")) is not None:
        values["timezone"] = _timezone(item)
    if (item := entries.get("max_line_bytes")) is not None:
        values["max_line_bytes"] = nodes.integer(item, minimum=256, maximum=64 * 1024 * 1024)
    if (item := entries.get("max_keys_per_rule")) is not None:
        values["max_keys_per_rule"] = nodes.integer(item, minimum=1)
    if (item := entries.get("dry_run")) is not None:
        values["dry_run"] = nodes.boolean(item)
    for key in ("commit_interval", "stat_interval", "rescan_interval"):
        if (item := entries.get(key)) is not None:
            values[key] = nodes.duration(item, positive=True)
    if (item := entries.get("shutdown_timeout")) is not None:
        values["shutdown_timeout"] = nodes.duration(item)
    if (item := entries.get("host")) is not None:
        values["host"] = _host(item)
    if (item := entries.get("max_open_files")) is not None:
        values["max_open_files"] = nodes.integer(item, minimum=1, maximum=1_000_000)
    if (item := entries.get("line_timeout")) is not None:
        values["line_timeout"] = nodes.duration(item, positive=True)
    if (item := entries.get("metrics")) is not None:
        values["metrics_listen"] = _metrics_listen(item)
    if (item := entries.get("history")) is not None:
        values["history"] = nodes.duration(item, positive=True)
    return DaemonConfig(**values)  # type: ignore[arg-type]


def _metrics_listen(node: Node) -> ListenAddress | None:
    entry = nodes.mapping(node, METRICS_KEYS).get("listen")
    if entry is None:
        return None
    text = nodes.string(entry)
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not os.path.isabs(path):
            raise entry.error(f'"{text}": a unix socket needs an absolute path (unix:/run/...)')
        return ListenAddress(unix_path=path)
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise entry.error(
            f'"{text}" is not an address to listen on '
            "(use 127.0.0.1:9101, [::1]:9101 or unix:/run/logwatchd/metrics.sock)"
        )
    return ListenAddress(host=host, port=int(port))


def _host(node: Node) -> str:
    """One token of a NATS subject and of alert ids: no dots, spaces or wildcards."""
    name = nodes.string(node)
    if not HOST_RE.fullmatch(name):
        raise node.error(
            f"\"{name}\" is not a host name here: letters, digits, '-' and '_', "
            "at most 63 (the short name, without the domain)"
        )
    return name


def _timezone(node: Node) -> str:
    name = nodes.string(node)
    if name in ("local", "UTC"):
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise node.error(
            f'unknown time zone "{name}" (use local, UTC or an IANA name like Europe/Berlin)'
        ) from None
    return name


# --- lists --------------------------------------------------------------------------------


def _list(list_id: str, node: Node) -> ListConfig:
    values: list[str] = []
    networks: list[IpNetwork] = []
    for item in nodes.items(node, "a list of strings"):
        text = nodes.scalar_text(item).strip()
        values.append(text)
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue  # not every list holds addresses (user names, paths, ...)
    return ListConfig(list_id, frozenset(values), tuple(networks), node.mark)


# --- parsers ------------------------------------------------------------------------------


def _parser(parser_id: str, node: Node) -> ParserConfig:
    if parser_id in builtin_parsers():
        raise node.error(f"parser id '{parser_id}' is a builtin parser; choose another name")
    entries = nodes.mapping(node, PARSER_KEYS, required=("regex",))
    regex = nodes.regex(entries.need("regex"))
    time_format = None
    if (item := entries.get("time_format")) is not None:
        time_format = nodes.string(item)
        if "timestamp" not in regex.groupindex:
            raise item.error("time_format needs a (?P<timestamp>...) group in the regex")
    types: dict[str, str] = {}
    if (item := entries.get("types")) is not None:
        if not isinstance(item.value, dict):
            raise nodes.wrong_type(item, "a mapping of group name to type")
        for group, type_node in item.value.items():
            if group not in regex.groupindex:
                known = ", ".join(regex.groupindex) or "none"
                raise type_node.error(f"the regex has no group '{group}' (groups: {known})")
            types[group] = nodes.choice(type_node, FIELD_TYPES)
    example = None
    if (item := entries.get("example")) is not None:
        example = nodes.string(item)
        if "\n" in example.rstrip("\n"):
            raise item.error("an example is one line of the log")
        example = example.rstrip("\n")
    marks = {key: entry.mark for key, entry in entries.entries.items()}
    return ParserConfig(
        parser_id,
        regex,
        time_format,
        types,  # type: ignore[arg-type]
        node.mark,
        example,
        marks,
    )


# --- sources ------------------------------------------------------------------------------


def _sources(
    entries: list[Node], parsers: dict[str, ParserConfig], main: Node, host: str
) -> list[SourceConfig]:
    if not entries:
        raise main.error("no sources: declare at least one under 'sources'")
    known = builtin_parsers() | set(parsers)
    return [_source(entry, known, host) for entry in entries]


def _source(node: Node, known_parsers: frozenset[str] | set[str], host: str) -> SourceConfig:
    type_node = nodes.Mapping(node, node.value).need("type")
    kind = nodes.choice(type_node, tuple(SOURCE_KEYS))
    entries = nodes.mapping(node, SOURCE_KEYS[kind], required=("id", "type"))
    source_id = nodes.string(entries.need("id"))
    parser = _source_parser(entries, kind, known_parsers)
    values: dict[str, object] = {}
    if kind == "file":
        values["paths"] = tuple(_resolved(entries.need("paths")))
        if (item := entries.get("olddir")) is not None:
            values["olddir"] = _olddir(item)
    elif kind == "journald":
        values.update(_journald(entries))
    elif kind == "nats":
        values["nats"] = schema_nats.source_settings(entries, source_id, host)
    if (item := entries.get("start_at")) is not None:
        values["start_at"] = nodes.choice(item, ("end", "beginning"))
    return SourceConfig(source_id, kind, parser, mark=node.mark, **values)  # type: ignore[arg-type]


def _source_parser(entries: nodes.Mapping, kind: str, known: frozenset[str] | set[str]) -> str:
    item = entries.get("parser")
    if item is None:
        if kind == "journald":
            return "journald"
        if kind == "nats":
            return "alert"
        raise entries.node.error("missing required key 'parser' (a builtin or a parsers id)")
    name = nodes.string(item)
    if name not in known:
        raise item.error(f"unknown parser '{name}'; known: {', '.join(sorted(known))}")
    return name


def _resolved(node: Node) -> list[str]:
    values = nodes.strings(node)
    entries = node.value if isinstance(node.value, list) else [node]
    return [nodes.path(entry) for entry, _ in zip(entries, values, strict=True)]


def _olddir(node: Node) -> str:
    """Kept as written: logrotate reads a relative olddir against each log file's directory."""
    text = nodes.string(node)
    if glob.has_magic(text):
        raise node.error(f'olddir "{text}" must be one directory, as in logrotate (no glob)')
    return os.path.normpath(text)


def _journald(entries: nodes.Mapping) -> dict[str, object]:
    values: dict[str, object] = {}
    if (item := entries.get("match")) is not None:
        terms = nodes.strings(item)
        term_nodes = item.value if isinstance(item.value, list) else [item]
        for term, term_node in zip(terms, term_nodes, strict=True):
            if not JOURNAL_MATCH_RE.fullmatch(term):
                raise term_node.error(
                    f'"{term}" is not a journal match (use FIELD=value, FIELD in upper case '
                    "and at most 64 characters, e.g. _SYSTEMD_UNIT=ssh.service)"
                )
        values["match"] = tuple(terms)
    directory = entries.get("directory")
    files = entries.get("files")
    if directory is not None and files is not None:
        raise files.error("give either 'directory' or 'files', not both")
    if directory is not None:
        values["journal_directory"] = nodes.path(directory)
    if files is not None:
        values["journal_files"] = tuple(_resolved(files))
    return values


# --- defaults -----------------------------------------------------------------------------


def _default_handlers(node: Node | None, handlers: Collection[str]) -> tuple[str, ...]:
    if node is None:
        return ("log",)
    item = nodes.mapping(node, ("handlers",)).get("handlers")
    if item is None:
        return ("log",)
    return names(item, handlers, "handler")

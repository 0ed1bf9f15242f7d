"""Validation of the ``nftables`` handler's keys, and of its ``never`` lists against ``lists``.

The handler bans addresses in sets of its own nftables table. Names reach nft as JSON
strings, never as command text, but they are still checked here so a typo is a config error
with file and line rather than an nft error at the first ban.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping

from logwatchd.config import nodes
from logwatchd.config.handler_settings import Increase, IpNetwork, NftablesSettings
from logwatchd.config.model import HandlerConfig, ListConfig
from logwatchd.errors import ConfigError, Mark

NFTABLES_KEYS = (
    "family",
    "table",
    "set",
    "field",
    "duration",
    "increase",
    "prefix6",
    "never",
    "chain",
    "nft",
    "check_interval",
)
FAMILIES = ("inet", "ip", "ip6")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_LIST_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


def nftables_settings(
    entries: nodes.Mapping, marks: dict[str, Mark], timeout: float
) -> NftablesSettings:
    del timeout
    settings = NftablesSettings(
        **entries.given(
            {
                "family": lambda node: nodes.choice(node, FAMILIES),
                "table": _name,
                "set": _name,
                "field": nodes.string,
                "duration": lambda node: nodes.duration(node, positive=True),
                "prefix6": lambda node: nodes.integer(node, minimum=32, maximum=128),
                "chain": nodes.boolean,
                "nft": _program,
                "check_interval": lambda node: nodes.duration(node, positive=True),
            }
        ),
        never=_never(entries.get("never"), marks),
    )
    if (increase := entries.get("increase")) is not None:
        settings = dataclasses.replace(settings, increase=_increase(increase, settings.duration))
    return settings


def _name(node: nodes.Node) -> str:
    text = nodes.string(node)
    if not _NAME_RE.fullmatch(text):
        raise node.error(f'"{text[:40]}" is not an nftables name (letters, digits, _; at most 63)')
    return text


def _program(node: nodes.Node) -> str:
    text = nodes.string(node)
    if not text.startswith("/"):
        raise node.error(f'"{text}" must be an absolute path (no $PATH lookup)')
    return text


def _increase(node: nodes.Node, duration: float) -> Increase:
    entries = nodes.mapping(node, ("factor", "max"), required=("factor", "max"))
    factor_node = entries.need("factor")
    factor = float(nodes.number(factor_node))
    if factor <= 1:
        raise factor_node.error(
            f"must be more than 1 (each repeat lasts factor x the last), got {factor:g}"
        )
    max_node = entries.need("max")
    longest = nodes.duration(max_node, positive=True)
    if longest < duration:
        raise max_node.error("must not be shorter than duration")
    return Increase(factor, longest)


def _never(node: nodes.Node | None, marks: dict[str, Mark]) -> tuple[IpNetwork | str, ...]:
    """Addresses, CIDR networks and list names (checked against ``lists`` once all is read)."""
    if node is None:
        return ()
    entries: list[IpNetwork | str] = []
    for index, item in enumerate(nodes.items(node, "a list of addresses, networks or list names")):
        text = nodes.scalar_text(item).strip()
        marks[f"never[{index}]"] = item.mark
        try:
            entries.append(ipaddress.ip_network(text, strict=False))
            continue
        except ValueError:
            pass
        if not _LIST_NAME_RE.fullmatch(text):
            raise item.error(f'"{text[:40]}" is neither an address, a network nor a list name')
        entries.append(text)
    return tuple(entries)


def resolve_never_lists(
    handlers: dict[str, HandlerConfig], lists: Mapping[str, ListConfig]
) -> dict[str, HandlerConfig]:
    """Expand list names in ``never`` into ``never_networks``; one set per handler."""
    resolved: dict[str, HandlerConfig] = {}
    owners: dict[tuple[object, ...], str] = {}
    for name, handler in handlers.items():
        settings = handler.settings
        if not isinstance(settings, NftablesSettings):
            resolved[name] = handler
            continue
        where = (settings.family, settings.table, settings.set)
        if where in owners:
            raise ConfigError(
                f"handler '{owners[where]}' already bans into table {where[1]} set "
                f"{where[2]}: each nftables handler needs a set of its own",
                handler.marks.get("set", handler.mark),
                f"handlers.{name}.set",
            )
        owners[where] = name
        networks: list[tuple[IpNetwork, str]] = []
        for index, entry in enumerate(settings.never):
            if not isinstance(entry, str):
                networks.append((entry, ""))
                continue
            mark = handler.marks.get(f"never[{index}]", handler.mark)
            found = lists.get(entry)
            if found is None:
                known = ", ".join(sorted(lists)) or "none declared"
                raise ConfigError(
                    f"unknown list '{entry}' (lists: {known})", mark, f"handlers.{name}.never"
                )
            if not found.networks:
                raise ConfigError(
                    f"list '{entry}' holds no address or network", mark, f"handlers.{name}.never"
                )
            networks.extend((network, entry) for network in found.networks)
        expanded = dataclasses.replace(settings, never_networks=tuple(networks))
        resolved[name] = dataclasses.replace(handler, settings=expanded)
    return resolved

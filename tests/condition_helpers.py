"""Typed conditions for tests, written the way a rule file writes them: ``leaf(field, op,
value)`` goes through the loader's own checks, so a test gets exactly the leaf a config gives.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from logwatchd.config.model import Leaf, ListConfig
from logwatchd.config.nodes import Node
from logwatchd.config.schema_rules import predicate
from logwatchd.errors import Mark

HERE = Mark("<test>")


def leaf(field: str, op: str, value: Any, icase: bool = False) -> Leaf:
    """``{field: F, OP: V}``; a compiled regex stands for its text (icase if it ignores case),
    a parsed network for its address/prefix text."""
    if isinstance(value, re.Pattern):
        icase = icase or bool(value.flags & re.IGNORECASE)
        value = value.pattern
    entries = {"field": field, op: value}
    if icase:
        entries["icase"] = True
    # the loader checks that a list exists; the test gives the lists to the engine itself
    lists = {value: ListConfig(value, frozenset())} if op == "in_list" else {}
    built = predicate(_node(entries), lists)
    assert isinstance(built, Leaf)
    return built


def _node(value: Any) -> Node:
    if isinstance(value, dict):
        return Node({key: _node(item) for key, item in value.items()}, HERE, "")
    if isinstance(value, tuple | list):
        return Node([_node(item) for item in value], HERE, "")
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return Node(str(value), HERE, "")
    return Node(value, HERE, "")

"""The YAML tree as the schema sees it: every value with its file, line and key path.

The loader builds ``Node`` trees; the schema reads them through the helpers here, which turn
every type or key problem into a ``ConfigError`` naming file, line and key path.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import os
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from logwatchd.config.durations import parse_duration
from logwatchd.errors import ConfigError, Mark

if TYPE_CHECKING:
    import jinja2


@dataclass(slots=True)
class Node:
    """One YAML value. ``value`` is ``dict[str, Node]``, ``list[Node]`` or a plain scalar.

    ``mark`` is the line a person looks at: the key's line for a mapping entry, the item's
    line for a list item. ``value_line`` is where the value itself starts (block scalars
    start on the line after their ``|``), which places template errors exactly.
    """

    value: Any
    mark: Mark
    path: str
    value_line: int = 0
    block: bool = False  # a ``|`` or ``>`` scalar: its text begins on the next line
    base_dir: str = ""  # the directory relative paths in this node resolve against
    text: str | None = None  # a scalar's source text, before YAML typed it

    def child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def error(self, message: str) -> ConfigError:
        return ConfigError(message, self.mark, self.path)


@dataclass(slots=True)
class Mapping:
    """A checked mapping node: unknown keys already rejected."""

    node: Node
    entries: dict[str, Node] = field(default_factory=dict)

    def get(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        if entry is None or entry.value is None:
            return None  # `key: null` (or `key:`) means "not given"
        return entry

    def need(self, key: str) -> Node:
        entry = self.get(key)
        if entry is None:
            raise self.node.error(f"missing required key '{key}'")
        return entry

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def given(self, readers: dict[str, Callable[[Node], Any]]) -> dict[str, Any]:
        """Each key that is given, read by its reader (in the readers' order): keyword
        arguments for a dataclass whose defaults stand for the keys left out."""
        return {
            key: read(node) for key, read in readers.items() if (node := self.get(key)) is not None
        }


# what YAML gave, for "expected X, got Y"; bool before int, which it is a subclass of
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (dict, "a mapping"),
    (list, "a list"),
    (dt.date, "a date"),
)


def type_name(value: Any) -> str:
    return next(
        (name for kind, name in _TYPE_NAMES if isinstance(value, kind)), type(value).__name__
    )


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f' ("{value[:40]}")'
    if isinstance(value, dict | list) or value is None:
        return ""
    return f" ({value})"


def wrong_type(node: Node, expected: str) -> ConfigError:
    return node.error(f"expected {expected}, got {type_name(node.value)}{_shown(node.value)}")


def mapping(node: Node, allowed: Collection[str], required: Collection[str] = ()) -> Mapping:
    """Check ``node`` is a mapping whose keys are all in ``allowed``."""
    if not isinstance(node.value, dict):
        raise wrong_type(node, "a mapping")
    for key, entry in node.value.items():
        if key not in allowed:
            raise entry.error(unknown_key_message(key, allowed))
    checked = Mapping(node, node.value)
    for key in required:
        checked.need(key)
    return checked


def unknown_key_message(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.7)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}; allowed: {', '.join(sorted(allowed))}"


def items(node: Node, what: str = "a list") -> list[Node]:
    if not isinstance(node.value, list):
        raise wrong_type(node, what)
    return node.value


def string(node: Node, *, empty_ok: bool = False) -> str:
    if not isinstance(node.value, str):
        raise wrong_type(node, "a string")
    if not empty_ok and not node.value.strip():
        raise node.error("must not be empty")
    if "\0" in node.value:
        raise node.error("must not contain a NUL character")
    return node.value


def scalar_text(node: Node) -> str:
    """A string, or a number written without quotes (argv elements, env values)."""
    if isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return str(node.value)
    return string(node, empty_ok=True)


def strings(node: Node, *, single_ok: bool = True, empty_ok: bool = False) -> list[str]:
    """A list of strings; a single string stands for a one-item list when ``single_ok``."""
    if single_ok and isinstance(node.value, str):
        return [string(node)]
    values = [string(item) for item in items(node, "a list of strings")]
    if not values and not empty_ok:
        raise node.error("must not be an empty list")
    return values


def integer(node: Node, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(node, "an integer")
    if minimum is not None and value < minimum:
        raise node.error(f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise node.error(f"must be at most {maximum}, got {value}")
    return value


def number(node: Node) -> int | float:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(node, "a number")
    return value


def boolean(node: Node) -> bool:
    if not isinstance(node.value, bool):
        raise wrong_type(node, "true or false")
    return node.value


def choice(node: Node, choices: Collection[str]) -> str:
    value = node.value
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.7)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        shown = f'"{value}"' if isinstance(value, str) else type_name(value)
        raise node.error(f"{shown} is not one of {', '.join(choices)}{hint}")
    return value


def duration(node: Node, *, positive: bool = False) -> float:
    if isinstance(node.value, dict | list) or node.value is None:
        raise wrong_type(node, "a duration such as 30s, 10m, 1h")
    try:
        seconds = parse_duration(node.value)
    except ValueError as exc:
        raise node.error(str(exc)) from None
    if positive and seconds <= 0:
        raise node.error("must be longer than 0s")
    return seconds


def path(node: Node) -> str:
    """A file path; a relative one resolves against the node's base directory."""
    text = string(node)
    return os.path.normpath(os.path.join(node.base_dir, text))


def regex(node: Node, flags: int = 0) -> re.Pattern[str]:
    text = string(node)
    try:
        return re.compile(text, flags)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise node.error(f"bad regex: {exc.msg}{where}") from None


def template(node: Node) -> str:
    """A Jinja2 template string, syntax-checked (an error names the template's own line)."""
    text = string(node, empty_ok=True)
    first_line = node.value_line + 1 if node.block else node.value_line
    check_template_syntax(text, node.mark.file, first_line, node.path)
    return text


def check_template_syntax(text: str, file: str, first_line: int, key: str) -> None:
    import jinja2  # loaded only for a config that has templates: test starts faster without

    try:
        _parse_only().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise ConfigError(f"template syntax error: {exc.message}", Mark(file, line), key) from None


@functools.cache
def _parse_only() -> jinja2.Environment:
    import jinja2  # as in check_template_syntax

    return jinja2.Environment(autoescape=False)  # noqa: S701 (parsed, never rendered here)

"""Reading config files: YAML (safe semantics) into ``Node`` trees with marks, and ``include``.

Only the main file may ``include``; an included file that names ``include`` is an error
(see schema). That keeps the set of files flat and obvious, and rules out cycles. A file
matched twice (two patterns, or the main file matched by its own glob) is read once.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import yaml

from logwatchd.config.nodes import Node, strings
from logwatchd.errors import ConfigError, Mark

MAX_FILE_BYTES = 16 * 1024 * 1024
# the top-level keys a config file may have (schema.MAIN_KEYS): a file with none is not one
CONFIG_KEYS = frozenset(
    {"version", "include", "daemon", "defaults", "lists", "sources", "parsers", "rules", "handlers"}
)
MAX_NODES = 200_000  # alias expansion could otherwise blow up ("billion laughs")
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"
_GLOB_CHARS = frozenset("*?[")
# libyaml's loader composes the same nodes with the same marks, several times faster.
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
TOP_LEVEL = "the top level must be a mapping of keys (version, sources, ...)"
_QUOTED = re.compile(r"'[^'\n]{2,}'")  # a token of the file quoted in a YAML error


@dataclass(frozen=True)
class Layer:
    """One file's top-level mapping. ``included_from`` is None for the main file."""

    file: str
    root: Node
    included_from: Mark | None = None


def read_layers(path: str, *, base_dir: str | None = None) -> list[Layer]:
    """The main file and every file it includes, in include order."""
    text = read_file(path)
    main_dir = os.path.dirname(path)
    return _with_includes(text, path, main_dir, base_dir)


def read_text_layers(text: str, name: str, *, base_dir: str) -> list[Layer]:
    """Like ``read_layers`` for text that is not in a file; includes resolve against base_dir."""
    return _with_includes(text, name, base_dir, base_dir)


def read_file(path: str, mark: Mark | None = None, key: str = "") -> str:
    """A config file's text. Only a regular file: a FIFO or a device would block (a
    ``check`` or a reload that never returns) or never end."""
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", mark, key) from None
    kind = _kind(os.fstat(fd).st_mode)
    if kind != "regular file":
        os.close(fd)
        raise ConfigError(f"{path} is a {kind}, not a regular file", mark, key)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}", mark, key) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_FILE_BYTES} bytes", mark, key)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8 (byte {exc.start})", Mark(path)) from None


def _with_includes(text: str, name: str, include_dir: str, base_dir: str | None) -> list[Layer]:
    base_dir = os.path.abspath(base_dir) if base_dir else None
    main = Layer(name, parse_yaml(text, name, base_dir or _absdir(name)))
    layers = [main]
    seen = {os.path.realpath(name)}
    include = main.root.value.get("include")
    if include is None or include.value is None:
        return layers
    for file, mark in _expand(include, include_dir):
        real = os.path.realpath(file)
        if real in seen:
            continue
        seen.add(real)
        content = read_file(file, mark, include.path)
        root = _included_yaml(content, file, base_dir or _absdir(file), mark, include.path)
        layers.append(Layer(file, root, mark))
    return layers


def _included_yaml(text: str, file: str, base_dir: str, mark: Mark, key: str) -> Node:
    """An included file's tree. One whose top level is not a mapping, or has none of a config
    file's keys, is named as not a logwatchd config, and nothing of its content is shown: an
    include pattern can reach a file that holds secrets (``/etc/*``). In a YAML error, a
    quoted token of the file (a tag, a key) is left out too."""
    try:
        root = parse_yaml(text, file, base_dir)
    except ConfigError as exc:
        if exc.message == TOP_LEVEL:
            problem = "its top level is not a mapping of keys"
            raise ConfigError(f"{file} is not a logwatchd config ({problem})", mark, key) from None
        raise ConfigError(_QUOTED.sub("'...'", exc.message), exc.mark, exc.key) from None
    keys = set(root.value)
    if keys and not keys & CONFIG_KEYS:
        raise ConfigError(
            f"{file} is not a logwatchd config (none of its top-level keys is one of "
            f"{', '.join(sorted(CONFIG_KEYS))})",
            mark,
            key,
        )
    return root


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def _absdir(file: str) -> str:
    return os.path.dirname(os.path.abspath(file))


def _expand(include: Node, include_dir: str) -> list[tuple[str, Mark]]:
    """Files named by ``include``: globs sorted and may match nothing; literal paths must exist."""
    patterns = strings(include)
    entries = include.value if isinstance(include.value, list) else [include]
    found: list[tuple[str, Mark]] = []
    for pattern, entry in zip(patterns, entries, strict=True):
        full = os.path.join(include_dir, pattern)
        if _GLOB_CHARS & set(pattern):
            found.extend((file, entry.mark) for file in sorted(glob.glob(full)))
        elif os.path.exists(full):
            found.append((full, entry.mark))  # read_file refuses what is not a regular file
        else:
            raise entry.error(f"no such file: {full}")
    return found


def parse_yaml(text: str, name: str, base_dir: str) -> Node:
    """The document's top-level mapping as a Node tree (an empty file is an empty mapping)."""
    loader = _SAFE_LOADER(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Node({}, Mark(name, 1), "", 1, base_dir=base_dir)
        node = _Builder(loader, name, base_dir).build(root, "", Mark(name, 1), 0)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, name) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", Mark(name)) from None
    finally:
        loader.dispose()
    if not isinstance(node.value, dict):
        raise ConfigError(TOP_LEVEL, Mark(name, 1))
    return node


def _yaml_error(exc: yaml.MarkedYAMLError, name: str) -> ConfigError:
    where = exc.problem_mark or exc.context_mark
    line = where.line + 1 if where is not None else 0
    problem = " ".join(part for part in (exc.context, exc.problem) if part)
    return ConfigError(f"invalid YAML: {problem or exc}", Mark(name, line))


class _Builder:
    """Turns PyYAML's composed nodes into ``Node``s, rejecting duplicate keys."""

    def __init__(self, loader: yaml.SafeLoader, name: str, base_dir: str) -> None:
        self.loader = loader
        self.name = name
        self.base_dir = base_dir
        self.count = 0

    def build(self, ynode: yaml.Node, path: str, mark: Mark, depth: int) -> Node:
        self.count += 1
        if self.count > MAX_NODES or depth > MAX_DEPTH:
            shown = path if len(path) <= 60 else path[:60] + "..."
            raise ConfigError("document too large or too deeply nested (alias loop?)", mark, shown)
        node = Node(None, mark, path, ynode.start_mark.line + 1, base_dir=self.base_dir)
        if not isinstance(ynode, yaml.ScalarNode) and ynode.tag not in _COLLECTION_TAGS:
            raise ConfigError(f"invalid YAML: unsupported tag {ynode.tag}", self._mark(ynode), path)
        if isinstance(ynode, yaml.MappingNode):
            node.value = self._mapping(ynode, node, depth)
        elif isinstance(ynode, yaml.SequenceNode):
            node.value = [
                self.build(item, node.child_path(i), self._mark(item), depth + 1)
                for i, item in enumerate(ynode.value)
            ]
        else:
            assert isinstance(ynode, yaml.ScalarNode)  # other tags were refused above
            node.value = self._scalar(ynode, path)
            node.block = ynode.style in ("|", ">")
            node.text = ynode.value
        return node

    def _scalar(self, ynode: yaml.ScalarNode, path: str) -> Any:
        """The typed value; one YAML's own types cannot hold (a 5,000-digit integer, the
        date 2023-02-30, ``!!int abc``) is an error at its line, never a traceback."""
        try:
            return self.loader.construct_object(ynode, deep=True)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError):
            kind = ynode.tag.rsplit(":", 1)[-1]
            if kind == "int" and len(ynode.value) > 100:
                problem = f"an integer of {len(ynode.value)} characters is not a value here"
            else:
                problem = f"not a valid {kind} (quote it to make it text)"
            raise ConfigError(problem, self._mark(ynode), path) from None

    def _mark(self, ynode: yaml.Node) -> Mark:
        return Mark(self.name, ynode.start_mark.line + 1)

    def _mapping(self, ynode: yaml.MappingNode, parent: Node, depth: int) -> dict[str, Node]:
        own: dict[str, Node] = {}
        merged: dict[str, Node] = {}
        for key_node, value_node in ynode.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self._merged(value_node, parent, depth, merged))
                continue
            key = self._key(key_node, parent)
            if key in own:
                first = own[key].mark.line
                raise ConfigError(
                    f"duplicate key '{key}' (first at line {first})",
                    self._mark(key_node),
                    parent.child_path(key),
                )
            own[key] = self.build(
                value_node, parent.child_path(key), self._mark(key_node), depth + 1
            )
        return {**merged, **own}

    def _key(self, key_node: yaml.Node, parent: Node) -> str:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError("a key must be a plain string", self._mark(key_node), parent.path)
        # The text as written: ids like `on` or `no` stay strings instead of YAML 1.1 booleans.
        text: Any = key_node.value
        return str(text)

    def _merged(
        self, value_node: yaml.Node, parent: Node, depth: int, earlier: dict[str, Node]
    ) -> dict[str, Node]:
        """``<<: *anchor`` (or a list of anchors): earlier sources win, as in YAML's merge."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        result: dict[str, Node] = {}
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise ConfigError("'<<' must merge a mapping", self._mark(value_node), parent.path)
            for key, node in self._mapping(source, parent, depth + 1).items():
                if key not in earlier and key not in result:
                    result[key] = node
        return result

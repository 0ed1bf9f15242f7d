"""A condition compiled to one generated Python function: the tests ``predicates.py`` builds
as a tree of closures, written out as one boolean expression, so a line costs one call per
condition instead of one per node.

The generated code does exactly what the closures do, in the same order (``and``/``or``
short-circuit as ``all``/``any`` stop), and writes the same groups to ``ext``. Only the
common cases are written out: ``in``/``equals`` over strings, ``exists`` and ``regex`` on a
field no rule regex sets, when the value is a ``str``. Any other value, and every other
operator, goes to the leaf's own closure (``predicates.compile_leaf``), so what is not
written out is, by construction, what the closures do. Nodes that work on a scratch copy of
``ext`` (an ``any`` branch that extracts, a ``not`` around a regex with groups) become
functions of their own, called the way the closures call them.

The source is built from the config's structure only: field names, values and patterns go
into the function's namespace as constants, never into its text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from logwatchd.config.model import (
    All,
    AnyOf,
    Equals,
    Exists,
    In,
    Leaf,
    ListConfig,
    Not,
    Predicate,
    Regex,
)
from logwatchd.rules.predicates import (
    CompiledPredicate,
    Gates,
    compile_leaf,
    extracted_names,
    no_gates,
)
from logwatchd.rules.values import MISSING, Test


def compile_generated(
    pred: Predicate, lists: Mapping[str, ListConfig], gates: Gates = no_gates
) -> CompiledPredicate:
    """What ``predicates.compile_predicate`` gives, as one generated function."""
    produced = extracted_names(pred)
    writer = _Writer(lists, produced, gates)
    return CompiledPredicate(writer.function(pred), produced)


def _put_groups(ext: dict[str, Any], found: re.Match[str]) -> bool:
    groups = found.groupdict()
    if None not in groups.values():  # every group took part: the common case
        ext.update(groups)
        return True
    for group, captured in groups.items():
        if captured is not None:
            ext[group] = captured
    return True


def _scratched(test: Test, fields: dict[str, Any], ext: dict[str, Any] | None, hits: int) -> bool:
    """An ``any`` branch that extracts: its groups stay out of ``ext`` unless it holds."""
    if ext is None:
        return test(fields, ext, hits)
    scratch = dict(ext)
    if test(fields, scratch, hits):
        ext.update(scratch)
        return True
    return False


class _Writer:
    def __init__(self, lists: Mapping[str, ListConfig], produced: frozenset[str], gates: Gates):
        self.lists = lists
        self.produced = produced
        self.gates = gates
        self.names: dict[str, Any] = {
            "MISSING": MISSING,
            "_put_groups": _put_groups,
            "_scratched": _scratched,
        }
        self.count = 0

    def constant(self, value: Any) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.names[name] = value
        return name

    def local(self) -> str:
        self.count += 1
        return f"v{self.count}"

    def function(self, pred: Predicate) -> Test:
        """A function of its own for the node (its locals are its own)."""
        body = self.expression(pred)
        self.count += 1
        name = f"test{self.count}"
        source = (
            f"def {name}(fields, ext, hits):\n"
            f"    if {body}:\n"
            "        return True\n"
            "    return False\n"
        )
        exec(compile(source, f"<condition {name}>", "exec"), self.names)  # noqa: S102
        test: Test = self.names[name]
        return test

    def expression(self, pred: Predicate) -> str:
        if isinstance(pred, Leaf):
            return self.leaf(pred)
        if isinstance(pred, Not):
            inner = pred.item
            if not extracted_names(inner):
                return f"(not {self.expression(inner)})"
            # groups matched inside `not` describe a line the rule rejects: keep them out
            test = self.constant(self.function(inner))
            return f"(not {test}(fields, None if ext is None else dict(ext), hits))"
        if isinstance(pred, All):
            items = [self.expression(item) for item in pred.items]
            if len(items) == 1:  # as the closures do: a lone item is its own test
                return items[0]
            gate = self.gates(pred)
            if gate:
                items.insert(0, f"hits & {gate}")
            return "(" + " and ".join(items) + ")" if items else "True"
        assert isinstance(pred, AnyOf)
        branches = []
        for item in pred.items:
            scratched = not isinstance(item, Leaf) and bool(extracted_names(item))
            if scratched:
                test = self.constant(self.function(item))
                text = f"{self.constant(_scratched)}({test}, fields, ext, hits)"
            else:
                text = self.expression(item)
            if len(pred.items) == 1 and not scratched:
                return text  # a lone branch is its own test, without its gate
            gate = self.gates(item)
            branches.append(f"(hits & {gate} and {text})" if gate else text)
        return "(" + " or ".join(branches) + ")" if branches else "False"

    def leaf(self, leaf: Leaf) -> str:
        gate = self.gates(leaf)
        closure = self.constant(compile_leaf(leaf, self.lists, self.produced, gate))
        fallback = f"{closure}(fields, ext, hits)"
        if leaf.field in self.produced or leaf.icase:
            return fallback
        field = self.constant(leaf.field)
        if isinstance(leaf, Exists):
            return f"({field} {'in' if leaf.present else 'not in'} fields)"
        value = self.local()
        got = f"({value} := fields.get({field}, MISSING))"
        if isinstance(leaf, Equals | In):
            texts = _plain_texts(leaf)
            if texts is None:
                return fallback
            # a str is tested here; a missing field never matches; anything else the
            # closure converts as it does
            return (
                f"({got}.__class__ is str and {value} in {self.constant(texts)}"
                f" or {value}.__class__ is not str and {value} is not MISSING and {fallback})"
            )
        if isinstance(leaf, Regex):
            pattern = leaf.pattern
            search = self.constant(pattern.search)
            if pattern.groupindex:
                found = self.local()
                hold = (
                    f"(({found} := {search}({value})) is not None"
                    f" and (ext is None or _put_groups(ext, {found})))"
                )
            else:
                hold = f"{search}({value}) is not None"
            on_str = f"{got}.__class__ is str and {hold}"
            text = (
                f"({on_str} or {value}.__class__ is not str and {value} is not MISSING"
                f" and {fallback})"
            )
            return f"(hits & {gate} and {text})" if gate else text
        return fallback


def _plain_texts(leaf: Equals | In) -> frozenset[str] | None:
    """The strings an ``in``/``equals`` compares a str with, when that is all it does (no
    numbers, which a numeric string would equal)."""
    values = leaf.values if isinstance(leaf, In) else (leaf.value,)
    texts = [value for value in values if isinstance(value, str)]
    return frozenset(texts) if len(texts) == len(values) else None

"""The floor of any pure-Python rule loop on the generated auth.log, with the packs' own regexes.

A hand-written loop that does the least a Python engine for these rules must do: read in
1 MiB blocks and split, reject lines with logwatchd's own prefilter, parse the syslog header
with one regex, and per rule test `program` and run its message regexes (the anchored branches
of an `any` as one alternation, as logwatchd does), then count each match in a dict by key.
No windows, cooldowns, connection context or sequences: each row adds one piece, so the
figures bound from above what logwatchd's full engine could reach on CPython, and show
whether the issue's 1.5M lines/s is reachable by any per-line Python engine on this mix.

    python bench/floor.py                   # 1,000,000 lines
    python bench/floor.py --lines 200000
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import PACKS_CONFIG, blocks, ensure_log, machine, table

from logwatchd.clock import SystemClock
from logwatchd.config import load
from logwatchd.config.model import All, AnyOf, Leaf, Predicate
from logwatchd.pipeline import build_engine
from logwatchd.rules.fused import combine_anchored

# the builtin syslog parser's RFC 3164 shape, reduced to the fields the packs read
HEADER = re.compile(
    r"(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) "
    r"(?P<program>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<message>.*)"
)

Matcher = Callable[[str], "re.Match[str] | None"]


def regexes(pred: Predicate) -> list[re.Pattern[str]]:
    """The message regexes of a predicate, in order (any branch may match)."""
    if isinstance(pred, Leaf):
        return [pred.value] if pred.op == "regex" and pred.field == "message" else []
    if isinstance(pred, All | AnyOf):
        return [found for item in pred.items for found in regexes(item)]
    return []


def programs(pred: Predicate) -> frozenset[str] | None:
    if isinstance(pred, Leaf) and pred.field == "program" and pred.op == "in":
        return frozenset(pred.value)
    if isinstance(pred, All):
        for item in pred.items:
            found = programs(item)
            if found is not None:
                return found
    return None


def one_matcher(patterns: list[re.Pattern[str]]) -> Matcher:
    combined = combine_anchored(patterns)
    if combined is not None:
        return combined[0]
    searches = [pattern.search for pattern in patterns]

    def first(text: str) -> re.Match[str] | None:
        for search in searches:
            found = search(text)
            if found is not None:
                return found
        return None

    return first


def plan(config: Any) -> list[tuple[str, frozenset[str] | None, Matcher]]:
    rules = []
    for rule in config.rules:
        preds = [rule.match] if rule.match else [s.match for s in rule.sequence.steps]
        patterns = [found for pred in preds for found in regexes(pred)]
        if rule.context is not None:  # learn and forget run on the same lines
            for extra in (rule.context.learn, rule.context.forget):
                if extra is not None:
                    patterns += regexes(extra)
        if patterns:
            rules.append((rule.id, programs(preds[0]), one_matcher(patterns)))
    return rules


def run(path: Path, stage: str, wants: Callable[[str], bool], rules: list[Any]) -> tuple[int, int]:
    lines = kept = 0
    counts: dict[tuple[str, str], int] = {}
    for text in blocks(path):
        for raw in text.split("\n"):
            lines += 1
            if stage == "split" or not wants(raw):
                continue
            kept += 1
            if stage == "prefilter":
                continue
            head = HEADER.match(raw)
            if head is None or stage == "header":
                continue
            program, message = head.group("program", "message")
            for rule_id, allowed, matcher in rules:
                if allowed is not None and program not in allowed:
                    continue
                found = matcher(message)
                if found is not None and stage == "count":
                    key = (rule_id, found.lastgroup or "")
                    counts[key] = counts.get(key, 0) + 1
    return lines, kept


STAGES = {
    "split": "read + decode + split",
    "prefilter": "+ logwatchd's prefilter (Engine.wants) per line",
    "header": "+ syslog header regex for the kept lines",
    "regex": "+ per rule: program test and its message regexes",
    "count": "+ a dict count per match (the floor of a counting engine)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    path = ensure_log(args.lines)
    config = load(str(PACKS_CONFIG))
    engine, _ = build_engine(config, SystemClock(), "bench")
    rules = plan(config)

    def wants(raw: str) -> bool:
        return engine.wants("auth", raw)

    print(machine())
    print(f"{len(rules)} rules, file {path}")
    rows = []
    for stage, label in STAGES.items():
        started = time.perf_counter()
        lines, kept = run(path, stage, wants, rules)
        spent = time.perf_counter() - started
        rows.append([label, f"{spent:.2f}", f"{lines / spent:,.0f}", f"{kept:,}"])
    print(table(["stage", "s", "lines/s", "lines kept"], rows))


if __name__ == "__main__":
    main()

"""Time budget per stage of the replay path, in-process, on the generated auth.log.

Each row adds one stage to the one before, using logwatchd's own pieces, so the difference
between rows is what that stage costs; the last rows show what a block-level prefilter
(one search over a whole block instead of a test per line) would leave to do. Together
with hotspots.py it tells where the time goes and how far the hot path is from the floor
of a Python loop.

    python bench/stages.py                       # 1,000,000 lines
    python bench/stages.py --lines 200000
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import PACKS_CONFIG, blocks, byte_blocks, count_lines, ensure_log, machine, table


def split_only(path: Path) -> int:
    count = 0
    for text in blocks(path):
        count += len(text.split("\n")) - 1
    return count


def literal_loop(path: Path, literal: str) -> int:
    """The floor the issue quotes: a Python loop with one `in` test per line."""
    count = 0
    for text in blocks(path):
        for raw in text.split("\n"):
            if literal in raw:
                count += 1
    return count


def with_prefilter(path: Path, wants: Callable[[str], bool]) -> int:
    count = 0
    for text in blocks(path):
        for raw in text.split("\n")[:-1]:
            if wants(raw):
                count += 1
    return count


def block_candidates(text: str, search: re.Pattern[str]) -> Iterator[str]:
    """Lines of a block that hold a literal, found by one regex over the whole block."""
    position, end = 0, len(text)
    while position < end:
        found = search.search(text, position)
        if found is None:
            return
        start = text.rfind("\n", 0, found.start()) + 1
        stop = text.find("\n", found.end())
        stop = end if stop < 0 else stop
        yield text[start:stop]
        position = stop + 1


def block_prefilter(path: Path, search: re.Pattern[str]) -> int:
    return sum(sum(1 for _ in block_candidates(text, search)) for text in blocks(path))


def block_find(path: Path, literals: list[str]) -> int:
    """Lines holding a literal, found by str.find of each literal over the whole block."""
    kept = 0
    for text in blocks(path):
        starts: set[int] = set()
        for literal in literals:
            position = text.find(literal)
            while position >= 0:
                starts.add(text.rfind("\n", 0, position) + 1)
                position = text.find(literal, text.find("\n", position))
                if position < 0:
                    break
        kept += len(starts)
    return kept


def hyperscan_scan(path: Path, literals: list[str]) -> Callable[[], int] | None:
    """Lines holding a literal, found by one Hyperscan pass per block (if installed)."""
    try:
        import hyperscan  # type: ignore[import-not-found]
    except ImportError:
        return None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    patterns = [re.escape(text).encode() for text in literals]
    database.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns))

    def on_match(ident: int, start: int, end: int, flags: int, ends: list[int]) -> None:
        ends.append(end)

    def run() -> int:
        kept = 0
        for block in byte_blocks(path):
            ends: list[int] = []
            database.scan(block, match_event_handler=on_match, context=ends)
            kept += len({block.rfind(b"\n", 0, end) for end in ends})
        return kept

    return run


def minimal(texts: list[str]) -> list[str]:
    """Drop a literal that contains another: wherever it appears, the shorter one does too."""
    kept: list[str] = []
    for text in sorted(set(texts), key=len):
        if not any(short in text for short in kept):
            kept.append(text)
    return kept


def full_pipeline(path: Path, handle: Callable[[str, int], object]) -> int:
    count = 0
    for text in blocks(path):
        for raw in text.split("\n")[:-1]:
            count += 1
            handle(raw, count)
    return count


class Candidates:
    """The events the full prefilter keeps, parsed once, and what an engine needs for them."""

    def __init__(self, config: Any, log: Path, source: str) -> None:
        from logwatchd.events import Line
        from logwatchd.pipeline import Pipeline, ReplayClock, build_engine

        self.config, self.source = config, source
        self.clock = ReplayClock()
        engine, parsers = build_engine(config, self.clock, host="bench")
        pipeline = Pipeline(engine, parsers, replay=self.clock)
        reference = os.stat(log).st_mtime
        self.events: list[Any] = []
        lines = (r for text in blocks(log) for r in text.split("\n")[:-1])
        for number, raw in enumerate(lines, 1):
            if engine.wants(source, raw):
                line = Line(source, raw, reference, f"bench:{number}", None, number)
                event = pipeline.parse(line)
                if event is not None:
                    self.events.append(event)
        self.verbatim = {sid: parser.verbatim_fields for sid, parser in parsers.items()}

    def engine(self, rules: list[Any], *, dispatch: bool = True) -> Any:
        from logwatchd.rules import Engine
        from logwatchd.rules.dispatch import Dispatch

        engine = Engine(
            rules,
            self.config.lists,
            host="bench",
            max_keys_per_rule=self.config.daemon.max_keys_per_rule,
            clock=self.clock,
            verbatim_fields=self.verbatim,
        )
        if not dispatch:  # every rule sees every event (its own literal checks still run)
            engine._dispatch_for = lambda sid: Dispatch.everything(engine._plan(sid))
        return engine

    def run(self, engine: Any) -> list[str]:
        matches: list[Any] = []
        fired = 0
        started = time.perf_counter()
        for event in self.events:
            self.clock.at = event.time
            fired += len(engine.process(event, matches))
        took = time.perf_counter() - started
        micro = 1e6 * took / max(1, len(self.events))
        return [f"{took:.2f}", f"{micro:.2f}", f"{len(matches):,}", f"{fired:,}"]


def per_rule(candidates: Candidates) -> list[list[str]]:
    """Each rule alone (an Engine of one rule), then all of them with and without the
    dispatch table (rules/dispatch.py), best of three for the last two."""
    rows = []
    for rule in candidates.config.rules:
        alone = candidates.engine([rule])
        if alone.rules_for(candidates.source):
            rows.append([rule.id, *candidates.run(alone)])
    for label, dispatch in (("all rules, dispatch table", True), ("all rules, no table", False)):
        runs = [candidates.run(candidates.engine(candidates.config.rules, dispatch=dispatch))
                for _ in range(3)]  # fmt: skip
        rows.append([label, *min(runs, key=lambda row: float(row[0]))])
    return rows


def main(argv: list[str] | None = None) -> int:
    from logwatchd.config import load
    from logwatchd.events import Line
    from logwatchd.pipeline import Pipeline, ReplayClock, build_engine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("rfc3164", "rfc3339", "mix"), default="rfc3164")
    parser.add_argument("--file", type=Path)
    parser.add_argument("--config", type=Path, default=PACKS_CONFIG)
    parser.add_argument("--no-per-rule", action="store_true", help="skip the per-rule table")
    args = parser.parse_args(argv)
    log = args.file or ensure_log(args.lines, args.format)
    config = load(str(args.config))
    clock = ReplayClock()
    engine, parsers = build_engine(config, clock, host="bench")
    source = "auth"
    reference = os.stat(log).st_mtime
    requirements = engine.requirements(source)
    literals = minimal([text for req in requirements.values() if req for text, _ in req])
    alternation = re.compile("|".join(re.escape(text) for text in literals))
    parse = parsers[source].parse

    def parse_candidate(raw: str, number: int) -> object:
        return parse(Line(source, raw, reference, f"bench:{number}", None, number))

    pipeline = Pipeline(engine, parsers, replay=clock)

    def handle(raw: str, number: int) -> object:
        return pipeline.handle(Line(source, raw, reference, f"bench:{number}", None, number))

    def parse_after_prefilter(raw: str, number: int) -> object:
        return parse_candidate(raw, number) if engine.wants(source, raw) else None

    stages: list[tuple[str, Callable[[], int] | None]] = [
        ("read + decode + split", lambda: split_only(log)),
        ("+ one `in` test per line (issue's floor)", lambda: literal_loop(log, "Failed")),
        (
            "+ engine.wants() per line (the prefilter)",
            lambda: with_prefilter(log, lambda r: engine.wants(source, r)),
        ),
        ("block-level: one alternation regex per block", lambda: block_prefilter(log, alternation)),
        ("block-level: str.find of each literal per block", lambda: block_find(log, literals)),
        ("block-level: one Hyperscan scan per block (bytes)", hyperscan_scan(log, literals)),
        (
            "+ Line() and parse() for lines wants() keeps",
            lambda: full_pipeline(log, parse_after_prefilter),
        ),
        ("full Pipeline.handle() (prefilter, parse, rules)", lambda: full_pipeline(log, handle)),
    ]
    print(f"# stages: {log}")
    print(f"# machine: {machine()}")
    print(f"# {len(literals)} prefilter literals for source {source!r} (minimal set): {literals}")
    total = count_lines(log)
    rows = []
    for label, run in stages:
        if run is None:
            rows.append([label, "-", "not installed", "-"])
            continue
        started = time.perf_counter()
        count = run()
        took = time.perf_counter() - started
        rows.append([label, f"{took:.2f}", f"{total / took:,.0f}", f"{count:,}"])
    print()
    print(table(["stage", "s", "lines/s", "lines counted / kept"], rows))
    if not args.no_per_rule:
        print()
        print(f"each rule alone over the {rows[2][3]} lines the prefilter keeps, parsed once:")
        print()
        headers = ["rule", "s", "µs per candidate", "matches", "alerts"]
        print(table(headers, per_rule(Candidates(config, log, source))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

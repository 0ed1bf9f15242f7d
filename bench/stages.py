"""Time budget per stage of the replay path, in-process, on the generated auth.log.

Each row adds one stage to the one before, using logwatchd's own pieces, so the difference
between rows is what that stage costs: reading, the scan (Hyperscan over 1 MiB blocks, and
for comparison Python's ``re`` line by line), decoding and parsing the lines it selects,
and the whole of ``logwatchd test`` in-process. CPU seconds (``time.process_time``), best of
``--repeat`` runs: the host is shared, so wall time says more about the neighbours.

    python bench/stages.py                       # 1,000,000 lines
    python bench/stages.py --lines 200000
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import PACKS_CONFIG, byte_blocks, count_lines, ensure_log, machine, table


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, int]:
    took, count = float("inf"), 0
    for _ in range(repeat):
        started = time.process_time()
        count = run()
        took = min(took, time.process_time() - started)
    return took, count


def main(argv: list[str] | None = None) -> int:
    from logwatchd.commands import replay
    from logwatchd.config import load
    from logwatchd.events import Line
    from logwatchd.pipeline import Pipeline, ReplayClock, build_engine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("rfc3164", "rfc3339", "mix"), default="rfc3164")
    parser.add_argument("--file", type=Path)
    parser.add_argument("--config", type=Path, default=PACKS_CONFIG)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    log = args.file or ensure_log(args.lines, args.format)
    config = load(str(args.config))
    source = "auth"
    engine, parsers = build_engine(config, ReplayClock(), host="bench")
    python_engine, _ = build_engine(config, ReplayClock(), host="bench", native=False)
    scan, python_scan = engine.scan(source), python_engine.scan(source)
    parse = parsers[source].parse
    reference = os.stat(log).st_mtime
    blocks = list(byte_blocks(log))

    def read_split() -> int:
        return sum(len(block.decode("utf-8", "replace").split("\n")) - 1 for block in blocks)

    def native() -> int:
        return sum(len(scan.select_block(block) or ()) for block in blocks)

    def python() -> int:
        kept = 0
        for block in blocks:
            for raw in block.decode("utf-8", "replace").split("\n")[:-1]:
                kept += python_scan.hits(raw) & python_scan.scanned != 0
        return kept

    def native_parse() -> int:
        parsed = 0
        for block in blocks:
            for index, end, _hits in scan.select_block(block) or ():
                raw = block[block.rfind(b"\n", 0, end) + 1 : end].decode("utf-8", "replace")
                line = Line(source, raw, reference, f"bench:{index}", None, index)
                parsed += parse(line) is not None
        return parsed

    def whole() -> int:
        clock = ReplayClock()
        fresh, fresh_parsers = build_engine(config, clock, host="bench")
        pipeline = Pipeline(fresh, fresh_parsers, replay=clock)
        out = replay.Output(True, io.StringIO())
        spec = config.source(source)
        replay.replay_file(str(log), spec, pipeline, out, None, want_matches=False, limit=65536)
        return sum(pipeline.stats.alerts.values())

    stages: list[tuple[str, Callable[[], int]]] = [
        ("read + decode + split (the old path's floor)", read_split),
        ("native scan of each 1 MiB block", native),
        ("re scan, line by line (no wheel)", python),
        ("native scan + decode, Line() and parse() of selected", native_parse),
        ("logwatchd test in-process (alerts)", whole),
    ]
    print(f"# stages: {log}")
    print(f"# machine: {machine()}")
    total = count_lines(log)
    rows: list[list[Any]] = []
    for label, run in stages:
        took, count = best_of(args.repeat, run)
        rows.append([label, f"{took:.2f}", f"{total / took:,.0f}", f"{count:,}"])
    print()
    print(table(["stage (CPU s, best of runs)", "s", "lines/s", "lines kept / alerts"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

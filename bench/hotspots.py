"""Where ``logwatchd test`` spends its time on the generated auth.log (a profile).

Runs the CLI in-process under a profiler and prints the functions with the most time of
their own (self time) and the call tree. pyinstrument (sampling, low distortion) is used
when installed (``pip install pyinstrument``), else cProfile (exact counts, but its per-call
overhead inflates small hot functions).

    python bench/hotspots.py                         # 1,000,000 lines, pyinstrument if present
    python bench/hotspots.py --tool cprofile --lines 200000 --top 30
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import io
import os
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import PACKS_CONFIG, REPO, ensure_log, machine, table


def run_cli(config: Path, log: Path) -> None:
    from logwatchd.cli import main

    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        status = main(["test", "-c", str(config), "--source", "auth", str(log)])
    if status != 0:
        raise SystemExit(f"logwatchd test exited {status}")


def short(path: str) -> str:
    for base in (str(REPO) + "/", sys.prefix + "/lib/"):
        if path.startswith(base):
            return path[len(base) :]
    return path


def with_cprofile(config: Path, log: Path, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(run_cli, config, log)
    for order in ("tottime", "cumulative"):
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats(order).print_stats(top)
        print(f"\n## cProfile, top {top} by {order}\n")
        text = stream.getvalue()
        print(text[text.find("   ncalls") :].replace(str(REPO) + "/", ""))


def self_times(frame: Any, into: dict[str, float]) -> None:
    """pyinstrument's tree folded into self time per function, across all call paths."""
    stack = [frame]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.is_synthetic:
            continue  # "[self]" and the like: already counted in the parent's self time
        name = f"{node.function} ({short(node.file_path or '?')}:{node.line_no})"
        into[name] += node.total_self_time


def with_pyinstrument(config: Path, log: Path, top: int) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    run_cli(config, log)
    session = profiler.stop()
    root = session.root_frame()
    totals: dict[str, float] = defaultdict(float)
    if root is not None:
        self_times(root, totals)
    whole = session.duration or 1.0
    rows = [
        [f"{seconds:.2f}", f"{100 * seconds / whole:.1f}", name]
        for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    ]
    print(f"\n## pyinstrument: top {top} functions by self time ({whole:.2f} s sampled)\n")
    print(table(["self s", "%", "function"], rows))
    print("\n## pyinstrument call tree\n")
    print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("rfc3164", "rfc3339", "mix"), default="rfc3164")
    parser.add_argument("--file", type=Path)
    parser.add_argument("--config", type=Path, default=PACKS_CONFIG)
    parser.add_argument("--tool", choices=("auto", "pyinstrument", "cprofile"), default="auto")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    log = args.file or ensure_log(args.lines, args.format)
    tool = args.tool
    if tool == "auto":
        tool = "pyinstrument" if importlib.util.find_spec("pyinstrument") else "cprofile"
    print(f"# profile ({tool}): logwatchd test -c {args.config} --source auth {log}")
    print(f"# machine: {machine()}")
    started = time.perf_counter()
    if tool == "pyinstrument":
        with_pyinstrument(args.config, log, args.top)
    else:
        with_cprofile(args.config, log, args.top)
    print(f"\nprofiled run took {time.perf_counter() - started:.1f} s (profiler overhead included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

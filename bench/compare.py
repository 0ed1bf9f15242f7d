"""The engine of another commit against this one: the same alerts, and how long each took.

Checks the other commit's tree out with ``git archive`` (nothing in the repository changes)
into the bench directory and runs ``logwatchd test --json`` of both, alternately, on the same
generated auth.log with the same config; every alert must be the same (all fields but
``fired_at``, which is the time of the run).

    python bench/compare.py 7296070                 # 1,000,000 lines, shipped packs
    python bench/compare.py 7296070 --lines 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import (
    LOGWATCHD,
    PACKS_CONFIG,
    REPO,
    WORK,
    compile_tree,
    ensure_log,
    machine,
    run_measured,
    table,
)


def checkout(commit: str) -> Path:
    tree = WORK / f"tree-{commit}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    compile_tree(tree)
    return tree


def alerts_of(stdout: str) -> list[str]:
    found = []
    for text in stdout.splitlines():
        record = json.loads(text)
        if record.get("kind") == "alert":
            record.pop("fired_at", None)
            found.append(json.dumps(record, sort_keys=True))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the other engine's commit (e.g. the one before a change)")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--config", type=Path, default=PACKS_CONFIG)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    log = ensure_log(args.lines).resolve()
    tree = checkout(args.commit)
    config = args.config.resolve()
    argv_test = [*LOGWATCHD, "test", "-c", str(config), "--source", "auth", "--json", str(log)]
    runs: dict[str, list[float]] = {args.commit: [], "this tree": []}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.repeat):
        for name, path in ((args.commit, tree), ("this tree", REPO)):
            # run in the tree: `python -m` puts the working directory first on sys.path, so
            # from the repository root both runs would import this tree's logwatchd
            measured = run_measured(
                argv_test, env={**os.environ, "PYTHONPATH": str(path)}, cwd=path
            )
            if measured.returncode != 0:
                sys.exit(f"{name} failed:\n{measured.stderr[-2000:]}")
            runs[name].append(measured.wall)
            outputs[name] = alerts_of(measured.stdout)
    print(f"# compare: {args.lines:,} lines of {log}, config {args.config}")
    print(f"# machine: {machine()}")
    rows = [
        [name, f"{min(walls):.2f}", f"{args.lines / min(walls):,.0f}", f"{len(outputs[name]):,}"]
        for name, walls in runs.items()
    ]
    print()
    print(table(["engine", "best wall s", "lines/s", "alerts"], rows))
    same = outputs[args.commit] == outputs["this tree"]
    print(f"\nalerts: {'the same, in the same order' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

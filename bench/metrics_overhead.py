"""What counting for /metrics, status and report costs, against a tree without it.

Three measurements, each run in a child process per source tree (this checkout, and
`--base DIR`, e.g. the code before metrics existed: `git archive <commit> logwatchd | tar -x
-C DIR`), alternately, so the host's load drifts over both alike:

- `lines`: the daemon's read loop without its I/O: the generated auth.log, in batches of
  20,000 lines, through `Pipeline.handle` with the shipped sshd, sudo and pam packs; this
  tree also does the per-batch accounting the daemon does (`line_counts`, `Tally.read`), and
  its engine counts each match. CPU seconds of the loop.
- `alerts`: the state database's work per alert under a flood: 2,000 alerts committed one per
  commit, each delivered to one handler (`mark_done`); this tree also writes the alert and
  delivery history and the handler's last success. CPU milliseconds per alert.
- `scrape` (this tree only): one `/metrics` rendering after the log went through, with the
  packs' rules: milliseconds per scrape.

    python bench/metrics_overhead.py --base /tmp/base --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PACKS_CONFIG, PYTHON, REPO, ensure_log, machine, table

BATCH = 20_000
ALERTS = 2_000


def child_lines(log: Path, accounting: bool) -> float:
    from logwatchd.clock import SystemClock
    from logwatchd.config import load
    from logwatchd.events import Line
    from logwatchd.pipeline import Pipeline, build_engine

    config = load(str(PACKS_CONFIG))
    engine, parsers = build_engine(config, SystemClock(), "bench")
    pipeline = Pipeline(engine, parsers)
    tally = None
    if accounting:
        from logwatchd.outbox import Dispatcher
        from logwatchd.service.tally import Tally, line_counts

        tally = Tally()
        tally.attach(pipeline, Dispatcher(os.devnull, {}, {}, SystemClock()), {"auth": {}})
    raws = log.read_text(encoding="utf-8").splitlines()
    now = time.time()
    lines = [Line("auth", raw, now, f"x:{n}", str(log), n) for n, raw in enumerate(raws)]
    started = time.process_time()
    for first in range(0, len(lines), BATCH):
        batch = lines[first : first + BATCH]
        before = line_counts(pipeline) if tally else None
        pending = []
        for line in batch:
            pending.extend(pipeline.handle(line))
        if tally is not None and before is not None:
            tally.read("auth", len(batch), before, more=True, now=time.time())
        engine.drain_changes()
    return time.process_time() - started


def child_alerts() -> float:
    from logwatchd.alerts import Alert
    from logwatchd.state import StateStore

    with tempfile.TemporaryDirectory() as work:
        store = StateStore.in_dir(work)
        started = time.process_time()  # CPU: the host's load moves wall time by 2x here
        for n in range(ALERTS):
            alert = Alert(
                id=f"{n:032x}", rule="sshd-bruteforce", severity="high", tags=[],
                key={"ip": f"203.0.113.{n % 250}"}, count=5, suppressed=0, first_seen=1.0,
                last_seen=2.0, fired_at=time.time(), host="h", source="auth", path="/x",
                raw="line", fields={}, events=["line"], handlers=("mail",),
            )  # fmt: skip
            store.commit(alerts=[alert])
            (item,) = store.claim_due("mail", now=1e12, limit=1)
            store.mark_done_many([item])
        elapsed = time.process_time() - started
        store.close()
    return elapsed / ALERTS * 1000


def child_scrape(log: Path) -> float:
    from prometheus_client import generate_latest

    from logwatchd.clock import SystemClock
    from logwatchd.config import load
    from logwatchd.events import Line
    from logwatchd.metrics import DaemonCollector, build_registry
    from logwatchd.outbox import Dispatcher
    from logwatchd.pipeline import Pipeline, build_engine
    from logwatchd.service.tally import Tally, line_counts
    from logwatchd.state import StateStore

    config = load(str(PACKS_CONFIG))
    engine, parsers = build_engine(config, SystemClock(), "bench")
    pipeline = Pipeline(engine, parsers)
    with tempfile.TemporaryDirectory() as work:
        store = StateStore.in_dir(work)
        tally = Tally()
        tally.attach(pipeline, Dispatcher(store.path, {}, {}, SystemClock()), {"auth": {}})
        before = line_counts(pipeline)
        raws = log.read_text(encoding="utf-8").splitlines()[:100_000]
        for n, raw in enumerate(raws):
            pipeline.handle(Line("auth", raw, time.time(), f"x:{n}"))
        tally.read("auth", len(raws), before, more=False, now=time.time())
        registry = build_registry(DaemonCollector(tally.snapshot, store.path))
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            generate_latest(registry)
        elapsed = time.perf_counter() - started
        store.close()
    return elapsed / rounds * 1000


def run_child(tree: Path, what: str, log: Path, accounting: bool) -> float:
    env = dict(os.environ, PYTHONPATH=f"{tree}:{Path(__file__).resolve().parent}")
    argv = [PYTHON, __file__, "--child", what, "--log", str(log)]
    if accounting:
        argv.append("--accounting")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout)["value"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base", help="a source tree to compare with (holding logwatchd/)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--accounting", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure = {
            "lines": lambda: child_lines(Path(args.log), args.accounting),
            "alerts": child_alerts,
            "scrape": lambda: child_scrape(Path(args.log)),
        }[args.child]
        print(json.dumps({"value": measure()}))
        return
    log = ensure_log(args.lines)
    print(machine())
    trees = [("this tree", REPO, True)] + ([("base", Path(args.base), False)] if args.base else [])
    results: dict[tuple[str, str], list[float]] = {}
    for run in range(args.runs):
        for what in ("lines", "alerts"):
            for name, tree, accounting in trees:
                value = run_child(tree, what, log, accounting)
                results.setdefault((what, name), []).append(value)
                print(f"run {run + 1} {what:6} {name:9} {value:8.3f}", flush=True)
    scrape = run_child(REPO, "scrape", log, True)
    rows = []
    for (what, name), values in results.items():
        unit = "CPU s for the log" if what == "lines" else "CPU ms per alert"
        median = statistics.median(values)
        extra = f"{args.lines / median:,.0f} lines/s" if what == "lines" else ""
        spread = f"{min(values):.3f}-{max(values):.3f}"
        rows.append([what, name, f"{median:.3f} {unit}", spread, extra])
    rows.append(["scrape", "this tree", f"{scrape:.2f} ms per scrape", "", ""])
    print(table(["measure", "tree", "median", "range", ""], rows))


if __name__ == "__main__":
    sys.exit(main())

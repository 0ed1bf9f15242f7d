"""The rules alone: ``Engine.process`` over the events the scan selects, parsed beforehand.

Reads the generated auth.log once, scans and parses the lines the packs' scan selects, then
feeds those events to fresh engines and reports the CPU time of that loop only (best of
``--repeat``), per event, and a digest of the alerts (two trees must print the same one).
Under ``valgrind --tool=cachegrind`` the loop's instruction count is the difference between
``--repeat 2`` and ``--repeat 1`` (both build ``--engines`` engines first, so the
difference holds no start-up):

    python bench/rules_path.py --lines 200000 --repeat 3
    valgrind --tool=cachegrind --cache-sim=no python bench/rules_path.py --lines 20000 \\
        --repeat 1 --engines 2       # then --repeat 2; subtract the two "I refs"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from typing import Any

from common import PACKS_CONFIG, byte_blocks, ensure_log, machine


def main(argv: list[str] | None = None) -> int:
    from logwatchd.alerts import jsonable
    from logwatchd.config import load
    from logwatchd.events import Event, Line
    from logwatchd.pipeline import Pipeline, ReplayClock, build_engine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", type=int, default=0, help="engines built before any run")
    args = parser.parse_args(argv)
    log = ensure_log(args.lines)
    config = load(str(PACKS_CONFIG))
    engine, parsers = build_engine(config, ReplayClock(), host="bench")
    scan = engine.scan("auth")
    pipeline = Pipeline(engine, parsers)
    reference = os.stat(log).st_mtime
    events: list[tuple[Event, int]] = []
    for block in byte_blocks(log):
        for index, end, hits in scan.select_block(block) or ():
            raw = block[block.rfind(b"\n", 0, end) + 1 : end].decode("utf-8", "replace")
            event = pipeline.parse(Line("auth", raw, reference, f"bench:{index}", None, index))
            if event is not None:
                events.append((event, scan.hits(raw) if hits is None else hits))
    built = []
    for _ in range(max(args.repeat, args.engines)):
        clock = ReplayClock()
        fresh, _ = build_engine(config, clock, host="bench")
        fresh.scan("auth")
        built.append((clock, fresh))
    best, alerts = float("inf"), []
    for clock, fresh in built[: args.repeat]:
        alerts = []
        started = time.process_time()
        for event, hits in events:
            clock.at = event.time
            alerts += fresh.process(event, None, hits)
        alerts += fresh.tick(float("inf"))
        best = min(best, time.process_time() - started)
    print(f"# rules path: {len(events):,} events from {log}")
    print(f"# machine: {machine()}")
    print(
        f"{best:.3f} CPU s, {1e6 * best / len(events):.2f} us per event, "
        f"{len(alerts):,} alerts, digest {_digest(alerts, jsonable)}"
    )
    return 0


def _digest(alerts: list[Any], jsonable: Any) -> str:
    found = hashlib.sha256()
    for alert in alerts:
        record = jsonable(alert.to_dict())
        record.pop("fired_at", None)
        found.update(json.dumps(record, sort_keys=True, default=str).encode())
    return found.hexdigest()[:16]


if __name__ == "__main__":
    raise SystemExit(main())

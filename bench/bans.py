"""Bans with real nft in a network namespace of the benchmark's own (needs root).

- latency: a threshold's last line written -> the address in the nft set (p50/p99/max over
  one ban at a time), and ``logwatchd actions revert`` -> the address gone;
- burst: many addresses reach their threshold at once -> all of them in the set (each ban is
  one nft transaction: this is the per-ban cost);
- restore: the daemon started with N active bans in the state database and an empty ruleset
  (a reboot) -> READY=1, with all N back in the sets.

    python bench/bans.py                       # 30 latency samples, a burst of 200, restore 10,000
    python bench/bans.py --burst 1000 --restore 1000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

from common import LOGWATCHD, Daemon, fresh_dir, machine, percentile, table, wait_until

from logwatchd import actions
from logwatchd.alerts import Alert
from logwatchd.state import StateStore

CONFIG = """\
version: 1
daemon:
  state_dir: {work}/state
sources:
  - id: app
    type: file
    paths: [{log}]
    parser: app
    start_at: beginning
parsers:
  app:
    regex: '^(?P<event_type>\\w+) - IP: (?P<ip>\\S+)'
rules:
  - id: brute
    match: {{field: event_type, equals: Fail}}
    group_by: [ip]
    threshold: {{count: 3, window: 1m}}
    handlers: [ban]
handlers:
  ban:
    type: nftables
    duration: 1h
"""


def nft_set(namespace: str, name: str = "banned4") -> set[str]:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-j", "list", "set", "inet", "logwatchd", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return set()
    found = set()
    for entry in json.loads(done.stdout)["nftables"]:
        for item in entry.get("set", {}).get("elem", []):
            found.add(str(item.get("elem", {"val": item})["val"]))
    return found


def address(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


class Bench:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.work = fresh_dir("bans")
        self.log = self.work / "app.log"
        self.log.touch()
        self.config = self.work / "logwatchd.yaml"
        self.config.write_text(CONFIG.format(work=self.work, log=self.log))

    def daemon(self) -> Daemon:
        return Daemon(self.config, self.work, prefix=["ip", "netns", "exec", self.namespace])

    def offend(self, *addresses: str) -> None:
        with self.log.open("a") as handle:
            handle.writelines(f"Fail - IP: {ip}\n" for ip in addresses for _ in range(3))

    def latency(self, samples: int) -> list[list[object]]:
        bans: list[float] = []
        lifts: list[float] = []
        noticed: list[float] = []
        with self.daemon() as daemon:
            daemon.start()
            for n in range(samples):
                ip = address(n + 1)
                began = time.perf_counter()
                self.offend(ip)
                wait_until(lambda ip=ip: ip in nft_set(self.namespace), 10, 0.002)
                bans.append(time.perf_counter() - began)
            for n in range(min(samples, 10)):
                ip = address(n + 1)
                began = time.perf_counter()
                revert = [*LOGWATCHD, "actions", "-c", str(self.config), "revert", "ban", ip]
                subprocess.run(revert, capture_output=True, check=True)
                wait_until(lambda ip=ip: ip not in nft_set(self.namespace), 10, 0.002)
                lifts.append(time.perf_counter() - began)
            store = StateStore.in_dir(str(self.work / "state"))
            for n in range(10, min(samples, 20)):
                ip = address(n + 1)
                # the last lift happened right after one of the daemon's passes: start at a
                # random point of its once-a-second idle cycle, as a person would
                time.sleep(random.uniform(0.0, 1.0))
                began = time.perf_counter()
                actions.revert(store, time.time(), handler="ban", key=ip)
                wait_until(lambda ip=ip: ip not in nft_set(self.namespace), 10, 0.002)
                noticed.append(time.perf_counter() - began)
            store.close()
        return [
            _row("threshold -> in the set", bans),
            _row("`actions revert` (its start-up too) -> gone", lifts),
            _row("revert committed -> gone (the daemon's notice)", noticed),
        ]

    def burst(self, count: int) -> list[object]:
        wanted = {address(100_000 + n) for n in range(count)}
        with self.daemon() as daemon:
            daemon.start()
            began = time.perf_counter()
            self.offend(*sorted(wanted))
            wait_until(lambda: wanted <= nft_set(self.namespace), 600, 0.05)
            took = time.perf_counter() - began
        return [f"{count} addresses at once -> all in the set", f"{took:.2f} s",
                f"{count / took:.0f} bans/s"]  # fmt: skip

    def restore(self, count: int) -> list[object]:
        """N active bans in the database, an empty ruleset: how long until READY=1."""
        store = StateStore.in_dir(str(self.work / "state"))
        recorder = actions.Recorder(_Ban())
        now = time.time()
        with store.transaction():
            store.db.execute("DELETE FROM actions")
            for n in range(count):
                recorder.queue(store.db, _alert(f"r{count}-{n}", address(200_000 + n)), now)
            store.db.execute("UPDATE outbox SET status = 'done' WHERE status = 'pending'")
        store.close()
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "nft", "flush", "ruleset"], check=True
        )
        with self.daemon() as daemon:
            ready = daemon.start()
            present = len(nft_set(self.namespace))
        return [f"restore {count} active bans at start", f"READY after {ready:.2f} s",
                f"{present} in the set"]  # fmt: skip


class _Ban:
    name = "ban"
    undoes = True
    duration = 3600.0
    increase = None

    def action_key(self, alert: dict[str, object]) -> str:
        return str(alert["key"]["ip"])  # type: ignore[index]


def _alert(alert_id: str, ip: str) -> Alert:
    return Alert(
        id=alert_id, rule="brute", severity="high", tags=[], key={"ip": ip}, count=3,
        suppressed=0, first_seen=0.0, last_seen=0.0, fired_at=0.0, host="h", source="app",
        path=None, raw="", fields={"ip": ip}, events=[], handlers=("ban",),
    )  # fmt: skip


def _row(what: str, values: list[float]) -> list[object]:
    values.sort()
    ms = [f"{1000 * percentile(values, p):.0f} ms" for p in (0.5, 0.99)]
    return [what, len(values), *ms, f"{1000 * values[-1]:.0f} ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--restore", type=int, nargs="*", default=[10_000])
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bans.py needs root (a network namespace)")
    namespace = f"lwd-bench-bans-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        print(machine())
        bench = Bench(namespace)
        print(table(["", "samples", "p50", "p99", "max"], bench.latency(args.samples)))
        print()
        rows = [Bench(namespace).burst(args.burst)]
        rows += [Bench(namespace).restore(count) for count in args.restore]
        print(table(["", "time", ""], rows))
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


if __name__ == "__main__":
    main()

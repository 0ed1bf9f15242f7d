"""The fleet over NATS JetStream: what one aggregator sustains, how long a host's line takes
to become a fleet alert, and how subject partitions split the work.

    python bench/fleet.py throughput [--messages 30000] [--hosts 50] [--batch 256]
    python bench/fleet.py latency [--rate 20] [--seconds 30]
    python bench/fleet.py partitions [--messages 30000] [--partitions 2]
    python bench/fleet.py publish [--messages 20000]       # NATS alone: R1 vs R3 publish rate

``throughput``: the stream is filled with host alerts first (``--hosts`` hosts, 2,000
addresses), then an aggregator daemon (fleet-aggregator.yaml's rule: three distinct hosts
per address in 10 minutes) starts and reads them all; the figure is messages per second from
READY to the consumer's acknowledgement floor reaching the last message.

``latency``: a host daemon follows a file and publishes every line that matches (no
threshold); an aggregator echoes every host alert into a ``file`` handler; a writer appends
lines at ``--rate`` and a reader measures write -> fleet alert per line.

``partitions``: nats-server maps ``logwatchd.fail.<ip>.<host>`` to
``logwatchd.part.<partition(N, ip)>.<ip>.<host>`` (server ``mappings``, nats-server 2.8+);
one aggregator per partition. Checks that each address lands on one partition only.

Needs ``nats-server`` on PATH (or /usr/sbin) and ``pip install -e '.[fleet]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from common import Daemon, fresh_dir, machine, percentile, proc_cpu_seconds, table, wait_until

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
ADDRESSES = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nats:
    """One nats-server with JetStream in its own directory; ``extra`` goes into its config."""

    def __init__(self, work: Path, extra: str = "") -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        conf = work / "nats.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{work / "nats-store"}" }}\n{extra}\n'
        )
        self.log = open(work / "nats.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-c", str(conf)], stdout=self.log, stderr=self.log
        )
        wait_until(self._listening, 15)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


async def _client(url: str | list[str]) -> Any:
    import nats

    return await nats.connect(url, allow_reconnect=False)


async def _create_stream(url: str | list[str], replicas: int = 1) -> None:
    client = await _client(url)
    try:
        await client.jetstream(timeout=10).add_stream(
            name="LOGWATCHD", subjects=["logwatchd.>"], duplicate_window=120, num_replicas=replicas
        )
    finally:
        await client.close()


def host_alert(index: int, hosts: int, when: float) -> dict[str, Any]:
    """A host's sshd-failure alert as the nats handler publishes it."""
    from logwatchd.alerts import Alert

    host = f"web{index % hosts}"
    ip = f"203.0.{(index // 7) % ADDRESSES // 250}.{(index // 7) % ADDRESSES % 250}"
    raw = f"2026-12-03T10:00:00+00:00 {host} sshd[{index}]: Failed password for root from {ip}"
    return Alert(
        id=f"{index:032x}",
        rule="sshd-failure",
        severity="low",
        tags=[],
        key={"ip": ip},
        count=1,
        suppressed=0,
        first_seen=when,
        last_seen=when,
        fired_at=when,
        host=host,
        source="auth",
        path=None,
        raw=raw,
        fields={"program": "sshd", "pid": index, "user": "root", "ip": ip, "message": raw[41:]},
        events=[raw],
    ).to_dict()


async def _fill(url: str | list[str], messages: int, hosts: int, subject_of: Any) -> float:
    """Publish ``messages`` host alerts, 500 in flight; returns messages per second."""
    client = await _client(url)
    js = client.jetstream(timeout=30)
    started = time.perf_counter()
    now = time.time()
    try:
        for first in range(0, messages, 500):
            batch = [
                host_alert(i, hosts, now + i / 1000)
                for i in range(first, min(first + 500, messages))
            ]
            await asyncio.gather(
                *(
                    js.publish(
                        subject_of(a), json.dumps(a).encode(), headers={"Nats-Msg-Id": a["id"]}
                    )
                    for a in batch
                )
            )
    finally:
        await client.close()
    return messages / (time.perf_counter() - started)


async def _consumer(url: str, name: str) -> Any:
    client = await _client(url)
    try:
        return await client.jetstream(timeout=10).consumer_info("LOGWATCHD", name)
    except Exception:
        return None
    finally:
        await client.close()


def consumer(url: str, name: str) -> Any:
    return asyncio.run(_consumer(url, name))


def drained(url: str, name: str) -> bool:
    info = consumer(url, name)
    return info is not None and info.num_pending == 0 and info.num_ack_pending == 0


AGGREGATOR = """\
version: 1
daemon: {{state_dir: {work}/state, host: agg{index}, timezone: UTC}}
sources:
  - id: fleet
    type: nats
    servers: [{url}]
    subjects: ['{subject}']
    durable: {durable}
    start_at: beginning
    batch: {batch}
rules:
  - id: fleet-ssh-bruteforce
    match: {{field: rule, equals: sshd-failure}}
    group_by: [ip]
    threshold: {{count: 3, window: 10m, distinct: host}}
    cooldown: 1h
    handlers: [alerts]
handlers:
  alerts: {{type: file, path: {work}/fleet.jsonl}}
"""


def start_aggregator(
    work: Path, url: str, subject: str, durable: str, *, batch: int, index: int = 1
) -> Daemon:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "aggregator.yaml"
    config.write_text(
        AGGREGATOR.format(
            work=work, url=url, subject=subject, durable=durable, batch=batch, index=index
        )
    )
    daemon = Daemon(config, work)
    daemon.start()
    return daemon


def throughput(args: argparse.Namespace) -> None:
    work = fresh_dir("fleet-throughput")
    nats = Nats(work)
    try:
        asyncio.run(_create_stream(nats.url))
        rate = asyncio.run(
            _fill(
                nats.url,
                args.messages,
                args.hosts,
                lambda a: f"logwatchd.alerts.{a['host']}.{a['rule']}",
            )
        )
        daemon = start_aggregator(
            work / "agg",
            nats.url,
            "logwatchd.alerts.*.sshd-failure",
            "aggregator",
            batch=args.batch,
        )
        started = time.perf_counter()
        cpu0 = proc_cpu_seconds(daemon.pid)
        if not wait_until(lambda: drained(nats.url, "aggregator"), 600, interval=0.1):
            raise SystemExit(f"not drained in 600 s: {daemon.tail_log()}")
        seconds = time.perf_counter() - started
        cpu = proc_cpu_seconds(daemon.pid) - cpu0
        daemon.stop()
        alerts = work / "agg" / "fleet.jsonl"
        fired = alerts.read_text().count("\n") if alerts.exists() else 0
    finally:
        nats.stop()
    print(machine())
    print(
        table(
            [
                "messages",
                "hosts",
                "batch",
                "publish msg/s (1 client)",
                "aggregator s",
                "aggregator msg/s",
                "CPU s/s",
                "fleet alerts",
            ],
            [
                [
                    args.messages,
                    args.hosts,
                    args.batch,
                    f"{rate:,.0f}",
                    f"{seconds:.1f}",
                    f"{args.messages / seconds:,.0f}",
                    f"{cpu / seconds:.2f}",
                    fired,
                ]
            ],
        )
    )


HOST = """\
version: 1
daemon: {{state_dir: {work}/state, host: web1, timezone: UTC}}
sources:
  - {{id: bench, type: file, paths: [{log}], parser: syslog, start_at: beginning}}
rules:
  - id: bench-line
    match: {{field: message, regex: '^bench seq=(?P<seq>\\d+)'}}
    group_by: [seq]
    handlers: [fleet]
handlers:
  fleet: {{type: nats, servers: [{url}], retry: {{backoff: 200ms, max_backoff: 1s}}}}
"""

ECHO = """\
version: 1
daemon: {{state_dir: {work}/state, host: agg1, timezone: UTC}}
sources:
  - id: fleet
    type: nats
    servers: [{url}]
    subjects: ['logwatchd.alerts.*.bench-line']
    durable: echo
    start_at: beginning
rules:
  - id: echo
    match: {{field: rule, equals: bench-line}}
    group_by: [seq]
    handlers: [alerts]
handlers:
  alerts: {{type: file, path: {alerts}}}
"""


class Tail(threading.Thread):
    """Reads the aggregator's alert file; records the time each seq arrived."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.arrived: dict[int, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.path.exists() and not self.stopping.is_set():
            time.sleep(0.001)
        with open(self.path, "rb") as handle:
            rest = b""
            while not self.stopping.is_set():
                chunk = handle.read()
                if not chunk:
                    time.sleep(0.001)
                    continue
                now = time.time()
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    self.arrived.setdefault(int(json.loads(line)["key"]["seq"]), now)


def latency(args: argparse.Namespace) -> None:
    work = fresh_dir("fleet-latency")
    nats = Nats(work)
    log = work / "host.log"
    log.touch()
    alerts = work / "fleet.jsonl"
    try:
        asyncio.run(_create_stream(nats.url))
        (work / "agg").mkdir()
        (work / "host").mkdir()
        agg_config = work / "agg" / "aggregator.yaml"
        agg_config.write_text(ECHO.format(work=work / "agg", url=nats.url, alerts=alerts))
        host_config = work / "host" / "host.yaml"
        host_config.write_text(HOST.format(work=work / "host", url=nats.url, log=log))
        aggregator, host = Daemon(agg_config, work / "agg"), Daemon(host_config, work / "host")
        aggregator.start()
        host.start()
        tail = Tail(alerts)
        tail.start()
        written: dict[int, float] = {}
        total = int(args.rate * args.seconds)
        started = time.time()
        with open(log, "a") as out:
            for seq in range(total):
                due = started + seq / args.rate
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
                out.write(f"{stamp} web1 bench[1]: bench seq={seq}\n")
                out.flush()
                written[seq] = time.time()
        wait_until(lambda: len(tail.arrived) >= total, 60)
        tail.stopping.set()
        host_cpu, agg_cpu = proc_cpu_seconds(host.pid), proc_cpu_seconds(aggregator.pid)
        host.stop()
        aggregator.stop()
    finally:
        nats.stop()
    delays = sorted((tail.arrived[s] - written[s]) * 1000 for s in written if s in tail.arrived)
    print(machine())
    print(
        table(
            ["lines/s", "seconds", "lines", "fleet alerts", "p50 ms", "p99 ms", "max ms",
             "host CPU s", "aggregator CPU s"],
            [[args.rate, args.seconds, total, len(delays), f"{percentile(delays, 0.5):.0f}",
              f"{percentile(delays, 0.99):.0f}", f"{delays[-1]:.0f}" if delays else "-",
              f"{host_cpu:.1f}", f"{agg_cpu:.1f}"]],
        )
    )  # fmt: skip


def partitions(args: argparse.Namespace) -> None:
    count = args.partitions
    work = fresh_dir("fleet-partitions")
    mapping = (
        'mappings = { "logwatchd.fail.*.*": '
        f'"logwatchd.part.{{{{partition({count},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}" }}'
    )
    nats = Nats(work, mapping)
    daemons = []
    try:
        asyncio.run(_create_stream(nats.url))

        def subject(alert: dict[str, Any]) -> str:
            return f"logwatchd.fail.{alert['key']['ip'].replace('.', '-')}.{alert['host']}"

        asyncio.run(_fill(nats.url, args.messages, args.hosts, subject))
        started = time.perf_counter()
        for index in range(count):
            daemons.append(
                start_aggregator(
                    work / f"agg{index}",
                    nats.url,
                    f"logwatchd.part.{index}.>",
                    f"agg-{index}",
                    batch=args.batch,
                    index=index,
                )
            )
        names = [f"agg-{index}" for index in range(count)]
        wait_until(lambda: all(drained(nats.url, name) for name in names), 600, interval=0.1)
        seconds = time.perf_counter() - started
        spread = _partition_spread(nats.url, count)
    finally:
        for daemon in daemons:
            daemon.stop()
        nats.stop()
    print(machine())
    print(
        table(
            [
                "messages",
                "partitions",
                "seconds (incl. starts)",
                "msg/s",
                "addresses on >1 partition",
                "messages per partition",
            ],
            [
                [
                    args.messages,
                    count,
                    f"{seconds:.1f}",
                    f"{args.messages / seconds:,.0f}",
                    spread["split"],
                    " / ".join(str(n) for n in spread["sizes"]),
                ]
            ],
        )
    )


def _partition_spread(url: str, count: int) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        client = await _client(url)
        try:
            js = client.jetstream(timeout=10)
            info = await js.stream_info("LOGWATCHD", subjects_filter="logwatchd.part.>")
            where: dict[str, set[str]] = defaultdict(set)
            sizes: Counter[str] = Counter()
            for subject, number in (info.state.subjects or {}).items():
                _, _, part, ip, _host = subject.split(".")
                where[ip].add(part)
                sizes[part] += number
            return {
                "split": sum(1 for parts in where.values() if len(parts) > 1),
                "sizes": [sizes[str(i)] for i in range(count)],
            }
        finally:
            await client.close()

    return asyncio.run(read())


def publish(args: argparse.Namespace) -> None:
    """NATS alone: one Python client publishing alerts to an R1 stream and to an R3 one."""
    rows = []
    work = fresh_dir("fleet-publish")
    single = Nats(work)
    try:
        asyncio.run(_create_stream(single.url))
        rate = asyncio.run(
            _fill(single.url, args.messages, 50, lambda a: f"logwatchd.alerts.{a['host']}.x")
        )
        rows.append(["1 server, R1", f"{rate:,.0f}"])
    finally:
        single.stop()
    cluster = _cluster(work)
    try:
        urls = [server.url for server in cluster]
        deadline = time.monotonic() + 60
        while True:
            try:
                asyncio.run(_create_stream(urls, replicas=3))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        rate = asyncio.run(
            _fill(urls, args.messages, 50, lambda a: f"logwatchd.alerts.{a['host']}.x")
        )
        rows.append(["3 servers, R3", f"{rate:,.0f}"])
    finally:
        for server in cluster:
            server.stop()
    print(machine())
    print(table(["stream", "publish msg/s (one Python client, 500 in flight)"], rows))


def _cluster(work: Path) -> list[Nats]:
    ports = [free_port() for _ in range(3)]
    routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in ports)
    servers = []
    for index, port in enumerate(ports):
        directory = work / f"n{index}"
        directory.mkdir()
        extra = (
            f"server_name: n{index}\n"
            f'cluster {{ name: lwd\n listen: "127.0.0.1:{port}"\n routes: [{routes}] }}'
        )
        servers.append(Nats(directory, extra))
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("throughput")
    one.add_argument("--messages", type=int, default=30_000)
    one.add_argument("--hosts", type=int, default=50)
    one.add_argument("--batch", type=int, default=256)
    two = commands.add_parser("latency")
    two.add_argument("--rate", type=float, default=20.0)
    two.add_argument("--seconds", type=float, default=30.0)
    three = commands.add_parser("partitions")
    three.add_argument("--messages", type=int, default=30_000)
    three.add_argument("--hosts", type=int, default=50)
    three.add_argument("--partitions", type=int, default=2)
    three.add_argument("--batch", type=int, default=256)
    four = commands.add_parser("publish")
    four.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args(argv)
    if not os.access(NATS_SERVER, os.X_OK):
        print("needs nats-server (apt-get install nats-server)", file=sys.stderr)
        return 2
    {"throughput": throughput, "latency": latency, "partitions": partitions, "publish": publish}[
        args.command
    ](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

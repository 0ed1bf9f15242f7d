"""The fleet end to end: two host daemons and an aggregator (real ``logwatchd run``
processes) correlating through a real nats-server, the decision banned with real nft on hosts
that each run in a network namespace of their own, and what survives NATS or the aggregator
dying mid-run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import nft_helpers
from tests.daemon_helpers import logwatchd
from tests.fleet_helpers import Aggregator, Host, alert_ids_of, dump, outbox
from tests.nats_helpers import (
    AckDroppingProxy,
    NatsCluster,
    NatsServer,
    consumer_info,
    create_stream,
    require_nats,
    stream_info,
    stream_messages,
    wait_until,
)
from tests.nft_helpers import Link, elements, nft

pytestmark = pytest.mark.slow

TWO_HOSTS = "203.0.113.9"
ONE_HOST = "198.51.100.7"


class Fleet:
    def __init__(
        self,
        directory: Path,
        servers: list[str],
        replicas: int = 1,
        aggregator_servers: list[str] | None = None,
        namespaces: dict[str, str] | None = None,
    ) -> None:
        create_stream(servers, replicas=replicas)  # else the first nats handler creates it
        self.servers = servers
        self.aggregator = Aggregator(
            directory / "agg", aggregator_servers or servers, replicas=replicas
        )
        namespaces = namespaces or {}
        self.hosts = [
            Host(directory / name, name, servers, replicas=replicas, netns=namespaces.get(name))
            for name in ("web1", "web2")
        ]

    def start(self) -> Fleet:
        self.aggregator.start()
        for host in self.hosts:
            host.start()
        # the hosts follow decisions from the moment their consumers exist (start_at: end)
        for host in self.hosts:
            wait_until(lambda h=host: consumer_info(self.servers, f"decisions-{h.name}"))
        return self

    def host_alert_ids(self) -> list[str]:
        messages = stream_messages(self.servers)
        return alert_ids_of([m for m in messages if m["subject"].startswith("logwatchd.alerts.")])

    def all_seen(self, count: int) -> bool:
        """The aggregator received ``count`` distinct host alerts."""
        return len(set(self.aggregator.seen_ids())) >= count

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        self.aggregator.close()


def decisions_in(fleet: Fleet) -> list[dict[str, object]]:
    return [m for m in stream_messages(fleet.servers) if "decisions" in m["subject"]]


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


@pytest.fixture
def fleet(tmp_path: Path, nats: NatsServer) -> Iterator[Fleet]:
    lab = Fleet(tmp_path, [nats.url]).start()
    yield lab
    lab.close()


def test_an_address_failing_on_two_hosts_fires_the_fleet_rule_and_is_banned_on_both(
    fleet: Fleet,
) -> None:
    web1, web2 = fleet.hosts
    web1.fail(TWO_HOSTS)
    web1.fail(ONE_HOST)
    web1.fail(ONE_HOST, user="admin")  # twice, but on one host only
    web2.fail(TWO_HOSTS)
    agg = fleet.aggregator
    wait_until(lambda: fleet.all_seen(4), timeout=30)
    for host in fleet.hosts:
        wait_until(lambda h=host: h.bans(), timeout=30)
    wait_until(agg.fleet_ips, timeout=30)
    assert agg.daemon is not None
    assert agg.daemon.terminate() == 0
    assert agg.fleet_ips() == [TWO_HOSTS], dump(agg)
    [alert] = agg.jsonl("fleet")
    assert (alert["count"], alert["host"], alert["rule"]) == (2, "agg1", "fleet-bruteforce")
    assert web1.bans() == [["web1", TWO_HOSTS]]
    assert web2.bans() == [["web2", TWO_HOSTS]]
    assert [m["subject"] for m in decisions_in(fleet)] == ["logwatchd.decisions.fleet-bruteforce"]
    assert agg.jsonl("twice") == []


@pytest.fixture
def links() -> Iterator[dict[str, Link]]:
    reason = nft_helpers.missing_requirements()
    if reason:
        pytest.skip(reason)
    require_nats()
    with nft_helpers.linked_namespaces("decide", ["web1", "web2"]) as made:
        yield made


@pytest.fixture
def fleet_in_namespaces(tmp_path: Path, links: dict[str, Link]) -> Iterator[Fleet]:
    """The hosts each in a network namespace of their own (their own nftables ruleset); the
    server listens on web1's link, and web2 reaches it through its own link."""
    server = NatsServer(tmp_path / "nats", host=links["web1"].outer).start()
    lab = None
    try:
        namespaces = {name: link.namespace for name, link in links.items()}
        lab = Fleet(tmp_path, [server.url], namespaces=namespaces)
        yield lab.start()
    finally:
        if lab is not None:
            lab.close()
        server.kill()


def test_a_fleet_decision_is_an_nftables_ban_on_both_hosts(fleet_in_namespaces: Fleet) -> None:
    fleet = fleet_in_namespaces
    web1, web2 = fleet.hosts
    web1.fail(TWO_HOSTS)
    web1.fail(ONE_HOST)
    web1.fail(ONE_HOST, user="admin")  # twice, but on one host only
    web2.fail(TWO_HOSTS)
    agg = fleet.aggregator
    wait_until(lambda: fleet.all_seen(4), timeout=30)
    for host in fleet.hosts:
        assert host.netns is not None
        wait_until(lambda h=host: TWO_HOSTS in elements(h.netns, "banned4"), timeout=30)
    assert agg.daemon is not None
    assert agg.daemon.terminate() == 0
    # every decision the aggregator made is in the stream: this one, and no other
    assert agg.fleet_ips() == [TWO_HOSTS], dump(agg)
    assert outbox(agg.dir / "state", "decisions").get("pending", 0) == 0
    assert [m["data"]["key"] for m in decisions_in(fleet)] == [{"ip": TWO_HOSTS}]
    for host in fleet.hosts:
        assert host.netns is not None and host.daemon is not None
        banned = elements(host.netns, "banned4")
        assert list(banned) == [TWO_HOSTS], dump(host)
        assert 3500 < banned[TWO_HOSTS]["expires"] <= 3600
        chain = nft(host.netns, "list", "chain", "inet", "logwatchd", "input").stdout
        assert "ip saddr @banned4 drop" in chain
        listed = logwatchd("actions", "-c", str(host.config), "--json")
        assert listed.returncode == 0, listed.stderr
        [action] = json.loads(listed.stdout)
        assert (action["handler"], action["key"], action["rule"], action["state"]) == (
            "ban",
            TWO_HOSTS,
            "apply-ban",
            "applied",
        )
        assert host.daemon.terminate() == 0
    assert web1.bans() == web2.bans() == []  # no recorder program ran: nft did


def test_nats_killed_while_hosts_keep_writing_every_failure_arrives_once(
    tmp_path: Path, nats: NatsServer
) -> None:
    fleet = Fleet(tmp_path, [nats.url]).start()
    try:
        web1, web2 = fleet.hosts
        for index in range(5):
            web1.fail(f"192.0.2.{index}")
            web2.fail(f"192.0.2.{index}")  # on both: five fleet alerts
        wait_until(lambda: fleet.all_seen(10), timeout=30)
        nats.kill()
        for index in range(10):
            web1.fail(f"198.51.100.{index}")
            web2.fail(f"203.0.113.{index}")
        for host in fleet.hosts:  # read, matched and queued while NATS is away
            wait_until(lambda h=host: h.outbox().get("pending", 0) >= 10, timeout=30)
        nats.start()
        wait_until(lambda: fleet.all_seen(30), timeout=60)
        agg = fleet.aggregator
        wait_until(lambda: len(agg.fleet_ips()) >= 5, timeout=30)
        assert agg.daemon is not None
        assert agg.daemon.terminate() == 0
        ids = fleet.host_alert_ids()
        assert len(ids) == 30 and len(set(ids)) == 30  # in the stream once each
        seen = agg.seen_ids()
        assert sorted(seen) == sorted(ids), dump(agg, *fleet.hosts)
        assert agg.jsonl("twice") == []
        assert sorted(agg.fleet_ips()) == [f"192.0.2.{index}" for index in range(5)]
        for host in fleet.hosts:
            assert host.outbox().get("pending", 0) == 0
            # a decision queued when NATS died reaches the hosts after it came back
            wait_until(lambda h=host: len(h.bans()) >= 5, timeout=30)
            assert sorted(ip for _name, ip in host.bans()) == [f"192.0.2.{i}" for i in range(5)]
    finally:
        fleet.close()


def test_aggregator_kill_9_and_restart_loses_nothing_and_repeats_no_fleet_alert(
    tmp_path: Path, nats: NatsServer
) -> None:
    """The aggregator commits, its acknowledgements are lost on the way, and it is killed:
    the server redelivers what the commit already counted. It must count none of it twice,
    and lose nothing of what the hosts wrote while it was down."""
    proxy = AckDroppingProxy(nats.port)
    fleet = Fleet(tmp_path, [nats.url], aggregator_servers=[proxy.url]).start()
    web1, web2 = fleet.hosts
    agg = fleet.aggregator

    def write(indexes: range) -> None:
        for index in indexes:
            web1.fail(f"10.1.0.{index}")
            web2.fail(f"10.1.0.{index}" if index % 2 else f"10.2.0.{index}")

    try:
        write(range(10))
        wait_until(lambda: fleet.all_seen(20), timeout=30)
        proxy.dropping = True
        write(range(10, 20))
        wait_until(lambda: fleet.all_seen(40), timeout=30)  # counted and committed
        wait_until(lambda: proxy.dropped >= 20)
        agg.kill()
        proxy.dropping = False
        write(range(20, 30))  # while the aggregator is down
        agg.start()
        wait_until(lambda: fleet.all_seen(60), timeout=60)
        # the lost acknowledgements' messages come again after ack_wait, and are skipped
        wait_until(lambda: consumer_info(proxy.url, "aggregator").num_ack_pending == 0)
        expected = [f"10.1.0.{index}" for index in range(30) if index % 2]
        wait_until(lambda: len(agg.fleet_ips()) >= len(expected), timeout=30)
        wait_until(lambda: len(decisions_in(fleet)) >= len(expected), timeout=30)
        assert agg.daemon is not None
        assert agg.daemon.terminate() == 0
        assert sorted(agg.fleet_ips()) == sorted(expected), dump(agg)  # each once
        assert agg.jsonl("twice") == [], dump(agg)
        assert sorted(set(agg.seen_ids())) == sorted(fleet.host_alert_ids())
        assert len(decisions_in(fleet)) == len(expected)
    finally:
        fleet.close()
        proxy.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster").start()
    yield nodes
    nodes.stop()


def test_a_three_node_cluster_loses_nothing_when_a_node_dies_mid_run(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    fleet = Fleet(tmp_path, cluster.urls, replicas=3).start()
    try:
        web1, web2 = fleet.hosts
        for index in range(20):
            web1.fail(f"10.3.0.{index}")
            web2.fail(f"10.3.0.{index}")
        wait_until(lambda: len(fleet.aggregator.seen_ids()) >= 10, timeout=30)
        leader = stream_info(cluster.urls).cluster.leader
        victim = next(server for server in cluster.servers if server.name == leader)
        victim.kill()  # the stream's leader: the others elect a new one
        for index in range(20, 30):
            web1.fail(f"10.3.0.{index}")
            web2.fail(f"10.3.0.{index}")
        wait_until(lambda: fleet.all_seen(60), timeout=90)
        agg = fleet.aggregator
        wait_until(lambda: len(agg.fleet_ips()) >= 30, timeout=30)
        assert agg.daemon is not None
        assert agg.daemon.terminate() == 0
        alive = [server.url for server in cluster.servers if server is not victim]
        info = stream_info(alive)
        assert info.config.num_replicas == 3
        stored = alert_ids_of(
            [m for m in stream_messages(alive) if m["subject"].startswith("logwatchd.alerts.")]
        )
        assert len(stored) == 60 and len(set(stored)) == 60
        assert sorted(set(agg.seen_ids())) == sorted(stored)
        assert agg.jsonl("twice") == []
        assert sorted(agg.fleet_ips()) == sorted(f"10.3.0.{i}" for i in range(30))
    finally:
        fleet.close()

"""A network namespace of a test's own, and what nft says is in a set there.

Tests that ban never touch the host's ruleset: each makes ``lwd-bans-<pid>-<n>``, runs the
daemon and nft inside it with ``ip netns exec``, and deletes it afterwards. A daemon that must
also reach a server (the fleet's nats-server) gets a namespace linked to the root namespace
(``linked_namespaces``).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

_numbers = itertools.count()


def missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables)"
    return None


@contextmanager
def network_namespace() -> Iterator[str]:
    name = f"lwd-bans-{os.getpid()}-{next(_numbers)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@dataclass(frozen=True)
class Link:
    """A namespace joined to the root namespace by a veth pair with a /30 of its own."""

    namespace: str
    outer: str  # the address of the root namespace's end
    inner: str  # the address of the namespace's end


# RFC 2544's benchmarking range: routed nowhere, and unlike 192.0.2.0/24 not used by the
# test machine's own interfaces
LINK_RANGE = ipaddress.ip_network("198.18.0.0/15")


@contextmanager
def linked_namespaces(label: str, names: Sequence[str]) -> Iterator[dict[str, Link]]:
    """Namespaces ``lwd-<label>-<pid>-<name>``, each with a veth pair to the root namespace
    and its default route through it: a program inside reaches a server that listens on the
    ``outer`` address of any of them. Deleted afterwards, also when the test failed."""
    with ExitStack() as stack:
        links = {}
        for name in names:
            links[name] = stack.enter_context(_linked(f"lwd-{label}-{os.getpid()}-{name}"))
        yield links


@contextmanager
def _linked(namespace: str) -> Iterator[Link]:
    number = next(_numbers)
    outer_dev, inner_dev = f"lwd{os.getpid()}o{number}", f"lwd{os.getpid()}i{number}"
    subnet = _free_subnet(number)
    outer, inner = (str(address) for address in subnet.hosts())
    steps = [
        ["ip", "netns", "add", namespace],
        ["ip", "link", "add", outer_dev, "type", "veth", "peer", "name", inner_dev,
         "netns", namespace],
        ["ip", "addr", "add", f"{outer}/30", "dev", outer_dev],
        ["ip", "link", "set", outer_dev, "up"],
        ["ip", "-n", namespace, "addr", "add", f"{inner}/30", "dev", inner_dev],
        ["ip", "-n", namespace, "link", "set", inner_dev, "up"],
        ["ip", "-n", namespace, "link", "set", "lo", "up"],
        ["ip", "-n", namespace, "route", "add", "default", "via", outer],
    ]  # fmt: skip
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=30)
        yield Link(namespace, outer, inner)
    finally:
        # deleting either end of a veth pair deletes both, even if a process outlived the test
        # and still holds the namespace
        subprocess.run(["ip", "link", "del", outer_dev], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)


def _free_subnet(number: int) -> ipaddress.IPv4Network:
    """A /30 of LINK_RANGE that no interface of the root namespace uses (tests of other
    processes may be linking namespaces at the same time)."""
    shown = subprocess.run(
        ["ip", "-j", "-4", "addr"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    used = {
        ipaddress.ip_address(info["local"])
        for interface in json.loads(shown)
        for info in interface.get("addr_info", [])
    }
    subnets = list(LINK_RANGE.subnets(new_prefix=30))
    start = (os.getpid() * 16 + number) % len(subnets)
    for offset in range(len(subnets)):
        subnet = subnets[(start + offset) % len(subnets)]
        if not any(address in subnet for address in used):
            return subnet
    raise AssertionError(f"no free /30 left in {LINK_RANGE}")


def nft(namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=30,
    )


def elements(namespace: str, set_name: str, table: str = "logwatchd") -> dict[str, dict[str, Any]]:
    """Element (``192.0.2.7``, ``2001:db8:1:2::/64``) -> its ``timeout``/``expires`` seconds;
    empty when the set (or table) does not exist."""
    done = nft(namespace, "-j", "list", "set", "inet", table, set_name, check=False)
    if done.returncode != 0:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for entry in json.loads(done.stdout)["nftables"]:
        for item in entry.get("set", {}).get("elem", []):
            elem = item.get("elem", {"val": item})
            found[_text(elem["val"])] = {k: v for k, v in elem.items() if k != "val"}
    return found


def _text(value: Any) -> str:
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    return str(value)

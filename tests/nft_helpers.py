"""A network namespace of a test's own, and what nft says is in a set there.

Tests that ban never touch the host's ruleset: each makes ``lwd-bans-<pid>-<n>``, runs the
daemon and nft inside it with ``ip netns exec``, and deletes it afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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

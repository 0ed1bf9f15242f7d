"""Ban addresses in nftables sets of logwatchd's own, and lift the bans again.

No shell, and no nft argument built from log data: every change is one nft transaction given
to ``nft -j -f -`` as JSON on standard input, and an address reaches it only after
``ipaddress`` parsed it. A transaction first makes sure the table, the sets and (unless
``chain: false``) the drop rules exist, so a ruleset flushed by ``systemctl restart
nftables`` gets them back with the next ban, and ``intact`` (asked every ``check_interval``)
finds them gone sooner, so the active bans are re-applied. Each element carries the ban's
remaining time as its nft timeout: a daemon that crashed or was removed never leaves a ban
behind for good.

- ``<set>4`` (``ipv4_addr``, ``flags timeout``) and ``<set>6`` (``ipv6_addr``,
  ``flags interval, timeout``, so it holds whole prefixes: ``prefix6: 64`` bans the /64);
- the chain ``input`` (hook input, priority filter - 10) drops what the sets hold;
- ``restore`` (at start) makes the sets hold exactly the active bans, since nft sets do not
  survive a reboot.

The address comes from the alert's key (``field``), else from its event's fields; a value
that is not an IP address, and an address on the ``never`` list, is refused and logged.
"""

from __future__ import annotations

import ipaddress
import json
import math
import subprocess
import time
from typing import Any

import structlog

from logwatchd.alerts import isoformat
from logwatchd.config.durations import format_duration
from logwatchd.config.handler_settings import Increase, IpNetwork, NftablesSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ActionRefused, DeliveryError
from logwatchd.handlers import settings_of
from logwatchd.templates import HostInfo, Templates

log = structlog.get_logger("logwatchd.handlers")

CHAIN = "input"
CHAIN_PRIORITY = -10  # before the usual filter chains (0): a drop here is final anyway
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Element = IpAddress | IpNetwork


class NftablesHandler:
    undoes = True  # an action the outbox undoes (see actions.py)
    per_alert = True  # a rate limit, if one is set, holds each ban back for a slot of its own

    def __init__(self, cfg: HandlerConfig, *, templates: Templates, host: HostInfo) -> None:
        del templates, host
        settings = settings_of(cfg, NftablesSettings)
        self.name = cfg.name
        self.duration = settings.duration
        self.increase: Increase | None = settings.increase
        self._family = settings.family
        self._table = settings.table
        self._set = settings.set
        self._field = settings.field
        self._prefix6 = settings.prefix6
        self._chain = settings.chain
        self._nft = settings.nft
        self._timeout = cfg.timeout
        self._never: tuple[tuple[IpNetwork, str], ...] = settings.never_networks
        self._versions = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}[self._family]
        self.check_interval = settings.check_interval

    # --- which address --------------------------------------------------------------------

    def action_key(self, alert: dict[str, Any]) -> str:
        """The element to ban for this alert, as text (``192.0.2.7``, ``2001:db8:1:2::/64``)."""
        address = self._address(alert)
        element = self._element_for(address)
        for network, label in self._never:
            if element.version == network.version and _overlaps(element, network):
                where = f" (list {label})" if label else ""
                raise ActionRefused(
                    f"{element} is on the never list: {network}{where}", expected=True
                )
        return str(element)

    def _address(self, alert: dict[str, Any]) -> IpAddress:
        key = alert.get("key") or {}
        fields = (alert.get("event") or {}).get("fields") or {}
        value = key.get(self._field, fields.get(self._field))
        if value is None:
            raise ActionRefused(f"the alert has no field {self._field!r} (key or event)")
        try:
            address = ipaddress.ip_address(str(value).strip())
        except ValueError:
            raise ActionRefused(
                f"not an IP address in {self._field!r}: {str(value)[:100]!r}"
            ) from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ActionRefused(f"a scoped address is not banned: {address}")
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            raise ActionRefused(
                f"{address} is never banned (loopback, unspecified or multicast)", expected=True
            )
        if address.version not in self._versions:
            raise ActionRefused(
                f"{address}: table family {self._family} has no IPv{address.version} set"
            )
        return address

    def _element_for(self, address: IpAddress) -> Element:
        if address.version == 6 and self._prefix6 < 128:
            return ipaddress.ip_network(f"{address}/{self._prefix6}", strict=False)
        return address

    # --- delivering -----------------------------------------------------------------------

    def send(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            action = alert.get("action")
            if not isinstance(action, dict):
                self._ban_without_bookkeeping(alert)
            elif action.get("step") == "undo":
                self._lift(_parse_element(action["key"]))
            else:
                left = float(action["until"]) - time.time()
                if left > 0:
                    self._ban(_parse_element(action["key"]), left, alert, float(action["duration"]))
                else:
                    log.info(f"ban on {action['key']} already over", handler=self.name)

    def _ban_without_bookkeeping(self, alert: dict[str, Any]) -> None:
        """``logwatchd test --execute``: no state database, so the nft timeout alone ends it."""
        try:
            key = self.action_key(alert)
        except ActionRefused as refused:
            log.info(f"not acted on: {refused}", handler=self.name, rule=alert.get("rule"))
            return
        self._ban(_parse_element(key), self.duration, alert, self.duration)

    def _ban(
        self, element: Element, seconds: float, alert: dict[str, Any], duration: float
    ) -> None:
        value = _json_element(element)
        timed = {"elem": {"val": value, "timeout": max(1, math.ceil(seconds))}}
        # add, delete, add: the element ends up there with exactly this timeout, whether or
        # not it was there before (re-adding an element keeps its old timeout on older kernels)
        script = [*self._ensure(), self._elements("add", element, [value])]
        script.append(self._elements("delete", element, [value]))
        script.append(self._elements("add", element, [timed]))
        self._run(script)
        what = f"banned {element} for {format_duration(duration)}"
        action = alert.get("action")
        if isinstance(action, dict) and action.get("extended"):
            until = isoformat(float(action["until"]))
            what = f"extended the ban on {element} to {format_duration(duration)}, until {until}"
        log.info(
            what,
            handler=self.name,
            rule=alert.get("rule"),
            alert_id=alert.get("id"),
            address=str(element),
        )

    def _lift(self, element: Element) -> None:
        value = _json_element(element)
        # add, then delete: no error when the element already expired or never got there
        script = [*self._ensure(), self._elements("add", element, [value])]
        script.append(self._elements("delete", element, [value]))
        self._run(script)
        log.info(f"lifted the ban on {element}", handler=self.name, address=str(element))

    def restore(self, active: list[dict[str, Any]]) -> None:
        """After start: the sets hold exactly these active bans, with their remaining time."""
        now = time.time()
        script = [*self._ensure()]
        script.extend({"flush": {"set": self._set_ref(v)}} for v in self._versions)
        elements = _outermost(
            (_parse_element(str(row["key"])), float(row["until"]) - now) for row in active
        )
        for version in self._versions:
            timed = [
                {"elem": {"val": _json_element(e), "timeout": max(1, math.ceil(left))}}
                for e, left in elements
                if e.version == version and left > 0
            ]
            if timed:
                script.append({"add": {"element": {**self._set_ref(version), "elem": timed}}})
        self._run(script)

    def intact(self) -> bool:
        """Are the table, its sets and (unless ``chain: false``) its chain still there?"""
        done = self._call(["-t", "-j", "list", "table", self._family, self._table])
        if done.returncode != 0:
            if b"No such file or directory" in done.stderr:
                return False  # no such table
            raise _failure(done)
        listed = json.loads(done.stdout).get("nftables", [])
        sets = {item["set"]["name"] for item in listed if "set" in item}
        chains = {item["chain"]["name"] for item in listed if "chain" in item}
        wanted = {f"{self._set}{version}" for version in self._versions}
        return wanted <= sets and (not self._chain or CHAIN in chains)

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        keys = []
        for alert in alerts:
            action = alert.get("action")
            step = action.get("step", "do") if isinstance(action, dict) else "do"
            try:
                key = action["key"] if isinstance(action, dict) else self.action_key(alert)
            except ActionRefused as refused:
                key = f"refused: {refused}"
            keys.append({"step": step, "element": key})
        return {"table": f"{self._family} {self._table}", "set": self._set, "elements": keys}

    def close(self) -> None:
        return None

    # --- the nft transaction --------------------------------------------------------------

    def _ensure(self) -> list[dict[str, Any]]:
        """Table, sets and drop rules, created if missing (``add`` of what exists is a no-op;
        the chain is flushed and refilled in the same transaction, so rules never double)."""
        table = {"family": self._family, "name": self._table}
        script: list[dict[str, Any]] = [{"add": {"table": table}}]
        for version in self._versions:
            kind, flags = (
                ("ipv4_addr", ["timeout"])
                if version == 4
                else ("ipv6_addr", ["interval", "timeout"])
            )
            script.append(
                {"add": {"set": {**self._set_ref(version), "type": kind, "flags": flags}}}
            )
        if not self._chain:
            return script
        chain = {"family": self._family, "table": self._table, "name": CHAIN}
        base = {"type": "filter", "hook": "input", "prio": CHAIN_PRIORITY, "policy": "accept"}
        script.append({"add": {"chain": {**chain, **base}}})
        script.append({"flush": {"chain": chain}})
        for version in self._versions:
            protocol = "ip" if version == 4 else "ip6"
            match = {
                "op": "==",
                "left": {"payload": {"protocol": protocol, "field": "saddr"}},
                "right": f"@{self._set}{version}",
            }
            rule = {"family": self._family, "table": self._table, "chain": CHAIN}
            script.append({"add": {"rule": {**rule, "expr": [{"match": match}, {"drop": None}]}}})
        return script

    def _set_ref(self, version: int) -> dict[str, str]:
        return {"family": self._family, "table": self._table, "name": f"{self._set}{version}"}

    def _elements(self, verb: str, element: Element, values: list[Any]) -> dict[str, Any]:
        return {verb: {"element": {**self._set_ref(element.version), "elem": values}}}

    def _run(self, script: list[dict[str, Any]]) -> None:
        done = self._call(["-j", "-f", "-"], json.dumps({"nftables": script}).encode())
        if done.returncode != 0:
            raise _failure(done)

    def _call(
        self, args: list[str], stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """nft with ``args``, no shell, a bare environment; DeliveryError if it cannot run."""
        try:
            return subprocess.run(
                [self._nft, *args],
                input=stdin,
                capture_output=True,
                timeout=self._timeout,
                env={"PATH": PATH},
                cwd="/",
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeliveryError(f"{self._nft} timed out after {self._timeout:g}s") from None
        except OSError as exc:
            raise DeliveryError(f"cannot run {self._nft}: {exc.strerror}") from None


def _failure(done: subprocess.CompletedProcess[bytes]) -> DeliveryError:
    error = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    hint = ""
    if "Operation not permitted" in error[0]:
        hint = " (nft needs CAP_NET_ADMIN: see systemd/ban-drop-in.conf.example)"
    return DeliveryError(f"nft exited with status {done.returncode}: {error[0][:300]}{hint}")


def _parse_element(text: str) -> Element:
    """An element from the actions table (written by ``action_key``), parsed again."""
    try:
        if "/" in text:
            return ipaddress.ip_network(text)
        return ipaddress.ip_address(text)
    except ValueError:
        raise DeliveryError(f"not an address or network: {text[:100]!r}", permanent=True) from None


def _json_element(element: Element) -> Any:
    if isinstance(element, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return {"prefix": {"addr": str(element.network_address), "len": element.prefixlen}}
    return str(element)


def _overlaps(element: Element, network: IpNetwork) -> bool:
    if isinstance(element, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return element.overlaps(network)
    return element in network


def _outermost(elements: Any) -> list[tuple[Element, float]]:
    """Drop elements inside another one (an interval set refuses overlaps), e.g. /64 bans
    left from before ``prefix6`` was changed to 48. CIDR blocks nest or are disjoint, so in
    address order a nested one follows its container."""
    ordered = sorted(
        elements, key=lambda pair: (pair[0].version, _start(pair[0]), _length(pair[0]))
    )
    kept: list[tuple[Element, float]] = []
    for element, left in ordered:
        if kept and _inside(element, kept[-1][0]):
            continue
        kept.append((element, left))
    return kept


def _start(element: Element) -> int:
    if isinstance(element, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return int(element.network_address)
    return int(element)


def _length(element: Element) -> int:
    if isinstance(element, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return element.prefixlen
    return element.max_prefixlen


def _inside(element: Element, outer: Element) -> bool:
    if element.version != outer.version or not isinstance(
        outer, ipaddress.IPv4Network | ipaddress.IPv6Network
    ):
        return False
    return _overlaps(element, outer)

"""sd_notify: tell systemd about readiness, reloads, shutdown, status and liveness.

The protocol is one AF_UNIX datagram of newline-separated ``KEY=value`` assignments sent to
``$NOTIFY_SOCKET`` (a path, or an abstract address written with a leading ``@``). Written here
rather than taken from PyPI's ``sdnotify``, which silently drops a STATUS that is not Latin-1.
Every function is a no-op returning False outside systemd, so the daemon calls them freely.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
]


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        # Abstract namespace: the leading NUL is the address, no trailing NUL.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock and other forms are not used by systemd 252 for services


def notify(*states: str, timeout: float = 1.0) -> bool:
    """Send states such as ``READY=1`` in one datagram; False when not under systemd or on error.

    Failure is never raised: a daemon must not die because its supervisor went away. A reader
    that stops reading fills the socket's queue; ``timeout`` bounds how long the main loop may
    wait for room (0 for the periodic STATUS and WATCHDOG messages, which can be dropped).
    """
    raw = os.environ.get("NOTIFY_SOCKET", "")
    address = _address(raw) if raw else None
    if address is None or not states:
        return False
    payload = "\n".join(_one_line(state) for state in states).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.sendto(payload, address)
    except OSError:
        return False
    return True


def _one_line(state: str) -> str:
    # A newline would start a new assignment: a STATUS built from log data must not inject one.
    return state.replace("\r", " ").replace("\n", " ")


def ready(status_text: str | None = None) -> bool:
    """Startup (or a reload) finished: systemd's ``start``/``reload`` may return now."""
    states = ["READY=1"]
    if status_text is not None:
        states.append(f"STATUS={status_text}")
    return notify(*states)


def reloading() -> bool:
    """A reload began; follow with ready() whether it succeeded or not.

    MONOTONIC_USEC lets newer systemd (253+) tie this to the reload request; 252 ignores it.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Free text shown by ``systemctl status`` (UTF-8 is fine)."""
    return notify(f"STATUS={text}", timeout=0.0)


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when none are expected.

    ``$WATCHDOG_PID``, when set, names the process systemd watches: a child that inherited the
    environment must not ping on the parent's behalf.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1", timeout=0.0)

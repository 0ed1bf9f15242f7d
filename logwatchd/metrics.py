"""Prometheus ``/metrics``: collectors over the daemon's own counters, and the listener.

Nothing here runs per line. At each scrape the collector takes the daemon's snapshot
(``service.tally``) and asks the state database for the outbox depth, and turns both into
metric families in a registry of its own (never the library's global one, so tests and a
reload never see another instance's series). Labels are bounded by the config: ``source``,
``rule``, ``handler`` and a fixed ``result``; nothing taken from a log line is ever a label.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from logwatchd.config.model import ListenAddress
from logwatchd.errors import StateError
from logwatchd.state_view import StateView

log = structlog.get_logger("logwatchd.metrics")

REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request
SOCKET_MODE = 0o660  # a unix socket: the daemon's user and group may connect


class DaemonCollector(Collector):
    """The daemon's metrics, read at scrape time from ``snapshot()`` and the outbox."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        state_path: str,
    ) -> None:
        self._snapshot = snapshot
        self._state_path = state_path

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot()
        yield from _source_metrics(snap["sources"])
        yield from _rule_metrics(snap["rules"])
        yield from _delivery_metrics(snap["handlers"])
        yield from self._outbox_metrics(list(snap["handlers"]))
        info = GaugeMetricFamily(
            "logwatchd_build_info", "The running logwatchd's version", labels=["version"]
        )
        info.add_metric([snap["version"]], 1)
        yield info
        reloads = CounterMetricFamily(
            "logwatchd_reloads", "Config reloads since the daemon started", labels=["result"]
        )
        for result in ("ok", "failed"):
            reloads.add_metric([result], snap["reloads"].get(result, 0))
        yield reloads

    def _outbox_metrics(self, handlers: list[str]) -> tuple[Metric, ...]:
        pending = GaugeMetricFamily(
            "logwatchd_outbox_pending", "Alerts waiting for delivery", labels=["handler"]
        )
        oldest = GaugeMetricFamily(
            "logwatchd_outbox_oldest_seconds",
            "Age of the oldest alert waiting for delivery (0 when none waits)",
            labels=["handler"],
        )
        failed = GaugeMetricFamily(
            "logwatchd_outbox_failed",
            "Alerts whose delivery was given up, kept in the outbox for status",
            labels=["handler"],
        )
        actions = GaugeMetricFamily(
            "logwatchd_actions_active", "Actions (such as bans) in force", labels=["handler"]
        )
        now = time.time()
        try:
            with StateView(self._state_path) as view:
                depth = view.outbox()
                active = view.active_actions()
        except (StateError, sqlite3.Error, OSError) as exc:
            # the counts from memory are still worth a scrape: leave the outbox out this time
            log.warning("metrics: cannot read the outbox", error=str(exc))
            return ()
        for name in sorted(set(handlers) | set(depth)):
            entry = depth.get(name)
            pending.add_metric([name], entry.pending if entry else 0)
            age = now - entry.oldest if entry and entry.oldest is not None else 0.0
            oldest.add_metric([name], max(0.0, age))
            failed.add_metric([name], entry.failed if entry else 0)
            actions.add_metric([name], active.get(name, 0))
        return (pending, oldest, failed, actions)


def _source_metrics(sources: dict[str, dict[str, Any]]) -> Iterable[Metric]:
    lines = CounterMetricFamily("logwatchd_lines", "Lines read", labels=["source"])
    unparsed = CounterMetricFamily(
        "logwatchd_lines_unparsed",
        "Lines the source's parser could not read (lines the scan passed over are not parsed)",
        labels=["source"],
    )
    skipped = CounterMetricFamily(
        "logwatchd_lines_skipped",
        "Lines the scan passed over unparsed: no rule could match them",
        labels=["source"],
    )
    stamps = CounterMetricFamily(
        "logwatchd_timestamps_unparsed",
        "Lines whose timestamp did not parse (timed when they were read instead)",
        labels=["source"],
    )
    lag = GaugeMetricFamily(
        "logwatchd_source_lag_bytes",
        "Bytes written to a followed file and not yet read (file sources)",
        labels=["source"],
    )
    lag_seconds = GaugeMetricFamily(
        "logwatchd_source_lag_seconds",
        "How long the source has had more lines ready than one pass reads (0: keeping up)",
        labels=["source"],
    )
    last = GaugeMetricFamily(
        "logwatchd_source_last_line_timestamp_seconds",
        "When the source last gave a line (Unix time; absent until it has)",
        labels=["source"],
    )
    for source, entry in sorted(sources.items()):
        lines.add_metric([source], entry["lines"])
        unparsed.add_metric([source], entry["unparsed"])
        skipped.add_metric([source], entry["skipped"])
        stamps.add_metric([source], entry["unparsed_timestamps"])
        if entry["lag_bytes"] is not None:
            lag.add_metric([source], entry["lag_bytes"])
        lag_seconds.add_metric([source], entry["lag_seconds"])
        if entry["last_line_at"] is not None:
            last.add_metric([source], entry["last_line_at"])
    return (lines, unparsed, skipped, stamps, lag, lag_seconds, last)


def _rule_metrics(rules: dict[str, dict[str, Any]]) -> Iterable[Metric]:
    matches = CounterMetricFamily(
        "logwatchd_matches", "Events a rule matched, before thresholds", labels=["rule"]
    )
    alerts = CounterMetricFamily("logwatchd_alerts", "Alerts a rule fired", labels=["rule"])
    keys = GaugeMetricFamily(
        "logwatchd_rule_keys",
        "Group keys a rule holds state for (bounded by daemon.max_keys_per_rule)",
        labels=["rule"],
    )
    for rule, entry in sorted(rules.items()):
        matches.add_metric([rule], entry["matches"])
        alerts.add_metric([rule], entry["alerts"])
        keys.add_metric([rule], entry["keys"])
    return (matches, alerts, keys)


def _delivery_metrics(handlers: dict[str, dict[str, Any]]) -> Iterable[Metric]:
    deliveries = CounterMetricFamily(
        "logwatchd_deliveries",
        "Delivery outcomes per alert: delivered, retried (an attempt failed), failed (given up)",
        labels=["handler", "result"],
    )
    seconds = CounterMetricFamily(
        "logwatchd_send_seconds", "Time spent in the handler's sends", labels=["handler"]
    )
    for handler, entry in sorted(handlers.items()):
        for result in ("delivered", "retried", "failed"):
            deliveries.add_metric([handler, result], entry[result])
        seconds.add_metric([handler], entry["send_seconds"])
    return (deliveries, seconds)


def build_registry(collector: Collector) -> CollectorRegistry:
    """The daemon's metrics plus the process's (CPU, memory, descriptors, GC, Python)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# --- the listener -------------------------------------------------------------------------


class _Handler(MetricsHandler):
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        if urlparse(self.path).path != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        super().do_GET()


class _Logged:
    """A failed request is one line in the daemon's log, not a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("metrics request failed", exc_info=True)


class _TcpServer(_Logged, ThreadingHTTPServer):
    daemon_threads = True


class _UnixServer(_Logged, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class MetricsServer:
    """Serves ``registry`` at ``/metrics`` on a TCP address or a unix socket, in threads."""

    def __init__(self, address: ListenAddress, registry: CollectorRegistry) -> None:
        self.address = address
        handler = _Handler.factory(registry)
        self._server: socketserver.BaseServer
        if address.unix_path is not None:
            _remove_stale_socket(address.unix_path)
            self._server = _UnixServer(address.unix_path, handler)
            os.chmod(address.unix_path, SOCKET_MODE)
        else:
            family, bound = _resolve(address)
            server_class = type("_Server", (_TcpServer,), {"address_family": family})
            self._server = server_class(bound, handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        return int(self._server.server_address[1])  # type: ignore[index]

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(REQUEST_TIMEOUT)
        if self.address.unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.address.unix_path)


def _resolve(address: ListenAddress) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    family, _type, _proto, _name, bound = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, bound


def _remove_stale_socket(path: str) -> None:
    """A socket left by a killed daemon is removed; a live one, or any other file, is an
    error."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: left over
            return
    raise OSError(f"{path} is in use by another process")

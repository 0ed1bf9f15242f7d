"""The daemon's main loop: read, match, commit, dispatch; reload on SIGHUP, drain on SIGTERM.

One thread reads every source, runs the pipeline and commits. Watchdog events and signals
only wake it. Delivery runs in the dispatcher's worker threads, fed from the outbox, so a
slow handler never holds up reading.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from logwatchd.alerts import Alert
from logwatchd.clock import Clock, SystemClock
from logwatchd.config.model import Config, DaemonConfig, SourceConfig
from logwatchd.errors import ConfigError
from logwatchd.handlers import HostInfo, build_handler
from logwatchd.outbox import Dispatcher
from logwatchd.pipeline import Pipeline, build_engine
from logwatchd.service import notify
from logwatchd.sources import FileFollower, StdinSource
from logwatchd.sources.base import Source
from logwatchd.sources.journal import JournalSource
from logwatchd.sources.openfiles import descriptor_budget
from logwatchd.state import StateStore
from logwatchd.templates import Templates

log = structlog.get_logger("logwatchd")

MAX_BATCH = 20_000  # lines per source per pass, so one busy file cannot starve the others
STATUS_INTERVAL = 5.0
IDLE_COMMIT = 60.0
PRUNE_INTERVAL = 3600.0  # delivered outbox rows older than the retention are dropped hourly


@dataclass
class Counters:
    lines: int = 0
    alerts: int = 0
    started: float = field(default_factory=time.monotonic)


class Wiring:
    """Everything built from one config: sources, pipeline, handlers, dispatcher."""

    def __init__(self, config: Config, store: StateStore, clock: Clock) -> None:
        host = HostInfo.local()
        self.config = config
        engine, parsers = build_engine(config, clock, host.name)
        digests = {rule.id: rule.digest() for rule in config.rules}
        store.prune_rules(digests)
        engine.load_state(store.load_rule_state())
        self.pipeline = Pipeline(engine, parsers)
        share = open_files_share(config)
        own = own_log_files()
        self.sources = [
            build_source(
                src,
                saved=store.load_source(src.id),
                daemon=config.daemon,
                clock=clock,
                max_open_files=share,
                exclude=own,
            )
            for src in config.sources
        ]
        templates = Templates()
        handlers = {
            name: build_handler(cfg, templates=templates, host=host)
            for name, cfg in config.handlers.items()
        }
        self.dispatcher = Dispatcher(
            store.path, handlers, config.handlers, clock, dry_run=config.daemon.dry_run
        )

    def start(self, wake: threading.Event) -> None:
        self.dispatcher.start()
        for source in self.sources:
            source.start(wake.set)

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        return {source.id: source.checkpoint() for source in self.sources}

    def stop_sources(self) -> None:
        for source in self.sources:
            try:
                source.stop()
            except Exception:
                log.exception("source stop failed", source=source.id)


class Daemon:
    def __init__(
        self,
        loader: Callable[[], Config],
        *,
        name: str = "",
        state_dir: str | None = None,
        clock: Clock | None = None,
        config: Config | None = None,
    ) -> None:
        self._load = loader
        self.config_path = name
        self.state_dir = state_dir
        self.clock = clock or SystemClock()
        self._initial = config
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._counters = Counters()
        self._pending: list[Alert] = []

    # --- signals ----------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stop = True
        self._wake.set()

    def _on_reload(self, signum: int, frame: object) -> None:
        self._reload = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    # --- life cycle -------------------------------------------------------------------

    def run(self) -> int:
        config = self._initial or self._load()
        state_dir = self.state_dir or config.daemon.state_dir
        store = StateStore.in_dir(state_dir)
        first_run = store.is_new()
        wiring = Wiring(config, store, self.clock)
        wiring.start(self._wake)
        log.info(
            "started",
            config=self.config_path,
            state_dir=state_dir,
            sources=len(config.sources),
            rules=len(config.rules),
            first_run=first_run,
        )
        notify.ready(self._status_text(store))
        try:
            wiring = self._loop(wiring, store)
        finally:
            notify.stopping()
            self._shutdown(wiring, store)
        return 0

    def _loop(self, wiring: Wiring, store: StateStore) -> Wiring:
        last_commit = last_status = last_ping = time.monotonic()
        last_prune = last_commit - PRUNE_INTERVAL
        committed_lines = self._counters.lines
        ping_every = notify.watchdog_interval()
        commit_every = wiring.config.daemon.commit_interval
        wait = min(wiring.config.daemon.stat_interval, 1.0)
        while not self._stop:
            self._wake.wait(wait)
            self._wake.clear()
            busy = self._read(wiring)
            self._pending.extend(wiring.pipeline.tick(self.clock.now()))
            now = time.monotonic()
            since = now - last_commit
            read_since = self._counters.lines != committed_lines
            # Idle costs nothing but a commit a minute; a rotation seen without new lines is
            # found again from the older checkpoint after a restart anyway.
            if self._pending or (read_since and since >= commit_every) or since >= IDLE_COMMIT:
                self._commit(wiring, store)
                last_commit = now
                committed_lines = self._counters.lines
            if busy:
                self._wake.set()
            if ping_every and now - last_ping >= ping_every:
                notify.watchdog_ping()
                last_ping = now
            if now - last_status >= STATUS_INTERVAL:
                notify.status(self._status_text(store))
                last_status = now
            if now - last_prune >= PRUNE_INTERVAL:
                self._prune(store)
                last_prune = now
            if self._reload:
                self._reload = False
                wiring = self._reload_config(wiring, store)
                commit_every = wiring.config.daemon.commit_interval
        return wiring

    def _read(self, wiring: Wiring) -> bool:
        """One pass over the sources; True when some source had more than a batch ready."""
        busy = False
        handle = wiring.pipeline.handle
        pending = self._pending
        for source in wiring.sources:
            try:
                lines = source.poll(MAX_BATCH)
            except Exception:
                log.exception("source poll failed", source=source.id)
                continue
            for line in lines:
                try:
                    pending.extend(handle(line))
                except Exception:
                    # A line the pipeline chokes on is a bug to report, not a reason to stop.
                    log.exception("line failed", source=source.id, line=line.raw[:200])
            self._counters.lines += len(lines)
            busy = busy or len(lines) >= MAX_BATCH
        return busy

    def _commit(self, wiring: Wiring, store: StateStore) -> None:
        alerts, self._pending = self._pending, []
        changes = wiring.pipeline.engine.drain_changes()
        store.commit(sources=wiring.checkpoints(), rules=changes, alerts=alerts)
        if alerts:
            self._counters.alerts += len(alerts)
            for alert in alerts:
                log.debug(
                    "alert fired",
                    rule=alert.rule,
                    source=alert.source,
                    key=alert.key,
                    severity=alert.severity,
                    alert_id=alert.id,
                )
            # only the workers with new rows: a worker woken for nothing runs a claim query
            wiring.dispatcher.notify({name for alert in alerts for name in alert.handlers})

    def _reload_config(self, wiring: Wiring, store: StateStore) -> Wiring:
        notify.reloading()
        try:
            config = self._load()
        except ConfigError as exc:
            log.error("reload failed, keeping the running config", error=str(exc))
            notify.ready(self._status_text(store))
            return wiring
        except Exception as exc:
            log.exception("reload failed, keeping the running config", error=str(exc))
            notify.ready(self._status_text(store))
            return wiring
        # Commit first: the new wiring is built from what the database now holds, so
        # offsets and the state of unchanged rules carry over exactly.
        self._commit(wiring, store)
        wiring.stop_sources()
        wiring.dispatcher.stop(wiring.config.daemon.shutdown_timeout)
        try:
            fresh = Wiring(config, store, self.clock)
            fresh.start(self._wake)
        except Exception as exc:
            log.exception("reload failed while starting, restarting the old config", error=str(exc))
            fresh = Wiring(wiring.config, store, self.clock)
            fresh.start(self._wake)
        log.info("reloaded", config=self.config_path, rules=len(fresh.config.rules))
        notify.ready(self._status_text(store))
        return fresh

    def _shutdown(self, wiring: Wiring, store: StateStore) -> None:
        try:
            self._commit(wiring, store)
        except Exception:
            log.exception("final commit failed")
        wiring.stop_sources()
        wiring.dispatcher.stop(wiring.config.daemon.shutdown_timeout)
        store.close()
        log.info("stopped", lines=self._counters.lines, alerts=self._counters.alerts)

    def _prune(self, store: StateStore) -> None:
        try:
            removed = store.prune_delivered()
        except Exception:
            log.exception("pruning delivered alerts failed")
            return
        if removed:
            log.info("pruned delivered alerts", count=removed)

    def _status_text(self, store: StateStore) -> str:
        depth = 0
        try:
            depth = store.pending_count()
        except Exception:
            log.exception("status query failed")
        return (
            f"{self._counters.lines} lines read, {self._counters.alerts} alerts, "
            f"outbox {depth} pending"
        )


def open_files_share(config: Config) -> int:
    """Each file source's share of ``daemon.max_open_files``, itself bounded by half the
    process's descriptor limit (the state database and handlers need descriptors too)."""
    files = sum(1 for src in config.sources if src.type == "file")
    budget = descriptor_budget(config.daemon.max_open_files)
    if budget < config.daemon.max_open_files and files:
        log.info("descriptor limit: fewer files held open", max_open_files=budget)
    return max(1, budget // max(1, files))


def own_log_files() -> frozenset[tuple[int, int]]:
    """The daemon's own log as (dev, ino): stdout and stderr when they are regular files
    (``run --daemon --log-file``, or a redirection). A file source never reads it, whatever
    its name: with --log-level debug in a followed directory it would feed on itself. The
    file is opened once for the process's life, so its inode is the identity, also after a
    rename by logrotate; a copytruncate copy is a new inode holding lines read once, and
    what they cause goes to the live file, which stays excluded."""
    own = set()
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            own.add((st.st_dev, st.st_ino))
    return frozenset(own)


def build_source(
    config: SourceConfig,
    *,
    saved: dict[str, Any] | None,
    daemon: DaemonConfig,
    clock: Clock,
    max_open_files: int | None = None,
    exclude: frozenset[tuple[int, int]] = frozenset(),
) -> Source:
    """``saved`` is None the first time a source runs: then its ``start_at`` applies."""
    if config.type == "file":
        return FileFollower(
            config,
            saved=saved,
            max_line_bytes=daemon.max_line_bytes,
            stat_interval=daemon.stat_interval,
            rescan_interval=daemon.rescan_interval,
            clock=clock,
            max_open_files=max_open_files,
            exclude=exclude,
        )
    if config.type == "journald":
        return JournalSource(config, saved=saved, clock=clock, max_line_bytes=daemon.max_line_bytes)
    return StdinSource(config, clock=clock, max_line_bytes=daemon.max_line_bytes)

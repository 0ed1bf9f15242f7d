"""The daemon's main loop: read, match, commit, dispatch; reload on SIGHUP, drain on SIGTERM.

One thread reads every source, runs the pipeline and commits. Watchdog events and signals
only wake it. Delivery runs in the dispatcher's worker threads, fed from the outbox, so a
slow handler never holds up reading.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from logwatchd.actions import ActionBook
from logwatchd.alerts import Alert
from logwatchd.clock import Clock, SystemClock
from logwatchd.config.model import Config, DaemonConfig, ListenAddress, SourceConfig
from logwatchd.errors import ConfigError
from logwatchd.handlers import HostInfo, build_handler
from logwatchd.outbox import Dispatcher, InFlight
from logwatchd.pipeline import Pipeline, build_engine
from logwatchd.service import notify
from logwatchd.service.stamps import StampWatch
from logwatchd.service.tally import Tally, line_counts
from logwatchd.sources.base import Source
from logwatchd.sources.files import FileFollower
from logwatchd.sources.journal import JournalSource, OwnEntries
from logwatchd.sources.openfiles import descriptor_budget
from logwatchd.sources.stdin import StdinSource
from logwatchd.state import RuleChanges, StateStore
from logwatchd.state_health import WriteRetry, damaged, is_unwritable, state_error
from logwatchd.templates import Templates
from logwatchd.timelimit import Interrupted, LineTimeLimit

if TYPE_CHECKING:
    from logwatchd.metrics import MetricsServer

log = structlog.get_logger("logwatchd")

MAX_BATCH = 20_000  # lines per source per pass, so one busy file cannot starve the others
STATUS_INTERVAL = 5.0
STATUS_SOON = 0.25  # committed lines are reported this soon (tests and `systemctl status` wait)
IDLE_COMMIT = 60.0
PRUNE_INTERVAL = 3600.0  # delivered outbox rows older than the retention are dropped hourly


@dataclass
class Counters:
    lines: int = 0
    alerts: int = 0
    started: float = field(default_factory=time.monotonic)


class Wiring:
    """Everything built from one config: sources, pipeline, handlers, dispatcher."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        clock: Clock,
        in_flight: InFlight,
        limit: LineTimeLimit,
    ) -> None:
        host = HostInfo.local(config.daemon.host)
        self.config = config
        engine, parsers = build_engine(config, clock, host.name)
        digests = {rule.id: rule.digest() for rule in config.rules}
        store.prune_rules(digests)
        engine.load_state(store.load_rule_state())
        limit.seconds = config.daemon.line_timeout
        self.pipeline = Pipeline(engine, parsers, limit=limit)
        self.pipeline.prepare()  # before READY: the first lines need not wait for it
        self.stamps = StampWatch(parsers)
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
            store.path,
            handlers,
            config.handlers,
            clock,
            dry_run=config.daemon.dry_run,
            in_flight=in_flight,
        )
        self.actions = ActionBook(store, handlers, dry_run=config.daemon.dry_run)
        self._clock = clock

    def start(self, wake: threading.Event, tally: Tally) -> None:
        # before the workers: undos that fell due while down, and the active actions again
        self.actions.start(self._clock.now())
        self.dispatcher.start()
        for source in self.sources:
            source.start(wake.set)
        tally.attach(self.pipeline, self.dispatcher, self.checkpoints())

    def checkpoints(self) -> dict[str, dict[str, Any]]:
        return {source.id: source.checkpoint() for source in self.sources}

    def committed(self) -> None:
        """Tell the sources that acknowledge upstream (NATS) that their checkpoint is stored."""
        for source in self.sources:
            hook = getattr(source, "committed", None)
            if hook is not None:
                try:
                    hook()
                except Exception:
                    log.exception("source commit hook failed", source=source.id)

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
        self._in_flight = InFlight()  # sends of the old dispatcher a reload must not repeat
        self._stop = False
        self._reload = False
        self._counters = Counters()
        self._pending: list[Alert] = []
        self._limit = LineTimeLimit()  # no line may hold up the loop (installed with signals)
        self._interrupted = False  # stopped inside a batch: its lines are read again next start
        self._tally = Tally(name)  # per source, rule and handler; kept across reloads
        self._metrics: MetricsServer | None = None
        self._pruner: threading.Thread | None = None
        # what the last commit could not write (disk full): retried before anything is read
        self._unsaved: tuple[dict[str, dict[str, Any]], RuleChanges, list[Alert]] | None = None
        self._retry_at = 0.0
        self._report_due = False  # lines were committed that no STATUS reported yet
        self._writes = WriteRetry("state database commit", self.clock)

    # --- signals ----------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self._limit.install()

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stop = True
        self._wake.set()
        self._limit.interrupt()  # a line in evaluation (a slow regex, say) stops at once

    def _on_reload(self, signum: int, frame: object) -> None:
        self._reload = True
        self._wake.set()

    # --- life cycle -------------------------------------------------------------------

    def run(self) -> int:
        config = self._initial or self._load()
        state_dir = self.state_dir or config.daemon.state_dir
        try:
            return self._run(config, state_dir)
        except sqlite3.Error as exc:
            raise state_error(os.path.join(state_dir, "state.db"), exc) from None

    def _run(self, config: Config, state_dir: str) -> int:
        store = StateStore.in_dir(state_dir)
        # a damaged page found now is a clear refusal; found later, a failure mid-delivery
        if problems := store.problems():
            store.close()
            raise damaged(store.path, problems[0])
        first_run = store.is_new()
        wiring = Wiring(config, store, self.clock, self._in_flight, self._limit)
        wiring.start(self._wake, self._tally)
        self._commit_status(store)  # status: running since now
        self._serve_metrics(config.daemon.metrics_listen, store.path)
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
        last_commit = last_status = last_ping = self.clock.monotonic()
        last_prune = last_commit - PRUNE_INTERVAL
        committed_lines = reported_lines = self._counters.lines
        ping_every = notify.watchdog_interval()
        commit_every = wiring.config.daemon.commit_interval
        wait = min(wiring.config.daemon.stat_interval, 1.0)
        while not self._stop:
            self._wake.wait(self._timeout(wait, last_commit + commit_every, committed_lines))
            self._wake.clear()
            busy = False
            if self._unsaved is None:  # else nothing more is read until that commit is in
                try:
                    busy = self._read(wiring)
                except Interrupted:
                    self._interrupted = True
                    break
                self._pending.extend(wiring.pipeline.tick(self.clock.now()))
                self._undo_due(wiring, self.clock.monotonic())
            now = self.clock.monotonic()
            since = now - last_commit
            read_since = self._counters.lines != committed_lines
            # Idle costs nothing but a commit a minute; a rotation seen without new lines is
            # found again from the older checkpoint after a restart anyway.
            if self._commit_due(now, since, read_since, commit_every) and self._commit(
                wiring, store
            ):
                last_commit = now
                committed_lines = self._counters.lines
            if damage := wiring.dispatcher.damage():
                raise damaged(store.path, damage)
            if busy:
                self._wake.set()
            if ping_every and now - last_ping >= ping_every:
                notify.watchdog_ping()
                last_ping = now
            fresh = committed_lines != reported_lines and now - last_status >= STATUS_SOON
            if fresh or now - last_status >= STATUS_INTERVAL:
                notify.status(self._status_text(store))
                last_status, reported_lines = now, committed_lines
            self._report_due = committed_lines != reported_lines
            if now - last_prune >= PRUNE_INTERVAL:
                self._prune(store, wiring.config.daemon.history)
                last_prune = now
            if self._reload and self._unsaved is None:
                self._reload = False
                wiring = self._reload_config(wiring, store)
                commit_every = wiring.config.daemon.commit_interval
        return wiring

    def _timeout(self, wait: float, commit_at: float, committed_lines: int) -> float:
        """How long the loop may sleep: lines read are committed on time, and reported soon."""
        now = self.clock.monotonic()
        if self._unsaved is not None:
            return max(0.0, min(wait, self._retry_at - now))
        if self._counters.lines != committed_lines:
            wait = min(wait, commit_at - now)
        if self._report_due:
            wait = min(wait, STATUS_SOON)
        return max(0.0, wait)

    def _read(self, wiring: Wiring) -> bool:
        """One pass over the sources; True when some source had more than a batch ready."""
        busy = False
        now = time.time()
        for source in wiring.sources:
            try:
                lines = source.poll(MAX_BATCH)
            except Exception:
                log.exception("source poll failed", source=source.id)
                continue
            before = line_counts(wiring.pipeline)
            self._pending.extend(wiring.pipeline.handle_batch(lines))
            self._counters.lines += len(lines)
            more = len(lines) >= MAX_BATCH
            self._tally.read(source.id, len(lines), before, more=more, now=now)
            busy = busy or more
        return busy

    def _commit_due(self, now: float, since: float, read_since: bool, every: float) -> bool:
        if self._unsaved is not None:
            return now >= self._retry_at
        return (
            bool(self._pending)
            or (read_since and since >= every)
            or since >= IDLE_COMMIT
            or self._tally.due()  # the status row shows what was counted within a second
        )

    def _commit(self, wiring: Wiring, store: StateStore) -> bool:
        """Commit what was read since the last commit; False when the disk refused it (then
        the very same commit is retried later, and nothing more is read meanwhile)."""
        if self._unsaved is None:
            fired, self._pending = self._pending, []
            drained = wiring.pipeline.engine.drain_changes()
            self._unsaved = (wiring.checkpoints(), drained, fired)
        sources, changes, alerts = self._unsaved
        status, activity = self._tally.for_commit()
        try:
            store.commit(
                sources=sources,
                rules=changes,
                alerts=alerts,
                acting=wiring.actions.recorders,
                status=status,
                activity=activity,
            )
        except sqlite3.OperationalError as exc:
            self._tally.not_saved(activity)
            if not is_unwritable(exc):
                raise
            self._retry_at = self.clock.monotonic() + self._writes.failed(exc, path=store.path)
            return False
        self._unsaved = None
        self._writes.succeeded()
        wiring.committed()
        self._tally.committed(sources)
        try:
            wiring.stamps.report(store, self.clock.monotonic())
        except Exception:
            log.exception("counting unparsed timestamps failed")
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
        return True

    def _commit_status(self, store: StateStore) -> None:
        """The status row and the activity counts now, alone in a commit."""
        status, activity = self._tally.for_commit(force=True)
        store.commit(status=status, activity=activity)

    def _undo_due(self, wiring: Wiring, monotonic: float) -> None:
        """Actions whose time has come (or that ``logwatchd actions revert`` ended) are undone."""
        try:
            due = wiring.actions.tick(self.clock.now(), monotonic)
        except Exception:
            log.exception("checking for due undos failed")
            return
        if due:
            wiring.dispatcher.notify(due)

    def _reload_config(self, wiring: Wiring, store: StateStore) -> Wiring:
        notify.reloading()
        try:
            config = self._load()
        except ConfigError as exc:
            log.error("reload failed, keeping the running config", error=str(exc))
            self._tally.reloads["failed"] += 1
            notify.ready(self._status_text(store))
            return wiring
        except Exception as exc:
            log.exception("reload failed, keeping the running config", error=str(exc))
            self._tally.reloads["failed"] += 1
            notify.ready(self._status_text(store))
            return wiring
        # Commit first: the new wiring is built from what the database now holds, so
        # offsets and the state of unchanged rules carry over exactly.
        if not self._commit(wiring, store):
            log.error("reload postponed until the state database can be written again")
            self._reload = True
            notify.ready(self._status_text(store))
            return wiring
        wiring.stop_sources()
        wiring.dispatcher.stop(wiring.config.daemon.shutdown_timeout)
        self._tally.retire()
        try:
            fresh = Wiring(config, store, self.clock, self._in_flight, self._limit)
            fresh.start(self._wake, self._tally)
            self._tally.reloads["ok"] += 1
        except Exception as exc:
            log.exception("reload failed while starting, restarting the old config", error=str(exc))
            self._tally.reloads["failed"] += 1
            fresh = Wiring(wiring.config, store, self.clock, self._in_flight, self._limit)
            fresh.start(self._wake, self._tally)
        self._serve_metrics(fresh.config.daemon.metrics_listen, store.path)
        log.info("reloaded", config=self.config_path, rules=len(fresh.config.rules))
        notify.ready(self._status_text(store))
        return fresh

    def _shutdown(self, wiring: Wiring, store: StateStore) -> None:
        self._serve_metrics(None, store.path)
        if self._interrupted:
            # what the last commit holds is consistent: the batch is read again next start
            log.info("stopped while reading a batch; its lines are read again at the next start")
        else:
            try:
                if not self._commit(wiring, store):
                    log.error("final commit failed: lines since the last commit are read again")
            except sqlite3.DatabaseError as exc:
                log.error("final commit failed", error=str(exc))
            except Exception:
                log.exception("final commit failed")
        wiring.stop_sources()
        wiring.dispatcher.stop(wiring.config.daemon.shutdown_timeout)
        try:  # the workers' last deliveries are in the status too
            self._commit_status(store)
        except Exception:
            log.exception("final status commit failed")
        if self._pruner is not None:  # an unfinished chunk is rolled back, and done next time
            self._pruner.join(wiring.config.daemon.shutdown_timeout)
        store.close()
        log.info("stopped", lines=self._counters.lines, alerts=self._counters.alerts)

    def _prune(self, store: StateStore, history: float) -> None:
        try:
            removed = store.prune_delivered()
        except Exception:
            log.exception("pruning delivered alerts failed")
            return
        if removed:
            log.info("pruned delivered alerts", count=removed)
        if self._pruner is None or not self._pruner.is_alive():
            self._pruner = threading.Thread(
                target=_prune_history, args=(store.path, history), name="prune", daemon=True
            )
            self._pruner.start()

    def _serve_metrics(self, address: ListenAddress | None, state_path: str) -> None:
        """Serve /metrics at ``address`` (None: not at all), moving the listener if it
        changed. A listener that cannot start is logged; reading logs matters more."""
        current = self._metrics
        if current is not None and current.address == address:
            return
        if current is not None:
            current.stop()
            self._metrics = None
        if address is None:
            return
        from logwatchd.metrics import DaemonCollector, MetricsServer, build_registry

        registry = build_registry(DaemonCollector(self._tally.snapshot, state_path))
        try:
            self._metrics = MetricsServer(address, registry).start()
        except OSError as exc:
            log.error("cannot serve metrics", listen=str(address), error=str(exc))
            return
        log.info("serving metrics", listen=str(address))

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


def _prune_history(state_path: str, history: float) -> None:
    """In its own thread and connection: a month of history can take a while to delete."""
    try:
        store = StateStore(state_path)
        try:
            removed = store.prune_history(history)
        finally:
            store.close()
    except Exception:
        log.exception("pruning the history failed")
        return
    if removed:
        log.info("pruned history", rows=removed)


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
        return JournalSource(
            config,
            saved=saved,
            clock=clock,
            max_line_bytes=daemon.max_line_bytes,
            own=OwnEntries.of_this_process(),
        )
    if config.type == "nats":
        from logwatchd.sources.nats import NatsSource

        return NatsSource(config, saved=saved, clock=clock, host=daemon.host_name())
    return StdinSource(config, clock=clock, max_line_bytes=daemon.max_line_bytes)

"""The journald source: ``journalctl -o json`` as a child process, resumed by cursor.

journalctl does the journal work (file format, rotation, matches, merging files); this
module runs it, reads its JSON records line by line into a byte-bounded buffer, and turns
them into ``Line`` objects when the daemon polls. The position is the journal cursor of the
last record ``poll()`` returned; journalctl restarts from the last record read, so a crashed
or killed journalctl neither loses nor repeats a record.

Modes: the system journal and ``journal_directory`` are followed (``--follow``); explicit
``journal_files`` cannot be followed by journalctl ("Failed to get journal fd"), so they are
read again after the cursor every ``poll_interval`` seconds. journalctl expands globs in
``journal_files``: a journal file that grows is rotated to ``NAME@...journal``, so give a glob
that covers the rotated names (``remote*.journal``) or a directory, or records are missed.

Positions: ``checkpoint()`` is ``{"cursor": C}``; C None means "from the journal's beginning"
(nothing was there, or ``start_at: beginning``). A saved dict without "cursor" (or None) is a
first run: ``start_at: end`` then looks up the newest matching record and starts after it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import structlog

from logwatchd.clock import Clock
from logwatchd.config.model import SourceConfig
from logwatchd.errors import ConfigError
from logwatchd.events import Line
from logwatchd.sources.journal_records import decode_record, line_text, records

# A cursor as journalctl prints it: "s=...;i=...;b=...;m=...;t=...;x=..." (hex values).
_CURSOR_SHAPE = re.compile(r"[a-z]=[0-9a-f]+(?:;[a-z]=[0-9a-f]+)*", re.ASCII)
_MACHINE_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)
_MAX_BACKOFF = 30.0
_HEALTHY_RUN = 30.0  # a follow process that lived this long resets the restart backoff
_STDERR_TAIL = 500
MAX_RECORD_BYTES = 1 << 20  # a journal record as JSON text; fields are cut once decoded


class _Buffer:
    """A FIFO of raw records bounded in bytes: ``put`` blocks while it is full.

    Blocking the reader stops it reading journalctl's stdout, so journalctl blocks on its
    pipe: memory stays bounded however far behind the daemon is.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: deque[tuple[bytes, str, bool]] = deque()
        self._bytes = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, data: bytes, cursor: str, cut: bool) -> bool | None:
        """Queue one record; True if the buffer was empty, None once closed."""
        with self._cond:
            # An empty buffer takes any record, or one record above the bound would deadlock.
            while self._items and self._bytes + len(data) > self._max and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            was_empty = not self._items
            self._items.append((data, cursor, cut))
            self._bytes += len(data)
            return was_empty

    def take(self, limit: int) -> list[tuple[bytes, str, bool]]:
        with self._cond:
            count = min(limit, len(self._items))
            taken = [self._items.popleft() for _ in range(count)]
            self._bytes -= sum(len(item[0]) for item in taken)
            self._cond.notify_all()
            return taken

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def size(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


def journalctl_argv(
    journalctl: str,
    config: SourceConfig,
    *,
    cursor: str | None,
    follow: bool,
    last: bool = False,
    machine_id: str | None = None,
) -> list[str]:
    """The journalctl command line: ``last`` asks for the newest record only (to find the end).

    - ``--no-tail``: with ``--follow`` journalctl otherwise shows only the last 10 records,
      even after ``--after-cursor``.
    - ``--merge``: without it ``--follow`` implies ``--boot`` (systemd 252), which after a
      reboot skips the rest of the previous boot, and in a directory skips every other boot.
      For the system journal ``--merge`` would also take in other machines' journals kept on
      this host, so each term is ANDed with this machine's ``_MACHINE_ID`` instead.
    - Match terms (``FIELD=value``, checked by the config schema) come after ``--`` so a term
      can never be read as an option, and groups are joined by ``+`` so they are OR'ed even
      across fields.
    """
    argv = [journalctl, "--output=json", "--all", "--no-pager", "--quiet", "--merge"]
    if config.journal_directory:
        argv.append(f"--directory={config.journal_directory}")
    argv.extend(f"--file={path}" for path in config.journal_files)
    if last:
        argv.append("--lines=1")
    else:
        if cursor is not None:
            argv.append(f"--after-cursor={cursor}")
        if follow:
            argv += ["--follow", "--no-tail"]
    argv.append("--")
    local = [f"_MACHINE_ID={machine_id}"] if machine_id else []
    groups = [[*local, term] for term in config.match] or ([local] if local else [])
    for index, group in enumerate(groups):
        if index:
            argv.append("+")
        argv.extend(group)
    return argv


def local_machine_id(path: str = "/etc/machine-id") -> str | None:
    """This machine's id (32 hex digits), or None when it cannot be read."""
    try:
        with open(path, encoding="ascii") as file:
            text = file.read(64).strip()
    except (OSError, ValueError):
        return None
    return text if _MACHINE_ID.fullmatch(text) else None


@dataclass(frozen=True, slots=True)
class OwnEntries:
    """The journal records the daemon wrote itself: its unit's, and its process's in this boot.

    A journald source never delivers them (unless its match names the daemon's unit): the
    daemon's log repeats addresses and raw lines from alerts, and a rule over the whole
    journal would count them again and feed on itself. ``_SYSTEMD_UNIT``, ``_PID`` and
    ``_BOOT_ID`` are set by journald, so no other process can make its records look like
    the daemon's (and so hide them).
    """

    pid: str
    boot_id: str | None
    unit: str | None

    @classmethod
    def of_this_process(cls, environ: Mapping[str, str] | None = None) -> OwnEntries:
        boot = _read_text(BOOT_ID_PATH)  # journald writes it without the dashes
        boot_id = boot.strip().replace("-", "") if boot else None
        env = os.environ if environ is None else environ
        # The unit is the daemon's own only when systemd started it as a service (it sets
        # both); `logwatchd run` from a cron job runs in cron.service, whose records are not.
        started = all(env.get(name) for name in ("INVOCATION_ID", "NOTIFY_SOCKET"))
        unit = own_unit(_read_text(CGROUP_PATH)) if started else None
        return cls(str(os.getpid()), boot_id, unit)

    def wrote(self, fields: dict[str, Any]) -> bool:
        if self.unit is not None and fields.get("_SYSTEMD_UNIT") == self.unit:
            return True
        if fields.get("_PID") != self.pid:
            return False
        return self.boot_id is None or fields.get("_BOOT_ID") == self.boot_id

    def wanted_by(self, config: SourceConfig) -> bool:
        """A source whose match names the daemon's own unit asked for its records."""
        return self.unit is not None and f"_SYSTEMD_UNIT={self.unit}" in config.match


BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
CGROUP_PATH = "/proc/self/cgroup"


def own_unit(cgroup: str | None) -> str | None:
    """The systemd service this process runs in, from /proc/self/cgroup ("0::/system.slice/
    logwatchd.service"); None outside a service (a shell's session scope, a container)."""
    for line in (cgroup or "").splitlines():
        name = line.rpartition("/")[2].strip()
        if name.endswith(".service"):
            return name
    return None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _initial_position(
    saved: dict[str, Any] | None, config: SourceConfig
) -> tuple[bool, str | None]:
    """(position known, cursor): None as cursor means the journal's beginning."""
    if saved and "cursor" in saved:
        cursor = saved["cursor"]
        if cursor is None:
            return True, None
        if isinstance(cursor, str) and _CURSOR_SHAPE.fullmatch(cursor):
            return True, cursor
        structlog.get_logger().warning(
            "saved journal cursor is unusable; starting as on a first run",
            source=config.id,
            start_at=config.start_at,
        )
    if config.start_at == "beginning":
        return True, None
    return False, None  # "end": the reader thread looks up the newest record first


class JournalSource:
    """Follows the systemd journal (or a journal directory or files) through journalctl."""

    def __init__(
        self,
        config: SourceConfig,
        *,
        saved: dict[str, Any] | None,
        clock: Clock,
        max_line_bytes: int = 65536,
        max_record_bytes: int = MAX_RECORD_BYTES,
        max_buffer_bytes: int = 8 << 20,
        poll_interval: float = 1.0,
        restart_backoff: float = 1.0,
        journalctl: str = "journalctl",
        own: OwnEntries | None = None,
    ) -> None:
        self.id = config.id
        # records the daemon wrote itself are skipped (see OwnEntries)
        self._own = None if own is None or own.wanted_by(config) else own
        self._config = config
        self._clock = clock
        self._max_line_bytes = max_line_bytes
        self._max_record_bytes = max_record_bytes
        self._poll_interval = poll_interval
        self._restart_backoff = restart_backoff
        self._journalctl = journalctl
        self._follow = not config.journal_files
        self._machine_id: str | None = None  # set for the system journal: see journalctl_argv
        self._buffer = _Buffer(max_buffer_bytes)
        self._lock = threading.Lock()
        self._known, self._cursor = _initial_position(saved, config)
        self._read_cursor = self._cursor  # the reader thread's position: last record queued
        self._lineno = 0
        self._wake: Callable[[], None] = _no_wake
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    # --- the Source contract -----------------------------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        found = shutil.which(self._journalctl)
        if found is None:
            raise ConfigError(
                f"source {self.id!r}: journald sources need {self._journalctl!r}, which was "
                "not found (install systemd, or check PATH)",
                self._config.mark,
                "type",
            )
        self._journalctl = found
        if not (self._config.journal_directory or self._config.journal_files):
            self._machine_id = local_machine_id()
            if self._machine_id is None:
                structlog.get_logger().warning(
                    "cannot read /etc/machine-id: other machines' journals stored on this "
                    "host are read too",
                    source=self.id,
                )
        self._wake = wake
        self._thread = threading.Thread(target=self._run, name=f"journal-{self.id}", daemon=True)
        self._thread.start()

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        items = self._buffer.take(max_lines)
        if not items:
            return []
        now = self._clock.now()
        lines = []
        for data, cursor, cut in items:
            line = self._line(data, cursor, cut, now)
            if self._own is not None and self._own.wrote(line.fields or {}):
                continue
            self._lineno += 1
            line.lineno = self._lineno
            lines.append(line)
        with self._lock:
            self._cursor = items[-1][1]
        if len(self._buffer):
            self._wake()  # more is ready: make sure the daemon comes back for it
        return lines

    def checkpoint(self) -> dict[str, Any]:
        """``{"cursor": C}`` after the last record returned (None: from the beginning).

        Empty until the position is known (``start_at: end`` before the newest record was
        looked up); a saved empty dict is treated as a first run.
        """
        with self._lock:
            return {"cursor": self._cursor} if self._known else {}

    def stop(self) -> None:
        self._stopping.set()
        self._buffer.close()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if proc is not None:
            _reap(proc)

    # --- for status and tests ---------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running journalctl's process id, if one runs."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.size

    # --- turning records into lines ---------------------------------------------------

    def _line(self, data: bytes, cursor: str, cut: bool, now: float) -> Line:
        fields, cut = decode_record(data, cursor, cut)
        raw, text_cut = line_text(fields, self._max_line_bytes)
        return Line(
            source=self.id,
            raw=raw,
            read_time=now,
            origin=cursor,
            path=None,
            truncated=cut or text_cut,
            fields=fields,
        )

    # --- the reader thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._restart_backoff
        while not self._stopping.is_set():
            started = time.monotonic()
            if not self._known:
                ok = self._find_end()
                if ok:
                    continue
            else:
                ok = self._read_once()
            if self._stopping.is_set():
                return
            if ok and not self._follow:
                delay, backoff = self._poll_interval, self._restart_backoff
            else:
                if time.monotonic() - started >= _HEALTHY_RUN:
                    backoff = self._restart_backoff
                delay, backoff = backoff, min(backoff * 2, _MAX_BACKOFF)
            self._stopping.wait(delay)

    def _find_end(self) -> bool:
        """Look up the newest matching record, so a first run with start_at end skips the past."""
        argv = self._argv(cursor=None, follow=False, last=True)
        newest: list[str] = []

        def remember(_data: bytes, cursor: str, _cut: bool) -> bool:
            newest.append(cursor)
            return True

        if not self._run_process(argv, remember, follows=False):
            return False
        with self._lock:
            self._cursor = self._read_cursor = newest[-1] if newest else None
            self._known = True
        return True

    def _read_once(self) -> bool:
        argv = self._argv(cursor=self._read_cursor, follow=self._follow)
        return self._run_process(argv, self._enqueue, follows=self._follow)

    def _argv(self, *, cursor: str | None, follow: bool, last: bool = False) -> list[str]:
        return journalctl_argv(
            self._journalctl,
            self._config,
            cursor=cursor,
            follow=follow,
            last=last,
            machine_id=self._machine_id,
        )

    def _enqueue(self, data: bytes, cursor: str, cut: bool) -> bool:
        was_empty = self._buffer.put(data, cursor, cut)
        if was_empty is None:
            return False
        self._read_cursor = cursor
        if was_empty:
            self._wake()
        return True

    def _run_process(
        self, argv: list[str], sink: Callable[[bytes, str, bool], bool], *, follows: bool
    ) -> bool:
        """Run journalctl to its end, feeding each record to ``sink``; True if it exited 0.

        A following journalctl should never end by itself: its exit is reported even with 0.
        """
        with tempfile.TemporaryFile() as errors:
            proc = self._spawn(argv, errors)
            if proc is None:
                return False
            assert proc.stdout is not None
            try:
                for data, cursor, cut in records(proc.stdout, self._max_record_bytes):
                    if cursor is None:
                        structlog.get_logger().warning(
                            "journal record without a cursor skipped", source=self.id
                        )
                    elif not sink(data, cursor, cut):
                        break
            finally:
                proc.stdout.close()
                code = _reap(proc)
                with self._lock:
                    self._proc = None
            if self._stopping.is_set():
                return True
            if code != 0 or follows:
                self._report_exit(code, errors)
            return code == 0

    def _spawn(self, argv: list[str], errors: IO[bytes]) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            try:
                # Own session: a Ctrl-C meant for the daemon must not kill journalctl under it.
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    start_new_session=True,
                )
            except OSError as exc:
                structlog.get_logger().warning(
                    "cannot run journalctl", source=self.id, error=str(exc)
                )
                return None
            return self._proc

    def _report_exit(self, code: int, errors: IO[bytes]) -> None:
        errors.seek(0, 2)
        errors.seek(max(0, errors.tell() - _STDERR_TAIL))
        detail = errors.read().decode("utf-8", "replace").strip()
        structlog.get_logger().warning(
            "journalctl exited; running it again after a pause",
            source=self.id,
            exit_status=code,
            stderr=detail,
            cursor=self._read_cursor,
        )


def _no_wake() -> None:
    return None


def _reap(proc: subprocess.Popen[bytes]) -> int:
    """Wait for journalctl, killing it if it does not go; never leaves a zombie."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()

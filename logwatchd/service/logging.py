"""The daemon's own log: structlog, written where the administrator will read it.

Formats:
- ``journal``: the native journal protocol, one datagram per entry with fields, so
  ``journalctl -u logwatchd RULE=x`` and ``-p warning`` work and a traceback stays one entry.
  Entries too big for a datagram go through a sealed memfd. If the socket cannot be used the
  entry goes to stderr in the ``stderr`` format instead: nothing is dropped.
- ``stderr``: one line per event prefixed with ``<N>`` (the syslog priority), which systemd
  reads with ``SyslogLevelPrefix``; newlines inside values are escaped to keep one line.
- ``console``: structlog's readable renderer, for a terminal.
- ``json``: one JSON object per line on stderr.
- ``auto``: journal when ``$JOURNAL_STREAM`` names stderr, else console on a terminal, else stderr.

Event keys ``rule``, ``source`` and ``handler`` become journal fields ``RULE``, ``SOURCE`` and
``HANDLER``; every other key becomes an upper-cased field too. An explicit ``priority`` key
(0-7) overrides the level's priority: the log handler passes one derived from alert severity
(``SEVERITY_PRIORITY``). Standard-library logging (watchdog's) is routed through the same sink.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

__all__ = [
    "JOURNAL_SOCKET",
    "SEVERITY_PRIORITY",
    "JournalSender",
    "configure",
    "encode_journal_entry",
    "journal_stream_matches",
    "resolve_format",
]

Format = Literal["auto", "console", "json", "journal", "stderr"]
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "logwatchd"

LEVEL_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
SEVERITY_PRIORITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

# Keys that the formatters consume themselves rather than print as key=value.
_INTERNAL = frozenset({"event", "level", "timestamp", "priority", "exception", "_code"})
# Shown first in MESSAGE and in stderr lines because they are what an administrator filters on.
_MAIN_KEYS = ("rule", "source", "handler")
_RESERVED_FIELDS = frozenset(
    {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FUNC", "CODE_FILE", "CODE_LINE"}
)
_MESSAGE_VALUE_MAX = 200
_FIELD_NAME_MAX = 64


# --- choosing the format ------------------------------------------------------------------


def journal_stream_matches(fd: int = 2, env: Mapping[str, str] | None = None) -> bool:
    """True when ``$JOURNAL_STREAM`` (``dev:ino``) names the file behind ``fd``.

    Presence alone is not enough: a child started from a journald-connected shell inherits the
    variable while its stderr is a pipe or a file.
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return info.st_dev == int(dev) and info.st_ino == int(ino)


def resolve_format(fmt: Format, fd: int = 2, env: Mapping[str, str] | None = None) -> str:
    """The concrete format ``auto`` stands for in this process; others are returned as given."""
    if fmt != "auto":
        return fmt
    if journal_stream_matches(fd, env):
        return "journal"
    try:
        tty = os.isatty(fd)
    except OSError:
        tty = False
    return "console" if tty else "stderr"


# --- the journal's native protocol --------------------------------------------------------


def field_name(key: str) -> str:
    """A journal field name for an event key: ``[A-Z0-9_]``, not starting with ``_`` or a digit."""
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:_FIELD_NAME_MAX]


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "replace")
    return str(value).encode("utf-8", "replace")


def encode_journal_entry(fields: list[tuple[str, Any]]) -> bytes:
    """Serialise fields in the native format.

    A value containing a newline uses the binary form (name, newline, 64-bit little-endian
    length, data) so log content can never start a field of its own.
    """
    out = bytearray()
    for name, value in fields:
        data = _as_bytes(value)
        out += name.encode("ascii")
        if b"\n" in data:
            out += b"\n" + len(data).to_bytes(8, "little") + data + b"\n"
        else:
            out += b"=" + data + b"\n"
    return bytes(out)


class JournalSender:
    """Sends encoded entries to journald; falls back to the memfd path for large ones."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, entry: bytes) -> bool:
        """True when journald has the entry; False means the caller must write it elsewhere."""
        with self._lock:
            try:
                sock = self._socket()
                try:
                    sock.sendto(entry, self.path)
                except OSError as error:
                    if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):  # too big for a datagram
                        raise
                    self._send_memfd(sock, entry)
            except OSError:
                self._close()
                return False
        return True

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._sock

    def _send_memfd(self, sock: socket.socket, entry: bytes) -> None:
        # journald only accepts a memfd sealed against change, so it can map it safely.
        fd = os.memfd_create("logwatchd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with open(fd, "wb", closefd=False) as memfd:
                memfd.write(entry)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            sock.sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._close()


# --- rendering ----------------------------------------------------------------------------


def _priority(event: Mapping[str, Any]) -> int:
    explicit = event.get("priority")
    if isinstance(explicit, int) and 0 <= explicit <= 7:
        return explicit
    if isinstance(explicit, str) and explicit.isdigit() and int(explicit) <= 7:
        return int(explicit)
    return LEVEL_PRIORITY.get(str(event.get("level", "info")), 6)


def _user_items(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Keys to show, the main ones first."""
    main = [(key, event[key]) for key in _MAIN_KEYS if key in event]
    rest = [(k, v) for k, v in event.items() if k not in _INTERNAL and k not in _MAIN_KEYS]
    return main + rest


def _quoted(value: Any, limit: int | None = None) -> str:
    text = value if isinstance(value, str) else _as_bytes(value).decode("utf-8", "replace")
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text and not re.search(r'[\s"=\\]', text):
        return text
    # json.dumps escapes newlines and quotes: one line, unambiguous.
    return json.dumps(text, ensure_ascii=False)


def _summary(event: Mapping[str, Any], limit: int | None) -> str:
    parts = [str(event.get("event", ""))]
    parts += [f"{key}={_quoted(value, limit)}" for key, value in _user_items(event)]
    return " ".join(part for part in parts if part)


def journal_fields(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Journal fields for one event dict (after structlog's processors ran)."""
    message = _summary(event, _MESSAGE_VALUE_MAX)
    if event.get("exception"):
        message += "\n" + str(event["exception"])
    fields: list[tuple[str, Any]] = [
        ("MESSAGE", message),
        ("PRIORITY", _priority(event)),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
    ]
    code = event.get("_code")
    if code:
        func, path, line = code
        fields += [("CODE_FUNC", func), ("CODE_FILE", path), ("CODE_LINE", line)]
    seen = {name for name, _ in fields}
    for key, value in _user_items(event):
        name = field_name(key)
        if name in _RESERVED_FIELDS or name in seen:
            name = field_name("F_" + name)
        seen.add(name)
        fields.append((name, value))
    return fields


def stderr_line(event: Mapping[str, Any]) -> str:
    """``<N>event key=value ...``: exactly one line, whatever the values hold."""
    line = f"<{_priority(event)}>{_summary(event, None)}"
    if event.get("exception"):
        line += " exception=" + json.dumps(str(event["exception"]), ensure_ascii=False)
    return line


# --- sinks (the "logger" structlog hands the rendered event to) ---------------------------


class _Sink:
    """Writes rendered events; thread-safe, since handler workers log from their own threads."""

    def __init__(self, stream: TextIO | None, journal: JournalSender | None) -> None:
        self._stream = stream
        self._journal = journal
        self._lock = threading.Lock()

    def _write_line(self, line: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock, contextlib.suppress(OSError, ValueError):
            stream.write(line + "\n")
            stream.flush()

    def msg(self, rendered: Any) -> None:
        if isinstance(rendered, str):
            self._write_line(rendered)
            return
        event: Mapping[str, Any] = rendered
        if self._journal is not None and self._journal.send(
            encode_journal_entry(journal_fields(event))
        ):
            return
        self._write_line(stderr_line(event))

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _render_stderr(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    return stderr_line(event)


def _pass_event(_: Any, __: str, event: MutableMapping[str, Any]) -> tuple[tuple[Any], dict]:
    # The sink renders journal entries itself, so it can fall back to a stderr line.
    return ((dict(event),), {})


def _add_callsite(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "_code" in event:  # forwarded from stdlib logging: the record knows its call site
        return event
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module.startswith("structlog") or module in (__name__, "logging")):
            event["_code"] = (frame.f_code.co_name, frame.f_code.co_filename, frame.f_lineno)
            break
        frame = frame.f_back  # type: ignore[assignment]
    return event


def _drop_code(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("_code", None)
    return event


# --- stdlib logging -----------------------------------------------------------------------


class _ToStructlog(logging.Handler):
    """Feeds standard-library records (watchdog, asyncio...) into the structlog pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = _nearest_level(record.levelno)
            log = structlog.get_logger()
            log.log(
                level,
                record.getMessage(),
                logger=record.name,
                exc_info=record.exc_info or False,
                _code=(record.funcName, record.pathname, record.lineno),
            )
        except Exception:  # logging must never take the daemon down
            self.handleError(record)


def _nearest_level(levelno: int) -> int:
    for threshold in (50, 40, 30, 20):
        if levelno >= threshold:
            return threshold
    return 10


def _route_stdlib(level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToStructlog):
            root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(level)


# --- configure ----------------------------------------------------------------------------


def configure(
    fmt: Format = "auto",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> str:
    """Set up structlog and stdlib logging for the daemon; return the concrete format used.

    ``stream`` replaces stderr (tests); ``journal_socket`` replaces journald's socket (tests).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (use {', '.join(LEVELS)})")
    if fmt not in ("auto", "console", "json", "journal", "stderr"):
        raise ValueError(f"unknown log format {fmt!r}")
    fd = stream.fileno() if stream is not None and _has_fileno(stream) else 2
    concrete = resolve_format(fmt, fd)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    journal = None
    if concrete == "journal":
        journal = JournalSender(journal_socket)
        tail: list[Any] = [_add_callsite, structlog.processors.format_exc_info, _pass_event]
    elif concrete == "json":
        tail = [
            _drop_code,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str, ensure_ascii=False),
        ]
    elif concrete == "console":
        tail = [
            _drop_code,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=_is_tty(stream)),
        ]
    else:
        tail = [_drop_code, structlog.processors.format_exc_info, _render_stderr]
    sink = _Sink(stream, journal)
    structlog.configure(
        processors=shared + tail,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *_: sink,
        cache_logger_on_first_use=False,
    )
    _route_stdlib(LEVELS[level])
    return concrete


def _has_fileno(stream: TextIO) -> bool:
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _is_tty(stream: TextIO | None) -> bool:
    target = stream or sys.stderr
    try:
        return target.isatty()
    except (OSError, ValueError, AttributeError):
        return False

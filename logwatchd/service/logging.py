"""The daemon's own log: structlog, written where the administrator will read it.

Formats:
- ``journal``: the native journal protocol (``journal_log.py``), one entry per event with fields, so
  ``journalctl -u logwatchd RULE=x`` and ``-p warning`` work and a traceback stays one entry.
  If the socket cannot be used the entry goes to stderr in the ``stderr`` format instead.
- ``stderr``: one line per event prefixed with ``<N>`` (the syslog priority), which systemd
  reads with ``SyslogLevelPrefix``; newlines inside values are escaped to keep one line.
- ``console``: structlog's readable renderer, for a terminal.
- ``json``: one JSON object per line on stderr.
- ``auto``: journal when ``$JOURNAL_STREAM`` names stderr, else console on a terminal, else stderr.

Log data is hostile: in every format, characters a terminal acts on (C0 and C1 controls, so
ANSI and OSC sequences, DEL, line separators, bidirectional overrides) are written as escapes
(``\u001b``), in MESSAGE and tracebacks too; journal fields other than MESSAGE keep the
exact value (the native protocol carries any bytes, and ``journalctl FIELD=`` matches them).

Event keys ``rule``, ``source`` and ``handler`` become journal fields ``RULE``, ``SOURCE`` and
``HANDLER``; every other key becomes an upper-cased field too. An explicit ``priority`` key
(0-7) overrides the level's priority: the log handler passes one derived from alert severity
(``handlers/log.py``). Standard-library logging (watchdog's) is routed through the same sink.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

from logwatchd.service.journal_log import (
    JOURNAL_SOCKET,
    JournalSender,
    as_bytes,
    encode_journal_entry,
    field_name,
)
from logwatchd.service.log_escape import UNSAFE, escape_controls, escape_lines

__all__ = [
    "JOURNAL_SOCKET",
    "JournalSender",
    "configure",
    "encode_journal_entry",
    "journal_stream_matches",
    "resolve_format",
]

Format = Literal["auto", "console", "json", "journal", "stderr"]
IDENTIFIER = "logwatchd"

LEVEL_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

# Keys that the formatters consume themselves rather than print as key=value.
_INTERNAL = frozenset({"event", "level", "timestamp", "priority", "exception", "_code"})
# Shown first in MESSAGE and in stderr lines because they are what an administrator filters on.
_MAIN_KEYS = ("rule", "source", "handler")
_RESERVED_FIELDS = frozenset(
    {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FUNC", "CODE_FILE", "CODE_LINE"}
)
_MESSAGE_VALUE_MAX = 200
_NEEDS_QUOTES = re.compile(f'[\\s"=\\\\]|{UNSAFE.pattern}')


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
    text = value if isinstance(value, str) else as_bytes(value).decode("utf-8", "replace")
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    if text and not _NEEDS_QUOTES.search(text):
        return text
    # json.dumps escapes C0 controls, newlines and quotes; the rest (C1, bidi) is escaped after
    return escape_controls(json.dumps(text, ensure_ascii=False))


def _exception_text(event: Mapping[str, Any]) -> str:
    """The traceback, one line per line as Python wrote it; what log data put in it escaped."""
    return escape_lines(str(event["exception"]))


def _summary(event: Mapping[str, Any], limit: int | None) -> str:
    parts = [escape_controls(str(event.get("event", "")))]
    for key, value in _user_items(event):
        if isinstance(value, dict) and value:
            # key.ip=203.0.113.9 reads better than a JSON object inside quotes.
            parts += [
                f"{escape_controls(str(key))}.{escape_controls(str(sub))}={_quoted(item, limit)}"
                for sub, item in value.items()
            ]
        else:
            parts.append(f"{escape_controls(str(key))}={_quoted(value, limit)}")
    return " ".join(part for part in parts if part)


def journal_fields(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Journal fields for one event dict (after structlog's processors ran)."""
    message = _summary(event, _MESSAGE_VALUE_MAX)
    if event.get("exception"):
        message += "\n" + _exception_text(event)
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
        line += " exception=" + escape_controls(
            json.dumps(str(event["exception"]), ensure_ascii=False)
        )
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


def _pass_event(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> tuple[tuple[Any], dict[str, Any]]:
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


def _escape_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For the console renderer, which prints text values as they are."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = escape_controls(value)
    return event


def _escaped_traceback(sio: TextIO, exc_info: Any) -> None:
    plain = io.StringIO()
    structlog.dev.plain_traceback(plain, exc_info)
    sio.write(escape_lines(plain.getvalue()))


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    # json escapes C0 itself; \uXXXX for C1 and bidi characters is still the same JSON value
    return escape_controls(json.dumps(obj, **kwargs))


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
            structlog.processors.JSONRenderer(_json_dumps, default=str, ensure_ascii=False),
        ]
    elif concrete == "console":
        tail = [
            _drop_code,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            _escape_values,
            structlog.dev.ConsoleRenderer(
                colors=_is_tty(stream), exception_formatter=_escaped_traceback
            ),
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
    _route_uncaught()
    return concrete


def _route_uncaught() -> None:
    """A crash (main thread or any other) becomes one entry at critical, traceback included.

    Python's default hook prints the traceback to stderr, which the journal would split into
    one entry per line with only the first at the right priority.
    """

    def main_hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        structlog.get_logger().critical("uncaught exception", exc_info=(kind, value, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        name = args.thread.name if args.thread is not None else "?"
        structlog.get_logger().critical(
            "uncaught exception in thread", thread=name, exc_info=exc_info
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook


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

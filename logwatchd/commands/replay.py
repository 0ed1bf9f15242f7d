"""``logwatchd test``: replay log files through one source's parser and all rules, on event time.

Handlers do not run unless ``--execute``. Output: with ``--json`` one object per match (with
``--matches``) and per alert on stdout; a fail2ban-regex-like summary on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import gzip
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from logwatchd import state_lock
from logwatchd.alerts import Alert, jsonable
from logwatchd.commands.check import verify
from logwatchd.config import load
from logwatchd.config.model import Config, SourceConfig
from logwatchd.errors import ConfigError, DeliveryError
from logwatchd.events import Line
from logwatchd.parsers.journald import record_line
from logwatchd.pipeline import Pipeline, ReplayClock, build_engine
from logwatchd.sources.journal import MAX_RECORD_BYTES
from logwatchd.timelimit import LineTimeLimit

READ_SIZE = 1 << 20
_JSON = json.JSONEncoder(ensure_ascii=False)  # one encoder for every record written
PROGRESS_EVERY = 0.25


def test(args: argparse.Namespace) -> int:
    config = load(args.config)
    if not args.execute:
        return _replay(args, config)
    with _lock_state(config.daemon.state_dir):
        return _replay(args, config)


def _lock_state(state_dir: str) -> contextlib.AbstractContextManager[object]:
    """``--execute`` runs the handlers: refused while a daemon delivers from the same state.
    A state directory that does not exist has no daemon, and is not created for a replay."""
    if not os.path.isdir(state_dir):
        return contextlib.nullcontext()
    return state_lock.acquire(state_dir)


def _replay(args: argparse.Namespace, config: Config) -> int:
    for warning in verify(config).warnings:
        print(f"warning: {warning}", file=sys.stderr)
    clock = ReplayClock()
    engine, parsers = build_engine(config, clock, host=config.daemon.host or os.uname().nodename)
    limit = LineTimeLimit(config.daemon.line_timeout)
    limit.install()
    pipeline = Pipeline(engine, parsers, replay=clock, limit=limit)
    out = Output(args.json, sys.stdout)
    executor = Executor(config) if args.execute else None
    started = time.monotonic()
    for name in args.files:
        source = pick_source(config, args.source, name)
        replay_file(
            name, source, pipeline, out, executor,
            want_matches=args.matches, limit=line_limit(config, source),
        )  # fmt: skip
    for alert in pipeline.tick(float("inf")):
        out.alert(alert, line=0)
    elapsed = time.monotonic() - started
    summarize(pipeline, elapsed, sys.stderr)
    return 0


def line_limit(config: Config, source: SourceConfig) -> int:
    """Where a line is cut: ``max_line_bytes``, as the daemon's file source does; for
    journal records as text, the journal source's record limit (cutting a JSON record
    would break it; its fields are cut once decoded)."""
    if source.parser == "journald":
        return max(config.daemon.max_line_bytes, MAX_RECORD_BYTES)
    return config.daemon.max_line_bytes


def pick_source(config: Config, wanted: str | None, path: str) -> SourceConfig:
    if wanted:
        try:
            return config.source(wanted)
        except KeyError:
            known = ", ".join(s.id for s in config.sources) or "none"
            raise ConfigError(
                f"no source {wanted!r} (sources: {known})", None, "--source"
            ) from None
    real = os.path.abspath(path)
    for source in config.sources:
        if any(fnmatch.fnmatch(real, glob) for glob in source.paths):
            return source
    if len(config.sources) == 1:
        return config.sources[0]
    raise ConfigError(
        f"{path} matches no source's paths; name one with --source "
        f"({', '.join(s.id for s in config.sources) or 'no sources defined'})",
        None,
        "--source",
    )


def replay_file(
    name: str,
    source: SourceConfig,
    pipeline: Pipeline,
    out: Output,
    executor: Executor | None,
    *,
    want_matches: bool,
    limit: int,
) -> None:
    replay = _FileReplay(name, source, pipeline, want_matches=want_matches, limit=limit)
    progress = Progress(name)
    for block in read_blocks(name, progress, limit):
        with pipeline.limit:  # one timer for the block; output and handlers run after it
            results = replay.block(block)
        for lineno, found, alerts in results:
            for match in found:
                out.match(match, source.id, lineno)
            for alert in alerts:
                out.alert(alert, lineno)
                if executor is not None:
                    executor.run(alert)
        pipeline.engine.discard_changes()  # nothing persists them here: keep memory flat
    progress.done()


Result = tuple[int, list[Any], list[Alert]]  # line number, its matches, its alerts


class _FileReplay:
    """One file's blocks through the scan and the pipeline; counts every line read."""

    def __init__(
        self, name: str, source: SourceConfig, pipeline: Pipeline, *, want_matches: bool, limit: int
    ) -> None:
        self.name = name
        self.source = source.id
        self.pipeline = pipeline
        self.scan = pipeline.engine.scan(source.id)
        self.matches: list[Any] | None = [] if want_matches else None
        self.want_matches = want_matches
        self.reference = time.time() if name == "-" else os.stat(name).st_mtime
        self.limit = limit
        self.journal_text = source.parser == "journald"
        self.stats = pipeline.stats

    def block(self, block: Block) -> list[Result]:
        results: list[Result] = []
        found = None
        if block.body and not self.journal_text and not _long_line(block.body, self.limit):
            found = self.scan.select_block(block.body)
        if found is not None:
            self._native(block, found, results)
        elif block.body:
            lines, cut = _split(block.body, self.limit)
            self._lines(block.first, lines, cut, results)
        if block.tail is not None:
            first = block.first + block.body.count(b"\n")
            self._lines(
                first, [block.tail], frozenset({0}) if block.tail_cut else frozenset(), results
            )
        return results

    def _native(
        self, block: Block, found: list[tuple[int, int, int | None]], results: list[Result]
    ) -> None:
        """Lines of a block the native scan went through: only the selected ones are decoded."""
        body = block.body
        count = body.count(b"\n")
        self.stats.read(self.source, count)
        self.stats.skipped += count - len(found)
        name, first = self.name, block.first
        framed = self.pipeline.framed
        short = not self.want_matches  # match records come from the full path only
        for index, end, hits in found:
            chunk = body[body.rfind(b"\n", 0, end) + 1 : end]
            # a line with other bytes than ASCII (or a carriage return) is scanned again as text
            if hits is None:
                self._evaluate(first + index, _text(chunk), False, hits, results)
                continue
            raw = chunk.decode("ascii")
            lineno = first + index
            if short:
                # the short path for rules of the common shape (rules/direct.py)
                line = Line(self.source, raw, self.reference, f"{name}:{lineno}", name, lineno)
                alerts = framed(line, hits)
                if alerts is not None:
                    if alerts:
                        results.append((lineno, [], alerts))
                    continue
            self._evaluate(lineno, raw, False, hits, results)

    def _lines(
        self, first: int, lines: list[str], cut: frozenset[int], results: list[Result]
    ) -> None:
        stats = self.stats
        stats.read(self.source, len(lines))
        stats.truncated += len(cut)
        if self.journal_text:
            selected: list[tuple[int, int | None]] = [(index, None) for index in range(len(lines))]
        else:
            selected = self.scan.select(lines)
            stats.skipped += len(lines) - len(selected)
        for index, hits in selected:
            self._evaluate(first + index, lines[index], index in cut, hits, results)

    def _evaluate(
        self, lineno: int, raw: str, cut: bool, hits: int | None, results: list[Result]
    ) -> None:
        line = Line(
            self.source, raw, self.reference, f"{self.name}:{lineno}", self.name, lineno, cut
        )
        if self.journal_text:
            # `journalctl -o json` text: the rules get the record, as from the journal
            line = record_line(line) or line
        matches = self.matches
        alerts = self.pipeline.evaluate(line, hits, matches)
        shown = list(matches) if matches else []
        if matches:
            matches.clear()
        if alerts or shown:
            results.append((lineno, shown, alerts))


def _text(chunk: bytes) -> str:
    """A line's bytes as ``read_blocks`` gives text: invalid UTF-8 replaced, no "\\r" end."""
    return chunk.decode("utf-8", "replace").removesuffix("\r")


def _long_line(body: bytes, limit: int) -> bool:
    """Whether a line of the block may be longer than ``limit`` bytes (then the block takes
    the path that cuts lines): every such line spans a whole aligned half-limit chunk without
    a newline, so looking at each chunk is enough."""
    half = max(limit // 2, 1)
    return any(
        body.find(b"\n", start, start + half) < 0 for start in range(0, len(body) - half + 1, half)
    )


@dataclass(frozen=True, slots=True)
class Block:
    """What one read gives: whole lines as bytes (``body``, each ending with a newline), and
    maybe one more line as text (``tail``): the start of a line longer than the limit, cut
    there (``tail_cut``), or the file's last line, without a newline."""

    first: int  # the number of its first line
    body: bytes
    tail: str | None = None
    tail_cut: bool = False


def read_blocks(name: str, progress: Progress, limit: int) -> Iterator[Block]:
    """The file in blocks of whole lines; a line longer than ``limit`` bytes
    (``max_line_bytes``, as the daemon cuts them) is cut there and the rest of it dropped,
    never buffered. .gz transparently."""
    with _open(name) as handle:
        lineno = 1
        rest = b""
        skipping = False  # inside a line already cut: drop up to its newline
        stored = getattr(handle, "fileobj", handle)  # a .gz: how much of the file on disk
        while block := handle.read(READ_SIZE):
            progress.update(stored.tell() if stored.seekable() else 0)
            if skipping:
                newline = block.find(b"\n")
                if newline < 0:
                    continue
                block, skipping = block[newline + 1 :], False
            block = rest + block
            end = block.rfind(b"\n") + 1
            body, rest = block[:end], block[end:]
            tail = None
            if len(rest) >= limit:
                tail = rest[:limit].decode("utf-8", "replace")
                rest, skipping = b"", True
            if body or tail is not None:
                yield Block(lineno, body, tail, tail_cut=tail is not None)
                lineno += body.count(b"\n") + (tail is not None)
        if rest:
            yield Block(lineno, b"", _text(rest))


def _split(body: bytes, limit: int) -> tuple[list[str], frozenset[int]]:
    """Complete lines (``body`` ends with a newline), and the indexes of those cut."""
    text = body.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")[:-1]
    # a line of N characters came from at most 4N bytes: most blocks need no byte count
    if not lines or max(map(len, lines)) <= limit // 4:
        return lines, frozenset()
    cut = set()
    for index, chunk in enumerate(body.split(b"\n")[:-1]):
        raw = chunk.removesuffix(b"\r")
        if len(raw) > limit:
            lines[index] = raw[:limit].decode("utf-8", "replace")
            cut.add(index)
    return lines, frozenset(cut)


def _open(name: str) -> BinaryIO | gzip.GzipFile:
    if name == "-":
        return sys.stdin.buffer
    if name.endswith(".gz"):
        return gzip.open(name, "rb")
    return open(name, "rb")


class Output:
    def __init__(self, as_json: bool, stream: IO[str]) -> None:
        self.as_json = as_json
        self.stream = stream

    def match(self, match: Any, source: str, line: int) -> None:
        if self.as_json:
            record = {
                "kind": "match",
                "rule": match.rule,
                "source": source,
                "line": line,
                "fields": jsonable(match.fields),
            }
            self.stream.write(_JSON.encode(record) + "\n")
        else:
            self.stream.write(f"match  {match.rule:<28} line {line}\n")

    def alert(self, alert: Alert, line: int) -> None:
        if self.as_json:
            record = {"kind": "alert", **alert.to_dict(), "line": line}
            self.stream.write(_JSON.encode(record) + "\n")
        else:
            key = " ".join(f"{k}={v}" for k, v in alert.key.items())
            self.stream.write(
                f"ALERT  {alert.rule:<28} line {line:<8} {alert.severity:<8} "
                f"count={alert.count} {key}\n"
            )


class Executor:
    """``--execute``: run each alert's handlers at once, synchronously, without the outbox."""

    def __init__(self, config: Config) -> None:
        from logwatchd.handlers import HostInfo, build_handler
        from logwatchd.templates import Templates

        templates = Templates()
        host = HostInfo.local(config.daemon.host)
        self.handlers = {
            name: build_handler(cfg, templates=templates, host=host)
            for name, cfg in config.handlers.items()
        }

    def run(self, alert: Alert) -> None:
        payload = alert.to_dict()
        for name in alert.handlers:
            try:
                self.handlers[name].send([payload])
            except DeliveryError as exc:
                print(f"handler {name} failed: {exc}", file=sys.stderr)
            except Exception as exc:  # a handler bug must not abort the replay
                print(f"handler {name} raised {type(exc).__name__}: {exc}", file=sys.stderr)


class Progress:
    """A progress line on a terminal for a large file: how far, how fast, how long still.
    Silent when stderr is not a terminal, and for standard input."""

    def __init__(
        self,
        name: str,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.enabled = self.stream.isatty() and name != "-"
        self.total = os.stat(name).st_size if self.enabled else 0
        self.started = self.last = clock()
        self.shown = False

    def update(self, done: int) -> None:
        """``done``: bytes of the file (as stored: a .gz counts compressed) read so far."""
        if not self.enabled or not self.total:
            return
        now = self.clock()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        share = min(1.0, done / self.total)
        spent = now - self.started
        rate = done / spent if spent > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else 0.0
        self.stream.write(
            f"\r{self.name}: {100 * share:5.1f}% of {_size(self.total)}, "
            f"{_size(rate)}/s, {_clock(left)} left\x1b[K"
        )
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _size(size: float) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.0f} KiB"


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def summarize(pipeline: Pipeline, elapsed: float, stream: IO[str]) -> None:
    stats = pipeline.stats
    rate = stats.lines / elapsed if elapsed > 0 else 0.0
    stream.write(
        f"\nLines: {stats.lines} read, {stats.parsed} parsed, {stats.unparsed} unparsed, "
        f"{stats.skipped} passed over by the scan (no rule could match)"
        + (f", {stats.truncated} cut at max_line_bytes" if stats.truncated else "")
        + "\n"
    )
    matches = pipeline.engine.match_counts()
    names = sorted(set(matches) | set(stats.alerts))
    if names:
        width = max(len(n) for n in names) + 2
        stream.write(f"{'Rule':<{width}}{'matches':>9}{'alerts':>9}\n")
        for name in names:
            stream.write(f"{name:<{width}}{matches.get(name, 0):>9}{stats.alerts[name]:>9}\n")
    if stats.unparsed_samples:
        stream.write("Unparsed samples:\n")
        for sample in stats.unparsed_samples:
            stream.write(f"  {sample}\n")
    if stats.timed_out:
        slow = ", ".join(f"{where}: {count}" for where, count in sorted(stats.slow.items()))
        stream.write(f"Skipped after the time limit per line: {stats.timed_out} ({slow})\n")
    for source, parser in pipeline.parsers.items():
        stream.write(stamp_report(source, parser))
    stream.write(f"Rate: {rate:,.0f} lines/s ({elapsed:.2f} s)\n")


def stamp_report(source: str, parser: Any) -> str:
    """Lines whose timestamp did not parse: they count at their read time, so say it loudly."""
    failures = getattr(parser, "stamp_failures", None)
    if failures is None or not failures.count:
        return ""
    fmt = getattr(parser, "time_format", None)
    how = f"time_format {fmt!r}" if fmt else "ISO 8601 (no time_format)"
    lines = [
        f"timestamp_unparsed: {failures.count} lines of source {source} have a timestamp that "
        f"does not fit {how}; they were timed at the moment they were read, so windows and "
        "thresholds on them are not what the log says. Samples (timestamp, line):"
    ]
    lines.extend(f"  {stamp!r}  {raw}" for stamp, raw in failures.samples)
    return "\n".join(lines) + "\n"

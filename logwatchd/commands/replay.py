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
from collections.abc import Iterable, Iterator
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

READ_SIZE = 1 << 20
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
    pipeline = Pipeline(engine, parsers, replay=clock)
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
    matches: list[Any] = []  # always collected: the summary counts them per rule
    reference = time.time() if name == "-" else os.stat(name).st_mtime
    progress = Progress(name)
    journal_text = source.parser == "journald"
    check = pipeline.engine.line_check(source.id)
    stats = pipeline.stats
    for first, lines, cut in read_blocks(name, progress, limit):
        if journal_text:
            candidates: Iterable[int] = range(len(lines))
        else:
            # most lines end here, in one pass over the block: no Line object, no parse
            candidates = [index for index, raw in enumerate(lines) if check(raw)]
            skipped = len(lines) - len(candidates)
            stats.lines += skipped
            stats.skipped += skipped
            if cut:  # a cut line is counted as such even when no rule wants it
                stats.truncated += len(cut.difference(candidates))
        for index in candidates:
            lineno = first + index
            line = Line(
                source.id, lines[index], reference, f"{name}:{lineno}", name, lineno,
                index in cut,
            )  # fmt: skip
            if journal_text:
                # `journalctl -o json` text: hand the rules the record, as the journal source does
                line = record_line(line) or line
            alerts = pipeline.handle(line, matches, prefiltered=not journal_text)
            if matches:
                if want_matches:
                    for match in matches:
                        out.match(match, source.id, lineno)
                matches.clear()
            for alert in alerts:
                out.alert(alert, lineno)
                if executor is not None:
                    executor.run(alert)
        pipeline.engine.discard_changes()  # nothing persists them here: keep memory flat
    progress.done()


def read_blocks(
    name: str, progress: Progress, limit: int
) -> Iterator[tuple[int, list[str], frozenset[int]]]:
    """Per block read: the number of its first line, its lines as text (invalid UTF-8
    replaced, without line ends, "\r\n" too), and which of them were cut at ``limit`` bytes
    (``max_line_bytes``, as the daemon cuts them: the rest of such a line is dropped, never
    buffered). .gz transparently."""
    with _open(name) as handle:
        lineno = 1
        rest = b""
        skipping = False  # inside a line already cut: drop up to its newline
        while block := handle.read(READ_SIZE):
            progress.advance(len(block))
            if skipping:
                newline = block.find(b"\n")
                if newline < 0:
                    continue
                block, skipping = block[newline + 1 :], False
            block = rest + block
            end = block.rfind(b"\n") + 1
            rest = block[end:]
            lines, cut = _split(block[:end], limit)
            if len(rest) >= limit:
                cut = cut | {len(lines)}
                lines.append(rest[:limit].decode("utf-8", "replace"))
                rest, skipping = b"", True
            if lines:
                yield lineno, lines, cut
                lineno += len(lines)
        if rest:
            yield lineno, [rest.decode("utf-8", "replace").removesuffix("\r")], frozenset()


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
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            self.stream.write(f"match  {match.rule:<28} line {line}\n")

    def alert(self, alert: Alert, line: int) -> None:
        if self.as_json:
            record = {"kind": "alert", **alert.to_dict(), "line": line}
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
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
    """A progress line on a terminal for large files; silent otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.enabled = sys.stderr.isatty() and name != "-"
        self.total = os.stat(name).st_size if self.enabled else 0
        self.seen = 0
        self.last = 0.0

    def advance(self, size: int) -> None:
        if not self.enabled:
            return
        self.seen += size
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY and self.total:
            self.last = now
            share = min(100.0, 100.0 * self.seen / self.total)
            sys.stderr.write(f"\r{self.name}: {share:5.1f}%")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")


def summarize(pipeline: Pipeline, elapsed: float, stream: IO[str]) -> None:
    stats = pipeline.stats
    rate = stats.lines / elapsed if elapsed > 0 else 0.0
    stream.write(
        f"\nLines: {stats.lines} read, {stats.parsed} parsed, {stats.unparsed} unparsed, "
        f"{stats.skipped} skipped by the prefilter (no rule could match)"
        + (f", {stats.truncated} cut at max_line_bytes" if stats.truncated else "")
        + "\n"
    )
    rules = [rule.id for rule in pipeline.engine.rules] if hasattr(pipeline.engine, "rules") else []
    names = sorted(set(rules) | set(stats.matches) | set(stats.alerts))
    if names:
        width = max(len(n) for n in names) + 2
        stream.write(f"{'Rule':<{width}}{'matches':>9}{'alerts':>9}\n")
        for name in names:
            stream.write(f"{name:<{width}}{stats.matches[name]:>9}{stats.alerts[name]:>9}\n")
    if stats.unparsed_samples:
        stream.write("Unparsed samples:\n")
        for sample in stats.unparsed_samples:
            stream.write(f"  {sample}\n")
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

"""``logwatchd explain``: one line's parsed fields and, rule by rule, what matched or failed."""

from __future__ import annotations

import argparse
import json
import sys
import time

from logwatchd.alerts import jsonable
from logwatchd.commands.check import verify
from logwatchd.config import load
from logwatchd.config.model import Config, SourceConfig
from logwatchd.errors import ConfigError
from logwatchd.events import Line
from logwatchd.pipeline import Pipeline, ReplayClock, build_engine
from logwatchd.rules import format_explanation


def explain(args: argparse.Namespace) -> int:
    config = load(args.config)
    for warning in verify(config).warnings:
        print(f"warning: {warning}", file=sys.stderr)
    source = _source(config, args.source)
    engine, parsers = build_engine(config, ReplayClock(), host="explain")
    pipeline = Pipeline(engine, parsers)
    line = Line(source.id, args.line, time.time(), "explain:1", None, 1)
    print(f"source: {source.id} (parser {source.parser})")
    event = pipeline.parse(line)
    if event is None:
        print("parsed: NO - the parser did not recognise this line; no rule can see it")
        return 0
    print("fields:")
    for key, value in event.fields.items():
        print(f"  {key} = {json.dumps(jsonable(value), ensure_ascii=False)}")
    wanted = engine.wants(source.id, line.raw)
    print(f"scan: {'selects' if wanted else 'passes over'} this line (whether a rule may match it)")
    if every := engine.rules_on_every_line(source.id):
        print(
            f"  (every line of this source is parsed for {', '.join(every)}: no condition on "
            "text the parser copies from the line tells which lines they need)"
        )
    print(format_explanation(engine.explain(event)))
    return 0


def _source(config: Config, wanted: str | None) -> SourceConfig:
    """``--source``, or the only source there is."""
    known = ", ".join(s.id for s in config.sources) or "none"
    if wanted is None:
        if len(config.sources) == 1:
            return config.sources[0]
        raise ConfigError(
            f"name the source whose parser applies (sources: {known})", None, "--source"
        )
    try:
        return config.source(wanted)
    except KeyError:
        raise ConfigError(f"no source {wanted!r} (sources: {known})", None, "--source") from None

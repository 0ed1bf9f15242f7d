"""Parsers turn a line into fields: the builtins and custom regex parsers.

``build_parser(name, custom, timezone=...)`` returns a ``Parser`` (see ``base.py``) for a
builtin name in ``BUILTIN`` or an id under the config's ``parsers:``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import tzinfo

from logwatchd.config.model import ParserConfig
from logwatchd.events import Line
from logwatchd.parsers.alert import AlertParser
from logwatchd.parsers.base import ALL_STRINGS, ANY_FIELDS, Fields, FieldSet, Parser, field_set
from logwatchd.parsers.journald import JournaldParser
from logwatchd.parsers.jsonlines import JsonParser
from logwatchd.parsers.regex import RegexParser
from logwatchd.parsers.rfc5424 import Rfc5424Parser
from logwatchd.parsers.syslog import SyslogParser
from logwatchd.parsers.timeutil import resolve_timezone
from logwatchd.parsers.web import AccessLogParser, ApacheErrorParser, NginxErrorParser

__all__ = ["BUILTIN", "FieldSet", "Fields", "Parser", "build_parser", "produced_fields"]


class NoneParser:
    """Only ``message`` (the line) and ``raw``."""

    name = "none"
    verbatim_fields = ALL_STRINGS
    fields = field_set()

    def parse(self, line: Line) -> Fields | None:
        return {"message": line.raw, "raw": line.raw}


# How each builtin parser is made for the configured timezone (some need none).
_BUILTIN: dict[str, Callable[[tzinfo], Parser]] = {
    "syslog": SyslogParser,
    "rfc5424": Rfc5424Parser,
    "journald": lambda tz: JournaldParser(),
    "nginx_combined": lambda tz: AccessLogParser("nginx_combined"),
    "apache_combined": lambda tz: AccessLogParser("apache_combined"),
    "nginx_error": NginxErrorParser,
    "apache_error": ApacheErrorParser,
    "json": JsonParser,
    "none": lambda tz: NoneParser(),
    "alert": AlertParser,
}
BUILTIN: frozenset[str] = frozenset(_BUILTIN)


def build_parser(name: str, custom: Mapping[str, ParserConfig], *, timezone: str) -> Parser:
    """The parser called ``name``: a custom one (which may shadow nothing builtin) or a builtin.

    Raises ``ValueError`` for an unknown name or timezone (the loader has checked both, so
    this means a programming error, not a user one).
    """
    tz = resolve_timezone(timezone)
    if name in custom:
        return RegexParser(custom[name], tz)
    if name not in _BUILTIN:
        raise ValueError(f"unknown parser {name!r}")
    return _BUILTIN[name](tz)


_BUILTIN_FIELDS: dict[str, FieldSet] = {
    "syslog": SyslogParser.fields,
    "rfc5424": Rfc5424Parser.fields,
    "journald": JournaldParser.fields,
    "nginx_combined": AccessLogParser.fields,
    "apache_combined": AccessLogParser.fields,
    "nginx_error": NginxErrorParser.fields,
    "apache_error": ApacheErrorParser.fields,
    "json": JsonParser.fields,
    "alert": AlertParser.fields,
    "none": NoneParser.fields,
}


def produced_fields(name: str, custom: Mapping[str, ParserConfig]) -> FieldSet:
    """The fields the parser ``name`` can produce (a parser that does not say: any)."""
    if name in custom:
        return RegexParser.fields_of(custom[name])
    return _BUILTIN_FIELDS.get(name, ANY_FIELDS)


def known_fields(custom: Mapping[str, ParserConfig]) -> list[FieldSet]:
    """The field sets of every builtin parser and every custom one, for "no parser at all
    gives this field" (a misspelling wherever the rule is)."""
    return [*_BUILTIN_FIELDS.values(), *(RegexParser.fields_of(c) for c in custom.values())]

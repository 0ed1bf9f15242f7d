"""Validation: each kind of mistake gives one exact ``file:line: key.path: message``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatchd.config import load, load_text
from logwatchd.config.model import (
    All,
    AnyOf,
    Cidr,
    Compare,
    Config,
    Equals,
    In,
    InList,
    Not,
    Regex,
    Text,
)
from logwatchd.errors import ConfigError

# Six lines; what a test appends starts on line 7.
BASE = """\
version: 1
sources:
  - id: app
    type: file
    paths: [app.log]
    parser: none
"""


def config(tmp_path: Path, extra: str = "", *, base: str = BASE) -> Config:
    return load_text(base + textwrap.dedent(extra), "c.yaml", base_dir=str(tmp_path))


def error(tmp_path: Path, extra: str = "", *, base: str = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, extra, base=base)
    return str(info.value)


def rule_with(match: str) -> str:
    """A rule whose match (flow style) sits on line 9."""
    return f"rules:\n  - id: r\n    match: {match}\n"


# --- the document -------------------------------------------------------------------------


def test_the_spec_example_message_for_a_bad_duration(tmp_path: Path) -> None:
    extra = """\
    rules:
      - id: r
        match: {field: message, contains: x}
        threshold:
          count: 3
          window: 10 minutes
    """
    assert error(tmp_path, extra) == (
        'c.yaml:12: rules[0].threshold.window: "10 minutes" is not a duration (use 10m, 1h, 30s)'
    )


def test_unknown_top_level_key_suggests_the_closest(tmp_path: Path) -> None:
    assert error(tmp_path, "handler: {}\n") == (
        "c.yaml:7: handler: unknown key 'handler' (did you mean 'handlers'?); allowed: daemon, "
        "defaults, handlers, include, lists, parsers, rules, sources, version"
    )


def test_unknown_key_in_a_rule(tmp_path: Path) -> None:
    extra = "rules:\n  - id: r\n    match: {field: a, exists: true}\n    treshold: {count: 2}\n"
    assert error(tmp_path, extra).startswith(
        "c.yaml:10: rules[0].treshold: unknown key 'treshold' (did you mean 'threshold'?); "
        "allowed: context, cooldown, description, group_by, handlers, id, match,"
    )


def test_unknown_key_deep_in_a_condition(tmp_path: Path) -> None:
    extra = """\
    rules:
      - id: r
        match:
          all:
            - {field: a, exists: true}
            - not:
                field: b
                equal: x
    """
    assert error(tmp_path, extra).startswith(
        "c.yaml:14: rules[0].match.all[1].not.equal: unknown key 'equal' (did you mean 'equals'?)"
    )


def test_unknown_key_in_a_nested_handler_mapping(tmp_path: Path) -> None:
    extra = """\
    handlers:
      mail:
        type: email
        to: ops@example.com
        smtp:
          hots: mail.example.com
    """
    assert error(tmp_path, extra).startswith(
        "c.yaml:12: handlers.mail.smtp.hots: unknown key 'hots' (did you mean 'host'?)"
    )


def test_keys_of_another_source_type_are_unknown(tmp_path: Path) -> None:
    base = "version: 1\nsources:\n  - id: j\n    type: journald\n    paths: [x.log]\n"
    assert error(tmp_path, base=base).startswith("c.yaml:5: sources[0].paths: unknown key 'paths'")


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    extra = "daemon:\n  timezone: UTC\n  timezone: local\n"
    assert error(tmp_path, extra) == (
        "c.yaml:9: daemon.timezone: duplicate key 'timezone' (first at line 8)"
    )


def test_wrong_types_name_the_expected_type(tmp_path: Path) -> None:
    extra = rule_with("{field: a, exists: true}") + "    threshold: {count: five, window: 1m}\n"
    assert error(tmp_path, extra) == (
        'c.yaml:10: rules[0].threshold.count: expected an integer, got a string ("five")'
    )
    assert error(tmp_path, base="version: 1\nsources: {app: {}}\n") == (
        "c.yaml:2: sources: expected a list of sources, got a mapping"
    )
    assert error(tmp_path, "daemon:\n  dry_run: maybe\n") == (
        'c.yaml:8: daemon.dry_run: expected true or false, got a string ("maybe")'
    )


def test_version_must_be_one(tmp_path: Path) -> None:
    assert error(tmp_path, base=BASE.replace("version: 1", "version: 2")) == (
        "c.yaml:1: version: unsupported config version 2 (this is version 1)"
    )
    assert "missing required key 'version'" in error(tmp_path, base=BASE.split("\n", 1)[1])


def test_yaml_syntax_errors_carry_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, "rules: [\n  {id: r\n")
    assert message.startswith("c.yaml:9: invalid YAML:")


def test_no_sources_is_an_error(tmp_path: Path) -> None:
    assert error(tmp_path, base="version: 1\n") == (
        "c.yaml:1: no sources: declare at least one under 'sources'"
    )


def test_ids_have_a_fixed_alphabet(tmp_path: Path) -> None:
    message = error(tmp_path, base=BASE.replace("id: app", "id: My_App"))
    assert message.startswith("c.yaml:3: sources[0].id: source id 'My_App' must be lowercase")


def test_alias_expansion_is_bounded(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{', '.join(['*' + previous] * 10)}]\n"
    message = error(tmp_path, base="version: 1\n" + bomb)
    assert "document too large or too deeply nested" in message


def test_merge_keys_merge_and_own_keys_override(tmp_path: Path) -> None:
    extra = """\
    handlers:
      base-mail: &mail
        type: email
        to: ops@example.com
        subject: base
      other:
        <<: *mail
        subject: override
    """
    handlers = config(tmp_path, extra).handlers
    assert handlers["other"].settings.subject == "override"
    assert handlers["other"].settings.to == ("ops@example.com",)
    assert handlers["base-mail"].settings.subject == "base"


# --- daemon, lists, sources, parsers -------------------------------------------------------


def test_daemon_settings_are_typed(tmp_path: Path) -> None:
    extra = """\
    daemon:
      state_dir: state
      timezone: Europe/Berlin
      max_keys_per_rule: 50
      commit_interval: 250ms
      shutdown_timeout: 1m
    """
    daemon = config(tmp_path, extra).daemon
    assert daemon.state_dir == str(tmp_path / "state")
    assert daemon.timezone == "Europe/Berlin"
    assert daemon.max_keys_per_rule == 50
    assert daemon.commit_interval == 0.25
    assert daemon.shutdown_timeout == 60.0


def test_an_unknown_time_zone_is_rejected(tmp_path: Path) -> None:
    assert error(tmp_path, "daemon:\n  timezone: Mars/Olympus\n").startswith(
        'c.yaml:8: daemon.timezone: unknown time zone "Mars/Olympus"'
    )


def test_lists_keep_strings_and_parse_networks(tmp_path: Path) -> None:
    cfg = config(tmp_path, "lists:\n  ok: [10.0.0.0/8, '::1', 192.0.2.7, alice, 8080]\n")
    trusted = cfg.lists["ok"]
    assert trusted.values == {"10.0.0.0/8", "::1", "192.0.2.7", "alice", "8080"}
    assert ipaddress.ip_address("10.1.2.3") in trusted.networks[0]
    assert [str(net) for net in trusted.networks] == ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]


def test_source_types_and_their_keys(tmp_path: Path) -> None:
    base = """\
version: 1
sources:
  - {id: app, type: file, paths: 'logs/*.log', parser: syslog, start_at: beginning}
  - {id: auth, type: journald, match: [_SYSTEMD_UNIT=ssh.service], directory: journal,
     start_at: beginning}
  - {id: pipe, type: stdin, parser: json}
"""
    app, auth, pipe = config(tmp_path, base=base).sources
    assert app.paths == (str(tmp_path / "logs/*.log"),)
    assert app.start_at == "beginning"
    assert (auth.parser, auth.match) == ("journald", ("_SYSTEMD_UNIT=ssh.service",))
    assert auth.journal_directory == str(tmp_path / "journal")
    assert auth.start_at == "beginning"
    assert (pipe.type, pipe.parser) == ("stdin", "json")


def test_a_journal_match_must_be_field_equals_value(tmp_path: Path) -> None:
    base = "version: 1\nsources:\n  - id: j\n    type: journald\n    match: [ssh.service]\n"
    assert error(tmp_path, base=base).startswith(
        'c.yaml:5: sources[0].match[0]: "ssh.service" is not a journal match (use FIELD=value'
    )


@pytest.mark.parametrize(
    "term",
    ["--file=/etc/shadow", "+", "message=lower", "_PID", "1PID=1", "\u00c4B=x", "A" * 65 + "=x"],
)
def test_a_journal_match_term_is_checked_once_with_the_limits_of_journal_fields(
    tmp_path: Path, term: str
) -> None:
    """What the journald source passes to journalctl: a config that loads also starts."""
    base = "version: 1\nsources:\n  - id: j\n    type: journald\n    match: ['%s']\n"
    assert error(tmp_path, base=base % term).startswith(
        f'c.yaml:5: sources[0].match[0]: "{term}" is not a journal match'
    )
    longest = "A" * 64 + "=x"
    [journal] = config(tmp_path, base=base % longest).sources
    assert journal.match == (longest,)


def test_an_unknown_parser_is_rejected(tmp_path: Path) -> None:
    message = error(tmp_path, base=BASE.replace("parser: none", "parser: sylog"))
    assert message.startswith("c.yaml:6: sources[0].parser: unknown parser 'sylog'; known: ")
    assert "syslog" in message


def test_custom_parsers_compile_and_check_their_groups(tmp_path: Path) -> None:
    extra = r"""
    parsers:
      app:
        regex: '^(?P<timestamp>\S+ \S+) (?P<event_type>\w+) - IP: (?P<ip>\S+)'
        time_format: '%Y-%m-%d %H:%M:%S'
        types: {ip: ip}
    """
    parser = config(tmp_path, extra).parsers["app"]
    match = parser.regex.match("2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9")
    assert match is not None
    assert match["ip"] == "203.0.113.9"
    assert parser.types == {"ip": "ip"}


def test_a_bad_parser_regex_shows_the_re_error(tmp_path: Path) -> None:
    extra = "parsers:\n  app:\n    regex: '(?P<ip>\\S+'\n"
    assert error(tmp_path, extra) == (
        "c.yaml:9: parsers.app.regex: bad regex: missing ), unterminated subpattern at position 0"
    )


def test_parser_types_must_name_groups_of_the_regex(tmp_path: Path) -> None:
    extra = "parsers:\n  app:\n    regex: '(?P<ip>\\S+)'\n    types: {addr: ip}\n"
    assert error(tmp_path, extra) == (
        "c.yaml:10: parsers.app.types.addr: the regex has no group 'addr' (groups: ip)"
    )
    extra = "parsers:\n  app:\n    regex: '(?P<ip>\\S+)'\n    types: {ip: ipv4}\n"
    assert error(tmp_path, extra).startswith(
        'c.yaml:10: parsers.app.types.ip: "ipv4" is not one of str, int, float, ip'
    )


def test_time_format_needs_a_timestamp_group(tmp_path: Path) -> None:
    extra = "parsers:\n  app:\n    regex: '(?P<ip>\\S+)'\n    time_format: '%H'\n"
    assert error(tmp_path, extra) == (
        "c.yaml:10: parsers.app.time_format: time_format needs a (?P<timestamp>...) group "
        "in the regex"
    )


# --- rules and predicates ------------------------------------------------------------------


def test_conditions_become_typed_predicates(tmp_path: Path) -> None:
    extra = r"""
    lists:
      trusted: [10.0.0.0/8]
    rules:
      - id: r
        match:
          all:
            - {field: event_type, equals: SecurityBreach, icase: true}
            - any:
                - {field: ip, cidr: [192.0.2.0/24, '2001:db8::/32']}
                - {field: message, regex: 'user (?P<user>\w+)', icase: true}
            - not: {field: ip, in_list: trusted}
            - {field: status, in: [500, 502]}
            - {field: bytes, gte: 1.5}
    """
    match = config(tmp_path, extra).rules[0].match
    assert isinstance(match, All)
    equals, any_of, negated, member, gte = match.items
    assert equals == Equals("event_type", "SecurityBreach", icase=True, mark=equals.mark)
    assert isinstance(any_of, AnyOf)
    cidr, regex = any_of.items
    assert isinstance(cidr, Cidr)
    assert cidr.networks == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert isinstance(regex, Regex)
    assert regex.pattern.flags & re.IGNORECASE
    match_found = regex.pattern.search("USER alice")
    assert match_found is not None and match_found["user"] == "alice"
    assert isinstance(negated, Not)
    assert negated.item == InList("ip", "trusted", mark=negated.item.mark)
    assert member == In("status", (500, 502), mark=member.mark)
    assert gte == Compare("bytes", "gte", 1.5, mark=gte.mark)
    assert equals.mark.line == 14


EVERY_KIND = """\
version: 1
lists:
  trusted: [10.0.0.0/8, backup]
sources:
  - {id: s, type: stdin, parser: syslog}
handlers:
  l: {type: log}
rules:
  - id: every
    handlers: [l]
    match:
      all:
        - {field: a, equals: x, icase: true}
        - {field: a, equals: 5}
        - {field: b, in: [x, 1, 2.5]}
        - {field: c, contains: x}
        - {field: c, startswith: x, icase: true}
        - {field: c, endswith: y}
        - {field: message, regex: 'from (?P<ip>\\S+)', icase: true}
        - {field: ip, cidr: [10.0.0.0/8, '2001:db8::/32']}
        - {field: ip, cidr: 192.0.2.1}
        - not: {field: ip, in_list: trusted}
        - {field: d, exists: false}
        - any: [{field: n, gt: 1}, {field: n, gte: 1.5}, {field: n, lt: -1}, {field: n, lte: 3}]
"""


def test_the_digest_of_every_kind_of_condition_stays_the_same(tmp_path: Path) -> None:
    """Rule state is stored under the rule's digest: a new release that shaped conditions
    differently would drop every window at upgrade."""
    rule = load_text(EVERY_KIND, "c.yaml", base_dir=str(tmp_path)).rules[0]
    assert rule.digest() == "a01d00000945b6ab"


def test_a_bad_rule_regex_shows_the_re_error(tmp_path: Path) -> None:
    assert error(tmp_path, rule_with("{field: message, regex: 'a[b'}")) == (
        "c.yaml:9: rules[0].match.regex: bad regex: unterminated character set at position 1"
    )


def test_in_list_must_name_a_declared_list(tmp_path: Path) -> None:
    extra = "lists:\n  trusted: [10.0.0.0/8]\n" + rule_with("{field: ip, in_list: trustd}")
    assert error(tmp_path, extra) == (
        "c.yaml:11: rules[0].match.in_list: unknown list 'trustd'; declared: trusted"
    )


def test_one_operator_per_condition(tmp_path: Path) -> None:
    assert error(tmp_path, rule_with("{field: a, equals: x, contains: y}")) == (
        "c.yaml:9: rules[0].match.contains: one operator per condition, got equals and contains;"
        " combine conditions with 'all'"
    )
    assert error(tmp_path, rule_with("{field: a}")).startswith(
        "c.yaml:9: rules[0].match: a condition needs one of: equals, in,"
    )
    assert error(tmp_path, rule_with("{all: [{field: a, exists: true}], field: b}")) == (
        "c.yaml:9: rules[0].match: 'all' cannot share a condition with 'field'; nest them in 'all'"
    )


def test_icase_only_where_it_makes_sense(tmp_path: Path) -> None:
    assert error(tmp_path, rule_with("{field: n, gt: 3, icase: true}")) == (
        "c.yaml:9: rules[0].match.icase: icase does not apply to 'gt'"
    )


def test_leaf_values_are_type_checked(tmp_path: Path) -> None:
    assert error(tmp_path, rule_with("{field: n, gt: many}")) == (
        'c.yaml:9: rules[0].match.gt: expected a number, got a string ("many")'
    )
    assert error(tmp_path, rule_with("{field: ip, cidr: 10.0.0.300/8}")) == (
        'c.yaml:9: rules[0].match.cidr: "10.0.0.300/8" is not an IP address or CIDR network'
    )
    assert error(tmp_path, rule_with("{field: a, equals: yes}")).startswith(
        "c.yaml:9: rules[0].match.equals: expected a string or a number"
    )
    assert error(tmp_path, rule_with("{field: a, contains: 5}")) == (
        "c.yaml:9: rules[0].match.contains: expected a string, got an integer (5)"
    )
    assert error(tmp_path, rule_with("{field: a, regex: 7}")) == (
        "c.yaml:9: rules[0].match.regex: expected a string, got an integer (7)"
    )
    assert error(tmp_path, rule_with("{field: a, in: not-a-list}")) == (
        'c.yaml:9: rules[0].match.in: expected a list of values, got a string ("not-a-list")'
    )
    assert error(tmp_path, rule_with("{field: a, in: []}")) == (
        "c.yaml:9: rules[0].match.in: must list at least one value"
    )
    assert error(tmp_path, rule_with("{field: ip, cidr: [10.0.0.0/8, not-a-network]}")) == (
        'c.yaml:9: rules[0].match.cidr[1]: "not-a-network" is not an IP address or CIDR network'
    )


def test_rules_get_default_handlers_and_defaults(tmp_path: Path) -> None:
    extra = """\
    defaults:
      handlers: [log, alerts]
    handlers:
      alerts: {type: file, path: alerts.jsonl}
    rules:
      - id: quiet
        match: {field: a, exists: true}
      - id: loud
        match: {field: a, exists: false}
        handlers: [alerts]
        cooldown: 5m
        severity: high
        group_by: ip
    """
    quiet, loud = config(tmp_path, extra).rules
    assert quiet.handlers == ("log", "alerts")
    assert (quiet.severity, quiet.cooldown, quiet.threshold) == ("medium", 0.0, None)
    assert loud.handlers == ("alerts",)
    assert (loud.cooldown, loud.severity, loud.group_by) == (300.0, "high", ("ip",))


def test_without_defaults_rules_go_to_log(tmp_path: Path) -> None:
    cfg = config(tmp_path, rule_with("{field: a, exists: true}"))
    assert cfg.rules[0].handlers == ("log",)
    assert cfg.handlers["log"].type == "log"


def test_an_unknown_handler_is_rejected(tmp_path: Path) -> None:
    extra = rule_with("{field: a, exists: true}") + "    handlers: [log, mail]\n"
    assert error(tmp_path, extra) == (
        "c.yaml:10: rules[0].handlers[1]: unknown handler 'mail'; declared: log"
    )
    extra = "defaults:\n  handlers: [mail]\n"
    assert error(tmp_path, extra) == (
        "c.yaml:8: defaults.handlers[0]: unknown handler 'mail'; declared: log"
    )


def test_rule_sources_must_exist(tmp_path: Path) -> None:
    extra = rule_with("{field: a, exists: true}") + "    sources: [ap]\n"
    assert error(tmp_path, extra) == (
        "c.yaml:10: rules[0].sources[0]: unknown source 'ap'; declared: app"
    )


def test_match_is_required_unless_sequence(tmp_path: Path) -> None:
    assert error(tmp_path, "rules:\n  - id: r\n") == (
        "c.yaml:8: rules[0]: missing required key 'match' (or 'sequence')"
    )


def test_sequences(tmp_path: Path) -> None:
    extra = """\
    rules:
      - id: login-without-logout
        sequence:
          window: 5m
          steps:
            - match: {field: event_type, equals: Login}
            - match: {field: event_type, equals: Logout}
              absent: true
        group_by: [ip]
    """
    rule = config(tmp_path, extra).rules[0]
    assert rule.match is None
    assert rule.sequence is not None
    assert rule.sequence.window == 300.0
    assert [step.absent for step in rule.sequence.steps] == [False, True]
    bad = extra.replace("Login}\n", "Login}\n              absent: true\n", 1)
    assert error(tmp_path, bad) == (
        "c.yaml:13: rules[0].sequence.steps[0].absent: only the last step can be 'absent'"
    )


def test_threshold_count_and_window(tmp_path: Path) -> None:
    extra = rule_with("{field: a, exists: true}")
    cfg = config(tmp_path, extra + "    threshold: {count: 5, window: 10m, distinct: user}\n")
    threshold = cfg.rules[0].threshold
    assert threshold is not None
    assert (threshold.count, threshold.window, threshold.distinct) == (5, 600.0, "user")
    assert error(tmp_path, extra + "    threshold: {count: 0, window: 1m}\n") == (
        "c.yaml:10: rules[0].threshold.count: must be at least 1, got 0"
    )
    assert error(tmp_path, extra + "    threshold: {count: 2}\n") == (
        "c.yaml:10: rules[0].threshold: missing required key 'window'"
    )


def test_severity_is_one_of_the_five(tmp_path: Path) -> None:
    extra = rule_with("{field: a, exists: true}") + "    severity: critcal\n"
    assert error(tmp_path, extra) == (
        'c.yaml:10: rules[0].severity: "critcal" is not one of info, low, medium, high, critical'
        " (did you mean 'critical'?)"
    )


# --- handlers --------------------------------------------------------------------------------


def test_email_handler_settings(tmp_path: Path) -> None:
    extra = """\
    handlers:
      mail:
        type: email
        smtp: {host: mail.example.com, tls: tls, username: lw, password_file: secret}
        from: logwatchd@example.com
        to: ops@example.com
        cc: [sec@example.com]
        batch: {window: 5m}
        retry: {max_attempts: 3, backoff: 10s}
        rate_limit: {max: 20, per: 1h}
    """
    mail = config(tmp_path, extra).handlers["mail"]
    smtp = mail.settings.smtp
    assert (smtp.host, smtp.port, smtp.tls) == ("mail.example.com", 465, "tls")
    assert smtp.password_file == str(tmp_path / "secret")
    assert mail.settings.sender == "logwatchd@example.com"
    assert mail.settings.to == ("ops@example.com",)
    assert mail.settings.cc == ("sec@example.com",)
    assert "{{ alert.rule }}" in mail.settings.subject
    assert "{% for line in alert.events %}" in mail.settings.body
    assert mail.batch is not None
    assert (mail.batch.window, mail.batch.max) == (300.0, 100)
    assert (mail.retry.max_attempts, mail.retry.backoff) == (3, 10.0)
    assert mail.rate_limit is not None
    assert (mail.rate_limit.max, mail.rate_limit.per) == (20, 3600.0)
    assert mail.marks["to[0]"].line == 12
    assert mail.marks["smtp.host"].line == 10


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("ops example.com", "ops example.com"),
        (
            r"ops@example.com\r\nBcc: victim@example.org",
            r"ops@example.com\r\nBcc: victim@example.org",
        ),
        ("Ops <ops@example.com>", "Ops <ops@example.com>"),
        ("ops", "ops"),
        ("ops@@example.com", "ops@@example.com"),
        ("ops@example..com", "ops@example..com"),
        (".ops@example.com", ".ops@example.com"),
        ("ops@example.com,x@example.org", "ops@example.com,x@example.org"),
        ("öps@example.com", r"\xf6ps@example.com"),
    ],
)
def test_bad_email_addresses_are_rejected_at_load(tmp_path: Path, written: str, shown: str) -> None:
    extra = f'handlers:\n  mail:\n    type: email\n    to: ["{written}"]\n'
    assert error(tmp_path, extra) == (
        f'c.yaml:10: handlers.mail.to[0]: "{shown}" is not a valid e-mail address '
        "(plain addresses only, like ops@example.com)"
    )
    extra = f'handlers:\n  mail:\n    type: email\n    to: ok@example.com\n    from: "{written}"\n'
    assert error(tmp_path, extra).startswith(f'c.yaml:11: handlers.mail.from: "{shown}" is not')


def test_bad_template_syntax_is_reported_at_its_line(tmp_path: Path) -> None:
    extra = """\
    handlers:
      mail:
        type: email
        to: ops@example.com
        subject: '{{ alert.rule '
    """
    assert error(tmp_path, extra) == (
        "c.yaml:11: handlers.mail.subject: template syntax error: unexpected end of template, "
        "expected 'end of print statement'."
    )
    extra = """\
    handlers:
      mail:
        type: email
        to: ops@example.com
        body: |
          Rule {{ alert.rule }}
          {% for line in alert.events %}
          {{ line }
          {% endfor %}
    """
    assert error(tmp_path, extra).startswith(
        "c.yaml:14: handlers.mail.body: template syntax error: unexpected '}'"
    )


def test_a_body_file_is_resolved_and_checked_in_its_own_file(tmp_path: Path) -> None:
    (tmp_path / "mail.j2").write_text("Alert {{ alert.rule }}\n{% if x %}\nno end\n")
    extra = "handlers:\n  mail:\n    type: email\n    to: ops@example.com\n    body_file: mail.j2\n"
    assert error(tmp_path, extra) == (
        f"{tmp_path}/mail.j2:2: handlers.mail.body_file: template syntax error: Unexpected end "
        "of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. "
        "The innermost block that needs to be closed is 'if'."
    )
    (tmp_path / "mail.j2").write_text("Alert {{ alert.rule }}\n")
    mail = config(tmp_path, extra).handlers["mail"]
    assert mail.settings.body_file == str(tmp_path / "mail.j2")
    assert mail.settings.body == "Alert {{ alert.rule }}\n"  # read once, by the loader
    assert error(tmp_path, extra + "    body: inline\n").endswith(
        "give either 'body' or 'body_file', not both"
    )


def test_command_handler_settings(tmp_path: Path) -> None:
    extra = """\
    handlers:
      ban:
        type: command
        argv: [/usr/sbin/nft, add, element, inet, filter, blocklist, '{ {{ alert.key.ip }} }', 5]
        stdin: json
        env: {MODE: strict}
    """
    ban = config(tmp_path, extra).handlers["ban"]
    assert ban.settings.argv[6] == "{ {{ alert.key.ip }} }"
    assert ban.settings.argv[7] == "5"
    assert (ban.settings.stdin, ban.settings.concurrency) == ("json", 4)
    assert ban.settings.env == {"MODE": "strict"}
    assert ban.marks["argv[6]"].line == 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("[nft, list]", 'c.yaml:10: handlers.ban.argv[0]: "nft" must be an absolute path'),
        (
            "['{{ alert.key.ip }}']",
            "c.yaml:10: handlers.ban.argv[0]: argv[0] is the program path and cannot be a template",
        ),
        (
            "['/usr/sbin/{{ alert.rule }}']",
            "c.yaml:10: handlers.ban.argv[0]: argv[0] is the program path and cannot be a template",
        ),
        ("[]", "c.yaml:10: handlers.ban.argv: must name at least the program to run"),
        ("/bin/true", "c.yaml:10: handlers.ban.argv: expected a list of strings"),
        ("[/bin/echo, '{{ x ']", "c.yaml:10: handlers.ban.argv[1]: template syntax error"),
    ],
)
def test_command_argv_is_checked(tmp_path: Path, argv: str, message: str) -> None:
    extra = f"handlers:\n  ban:\n    type: command\n    argv: {argv}\n"
    assert error(tmp_path, extra).startswith(message)


def test_nul_characters_never_reach_an_argument_or_a_path(tmp_path: Path) -> None:
    extra = 'handlers:\n  ban:\n    type: command\n    argv: [/bin/echo, "a\\0b"]\n'
    assert error(tmp_path, extra) == (
        "c.yaml:10: handlers.ban.argv[1]: must not contain a NUL character"
    )
    extra = 'handlers:\n  out: {type: file, path: "a\\0b"}\n'
    assert error(tmp_path, extra) == (
        "c.yaml:8: handlers.out.path: must not contain a NUL character"
    )


def test_batch_only_where_a_digest_makes_sense(tmp_path: Path) -> None:
    extra = "handlers:\n  out: {type: file, path: a, batch: {window: 1m}}\n"
    assert error(tmp_path, extra) == (
        "c.yaml:8: handlers.out.batch: batch applies to email and webhook handlers only"
    )


def test_webhook_handler_settings(tmp_path: Path) -> None:
    extra = """\
    handlers:
      hook:
        type: webhook
        url: https://alerts.example.com/hook
        headers: {X-Rule: '{{ alert.rule }}'}
        header_files: {Authorization: secrets/token}
        format: json
    """
    hook = config(tmp_path, extra).handlers["hook"]
    assert hook.settings.method == "POST"
    assert hook.settings.headers == {"X-Rule": "{{ alert.rule }}"}
    assert hook.settings.header_files == {"Authorization": str(tmp_path / "secrets/token")}
    assert hook.settings.body is None
    bad_url = extra.replace("https://alerts.example.com/hook", "ftp://alerts.example.com")
    assert error(tmp_path, bad_url) == (
        'c.yaml:10: handlers.hook.url: "ftp://alerts.example.com" is not an http:// or https:// URL'
    )


def test_webhook_method_is_case_insensitive_but_limited(tmp_path: Path) -> None:
    extra = "handlers:\n  hook: {type: webhook, url: 'http://127.0.0.1:9/', method: %s}\n"
    assert config(tmp_path, extra % "put").handlers["hook"].settings.method == "PUT"
    assert error(tmp_path, extra % "GET") == (
        'c.yaml:8: handlers.hook.method: "GET" is not one of POST, PUT, PATCH'
    )


def test_smtp_user_names_cannot_smuggle_line_breaks(tmp_path: Path) -> None:
    extra = 'handlers:\n  m: {type: email, to: a@example.com, smtp: {username: "a\\r\\nb"}}\n'
    assert error(tmp_path, extra) == (
        'c.yaml:8: handlers.m.smtp.username: "a\\r\\nb" contains spaces or controls'
    )


def test_file_handler_mode_is_read_as_octal(tmp_path: Path) -> None:
    for written in ("640", "0640", "'0o640'"):
        extra = f"handlers:\n  out:\n    type: file\n    path: out/a.jsonl\n    mode: {written}\n"
        out = config(tmp_path, extra).handlers["out"]
        assert out.settings.mode == 0o640
        assert out.settings.path == str(tmp_path / "out/a.jsonl")
    extra = "handlers:\n  out:\n    type: file\n    path: a.jsonl\n    mode: 999\n"
    assert error(tmp_path, extra) == (
        "c.yaml:11: handlers.out.mode: 999 is not a file mode (write it like 0640)"
    )


def test_handler_types_and_the_reserved_log_name(tmp_path: Path) -> None:
    assert error(tmp_path, "handlers:\n  x: {type: sms}\n").startswith(
        'c.yaml:8: handlers.x.type: "sms" is not one of email, command, webhook, file, log'
    )
    assert error(tmp_path, "handlers:\n  log: {type: file, path: a}\n") == (
        "c.yaml:8: handlers.log: the name 'log' is reserved for type: log"
    )
    assert config(tmp_path, "handlers:\n  log: {type: log}\n").handlers["log"].type == "log"
    assert error(tmp_path, "handlers:\n  x: {type: log, path: a}\n").startswith(
        "c.yaml:8: handlers.x.path: unknown key 'path'; allowed: rate_limit, retry, timeout, type"
    )


def test_the_shipped_examples_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    main = load(str(root / "config/logwatchd.yaml"))
    assert [rule.id for rule in main.rules] == ["security-breach", "sshd-bruteforce"]
    breach = main.rules[0]
    assert breach.handlers == ("mail-admin", "block-ip", "alerts-file")
    assert main.handlers["block-ip"].settings.argv == (
        "/usr/local/sbin/logwatchd-block",
        "{{ alert.key.ip }}",
    )
    demo = load(str(root / "logwatchd/data/demo.yaml"), base_dir=str(tmp_path))
    assert demo.sources[0].paths == (str(tmp_path / "logwatchd-demo/server.log"),)
    assert demo.daemon.state_dir == str(tmp_path / "logwatchd-demo/state")
    assert demo.handlers["alerts-file"].settings.path == str(
        tmp_path / "logwatchd-demo/alerts.jsonl"
    )
    assert all(rule.handlers == ("log", "alerts-file") for rule in demo.rules)
    assert (root / "logwatchd/data/demo.yaml").resolve() == (root / "config/demo.yaml")


# --- robustness ------------------------------------------------------------------------------

EXAMPLE_LINES = (
    (Path(__file__).resolve().parent.parent / "config/logwatchd.yaml").read_text().splitlines()
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(EXAMPLE_LINES) - 1),
            st.sampled_from(["drop", "dup", "null", "list", "text", "number", "indent"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_damaged_config_gives_a_config_error_and_nothing_else(
    edits: list[tuple[int, str]],
) -> None:
    lines = list(EXAMPLE_LINES)
    for where, kind in edits:
        index = where % len(lines)
        line = lines[index]
        key, sep, _ = line.partition(":")
        replacement = {
            "drop": [],
            "dup": [line, line],
            "null": [f"{key}:" if sep else line],
            "list": [f"{key}: [1, {{a: b}}]" if sep else line],
            "text": [f"{key}: 'x y'" if sep else line],
            "number": [f"{key}: -3" if sep else line],
            "indent": ["  " + line],
        }[kind]
        lines[index : index + 1] = replacement
    try:
        load_text("\n".join(lines) + "\n", "c.yaml", base_dir="/nonexistent")
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert re.match(r"c\.yaml:\d+: ", message), message


@pytest.mark.parametrize("example", ["config/logwatchd.yaml", "config/demo.yaml"])
def test_example_and_default_templates_render_in_the_sandbox(tmp_path: Path, example: str) -> None:
    """What `logwatchd check` does: every template, for every rule's key shape, renders."""
    from logwatchd.templates import HostInfo, Templates, check_templates

    root = Path(__file__).resolve().parent.parent
    cfg = load(str(root / example), base_dir=str(tmp_path))
    extra = "handlers:\n  mail:\n    type: email\n    to: ops@example.com\n"
    defaults = config(tmp_path, extra).handlers["mail"]
    templates, host = Templates(), HostInfo("web1", "web1.example.com")
    rendered = 0
    for key_fields in [None, (), ("ip",), ("ip", "user")]:
        rendered += check_templates(defaults, templates=templates, host=host, key_fields=key_fields)
    assert rendered == 8  # the default subject and body, for each key shape
    for handler in cfg.handlers.values():
        for rule in cfg.rules:
            if handler.name in rule.handlers:
                check_templates(handler, templates=templates, host=host, key_fields=rule.group_by)


# --- rule context (per-connection memory) -------------------------------------------------


def test_context_becomes_a_typed_context_config(tmp_path: Path) -> None:
    extra = rule_with("{field: message, regex: 'Too many'}") + (
        "    context:\n"
        "      by: [host, pid]\n"
        "      optional: [host]\n"
        "      remember: ip\n"
        "      for: 5m\n"
        "      distinct: {users: user}\n"
        "      learn: {field: message, regex: 'from (?P<ip>\\S+)'}\n"
        "      forget: {field: message, startswith: Connection closed}\n"
    )
    context = config(tmp_path, extra).rules[0].context
    assert context is not None
    assert (context.by, context.remember, context.ttl) == (("host", "pid"), ("ip",), 300.0)
    assert context.optional == ("host",)
    assert context.distinct == (("users", "user"),)
    assert isinstance(context.learn, Regex)
    assert isinstance(context.forget, Text) and context.forget.text == "Connection closed"
    plain = config(tmp_path, rule_with("{field: message, regex: 'Too many'}")).rules[0]
    assert plain.context is None
    assert config(tmp_path, extra).rules[0].digest() != plain.digest()


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ("{remember: [ip]}", "c.yaml:10: rules[0].context: missing required key 'by'"),
        (
            "{by: [pid], remembr: [ip]}",
            "c.yaml:10: rules[0].context.remembr: unknown key 'remembr' (did you mean "
            "'remember'?); allowed: by, distinct, for, forget, learn, optional, remember",
        ),
        ("{by: []}", "c.yaml:10: rules[0].context.by: must not be an empty list"),
        (
            "{by: [host, pid], optional: [hots]}",
            "c.yaml:10: rules[0].context.optional[0]: 'hots' is not one of the 'by' fields",
        ),
        (
            "{by: [host], optional: host}",
            "c.yaml:10: rules[0].context.optional: at least one 'by' field must be required",
        ),
        (
            "{by: [pid], for: 10 minutes}",
            'c.yaml:10: rules[0].context.for: "10 minutes" is not a duration (use 10m, 1h, 30s)',
        ),
        (
            "{by: [pid], distinct: [user]}",
            "c.yaml:10: rules[0].context.distinct: expected a mapping {count field: counted "
            "field}, got a list",
        ),
        (
            "{by: [pid], remember: [ip], distinct: {ip: user}}",
            "c.yaml:10: rules[0].context.distinct.ip: 'ip' is already a 'by' or 'remember' field",
        ),
        (
            "{by: [pid], distinct: {user: user}}",
            "c.yaml:10: rules[0].context.distinct.user: 'user' cannot count itself; "
            "give the count another name",
        ),
        (
            "{by: [pid], learn: {field: message, regex: '(?P<ip'}}",
            "c.yaml:10: rules[0].context.learn.regex: ",
        ),
    ],
)
def test_context_mistakes_name_the_key(tmp_path: Path, context: str, message: str) -> None:
    extra = rule_with("{field: message, contains: x}") + f"    context: {context}\n"
    assert error(tmp_path, extra).startswith(message)


def test_context_is_for_match_rules_only(tmp_path: Path) -> None:
    extra = """\
    rules:
      - id: seq
        sequence:
          window: 5m
          steps:
            - match: {field: message, contains: a}
            - match: {field: message, contains: b}
        context: {by: [pid]}
    """
    assert error(tmp_path, extra) == (
        "c.yaml:14: rules[0].context: 'context' applies to 'match' rules, not to sequences"
    )


def test_a_file_source_may_name_logrotates_olddir(tmp_path: Path) -> None:
    """Kept as logrotate reads it: relative to each followed file's directory."""
    assert config(tmp_path, base=BASE + "    olddir: old/\n").sources[0].olddir == "old"
    assert config(tmp_path, base=BASE + "    olddir: /var/log/old\n").sources[0].olddir == (
        "/var/log/old"
    )
    assert error(tmp_path, base=BASE + "    olddir: 'old/*'\n") == (
        'c.yaml:7: sources[0].olddir: olddir "old/*" must be one directory, as in logrotate '
        "(no glob)"
    )
    assert error(tmp_path, base=BASE + "    olddir: [old]\n").startswith(
        "c.yaml:7: sources[0].olddir: expected a string"
    )
    journal = "version: 1\nsources:\n  - id: j\n    type: journald\n    olddir: old\n"
    assert error(tmp_path, base=journal).startswith("c.yaml:5: sources[0].olddir: unknown key")


def test_max_open_files_is_a_positive_count(tmp_path: Path) -> None:
    assert config(tmp_path).daemon.max_open_files == 1024
    assert config(tmp_path, "daemon:\n  max_open_files: 64\n").daemon.max_open_files == 64
    assert error(tmp_path, "daemon:\n  max_open_files: 0\n") == (
        "c.yaml:8: daemon.max_open_files: must be at least 1, got 0"
    )


def test_metrics_listen_takes_an_address_or_a_unix_socket(tmp_path: Path) -> None:
    tcp = config(tmp_path, "daemon:\n  metrics: {listen: '127.0.0.1:9101'}\n").daemon
    assert tcp.metrics_listen is not None
    assert (tcp.metrics_listen.host, tcp.metrics_listen.port) == ("127.0.0.1", 9101)
    six = config(tmp_path, "daemon:\n  metrics: {listen: '[::1]:9101'}\n").daemon
    assert six.metrics_listen is not None and str(six.metrics_listen) == "[::1]:9101"
    unix = config(tmp_path, "daemon:\n  metrics: {listen: 'unix:/run/lwd/m.sock'}\n").daemon
    assert unix.metrics_listen is not None and unix.metrics_listen.unix_path == "/run/lwd/m.sock"
    assert config(tmp_path).daemon.metrics_listen is None  # off by default


def test_a_bad_metrics_address_names_the_forms_that_work(tmp_path: Path) -> None:
    assert error(tmp_path, "daemon:\n  metrics: {listen: '9101'}\n") == (
        'c.yaml:8: daemon.metrics.listen: "9101" is not an address to listen on '
        "(use 127.0.0.1:9101, [::1]:9101 or unix:/run/logwatchd/metrics.sock)"
    )
    assert "absolute path" in error(tmp_path, "daemon:\n  metrics: {listen: 'unix:m.sock'}\n")
    assert "unknown key 'port'" in error(tmp_path, "daemon:\n  metrics: {port: 9101}\n")


def test_history_is_a_duration_kept_30_days_by_default(tmp_path: Path) -> None:
    assert config(tmp_path).daemon.history == 30 * 86400
    assert config(tmp_path, "daemon:\n  history: 90d\n").daemon.history == 90 * 86400


def test_a_wrong_value_is_named_by_its_yaml_type_booleans_apart_from_integers() -> None:
    from logwatchd.config.nodes import type_name

    named = [type_name(v) for v in (None, True, 3, 2.5, "x", {}, [], dt.date(2024, 1, 2))]
    assert named == [
        "null", "a boolean", "an integer", "a number", "a string", "a mapping", "a list",
        "a date",
    ]  # fmt: skip
    assert type_name(b"x") == "bytes"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("env: {1X: a}", "handlers.h.env.1X: '1X' is not a valid environment variable name"),
        (
            "env: {LOGWATCHD_RULE: a}",
            "handlers.h.env.LOGWATCHD_RULE: 'LOGWATCHD_RULE': LOGWATCHD_* variables are set by "
            "logwatchd itself",
        ),
        ("env: [A]", "handlers.h.env: expected a mapping of variable name to value"),
        ("headers: {'X Y': a}", "handlers.h.headers.X Y: 'X Y' is not a valid HTTP header name"),
        (
            "header_files: {'a:b': f}",
            "handlers.h.header_files.a:b: 'a:b' is not a valid HTTP header name",
        ),
        ("headers: a", "handlers.h.headers: expected a mapping of header name to value"),
    ],
)
def test_env_and_header_names_are_checked(tmp_path: Path, setting: str, message: str) -> None:
    kind = (
        "command, argv: [/bin/true]" if setting.startswith("env") else "webhook, url: 'http://a/'"
    )
    extra = f"handlers:\n  h: {{type: {kind}, {setting}}}\n"
    assert error(tmp_path, extra).startswith(f"c.yaml:8: {message}")

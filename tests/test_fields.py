"""A rule may name only fields its sources can produce: a misspelt field is an error.

The check runs in ``logwatchd check``, at the daemon's start and reload, in ``test`` and
``explain``. A rule that names no sources (a pack) and whose fields only this config's
sources lack is idle, not wrong: a warning.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from logwatchd.config import load, load_text
from logwatchd.errors import ConfigError
from logwatchd.fields import check_fields
from tests.daemon_helpers import write_config
from tests.test_cli import APP_REGEX, app_config, logwatchd

REPO = Path(__file__).resolve().parent.parent

# Twelve lines: a custom parser (event_type, ip) and a syslog file.
BASE = f"""\
version: 1
sources:
  - {{id: app, type: file, paths: [app.log], parser: app}}
  - {{id: auth, type: file, paths: [auth.log], parser: syslog}}
  - {{id: events, type: file, paths: [events.json], parser: json}}
  - {{id: journal, type: journald, parser: journald}}
parsers:
  app:
    regex: '{APP_REGEX}'
    time_format: '%Y-%m-%d %H:%M:%S'
rules:
  - id: r
"""


# Without the json and journald sources, which give (almost) any field.
CLOSED = "".join(line + "\n" for line in BASE.splitlines() if "events" not in line).replace(
    "  - {id: journal, type: journald, parser: journald}\n", ""
)


def problems(tmp_path: Path, rule: str, base: str = BASE) -> list[str]:
    """The warnings of a config whose one rule continues with ``rule`` (line 13 on)."""
    text = base + textwrap.indent(textwrap.dedent(rule), "    ")
    return check_fields(load_text(text, "c.yaml", base_dir=str(tmp_path)))


def error(tmp_path: Path, rule: str, base: str = BASE) -> str:
    with pytest.raises(ConfigError) as info:
        problems(tmp_path, rule, base)
    return str(info.value)


def test_a_misspelt_field_is_named_with_file_line_and_a_did_you_mean(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        sources: [app]
        match: {field: eventtype, equals: SecurityBreach}
        """,
    )
    assert message == (
        "c.yaml:14: rules[0].match.field: no parser gives a field 'eventtype' (did you mean "
        "'event_type'?): source app (parser app) gives event_type, ip, message, raw, timestamp"
    )


def test_a_field_no_parser_knows_is_an_error_also_in_a_rule_without_sources(
    tmp_path: Path,
) -> None:
    message = error(tmp_path, "match: {field: progam, equals: sshd}\n", CLOSED)
    assert message.startswith(
        "c.yaml:11: rules[0].match.field: no parser gives a field 'progam' (did you mean "
        "'program'?): source app (parser app) gives event_type"
    )


@pytest.mark.parametrize(
    ("rule", "where", "name"),
    [
        (
            "match: {all: [{field: message, contains: x}, {not: {field: ipp, in: [a]}}]}\n",
            "c.yaml:14: rules[0].match.all[1].not.field",
            "ipp",
        ),
        (
            "match: {field: ip, exists: true}\ngroup_by: [ip, usr]\n",
            "c.yaml:15: rules[0].group_by",
            "usr",
        ),
        (
            "match: {field: ip, exists: true}\nthreshold: {count: 2, window: 1m, distinct: usr}\n",
            "c.yaml:15: rules[0].threshold.distinct",
            "usr",
        ),
        (
            "match: {field: ip, exists: true}\ncontext: {by: [hots, pid], remember: [ip]}\n",
            "c.yaml:15: rules[0].context.by",
            "hots",
        ),
        (
            "sequence:\n  window: 1m\n  steps:\n    - match: {field: ip, exists: true}\n"
            "    - match: {field: evnt, equals: x}\n",
            "c.yaml:18: rules[0].sequence.steps[1].match.field",
            "evnt",
        ),
    ],
)
def test_every_place_a_rule_names_a_field_is_checked(
    tmp_path: Path, rule: str, where: str, name: str
) -> None:
    message = error(tmp_path, "sources: [app]\n" + rule)
    assert message.startswith(f"{where}: ")
    assert f"a field '{name}'" in message


def test_fields_the_rule_itself_adds_and_open_parsers_pass(tmp_path: Path) -> None:
    assert (
        problems(
            tmp_path,
            """\
        sources: [auth]
        match:
          all:
            - {field: program, equals: sshd}
            - {field: message, regex: '^Failed password for (?P<user>\\S+) from (?P<ip>\\S+)'}
        group_by: [ip]
        threshold: {count: 3, window: 1m, distinct: user}
        context: {by: [host, pid], remember: [ip], distinct: {users: user}}
        """,
        )
        == []
    )
    assert problems(tmp_path, "sources: [events]\nmatch: {field: http.status, gte: 500}\n") == []
    assert (
        problems(tmp_path, "sources: [journal]\nmatch: {field: _SYSTEMD_UNIT, equals: x}\n") == []
    )
    message = error(tmp_path, "sources: [journal]\nmatch: {field: untt, equals: ssh.service}\n")
    assert "(did you mean 'unit'?)" in message
    assert "any journal field (UPPER_CASE)" in message


def test_a_pack_rule_without_sources_is_only_idle_where_no_source_feeds_it(
    tmp_path: Path,
) -> None:
    """The shipped packs on a config that follows only an application log: warnings."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"version: 1\ninclude: [{REPO}/config/rules.d/*.yaml]\n"
        "sources:\n  - {id: app, type: file, paths: [app.log], parser: app_events}\n"
    )
    warnings = check_fields(load(str(config)))
    assert any(
        "rule sshd-auth-failure names no sources and no source of this config gives 'program'" in w
        for w in warnings
    ), warnings
    proc = logwatchd("check", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "rule sshd-auth-failure names no sources" in proc.stderr
    # with a syslog file and the journal, every pack rule has a source that feeds it
    config.write_text(
        f"version: 1\ninclude: [{REPO}/config/rules.d/*.yaml]\nsources:\n"
        "  - {id: auth, type: file, paths: [auth.log], parser: syslog}\n"
        "  - {id: journal, type: journald}\n"
        "  - {id: web, type: file, paths: [access.log], parser: nginx_combined}\n"
        "  - {id: errors, type: file, paths: [error.log], parser: nginx_error}\n"
        "  - {id: apache, type: file, paths: [apache.log], parser: apache_error}\n"
        "  - {id: app, type: file, paths: [app.log], parser: app_events}\n"
    )
    assert check_fields(load(str(config))) == []


def test_check_run_and_test_refuse_a_misspelt_field(tmp_path: Path) -> None:
    cfg = app_config(tmp_path)
    cfg["rules"][0]["match"] = {"field": "eventtype", "equals": "LoginFailed"}
    cfg["rules"][0]["sources"] = ["app"]
    path = write_config(tmp_path / "c.yaml", cfg)
    (tmp_path / "app.log").write_text("2023-09-04 10:00:00 LoginFailed - IP: 192.0.2.1\n")
    expected = "no parser gives a field 'eventtype' (did you mean 'event_type'?)"
    check = logwatchd("check", "-c", str(path))
    assert check.returncode == 2
    assert expected in check.stderr
    run = logwatchd("run", "-c", str(path))
    assert run.returncode == 78
    assert expected in run.stderr
    test = logwatchd("test", "-c", str(path), str(tmp_path / "app.log"))
    assert test.returncode == 2
    assert expected in test.stderr


def test_a_branch_for_another_kind_of_source_is_fine_where_the_rule_can_still_match(
    tmp_path: Path,
) -> None:
    """The packs' "from a syslog file, or from root on the journal": a syslog source has
    neither `_TRANSPORT` nor `uid`, and the rule still matches there."""
    either = """\
        sources: [auth]
        match:
          all:
            - {field: program, equals: sshd}
            - any:
                - {field: _TRANSPORT, exists: false}
                - all: [{field: comm, equals: sshd}, {field: uid, equals: 0}]
        """
    assert problems(tmp_path, either, CLOSED) == []
    message = error(tmp_path, "sources: [auth]\nmatch: {field: comm, equals: sshd}\n", CLOSED)
    assert message.startswith(
        "c.yaml:12: rules[0].match.field: no source of this rule gives a field 'comm': "
        "source auth (parser syslog) gives host, message, pid, program, raw, timestamp"
    )
    # `not` of a missing field holds, so a rule that only excludes it can match too
    assert (
        problems(tmp_path, "sources: [auth]\nmatch: {not: {field: uid, equals: 0}}\n", CLOSED) == []
    )

"""Reading config files: includes, marks in included files, relative paths, file problems."""

from __future__ import annotations

import copy
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logwatchd.config import load, load_text
from logwatchd.errors import ConfigError

MAIN = """\
version: 1
include: [rules.d/*.yaml]
sources:
  - id: app
    type: file
    paths: [logs/app.log]
    parser: none
rules:
  - id: main-rule
    match: {field: message, contains: boom}
"""

PACK_SSH = """\
lists:
  admins: [root, admin]
rules:
  - id: ssh-root
    match: {field: user, in_list: admins}
    tags: ["fail2ban:sshd"]
"""

PACK_WEB = """\
parsers:
  web:
    regex: '(?P<ip>\\S+) (?P<path>\\S+)'
rules:
  - id: web-scan
    match: {field: path, startswith: /wp-admin}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path, **kwargs: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(str(path), **kwargs)
    return str(info.value)


def test_includes_merge_rules_lists_and_parsers_in_sorted_order(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(tmp_path / "rules.d/web.yaml", PACK_WEB)
    write(tmp_path / "rules.d/ssh.yaml", PACK_SSH)
    write(tmp_path / "rules.d/notes.txt", "not: yaml: at all: [")
    cfg = load(str(main))
    assert [rule.id for rule in cfg.rules] == ["main-rule", "ssh-root", "web-scan"]
    assert set(cfg.lists) == {"admins"}
    assert set(cfg.parsers) == {"web"}
    assert cfg.files == (
        str(main),
        str(tmp_path / "rules.d/ssh.yaml"),
        str(tmp_path / "rules.d/web.yaml"),
    )
    ssh_rule = cfg.rules[1]
    assert (ssh_rule.mark.file, ssh_rule.mark.line) == (str(tmp_path / "rules.d/ssh.yaml"), 4)
    assert ssh_rule.handlers == ("log",)  # packs name no handlers: defaults apply


def test_errors_in_an_included_file_name_that_file(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(tmp_path / "rules.d/ssh.yaml", PACK_SSH.replace("in_list: admins", "in_list: admin"))
    assert load_error(main) == (
        f"{tmp_path}/rules.d/ssh.yaml:5: rules[0].match.in_list: unknown list 'admin'; "
        "declared: admins"
    )


def test_a_glob_that_matches_nothing_is_fine(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    assert [rule.id for rule in load(str(main)).rules] == ["main-rule"]


def test_a_literal_include_must_exist(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN.replace("rules.d/*.yaml", "extra.yaml"))
    assert load_error(main) == (
        f"{tmp_path}/logwatchd.yaml:2: include[0]: no such file: {tmp_path}/extra.yaml"
    )


def test_duplicate_ids_across_files_name_both_places(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(
        tmp_path / "rules.d/dup.yaml",
        "rules:\n  - id: main-rule\n    match: {field: a, exists: true}\n",
    )
    assert load_error(main) == (
        f"{tmp_path}/rules.d/dup.yaml:2: rules[0].id: duplicate rule id 'main-rule' "
        f"(also defined at {tmp_path}/logwatchd.yaml:9)"
    )
    write(tmp_path / "rules.d/dup.yaml", "parsers:\n  web: {regex: x}\n")
    write(tmp_path / "rules.d/web.yaml", PACK_WEB)
    assert load_error(main) == (
        f"{tmp_path}/rules.d/web.yaml:2: parsers.web: duplicate parser id 'web' "
        f"(also defined at {tmp_path}/rules.d/dup.yaml:2)"
    )


def test_included_files_may_not_include(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(tmp_path / "rules.d/a.yaml", "include: [more/*.yaml]\n")
    assert load_error(main) == (
        f"{tmp_path}/rules.d/a.yaml:1: include: only the main config file may include other files"
    )


def test_included_files_may_not_set_daemon_options(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(tmp_path / "rules.d/a.yaml", "daemon: {dry_run: true}\n")
    assert load_error(main).startswith(
        f"{tmp_path}/rules.d/a.yaml:1: daemon: unknown key 'daemon'; allowed: handlers, lists,"
    )


def test_a_file_matched_twice_is_read_once(tmp_path: Path) -> None:
    main = write(
        tmp_path / "logwatchd.yaml",
        MAIN.replace("[rules.d/*.yaml]", "[rules.d/*.yaml, rules.d/ssh.yaml, '*.yaml']"),
    )
    write(tmp_path / "rules.d/ssh.yaml", PACK_SSH)
    cfg = load(str(main))
    assert [rule.id for rule in cfg.rules] == ["main-rule", "ssh-root"]


def test_relative_paths_resolve_against_the_file_that_holds_them(tmp_path: Path) -> None:
    main = write(
        tmp_path / "etc/logwatchd.yaml",
        MAIN + "daemon:\n  state_dir: state\n",
    )
    write(
        tmp_path / "etc/rules.d/out.yaml",
        "handlers:\n  out: {type: file, path: alerts.jsonl}\n"
        "sources:\n  - {id: more, type: file, paths: ['../logs/*.log'], parser: syslog}\n",
    )
    cfg = load(str(main))
    assert cfg.daemon.state_dir == str(tmp_path / "etc/state")
    assert cfg.source("app").paths == (str(tmp_path / "etc/logs/app.log"),)
    assert cfg.source("more").paths == (str(tmp_path / "etc/logs/*.log"),)
    assert cfg.handlers["out"].settings.path == str(tmp_path / "etc/rules.d/alerts.jsonl")


def test_base_dir_overrides_where_relative_paths_resolve(tmp_path: Path) -> None:
    main = write(tmp_path / "etc/logwatchd.yaml", MAIN)
    write(tmp_path / "etc/rules.d/out.yaml", "handlers:\n  out: {type: file, path: a.jsonl}\n")
    cfg = load(str(main), base_dir=str(tmp_path / "work"))
    assert cfg.source("app").paths == (str(tmp_path / "work/logs/app.log"),)
    assert cfg.handlers["out"].settings.path == str(tmp_path / "work/a.jsonl")


def test_a_relative_config_path_still_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "logwatchd.yaml", MAIN)
    monkeypatch.chdir(tmp_path)
    cfg = load("logwatchd.yaml")
    assert cfg.source("app").paths == (str(tmp_path / "logs/app.log"),)
    assert cfg.path == "logwatchd.yaml"


def test_a_relative_base_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_text(MAIN, "demo.yaml", base_dir="work")
    assert cfg.source("app").paths == (str(tmp_path / "work/logs/app.log"),)


def test_load_text_includes_relative_to_base_dir(tmp_path: Path) -> None:
    write(tmp_path / "rules.d/ssh.yaml", PACK_SSH)
    cfg = load_text(MAIN, "demo.yaml", base_dir=str(tmp_path))
    assert [rule.id for rule in cfg.rules] == ["main-rule", "ssh-root"]
    assert cfg.rules[0].mark.file == "demo.yaml"


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    assert load_error(tmp_path / "missing.yaml") == (
        f"cannot read {tmp_path}/missing.yaml: No such file or directory"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nsources: [\xff]\n")
    assert load_error(bad) == f"{bad}: not valid UTF-8 (byte 21)"
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(tmp_path / "rules.d/a.yaml", "rules:\n  - id: x\n   match: y\n")
    assert load_error(main).startswith(f"{tmp_path}/rules.d/a.yaml:3: invalid YAML:")
    write(tmp_path / "rules.d/a.yaml", "- just\n- a list\n")
    assert load_error(main) == (
        f"{tmp_path}/logwatchd.yaml:2: include: {tmp_path}/rules.d/a.yaml is not a logwatchd "
        "config (its top level is not a mapping of keys)"
    )


def test_an_empty_included_file_adds_nothing(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(tmp_path / "rules.d/empty.yaml", "# nothing here yet\n")
    assert [rule.id for rule in load(str(main)).rules] == ["main-rule"]


def test_python_tags_are_refused(tmp_path: Path) -> None:
    evil = write(tmp_path / "evil.yaml", "version: !!python/object/apply:os.system ['true']\n")
    assert load_error(evil) == (
        f"{evil}:1: version: invalid YAML: unsupported tag "
        "tag:yaml.org,2002:python/object/apply:os.system"
    )
    evil.write_text("version: !!python/name:os.system ''\n")
    assert load_error(evil).startswith(f"{evil}:1: invalid YAML: could not determine a constructor")


def test_the_shipped_rule_packs_load_with_the_example(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    packs = sorted((root / "config/rules.d").glob("*.yaml"))
    if not packs:
        pytest.skip("no rule packs shipped yet")
    text = (root / "config/logwatchd.yaml").read_text()
    assert "# include: [rules.d/*.yaml]" in text
    text = text.replace("# include: [rules.d/*.yaml]", "include: [rules.d/*.yaml]")
    cfg = load_text(text, "logwatchd.yaml", base_dir=str(root / "config"))
    assert len(cfg.files) == 1 + len(packs)
    assert len(cfg.rules) > 2
    assert os.path.isabs(cfg.daemon.state_dir)


SECRET = "s3cr3t-Token-9f2"  # noqa: S105 - a marker the errors must not show


@pytest.mark.parametrize(
    "content",
    [
        f"root:{SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",  # shadow-like
        f"password: {SECRET}\nuser: admin\n",  # another program's YAML
        f"- {SECRET}\n",
        f"[section]\ntoken = {SECRET}\n",  # an ini file
        f"!{SECRET} x\n",  # a tag YAML cannot construct
    ],
)
def test_an_included_file_that_is_not_a_config_is_named_without_its_content(
    tmp_path: Path, content: str
) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "secret.yaml").write_text(content)
    message = load_error(main)
    assert SECRET not in message
    assert "secret.yaml" in message


def test_an_included_file_without_any_config_key_is_not_a_config(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    write(tmp_path / "rules.d/other.yaml", "password: x\nuser: admin\n")
    assert load_error(main) == (
        f"{tmp_path}/logwatchd.yaml:2: include: {tmp_path}/rules.d/other.yaml is not a "
        "logwatchd config (none of its top-level keys is one of daemon, defaults, handlers, "
        "include, lists, parsers, rules, sources, version)"
    )


def test_an_include_that_reaches_a_fifo_is_an_error_not_a_hang(tmp_path: Path) -> None:
    main = write(tmp_path / "logwatchd.yaml", MAIN)
    (tmp_path / "rules.d").mkdir()
    os.mkfifo(tmp_path / "rules.d" / "pipe.yaml")
    assert load_error(main) == (
        f"{tmp_path}/logwatchd.yaml:2: include: {tmp_path}/rules.d/pipe.yaml is a FIFO, "
        "not a regular file"
    )
    literal = write(tmp_path / "literal.yaml", MAIN.replace("rules.d/*.yaml", "rules.d/pipe.yaml"))
    assert "pipe.yaml is a FIFO, not a regular file" in load_error(literal)
    os.mkdir(tmp_path / "rules.d" / "dir.yaml")
    os.unlink(tmp_path / "rules.d" / "pipe.yaml")
    assert "dir.yaml is a directory, not a regular file" in load_error(main)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9" * 5000, "x: an integer of 5000 characters is not a value here"),
        ("2023-02-30", "x: not a valid timestamp (quote it to make it text)"),
        ("!!int abc", "x: not a valid int (quote it to make it text)"),
        ("!!float abc", "x: not a valid float (quote it to make it text)"),
    ],
)
def test_a_value_yaml_cannot_hold_is_an_error_at_its_line(
    tmp_path: Path, value: str, message: str
) -> None:
    path = write(tmp_path / "c.yaml", f"version: 1\nx: {value}\n")
    assert load_error(path) == f"{path}:2: {message}"


def test_a_reload_that_meets_a_fifo_keeps_the_running_config(tmp_path: Path) -> None:
    from tests.daemon_helpers import DaemonProcess, wait_for

    (tmp_path / "logs").mkdir()
    main = write(tmp_path / "logwatchd.yaml", MAIN + "daemon: {state_dir: state}\n")
    write(tmp_path / "rules.d/ssh.yaml", PACK_SSH)
    with DaemonProcess(main) as daemon:
        daemon.wait_ready()
        os.mkfifo(tmp_path / "rules.d" / "pipe.yaml")
        daemon.proc.send_signal(signal.SIGHUP)
        failed = wait_for(
            lambda: [
                e for e in daemon.log_events() if e.get("event", "").startswith("reload failed")
            ]
        )
        assert "pipe.yaml is a FIFO, not a regular file" in failed[0]["error"]
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0


# --- fuzz: whatever the file holds, a ConfigError with a mark, never another exception -------

KEYS = [
    "version", "daemon", "defaults", "lists", "sources", "parsers", "rules", "handlers",
    "include", "id", "type", "paths", "parser", "match", "all", "any", "not", "field",
    "equals", "in", "regex", "contains", "cidr", "in_list", "exists", "gt", "threshold",
    "count", "window", "distinct", "group_by", "cooldown", "severity", "tags", "context",
    "by", "remember", "learn", "sequence", "steps", "absent", "time_format", "types",
    "example", "state_dir", "timezone", "max_line_bytes", "smtp", "host", "to", "from",
    "subject", "body", "argv", "url", "path", "mode", "rate_limit", "max", "per", "retry",
    "batch", "start_at", "journal", "file", "stdin", "email", "command", "webhook", "log",
]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(
        [1, 0, -1, "1", "10m", "1h", "none", "file", "stdin", "syslog", "json", "app",
         "journald", "email", "command", "webhook", "log", "message", "ip", "/bin/true",
         "(?P<ip>\\S+)", "(a+)+$", "[", "{{ alert.rule }}", "{{ alert.event.fields.ip }}",
         "{% for", "http://127.0.0.1/x", "%Y-%m-%d", "critical", "beginning", "*.yaml",
         "x.yaml", "missing.yaml", True, None, 1e400, 10**30]
    ),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
)  # fmt: skip
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=25,
)


def _loads_or_names_where(text: str, base: Path) -> None:
    """Load (and verify, as check and the daemon do); a failure must be a ConfigError with a
    mark: a person is told file and line, never shown a traceback."""
    from logwatchd.commands.check import verify

    error = None
    try:
        verify(load_text(text, "fuzz.yaml", base_dir=str(base)))
    except ConfigError as exc:
        error = exc
    assert error is None or (error.mark is not None and error.mark.file), str(error)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What random includes may reach: a pack, a file that is not a config, a FIFO."""
    base = tmp_path_factory.mktemp("fuzz")
    write(base / "x.yaml", PACK_SSH)
    (base / "notes.yaml").write_text("just some text\n")
    os.mkfifo(base / "pipe.yaml")
    return base


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.one_of(DOCUMENTS, st.dictionaries(st.sampled_from(KEYS), DOCUMENTS)))
def test_random_yaml_documents_load_or_give_a_config_error_with_a_mark(
    fuzz_dir: Path, document: object
) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    if isinstance(document, dict) and "version" in document:
        text = "version: 1\n" + yaml.safe_dump(
            {k: v for k, v in document.items() if k != "version"}
        )
    _loads_or_names_where(text, fuzz_dir)


VALID = {
    "version": 1,
    "daemon": {"state_dir": "state", "timezone": "UTC"},
    "lists": {"trusted": ["127.0.0.0/8"]},
    "sources": [
        {"id": "app", "type": "file", "paths": ["app.log"], "parser": "app"},
        {"id": "journal", "type": "journald", "match": ["_COMM=sshd"]},
    ],
    "parsers": {
        "app": {
            "regex": "^(?P<timestamp>\\S+ \\S+) (?P<event_type>\\w+) - IP: (?P<ip>\\S+)",
            "time_format": "%Y-%m-%d %H:%M:%S",
            "types": {"ip": "ip"},
            "example": "2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9",
        }
    },
    "rules": [
        {
            "id": "r",
            "sources": ["app"],
            "match": {
                "all": [
                    {"field": "event_type", "equals": "X"},
                    {"not": {"field": "ip", "in_list": "trusted"}},
                ]
            },
            "group_by": ["ip"],
            "threshold": {"count": 3, "window": "1m"},
            "cooldown": "10m",
            "handlers": ["mail", "run", "hook", "file"],
        }
    ],
    "handlers": {
        "mail": {"type": "email", "smtp": {"host": "localhost"}, "from": "a@example.com",
                 "to": ["b@example.com"], "subject": "{{ alert.key.ip }}"},
        "run": {"type": "command", "argv": ["/bin/true", "{{ alert.key.ip }}"]},
        "hook": {"type": "webhook", "url": "http://127.0.0.1:9/x", "rate_limit": "none"},
        "file": {"type": "file", "path": "alerts.jsonl"},
    },
}  # fmt: skip


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


@st.composite
def mutated_configs(draw: st.DrawFn) -> object:
    """The valid config above with one to three of its values replaced by random ones."""
    config = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(config)[1:]))
        parent: Any = config
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(DOCUMENTS)
    return config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=mutated_configs())
def test_a_valid_config_with_random_values_loads_or_names_where(
    fuzz_dir: Path, config: object
) -> None:
    _loads_or_names_where(yaml.safe_dump(config, allow_unicode=True), fuzz_dir)


def test_the_fuzzed_config_is_valid_before_it_is_mutated(fuzz_dir: Path) -> None:
    from logwatchd.commands.check import verify

    assert verify(load_text(yaml.safe_dump(VALID), "fuzz.yaml", base_dir=str(fuzz_dir)))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(
        alphabet=st.sampled_from(list("ab1:- \n\t[]{}'\"&*!|>#%@`,?9.\\\x00\x85\u2028")),
        max_size=120,
    )
)
def test_random_yaml_text_gives_a_config_error_with_a_mark(fuzz_dir: Path, text: str) -> None:
    _loads_or_names_where(text, fuzz_dir)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_random_bytes_as_a_config_file_give_a_config_error_with_a_mark(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "c.yaml"
    path.write_bytes(data)
    error = None
    try:
        load(str(path))
    except ConfigError as exc:
        error = exc
    assert error is None or (error.mark is not None and error.mark.file == str(path)), str(error)

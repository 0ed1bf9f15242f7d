"""Sandboxed templates: only the data is reachable, undefined is an error, log data is data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from logwatchd.alerts import sample_alert
from logwatchd.config.handler_settings import CommandSettings, EmailSettings, WebhookSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import ConfigError, Mark
from logwatchd.templates import (
    HostInfo,
    TemplateError,
    Templates,
    check_templates,
    sample_for,
)
from tests.daemon_helpers import DaemonProcess, wait_for, write_config
from tests.smtp_helpers import Mailbox, make_alert, smtp_server

HOST = HostInfo(name="web1", fqdn="web1.example.com")


def render(source: str, alert: dict | None = None) -> str:
    templates = Templates()
    return templates.render(templates.compile(source, "t"), alert or sample_alert(), HOST)


def test_renders_alert_and_host() -> None:
    text = render("{{ alert.rule }} {{ alert.key.ip }} on {{ host.name }} ({{ host.fqdn }})")
    assert text == "sample-rule 203.0.113.9 on web1 (web1.example.com)"


def test_log_data_is_never_template_source() -> None:
    alert = make_alert(1, key={"user": "{{ 7 * 7 }}{% raw %}"})
    assert render("u={{ alert.key.user }}", alert) == "u={{ 7 * 7 }}{% raw %}"


def test_undefined_field_is_an_error_naming_the_template() -> None:
    with pytest.raises(TemplateError) as caught:
        render("{{ alert.key.user }}")
    assert caught.value.label == "t"
    assert "user" in caught.value.message


@pytest.mark.parametrize(
    "source",
    [
        "{{ alert.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ alert.update({'rule': 'x'}) }}",
        "{{ alert.key.clear() }}",
        "{{ range(10) | list }}",
        "{{ lipsum() }}",
        "{{ cycler(1, 2).next() }}",
        "{{ namespace(a=1).a }}",
        "{{ config }}",
        "{{ self.__init__.__globals__ }}",
    ],
)
def test_sandbox_reaches_nothing_but_the_data(source: str) -> None:
    alert = sample_alert()
    with pytest.raises(TemplateError):
        render(source, alert)
    assert alert == sample_alert()


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError) as caught:
        Templates().compile("{{ alert.rule ", "handlers.m.subject")
    assert caught.value.label == "handlers.m.subject"


def test_each_source_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    templates = Templates()
    calls: list[str] = []
    real = templates._env.from_string

    def counting(source: str) -> object:
        calls.append(source)
        return real(source)

    monkeypatch.setattr(templates._env, "from_string", counting)
    first = templates.compile("{{ alert.rule }}")
    second = templates.compile("{{ alert.rule }}")
    for _ in range(3):
        templates.render(first, sample_alert(), HOST)
        templates.render(second, sample_alert(), HOST)
    assert calls == ["{{ alert.rule }}"]


def test_digest_templates_see_every_alert() -> None:
    templates = Templates()
    alerts = [make_alert(i) for i in range(3)]
    tpl = templates.compile("{% for a in alerts %}{{ a.key.ip }} {% endfor %}")
    assert templates.render(tpl, alerts[0], HOST, alerts) == "203.0.113.0 203.0.113.1 203.0.113.2 "


def test_sample_for_group_by_fields() -> None:
    alert = sample_for(["user", "ip"])
    assert alert["key"] == {"user": "sample-user", "ip": "203.0.113.9"}
    assert alert["event"]["fields"]["user"] == "sample-user"
    assert sample_for([])["key"] == {}
    assert sample_for()["key"] == sample_alert()["key"] == {"ip": "203.0.113.9"}


def test_check_names_the_handler_key_and_its_mark() -> None:
    settings = EmailSettings(to=("a@example.com",), subject="{{ alert.key.user }}", body="ok")
    marks = {"subject": Mark("conf.yaml", 12)}
    cfg = HandlerConfig(name="mail", type="email", settings=settings, marks=marks)
    with pytest.raises(ConfigError) as caught:
        check_templates(cfg, templates=Templates(), host=HOST)
    assert str(caught.value).startswith("conf.yaml:12: handlers.mail.subject: undefined value")
    rendered = check_templates(cfg, templates=Templates(), host=HOST, key_fields=["user"])
    assert rendered == 2
    with pytest.raises(ConfigError):
        check_templates(cfg, templates=Templates(), host=HOST, key_fields=[])


def test_check_renders_argv_and_webhook_templates() -> None:
    argv = ("/usr/sbin/nft", "add", "{{ alert.key.ip }}", "{{ alert.nope }}")
    ban = HandlerConfig(name="ban", type="command", settings=CommandSettings(argv))
    with pytest.raises(ConfigError) as caught:
        check_templates(ban, templates=Templates(), host=HOST)
    assert caught.value.key == "handlers.ban.argv[3]"
    hook = WebhookSettings(
        "http://x", headers={"X-A": "{{ host.name }}"}, body="{{ alert | tojson }}"
    )
    cfg = HandlerConfig(name="hook", type="webhook", settings=hook)
    assert check_templates(cfg, templates=Templates(), host=HOST) == 2


# --- fields of the rule, at check time and at run time ------------------------------------

OPTIONAL_USER = (
    r"^(?P<timestamp>\S+ \S+) (?P<event_type>\w+) - IP: (?P<ip>\S+)(?: user=(?P<user>\S+))?"
)


def user_config(tmp_path: Path, subject: str, smtp_port: int = 25) -> dict[str, Any]:
    return {
        "version": 1,
        "daemon": {"state_dir": str(tmp_path / "state"), "timezone": "UTC"},
        "sources": [
            {"id": "app", "type": "file", "paths": [str(tmp_path / "app.log")], "parser": "app"}
        ],
        "parsers": {"app": {"regex": OPTIONAL_USER, "time_format": "%Y-%m-%d %H:%M:%S"}},
        "rules": [
            {
                "id": "breach",
                "sources": ["app"],
                "match": {"field": "event_type", "equals": "SecurityBreach"},
                "group_by": ["ip"],
                "handlers": ["mail"],
            }
        ],
        "handlers": {
            "mail": {
                "type": "email",
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "tls": "none"},
                "from": "logwatchd@example.com",
                "to": ["ops@example.com"],
                "subject": subject,
                "rate_limit": "none",
            }
        },
    }


def check(tmp_path: Path, subject: str) -> subprocess.CompletedProcess[str]:
    path = write_config(tmp_path / "c.yaml", user_config(tmp_path, subject))
    return subprocess.run(
        [sys.executable, "-m", "logwatchd", "check", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_renders_a_template_with_the_fields_the_parser_gives(tmp_path: Path) -> None:
    proc = check(tmp_path, "breach by {{ alert.event.fields.user }} from {{ alert.key.ip }}")
    assert proc.returncode == 0, proc.stderr
    assert "templates rendered" in proc.stdout


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        (
            "{{ alert.event.fields.usr }}",
            "handlers.mail.subject: no parser gives a field 'usr' (did you mean 'user'?): "
            "source app (parser app) gives event_type, ip, message, raw, timestamp, user "
            "(rule breach uses this handler)",
        ),
        (
            "{% for a in alerts %}{{ a.event.fields['usr'] }}{% endfor %}",
            "handlers.mail.subject: no parser gives a field 'usr' (did you mean 'user'?)",
        ),
        (
            "{{ alert.key.user }}",
            "handlers.mail.subject: alert.key holds the rule's group_by fields only, and rule "
            "breach groups by ip: no 'user'",
        ),
    ],
)
def test_check_names_a_template_field_no_source_gives_without_jinja_jargon(
    tmp_path: Path, subject: str, message: str
) -> None:
    proc = check(tmp_path, subject)
    assert proc.returncode == 2
    assert message in proc.stderr, proc.stderr
    assert "dict object" not in proc.stderr


def test_a_field_one_line_lacks_renders_empty_in_the_mail_and_is_logged_once(
    tmp_path: Path,
) -> None:
    box = Mailbox()
    log = tmp_path / "app.log"
    log.write_text("")
    subject = "breach by {{ alert.event.fields.user }} from {{ alert.key.ip }}"
    with smtp_server(box) as port:
        path = write_config(tmp_path / "c.yaml", user_config(tmp_path, subject, port))
        with DaemonProcess(path) as daemon:
            daemon.wait_ready()
            with log.open("a") as handle:
                handle.write("2026-01-05 10:00:00 SecurityBreach - IP: 192.0.2.1 user=alice\n")
                handle.write("2026-01-05 10:00:01 SecurityBreach - IP: 192.0.2.2\n")
                handle.write("2026-01-05 10:00:02 SecurityBreach - IP: 192.0.2.3\n")
            wait_for(lambda: len(box.snapshot()) == 3)
            assert daemon.terminate() == 0
            events = daemon.log_events()
    subjects = sorted(str(m.message["Subject"]) for m in box.snapshot())
    assert subjects == [
        "breach by  from 192.0.2.2", "breach by  from 192.0.2.3", "breach by alice from 192.0.2.1"
    ]  # fmt: skip
    missing = [e for e in events if e.get("event", "").startswith("a template value")]
    assert [(e["handler"], e["field"]) for e in missing] == [("mail", "user")]
    assert not [e for e in events if "delivery failed" in e.get("event", "")]

"""Alert ids: stable for the same host, rule, key and first line; different across hosts."""

from __future__ import annotations

from logwatchd.alerts import alert_id
from logwatchd.clock import ManualClock
from logwatchd.config import load_text
from logwatchd.events import Event, Line
from logwatchd.rules import Engine

CONFIG = """\
version: 1
sources: [{id: app, type: stdin, parser: none}]
rules:
  - id: fail
    match: {field: message, regex: 'fail from (?P<ip>\\S+)'}
    group_by: [ip]
"""


def fire(host: str) -> str:
    config = load_text(CONFIG, "c.yaml", base_dir="/")
    engine = Engine(config.rules, {}, host=host, max_keys_per_rule=10, clock=ManualClock(0.0))
    line = Line("app", "fail from 203.0.113.9", 100.0, "fp:abc:0")
    event = Event(line, {"message": line.raw, "raw": line.raw}, 100.0)
    [alert] = engine.process(event)
    assert alert.host == host
    return alert.id


def test_the_same_lines_at_the_same_offsets_on_two_hosts_give_two_ids() -> None:
    """A fleet stream drops a repeated id: the second host's alert must not look like one."""
    assert fire("web1") != fire("web2")


def test_an_alert_rebuilt_on_the_same_host_keeps_its_id() -> None:
    assert fire("web1") == fire("web1")
    assert fire("web1") == alert_id("fail", {"ip": "203.0.113.9"}, "fp:abc:0", "web1")

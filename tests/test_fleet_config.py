"""The fleet's configuration: ``daemon.host``, the ``nats`` handler and the ``nats`` source."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logwatchd.config import load, load_text
from logwatchd.config.model import Config
from logwatchd.errors import ConfigError
from logwatchd.templates import HostInfo

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


# --- daemon.host ----------------------------------------------------------------------------


def test_daemon_host_names_this_host_and_defaults_to_the_short_host_name(tmp_path: Path) -> None:
    assert config(tmp_path, "daemon:\n  host: web-1_a\n").daemon.host == "web-1_a"
    assert config(tmp_path).daemon.host is None
    assert HostInfo.local("web1").name == "web1"
    assert HostInfo.local().name == HostInfo.local(None).name
    assert "." not in HostInfo.local().name


@pytest.mark.parametrize("name", ["web1.example.com", "web 1", "web*", "-web", "a" * 64, ""])
def test_daemon_host_is_one_subject_token(tmp_path: Path, name: str) -> None:
    message = error(tmp_path, f"daemon:\n  host: '{name}'\n")
    assert message.startswith("c.yaml:8: daemon.host: ")


# --- the example configs ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fleet-host.yaml", "fleet-aggregator.yaml"])
def test_the_example_fleet_configs_pass_check(name: str) -> None:
    pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[fleet]')")
    path = Path(__file__).parent.parent / "config" / name
    result = subprocess.run(
        [sys.executable, "-m", "logwatchd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {path}: ")


def test_the_example_host_publishes_every_failure_and_bans_on_decision() -> None:
    config = load(str(Path(__file__).parent.parent / "config" / "fleet-host.yaml"))
    rules = {rule.id: rule for rule in config.rules}
    assert rules["sshd-failure"].threshold is None
    assert rules["sshd-failure"].handlers == ("fleet",)
    assert rules["fleet-ban"].handlers == ("ban",)
    decisions = config.source("decisions")
    assert decisions.nats is not None
    assert decisions.nats.durable == f"decisions-{HostInfo.local().name}"[:64]
    aggregator = load(str(Path(__file__).parent.parent / "config" / "fleet-aggregator.yaml"))
    [fleet_rule] = aggregator.rules
    assert fleet_rule.threshold is not None and fleet_rule.threshold.distinct == "host"

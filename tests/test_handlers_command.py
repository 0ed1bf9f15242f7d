"""The command handler runs real programs: one literal argument per argv element, no shell."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from logwatchd.config.handler_settings import CommandSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError, Mark
from logwatchd.handlers import build_handler
from logwatchd.handlers.command import KILL_GRACE, CommandHandler
from logwatchd.templates import HostInfo, Templates
from tests.fd_helpers import out_of_descriptors
from tests.smtp_helpers import make_alert

HOST = HostInfo(name="web1", fqdn="web1.example.com")

RECORDER = """
import json, os, sys
data = {"argv": sys.argv[2:], "env": dict(os.environ), "stdin": sys.stdin.read()}
with open(sys.argv[1], "w") as out:
    json.dump(data, out)
"""

STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {child}")
time.sleep(60)
"""


def command(
    argv: list[str], *, timeout: float = 10.0, kill_grace: float = KILL_GRACE, **settings: Any
) -> CommandHandler:
    cfg = HandlerConfig(
        name="ban",
        type="command",
        timeout=timeout,
        settings=CommandSettings(tuple(argv), **settings),
    )
    return CommandHandler(cfg, templates=Templates(), host=HOST, kill_grace=kill_grace)


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    return script, tmp_path / "out.json"


def recorded(out: Path) -> dict[str, Any]:
    return json.loads(out.read_text())


def test_each_hostile_field_is_one_literal_argument(
    recorder: tuple[Path, Path], tmp_path: Path
) -> None:
    script, out = recorder
    target = tmp_path / "pwned"
    hostile = [
        f"$(touch {target})", f"`touch {target}`", f"; touch {target}", f"| touch {target}",
        f"&& touch {target}", "\"double\" 'single'", "-rf", "--help", "nul\x00byte",
        "\r\nBcc: evil@example.com", "A" * 100_000, "",
    ]  # fmt: skip
    handler = command([sys.executable, str(script), str(out), "{{ alert.key.user }}", "fixed"])
    for value in hostile:
        handler.send([make_alert(1, key={"user": value})])
        expected = value.replace("\x00", "\ufffd")
        assert recorded(out)["argv"] == [expected, "fixed"]
    assert not target.exists()


def test_environment_is_scrubbed(
    recorder: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, out = recorder
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/logwatchd.service")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    handler = command([sys.executable, str(script), str(out)], env={"LANG": "C.UTF-8"})
    handler.send([make_alert(3, key={"ip": "192.0.2.1", "user-name": "x\x00y"})])
    env = recorded(out)["env"]
    env.pop("LC_CTYPE", None)  # the Python child may set it itself (PEP 538)
    assert env == {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "LOGWATCHD_HANDLER": "ban",
        "LOGWATCHD_RULE": "ssh-bruteforce",
        "LOGWATCHD_SEVERITY": "high",
        "LOGWATCHD_ALERT_ID": f"{3:032x}",
        "LOGWATCHD_KEY_IP": "192.0.2.1",
        "LOGWATCHD_KEY_USER_NAME": "x\ufffdy",
    }


def test_stdin_json_passes_the_alert(recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    alert = make_alert(4, raw='line with "quotes" and \n newline')
    command([sys.executable, str(script), str(out)], stdin="json").send([alert])
    assert json.loads(recorded(out)["stdin"]) == alert


def test_digest_runs_once_per_alert(recorder: tuple[Path, Path], tmp_path: Path) -> None:
    log = tmp_path / "calls"
    script = tmp_path / "append.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\n")
    handler = command([sys.executable, str(script), str(log), "{{ alert.key.ip }}"])
    handler.send([make_alert(i) for i in range(3)])
    assert log.read_text().split() == ["203.0.113.0", "203.0.113.1", "203.0.113.2"]


def test_nonzero_exit_is_retryable_and_logs_stderr_tail(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\nsys.stderr.write('x' * 10000 + 'nft: no such set\\n')\nsys.exit(3)\n"
    )
    with capture_logs() as logs, pytest.raises(DeliveryError) as caught:
        command([sys.executable, str(script)]).send([make_alert(5)])
    assert not caught.value.permanent
    assert "status 3" in str(caught.value)
    [entry] = [e for e in logs if e["event"] == "command failed"]
    assert entry["handler"] == "ban"
    assert entry["exit_status"] == 3
    assert entry["stderr"].endswith("nft: no such set\n")
    assert len(entry["stderr"]) <= 2048


def _gone(pid: int) -> bool:
    """Dead, or a zombie waiting for a reaper (its group was killed all the same)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_timeout_kills_the_process_group_with_its_children(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    pids = tmp_path / "pids"
    handler = command([sys.executable, str(script), str(pids)], timeout=1.0, kill_grace=0.3)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        handler.send([make_alert(6)])
    assert "timed out" in str(caught.value)
    assert time.monotonic() - started < 10
    leader, child = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 10
    while not (_gone(leader) and _gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(leader)
    assert _gone(child)


def test_oversized_argument_fails_cleanly_and_permanently(recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    handler = command([sys.executable, str(script), str(out), "{{ alert.event.raw }}"])
    with pytest.raises(DeliveryError) as caught:
        handler.send([make_alert(7, raw="B" * 300_000)])
    assert caught.value.permanent
    assert not out.exists()


def test_argv_that_cannot_render_runs_nothing_and_fails_permanently(
    recorder: tuple[Path, Path],
) -> None:
    script, out = recorder
    cfg = HandlerConfig(
        name="ban", type="command",
        settings=CommandSettings((sys.executable, str(script), str(out), "{{ alert.key.ip }}")),
        marks={"argv[3]": Mark("conf.yaml", 31)},
    )  # fmt: skip
    handler = build_handler(cfg, templates=Templates(), host=HOST)
    with pytest.raises(DeliveryError) as caught:
        handler.send([make_alert(1, key={"user": "root"})])
    assert caught.value.permanent
    assert "conf.yaml:31: handlers.ban.argv[3]: undefined value" in str(caught.value)
    assert not out.exists()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_renders_to_exactly_one_argument(text: str) -> None:
    handler = command(["/bin/true", "--", "{{ alert.key.user }}", "x{{ alert.key.user }}x"])
    argv = handler.argv(make_alert(1, key={"user": text}))
    clean = text.replace("\x00", "\ufffd")
    assert argv == ["/bin/true", "--", clean, f"x{clean}x"]
    assert all("\x00" not in arg for arg in argv)


def test_out_of_descriptors_is_retried_not_permanent(recorder: tuple[Path, Path]) -> None:
    script, out = recorder
    handler = command([sys.executable, str(script), str(out), "x"])
    with out_of_descriptors(), pytest.raises(DeliveryError) as info:
        handler.send([make_alert()])
    assert not info.value.permanent
    assert "Too many open files" in str(info.value)
    handler.send([make_alert()])  # descriptors back: it runs
    assert recorded(out)["argv"] == ["x"]

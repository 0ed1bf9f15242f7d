"""The daemon's own log file inside a followed directory is never read, also once renamed.

``run --daemon --log-file`` with ``--log-level debug``: each alert writes debug lines to the
log, and a source that read them would alert on them, without end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_helpers import read_jsonl, wait_for, write_config


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Pids of the detached daemons a test started: each is stopped afterwards, by pid."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_daemons_own_log_is_not_read_even_after_a_rename(
    tmp_path: Path, daemons: list[int]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    sink = tmp_path / "alerts.jsonl"
    source = {"id": "all", "type": "file", "paths": [str(logs / "*.log")], "parser": "none"}
    source["start_at"] = "beginning"
    conf = write_config(
        tmp_path / "logwatchd.yaml",
        {
            "version": 1,
            "daemon": {"state_dir": str(tmp_path / "state"), "commit_interval": "100ms"},
            "sources": [source],
            "rules": [{"id": "every-line", "match": {"field": "message", "exists": True}}],
            "defaults": {"handlers": ["sink"]},
            "handlers": {"sink": {"type": "file", "path": str(sink)}},
        },
    )
    own = logs / "logwatchd.log"
    pidfile = tmp_path / "logwatchd.pid"
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "NOTIFY_SOCKET")}
    subprocess.run(
        [sys.executable, "-m", "logwatchd", "--log-level", "debug", "--log-format", "json",
         "run", "-c", str(conf), "--daemon", "--pidfile", str(pidfile), "--log-file", str(own)],
        check=True, env=env, timeout=30,
    )  # fmt: skip
    daemons.append(wait_for(lambda: pidfile.exists() and int(pidfile.read_text() or 0)))
    app = logs / "app.log"
    app.write_text("one\ntwo\n")
    wait_for(lambda: len(read_jsonl(sink)) >= 2, timeout=20)
    wait_for(lambda: '"alert fired"' in own.read_text(), timeout=20)  # debug lines: in a *.log
    own.rename(logs / "logwatchd-old.log")  # logrotate's rename: the daemon writes on to it
    with open(app, "a") as fh:
        fh.write("three\n")
    wait_for(lambda: "three" in [a["event"]["raw"] for a in read_jsonl(sink)], timeout=20)
    with open(app, "a") as fh:  # one more round: what the daemon logged meanwhile was seen too
        fh.write("four\n")
    wait_for(lambda: "four" in [a["event"]["raw"] for a in read_jsonl(sink)], timeout=20)
    alerts = read_jsonl(sink)
    assert [a["event"]["raw"] for a in alerts] == ["one", "two", "three", "four"]
    assert {a["event"]["path"] for a in alerts} == {str(app)}
    os.kill(daemons[0], signal.SIGTERM)
    wait_for(lambda: not pidfile.exists(), timeout=20)

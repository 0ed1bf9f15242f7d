"""The daemon killed with SIGKILL while its file is moved where no pattern looks, then started.

A real daemon subprocess; the ``file`` handler is the sink and one rule matches every line,
so each line read becomes one alert: every line must alert exactly once, in order per file.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config
from tests.sources_helpers import Writer, logrotate

pytestmark = pytest.mark.slow


def config(root: Path, **source: Any) -> Path:
    return write_config(
        root / "logwatchd.yaml",
        {
            "version": 1,
            "daemon": {
                "state_dir": str(root / "state"),
                "commit_interval": "100ms",
                "stat_interval": "100ms",
            },
            "sources": [
                {
                    "id": "app",
                    "type": "file",
                    "paths": [str(root / "logs" / "app.log")],
                    "parser": "numbered",
                    "start_at": "beginning",
                    **source,
                }
            ],
            "parsers": {"numbered": {"regex": r"^(?P<tag>\S+) (?P<n>\d+) "}},
            "rules": [{"id": "every-line", "match": {"field": "n", "exists": True}}],
            "defaults": {"handlers": ["sink"]},
            "handlers": {"sink": {"type": "file", "path": str(root / "alerts.jsonl")}},
        },
    )


def delivered(root: Path) -> list[tuple[str, int]]:
    out = []
    for alert in read_jsonl(root / "alerts.jsonl"):
        tag, number = alert["event"]["raw"].split()[:2]
        out.append((tag, int(number)))
    return out


def assert_once_in_order(root: Path, written: dict[str, int]) -> None:
    expected = {(tag, n) for tag, count in written.items() for n in range(1, count + 1)}
    wait_for(lambda: expected <= set(delivered(root)), timeout=30)
    got = delivered(root)
    repeated = [k for k, c in Counter(got).items() if c > 1]
    assert repeated == [], f"alerted twice: {repeated[:10]}"
    assert set(got) == expected
    for tag in written:
        numbers = [n for t, n in got if t == tag]
        assert numbers == sorted(numbers), f"{tag}: out of order"


def kill_mid_write(daemon: DaemonProcess, root: Path, writer: Writer) -> None:
    """Lines the daemon alerted on, then lines written just before the kill."""
    writer.write(100)
    wait_for(lambda: ("line", 100) in delivered(root), timeout=20)
    writer.write(150)
    daemon.kill()


def test_a_file_renamed_while_down_to_a_name_no_pattern_knows_is_drained_first(
    tmp_path: Path,
) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    writer = Writer(str(log))
    conf = config(tmp_path)
    with DaemonProcess(conf) as daemon:
        daemon.wait_ready()
        kill_mid_write(daemon, tmp_path, writer)
    log.rename(tmp_path / "logs" / "app.log.k1.old")
    writer.write(100)  # the application still writes to the file it holds
    fresh = Writer(str(log), tag="new")
    fresh.write(50)
    with DaemonProcess(conf) as daemon:
        daemon.wait_ready()
        assert_once_in_order(tmp_path, {"line": 350, "new": 50})
        paths = {a["event"]["raw"].split()[0]: a["event"]["path"] for a in read_jsonl(
            tmp_path / "alerts.jsonl")[100:]}  # fmt: skip
        assert paths == {"line": str(tmp_path / "logs" / "app.log.k1.old"), "new": str(log)}


@pytest.mark.skipif(not Path("/usr/sbin/logrotate").exists(), reason="needs logrotate")
def test_a_file_logrotate_moved_to_its_olddir_while_down_is_drained_first(
    tmp_path: Path,
) -> None:
    (tmp_path / "logs" / "old").mkdir(parents=True)
    log = tmp_path / "logs" / "app.log"
    writer = Writer(str(log))
    conf = config(tmp_path, olddir=str(tmp_path / "logs" / "old"))
    with DaemonProcess(conf) as daemon:
        daemon.wait_ready()
        kill_mid_write(daemon, tmp_path, writer)
    olddir = f"olddir {tmp_path / 'logs' / 'old'}"
    (tmp_path / "logrotate").mkdir()
    argv = logrotate(str(tmp_path / "logrotate"), str(log), [olddir, "create"])
    subprocess.run(argv, check=True, capture_output=True)
    assert (tmp_path / "logs" / "old" / "app.log.1").exists()
    writer.write(100)  # before the application is told to reopen
    writer.reopen()
    writer.write(50)
    with DaemonProcess(conf) as daemon:
        daemon.wait_ready()
        assert_once_in_order(tmp_path, {"line": 400})

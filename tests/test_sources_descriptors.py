"""More files than descriptors: the daemon under a low RLIMIT_NOFILE follows a glob of 5,000
files, holding at most its share open; every line is read and every alert delivered, by the
``file`` handler and by a ``command`` handler that needs descriptors of its own."""

from __future__ import annotations

import resource
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config

pytestmark = pytest.mark.slow

FILES = 5_000
LIMIT = 256
COMMANDED = 40  # files whose line also runs the command handler (under any default cap)


APPEND_TAG = ["/bin/sh", "-c", 'echo "$0" >> "$1"', "{{ alert.event.fields.tag }}"]


def complete_lines(path: Path) -> list[str]:
    """The lines written so far, without one still being written."""
    if not path.exists():
        return []
    return [t[:-1] for t in path.read_text().splitlines(keepends=True) if t.endswith("\n")]


def low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def config(root: Path) -> Path:
    return write_config(
        root / "logwatchd.yaml",
        {
            "version": 1,
            "daemon": {"state_dir": str(root / "state")},
            "sources": [
                {
                    "id": "many",
                    "type": "file",
                    "paths": [str(root / "logs" / "*.log")],
                    "parser": "numbered",
                    "start_at": "beginning",
                }
            ],
            "parsers": {"numbered": {"regex": r"^(?P<tag>\S+) (?P<n>\d+) "}},
            "rules": [
                {"id": "every-line", "match": {"field": "n", "exists": True}},
                {
                    "id": "some-lines",
                    "match": {"field": "tag", "endswith": "0"},
                    "handlers": ["run"],
                },
            ],
            "defaults": {"handlers": ["sink"]},
            "handlers": {
                "sink": {"type": "file", "path": str(root / "alerts.jsonl")},
                "run": {"type": "command", "argv": [*APPEND_TAG, str(root / "ran.txt")]},
            },
        },
    )


def test_five_thousand_files_under_a_limit_of_256_descriptors(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    # every 125th file's tag ends in 0: its line runs the command too
    tags = [f"f{i:04d}{'0' if i % (FILES // COMMANDED) == 0 else '1'}" for i in range(FILES)]
    for tag in tags:
        (logs / f"{tag}.log").write_text(f"{tag} 1 the only line\n")
    conf = config(tmp_path)
    with DaemonProcess(conf, preexec_fn=low_limit) as daemon:
        started = time.monotonic()
        daemon.wait_ready(timeout=60)
        wait_for(lambda: len(read_jsonl(tmp_path / "alerts.jsonl")) >= FILES, timeout=120)
        ran = tmp_path / "ran.txt"
        wait_for(lambda: len(complete_lines(ran)) >= COMMANDED, timeout=60)
        took = time.monotonic() - started
        alerts = read_jsonl(tmp_path / "alerts.jsonl")
        got = Counter((a["event"]["raw"].split()[0], a["rule"]) for a in alerts)
        assert got == {(tag, "every-line"): 1 for tag in tags}
        assert Counter(complete_lines(ran)) == {t: 1 for t in tags if t.endswith("0")}
        stopped = time.monotonic()
        assert daemon.terminate(timeout=30) == 0
        shutdown = time.monotonic() - stopped
        log = daemon.stderr()
    assert "Too many open files" not in log
    assert "delivery failed" not in log
    assert shutdown < 5, f"shutdown took {shutdown:.1f} s"
    print(f"\n{FILES} files, {LIMIT} descriptors: read in {took:.1f} s, stop {shutdown:.2f} s")

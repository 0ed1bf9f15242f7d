"""The file handler appends one JSON line per alert and fsyncs before it counts as delivered."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from logwatchd.config.handler_settings import FileSettings
from logwatchd.config.model import HandlerConfig
from logwatchd.errors import DeliveryError
from logwatchd.handlers import build_handler
from logwatchd.handlers.file import tail_ids
from logwatchd.templates import HostInfo, Templates
from tests.fd_helpers import out_of_descriptors
from tests.smtp_helpers import make_alert

HOST = HostInfo(name="web1", fqdn="web1.example.com")


def file_handler(path: str, **settings: Any) -> Any:
    cfg = HandlerConfig(name="alerts-file", type="file", settings=FileSettings(path, **settings))
    return build_handler(cfg, templates=Templates(), host=HOST)


def test_appends_one_json_line_per_alert_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    hostile = make_alert(1, key={"user": 'a\nb\r\n{"id": "forged"}\u2028'}, raw="x\x00y\n")
    handler = file_handler(str(path), mode=0o600)
    handler.send([hostile])
    handler.send([make_alert(2), make_alert(3)])
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    decoded = [json.loads(line) for line in lines[:-1]]
    assert decoded == [hostile, make_alert(2), make_alert(3)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fsync_happens_before_send_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alerts.jsonl"
    synced: list[bytes] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(path.read_bytes())

    monkeypatch.setattr(os, "fsync", recording_fsync)
    file_handler(str(path)).send([make_alert(1)])
    assert len(synced) == 1
    assert json.loads(synced[0]) == make_alert(1)


def test_missing_directory_is_a_retryable_failure(tmp_path: Path) -> None:
    handler = file_handler(str(tmp_path / "later" / "alerts.jsonl"))
    with pytest.raises(DeliveryError) as caught:
        handler.send([make_alert(1)])
    assert not caught.value.permanent
    (tmp_path / "later").mkdir()
    handler.send([make_alert(1)])
    assert (tmp_path / "later" / "alerts.jsonl").exists()


def test_rotation_between_alerts_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    handler = file_handler(str(path))
    handler.send([make_alert(1)])
    path.rename(tmp_path / "alerts.jsonl.1")
    handler.send([make_alert(2)])
    assert json.loads(path.read_text())["id"] == make_alert(2)["id"]


def ids_in(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_an_alert_written_before_is_not_written_again_even_after_a_restart(
    tmp_path: Path,
) -> None:
    """What a kill -9 between the fsync and the outbox update hands over again is skipped."""
    path = tmp_path / "alerts.jsonl"
    first = file_handler(str(path))
    first.send([make_alert(1), make_alert(2)])
    first.send([make_alert(2), make_alert(3)])  # the same process: remembered
    after_restart = file_handler(str(path))  # a new process: read back from the file's tail
    with capture_logs() as logs:
        after_restart.send([make_alert(2), make_alert(3), make_alert(4)])
    assert ids_in(path) == [make_alert(n)["id"] for n in (1, 2, 3, 4)]
    assert [(e["event"], e["count"]) for e in logs] == [
        ("alerts already in the file are not written again", 2)
    ]


def test_an_id_spelled_inside_log_text_does_not_suppress_that_alert(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    target = make_alert(7)
    forged = f'\n{{"id": "{target["id"]}"}}\n"id": "{target["id"]}"'
    file_handler(str(path)).send([make_alert(1, key={"user": forged}, raw=forged)])
    file_handler(str(path)).send([target])
    assert ids_in(path) == [make_alert(1)["id"], target["id"]]


def test_a_rotated_file_is_not_read_back_and_many_alerts_take_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "alerts.jsonl"
    file_handler(str(path)).send([make_alert(1)])
    path.rename(tmp_path / "alerts.jsonl.1")
    syncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd))[1])
    file_handler(str(path)).send([make_alert(n) for n in range(1, 101)])
    assert ids_in(path) == [make_alert(n)["id"] for n in range(1, 101)]
    assert len(syncs) == 1


def test_reading_back_never_blocks_on_a_fifo_or_reads_a_non_file(tmp_path: Path) -> None:
    fifo = tmp_path / "alerts.fifo"
    os.mkfifo(fifo)
    found: list[list[str]] = []
    reader = threading.Thread(target=lambda: found.append(tail_ids(str(fifo))), daemon=True)
    reader.start()
    reader.join(5)
    assert found == [[]]
    assert tail_ids("/dev/null") == []
    assert tail_ids(str(tmp_path / "missing.jsonl")) == []


# --- the log handler: the other local sink (its tests live here, next to the file's) -------


@pytest.mark.parametrize(
    ("severity", "level", "priority"),
    [("critical", "critical", 2), ("high", "error", 3), ("medium", "warning", 4),
     ("low", "info", 5), ("info", "info", 6)],
)  # fmt: skip
def test_log_handler_writes_alert_with_priority(severity: str, level: str, priority: int) -> None:
    from structlog.testing import capture_logs

    cfg = HandlerConfig(name="log", type="log")
    handler = build_handler(cfg, templates=Templates(), host=HOST)
    alert = make_alert(1, severity=severity)
    with capture_logs() as logs:
        handler.send([alert, make_alert(2, severity=severity)])
    assert len(logs) == 2
    entry = logs[0]
    assert entry["event"] == "alert"
    assert entry["log_level"] == level
    assert entry["priority"] == priority
    assert entry["rule"] == "ssh-bruteforce"
    assert entry["key"] == {"ip": "203.0.113.1"}
    assert entry["count"] == 5
    assert entry["source"] == "auth"


def test_out_of_descriptors_is_retried_and_forgets_no_written_id(tmp_path: Path) -> None:
    """Reading back the ids written before must not come out empty for lack of descriptors:
    the alerts already in the file would be written again."""
    path = tmp_path / "alerts.jsonl"
    alert = make_alert()
    file_handler(str(path)).send([alert])
    handler = file_handler(str(path))  # a restarted daemon: reads the ids back first
    with out_of_descriptors(), pytest.raises(DeliveryError) as info:
        handler.send([alert])
    assert not info.value.permanent
    handler.send([alert])
    assert ids_in(path) == [alert["id"]]

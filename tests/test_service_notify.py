"""sd_notify against a real AF_UNIX datagram socket, as systemd's manager would listen."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logwatchd.service import notify


class Listener:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def receive(self) -> list[str]:
        data = self.sock.recv(65536)
        return data.decode("utf-8").split("\n")

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(65536)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False


@pytest.fixture(params=["path", "abstract"])
def listener(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    if request.param == "path":
        address: str | bytes = str(tmp_path / "notify.sock")
        env = str(address)
    else:
        name = f"logwatchd-test-{os.getpid()}-{time.monotonic_ns()}"
        address, env = b"\0" + name.encode(), "@" + name
    sock.bind(address)
    monkeypatch.setenv("NOTIFY_SOCKET", env)
    with sock:
        yield Listener(sock)


def test_ready_sends_ready_and_status_in_one_datagram(listener: Listener) -> None:
    assert notify.ready("watching 3 files")
    assert listener.receive() == ["READY=1", "STATUS=watching 3 files"]


def test_status_keeps_text_outside_latin1(listener: Listener) -> None:
    """sdnotify from PyPI drops this; systemd itself takes UTF-8."""
    assert notify.status("alertes envoyées: 3 — 警告 ✓")
    assert listener.receive() == ["STATUS=alertes envoyées: 3 — 警告 ✓"]


def test_status_cannot_inject_a_second_assignment(listener: Listener) -> None:
    assert notify.status("evil\nREADY=1")
    assert listener.receive() == ["STATUS=evil READY=1"]


def test_reloading_carries_the_monotonic_clock(listener: Listener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = listener.receive()
    assert first == "RELOADING=1"
    key, _, usec = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after


def test_stopping_and_watchdog(listener: Listener) -> None:
    assert notify.stopping()
    assert listener.receive() == ["STOPPING=1"]
    assert notify.watchdog_ping()
    assert listener.receive() == ["WATCHDOG=1"]
    assert listener.nothing_pending()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify("READY=1") is False
    assert notify.ready() is False


def test_a_vanished_socket_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify.notify("READY=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 15.0


def test_watchdog_interval_is_none_for_another_pid_or_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert notify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.delenv("WATCHDOG_USEC")
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert notify.watchdog_interval() is None


def test_a_reader_that_stops_reading_never_blocks_the_daemon(tmp_path, monkeypatch):
    import socket as socket_module
    import time as time_module

    from logwatchd.service import notify as notify_module

    path = str(tmp_path / "full")
    receiver = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_DGRAM)
    receiver.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    started = time_module.monotonic()
    sent = [notify_module.status("x" * 1000) for _ in range(500)]
    assert time_module.monotonic() - started < 2.0
    assert sent[0]
    assert not all(sent)  # the queue filled up; later ones were dropped, not waited for
    receiver.close()

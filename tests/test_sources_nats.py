"""The ``nats`` source against a real nats-server: lines from a durable pull consumer,
acknowledged only after the daemon's commit, with redeliveries skipped."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logwatchd.clock import SystemClock
from logwatchd.config import load_text
from logwatchd.config.model import SourceConfig
from logwatchd.errors import ConfigError
from logwatchd.events import Line
from logwatchd.sources.nats import NatsSource, sequence_and_time
from tests.nats_helpers import (
    NatsServer,
    consumer_info,
    create_stream,
    publish,
    wait_until,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats = NatsServer(tmp_path / "nats").start()
    yield nats
    nats.kill()


def source_config(tmp_path: Path, settings: str) -> SourceConfig:
    text = "version: 1\nsources:\n  - id: fleet\n    type: nats\n" + textwrap.indent(
        textwrap.dedent(settings), "    "
    )
    return load_text(text, "c.yaml", base_dir=str(tmp_path)).sources[0]


class Follower:
    """A NatsSource driven the way the daemon drives it: poll, checkpoint, commit."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        settings: str = "",
        saved: dict[str, Any] | None = None,
        wake: Any = None,
    ) -> None:
        defaults = "subjects: ['logwatchd.alerts.>']\ndurable: agg\nstart_at: beginning\n"
        config = source_config(tmp_path, f"servers: [{url}]\n{settings or defaults}")
        self.source = NatsSource(config, saved=saved, clock=SystemClock(), host="agg1")
        self.lines: list[Line] = []
        self.source.start(wake or (lambda: None))

    def read(self, count: int, timeout: float = 20.0) -> list[Line]:
        """Poll until ``count`` lines came, never taking more."""

        def enough() -> bool:
            self.lines.extend(self.source.poll(count - len(self.lines)))
            return len(self.lines) >= count

        wait_until(enough, timeout)
        return self.lines

    def commit(self) -> dict[str, Any]:
        saved = self.source.checkpoint()
        self.source.committed()
        return saved

    def stop(self) -> None:
        self.source.stop()


def alerts(count: int, start: int = 0, subject: str = "logwatchd.alerts.web1.r") -> list[Any]:
    return [
        (
            subject,
            json.dumps({"id": f"{i:032d}", "rule": "r", "host": "web1"}).encode(),
            f"{i:032d}",
        )
        for i in range(start, start + count)
    ]


class NoConsumer:
    """Stands in for a consumer's info while there is none."""

    num_waiting = 0


def pending(url: str, name: str = "agg") -> int:
    return int(consumer_info(url, name).num_ack_pending)


def test_messages_become_lines_acknowledged_only_after_the_commit(
    tmp_path: Path, server: NatsServer
) -> None:
    create_stream(server.url)
    publish(server.url, alerts(3))
    follower = Follower(tmp_path, server.url)
    try:
        lines = follower.read(3)
        assert [line.origin for line in lines] == [f"nats:{i:032d}" for i in range(3)]
        assert [json.loads(line.raw)["id"] for line in lines] == [f"{i:032d}" for i in range(3)]
        assert lines[0].path == "logwatchd.alerts.web1.r"
        assert [line.lineno for line in lines] == [1, 2, 3]  # the stream sequence
        assert abs(lines[0].read_time - time.time()) < 60  # when the stream stored it
        saved = follower.source.checkpoint()  # what the daemon commits with the rule state
        assert [entry[2] for entry in saved["unacked"]] == [f"{i:032d}" for i in range(3)]
        assert pending(server.url) == 3  # nothing acknowledged before the commit
        follower.source.committed()
        wait_until(lambda: pending(server.url) == 0)
        wait_until(lambda: follower.source.checkpoint()["unacked"] == [])
    finally:
        follower.stop()


def test_every_message_wakes_the_daemon(tmp_path: Path, server: NatsServer) -> None:
    """The daemon sleeps until woken (at most a second): a message that arrives without a
    wake waits for that second."""
    create_stream(server.url)
    woken = threading.Event()
    follower = Follower(tmp_path, server.url, wake=woken.set)
    try:
        for index in range(3):
            woken.clear()
            publish(server.url, alerts(1, start=index))
            assert woken.wait(0.9), f"message {index} woke nothing"
            assert len(follower.read(index + 1)) == index + 1
    finally:
        follower.stop()


def test_after_a_crash_committed_messages_are_skipped_and_the_rest_read_again(
    tmp_path: Path, server: NatsServer
) -> None:
    """The server redelivers everything unacknowledged: what the last commit covered must not
    count twice, what came after it must count once."""
    create_stream(server.url)
    publish(server.url, alerts(4))
    settings = "subjects: ['logwatchd.alerts.>']\ndurable: agg\nstart_at: beginning\nbatch: 2\n"
    settings += "ack_wait: 1s\n"
    first = Follower(tmp_path, server.url, settings)
    try:
        first.read(2)
        saved = first.source.checkpoint()  # committed, then the daemon is killed: no acks
    finally:
        first.stop()
    assert len(saved["unacked"]) == 2
    second = Follower(tmp_path, server.url, settings, saved=saved)
    try:
        lines = second.read(2)
        wait_until(lambda: second.source.skipped >= 2)  # the two redelivered, committed ones
        assert sorted(json.loads(line.raw)["id"] for line in lines) == [f"{i:032d}" for i in (2, 3)]
        second.commit()
        wait_until(lambda: pending(server.url) == 0)
        wait_until(lambda: second.source.checkpoint()["unacked"] == [])
        assert len(second.source.poll()) == 0
    finally:
        second.stop()


def test_entries_of_an_earlier_run_go_once_the_ack_floor_passed_them(
    tmp_path: Path, server: NatsServer
) -> None:
    create_stream(server.url)
    publish(server.url, alerts(2))
    first = Follower(tmp_path, server.url)
    try:
        first.read(2)
        saved = first.commit()
        wait_until(lambda: pending(server.url) == 0)
    finally:
        first.stop()
    assert len(saved["unacked"]) == 2  # the confirmation came after the commit
    second = Follower(tmp_path, server.url, saved=saved)
    try:
        wait_until(lambda: second.source.checkpoint()["unacked"] == [])
    finally:
        second.stop()


def test_one_message_seen_through_two_subjects_counts_once(
    tmp_path: Path, server: NatsServer
) -> None:
    create_stream(server.url)
    settings = (
        "subjects: ['logwatchd.alerts.>', 'logwatchd.alerts.web1.r']\n"
        "durable: agg\nstart_at: beginning\n"
    )
    follower = Follower(tmp_path, server.url, settings)
    try:
        publish(server.url, alerts(1))

        def both_copies_seen() -> bool:
            follower.lines.extend(follower.source.poll())
            return follower.source.skipped == 1

        wait_until(both_copies_seen)
        assert len(follower.lines) == 1
    finally:
        follower.stop()


def test_it_waits_for_the_stream_and_then_follows(tmp_path: Path, server: NatsServer) -> None:
    follower = Follower(tmp_path, server.url)
    try:
        wait_until(lambda: "stream LOGWATCHD does not exist yet" in follower.source.problem)
        create_stream(server.url)
        publish(server.url, alerts(1))
        assert len(follower.read(1)) == 1
    finally:
        follower.stop()


def test_start_at_end_reads_only_what_comes_after_the_consumer_is_made(
    tmp_path: Path, server: NatsServer
) -> None:
    create_stream(server.url)
    publish(server.url, alerts(2))
    follower = Follower(tmp_path, server.url, "subjects: ['logwatchd.>']\ndurable: agg\n")
    try:
        wait_until(lambda: consumer_info(server.url, "agg") is not None)
        publish(server.url, alerts(1, start=5))
        lines = follower.read(1)
        assert [json.loads(line.raw)["id"] for line in lines] == [f"{5:032d}"]
    finally:
        follower.stop()


def test_two_daemons_with_one_durable_share_the_work(tmp_path: Path, server: NatsServer) -> None:
    create_stream(server.url)
    settings = "subjects: ['logwatchd.alerts.>']\ndurable: shared\nstart_at: beginning\nbatch: 5\n"
    one = Follower(tmp_path, server.url, settings)
    two = Follower(tmp_path, server.url, settings)
    try:
        wait_until(lambda: (consumer_info(server.url, "shared") or NoConsumer).num_waiting >= 2)
        publish(server.url, alerts(100))

        def all_read() -> bool:
            for follower in (one, two):
                follower.lines.extend(follower.source.poll())
                follower.commit()
            return len(one.lines) + len(two.lines) >= 100

        wait_until(all_read)
        ids = [json.loads(line.raw)["id"] for line in one.lines + two.lines]
        assert sorted(ids) == [f"{i:032d}" for i in range(100)]
        assert one.lines and two.lines
    finally:
        one.stop()
        two.stop()


def test_a_durable_that_follows_another_subject_is_not_silently_switched(
    tmp_path: Path, server: NatsServer
) -> None:
    create_stream(server.url)
    first = Follower(tmp_path, server.url, "subjects: ['logwatchd.a.>']\ndurable: agg\n")
    try:
        wait_until(lambda: consumer_info(server.url, "agg") is not None)
    finally:
        first.stop()
    second = Follower(tmp_path, server.url, "subjects: ['logwatchd.b.>']\ndurable: agg\n")
    try:
        wait_until(lambda: "consumer agg of stream LOGWATCHD follows" in second.source.problem)
        assert "give this source another durable name" in second.source.problem
        assert consumer_info(server.url, "agg").config.filter_subject == "logwatchd.a.>"
    finally:
        second.stop()


# --- configuration ----------------------------------------------------------------------------


def test_durable_defaults_to_one_name_per_source_and_host(tmp_path: Path) -> None:
    text = (
        "version: 1\ndaemon: {host: web1}\nsources:\n"
        "  - {id: decisions, type: nats, subjects: ['logwatchd.decisions.*']}\n"
    )
    source = load_text(text, "c.yaml", base_dir=str(tmp_path)).sources[0]
    assert source.parser == "alert"
    assert source.nats is not None
    assert (source.nats.durable, source.nats.stream) == ("decisions-web1", "LOGWATCHD")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("subjects: [alerts.x]\n", 'c.yaml:5: sources[0].subjects[0]: "alerts.x" is not under'),
        ("subjects: ['logwatchd.a b']\n", "c.yaml:5: sources[0].subjects[0]: "),
        ("subjects: ['logwatchd.>.x']\n", "c.yaml:5: sources[0].subjects[0]: "),
        ("subjects: ['logwatchd.a', 'logwatchd.a']\n", "c.yaml:5: sources[0].subjects: "),
        ("subjects: ['logwatchd.a']\ndurable: 'a.b'\n", "c.yaml:6: sources[0].durable: "),
        ("durable: x\n", "c.yaml:3: sources[0]: missing required key 'subjects'"),
        ("subjects: ['logwatchd.a']\nbatch: 0\n", "c.yaml:6: sources[0].batch: must be at least"),
    ],
)
def test_config_errors_name_file_line_and_key(tmp_path: Path, settings: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        source_config(tmp_path, settings)
    assert str(info.value).startswith(expected)


def test_sequence_and_time_read_both_forms_of_the_acknowledgement_subject() -> None:
    old = "$JS.ACK.LOGWATCHD.agg.1.42.7.1795687200000000000.3"
    new = "$JS.ACK.domain.ACCHASH.LOGWATCHD.agg.1.42.7.1795687200000000000.3.tok"
    assert sequence_and_time(old, 0.0) == (42, 1_795_687_200.0)
    assert sequence_and_time(new, 0.0) == (42, 1_795_687_200.0)
    assert sequence_and_time("not.a.reply", 5.0) == (0, 5.0)

"""StdinSource: lines from a pipe, read by a thread; poll() never blocks."""

from __future__ import annotations

import os
import threading
import time

from logwatchd.clock import ManualClock
from logwatchd.config.model import SourceConfig
from logwatchd.sources.base import Source
from logwatchd.sources.stdin import StdinSource


def make(stream, max_line_bytes: int = 65536) -> tuple[StdinSource, threading.Event]:
    woke = threading.Event()
    source = StdinSource(
        SourceConfig(id="in", type="stdin", parser="none"),
        clock=ManualClock(),
        max_line_bytes=max_line_bytes,
        stream=stream,
    )
    source.start(woke.set)
    return source, woke


def drain(source: StdinSource, timeout: float = 10.0) -> list:
    out = []
    deadline = time.monotonic() + timeout
    while not source.eof and time.monotonic() < deadline:
        out += source.poll(7)
        time.sleep(0.005)
    return out


def test_lines_from_a_pipe_in_order_with_numbers() -> None:
    r, w = os.pipe()
    source, woke = make(os.fdopen(r, "rb"))
    assert isinstance(source, Source)
    assert source.poll() == []  # nothing yet, and no blocking
    os.write(w, b"one\ntwo \xff\npartial")
    assert woke.wait(10)
    os.write(w, b" end\n")
    os.close(w)
    lines = drain(source)
    assert [ln.raw for ln in lines] == ["one", "two \ufffd", "partial end"]
    assert [ln.lineno for ln in lines] == [1, 2, 3]
    assert [ln.origin for ln in lines] == ["stdin:1", "stdin:2", "stdin:3"]
    source.stop()


def test_a_long_line_is_cut_and_the_rest_skipped() -> None:
    r, w = os.pipe()
    source, _ = make(os.fdopen(r, "rb"), max_line_bytes=10)

    def feed() -> None:
        os.write(w, b"x" * 100_000 + b"\nshort\n")
        os.close(w)

    threading.Thread(target=feed).start()
    lines = drain(source)
    assert [(ln.raw, ln.truncated) for ln in lines] == [("x" * 10, True), ("short", False)]
    source.stop()


def test_a_last_line_without_newline_is_kept_at_end_of_input() -> None:
    r, w = os.pipe()
    source, _ = make(os.fdopen(r, "rb"))
    os.write(w, b"a\nlast")
    os.close(w)
    assert [ln.raw for ln in drain(source)] == ["a", "last"]
    source.stop()

"""The syslog parser: RFC 3164 with year inference, rsyslog's RFC 3339 form, odd tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from logwatchd.events import Line
from logwatchd.parsers import build_parser

BERLIN = ZoneInfo("Europe/Berlin")


def parse(raw: str, *, read: datetime | None = None, tz: str = "Europe/Berlin") -> dict | None:
    parser = build_parser("syslog", {}, timezone=tz)
    read_time = (read or datetime(2026, 11, 26, 12, 0, tzinfo=UTC)).timestamp()
    return parser.parse(Line("auth", raw, read_time, "t:1"))


def test_classic_line_gives_host_program_pid_message_and_local_time() -> None:
    fields = parse("Nov 26 10:00:01 web1 sshd[4242]: Failed password for root from 203.0.113.7")
    assert fields is not None
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, 1, tzinfo=BERLIN)
    assert (fields["host"], fields["program"], fields["pid"]) == ("web1", "sshd", 4242)
    assert fields["message"] == "Failed password for root from 203.0.113.7"
    assert fields["raw"].startswith("Nov 26")


def test_december_line_read_in_january_belongs_to_the_previous_year() -> None:
    fields = parse("Dec 31 23:59:58 web1 cron[1]: job", read=datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert fields is not None
    assert fields["timestamp"].year == 2026


def test_a_stamp_up_to_a_day_ahead_of_the_read_time_keeps_the_current_year() -> None:
    # clock skew between hosts: Jan 1 seen on Dec 31 of the year before is next year's
    fields = parse(
        "Jan  1 00:00:03 web1 cron[1]: job", read=datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    )
    assert fields is not None
    assert fields["timestamp"].year == 2027
    fields = parse("Nov 28 10:00:00 web1 cron[1]: job", read=datetime(2026, 11, 26, tzinfo=UTC))
    assert fields is not None
    assert fields["timestamp"].year == 2025  # two days ahead: last year's


def test_february_29_goes_to_the_last_leap_year() -> None:
    fields = parse("Feb 29 12:00:00 h p: m", read=datetime(2027, 3, 1, tzinfo=UTC))
    assert fields is not None
    assert fields["timestamp"].year == 2024


def test_rsyslog_rfc3339_stamp_keeps_its_offset_and_fraction() -> None:
    fields = parse("2026-11-26T10:00:01.123456+01:00 web1 sshd-session[77]: Accepted publickey")
    assert fields is not None
    assert fields["timestamp"] == datetime(2026, 11, 26, 9, 0, 1, 123456, tzinfo=UTC)
    assert fields["program"] == "sshd-session"
    assert fields["message"] == "Accepted publickey"


def test_nanosecond_fractions_and_z_are_accepted() -> None:
    fields = parse("2026-11-26T10:00:01.123456789Z web1 kernel: x")
    assert fields is not None
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, 1, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "host", "program", "pid", "message"),
    [
        ("Feb  7 16:01:07 h pure-ftpd: (pam_unix) x", "h", "pure-ftpd", None, "(pam_unix) x"),
        ("Feb 7 16:01:07 h sshd[5]: x", "h", "sshd", 5, "x"),
        ("Feb 17 17:40:17 sshd[19725]: error: kex: x", None, "sshd", 19725, "error: kex: x"),
        ("Mar  3 00:17:22 [sshd]: User root", None, "sshd", None, "User root"),
        ("Jun 25 23:53:34 [sshd] User root", None, "sshd", None, "User root"),
        (
            "Feb 15 16:23:40 srv httpd/backend1[22]: [error] x",
            "srv",
            "httpd/backend1",
            22,
            "[error] x",
        ),
        ("Nov 25 17:12:13 mail pop(pam_unix)[4920]: auth", "mail", "pop(pam_unix)", 4920, "auth"),
        ("Nov 26 10:00:00 2001:db8::1 sshd[1]: x", "2001:db8::1", "sshd", 1, "x"),
        (
            "Nov 26 10:00:00 h sudo:     alice : TTY=pts/0",
            "h",
            "sudo",
            None,
            "    alice : TTY=pts/0",
        ),
        ("Nov 26 10:00:00 h prog[12]:", "h", "prog", 12, ""),
    ],
)
def test_tag_forms(raw: str, host: str | None, program: str, pid: int | None, message: str) -> None:
    fields = parse(raw)
    assert fields is not None
    assert fields.get("host") == host
    assert fields["program"] == program
    assert fields.get("pid") == pid
    assert fields["message"] == message


def test_stamped_line_without_a_tag_keeps_everything_as_message() -> None:
    fields = parse("Nov 26 10:00:00 -- MARK --")
    assert fields is not None
    assert fields["message"] == "-- MARK --"
    assert "program" not in fields


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "hello world",
        "Foo 26 10:00:00 h p: m",
        "Nov 26 25:61:00 h p: m",
        "Feb 30 10:00:00 h p: m",
        "2026-13-45T99:00:00Z h p: m",
        '{"MESSAGE": "x"}',
    ],
)
def test_lines_that_are_not_syslog_do_not_parse(raw: str) -> None:
    assert parse(raw) is None


def test_utc_and_local_timezones() -> None:
    fields = parse("Nov 26 10:00:01 h p: m", tz="UTC")
    assert fields is not None
    assert fields["timestamp"].utcoffset() == timedelta(0)
    local = build_parser("syslog", {}, timezone="local").parse(
        Line("s", "Nov 26 10:00:01 h p: m", 1_795_687_200.0, "o")
    )
    assert local is not None
    assert local["timestamp"].tzinfo is not None


# --- frame(): what the short path of the rules takes instead of parse() -------------------

FRAMED_LINES = [
    "Nov 26 10:00:01 web1 sshd[4242]: Failed password for root from 203.0.113.7",
    "Nov  6 10:00:01 web1 sshd-session[1]: Invalid user x from 2001:db8::1 port 4",
    "Nov 26 10:00:01 sshd[4242]: no host here",
    "Nov 26 10:00:01 web1 [kernel]: bracketed program",
    "Nov 26 10:00:01 web1 CRON: no pid",
    "Nov 26 10:00:01.123456 web1 app[1]: fractions of a second",
    "Nov 26 10:00:01 web1 no tag at all, the message is the rest",
    "Nov 26 10:00:01 web1 sshd[1]:",
    "Dec 31 23:59:58 web1 cron[1]: last year's line",
    "Feb 30 10:00:01 web1 sshd[1]: a day no year has",
    "Nov 26 25:61:61 web1 sshd[1]: a time no day has",
    "Nov 26 10:00:01 web1 sshd[1]: message repeated 3 times: [ Invalid user a from 1.2.3.4]",
    "2026-11-26T10:00:01.123456+01:00 web1 sshd[1]: the RFC 3339 form",
    "not syslog at all",
]


def framed_like_parse(raw: str, read_time: float) -> None:
    """``frame`` gives what ``parse`` (and the event's time) give, or None; None only where
    ``parse`` gives nothing or does more than frame (another form, a folded repeat)."""
    parser = build_parser("syslog", {}, timezone="Europe/Berlin")
    framed = parser.frame(raw, read_time)
    fields = parser.parse(Line("auth", raw, read_time, "t:1"))
    if framed is None:
        assert fields is None or "repeated" in fields or not raw[:1].isalpha()
        return
    assert fields is not None
    when, host, program, message = framed
    assert when == fields["timestamp"].timestamp()
    assert (host, program, message) == (
        fields.get("host"), fields.get("program"), fields["message"]
    )  # fmt: skip


@pytest.mark.parametrize("raw", FRAMED_LINES)
def test_frame_gives_what_parse_gives_or_leaves_the_line_to_parse(raw: str) -> None:
    for read in (datetime(2026, 11, 26, 12, 0, tzinfo=UTC), datetime(2027, 1, 1, 0, 5, tzinfo=UTC)):
        framed_like_parse(raw, read.timestamp())


def test_frame_takes_the_year_from_when_each_line_was_read() -> None:
    parser = build_parser("syslog", {}, timezone="UTC")
    raw = "Dec 31 23:59:58 web1 cron[1]: job"
    this_year = parser.frame(raw, datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
    next_year = parser.frame(raw, datetime(2027, 1, 2, 0, 0, tzinfo=UTC).timestamp())
    assert this_year is not None and next_year is not None
    assert this_year[0] == datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC).timestamp()
    assert next_year[0] == this_year[0]  # still last year's line, read in the new year
    jan = parser.frame("Jan  1 00:00:01 web1 cron[1]: job", next_year[0] + 86400)
    assert jan is not None and datetime.fromtimestamp(jan[0], UTC).year == 2027

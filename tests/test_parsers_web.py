"""Web server logs: combined access logs, nginx and Apache error logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from logwatchd.events import Line
from logwatchd.parsers import build_parser


def parse(name: str, raw: str) -> dict | None:
    return build_parser(name, {}, timezone="UTC").parse(Line("web", raw, 0.0, "t:1"))


@pytest.mark.parametrize("name", ["nginx_combined", "apache_combined"])
def test_combined_line(name: str) -> None:
    raw = (
        '203.0.113.9 - frank [10/Oct/2026:13:55:36 -0700] "GET /apache_pb.gif?a=1 HTTP/1.0" '
        '200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
    )
    fields = parse(name, raw)
    assert fields is not None
    assert fields["client_ip"] == "203.0.113.9"
    assert fields["user"] == "frank"
    assert "ident" not in fields  # logged as "-"
    assert fields["timestamp"] == datetime(
        2026, 10, 10, 13, 55, 36, tzinfo=timezone(-timedelta(hours=7))
    )
    assert (fields["method"], fields["path"], fields["protocol"]) == (
        "GET",
        "/apache_pb.gif?a=1",
        "HTTP/1.0",
    )
    assert (fields["status"], fields["bytes"]) == (200, 2326)
    assert fields["referer"] == "http://www.example.com/start.html"
    assert fields["user_agent"] == "Mozilla/4.08 [en] (Win98; I ;Nav)"
    assert fields["message"] == raw


def test_ipv6_client_dash_bytes_and_extra_trailing_fields() -> None:
    raw = '2001:db8::7 - - [26/Nov/2026:10:00:00 +0000] "HEAD / HTTP/2.0" 304 - "-" "c" "-" x'
    fields = parse("nginx_combined", raw)
    assert fields is not None
    assert fields["client_ip"] == "2001:db8::7"
    assert fields["bytes"] == 0
    assert "referer" not in fields
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_common_log_format_without_referer_and_agent() -> None:
    fields = parse(
        "apache_combined", '192.0.2.1 - - [26/Nov/2026:10:00:00 +0100] "GET / HTTP/1.1" 200 5'
    )
    assert fields is not None
    assert "user_agent" not in fields
    assert fields["status"] == 200


def test_escaped_quotes_and_garbage_request_lines_stay_as_logged() -> None:
    nginx = r'192.0.2.2 - - [26/Nov/2026:10:00:00 +0000] "GET /a\x22b HTTP/1.1" 404 1 "-" "x\x22y"'
    fields = parse("nginx_combined", nginx)
    assert fields is not None
    assert fields["path"] == r"/a\x22b"
    assert fields["user_agent"] == r"x\x22y"
    apache = r'192.0.2.3 - - [26/Nov/2026:10:00:00 +0000] "\x16\x03\x01" 400 226 "-" "a \"q\" b"'
    fields = parse("apache_combined", apache)
    assert fields is not None
    assert fields["request"] == r"\x16\x03\x01"
    assert "method" not in fields
    assert fields["user_agent"] == r"a \"q\" b"


@pytest.mark.parametrize(
    "raw",
    [
        '192.0.2.1 - - [26/Nov/2026:10:00:00 +2500] "GET / HTTP/1.1" 200 5',
        '192.0.2.1 - - [31/Feb/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5',
        '192.0.2.1 - - [26/Foo/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5',
        "not an access log line",
    ],
)
def test_bad_access_lines_do_not_parse(raw: str) -> None:
    assert parse("nginx_combined", raw) is None


def test_nginx_error_line() -> None:
    raw = (
        '2026/11/26 10:00:01 [error] 1234#1235: *5 user "bob": password mismatch, client: '
        '2001:db8::9, server: intranet, request: "GET /admin HTTP/1.1", host: "intranet:8443", '
        'referrer: "https://intranet/"'
    )
    fields = parse("nginx_error", raw)
    assert fields is not None
    assert (fields["level"], fields["pid"], fields["tid"], fields["cid"]) == (
        "error",
        1234,
        1235,
        5,
    )
    assert fields["message"] == 'user "bob": password mismatch'
    assert fields["client_ip"] == "2001:db8::9"
    assert fields["server"] == "intranet"
    assert fields["request"] == "GET /admin HTTP/1.1"
    assert fields["host"] == "intranet:8443"
    assert fields["referrer"] == "https://intranet/"
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, 1, tzinfo=UTC)


def test_nginx_error_trailer_is_the_last_one_that_ends_the_line() -> None:
    raw = (
        '2026/11/26 10:00:01 [error] 1#1: *2 user "x, client: 192.0.2.66, server: y": was not '
        'found in "/etc/htpasswd", client: 203.0.113.4, server: , request: "GET / HTTP/1.1", '
        'host: "h"'
    )
    fields = parse("nginx_error", raw)
    assert fields is not None
    assert fields["client_ip"] == "203.0.113.4"
    assert fields["server"] == ""
    assert fields["message"].startswith('user "x, client: 192.0.2.66')


def test_nginx_error_without_client_keeps_the_whole_message() -> None:
    fields = parse("nginx_error", "2026/11/26 10:00:01 [notice] 1#1: signal process started")
    assert fields is not None
    assert fields["message"] == "signal process started"
    assert "client_ip" not in fields
    assert "cid" not in fields


def test_apache_24_error_line() -> None:
    raw = (
        "[Thu Nov 26 10:00:01.123456 2026] [auth_basic:error] [pid 123:tid 456] "
        "[client 192.0.2.4:5678] AH01618: user x not found: /"
    )
    fields = parse("apache_error", raw)
    assert fields is not None
    assert (fields["module"], fields["level"], fields["pid"], fields["tid"]) == (
        "auth_basic",
        "error",
        123,
        456,
    )
    assert (fields["client_ip"], fields["client_port"]) == ("192.0.2.4", 5678)
    assert fields["code"] == "AH01618"
    assert fields["message"] == "AH01618: user x not found: /"
    assert fields["timestamp"] == datetime(2026, 11, 26, 10, 0, 1, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("client", "ip", "port"),
    [
        ("[2001:db8::1]:51548", "2001:db8::1", 51548),
        ("2001:db8:0:1:2:3:4:5", "2001:db8:0:1:2:3:4:5", None),
    ],
)
def test_apache_ipv6_clients(client: str, ip: str, port: int | None) -> None:
    fields = parse("apache_error", f"[Thu Nov 26 10:00:01 2026] [error] [client {client}] msg")
    assert fields is not None
    assert fields["client_ip"] == ip
    assert fields.get("client_port") == port


def test_apache_22_error_line_and_empty_module() -> None:
    fields = parse(
        "apache_error",
        "[Thu Nov 26 10:00:01 2026] [error] [client 192.0.2.5] File does not exist: /x",
    )
    assert fields is not None
    assert "module" not in fields
    assert fields["message"] == "File does not exist: /x"
    fields = parse(
        "apache_error",
        "[Thu Nov 26 10:00:01 2026] [:error] [pid 9] [client 192.0.2.6:1] PHP Warning",
    )
    assert fields is not None
    assert fields["level"] == "error"
    assert fields["message"] == "PHP Warning"


@pytest.mark.parametrize("name", ["nginx_combined", "apache_combined"])
def test_a_user_name_with_spaces_parses_and_cannot_forge_the_fields_after_it(name: str) -> None:
    """nginx and Apache write $remote_user / %u as the client sent it, spaces included."""
    plain = (
        '203.0.113.9 - john doe [26/Nov/2026:10:00:01 +0000] "GET /admin HTTP/1.1" 401 12 "-" "c"'
    )
    fields = parse(name, plain)
    assert fields is not None
    assert (fields["user"], fields["client_ip"], fields["status"]) == (
        "john doe",
        "203.0.113.9",
        401,
    )
    # the name holds a stamp and a request of its own; a quote in it is written escaped
    quote = r"\x22" if name == "nginx_combined" else r"\""
    fake = f"x [26/Nov/2026:10:00:00 +0000] {quote}GET /ok HTTP/1.1{quote} 200 0"
    hostile = (
        f'203.0.113.9 - {fake} [26/Nov/2026:10:00:01 +0000] "GET /wp-login.php HTTP/1.1" 404 5'
    )
    fields = parse(name, hostile)
    assert fields is not None
    assert fields["user"] == fake
    assert (fields["path"], fields["status"]) == ("/wp-login.php", 404)
    empty = '192.0.2.1 - "" [26/Nov/2026:10:00:01 +0000] "GET / HTTP/1.1" 401 5'
    assert parse(name, empty)["user"] == '""'  # type: ignore[index]

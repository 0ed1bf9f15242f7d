"""The command line as a rule author uses it: check, test, explain, status."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import DaemonProcess, read_jsonl, wait_for, write_config

REPO = Path(__file__).resolve().parent.parent
APP_REGEX = (
    r"^(?P<timestamp>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?P<event_type>\w+) - IP: (?P<ip>\S+)"
)


def logwatchd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logwatchd", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def app_config(tmp_path: Path, **rule_extra: Any) -> dict[str, Any]:
    rule = {
        "id": "failed-logins",
        "match": {"field": "event_type", "equals": "LoginFailed"},
        "group_by": ["ip"],
        "threshold": {"count": 3, "window": "1m"},
        "handlers": ["alerts-file"],
        **rule_extra,
    }
    return {
        "version": 1,
        "daemon": {"state_dir": str(tmp_path / "state")},
        "sources": [
            {"id": "app", "type": "file", "paths": [str(tmp_path / "*.log")], "parser": "app"}
        ],
        "parsers": {"app": {"regex": APP_REGEX, "time_format": "%Y-%m-%d %H:%M:%S"}},
        "rules": [rule],
        "handlers": {"alerts-file": {"type": "file", "path": str(tmp_path / "alerts.jsonl")}},
    }


LOG = """\
2023-09-04 10:00:00 LoginFailed - IP: 192.0.2.1
2023-09-04 10:00:10 LoginFailed - IP: 192.0.2.1
LoginFailed, but not a line the parser knows
2023-09-04 10:00:20 LoginFailed - IP: 198.51.100.2
2023-09-04 10:00:30 LoginFailed - IP: 192.0.2.1
2023-09-04 10:05:00 LoginFailed - IP: 198.51.100.2
2023-09-04 10:07:00 LoginFailed - IP: 198.51.100.2
"""


def test_check_prints_ok_and_a_summary_for_the_shipped_example_configs():
    for name in ("config/logwatchd.yaml", "config/demo.yaml"):
        proc = logwatchd("check", "-c", name)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"OK: {name}:")


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (
            {"rules": [{"id": "r", "match": {"field": "a", "equals": "b"}, "colldown": "1m"}]},
            "rules[0]",
            "colldown",
        ),
        ({"parsers": {"app": {"regex": "(?P<ip>[unclosed"}}}, "parsers.app.regex", "regex"),
        (
            {"rules": [{"id": "r", "match": {"field": "a", "equals": "b"}, "cooldown": "ten"}]},
            "rules[0].cooldown",
            "not a duration",
        ),
        (
            {"rules": [{"id": "r", "match": {"field": "a", "equals": "b"}, "handlers": ["nope"]}]},
            "rules[0].handlers",
            "nope",
        ),
        (
            {
                "handlers": {
                    "alerts-file": {"type": "command", "argv": ["/bin/echo", "{{ alert.x }}"]}
                }
            },
            "handlers.alerts-file.argv[1]",
            "x",
        ),
        (
            {"handlers": {"alerts-file": {"type": "command", "argv": ["/bin/echo", "{{ alert"]}}},
            "handlers.alerts-file.argv[1]",
            "",
        ),
    ],
)
def test_check_rejects_bad_configs_naming_file_line_and_key(tmp_path, change, where, message):
    config = app_config(tmp_path)
    config.update(change)
    path = write_config(tmp_path / "bad.yaml", config)
    proc = logwatchd("check", "-c", str(path))
    assert proc.returncode == 2, proc.stdout
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith(f"logwatchd: {path}:"), first
    line = first.split(":")[2]
    assert line.isdigit()
    assert int(line) > 0
    assert where in first
    assert message in first
    assert "Traceback" not in proc.stderr


def test_check_names_a_missing_config_file_without_a_traceback(tmp_path):
    proc = logwatchd("check", "-c", str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2
    assert "absent.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_test_json_matches_prints_match_and_alert_objects_on_event_time(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    log = tmp_path / "app.log"
    log.write_text(LOG)
    proc = logwatchd("test", "-c", str(config), "--json", "--matches", str(log))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    matches = [r for r in records if r["kind"] == "match"]
    alerts = [r for r in records if r["kind"] == "alert"]
    assert [m["line"] for m in matches] == [1, 2, 4, 5, 6, 7]
    assert matches[0] == {
        "kind": "match",
        "rule": "failed-logins",
        "source": "app",
        "line": 1,
        "fields": matches[0]["fields"],
    }
    assert matches[0]["fields"]["ip"] == "192.0.2.1"
    # 192.0.2.1: 3 within 30 s fires at line 5; 198.51.100.2: 3 spread over 7 minutes never does
    assert len(alerts) == 1
    assert alerts[0]["line"] == 5
    assert alerts[0]["rule"] == "failed-logins"
    assert alerts[0]["key"] == {"ip": "192.0.2.1"}
    assert alerts[0]["count"] == 3
    assert alerts[0]["first_seen"].startswith("2023-09-04T10:00:00")
    assert alerts[0]["last_seen"].startswith("2023-09-04T10:00:30")
    assert len(alerts[0]["events"]) == 3
    assert "7 read" in proc.stderr
    assert "1 unparsed" in proc.stderr
    # handlers do not run without --execute
    assert not (tmp_path / "alerts.jsonl").exists()


def test_test_reads_gzip_and_stdin_and_executes_handlers_on_request(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    gz = tmp_path / "app.log.1.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(LOG)
    proc = logwatchd("test", "-c", str(config), "--source", "app", "--json", str(gz))
    assert [json.loads(x)["kind"] for x in proc.stdout.splitlines()] == ["alert"]
    proc = logwatchd("test", "-c", str(config), "--json", "--execute", "-", stdin=LOG)
    assert proc.returncode == 0, proc.stderr
    assert [a["key"]["ip"] for a in read_jsonl(tmp_path / "alerts.jsonl")] == ["192.0.2.1"]


def test_test_numbers_lines_across_read_blocks_with_crlf_and_no_final_newline(tmp_path):
    """Lines are read 1 MiB at a time and tested in bulk: numbers, CRLF and a last line
    without a newline must come out as for a line-by-line reader."""
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    failed = "2023-09-04 10:00:{:02d} LoginFailed - IP: 192.0.2.1"
    filler = "2023-09-04 10:00:00 Heartbeat - IP: 127.0.0.1 " + "x" * 60
    lines = [filler] * 40_000  # about 4.3 MB: several blocks
    for number in (1, 20_001, 40_000):
        lines[number - 1] = failed.format(number % 60)
    path = tmp_path / "big.log"
    path.write_bytes("\r\n".join(lines).encode())  # no newline after the last line
    proc = logwatchd("test", "-c", str(config), "--json", "--matches", str(path))
    assert proc.returncode == 0, proc.stderr
    found = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [(f["kind"], f["line"]) for f in found] == [
        ("match", 1), ("match", 20_001), ("match", 40_000), ("alert", 40_000),
    ]  # fmt: skip
    assert all(not f["fields"]["raw"].endswith("\r") for f in found if f["kind"] == "match")
    assert "Lines: 40000 read, 3 parsed, 0 unparsed" in proc.stderr


def test_test_cuts_over_long_lines_as_the_daemon_does_and_never_buffers_them(tmp_path):
    """max_line_bytes holds for `test` too: a 64 MiB line without a newline is cut and its
    rest dropped as it is read (peak RSS stays far below the line), later lines go on."""
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    failed = b"2023-09-04 10:00:0%d LoginFailed - IP: 192.0.2.1"
    path = tmp_path / "long.log"
    with open(path, "wb") as handle:
        handle.write(failed % 1 + b"\n")
        handle.write(failed % 2 + b" " + b"x" * 100_000 + b"\n")  # cut, still matches
        for _ in range(64):  # one line of 64 MiB
            handle.write(b"y" * (1 << 20))
        handle.write(b"\n")
        handle.write(failed % 3 + b"\n")
    # VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forking pytest process
    peak = (
        "import sys\nfrom logwatchd.cli import main\ntry:\n    code = main()\nfinally:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    print('PEAK', hwm.split()[1], file=sys.stderr)\nsys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", peak, "test", "-c", str(config), "--json", "--matches", str(path)],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [(f["kind"], f["line"]) for f in found] == [
        ("match", 1), ("match", 2), ("match", 4), ("alert", 4),
    ]  # fmt: skip
    assert len(found[1]["fields"]["raw"].encode()) == 65536
    assert "2 cut at max_line_bytes" in proc.stderr, proc.stderr
    peak_kib = int(proc.stderr.rsplit("PEAK ", 1)[1].split()[0])
    assert peak_kib < 150 * 1024  # reading the whole line would take more than 64 MiB alone


def test_test_with_an_unknown_source_is_a_config_error(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    proc = logwatchd("test", "-c", str(config), "--source", "nope", "-", stdin="")
    assert proc.returncode == 2
    assert "no source 'nope'" in proc.stderr


def test_explain_shows_fields_and_each_condition(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    proc = logwatchd(
        "explain",
        "-c",
        str(config),
        "--source",
        "app",
        "2023-09-04 10:00:00 LoginFailed - IP: 192.0.2.1",
    )
    assert proc.returncode == 0, proc.stderr
    assert 'event_type = "LoginFailed"' in proc.stdout
    assert "scan: selects this line" in proc.stdout
    assert "failed-logins" in proc.stdout
    assert "LoginFailed" in proc.stdout.split("failed-logins", 1)[1]
    proc = logwatchd("explain", "-c", str(config), "--source", "app", "garbage")
    assert "did not recognise" in proc.stdout


def test_status_reports_offsets_and_outbox_after_a_run(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    log = tmp_path / "app.log"
    log.touch()
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        with log.open("a") as handle:
            handle.write(LOG)
        wait_for(lambda: read_jsonl(tmp_path / "alerts.jsonl"))
        assert daemon.terminate() == 0
    proc = logwatchd("status", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    assert f"{log}: offset {len(LOG)}, lag 0 bytes" in proc.stdout
    assert "alerts-file: 0 pending" in proc.stdout
    assert "1 delivered" in proc.stdout
    report = json.loads(logwatchd("status", "-c", str(config), "--json").stdout)
    assert report["outbox"]["alerts-file"]["delivered"] == 1
    assert report["running"] is False
    files = [f for s in report["sources"].values() for f in s["files"]]
    assert [(f["path"], f["offset"], f["lag_bytes"]) for f in files] == [(str(log), len(LOG), 0)]


def test_test_replays_journalctl_json_through_a_journald_source(tmp_path):
    record = {
        "__CURSOR": "c1",
        "__REALTIME_TIMESTAMP": "1700000000000000",
        "_SYSTEMD_UNIT": "ssh.service",
        "SYSLOG_IDENTIFIER": "sshd",
        "_PID": "42",
        "MESSAGE": "Failed password for root from 203.0.113.9 port 22 ssh2",
    }
    config = {
        "version": 1,
        "sources": [{"id": "journal", "type": "journald", "parser": "journald"}],
        "rules": [
            {
                "id": "ssh-fail",
                "match": {
                    "all": [
                        {"field": "program", "equals": "sshd"},
                        {"field": "message", "regex": r"^Failed password for \S+ from (?P<ip>\S+)"},
                    ]
                },
            }
        ],
    }
    path = write_config(tmp_path / "c.yaml", config)
    proc = logwatchd("test", "-c", str(path), "--json", "-", stdin=json.dumps(record) + "\n")
    assert proc.returncode == 0, proc.stderr
    (alert,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert alert["event"]["fields"]["ip"] == "203.0.113.9"
    assert alert["event"]["raw"] == record["MESSAGE"]


def test_check_warns_about_a_command_that_is_not_executable_but_stays_valid(tmp_path):
    config = app_config(tmp_path)
    config["handlers"]["alerts-file"] = {"type": "command", "argv": ["/nonexistent/ban", "x"]}
    proc = logwatchd("check", "-c", str(write_config(tmp_path / "c.yaml", config)))
    assert proc.returncode == 0
    assert "handlers.alerts-file.argv[0]: /nonexistent/ban is not executable" in proc.stderr
    assert "sources.app.paths: no file matches yet" in proc.stderr


def test_log_options_work_after_the_command_too(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    (tmp_path / "app.log").touch()
    with DaemonProcess(config, extra_args=("--log-level", "debug", "--log-format", "stderr")) as d:
        d.wait_ready()
        assert d.terminate() == 0
        lines = d.stderr().splitlines()
    # the helper passes --log-format json before `run`; the later one wins, in one format
    assert all(line.startswith("<") for line in lines)
    assert any(line.startswith("<6>started ") for line in lines)
    assert any(line.startswith("<7>") for line in lines), "debug events are shown"
    done = logwatchd("check", "-c", str(config), "--log-level", "error")
    assert done.returncode == 0, done.stderr


def test_the_mail_names_one_host_in_its_body_and_its_footer(tmp_path):
    from tests.smtp_helpers import Mailbox, free_port, smtp_server

    port = free_port()
    cfg = app_config(tmp_path, handlers=["mail"])
    cfg["handlers"]["mail"] = {
        "type": "email",
        "smtp": {"host": "127.0.0.1", "port": port},
        "to": ["ops@example.com"],
    }
    config = write_config(tmp_path / "c.yaml", cfg)
    box = Mailbox()
    with smtp_server(box, port=port):
        done = logwatchd("test", "-c", str(config), "--execute", "-", stdin=LOG)
    assert done.returncode == 0, done.stderr
    body = box.snapshot()[0].message.get_content()
    host = next(line.split()[1] for line in body.splitlines() if line.startswith("Host:"))
    footer = next(line for line in body.splitlines() if line.startswith("-- logwatchd on "))
    assert footer.split()[3].rstrip(",").split(".")[0] == host, body


# --- small things a user trips on -----------------------------------------------------------

ORIGIN_LINES = (
    "2023-09-04 10:00:01 SecurityBreach - IP: 203.0.113.9\n"
    "2023-09-04 10:00:02 SecurityBreach - IP: 192.168.1.10\n"
)


def test_test_counts_matches_per_rule_without_being_asked_to_list_them(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    log = tmp_path / "app.log"
    log.write_text(LOG)
    proc = logwatchd("test", "-c", str(config), str(log))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stderr.splitlines() if line.startswith("failed-logins"))
    assert row.split() == ["failed-logins", "6", "1"]  # matches, alerts
    assert "match " not in proc.stdout  # the matches themselves only with --matches


def test_explain_needs_no_source_when_there_is_one_and_says_which_when_there_are_more(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    line = "2023-09-04 10:00:00 LoginFailed - IP: 192.0.2.1"
    proc = logwatchd("explain", "-c", str(config), line)
    assert proc.returncode == 0, proc.stderr
    assert 'event_type = "LoginFailed"' in proc.stdout
    two = app_config(tmp_path)
    two["sources"].append({"id": "auth", "type": "file", "paths": ["/x.log"], "parser": "syslog"})
    proc = logwatchd("explain", "-c", str(write_config(tmp_path / "c2.yaml", two)), line)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "logwatchd: --source: name the source whose parser applies (sources: app, auth)"
    )


def test_test_and_explain_say_nothing_about_the_live_path_they_do_not_read(tmp_path):
    config = app_config(tmp_path)
    config["sources"][0]["paths"] = [str(tmp_path / "live" / "app.log")]  # does not exist
    path = write_config(tmp_path / "c.yaml", config)
    replayed = tmp_path / "old.log"
    replayed.write_text(LOG)
    for args in (
        ("test", "-c", str(path), str(replayed)),
        ("explain", "-c", str(path), "2023-09-04 10:00:00 LoginFailed - IP: 192.0.2.1"),
    ):
        proc = logwatchd(*args)
        assert proc.returncode == 0, proc.stderr
        assert "no file matches" not in proc.stderr
        assert "warning" not in proc.stderr


@pytest.mark.parametrize(
    ("config", "args"),
    [("config/logwatchd.yaml", ("--source", "app")), ("config/demo.yaml", ())],
)
def test_the_shipped_configs_alert_on_the_projects_own_example_lines(tmp_path, config, args):
    """The origin case and the README's private address both alert out of the box."""
    log = tmp_path / "server.log"
    log.write_text(ORIGIN_LINES)
    proc = logwatchd("test", "-c", config, *args, "--json", str(log))
    assert proc.returncode == 0, proc.stderr
    alerts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(a["rule"], a["key"]["ip"]) for a in alerts] == [
        ("security-breach", "203.0.113.9"),
        ("security-breach", "192.168.1.10"),
    ]


OUT_OF_ORDER = """\
2023-09-04 10:00:00 LoginFailed - IP: 192.0.2.1
2023-09-04 10:05:00 LoginFailed - IP: 192.0.2.1
2023-09-04 10:04:30 LoginFailed - IP: 192.0.2.1
2023-09-04 10:03:00 LoginFailed - IP: 192.0.2.1
2023-09-04 10:05:10 LoginFailed - IP: 192.0.2.1
2023-09-04 10:05:20 SecurityBreach - IP: 203.0.113.9
2023-09-04 10:01:00 SecurityBreach - IP: 203.0.113.9
2023-09-04 10:20:00 SecurityBreach - IP: 203.0.113.9
2023-09-04 09:59:00 LoginFailed - IP: 198.51.100.2
2023-09-04 09:58:50 LoginFailed - IP: 198.51.100.2
2023-09-04 09:59:30 LoginFailed - IP: 198.51.100.2
"""


def _comparable(alert: dict[str, Any]) -> tuple[Any, ...]:
    """What test and run must agree on (ids and fired_at name the read, not the event)."""
    return (
        alert["rule"], json.dumps(alert["key"]), alert["count"], alert["suppressed"],
        alert["first_seen"], alert["last_seen"], tuple(alert["events"]),
    )  # fmt: skip


def test_test_and_run_agree_on_lines_older_than_the_last_one(tmp_path):
    """Windows and cooldowns run on event time per key in both: a late line counts when it
    falls within its key's window (newest event minus the window), else it does not."""
    config = app_config(tmp_path)
    config["daemon"]["timezone"] = "UTC"
    config["rules"].append(
        {
            "id": "breach",
            "match": {"field": "event_type", "equals": "SecurityBreach"},
            "group_by": ["ip"],
            "cooldown": "10m",
            "handlers": ["alerts-file"],
        }
    )
    path = write_config(tmp_path / "c.yaml", config)
    replayed = tmp_path / "replay" / "app.txt"
    replayed.parent.mkdir()
    replayed.write_text(OUT_OF_ORDER)
    proc = logwatchd("test", "-c", str(path), "--source", "app", "--json", str(replayed))
    assert proc.returncode == 0, proc.stderr
    tested = [json.loads(line) for line in proc.stdout.splitlines()]
    log = tmp_path / "app.log"
    log.write_text("")
    with DaemonProcess(path) as daemon:
        daemon.wait_ready()
        with log.open("a") as handle:
            handle.write(OUT_OF_ORDER)

        def offset() -> int:
            report = json.loads(logwatchd("status", "-c", str(path), "--json").stdout)
            files = report["sources"].get("app", {}).get("state", {}).get("files", [])
            return sum(int(record.get("offset", 0)) for record in files)

        wait_for(lambda: offset() == len(OUT_OF_ORDER), timeout=20, interval=0.2)
        wait_for(lambda: len(read_jsonl(tmp_path / "alerts.jsonl")) >= len(tested))
        assert daemon.terminate() == 0
    ran = read_jsonl(tmp_path / "alerts.jsonl")
    assert [_comparable(a) for a in ran] == [_comparable(a) for a in tested]
    # what the README promises: the 10:04:30 line counted (within a minute of 10:05:00), the
    # 10:03:00 one did not; the 10:01:00 breach fell in the cooldown of the 10:05:20 one
    assert [(a["rule"], a["count"], a["suppressed"]) for a in ran] == [
        ("failed-logins", 3, 0),
        ("breach", 1, 0),
        ("breach", 1, 1),
        ("failed-logins", 3, 0),
    ]


def test_test_shows_progress_with_an_eta_on_a_terminal(tmp_path):
    import io

    from logwatchd.commands.replay import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = tmp_path / "big.log"
    log.write_bytes(b"x" * (40 << 20))  # 40 MiB
    now = [100.0]
    shown = Terminal()
    progress = Progress(str(log), shown, lambda: now[0])
    now[0] += 2
    progress.update(10 << 20)  # a quarter in two seconds: six more to go
    assert f"{log}:  25.0% of 40.0 MiB, 5.0 MiB/s, 0:06 left" in shown.getvalue()
    progress.done()
    assert shown.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()  # not a terminal: nothing
    Progress(str(log), quiet).update(10 << 20)
    assert quiet.getvalue() == ""

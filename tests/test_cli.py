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
    assert report["outbox"]["alerts-file"]["done"] == 1
    files = [f for s in report["sources"].values() for f in s["state"]["files"]]
    assert [(f["path"], f["offset"]) for f in files] == [(str(log), len(LOG))]


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

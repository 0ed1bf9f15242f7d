"""The scan changes nothing but speed: every path gives the same matches and alerts.

Paths compared, on the benchmark generator's auth.log (real subprocess, two formats), the
hand-written pack samples, fail2ban's own sample logs and hostile lines:

- ``test``'s file replay, scanning 1 MiB blocks natively (Hyperscan);
- the daemon's batches of lines, scanned natively;
- the same batches scanned with Python's ``re`` (where the hyperscan wheel is missing);
- the reference: every rule on every line, every condition run (no scan, no gate).

On ASCII lines the native and the ``re`` scan must find exactly the same patterns; on any
line, a pattern must be found wherever the condition it stands for holds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwatchd.config import load_text
from logwatchd.config.model import Config, Leaf, Not, Predicate, Regex
from logwatchd.pipeline import ReplayClock, build_engine
from logwatchd.rules.scan import native_available
from logwatchd.rules.selection import leaf_pattern
from tests.replay_paths import all_paths_agree

ROOT = Path(__file__).resolve().parent.parent
PACKS = ROOT / "config" / "rules.d"
GENERATOR = ROOT / "bench" / "gen_authlog.py"
SAMPLES = Path(__file__).resolve().parent / "packs"
FAIL2BAN = Path("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs")
PARSERS = ("syslog", "rfc5424", "nginx_error", "apache_error", "dovecot_log", "app_events",
           "nginx_combined", "apache_combined")  # fmt: skip

needs_native = pytest.mark.skipif(not native_available(), reason="the hyperscan wheel is missing")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    base = tmp_path_factory.mktemp("scan")
    packs = ", ".join(str(p) for p in sorted(PACKS.glob("*.yaml")))
    sources = "".join(f"  - {{id: {name}, type: stdin, parser: {name}}}\n" for name in PARSERS)
    text = (
        "version: 1\ndaemon: {timezone: UTC, max_keys_per_rule: 500}\n"
        f"include: [{packs}]\nsources:\n{sources}"
    )
    return load_text(text, str(base / "logwatchd.yaml"), base_dir=str(base))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["rfc3164", "mix"])
def test_generated_auth_log_gives_the_same_matches_and_alerts_on_every_path(
    config: Config, tmp_path: Path, form: str
) -> None:
    out = tmp_path / "gen.log"
    subprocess.run(
        [sys.executable, str(GENERATOR), str(out), "--lines", "12000", "--format", form,
         "--sources", "60"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    texts = out.read_text(encoding="utf-8").splitlines()
    matches, alerts = all_paths_agree(config, "syslog", texts, tmp_path)
    assert len(matches) > 1000 and len(alerts) > 20  # the log exercises the rules
    assert {m.split('"')[1] for m in matches} >= {
        "sshd-auth-failure", "sshd-login-after-failures", "sshd-preauth-disconnects",
    }  # fmt: skip


def sample_lines(path: Path) -> dict[str, list[str]]:
    """The pack samples' lines, by the parser they are written for."""
    found: dict[str, list[str]] = {}
    parser = "syslog"
    for text in path.read_text(encoding="utf-8").splitlines():
        if text.startswith("#! parser "):
            parser = text.split()[2]
        elif text and not text.startswith("#"):
            found.setdefault(parser, []).append(text)
    return found


def test_pack_samples_give_the_same_matches_and_alerts_on_every_path(
    config: Config, tmp_path: Path
) -> None:
    seen = 0
    for path in sorted(SAMPLES.glob("*.log")):
        for parser, texts in sample_lines(path).items():
            if parser in PARSERS:
                matches, _ = all_paths_agree(config, parser, texts, tmp_path)
                seen += len(matches)
    assert seen > 50


@pytest.mark.skipif(not FAIL2BAN.is_dir(), reason="fail2ban is not installed")
@pytest.mark.parametrize(
    ("name", "parser"),
    [("sshd", "syslog"), ("pam-generic", "syslog"), ("postfix", "syslog"),
     ("dovecot", "syslog"), ("nginx-http-auth", "nginx_error"), ("apache-auth", "apache_error")],
)  # fmt: skip
def test_fail2ban_samples_give_the_same_matches_and_alerts_on_every_path(
    config: Config, tmp_path: Path, name: str, parser: str
) -> None:
    text = (FAIL2BAN / name).read_text(encoding="utf-8", errors="replace")
    texts = [line for line in text.splitlines() if line and not line.startswith("#")]
    matches, _ = all_paths_agree(config, parser, texts, tmp_path)
    assert matches


HOSTILE = [
    "Nov 26 10:00:01 web1 sshd[7]: Failed password for root from 203.0.113.9 port 4000 ssh2",
    "Nov 26 10:00:02 web1 sshd[7]: Failed password for jürgen from 203.0.113.9 port 4000 ssh2",
    "Nov 26 10:00:03 web1 sshd[7]: Failed password for root\r from 203.0.113.9 port 4 ssh2",
    "Nov 26 10:00:04 web1 sshd[7]: Invalid user \u212aelvin from 203.0.113.9 port 5",
    "Nov 26 10:00:05 web1 sshd[7]: Invalid user x\u00a0y from 203.0.113.9 port 5",
    "Nov 26 10:00:06 web1 sshd[8]: Failed password for root from 203.0.113.9\u2003port 6 ssh2",
    "Nov 26 10:00:07 web1 sshd[8]: Failed password for r\x00ot from 203.0.113.9 port 7 ssh2",
    "Nov 26 10:00:08 web1 sshd[8]: Failed password for root from \u0661.2.3.4 port 8 ssh2",
    "Nov 26 10:00:09 web1 sshd[8]: message repeated 3 times: [ Invalid user bob from 192.0.2.1]",
]


def test_hostile_lines_give_the_same_matches_and_alerts_on_every_path(
    config: Config, tmp_path: Path
) -> None:
    matches, alerts = all_paths_agree(config, "syslog", HOSTILE * 3, tmp_path)
    assert matches and alerts


# --- the two scans agree; a pattern is found wherever its condition holds ----------------


def regex_leaves(config: Config) -> list[Regex]:
    found: list[Regex] = []

    def walk(pred: Predicate | None) -> None:
        if pred is None:
            return
        if isinstance(pred, Regex):
            found.append(pred)
        elif isinstance(pred, Not):
            walk(pred.item)
        elif not isinstance(pred, Leaf):
            for item in pred.items:
                walk(item)

    for rule in config.rules:
        walk(rule.match)
        for step in rule.sequence.steps if rule.sequence else ():
            walk(step.match)
        if rule.context is not None:
            walk(rule.context.learn)
            walk(rule.context.forget)
    return found


PIECES = [
    "Failed password for ", "invalid user ", "root", " from ", "203.0.113.9", "2001:db8::1",
    "::ffff:10.0.0.1", " port 22", " ssh2", ": ", "[preauth]", "Invalid user ", "Connection ",
    "closed by ", "Accepted password for ", "error: ", "maximum authentication attempts "
    "exceeded for ", "Disconnecting: Too many authentication failures", " for ",
    "Received disconnect from ", "11: Bye", "pam_unix(sshd:auth): authentication failure; ",
    "rhost=", " user=", "ruser=", "sudo", "  alice : 3 incorrect password attempts ; ",
    "user NOT in sudoers ; ", "reject: RCPT from x[192.0.2.5]: 554 5.7.1 ", "warning: ",
    "SASL LOGIN authentication failed:", "user \"bob\" was not found in \"", "AH01618: ",
    "client denied by server configuration", "\t", " ", "x", "]", "(", ")", "\\", "K", "k",
]  # fmt: skip
ASCII_LINES = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)


@pytest.fixture(scope="module")
def scans(config: Config) -> list[Any]:
    engine, _ = build_engine(config, ReplayClock(), host="h")
    return [engine.scan(source) for source in PARSERS]


@needs_native
@settings(max_examples=300, deadline=None)
@given(ASCII_LINES)
def test_on_ascii_lines_the_native_scan_finds_what_re_finds(scans: list[Any], text: str) -> None:
    for scan in scans:
        assert scan.native is not None
        found = scan.native.lines(text.encode("ascii") + b"\n")
        native = found[0][2] if found else 0
        assert native is not None  # an ASCII line is never left to Python
        assert native & scan.exact == scan.hits(text) & scan.exact, text


@pytest.fixture(scope="module")
def patterns(config: Config) -> list[tuple[re.Pattern[str], re.Pattern[str], str]]:
    """Every regex of the packs, and the pattern (and guard text) the scan looks for."""
    found = []
    for leaf in regex_leaves(config):
        pattern = leaf_pattern(leaf)
        assert pattern is not None and pattern.python is not None
        found.append((leaf.pattern, re.compile(pattern.python), pattern.guard))
    return found


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_pattern_is_found_wherever_its_regex_matches_the_field(
    patterns: list[tuple[re.Pattern[str], re.Pattern[str], str]], data: st.DataObject
) -> None:
    regex, scanned, guard = data.draw(st.sampled_from(patterns))
    value = data.draw(ASCII_LINES | st.text(max_size=20))
    before, after = data.draw(ASCII_LINES), data.draw(ASCII_LINES)
    if regex.search(value):
        assert scanned.search(before + value + after), (regex.pattern, value)
        assert guard in before + value + after

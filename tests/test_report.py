"""`logwatchd report`: the numbers of a generated attack, from a replay and from the state
database, as text and as a self-contained page that a browser renders without network."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.daemon_helpers import write_config
from tests.observe_helpers import attack_log, attacked, logwatchd, watch_config

START = dt.datetime(2026, 12, 1, 10, 0, 0)
CHROMIUM = "/usr/bin/chromium"
BAR_BLUE = (0x1F, 0x77, 0xB4)  # the first rule's colour in the charts


class Page(HTMLParser):
    """The parts of the page a test reads: table rows, images, anything that loads."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("href", "src"):
            if name in values and tag != "img":
                self.links.append(values[name] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def row(self, first: str) -> list[str]:
        return next(row for row in self.rows if row and row[0] == first)


def replayed(tmp_path: Path) -> tuple[Path, Path]:
    """The config and the generated attack log, written."""
    (tmp_path / "logs").mkdir()
    log = attack_log(START).write(tmp_path / "logs" / "app.log")
    return write_config(tmp_path / "c.yaml", watch_config(tmp_path)), log


def test_the_text_report_of_a_replayed_attack(tmp_path):
    config, log = replayed(tmp_path)
    attack = attack_log(START)
    text = logwatchd("report", "-c", str(config), str(log), "-o", "-").stdout
    assert text.startswith("logwatchd report: replay of app.log\n")
    assert "2026-12-01 10:00:00 to 2026-12-01 10:02:34" in text
    matches = sum(attack.failures.values()) + sum(attack.breaches.values())
    assert (
        f"{len(attack.lines)} lines read, {attack.unparsed} not parsed, {matches} matches, "
        f"{attack.alerts()} alerts"
    ) in text
    # the loudest address: its 42 failures and 2 breaches matched; 8 + 2 alerts
    assert re.search(r"^203\.0\.113\.9 +44 +10$", text, re.MULTILINE)
    assert re.search(r"^198\.51\.100\.23 +17 +3$", text, re.MULTILINE)
    assert re.search(r"^brute-force +122 +12$", text, re.MULTILINE)
    assert re.search(r"^app +158 +3$", text, re.MULTILINE)


def test_the_html_report_of_a_replayed_attack_is_self_contained(tmp_path):
    config, log = replayed(tmp_path)
    out = tmp_path / "report.html"
    logwatchd("report", "-c", str(config), str(log), "-o", str(out))
    page = Page(out.read_text())
    assert page.row("203.0.113.9")[:3] == ["203.0.113.9", "44", "10"]
    assert page.row("brute-force") == ["brute-force", "122", "12"]
    assert page.row("security-breach") == ["security-breach", "3", "3"]
    assert page.row("app") == ["app", "158", "3", "1.9%"]
    # events and alerts over time, and the top addresses: three charts, all embedded
    assert len(page.images) == 3
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.links == []
    assert "http://" not in out.read_text() and "https://" not in out.read_text()
    assert out.stat().st_mode & 0o007 == 0  # addresses and user names: not for everyone


def test_hostile_keys_are_text_in_the_page_and_the_charts(tmp_path):
    config = {
        "version": 1,
        "sources": [{"id": "auth", "type": "file", "paths": ["/x/*.log"], "parser": "users"}],
        "parsers": {
            "users": {
                "regex": r"^(?P<timestamp>\S+ \S+) LoginFailed user=(?P<user>\S+)",
                "time_format": "%Y-%m-%d %H:%M:%S",
            }
        },
        "rules": [
            {
                "id": "user-failures",
                "match": {"field": "message", "contains": "LoginFailed"},
                "group_by": ["user"],
                "threshold": {"count": 2, "window": "1m"},
            }
        ],
    }
    hostile = ["<script>alert(1)</script>", "$\\frac{1}{0}$", "a\x1bb", "&amp;"]
    log = tmp_path / "auth.log"
    lines = [f"2026-12-01 10:00:0{n} LoginFailed user={u}\n" for n in range(2) for u in hostile]
    log.write_text("".join(lines))
    path = write_config(tmp_path / "c.yaml", config)
    out = tmp_path / "report.html"
    logwatchd("report", "-c", str(path), str(log), "-o", str(out))
    html = out.read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&amp;amp;" in html
    assert Page(html).row("$\\frac{1}{0}$")[1:3] == ["2", "1"]
    text = logwatchd("report", "-c", str(path), str(log), "-o", "-").stdout
    assert "a?b" in text and "\x1b" not in text


def test_the_report_from_the_state_database(tmp_path):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None) - dt.timedelta(hours=1)
    with attacked(tmp_path, watch_config(tmp_path), now) as (daemon, attack):
        assert daemon.terminate() == 0
    config = tmp_path / "c.yaml"
    text = logwatchd("report", "-c", str(config), "--since", "1d").stdout
    assert "state database" in text and "last 1d" in text
    assert f"{len(attack.lines)} lines read, {attack.unparsed} not parsed" in text
    assert f", {attack.alerts()} alerts" in text
    # from alerts: 8 brute-force alerts of 5 failures each, and 2 breaches of 1
    assert re.search(r"^203\.0\.113\.9 +42 +10$", text, re.MULTILINE)
    assert re.search(r"^alerts-file +15 +0 ", text, re.MULTILINE)
    out = tmp_path / "report.html"
    logwatchd("report", "-c", str(config), "-o", str(out))
    page = Page(out.read_text())
    assert page.row("203.0.113.9")[:3] == ["203.0.113.9", "42", "10"]
    assert page.row("alerts-file")[:3] == ["alerts-file", "15", "0"]
    assert page.row("security-breach") == ["security-breach", "3", "3"]
    quiet = logwatchd("report", "-c", str(config), "--since", "1s").stdout
    assert "0 lines read" in quiet and ", 0 alerts" in quiet


def test_without_matplotlib_the_html_report_says_how_to_get_it(tmp_path):
    config, log = replayed(tmp_path)
    code = (
        "import sys; sys.modules['matplotlib'] = None; from logwatchd.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "report", "-c", str(config), str(log)]
    html = subprocess.run([*argv, "-o", str(tmp_path / "r.html")], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert html.returncode == 2
    assert "pip install 'logwatchd[report]'" in html.stderr
    assert not (tmp_path / "r.html").exists()
    text = subprocess.run([*argv, "-o", "-"], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert text.returncode == 0 and "15 alerts" in text.stdout


def test_a_bad_since_is_a_usage_error(tmp_path):
    config, _ = replayed(tmp_path)
    done = logwatchd("report", "-c", str(config), "--since", "a week", check=False)
    assert done.returncode == 2
    assert '--since: "a week" is not a duration' in done.stderr
    log = tmp_path / "logs" / "app.log"
    done = logwatchd("report", "-c", str(config), "--since", "1d", str(log), check=False)
    assert done.returncode == 2
    assert "--since: a replay reports the whole of its files" in done.stderr


@pytest.mark.slow
def test_a_browser_renders_the_page_with_no_network_at_all(tmp_path):
    """Headless Chromium, in a network namespace of its own where root can make one: the
    charts show (their bars' colour is on the screenshot), so nothing needed fetching."""
    if not Path(CHROMIUM).exists():
        pytest.skip("CHROMIUM IS NOT INSTALLED: the page was not looked at in a browser")
    import numpy
    from PIL import Image

    config, log = replayed(tmp_path)
    out = tmp_path / "report.html"
    logwatchd("report", "-c", str(config), str(log), "-o", str(out))
    shot = tmp_path / "shot.png"
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1200,1400", out.as_uri(),
    ]  # fmt: skip
    offline = (
        shutil.which("unshare")
        and subprocess.run(
            ["unshare", "--net", "true"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if offline:
        argv = ["unshare", "--net", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1400)
    pixels = numpy.asarray(image).astype(int)
    blue = int((abs(pixels - numpy.array(BAR_BLUE)) < 12).all(axis=2).sum())
    assert blue > 5000, "the charts' bars are not on the screenshot"

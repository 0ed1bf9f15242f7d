"""Start-up of the commands: each imports what it runs, and nothing a replay does not use.

On a large file ``logwatchd test`` is compared with tools that start in milliseconds; its own
start-up was mostly imports of handler libraries (mail, NATS, HTTP), jinja2 and the file
follower that a replay never calls. These tests run a command in a fresh interpreter and
name what it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.daemon_helpers import write_config
from tests.test_cli import LOG, REPO, app_config

# What a replay never uses: the handlers' libraries, their templates, the NATS client and
# the file follower. (asyncio and ssl are not listed: structlog imports asyncio itself, and
# every command sets up the structlog log.)
NOT_FOR_A_REPLAY = (
    "smtplib",
    "email.mime",
    "email.utils",
    "urllib.request",
    "jinja2",
    "nats",
    "watchdog",
    "logwatchd.natsconn",
    "logwatchd.handlers",
    "logwatchd.templates",
    "logwatchd.sources.files",
)
# What mail and NATS handlers need: a config with a file handler only never loads it.
MAIL_AND_NATS = ("smtplib", "email.mime", "nats", "logwatchd.natsconn", "logwatchd.handlers.email")


def loaded_by(
    tmp_path: Path, argv: list[str], names: tuple[str, ...]
) -> tuple[int, list[str], str]:
    """Run ``logwatchd ARGV`` in a fresh interpreter: its exit code, which of ``names`` it
    imported, and what it wrote on stdout."""
    result = tmp_path / "loaded.json"
    script = (
        "import json, sys\n"
        "from logwatchd.cli import main\n"
        f"code = main({argv!r})\n"
        f"loaded = [name for name in {names!r} if name in sys.modules]\n"
        f"open({str(result)!r}, 'w').write(json.dumps([code, loaded]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    code, loaded = json.loads(result.read_text())
    return code, loaded, proc.stdout


def test_a_replay_loads_no_handler_template_nats_or_file_follower_code(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    log = tmp_path / "app.log"
    log.write_text(LOG)
    argv = ["test", "-c", str(config), str(log)]
    code, loaded, out = loaded_by(tmp_path, argv, NOT_FOR_A_REPLAY)
    assert (code, loaded) == (0, [])
    assert "ALERT  failed-logins" in out  # the whole replay ran, its output included


def test_check_loads_only_the_handler_types_the_config_uses(tmp_path):
    config = write_config(tmp_path / "c.yaml", app_config(tmp_path))
    code, loaded, out = loaded_by(tmp_path, ["check", "-c", str(config)], MAIL_AND_NATS)
    assert (code, loaded) == (0, [])
    assert out.startswith("OK: ")

"""The README's configuration examples are real configs: `logwatchd check` accepts them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCKS = [
    block
    for block in re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    if block.startswith("version: 1")
]


def test_the_readme_has_a_full_config_example():
    assert BLOCKS


@pytest.mark.parametrize("block", BLOCKS)
def test_a_readme_config_example_passes_check(tmp_path, block):
    path = tmp_path / "logwatchd.yaml"
    path.write_text(block)
    proc = subprocess.run(
        [sys.executable, "-m", "logwatchd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK: ")


# --- the README's two commands, as written ------------------------------------------------

SH_BLOCKS = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)


def test_the_quick_start_and_the_test_command_are_the_scripts_ci_and_users_run():
    assert SH_BLOCKS[0].strip() == "./quickstart"
    assert SH_BLOCKS[2].strip() == "tests/run"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == "exec tests/run"  # CI runs exactly the README's test command
    for script in ("quickstart", "tests/run"):
        assert os.access(REPO / script, os.X_OK), script
        code = [line for line in (REPO / script).read_text().splitlines() if line[:1] != "#"]
        assert '[ "$(id -u)" = 0 ] || SUDO=sudo' in code  # sudo only when not root
        assert not [line for line in code if "sudo " in line]  # never a sudo of its own


STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
"""
PYTHON_STUB = """#!/bin/sh
echo "python3 $*" >> "$CALLS"
case "$1" in
  -c) exit 0 ;;
  -m) [ -e "$VENV_WORKS" ] || exit 1
      mkdir -p "$3/bin"
      for tool in python pip logwatchd; do
        printf '#!/bin/sh\\necho "%s $*" >> "$CALLS"\\n' "$tool" > "$3/bin/$tool"
        chmod +x "$3/bin/$tool"
      done ;;
esac
"""


@pytest.mark.parametrize(
    ("uid", "venv_works", "expected"),
    [
        ("0", True, []),
        ("0", False, ["apt-get update -qq", "env DEBIAN_FRONTEND=noninteractive apt-get"]),
        ("1000", True, []),
        (
            "1000",
            False,
            ["sudo apt-get update -qq", "sudo env DEBIAN_FRONTEND=noninteractive apt-get"],
        ),
    ],
)
def test_quickstart_installs_venv_only_when_needed_and_uses_sudo_only_when_not_root(
    tmp_path, uid, venv_works, expected
):
    bin_dir, work = tmp_path / "bin", tmp_path / "checkout"
    bin_dir.mkdir()
    work.mkdir()
    shutil.copy(REPO / "quickstart", work / "quickstart")
    marker = tmp_path / "venv-works"
    stubs = {
        "python3": PYTHON_STUB,
        "id": f"#!/bin/sh\necho {uid}\n",
        "sudo": STUB + 'exec "$@"\n',
        "apt-get": STUB + f'[ "$1" != install ] || touch {marker}\n',
        "env": STUB + 'shift; exec "$@"\n',
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if venv_works:
        marker.touch()
    calls = tmp_path / "calls"
    environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "VENV_WORKS": str(marker)}
    done = subprocess.run(
        ["/bin/bash", str(work / "quickstart")], env=environ, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    # each stub logs itself, so `sudo apt-get x` shows as "sudo apt-get x" then "apt-get x"
    first_of_each = [line for line in lines if line.startswith(("sudo ", "apt-get ", "env "))]
    starting = [line for line in first_of_each if not any(
        earlier.endswith(" " + line) for earlier in first_of_each
    )]  # fmt: skip
    assert [line.split(" install")[0] for line in starting] == expected
    assert lines[-2:] == ["pip install -q --disable-pip-version-check .", "logwatchd run --demo"]

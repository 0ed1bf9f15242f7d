"""The README's configuration examples are real configs: `logwatchd check` accepts them."""

from __future__ import annotations

import re
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

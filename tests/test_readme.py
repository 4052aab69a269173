"""README.md stays true: its generated FA4 table is current and its test command is CI's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fa4_table_is_generated_from_the_current_data():
    proc = subprocess.run([sys.executable, str(ROOT / "tools/readme_fa4.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_readme_starts_with_install_and_test_commands_that_ci_runs():
    commands = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("pip install")]
    install_and_run, install_and_test = commands[:2]
    assert "attncap resolve" in install_and_run
    ci = (ROOT / ".ci/run").read_text()
    install, test = install_and_test.split(" && ")
    assert install.replace("pip install ", "pip install -q ") in ci
    assert test + " -q" in ci or test in ci

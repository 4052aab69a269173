"""Every invalid document in tests/invalid/ is refused with exactly the expected problem lines.

A case is a file (`name.yaml`) or a directory (`name/`, for an overlay whose file must have a
given name: `archs.yaml`, `torch_sdpa_math.yaml`); its golden output is `name.expected`.
Each case is run as `attncap validate <case>` on top of the packaged data, from tests/invalid/
so the paths in the output are relative; only the lines about the case's own files are compared.
Adding a case = adding a file or a directory, then

    UPDATE_GOLDEN=1 pytest tests/test_invalid_documents.py

and reading the new .expected file: it must name the right line, column and field.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attncap.cli import main

HERE = Path(__file__).parent / "invalid"
CASES = sorted(p.name for p in HERE.iterdir() if p.suffix != ".expected" and not p.name.startswith("."))
# A few cases go through a real process, to cover the console entry point and its exit code.
SUBPROCESS = {"python_tag.yaml", "alias_bomb.yaml", "non_utf8.yaml"}
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _own_lines(case: str, text: str) -> str:
    """The problem lines about the case's own files. Findings in the packaged data (which other
    tests check) are left out, so a warning added there does not change every golden file."""
    return "".join(line + "\n" for line in text.splitlines() if line.startswith(case))


def _validate(case: str, capsys) -> tuple[int, str, str]:
    if case in SUBPROCESS:
        proc = subprocess.run([sys.executable, "-m", "attncap.cli", "validate", case], cwd=HERE,
                              capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr
    code = main(["validate", case])
    out, err = capsys.readouterr()
    return code, out, err


def test_there_are_enough_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES)
def test_invalid_document(case, capsys, monkeypatch):
    monkeypatch.chdir(HERE)
    monkeypatch.delenv("ATTNCAP_PATH", raising=False)
    code, out, err = _validate(case, capsys)
    assert code == 1, f"expected exit 1, got {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "error(s)" in err and not err.startswith("0 error(s)"), err
    golden = HERE / (Path(case).stem + ".expected")
    actual = _own_lines(case, out)
    assert actual, f"no problem reported about {case}:\n{out}"
    if UPDATE:
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run UPDATE_GOLDEN=1 pytest {Path(__file__).name}"
    assert actual == golden.read_text(encoding="utf-8")


def test_every_golden_file_has_a_case():
    orphans = [p.name for p in HERE.glob("*.expected") if not any(Path(c).stem == p.stem for c in CASES)]
    assert not orphans

"""Importing attncap and resolving a query never imports torch (or any kernel library).

Only a live probe imports its library, and only when asked to judge the installed version
(e.g. the FA4 probe imports flash_attn.cute, hence torch); with probes off, or for what-if
versions that are not the installed ones, nothing heavy is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("torch", "triton", "flash_attn", "flash_attn_interface", "cutlass", "numpy")

CODE = f"""
import sys
import attncap
assert not [m for m in {HEAVY!r} if m in sys.modules], "import attncap"
query = attncap.AttentionQuery(arch="sm90", dtype="bf16", head_dim_qk=128, mask="causal", training=True)
what_if = attncap.Environment(arch="sm90", versions={{"torch": "2.11.0", "flash-attn-4": "4.0.0b11"}})
resolution = attncap.resolve(query, what_if)
resolution.table(), resolution.as_dict()
attncap.resolve(query, probes=False)  # the detected environment: installed versions, no device query
loaded = [m for m in {HEAVY!r} if m in sys.modules]
assert not loaded, f"resolving imported {{loaded}}"
print("ok", resolution.selected)
"""


def run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_import_and_resolve_do_not_import_torch():
    proc = run(CODE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok ")


def test_probes_off_by_environment_variable():
    code = ("import sys, attncap; attncap.resolve(attncap.AttentionQuery(arch='sm100', head_dim_qk=192, "
            "head_dim_v=128)); assert 'torch' not in sys.modules, 'torch imported'")
    proc = run(code, ATTNCAP_PROBES="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validate_does_not_import_torch():
    proc = run("import sys; from attncap.cli import main; main(['validate']); assert 'torch' not in sys.modules")
    assert proc.returncode == 0, proc.stdout + proc.stderr

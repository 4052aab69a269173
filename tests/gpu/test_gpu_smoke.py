"""A few GPU cases end to end (skipped cleanly without torch or without a CUDA device).

The full evidence run is tests/gpu/runner.py (see README.md); this only checks that the
harness works on the machine at hand: one known-good case per SDPA backend, and FA4 when
flash_attn.cute imports.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_CASE = os.path.join(HERE, "run_case.py")

SDPA_OK = [
    "sdpa-math-fp16-b2-sq128-skv128-h4x4-d64x64-none-train",
    "sdpa-efficient-fp16-b2-sq128-skv128-h4x4-d64x64-none-train",
    "sdpa-flash-fp16-b2-sq128-skv128-h4x4-d64x64-none-train",
]
SDPA_REJECTED = ["sdpa-flash-fp16-b2-sq128-skv128-h4x4-d64x64-arbitrary-bool-train"]
FA4_OK = ["flash-attn-4-bf16-b2-sq128-skv128-h4x4-d128x128-none-train"]


def _run(case_id, timeout=300):
    p = subprocess.run([sys.executable, RUN_CASE, "--id", case_id], capture_output=True, text=True,
                       timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no result (rc={p.returncode}): {p.stderr[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _sm80_or_newer():
    return torch.cuda.get_device_capability(0) >= (8, 0)


def test_env_record():
    p = subprocess.run([sys.executable, RUN_CASE, "--env"], capture_output=True, text=True, timeout=300)
    rec = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert rec["torch"] == torch.__version__ and rec["gpu"]


@pytest.mark.parametrize("case_id", SDPA_OK)
def test_sdpa_known_good(case_id):
    if "flash" in case_id and not _sm80_or_newer():
        pytest.skip("SDPA flash needs sm80+")
    r = _run(case_id)
    assert r["status"] == "ok", r
    assert r["fwd_correct"] and r["bwd_correct"], r


@pytest.mark.parametrize("case_id", SDPA_REJECTED)
def test_sdpa_rejection_has_reason(case_id):
    r = _run(case_id)
    assert r["status"] == "rejected" and r["can_use"] is False
    assert "attn_mask" in (r["can_use_reason"] or ""), r


@pytest.mark.parametrize("case_id", FA4_OK)
def test_fa4_known_good(case_id):
    pytest.importorskip("flash_attn.cute")
    if torch.cuda.get_device_capability(0)[0] not in (9, 10, 11):
        pytest.skip("FA4 targets SM90/SM100/SM110")
    r = _run(case_id, timeout=600)
    assert r["status"] == "ok", r

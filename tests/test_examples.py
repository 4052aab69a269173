"""The examples run (on CPU, in a what-if environment) and say what they claim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "ATTNCAP_PROBES": "0"}
    for name_ in ("ATTNCAP_BACKEND", "ATTNCAP_DISABLE"):
        env.pop(name_, None)
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_replace_te_chain_runs_on_cpu():
    out = run_example("replace_te_chain.py")
    assert "environment: Environment(arch='sm100'" in out
    assert "hd256 training                         -> FlashAttention (flash-attn-4)" in out
    # The FA4 known issue rules out the decode shape; the reason is printed, not just a log line.
    assert "known issue sm100-hd256-cross-attention" in out
    assert "hd512 training                         -> UnfusedDotProductAttention" in out


def test_replace_te_chain_what_if_older_fa4():
    out = run_example("replace_te_chain.py", "--fa4", "4.0.0b9", "--cudnn", "")
    assert "hd256 training                         -> UnfusedDotProductAttention" in out
    assert 'pip install "flash-attn-4>=4.0.0b11"' in out

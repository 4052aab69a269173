"""The FA4 capability tables against compile-only evidence (CPU only: no torch or FA4 needed).

tests/evidence/fa4_compile_<arch>.jsonl hold, per (head_dim_qk, head_dim_v) pair and pass, whether
FA4 4.0.0b36's kernels compile for a GPU we do not have (tests/gpu/compile_sweep.py; the rules
in tests/gpu/compile_evidence.py). A pass that does not compile is a definite "no" and must be
unsupported in the table; a pass that compiles is only "compiles", never taken as "supported".
"""
from __future__ import annotations

import os
import sys
from collections import Counter

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "gpu"))

import compile_evidence  # noqa: E402

FILES = compile_evidence.files()


def test_evidence_files_exist():
    assert {f"fa4_compile_{a}.jsonl" for a in ("sm100", "sm103", "sm110", "sm120")} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_evidence_file_is_well_formed(name):
    env, recs, summary = compile_evidence.load(name)
    arch = name[len("fa4_compile_"):-len(".jsonl")]
    assert env["evidence"] == "compile" and env["arch"] == arch and env["target"] == f"sm_{arch[2:]}a"
    assert env["gpu"] is None, "compile-only evidence names no GPU"
    for key in ("flash-attn-4", "nvidia-cutlass-dsl", "dsl_libs", "limits", "config", "num_sms"):
        assert env.get(key), f"{name}: header lacks {key}"
    runs = env.get("runs") or []
    assert runs and sum(run["records"] for run in runs) == len(recs), f"{name}: the runs do not add up"
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids))
    for r in recs:
        assert r["evidence"] == "compile" and r["arch"] == arch, r["id"]
        assert r["outcome"] in compile_evidence.OUTCOMES, r["id"]
        assert r["pass"] in ("forward", "backward"), r["id"]
        if r["outcome"] == "compiles":
            assert r["kernels"] and all(k["compiled"] for k in r["kernels"]), r["id"]
            assert not r["over_limit"], r["id"]
        elif r["outcome"] == "resources":
            assert r["over_limit"] or r["error_class"] in ("ptxas_registers", "smem"), r["id"]
        elif r["outcome"] != "rejected":
            assert r["error"], r["id"]
    counts = Counter((r["pass"], r["outcome"]) for r in recs)
    assert summary["counts"] == {p: {o: n for (pp, o), n in counts.items() if pp == p}
                                 for p in {p for p, _ in counts}}
    assert not set(summary["not_run"]) & set(ids)


@pytest.mark.parametrize("name", FILES)
def test_table_agrees_with_compile_evidence(name):
    bad = [row for row in compile_evidence.compare(name) if row["problem"]]
    assert not bad, (
        f"{len(bad)} disagreements with tests/evidence/{name}, e.g. "
        + "; ".join(f"{r['id']}: {r['problem']} ({r['error'][:120]})" for r in bad[:5])
        + f"\nAdd known issues citing tests/evidence/{name} (or narrow the rules); "
          "python tests/gpu/compile_evidence.py lists them all.")


@pytest.mark.parametrize("name", FILES)
def test_known_issues_citing_the_file_name_compile_failures(name):
    """Every FA4 known issue that cites a compile evidence file says how it fails (effect)."""
    from attncap.loader import default_registry

    backend = default_registry().backends["flash-attn-4"]
    citing = [k for k in backend.known_issues if f"tests/evidence/{name}" in (k.source or "")]
    for k in citing:
        assert k.effect in ("compile_error", "resource_limit", "raises"), k.id
        assert "compil" in (k.reason or ""), k.id

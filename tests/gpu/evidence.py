"""Compare recorded GPU evidence (tests/evidence/*_h100.jsonl, *_h200.jsonl) with attncap's tables.

CPU only: needs attncap, not torch.

    python tests/gpu/evidence.py            # print every disagreement
    python tests/gpu/evidence.py --json     # same, as JSON lines

A record's observed verdict is `supported`: the forward ran and matched a float64
reference, and for a training case the backward ran and dq, dk, dv matched too.
The table's verdict is resolve(query, env, probes=False).decision(backend).supported
with env built from the record file's header (arch, torch / flash-attn-4 / cuDNN
versions).  A disagreement is *explained* when the backend's decision carries a
known issue whose `source` cites the evidence file (e.g. "tests/evidence/fa4_h100.jsonl").
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVIDENCE_DIR = os.path.join(ROOT, "tests", "evidence")
FILES = ("sdpa_h100.jsonl", "fa4_h100.jsonl", "fa4_sm90_h200.jsonl")
# Sweeps in the flat per-pair shape (no env header; attncap.evidence reads both shapes), with the
# environment their README gives: checked by `attncap evidence import` in tests/test_gpu_evidence.py.
FLAT_SWEEPS = {"fa4_sm90_plane16_h200.jsonl": {"arch": "sm90", "versions": {"flash-attn-4": "4.0.0b36",
                                                                          "torch": "2.11.0+cu130"}}}


def load(name, record="case"):
    """(env header, [records of kind `record`], summary) of one evidence file."""
    env, cases, summary = None, [], None
    with open(os.path.join(EVIDENCE_DIR, name)) as f:
        for line in f:
            r = json.loads(line)
            kind = r.get("record")
            if kind == "env":
                env = r
            elif kind == record:
                cases.append(r)
            elif kind == "summary":
                summary = r
    return env, cases, summary


def environment(env):
    import attncap
    versions = {"torch": env["torch"]}
    if env.get("flash-attn-4"):
        versions["flash-attn-4"] = env["flash-attn-4"]
    return attncap.Environment(arch=env["arch"], versions=versions, cudnn=env.get("cudnn"))


def query(case):
    import attncap
    return attncap.AttentionQuery(
        arch=None, dtype=case["dtype"], head_dim_qk=case["head_dim_qk"], head_dim_v=case["head_dim_v"],
        num_heads_q=case["num_heads_q"], num_heads_kv=case["num_heads_kv"],
        seqlen_q=case["seqlen_q"], seqlen_kv=case["seqlen_kv"], training=bool(case["training"]),
        mask=case["mask"], window=tuple(case["window"]) if case.get("window") else None,
        dropout=float(case.get("dropout") or 0.0))


def observed(case) -> bool:
    return bool(case.get("supported"))


def explained_by(decision, evidence_name):
    """Known-issue reasons of `decision` whose source cites the evidence file."""
    out = []
    for r in decision.reasons:
        src = r.source or ""
        if r.code == "known_issue" or "known" in (r.code or ""):
            if evidence_name in src:
                out.append(r.rule or r.message)
    return out


def compare(name):
    """Yield one dict per case: backend, id, table, observed, decided_by, explained, reasons."""
    import attncap
    env_rec, cases, _ = load(name)
    env = environment(env_rec)
    for case in cases:
        q = query(case)
        res = attncap.resolve(q, env, probes=False)
        d = res.decision(case["backend"])
        table = bool(d.supported)
        obs = observed(case)
        row = {"backend": case["backend"], "id": case["id"], "table": table, "observed": obs,
               "status": case.get("status"), "decided_by": d.decided_by, "rule": d.rule}
        if table != obs:
            row["explained"] = explained_by(d, f"tests/evidence/{name}")
            row["table_reasons"] = [r.message for r in d.reasons][:3]
            row["observed_error"] = case.get("error") or case.get("bwd_error") or case.get("can_use_reason")
            if case.get("bwd_err") and case.get("bwd_correct") is False:
                row["observed_error"] = f"wrong backward: {case['bwd_err']}"
        yield row


SDPA_CHOICE = {"CUDNN_ATTENTION": "torch-sdpa-cudnn", "FLASH_ATTENTION": "torch-sdpa-flash",
               "EFFICIENT_ATTENTION": "torch-sdpa-efficient", "MATH": "torch-sdpa-math"}


def sdpa_order():
    """Per SDPA shape (the math backend's records): torch's own pick (_fused_sdp_choice with
    every backend enabled) against attncap's first supported torch-sdpa-* in policy order."""
    import attncap
    env_rec, cases, _ = load("sdpa_h100.jsonl")
    env = environment(env_rec)
    for case in cases:
        if case["backend"] != "torch-sdpa-math" or case.get("default_choice") not in SDPA_CHOICE:
            continue
        res = attncap.resolve(query(case), env, probes=False)
        ours = next((d.backend for d in res.decisions if d.backend.startswith("torch-sdpa-") and d.supported), None)
        yield {"id": case["id"], "torch": SDPA_CHOICE[case["default_choice"]], "attncap": ours}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--all", action="store_true", help="print agreeing cases too")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    n = bad = 0
    for name in FILES:
        for row in compare(name):
            n += 1
            dis = row["table"] != row["observed"]
            bad += dis and not row.get("explained")
            if not (dis or a.all):
                continue
            if a.json:
                print(json.dumps(row))
            else:
                tag = "EXPLAINED" if row.get("explained") else ("DISAGREE" if dis else "ok")
                print(f"{tag:9} {row['backend']:20} table={row['table']!s:5} observed={row['observed']!s:5} "
                      f"{row['id']}  | {(row.get('observed_error') or '')[:160]}")
    print(f"{n} cases, {bad} unexplained disagreements")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

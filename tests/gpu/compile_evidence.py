"""Compare compile-only FA4 evidence (tests/evidence/fa4_compile_*.jsonl) with attncap's tables.

CPU only: needs attncap, not torch or FA4.

    python tests/gpu/compile_evidence.py          # every disagreement
    python tests/gpu/compile_evidence.py --all    # every record

The records come from tests/gpu/compile_sweep.py (format in its docstring). A compile is a
weaker kind of evidence than a run, so only its negative answers are held against the table:

- a pass that does not compile (`compile_error`, `resources`, `crash`) must be unsupported in
  the table; a failed forward also denies training. When the YAML denies it through a known
  issue, that issue should cite the evidence file.
- a pair FA4's validator refuses (`rejected`) must be unsupported.
- a pass that compiles must not be denied by a known issue citing the evidence file (stale).
- `compiles` otherwise says nothing about "supported": it is not "ran", let alone "correct".
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evidence  # noqa: E402  (the GPU evidence reader beside this file)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVIDENCE_DIR = os.path.join(ROOT, "tests", "evidence")
PATTERN = "fa4_compile_*.jsonl"
FAILED = ("compile_error", "resources", "crash")
OUTCOMES = FAILED + ("compiles", "rejected", "timeout")


def files():
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(EVIDENCE_DIR, PATTERN)))


def load(name):
    """(env header, [compile records], summary) of one evidence file (the same layout as the GPU runs')."""
    return evidence.load(name, record="compile")


def _decision(env, rec, training):
    import attncap
    e = attncap.Environment(arch=env["arch"], versions={"flash-attn-4": env["flash-attn-4"]})
    c = env["config"]
    q = attncap.AttentionQuery(arch=None, dtype=rec["dtype"], head_dim_qk=rec["head_dim_qk"],
                               head_dim_v=rec["head_dim_v"], num_heads_q=c["num_heads_q"],
                               num_heads_kv=c["num_heads_kv"], seqlen_q=c["seqlen_q"],
                               seqlen_kv=c["seqlen_kv"], training=training)
    return attncap.resolve(q, e, probes=False).decision(rec["backend"])


def cites(decision, name):
    """Ids of the decision's known issues whose source cites the evidence file."""
    return [r.rule for r in decision.reasons
            if r.code == "known_issue" and f"tests/evidence/{name}" in (r.source or "")]


def compare(name):
    """Yield one row per (pair, inference|training) query: what the evidence says, what the table
    says, and `problem` (None when they agree). Inference needs the forward, training both passes."""
    env, recs, _ = load(name)
    pairs = {}
    for rec in recs:
        pairs.setdefault((rec["head_dim_qk"], rec["head_dim_v"]), {})[rec["pass"]] = rec
    for (hd, hdv), passes in pairs.items():
        for training in (False, True):
            needed = [passes.get("forward"), passes.get("backward") if training else None]
            needed = [r for r in needed if r is not None]
            if not needed:
                continue
            failed = [r for r in needed if r["outcome"] in FAILED + ("rejected",)]
            all_compile = len(needed) == (2 if training else 1) and all(r["outcome"] == "compiles" for r in needed)
            d = _decision(env, needed[0], training)
            cited = cites(d, name)
            problem = None
            if failed and d.supported:
                problem = f"table says supported; {failed[0]['pass']} {failed[0]['outcome']}"
            elif all_compile and cited:
                problem = f"every pass compiles, but known issue(s) citing the file deny it: {cited}"
            shown = failed[0] if failed else needed[0]
            yield {"id": f"{shown['id'].rsplit('-', 1)[0]}-{'train' if training else 'infer'}",
                   "training": training, "outcomes": {r["pass"]: r["outcome"] for r in needed},
                   "error_class": shown.get("error_class"), "table": bool(d.supported),
                   "decided_by": d.decided_by, "rule": d.rule, "cited": cited, "problem": problem,
                   "error": shown.get("error") or "; ".join(shown.get("over_limit") or [])}


def summary(name):
    """Markdown lines: per pass, the outcome counts, split by whether the record's table said
    supported when it was swept, and which pairs the table called supported do not compile."""
    env, recs, summ = load(name)
    lines = [f"{env['arch']} ({env['target']}, {len(recs)} records, {len(summ['not_run'])} not run):"]
    for p in ("forward", "backward"):
        rs = [r for r in recs if r["pass"] == p]
        for table in (True, False):
            sub = [r for r in rs if r["table_supported"] is table]
            if sub:
                counts = ", ".join(f"{o} {sum(r['outcome'] == o for r in sub)}" for o in OUTCOMES
                                   if any(r["outcome"] == o for r in sub))
                lines.append(f"- {p}, table {'supported' if table else 'unsupported'}: {len(sub)} pairs: {counts}")
        bad = [(r["head_dim_qk"], r["head_dim_v"]) for r in rs if r["table_supported"] and r["outcome"] in FAILED]
        if bad:
            lines.append(f"- {p}: table-supported pairs that do not compile: {bad}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--summary", action="store_true", help="outcome counts per file (Markdown)")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    if a.summary:
        for name in files():
            print("\n".join(summary(name)) + "\n")
        return 0
    n = bad = 0
    for name in files():
        for row in compare(name):
            n += 1
            bad += row["problem"] is not None
            if row["problem"] or a.all:
                print(json.dumps({"file": name, **row}))
    print(f"{n} rows, {bad} disagreements")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

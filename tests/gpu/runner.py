"""Run every case of tests/gpu/cases.py, one subprocess per case, a few in parallel.

    python tests/gpu/runner.py --backend sdpa --out OUT/sdpa_h100.jsonl [--jobs 12]
    python tests/gpu/runner.py --backend fa4  --out OUT/fa4_h100.jsonl --timeout 300

Writes JSON Lines: first an environment record ({"record": "env", ...}), then one
{"record": "case", ...} per case, in the order of cases.py (results are appended as
they finish to OUT.partial, then sorted into OUT at the end).  With --resume, cases
already in OUT.partial (or OUT) are not run again.  --deadline (seconds) stops
starting new cases so the command ends inside its time limit; cases never started
are listed in the summary record.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cases as casesmod  # noqa: E402

RUN_CASE = os.path.join(HERE, "run_case.py")


def _parse(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def _tail(s, n=300):
    s = " ".join((s or "").split())
    return s[-n:]


def run_one(case, timeout):
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, RUN_CASE, "--case", json.dumps(case)],
                           capture_output=True, text=True, timeout=timeout)
        rec = _parse(p.stdout)
        if rec is None:
            rec = {"record": "case", "id": case["id"], "backend": case["backend"],
                   **{k: v for k, v in case.items() if k not in ("id", "backend")},
                   "ran_forward": False, "supported": False, "status": "crash",
                   "returncode": p.returncode, "error": _tail(p.stderr or p.stdout)}
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        rec = {"record": "case", "id": case["id"], "backend": case["backend"],
               **{k: v for k, v in case.items() if k not in ("id", "backend")},
               "ran_forward": False, "supported": False, "status": "timeout",
               "error": f"timeout after {timeout}s; " + _tail(err, 200)}
    rec["wall_s"] = round(time.time() - t0, 1)
    return rec


def env_record():
    p = subprocess.run([sys.executable, RUN_CASE, "--env"], capture_output=True, text=True, timeout=300)
    rec = _parse(p.stdout) or {"record": "env", "error": _tail(p.stderr)}
    rec["fa4_env"] = {k: os.environ.get(k) for k in ("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED",)}
    return rec


def summarize(records):
    by = defaultdict(Counter)
    for r in records:
        if r.get("record") != "case":
            continue
        c = by[r["backend"]]
        c["cases"] += 1
        c[r.get("status", "?")] += 1
        if r.get("can_use") is not None:
            c["can_use_true" if r["can_use"] else "can_use_false"] += 1
            if bool(r["can_use"]) != bool(r.get("supported")):
                c["can_use_disagrees"] += 1
    return {b: dict(c) for b, c in sorted(by.items())}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="sdpa", help="sdpa | fa4 | fa4-sm90 | all | a backend id")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=120.0, help="per case, seconds")
    ap.add_argument("--deadline", type=float, default=None, help="stop starting cases after N s")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="first N cases only (smoke)")
    ap.add_argument("--ids", default=None, help="comma-separated case ids")
    a = ap.parse_args(argv)

    all_cases = casesmod.all_cases()
    if a.backend == "sdpa":
        todo = [c for c in all_cases if c["backend"] in casesmod.SDPA_BACKENDS]
    elif a.backend == "fa4":
        todo = [c for c in all_cases if c["backend"] == casesmod.FA4]
    elif a.backend == "fa4-sm90":
        todo = casesmod.fa4_sm90_cases()
    elif a.backend == "all":
        todo = all_cases
    else:
        todo = [c for c in all_cases if c["backend"] == a.backend]
    if a.ids:
        want = set(a.ids.split(","))
        todo = [c for c in todo if c["id"] in want]
    if a.limit:
        todo = todo[: a.limit]
    order = {c["id"]: i for i, c in enumerate(todo)}

    partial = a.out + ".partial"
    done = {}
    if a.resume:
        for path in (a.out, partial):
            if os.path.exists(path):
                with open(path) as f:
                    for line in f:
                        try:
                            r = json.loads(line)
                        except ValueError:
                            continue
                        if r.get("record") == "case" and r.get("status") != "not_started":
                            done[r["id"]] = r
    pending = [c for c in todo if c["id"] not in done]

    t_start = time.time()
    env = env_record()
    print("ENV", json.dumps(env), flush=True)
    lock = threading.Lock()
    results = dict(done)
    skipped = []
    fpart = open(partial, "a")

    def work(case):
        if a.deadline is not None and time.time() - t_start > a.deadline:
            skipped.append(case["id"])
            return
        rec = run_one(case, a.timeout)
        with lock:
            results[case["id"]] = rec
            fpart.write(json.dumps(rec) + "\n")
            fpart.flush()
            n = len(results)
            print(f"[{n}/{len(todo)} {time.time() - t_start:6.0f}s] {str(rec.get('status')):>12} "
                  f"{rec['id']} {(rec.get('error') or rec.get('bwd_error') or '')[:100]}", flush=True)

    with ThreadPoolExecutor(max_workers=a.jobs) as ex:
        list(ex.map(work, pending))
    fpart.close()

    recs = sorted((r for r in results.values() if r["id"] in order), key=lambda r: order[r["id"]])
    summary = {"record": "summary", "backend_filter": a.backend, "cases_selected": len(todo),
               "cases_recorded": len(recs), "not_started": sorted(skipped),
               "wall_s": round(time.time() - t_start, 1), "by_backend": summarize(recs)}
    with open(a.out, "w") as f:
        f.write(json.dumps(env) + "\n")
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps(summary) + "\n")
    print("SUMMARY", json.dumps(summary["by_backend"], indent=1))
    print(f"recorded {len(recs)}/{len(todo)}; not started {len(skipped)}; {summary['wall_s']} s")


if __name__ == "__main__":
    main()

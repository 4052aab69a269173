"""Derive flash-attn-4's head-dim validator and entry-point gates, version by version.

For every published flash-attn-4 wheel this script reads ``flash_attn/cute/interface.py``
*without importing it* (``ast`` only) and writes a compact, exact JSON table of:

* what the head-dim validator accepts, per cc (9, 10, 11) and alignment (8, 16), over
  head_dim_qk x head_dim_v in 1..576. From 4.0.0b5 this is ``_validate_head_dims`` cut out of
  the module and executed alone; 4.0.0b3/b4 have no validator, so the inline head-dim asserts
  of ``_flash_attn_fwd`` / ``_flash_attn_bwd`` are evaluated instead.
* the gates around it: forward/backward arch asserts, which archs call the validator,
  the dtype asserts, and the arch asserts under the fp8 and learnable-sink branches.

Only derived facts are written; no FA4 code. Wheels are cached outside the repo.

    python tools/fa4_history.py --out tests/evidence/fa4_validator_history.json
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.version import Version

PKG = "flash-attn-4"
WHEELS = Path("/work/scratch/fa4_wheels")
IFACE = "flash_attn/cute/interface.py"
GRID = range(1, 577)
CCS = (9, 10, 11)          # what the validator judges (cc = arch // 10)
GATE_CCS = (8, 9, 10, 11, 12)  # what the entry-point gates are evaluated on
ALIGNMENTS = (8, 16)       # 16 // element_size: 8 for fp16/bf16, 16 for fp8
HEAD_DIM_NAMES = {"head_dim", "head_dim_v", "alignment"}

FORMAT = (
    "validators[id].accept[f'cc{cc}/a{alignment}'] is a list of (possibly overlapping) rectangles "
    "[qk_lo, qk_hi, v_lo, v_hi]; "
    "the validator accepts (head_dim_qk, head_dim_v) iff some rectangle has qk_lo <= qk <= qk_hi and "
    "v_lo <= v <= v_hi AND qk % alignment == 0 AND v % alignment == 0. Every other point of "
    "1..576 x 1..576 is rejected. Exactness is checked by decoding before writing. "
    "validators[id].versions lists the versions using that validator (grouped by identical answers). "
    "versions[v].gates: *_archs are the ccs (arch // 10, evaluated on 8..12) for which an assert passes; "
    "validator_call_{fwd,bwd} the ccs on which the entry point calls the validator ('inline' = "
    "unconditional inline asserts, b3/b4); fp8_fwd_archs null = fp8 dtypes not accepted; "
    "sink_bwd_archs null = no such assert. method: executed = _validate_head_dims run alone; "
    "inline = the head-dim-only asserts of _flash_attn_fwd and _flash_attn_bwd evaluated together."
)


# ---------------------------------------------------------------- wheels
def published_versions() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", PKG, "--pre"],
                         capture_output=True, text=True, check=True).stdout
    listed = re.search(r"Available versions:\s*(.*)", out).group(1).split(", ")
    return sorted((v for v in listed if Version(v).is_prerelease), key=Version)


def wheel(version: str) -> Path:
    found = sorted(WHEELS.glob(f"flash_attn_4-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--pre",
                        f"{PKG}=={version}", "-d", str(WHEELS)], check=True)
        found = sorted(WHEELS.glob(f"flash_attn_4-{version}-*.whl"))
    return found[0]


# ---------------------------------------------------------------- ast helpers
def free_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def evaluate(expr: ast.expr, **names) -> object:
    return eval(compile(ast.Expression(expr), "<fa4>", "eval"), {"__builtins__": {}}, names)


def walk_with_guards(body: list[ast.stmt], guards=()):
    """Yield (stmt, guards) for every statement; guards = ((if_test, taken_branch), ...)."""
    for stmt in body:
        yield stmt, guards
        if isinstance(stmt, ast.If):
            yield from walk_with_guards(stmt.body, guards + ((stmt.test, True),))
            yield from walk_with_guards(stmt.orelse, guards + ((stmt.test, False),))
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from walk_with_guards(getattr(stmt, field, []) or [], guards)


def arch_set(test: ast.expr) -> list[int]:
    return [cc for cc in GATE_CCS if evaluate(test, arch=cc * 10)]


def guarded_ccs(guards) -> list[int] | None:
    """ccs on which all arch-only guards hold; None if a guard depends on something else."""
    if any(free_names(t) - {"arch"} for t, _ in guards):
        return None
    return [cc for cc in GATE_CCS if all(bool(evaluate(t, arch=cc * 10)) == b for t, b in guards)]


def dtype_list(test: ast.expr) -> list[str] | None:
    if (isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.In)
            and ast.unparse(test.left) in ("q.dtype", "v.dtype")
            and isinstance(test.comparators[0], (ast.List, ast.Tuple))):
        return [e.attr for e in test.comparators[0].elts]
    return None


# ---------------------------------------------------------------- per version
def analyse(source: str) -> dict:
    tree = ast.parse(source)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    gates: dict = {"fp8_fwd_archs": None, "sink_bwd_archs": None}
    inline: list[ast.expr] = []
    for side, name in (("fwd", "_flash_attn_fwd"), ("bwd", "_flash_attn_bwd")):
        gates[f"validator_call_{side}"] = "inline" if "_validate_head_dims" not in funcs else []
        for stmt, guards in walk_with_guards(funcs[name].body):
            if isinstance(stmt, ast.Assert):
                names = free_names(stmt.test)
                msg = ast.unparse(stmt.msg) if stmt.msg else ""
                if names == {"arch"} and not guards:
                    gates[f"{side}_archs"] = arch_set(stmt.test)
                elif names == {"arch"} and "FP8" in msg:
                    gates["fp8_fwd_archs"] = arch_set(stmt.test)
                elif names == {"arch"} and "sink" in msg.lower():
                    gates["sink_bwd_archs"] = arch_set(stmt.test)
                elif names and names <= HEAD_DIM_NAMES and "_validate_head_dims" not in funcs:
                    assert not guards, f"guarded head-dim assert in {name}: {ast.unparse(stmt)}"
                    inline.append(stmt.test)
                elif not guards and dtype_list(stmt.test):
                    gates[f"{side}_dtypes"] = dtype_list(stmt.test)
            for call in ast.walk(stmt) if isinstance(stmt, ast.Expr) else ():
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "_validate_head_dims":
                    gates[f"validator_call_{side}"] = guarded_ccs(guards)
    if gates["fp8_fwd_archs"] is not None:
        assert any("float8" in d for d in gates["fwd_dtypes"])
    if "_validate_head_dims" in funcs:
        fn = funcs["_validate_head_dims"]
        fn.decorator_list = []
        ns: dict = {}
        exec(compile(ast.Module([fn], []), "<fa4 validator>", "exec"), ns)  # validator only
        validator, method = ns["_validate_head_dims"], "executed"
        key = hashlib.sha256(ast.unparse(fn).encode()).hexdigest()
    else:
        def validator(head_dim, head_dim_v, compute_capability, alignment):
            for test in inline:
                assert evaluate(test, head_dim=head_dim, head_dim_v=head_dim_v, alignment=alignment)
        method = "inline"
        key = hashlib.sha256("\n".join(sorted({ast.unparse(t) for t in inline})).encode()).hexdigest()
    return {"method": method, "key": key, "validator": validator, "gates": gates}


def accepted(validator, cc: int, alignment: int) -> set[tuple[int, int]]:
    ok = set()
    for qk in GRID:
        for v in GRID:
            try:
                validator(qk, v, cc, alignment)
            except AssertionError:
                continue
            ok.add((qk, v))
    return ok


# ---------------------------------------------------------------- compression
def intervals(values: list[int], step: int) -> list[tuple[int, int]]:
    runs: list[list[int]] = []
    for x in values:
        if runs and x == runs[-1][1] + step:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return [tuple(r) for r in runs]


def to_rectangles(points: set[tuple[int, int]], alignment: int) -> list[list[int]]:
    assert all(qk % alignment == 0 and v % alignment == 0 for qk, v in points), "unaligned point"
    rows: dict[int, tuple] = {}
    for qk in sorted({qk for qk, _ in points}):
        rows[qk] = tuple(intervals(sorted(v for q, v in points if q == qk), alignment))
    rects = []  # one rectangle per (v interval, run of qk rows that contain that interval)
    for v_lo, v_hi in dict.fromkeys(iv for vset in rows.values() for iv in vset):
        qks = [qk for qk, vset in rows.items() if (v_lo, v_hi) in vset]
        rects += [[qk_lo, qk_hi, v_lo, v_hi] for qk_lo, qk_hi in intervals(qks, alignment)]
    return sorted(rects)


def from_rectangles(rects, alignment: int) -> set[tuple[int, int]]:
    return {(qk, v) for a, b, c, d in rects for qk in range(a, b + 1) for v in range(c, d + 1)
            if qk % alignment == 0 and v % alignment == 0}


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/evidence/fa4_validator_history.json"))
    args = ap.parse_args()
    WHEELS.mkdir(parents=True, exist_ok=True)

    validators: dict[str, dict] = {}   # answers (json) -> entry
    versions: dict[str, dict] = {}
    by_key: dict[str, str] = {}        # validator source hash -> answers json (execute once)
    for ver in published_versions():
        with zipfile.ZipFile(wheel(ver)) as zf:
            if IFACE not in zf.namelist():
                print(f"{ver}: no {IFACE}, skipped", file=sys.stderr)
                continue
            source = zf.read(IFACE).decode()
        info = analyse(source)
        if info["key"] not in by_key:
            accept = {}
            for cc in CCS:
                for a in ALIGNMENTS:
                    pts = accepted(info["validator"], cc, a)
                    accept[f"cc{cc}/a{a}"] = rects = to_rectangles(pts, a)
                    assert from_rectangles(rects, a) == pts, (ver, cc, a)
            by_key[info["key"]] = json.dumps(accept, sort_keys=True)
        answers = by_key[info["key"]]
        entry = validators.setdefault(answers, {"id": f"V{len(validators) + 1}",
                                                "method": info["method"], "versions": [],
                                                "accept": json.loads(answers)})
        entry["versions"].append(ver)
        versions[ver] = {"validator": entry["id"],
                         "interface_sha256": hashlib.sha256(source.encode()).hexdigest(),
                         "gates": dict(sorted(info["gates"].items()))}
        print(f"{ver}: {entry['id']} {info['gates']}", file=sys.stderr)

    doc = {"format": FORMAT, "package": PKG, "grid": [GRID.start, GRID.stop - 1],
           "source": f"{IFACE} of each wheel on PyPI, read with ast (tools/fa4_history.py)",
           "validators": {e["id"]: {k: e[k] for k in ("method", "versions", "accept")}
                          for e in validators.values()},
           "versions": versions}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1)
    text = re.sub(r"\[[^\[\]{}]*\]", lambda m: " ".join(m.group(0).split()), text)  # flat lists on one line
    args.out.write_text(text + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

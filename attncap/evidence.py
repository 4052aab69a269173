"""`attncap evidence import`: hold a measured GPU sweep against the table, and propose YAML.

A sweep is JSON Lines in one of two shapes (both read here, one observation model):
  * tests/gpu/runner.py records: {"record": "env", ...} header, {"record": "case", ...} per case
    (head_dim_qk, head_dim_v, ran_forward, fwd_correct, ran_backward, bwd_correct, error, ...);
  * flat per-pair records (no header): {"hd", "hdv", "ran_fwd", "fwd_error", "sticky_cuda_error",
    "ran_bwd", "bwd_error", "numerics_ok", "causal", "seqlen_q", "seqlen_k", "hq", "hkv", ...};
    arch and versions then come from the command line.
Each case gives an inference observation (the forward ran and was correct) and, when it was a
training case, a training one (forward and backward ran and were correct). A failure's effect is
read from its error text (EFFECT_PATTERNS). A disagreement is a case where the table's verdict
differs from the observation; it is *explained* when the table rejects through a known issue whose
source cites the sweep file (the table knowing better, e.g. a shape-dependent wrong dQ).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from .environment import Environment
from .query import AttentionQuery

# First match wins; the error text is the forward's or backward's exception, cut.
EFFECT_PATTERNS = (
    ("poisons_cuda_context", r"illegal memory access|illegal address|misaligned address|unspecified launch failure"),
    ("resource_limit", r"Insufficient registers|too many resources|shared memory|CUDA_LAUNCH_INVALID_CONFIG|"
                       r"cudaErrorInvalidValue|out of resource"),
    ("compile_error", r"MLIRError|Operation creation failed|CompilerDiagnosticError|PTX assembly failed|"
                      r"DSLRuntimeError|failed to partition"),
    ("raises", r"AssertionError|ValueError|TypeError|NotImplementedError|RuntimeError"),
)


@dataclass(frozen=True)
class Observation:
    line: int  # 1-based line of the record in the sweep file
    id: str
    dtype: str
    head_dim_qk: int
    head_dim_v: int
    num_heads_q: int | None
    num_heads_kv: int | None
    seqlen_q: int | None
    seqlen_kv: int | None
    mask: str
    window: tuple[int, int] | None
    training: bool
    ok: bool
    effect: str | None  # when not ok
    error: str | None

    def query(self) -> AttentionQuery:
        return AttentionQuery(dtype=self.dtype, head_dim_qk=self.head_dim_qk, head_dim_v=self.head_dim_v,
                              num_heads_q=self.num_heads_q, num_heads_kv=self.num_heads_kv,
                              seqlen_q=self.seqlen_q, seqlen_kv=self.seqlen_kv, training=self.training,
                              mask=self.mask, window=self.window)

    def group(self) -> tuple:
        """What a proposed known issue's `when` keeps besides the head dims."""
        gqa = None if self.num_heads_kv is None else self.num_heads_q != self.num_heads_kv
        return (self.training, self.dtype, self.mask, gqa, self.window is not None)


def effect_of(error: str | None, sticky: bool | None = None, status: str | None = None) -> str:
    if sticky:
        return "poisons_cuda_context"
    if status in ("crash", "timeout"):
        return "crash"
    for effect, pattern in EFFECT_PATTERNS:
        if error and re.search(pattern, error):
            return effect
    return "crash" if error is None else "raises"


@dataclass
class Sweep:
    path: str
    env: dict
    observations: list[Observation] = field(default_factory=list)


class SweepError(ValueError):
    """Bad sweep input: names file:line (cli.main prints it as one error line, exit 2)."""


def read_sweep(path: str, *, arch: str | None = None, versions: dict | None = None) -> Sweep:
    """Both record shapes; `arch`/`versions` fill (and override) the env header."""
    sweep = Sweep(path, {})
    try:
        f = open(path)
    except OSError as exc:
        raise SweepError(f"{path}: cannot read: {exc.strerror}") from None
    with f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except ValueError as exc:
                raise SweepError(f"{path}:{n}: not JSON: {exc}") from None
            if not isinstance(rec, dict):
                raise SweepError(f"{path}:{n}: expected a JSON object")
            kind = rec.get("record")
            if kind == "env":
                sweep.env = rec
            elif kind == "case":
                if rec.get("backend", "flash-attn-4") == "flash-attn-4" or "backend" not in rec:
                    sweep.observations += _from_case(rec, n, path)
            elif kind is None and "hd" in rec:
                sweep.observations += _from_flat(rec, n, path)
            elif kind not in ("summary",):
                raise SweepError(f"{path}:{n}: neither a runner record (record: env|case|summary) "
                                 "nor a flat per-pair record (hd, hdv, ran_fwd, ...)")
    if arch:
        sweep.env["arch"] = arch
    for package, version in (versions or {}).items():
        sweep.env[package] = version
    if not sweep.env.get("arch"):
        raise SweepError(f"{path}: no env header names the arch: pass --arch")
    return sweep


def _need(rec, key, n, path):
    if key not in rec:
        raise SweepError(f"{path}:{n}: field {key!r} is missing")
    value = rec[key]
    if key.startswith("head_dim") or key in ("hd", "hdv"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SweepError(f"{path}:{n}: field {key!r} must be an integer, not {value!r}")
    return value


def _from_case(rec, n, path) -> list[Observation]:
    hd, hdv = _need(rec, "head_dim_qk", n, path), _need(rec, "head_dim_v", n, path)
    base = dict(line=n, id=rec.get("id") or f"line {n}", dtype=_need(rec, "dtype", n, path),
                head_dim_qk=hd, head_dim_v=hdv, num_heads_q=rec.get("num_heads_q"),
                num_heads_kv=rec.get("num_heads_kv"), seqlen_q=rec.get("seqlen_q"), seqlen_kv=rec.get("seqlen_kv"),
                mask=rec.get("mask") or "none", window=tuple(rec["window"]) if rec.get("window") else None)
    if rec.get("dropout"):
        return []  # dropout is checked for finiteness only: no verdict to compare
    fwd_ok = bool(rec.get("ran_forward")) and rec.get("fwd_correct") is not False
    sticky, status = rec.get("sticky_cuda_error"), rec.get("status")
    if fwd_ok:
        fwd_effect, fwd_err = None, None
    elif rec.get("ran_forward"):
        fwd_effect, fwd_err = "wrong_result", f"wrong output: {rec.get('fwd_err')}"
    else:
        fwd_effect, fwd_err = effect_of(rec.get("error"), sticky, status), rec.get("error")
    out = [Observation(**base, training=False, ok=fwd_ok, effect=fwd_effect, error=fwd_err)]
    if rec.get("training"):
        ok = fwd_ok and bool(rec.get("ran_backward")) and rec.get("bwd_correct") is not False
        effect, err = fwd_effect, fwd_err
        if fwd_ok and not ok:
            if rec.get("ran_backward"):
                effect, err = "wrong_result", f"wrong gradients: {rec.get('bwd_err')}"
            else:
                effect, err = effect_of(rec.get("bwd_error"), sticky, status), rec.get("bwd_error")
        out.append(Observation(**base, training=True, ok=ok, effect=None if ok else effect, error=None if ok else err))
    return out


def _from_flat(rec, n, path) -> list[Observation]:
    hd, hdv = _need(rec, "hd", n, path), _need(rec, "hdv", n, path)
    case = {"record": "case", "id": rec.get("id") or f"hd{hd}-hdv{hdv}", "dtype": rec.get("dtype", "bf16"),
            "head_dim_qk": hd, "head_dim_v": hdv, "num_heads_q": rec.get("hq"), "num_heads_kv": rec.get("hkv"),
            "seqlen_q": rec.get("seqlen_q"), "seqlen_kv": rec.get("seqlen_k"),
            "mask": "causal_bottom_right" if rec.get("causal") else "none", "training": bool(rec.get("bwd")),
            "ran_forward": _need(rec, "ran_fwd", n, path), "fwd_correct": rec.get("fwd_ok", True),
            "error": rec.get("fwd_error"), "ran_backward": rec.get("ran_bwd"),
            "bwd_correct": rec.get("numerics_ok"), "bwd_error": rec.get("bwd_error"),
            "sticky_cuda_error": rec.get("sticky_cuda_error")}
    if rec.get("rel_err_fwd") is not None:  # the sweep's own tolerance (its README): 3x bf16 error + 2e-3
        case["fwd_correct"] = rec["rel_err_fwd"] <= 3 * rec.get("baseline_rel_err_fwd", 0.0) + 2e-3
    elif rec.get("ran_fwd") and rec.get("ran_bwd") is None:
        case["fwd_correct"] = rec.get("numerics_ok") is not False
    return _from_case(case, n, path)


def environment(sweep: Sweep) -> Environment:
    env = sweep.env
    versions = {k: env[k] for k in ("torch", "flash-attn-4") if env.get(k)}
    return Environment(arch=env["arch"], versions=versions, cudnn=env.get("cudnn"))


def cites(path: str) -> str:
    """How a known issue cites the sweep: its path from the repository root when it is inside one."""
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "tests" and i + 1 < len(parts) and parts[i + 1] == "evidence":
            return "/".join(parts[i:])
    return os.path.basename(path)


@dataclass
class Row:
    obs: Observation
    table: bool
    issues: list[str]  # known issues that reject it
    effects: list[str | None]
    explained: bool
    by_issue: bool = False  # the support rules accept; known issues alone reject

    @property
    def disagrees(self) -> bool:
        return self.table != self.obs.ok

    @property
    def effect_differs(self) -> bool:
        """Both fail, through known issues, but none of them records the effect that was seen
        (issues with no effect, e.g. 'unverified' ones, do not count as a claim)."""
        claimed = [e for e in self.effects if e]
        return self.by_issue and not self.obs.ok and bool(claimed) and self.obs.effect not in claimed

    @property
    def problem(self) -> bool:
        return (self.disagrees and not self.explained) or self.effect_differs


def compare(sweep: Sweep, backend: str = "flash-attn-4", registry=None) -> list[Row]:
    from .resolver import resolve
    env = environment(sweep)
    citation = cites(sweep.path)
    rows = []
    for obs in sweep.observations:
        d = resolve(obs.query(), env, probes=False, registry=registry).decision(backend)
        known = [r for r in d.reasons if r.code == "known_issue"]
        explained = any(citation in (r.source or "") for r in known)
        rows.append(Row(obs, bool(d.supported), [r.rule for r in known], [r.effect for r in known], explained,
                        by_issue=bool(known) and d.static))
    return rows


# --- the proposal: failing points merged into rectangles of head-dim blocks --------------------

def _block(value: int, size: int) -> int:
    return -(-value // size)


def rectangles(points: set[tuple[int, int]], size: int) -> list[tuple[int, int, int, int]]:
    """Maximal runs of blocks along head_dim_v, stacked along head_dim_qk when the runs are equal:
    (qk_lo, qk_hi, v_lo, v_hi) as inclusive block indices."""
    rows: dict[int, set[int]] = {}
    for qk, v in points:
        rows.setdefault(_block(qk, size), set()).add(_block(v, size))
    runs: dict[int, list[tuple[int, int]]] = {}
    for i, cols in rows.items():
        cols_sorted, out = sorted(cols), []
        for c in cols_sorted:
            if out and out[-1][1] == c - 1:
                out[-1] = (out[-1][0], c)
            else:
                out.append((c, c))
        runs[i] = out
    rects: list[list[int]] = []
    for i in sorted(runs):
        for lo, hi in runs[i]:
            top = next((r for r in rects if r[1] == i - 1 and r[2] == lo and r[3] == hi), None)
            if top:
                top[1] = i
            else:
                rects.append([i, i, lo, hi])
    return [tuple(r) for r in rects]


def _range(lo: int, hi: int, size: int) -> str:
    return f"{{min: {(lo - 1) * size + 1}, max: {hi * size}}}"


def propose(rows: list[Row], source: str, *, size: int, version: str | None, arch: str, prefix: str) -> str:
    """Known issues (YAML) for the points the table accepts but that failed, merged per effect and group."""
    groups: dict[tuple, set] = {}
    for row in rows:
        if row.disagrees and not row.explained and not row.obs.ok:
            groups.setdefault((row.obs.effect, row.obs.group()), set()).add((row.obs.head_dim_qk, row.obs.head_dim_v))
    lines = []
    for (effect, (training, dtype, mask, gqa, window)), points in sorted(groups.items(), key=str):
        for k, (a, b, c, d) in enumerate(rectangles(points, size)):
            when = [f"arch: [{arch}]", f"dtype: [{dtype}]"]
            if training:
                when.append("training: true")
            when += [f"head_dim_qk: {_range(a, b, size)}", f"head_dim_v: {_range(c, d, size)}"]
            if mask != "none":
                when.append(f"mask: [{mask}]")
            if gqa is not None:
                when.append(f"gqa: {str(gqa).lower()}")
            if window:
                when.append("window: true")
            lines += [f"  - id: {prefix}-{effect.replace('_', '-')}-{len(lines) // 6 + 1}",
                      f"    versions: \"{'>=' + version if version else '<fill in>'}\"",
                      f"    when: {{{', '.join(when)}}}",
                      f"    effect: {effect}",
                      f"    reason: <what fails, from the error text; {len(points)} point(s) in this group>",
                      f"    source: {source}"]
    return "\n".join(lines)


def mixed_blocks(rows: list[Row], size: int) -> list[tuple[tuple, int, int]]:
    """(group, qk block, v block) where the sweep has both passing and failing points: the outcome
    is not constant on blocks of `size`, so the proposal's rectangles do not generalise there."""
    seen: dict[tuple, set] = {}
    for row in rows:
        o = row.obs
        seen.setdefault((o.group(), _block(o.head_dim_qk, size), _block(o.head_dim_v, size)), set()).add(
            o.effect if not o.ok else "ok")
    return [(g, a, b) for (g, a, b), outcomes in seen.items() if len(outcomes) > 1]


# --- the command ---------------------------------------------------------------------------------

def _describe(row: Row) -> str:
    o = row.obs
    shape = (f"{o.dtype} qk={o.head_dim_qk} v={o.head_dim_v} {'training' if o.training else 'inference'}"
             f" mask={o.mask}" + (f" heads={o.num_heads_q}:{o.num_heads_kv}" if o.num_heads_kv else "")
             + (f" seqlen={o.seqlen_q}/{o.seqlen_kv}" if o.seqlen_q else ""))
    seen = "ok" if o.ok else f"fails ({o.effect}): {' '.join((o.error or '').split())[:120]}"
    if row.disagrees:
        table = "supported" if row.table else "rejected" + (f" by {', '.join(row.issues)}" if row.issues else "")
        return f"{shape}: table says {table}, observed {seen}"
    return f"{shape}: observed {o.effect}, but {', '.join(row.issues)} record {', '.join(filter(None, row.effects))}"


def run_import(path: str, *, backend: str, arch=None, versions=None, block: int = 16, registry=None) -> dict:
    sweep = read_sweep(path, arch=arch, versions=versions)
    rows = compare(sweep, backend, registry)
    problems = [r for r in rows if r.problem]
    source = cites(path)
    yaml = propose(rows, f"{source} ({sweep.env.get('gpu') or sweep.env['arch']}, {backend} "
                   f"{sweep.env.get(backend) or '?'})", size=block, version=sweep.env.get(backend),
                   arch=sweep.env["arch"], prefix=f"{sweep.env['arch']}-measured")
    return {"file": path, "backend": backend, "env": sweep.env,
            "observations": len(rows), "agree": sum(not r.disagrees for r in rows),
            "explained": sum(r.disagrees and r.explained for r in rows), "problems": problems,
            "mixed_blocks": mixed_blocks(rows, block), "block": block, "yaml": yaml}


def render(result: dict, fmt: str) -> str:
    problems = result["problems"]
    if fmt == "json":
        return json.dumps({
            "file": result["file"], "backend": result["backend"], "arch": result["env"].get("arch"),
            "version": result["env"].get(result["backend"]), "observations": result["observations"],
            "agree": result["agree"], "explained": result["explained"],
            "disagreements": [{"line": r.obs.line, "id": r.obs.id, "training": r.obs.training,
                               "head_dim_qk": r.obs.head_dim_qk, "head_dim_v": r.obs.head_dim_v,
                               "kind": "verdict" if r.disagrees else "effect", "table": r.table,
                               "observed": r.obs.ok, "observed_effect": r.obs.effect, "known_issues": r.issues,
                               "issue_effects": r.effects, "error": r.obs.error} for r in problems],
            "mixed_blocks": [{"group": list(g), "qk_block": a, "v_block": b} for g, a, b in result["mixed_blocks"]],
            "block": result["block"], "proposed_yaml": result["yaml"]}, indent=2)
    if fmt == "github":
        def esc(text: str) -> str:
            return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        lines = [f"::error file={result['file']},line={r.obs.line},title=attncap evidence::{esc(_describe(r))}"
                 for r in problems]
        if result["yaml"]:
            lines.append(f"::notice file={result['file']},title=attncap evidence: proposed known issues::"
                         + esc(result["yaml"]))
        return "\n".join(lines)
    lines = [f"{result['file']}: {result['observations']} observations against {result['backend']} "
             f"{result['env'].get(result['backend']) or '(version not recorded)'} on {result['env']['arch']}: "
             f"{result['agree']} agree, {result['explained']} explained by a known issue citing the file, "
             f"{len(problems)} disagreement(s)"]
    lines += [f"  {result['file']}:{r.obs.line}: {_describe(r)}" for r in problems]
    for g, a, b in result["mixed_blocks"]:
        training, dtype, mask, gqa, window = g
        what = f"{'training' if training else 'inference'} {dtype} mask={mask}" + (" gqa" if gqa else "") + \
            (" window" if window else "")
        lines.append(f"  note: block qk {(a - 1) * result['block'] + 1}..{a * result['block']} x v "
                     f"{(b - 1) * result['block'] + 1}..{b * result['block']} ({what}) has mixed outcomes "
                     "(e.g. other sequence lengths)")
    if result["yaml"]:
        lines += ["proposed known issues (review, merge into capabilities/, give each a reason):", result["yaml"]]
    return "\n".join(lines)


def cmd_import(args) -> int:
    from .loader import default_registry, load_registry
    registry = load_registry(tuple(args.data)) if args.data else default_registry()
    if args.backend not in registry.backends:
        raise ValueError(f"unknown backend {args.backend!r}; known: {', '.join(sorted(registry.backends))}")
    versions = {}
    for item in args.version:
        package, sep, version = item.partition("=")
        if not sep or not version:
            raise ValueError(f"--version {item!r}: expected PACKAGE=VERSION")
        versions[package] = version
    arch = registry.vocabulary.arch_name(args.arch) or args.arch if args.arch else None
    if args.block < 1:
        raise ValueError("--block must be >= 1")
    result = run_import(args.file, backend=args.backend, arch=arch, versions=versions, block=args.block,
                        registry=registry)
    print(render(result, args.format))
    return 1 if result["problems"] else 0


def register_cli(sub) -> None:
    p = sub.add_parser("evidence", help="measured GPU sweeps against the table")
    verbs = p.add_subparsers(dest="verb", required=True)
    i = verbs.add_parser("import", help="compare a sweep (JSON Lines) with the table; propose YAML")
    i.add_argument("file")
    i.add_argument("--backend", default="flash-attn-4")
    i.add_argument("--arch", help="for sweeps without an env header (e.g. sm90)")
    i.add_argument("--version", action="append", default=[], metavar="PACKAGE=VERSION",
                   help="for sweeps without an env header, e.g. flash-attn-4=4.0.0b36")
    i.add_argument("--block", type=int, default=16,
                   help="merge the proposal in blocks of N head dims (FA4 pads to 16; 1 = exact points)")
    i.add_argument("--format", choices=["text", "json", "github"], default="text")
    i.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    i.set_defaults(func=cmd_import)

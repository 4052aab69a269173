"""`attncap drift`: compare the table with the installed library's own probe over a head-dim grid.

Only (arch, dtype) pairs where the table has an opinion on head dims are compared: when the
table rejects fp8 on sm90 for its dtype, the validator's view of fp8 head dims there is moot.
Points a known issue blocks are shown but are not drift: that is the table knowing better.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import probes as probe_registry
from .grid import HEAD_DIM_FIELDS, Plane, blocks, describe_values, regions
from .query import AttentionQuery
from .rules import Ctx

KINDS = {
    "probe-only": "the probe accepts, the table rejects",
    "table-only": "the table accepts, the probe rejects",
    "known-issue": "the probe accepts, a known issue rejects (not drift)",
}


@dataclass
class Finding:
    arch: str
    dtype: str
    kind: str
    qks: list[int]
    vs: list[int]
    issues: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.qks) * len(self.vs)

    def describe(self) -> str:
        shape = f"head_dim_qk {describe_values(self.qks)} x head_dim_v {describe_values(self.vs)}"
        extra = f" [{', '.join(self.issues)}]" if self.issues else ""
        return f"{self.arch} {self.dtype}: {KINDS[self.kind]}: {shape} ({_plural(self.count, 'point')}){extra}"


@dataclass
class DriftReport:
    backend: str
    package: str
    version: str
    probe: str
    findings: list[Finding]
    skipped: list[str]
    compared: int

    @property
    def drift(self) -> list[Finding]:
        return [f for f in self.findings if f.kind != "known-issue"]


def run_drift(registry, backend: str, env, *, archs=None, dtypes=None, n: int = 576) -> DriftReport:
    b = registry.compiled[backend]
    if b.probe is None:
        raise ValueError(f"{backend} declares no probe; nothing to compare with")
    probe = probe_registry.get(b.probe.name)
    version = env.version(b.package)
    if probe is None or not hasattr(probe, "plane_rows"):
        raise ValueError(f"probe {b.probe.name!r} cannot evaluate a grid")
    if version is None or probe.installed_version() != version:
        raise ValueError(f"{b.package} is not installed here: drift compares the table with the installed library")
    probe_registry.warm([probe.name])  # drift exists to ask the library: import it (ATTNCAP_PROBE_TIMEOUT at most)
    vocab = registry.vocabulary
    archs = archs or b.probe.archs or sorted(vocab.archs)
    dtypes = dtypes or sorted({d for r in registry.backends[backend].support for d in (r.dtype or vocab.dtypes)})
    findings, skipped, compared = [], [], 0
    for arch in archs:
        for dtype in dtypes:
            template = AttentionQuery(arch=arch, dtype=dtype, head_dim_qk=64, vocabulary=vocab)
            elem = vocab.dtypes[dtype].bytes
            ctx = Ctx(arch, elem, version, env.cudnn, b.package, vocab.cc(arch))
            if not any(r.matches(template, ctx, HEAD_DIM_FIELDS) for r in b.support):
                skipped.append(f"{arch} {dtype}: the table rejects it for reasons the probe does not judge")
                continue
            rows = probe.plane_rows(ctx, n)
            if rows is None:
                raise ValueError(f"probe {probe.name} is unavailable: {probe.unavailable_reason()}")
            findings += _compare(regions(b, registry.backends[backend], template, ctx, n), Plane(n, rows), arch, dtype)
            compared += n * n
    return DriftReport(backend, b.package, version, probe.name, findings, skipped, compared)


def _compare(r, probe: Plane, arch: str, dtype: str) -> list[Finding]:
    blocked = r.blocked
    out = [Finding(arch, dtype, "probe-only", qks, vs) for qks, vs in blocks(probe - r.support - blocked)]
    out += [Finding(arch, dtype, "table-only", qks, vs) for qks, vs in blocks(r.support - probe - blocked)]
    for qks, vs in blocks(probe & blocked):
        ids = [i for i, plane in r.issues.items() if (qks[0], vs[0]) in plane]
        out.append(Finding(arch, dtype, "known-issue", qks, vs, ids))
    return out


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def yaml_fix(report: DriftReport, f: Finding, index: int) -> str:
    """A YAML snippet that would remove this disagreement."""
    shape = _shape_yaml(f.qks, f.vs)
    source = f"attncap drift against {report.package} {report.version} (probe {report.probe})"
    if f.kind == "probe-only":
        return (f"support:\n  - id: drift-{f.arch}-{f.dtype}-{index}\n    arch: [{f.arch}]\n    dtype: [{f.dtype}]\n"
                f"{shape}    versions: \">={report.version}\"\n    source: {source}\n")
    return (f"known_issues:\n  - id: drift-{f.arch}-{f.dtype}-{index}\n    versions: \">={report.version}\"\n"
            f"    when:\n      arch: [{f.arch}]\n      dtype: [{f.dtype}]\n"
            + shape.replace("    ", "      ", 1).replace("\n    ", "\n      ")
            + f"    reason: the installed {report.package} rejects these head dims (probe {report.probe})\n"
            f"    source: {source}\n")


def _shape_yaml(qks: list[int], vs: list[int]) -> str:
    def as_range(values):
        step = values[1] - values[0] if len(values) > 1 else values[0]
        if all(b - a == step for a, b in zip(values, values[1:])) and values[0] % step == 0:
            return f"{{min: {values[0]}, max: {values[-1]}" + (f", multiple_of: {step}}}" if step > 1 else "}")
        return None
    qr, vr = as_range(qks), as_range(vs)
    if qr and vr:
        return f"    head_dim_qk: {qr}\n    head_dim_v: {vr}\n"
    pairs = ", ".join(f"[{a}, {b}]" for a in qks for b in vs)
    return f"    head_dims: [{pairs}]\n"


def render(report: DriftReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"backend": report.backend, "version": report.version, "compared_points": report.compared,
                           "drift": [f.__dict__ | {"count": f.count} for f in report.drift],
                           "known_issues": [f.__dict__ | {"count": f.count} for f in report.findings
                                            if f.kind == "known-issue"],
                           "skipped": report.skipped}, indent=2)
    if fmt == "github":
        return "\n".join(f"::{'warning' if f.kind == 'known-issue' else 'error'} title=attncap drift::{f.describe()}"
                         for f in report.findings)
    lines = [f"{report.backend}: table vs {report.package} {report.version}, {report.compared} points compared"]
    for i, f in enumerate(report.findings):
        lines.append(("  drift: " if f.kind != "known-issue" else "  shown: ") + f.describe())
        if f.kind != "known-issue":
            lines += ["    " + line for line in yaml_fix(report, f, i).splitlines()]
    lines += [f"  skipped {s}" for s in report.skipped]
    lines.append(f"{_plural(len(report.drift), 'drift finding')}")
    return "\n".join(lines)


def cmd_drift(args) -> int:
    from .environment import Environment
    from .loader import load_registry
    from .loader import default_registry
    registry = load_registry(tuple(args.data)) if args.data else default_registry()
    if args.backend not in registry.compiled:
        raise ValueError(f"--backend {args.backend!r} is unknown; known: {', '.join(sorted(registry.compiled))}")
    n = _grid_size(args.head_dims)
    vocab = registry.vocabulary
    archs = [_known("--arch", a, vocab.arch_name, vocab.archs) for a in args.arch] or None
    dtypes = [_known("--dtype", d, vocab.dtype_name, vocab.dtypes) for d in args.dtype] or None
    report = run_drift(registry, args.backend, Environment.detect(), archs=archs, dtypes=dtypes, n=n)
    if not report.compared:  # a green run that checked nothing would be a false green
        raise ValueError(f"no point was compared ({'; '.join(report.skipped) or 'empty grid'}): nothing checked")
    print(render(report, args.format))
    return 1 if report.drift else 0


def _grid_size(text: str) -> int:
    """N from `N` or `1..N` (N >= 1); a ValueError naming the flag otherwise (exit 2, never "drift found")."""
    lo, sep, hi = text.partition("..")
    if not (hi if sep else lo).strip().isdigit() or (sep and lo.strip() != "1") or int(hi or lo) < 1:
        raise ValueError(f"--head-dims {text!r}: expected 1..N or N with N a positive integer, e.g. 1..576")
    return int(hi or lo)


def _known(flag: str, value: str, lookup, known) -> str:
    name = lookup(value)
    if name is None:
        raise ValueError(f"{flag} {value!r} is unknown; known: {', '.join(known)}")
    return name


def register_cli(sub) -> None:
    p = sub.add_parser("drift", help="compare the table with the installed library's probe")
    p.add_argument("--backend", default="flash-attn-4")
    p.add_argument("--arch", action="append", default=[])
    p.add_argument("--dtype", action="append", default=[])
    p.add_argument("--head-dims", default="1..576", help="grid 1..N for head_dim_qk and head_dim_v")
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    p.set_defaults(func=cmd_drift)


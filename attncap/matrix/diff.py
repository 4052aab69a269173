"""`attncap diff-versions`: which head-dim pairs a backend gained or lost between two versions, and why."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..grid import Plane, regions
from .backend import backend_archs, backend_dtypes, check_backend, plane_context
from .blocks import Block, compact_blocks
from .compute import mode_name

CHANGE_KINDS = ("gained", "lost", "issue_added", "issue_removed", "conditional_added", "conditional_removed")


@dataclass
class Change:
    arch: str
    dtype: str
    kind: str  # gained | lost | issue_added | issue_removed
    block: Block
    detail: tuple[str, ...] = ()  # gained: what rejected it before; lost: what rejects it now; issue: the id


def _why(r, plane: Plane) -> list[tuple[tuple[str, ...], Plane]]:
    """`plane` split by what rejects it under regions `r`: known issues by id, else the support rules."""
    parts = []
    rest = plane
    for issue_id, region in r.issues.items():
        inside = rest & region
        if inside.count():
            parts.append(((f"known issue {issue_id}",), inside))
            rest = rest - region
    if rest.count():
        parts.append((("no support rule",), rest))
    return parts


def _changes_at(registry, backend: str, arch: str, dtype: str, old: str, new: str, *, training: bool,
                cudnn: str | None, n: int, fields: dict | None = None) -> list[Change]:
    b, bf = registry.compiled[backend], registry.backends[backend]

    def at(version: str):
        c = version if b.package == "cudnn" else cudnn
        return regions(b, bf, *plane_context(registry, backend, arch, dtype, version, c, training, fields), n)

    def changes(kind: str, plane: Plane, detail: tuple[str, ...]) -> list[Change]:
        return [Change(arch, dtype, kind, blk, detail) for blk in compact_blocks(plane)]

    ro, rn = at(old), at(new)
    so, sn = ro.supported, rn.supported
    out: list[Change] = []
    for why, plane in _why(ro, sn - so):
        out += changes("gained", plane, why)
    for why, plane in _why(rn, so - sn):
        out += changes("lost", plane, why)
    wo, wn = ro.support & ro.features, rn.support & rn.features
    empty = Plane.empty(n)
    for issue_id in dict.fromkeys([*rn.issues, *ro.issues]):
        io, in_ = wo & ro.issues.get(issue_id, empty), wn & rn.issues.get(issue_id, empty)
        out += changes("issue_added", in_ - io, (issue_id,))
        out += changes("issue_removed", io - in_, (issue_id,))
    return out + _conditional_changes(registry, backend, arch, dtype, old, new, training, cudnn, n, fields)


def _conditional_changes(registry, backend, arch, dtype, old, new, training, cudnn, n, fields) -> list[Change]:
    """Known issues with other conditions (seqlens, window, ...) that start or stop blocking shapes."""
    from .conditional import conditional_issues
    b = registry.compiled[backend]

    def at(version):
        c = version if b.package == "cudnn" else cudnn
        return {(i.id, i.conditions): i.plane
                for i in conditional_issues(registry, backend, arch, dtype, version, c, training, n, fields)}
    before, after = at(old), at(new)
    empty = Plane.empty(n)
    out = []
    for key in dict.fromkeys([*after, *before]):
        for kind, plane in (("conditional_added", after.get(key, empty) - before.get(key, empty)),
                            ("conditional_removed", before.get(key, empty) - after.get(key, empty))):
            out += [Change(arch, dtype, kind, blk, (key[0], *key[1])) for blk in compact_blocks(plane)]
    return out


def diff_versions(registry, backend: str, old: str, new: str, *, archs=None, dtypes=None, training=False,
                  cudnn=None, n: int = 576, fields: dict | None = None) -> list[Change]:
    check_backend(registry, backend)
    return [change for arch in archs or backend_archs(registry, backend)
            for dtype in dtypes or backend_dtypes(registry, backend)
            for change in _changes_at(registry, backend, arch, dtype, old, new, training=training, cudnn=cudnn, n=n,
                                      fields=fields)]


def _where(pairs: list[tuple[str, str]]) -> str:
    """'sm100, sm103 (bf16, fp16); sm90 (fp8_e4m3)': archs with the same dtypes together."""
    by_arch: dict[str, list[str]] = {}
    for arch, dtype in pairs:
        by_arch.setdefault(arch, []).append(dtype)
    groups: dict[tuple[str, ...], list[str]] = {}
    for arch, ds in by_arch.items():
        groups.setdefault(tuple(ds), []).append(arch)
    return "; ".join(f"{', '.join(archs)} ({', '.join(ds)})" for ds, archs in groups.items())


def _change_line(kind: str, where: str, detail: tuple[str, ...], old: str, new: str) -> str:
    if kind == "gained":
        return f"  + now supported: {where} (at {old}: {', '.join(detail)})"
    if kind == "lost":
        return f"  - no longer supported: {where} (at {new}: {', '.join(detail)})"
    if kind == "issue_added":
        return f"  ! known issue {detail[0]} now blocks {where}"
    if kind == "conditional_added":
        return f"  ! known issue {detail[0]} now blocks {where} when: {'; '.join(detail[1:])}"
    if kind == "conditional_removed":
        return f"  ~ known issue {detail[0]} no longer blocks {where} when: {'; '.join(detail[1:])}"
    return f"  ~ known issue {detail[0]} no longer blocks {where}"


def diff_json(backend: str, old: str, new: str, changes: list[Change], *, training: bool, n: int) -> str:
    return json.dumps({"backend": backend, "old": old, "new": new, "training": training,
                       "head_dims": {"min": 1, "max": n},
                       "changes": [{"arch": c.arch, "dtype": c.dtype, "kind": c.kind, "detail": list(c.detail),
                                    **c.block.as_json()} for c in changes]}, indent=2)


def render_diff(backend: str, old: str, new: str, changes: list[Change], fmt: str, *, training: bool, n: int) -> str:
    if fmt == "json":
        return diff_json(backend, old, new, changes, training=training, n=n)
    grouped: dict[tuple, list[tuple[str, str]]] = {}
    for c in changes:
        grouped.setdefault((c.kind, c.block, c.detail), []).append((c.arch, c.dtype))
    lines = [f"{backend} {old} -> {new} ({mode_name(training)}, head dims 1..{n}): {len(grouped)} change(s)"]
    for (kind, block, detail), pairs in sorted(grouped.items(), key=lambda kv: (CHANGE_KINDS.index(kv[0][0]),
                                                                                  kv[0][1].qks[0], kv[0][1].vs[0])):
        lines.append(_change_line(kind, f"{block.describe()} on {_where(pairs)}", detail, old, new))
    if not grouped:
        lines.append("  no change")
    return "\n".join(lines)

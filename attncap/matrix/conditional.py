"""Known issues that depend on more than head dims (seqlens, window, mask...), for matrix and diff-versions.

A plane fixes every query field but the head dims (its template query). A known issue whose other
conditions the template leaves open (e.g. `cross_attention: true` while the seqlens are unknown)
blocks nothing in the plane, yet it is what a caller with those shapes hits: such issues are
listed beside the plane, with their conditions and the shapes they would block. The query flags
(`--seqlen-q 1 --seqlen-kv 2048`, `--window 128,0`, ...) put those fields into the template, and
then the issue is in the plane itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..grid import HEAD_DIM_FIELDS, Plane, paint, regions
from .backend import plane_context
from .blocks import describe_plane

# What a plane decides by itself (the mode, the arch, the dtype, the versions): never a "condition".
_PLANE_FIELDS = HEAD_DIM_FIELDS | {"arch", "dtype", "versions", "cudnn", "passes", "training"}


@dataclass(frozen=True)
class ConditionalIssue:
    id: str
    arch: str
    conditions: tuple[str, ...]  # e.g. ("with seqlen_q != seqlen_kv",)
    plane: Plane  # the shapes it would block (where the plane is otherwise supported)
    reason: str | None = None


def conditional_issues(registry, backend: str, arch: str, dtype: str, version: str, cudnn, training: bool,
                       n: int, fields: dict | None = None) -> list[ConditionalIssue]:
    b, bf = registry.compiled[backend], registry.backends[backend]
    template, ctx = plane_context(registry, backend, arch, dtype, version, cudnn, training, fields)
    if ctx.version is None:
        return []
    supported = regions(b, bf, template, ctx, n).supported
    out = []
    for rule, model in zip(b.known_issues, bf.known_issues):
        open_checks = [ch for ch in rule.checks if ch.field not in _PLANE_FIELDS and not ch.test(template, ctx)]
        if not open_checks or not rule.matches(template, ctx, HEAD_DIM_FIELDS | {ch.field for ch in open_checks}):
            continue
        plane = supported & paint(model.when, ctx.elem_bytes, n)
        if plane.count():
            out.append(ConditionalIssue(rule.id, arch, tuple(_condition(ch, template, ctx) for ch in open_checks),
                                        plane, model.reason))
    return out


def _condition(check, q, c) -> str:
    """'with seqlen_q != seqlen_kv', 'seqlen_kv 1025..', 'mask in none, padding'."""
    expected, _, message = check.explain(q, c)
    if message.startswith("needs "):
        return "with " + message.removeprefix("needs ")
    if message.startswith("not with "):
        return "without " + message.removeprefix("not with ")
    if isinstance(expected, str):
        return f"{check.field} {expected}"
    if isinstance(expected, (list, tuple)):
        return f"{check.field} in {', '.join(map(str, expected))}"
    return f"{check.field} = {expected}"


def grouped(items: list[ConditionalIssue]) -> list[tuple[ConditionalIssue, list[str]]]:
    """Issues with the same id, conditions and shapes together, with their archs."""
    out: dict[tuple, tuple[ConditionalIssue, list[str]]] = {}
    for i in items:
        out.setdefault((i.id, i.conditions, i.plane.rows), (i, []))[1].append(i.arch)
    return list(out.values())


def conditional_lines(items: list[ConditionalIssue]) -> list[str]:
    """Markdown list items: `id` (when ...): shapes on archs - reason."""
    return [f"- `{i.id}` ({'; '.join(i.conditions)}): {describe_plane(i.plane, ', ')} on {', '.join(archs)}"
            + (f": {i.reason}" if i.reason else "") for i, archs in grouped(items)]


def conditional_json(items: list[ConditionalIssue]) -> list[dict]:
    from .blocks import blocks_json
    return [{"id": i.id, "archs": archs, "conditions": list(i.conditions), "blocks": blocks_json(i.plane),
             "reason": i.reason} for i, archs in grouped(items)]


def add_query_flags(p) -> None:
    """The query fields a plane can fix besides head dims (the resolve flags, same names)."""
    from ..cli import add_feature_flags
    add_feature_flags(p.add_argument_group("query (fixed for every point of the plane)"))


def query_fields(args) -> dict:
    """The AttentionQuery fields the flags set (only those that differ from the defaults)."""
    from ..cli import _pair
    fields = {"mask": args.mask or ("causal" if args.causal else "none"), "dropout": args.dropout,
              "softcap": args.softcap, "bias": args.bias, "seqlen_q": args.seqlen_q, "seqlen_kv": args.seqlen_kv,
              "layout": args.layout, "page_size": args.page_size, "deterministic": args.deterministic,
              "sinks": args.sinks}
    from ..query import OPTIONAL_FIELDS  # TransformerEngine's further dimensions (None: not asked)
    fields.update({f: getattr(args, f) for f in OPTIONAL_FIELDS if f != "page_size"})
    if args.window:
        fields["window"] = _pair(args.window, ",", "--window")
    if args.gqa:
        fields["num_heads_q"], fields["num_heads_kv"] = _pair(args.gqa, ":", "--gqa")
    defaults = {"mask": "none", "dropout": 0.0, "softcap": 0.0, "bias": "none", "layout": "bshd",
                "deterministic": False, "sinks": False}
    return {k: v for k, v in fields.items() if v is not None and defaults.get(k, None) != v}


def describe_fields(fields: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in fields.items())

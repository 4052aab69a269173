"""Evaluate a backend over the whole head_dim_qk x head_dim_v plane at once.

A Plane is one integer bitmask per head_dim_qk (bit v set = (qk, v) accepted), so a rule's
region is painted from its ranges in O(rows) and regions combine with | & ~. Every field of a
rule other than head dims is decided once for the plane by the compiled rule itself, on a
template query, so the two evaluations cannot drift apart (tests compare them point-wise).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import TYPE_CHECKING

from .query import AttentionQuery
from .rules import CompiledBackend, Ctx

if TYPE_CHECKING:  # the data is read as models (full load) or as their plain Records (a wheel's snapshot)
    from .models import Conditions, IntRange

HEAD_DIM_FIELDS = frozenset({"head_dim_qk", "head_dim_v", "head_dims", "same_head_dims", "alignment_bytes"})


@dataclass(frozen=True)
class Plane:
    n: int
    rows: tuple[int, ...]  # rows[qk] bitmask over v; index 0 unused

    @classmethod
    def empty(cls, n: int) -> Plane:
        return cls(n, (0,) * (n + 1))

    @classmethod
    def full(cls, n: int) -> Plane:
        return cls(n, (0,) + ((1 << (n + 1)) - 2,) * n)

    def __or__(self, other: Plane) -> Plane:
        return Plane(self.n, tuple(a | b for a, b in zip(self.rows, other.rows)))

    def __and__(self, other: Plane) -> Plane:
        return Plane(self.n, tuple(a & b for a, b in zip(self.rows, other.rows)))

    def __sub__(self, other: Plane) -> Plane:
        return Plane(self.n, tuple(a & ~b for a, b in zip(self.rows, other.rows)))

    def __contains__(self, point: tuple[int, int]) -> bool:
        qk, v = point
        return 0 < qk <= self.n and bool(self.rows[qk] >> v & 1)

    def count(self) -> int:
        return sum(r.bit_count() for r in self.rows)

    def points(self):
        for qk, row in enumerate(self.rows):
            v = 0
            while row:
                if row & 1:
                    yield qk, v
                row >>= 1
                v += 1


def _values_mask(r: IntRange | None, step: int, n: int) -> int:
    lo = max(1, r.min if r and r.min is not None else 1)
    hi = min(n, r.max if r and r.max is not None else n)
    m = step * (r.multiple_of if r and r.multiple_of else 1) // gcd(step, r.multiple_of if r and r.multiple_of else 1)
    first = -(-lo // m) * m
    return sum(1 << v for v in range(first, hi + 1, m))


def paint(cond: Conditions, elem_bytes: int, n: int) -> Plane:
    """The (qk, v) points a rule's head-dim conditions accept."""
    step = 1 if not cond.alignment_bytes else cond.alignment_bytes // gcd(cond.alignment_bytes, elem_bytes)
    qk_mask, v_mask = _values_mask(cond.head_dim_qk, step, n), _values_mask(cond.head_dim_v, step, n)
    pairs: dict[int, int] | None = None
    if cond.head_dims is not None:
        pairs = {}
        for qk, v in cond.head_dims:
            if v <= n:
                pairs[qk] = pairs.get(qk, 0) | 1 << v
    rows = [0] * (n + 1)
    for qk in range(1, n + 1):
        if not qk_mask >> qk & 1:
            continue
        row = v_mask if pairs is None else v_mask & pairs.get(qk, 0)
        if cond.same_head_dims is True:
            row &= 1 << qk
        elif cond.same_head_dims is False:
            row &= ~(1 << qk)
        rows[qk] = row
    return Plane(n, tuple(rows))


@dataclass(frozen=True)
class Regions:
    """A backend's plane for one (arch, dtype, other query fields, versions)."""

    installed: bool  # when not, `support` is what some version would accept, and nothing is supported
    support: Plane  # some support rule accepts
    features: Plane  # every feature the template uses is available (the full plane when none is used)
    issues: dict[str, Plane]  # each known issue's region

    @property
    def blocked(self) -> Plane:
        out = Plane.empty(self.support.n)
        for plane in self.issues.values():
            out = out | plane
        return out

    @property
    def supported(self) -> Plane:
        if not self.installed:
            return Plane.empty(self.support.n)
        return (self.support & self.features) - self.blocked


def regions(b: CompiledBackend, models, template: AttentionQuery, ctx: Ctx, n: int = 576) -> Regions:
    """Paint support rules, features and known issues; `models` is the backend's BackendFile."""
    installed = ctx.version is not None
    skip = HEAD_DIM_FIELDS if installed else HEAD_DIM_FIELDS | {"versions"}

    def region(compiled, raw) -> Plane:
        out = Plane.empty(n)
        for rule, model in zip(compiled, raw):
            if rule.matches(template, ctx, skip):
                out = out | paint(model, ctx.elem_bytes, n)
        return out
    support = region(b.support, models.support)
    features = Plane.full(n)
    for alternatives in template.features:
        available = Plane.empty(n)
        for name in alternatives:
            available = available | region(b.features.get(name, ()), models.features.get(name, ()))
        features = features & available
    issues = {}
    if installed:
        for rule, model in zip(b.known_issues, models.known_issues):
            if rule.matches(template, ctx, HEAD_DIM_FIELDS):
                issues[rule.id] = paint(model.when, ctx.elem_bytes, n)
    return Regions(installed, support, features, issues)


def runs(values: list[int]) -> list[list[int]]:
    """Sorted values as arithmetic runs: [8, 16, 24, 512] -> [[8, 16, 24], [512]]."""
    out, i = [], 0
    while i < len(values):
        j = i + 1
        if j < len(values):
            step = values[j] - values[i]
            while j + 1 < len(values) and values[j + 1] - values[j] == step:
                j += 1
            # a pair followed by a longer run reads better as a single value and that run
            if j == i + 1 and j + 2 < len(values) and values[j + 1] - values[j] == values[j + 2] - values[j + 1]:
                j = i
        else:
            j = i
        out.append(values[i:j + 1])
        i = j + 1
    return out


def describe_run(run: list[int]) -> str:
    if len(run) == 1:
        return str(run[0])
    if len(run) == 2:
        return f"{run[0]}, {run[1]}"
    step = run[1] - run[0]
    return f"{run[0]}..{run[-1]}" + (f" step {step}" if step > 1 else "")


def describe_values(values: list[int]) -> str:
    return ", ".join(describe_run(r) for r in runs(values))


def blocks(plane: Plane) -> list[tuple[list[int], list[int]]]:
    """The plane as (qk values, v values) rectangles: consecutive rows with equal v sets merged."""
    out: list[tuple[list[int], list[int]]] = []
    groups: dict[int, list[int]] = {}
    for qk, row in enumerate(plane.rows):
        if row:
            groups.setdefault(row, []).append(qk)
    for row, qks in groups.items():
        vs = [v for v in range(plane.n + 1) if row >> v & 1]
        out.append((qks, vs))
    return sorted(out)

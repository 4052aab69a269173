"""Compact descriptions of a plane: arithmetic runs of head dims, blocks of qk x v, the qk = v diagonal."""

from __future__ import annotations

from dataclasses import dataclass

from ..grid import Plane, describe_run, describe_values, runs  # noqa: F401  (re-exported)


def run_json(run: list[int]) -> dict:
    return {"min": run[0], "max": run[-1], "step": run[1] - run[0] if len(run) > 1 else 1}


@dataclass(frozen=True)
class Block:
    """head_dim_qk in `qks` (any sorted list) x head_dim_v in `vs` (one arithmetic run)."""

    qks: tuple[int, ...]
    vs: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.qks) * len(self.vs)

    @property
    def point(self) -> tuple[int, int] | None:
        return (self.qks[0], self.vs[0]) if self.count == 1 else None

    def describe(self) -> str:
        if self.point:
            return f"({self.qks[0]}, {self.vs[0]})"
        return f"qk {describe_values(list(self.qks))} × v {describe_run(list(self.vs))}"

    def as_json(self) -> dict:
        return {"head_dim_qk": [run_json(r) for r in runs(list(self.qks))], "head_dim_v": run_json(list(self.vs)),
                "count": self.count}


def compact_blocks(plane: Plane) -> list[Block]:
    """Rows split into arithmetic runs of head_dim_v; rows sharing a run are merged."""
    groups: dict[tuple[int, ...], list[int]] = {}
    row_runs: dict[int, list[list[int]]] = {}
    for qk, row in enumerate(plane.rows):
        if not row:
            continue
        if row not in row_runs:
            row_runs[row] = runs([v for v in range(row.bit_length()) if row >> v & 1])
        for run in row_runs[row]:
            groups.setdefault(tuple(run), []).append(qk)
    return sorted((Block(tuple(qks), vs) for vs, qks in groups.items()), key=lambda b: (b.qks[0], b.vs[0]))


def split_shapes(blocks: list[Block]) -> tuple[list[Block], list[int], list[tuple[int, int]]]:
    """(ranges, diagonal, points): blocks of one or two shapes are listed as shapes; shapes on qk == v in
    runs of 3 or more are the diagonal."""
    ranges = [b for b in blocks if b.count > 2]
    points = sorted((qk, v) for b in blocks if b.count <= 2 for qk in b.qks for v in b.vs)
    same = sorted(qk for qk, v in points if qk == v)
    diagonal = [x for run in runs(same) if len(run) >= 3 for x in run]
    on_diagonal = set(diagonal)
    return ranges, diagonal, [p for p in points if not (p[0] == p[1] and p[0] in on_diagonal)]


def describe_blocks(blocks: list[Block], sep: str = "; ") -> str:
    """Ranges first, then the diagonal qk = v, then the single shapes as one list."""
    ranges, diagonal, points = split_shapes(blocks)
    out = [b.describe() for b in ranges]
    if diagonal:
        out.append(f"qk = v = {describe_values(diagonal)}")
    if points:
        out.append(("shapes " if out else "") + ", ".join(f"({qk}, {v})" for qk, v in points))
    return sep.join(out)


def describe_plane(plane: Plane, sep: str = "; ") -> str:
    return describe_blocks(compact_blocks(plane), sep)


def blocks_json(plane: Plane) -> list[dict]:
    ranges, diagonal, points = split_shapes(compact_blocks(plane))
    out = [b.as_json() for b in ranges]
    if diagonal:
        out.append({"same_head_dims": True, "head_dim": [run_json(r) for r in runs(diagonal)], "count": len(diagonal)})
    out += [Block((qk,), (v,)).as_json() for qk, v in points]
    return out

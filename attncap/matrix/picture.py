"""What the PNG and SVG pictures share: a raster of cells (cell x cell head dims), markers for the single
shapes, and where the markers' labels go."""

from __future__ import annotations

from .blocks import compact_blocks, split_shapes
from .compute import LABELS, OUTCOMES, PLANE_OUTCOMES, PRIORITY, ArchPlane


def default_cell(n: int) -> int:
    return 8 if n >= 128 else 1


def cell_grid(a: ArchPlane, cell: int) -> list[list[int]]:
    """grid[qk cell][v cell] = index into OUTCOMES; a mixed cell shows the first outcome in PRIORITY."""
    k = -(-a.n // cell)
    grid = [[len(OUTCOMES) - 1] * k for _ in range(k)]
    spans = [sum(1 << v for v in range(j * cell + 1, min((j + 1) * cell, a.n) + 1)) for j in range(k)]
    for outcome in reversed(PRIORITY):
        idx = OUTCOMES.index(outcome)
        rows = a.planes[outcome].rows
        for i in range(k):
            merged = 0
            for qk in range(i * cell + 1, min((i + 1) * cell, a.n) + 1):
                merged |= rows[qk]
            if merged:
                for j in range(k):
                    if merged & spans[j]:
                        grid[i][j] = idx
    return grid


def markers(a: ArchPlane, limit: int = 16) -> list[tuple[int, int, str, str]]:
    """(qk, v, outcome, label) for the single shapes off the diagonal (too small to see in a raster)."""
    out = []
    for outcome in PLANE_OUTCOMES:
        for qk, v in split_shapes(compact_blocks(a.planes[outcome]))[2]:
            label = f"({qk}, {v})"
            if outcome == "known_issue":
                label += " " + ", ".join(a.issues_at(qk, v))
            out.append((qk, v, outcome, label))
    return out[:limit]


def _label_spots(qk: int, v: int, gap: float, height: float) -> list[tuple[float, float, str]]:
    """Above right, below right, above left, below left of the marker."""
    return [(qk + gap, v + gap / 2, "left"), (qk + gap, v - gap / 2 - height, "left"),
            (qk - gap, v + gap / 2, "right"), (qk - gap, v - gap / 2 - height, "right")]


def _overlaps(box, other) -> bool:
    return not (box[2] <= other[0] or box[0] >= other[2] or box[3] <= other[1] or box[1] >= other[3])


def place_labels(marks, n: int, char: float, height: float, gap: float) -> list[tuple[float, float, str]]:
    """(x, y, align) for each marker's label, in head-dim units (x, y is the text's bottom left or right):
    the first of four spots around the marker that stays inside the plane and clear of earlier labels
    and of the markers."""
    boxes: list[tuple[float, float, float, float]] = [(qk - gap, v - gap, qk + gap, v + gap) for qk, v, _, _ in marks]
    out = []
    for qk, v, _, label in marks:
        width = len(label) * char
        own = (qk - gap, v - gap, qk + gap, v + gap)
        best = None
        for x, y, align in _label_spots(qk, v, gap, height):
            x0, x1 = (x, x + width) if align == "left" else (x - width, x)
            box = (x0, y, x1, y + height)
            inside = x0 >= 0 and x1 <= n and y >= 0 and y + height <= n
            clear = not any(_overlaps(box, b) for b in boxes if b != own)
            if inside and clear:
                best = (x, y, align, box)
                break
            if best is None and inside:
                best = (x, y, align, box)
        if best is None:
            best = (*_label_spots(qk, v, gap, height)[0], (0, 0, 0, 0))
        boxes.append(best[3])
        out.append(best[:3])
    return out


def caption(cell: int) -> str:
    if cell == 1:
        return "one pixel per (head_dim_qk, head_dim_v); single shapes marked"
    return (f"each cell is {cell}×{cell} head dims and shows the most notable outcome among its points "
            f"({' > '.join(LABELS[o] for o in PRIORITY)}); single shapes marked")

"""Matrices as a PNG (matplotlib, imported only here and only when a picture is drawn)."""

from __future__ import annotations

import textwrap

from .compute import COLORS, LABELS, OUTCOMES, ArchPlane, Matrix
from .markdown import issue_effects
from .picture import caption, cell_grid, default_cell, markers, place_labels

PLOT_HINT = "pip install 'attncap[plot]' (in a checkout: pip install '.[plot]')"
MARKER_SHAPES = {"table": "o", "probe": "D", "probe_rejected": "s", "known_issue": "X"}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError(f"PNG output needs matplotlib ({exc}); install it with: {PLOT_HINT}") from None
    return plt


def _draw_panel(ax, m: Matrix, names: list[str], a: ArchPlane, n: int, cell: int, cmap) -> None:
    grid = cell_grid(a, cell)
    # imshow's first index is y: put head_dim_v on y and head_dim_qk on x
    image = [[grid[i][j] for i in range(len(grid))] for j in range(len(grid))]
    k = len(grid)
    ax.imshow(image, cmap=cmap, vmin=-0.5, vmax=len(OUTCOMES) - 0.5, origin="lower", interpolation="nearest",
              extent=(0.5, k * cell + 0.5, 0.5, k * cell + 0.5))
    marks = markers(a)
    unit = n / 380  # head dims per typographic point on a ~5.3 in axis
    for (qk, v, outcome, label), (x, y, align) in zip(marks, place_labels(marks, n, 5.0 * unit, 11 * unit,
                                                                          7 * unit)):
        ax.scatter([qk], [v], s=70, marker=MARKER_SHAPES[outcome], color=COLORS[outcome], edgecolors="black",
                   linewidths=1.0, zorder=3)
        ax.text(x, y, label, ha=align, va="bottom", fontsize=8.5, zorder=4,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    ticks = [t for t in range(0, n + 1, 64)]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=8)
    ax.set_xlim(0.5, n + 0.5)
    ax.set_ylim(0.5, n + 0.5)
    ax.grid(color="white", linewidth=0.5, alpha=0.6)
    ax.set_xlabel("head_dim_qk")
    ax.set_ylabel("head_dim_v")
    ax.set_title(panel_title(m, names), fontsize=10)


def panel_title(m: Matrix, names: list[str], width: int = 48) -> str:
    """Backend, version and archs wrapped to the panel's width (cudnn-fused's arch list was cut off)."""
    head = textwrap.fill(f"{m.backend} {m.version} · {', '.join(names)}", width)
    return f"{head}\n{m.dtype} · {m.mode}"


def _legend_handles(m: Matrix, panels) -> list:
    from matplotlib.patches import Patch
    counts = {o: sum(a.plane(o).count() for _, _, a in panels) for o in OUTCOMES}
    return [Patch(facecolor=COLORS[o], edgecolor="#888888", label=label) for o, label in legend_labels(counts)]


def legend_labels(counts: dict[str, int]) -> list[tuple[str, str]]:
    """(outcome, label with its count) for the outcomes the pictures show: no row for an empty one."""
    out = []
    for o in OUTCOMES:
        if counts[o]:
            out.append((o, f"{LABELS[o]} ({counts[o]} shape{'' if counts[o] == 1 else 's'})"))
    return out


def render_png(ms: list[Matrix], path, cell: int | None = None, dpi: int = 100) -> None:
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    panels = [(m, names, a) for m in ms for names, a in m.grouped()]
    n = ms[0].n
    cell = cell or default_cell(n)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    legend_cols = 1 if cols == 1 else 3
    shown = len(legend_labels({o: sum(a.plane(o).count() for _, _, a in panels) for o in OUTCOMES}))
    effects = issue_effects(ms)
    text = textwrap.fill(caption(cell) + (f". Known-issue effects: {effects}" if effects else ""),
                         95 if cols == 1 else 150)
    bottom = 0.25 + 0.21 * -(-max(shown, 1) // legend_cols) + 0.14 * (text.count("\n") + 1)  # inches
    height = 6.3 * rows + bottom
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, height), squeeze=False)
    cmap = ListedColormap([COLORS[o] for o in OUTCOMES])
    for ax, (m, names, a) in zip(axes.flat, panels):
        _draw_panel(ax, m, names, a, n, cell, cmap)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.legend(handles=_legend_handles(ms[0], panels), loc="upper center", ncol=legend_cols, fontsize=8.5,
               frameon=False, bbox_to_anchor=(0.5, (bottom - 0.05) / height))
    fig.text(0.5, 0.1 / height, text, ha="center", va="bottom", fontsize=7.5, color="#444444")
    fig.tight_layout(rect=(0, bottom / height, 1, 1))
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)

"""`attncap matrix` and `attncap diff-versions`: a backend's whole head_dim_qk x head_dim_v plane.

Every point of the plane (1..N x 1..N, N = 576 by default) gets one outcome per arch:

  table           some support rule accepts (and the probe agrees, when it is consulted)
  probe           only the installed library's probe accepts, and it overrides the table
  probe_rejected  the table accepts, the installed library's probe rejects
  known_issue     the table or the probe accepts, a known issue rejects (which one is kept)
  unsupported     everything else

The planes come from attncap.grid (bitmask rows), so the whole matrix for every backend, arch,
dtype and mode takes well under a second; tests compare it point-wise with resolve(). Output:
Markdown (compact ranges and shape lists), JSON (blocks per outcome), self-contained HTML (inline
SVG, no external assets) and PNG (matplotlib, the optional extra `attncap[plot]`).

`python -m attncap.matrix --write-docs docs/` regenerates docs/support-matrix.md and docs/img/.
"""

from __future__ import annotations

import html
import json
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from . import probes as probe_registry
from .grid import HEAD_DIM_FIELDS, Plane, paint, regions
from .query import AttentionQuery
from .rules import Ctx

OUTCOMES = ("table", "probe", "probe_rejected", "known_issue", "unsupported")
LABELS = {
    "table": "supported",
    "probe": "supported by the probe",
    "probe_rejected": "rejected by the probe",
    "known_issue": "blocked by a known issue",
    "unsupported": "unsupported",
}
COLORS = {"table": "#2ca25f", "probe": "#3182bd", "probe_rejected": "#9e6ac8", "known_issue": "#e6550d",
          "unsupported": "#efefef"}
# A picture cell that holds points of several outcomes shows the first of these.
PRIORITY = ("known_issue", "probe_rejected", "probe", "table")

# docs/support-matrix.md describes these versions (pinned, so the page only changes with the data).
DOC_VERSIONS = {"flash-attn-4": "4.0.0b36", "flash-attn": "2.8.3.post1", "flash-attn-3": "3.0.0",
                "torch": "2.14.0", "cudnn": "9.25.0"}
DOC_DTYPE = "bf16"
# (backend, arch, training): the pictures in docs/img/.
DOC_PICTURES = (("flash-attn-4", "sm90", False), ("flash-attn-4", "sm100", False),
                ("flash-attn-4", "sm90", True), ("flash-attn-4", "sm100", True),
                ("flash-attn-3", "sm90", False), ("flash-attn-2", "sm80", False),
                ("cudnn-fused", "sm100", False), ("torch-sdpa-flash", "sm90", False))
DOCS_COMMAND = "python -m attncap.matrix --write-docs docs/"
PLOT_HINT = "pip install 'attncap[plot]'"


# ---------------------------------------------------------------------------------------------
# compact descriptions of planes


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


def blocks_json(plane: Plane) -> list[dict]:
    ranges, diagonal, points = split_shapes(compact_blocks(plane))
    out = [b.as_json() for b in ranges]
    if diagonal:
        out.append({"same_head_dims": True, "head_dim": [run_json(r) for r in runs(diagonal)], "count": len(diagonal)})
    out += [Block((qk,), (v,)).as_json() for qk, v in points]
    return out


# ---------------------------------------------------------------------------------------------
# evaluation


@dataclass
class ArchPlane:
    arch: str
    n: int
    planes: dict[str, Plane]  # every outcome but unsupported
    issues: dict[str, Plane]  # each known issue's part of the known_issue plane (they may overlap)
    probe_note: str | None = None

    @property
    def unsupported(self) -> Plane:
        out = Plane.full(self.n)
        for plane in self.planes.values():
            out = out - plane
        return out

    def plane(self, outcome: str) -> Plane:
        return self.unsupported if outcome == "unsupported" else self.planes[outcome]

    def outcome(self, qk: int, v: int) -> str:
        return next((o for o in OUTCOMES[:-1] if (qk, v) in self.planes[o]), "unsupported")

    def key(self) -> tuple:
        return (tuple(self.planes[o].rows for o in OUTCOMES[:-1]),
                tuple((i, p.rows) for i, p in self.issues.items()), self.probe_note)

    def issues_at(self, qk: int, v: int) -> list[str]:
        return [i for i, p in self.issues.items() if (qk, v) in p]


@dataclass
class Matrix:
    """One backend at one version, one dtype and one mode, over several archs."""

    backend: str
    package: str
    version: str
    version_source: str  # "installed" or "--version" / "docs"
    cudnn: str | None
    dtype: str
    training: bool
    n: int
    probe_note: str
    probe_consulted: bool
    archs: list[ArchPlane]
    issues: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # id -> (reason, source)

    @property
    def mode(self) -> str:
        return "training" if self.training else "inference"

    def title(self) -> str:
        return f"{self.backend} · {self.dtype} · {self.mode}"

    def version_line(self) -> str:
        line = f"{self.package} {self.version} ({self.version_source})"
        if self.cudnn and self.package != "cudnn":
            line += f", cuDNN {self.cudnn}"
        return line

    def grouped(self) -> list[tuple[list[str], ArchPlane]]:
        """Archs with identical planes together, in arch order."""
        out: list[tuple[list[str], ArchPlane]] = []
        index: dict[tuple, int] = {}
        for a in self.archs:
            k = a.key()
            if k in index:
                out[index[k]][0].append(a.arch)
            else:
                index[k] = len(out)
                out.append(([a.arch], a))
        return out


def backend_archs(registry, backend: str) -> list[str]:
    """The archs a backend's support rules name (every arch when a rule names none), by compute capability."""
    vocab = registry.vocabulary
    names: set[str] = set()
    for rule in registry.backends[backend].support:
        if rule.arch is None:
            names = set(vocab.archs)
            break
        names |= vocab.expand_archs(rule.arch)[0]
    return sorted(names, key=vocab.cc)


def backend_dtypes(registry, backend: str) -> list[str]:
    vocab = registry.vocabulary
    named = {d for r in registry.backends[backend].support for d in (r.dtype or vocab.dtypes)}
    return [d for d in vocab.dtypes if d in named]


def uses_cudnn(registry, backend: str) -> bool:
    bf = registry.backends[backend]
    rules = [*bf.support, *(r for rs in bf.features.values() for r in rs)]
    return bf.package == "cudnn" or any(r.cudnn for r in rules) or any(k.when.cudnn for k in bf.known_issues)


def mentioned_versions(registry, backend: str) -> list[str]:
    """Every version a `versions` specifier of the backend names, oldest first."""
    from packaging.version import InvalidVersion, Version
    bf = registry.backends[backend]
    specs = [r.versions for r in bf.support] + [r.versions for rs in bf.features.values() for r in rs]
    specs += [k.versions for k in bf.known_issues]
    found = set()
    for spec in filter(None, specs):
        for text in re.findall(r"[0-9][0-9A-Za-z.+!-]*", spec):
            try:
                found.add(Version(text))
            except InvalidVersion:
                pass
    return [str(v) for v in sorted(found)]


class _ProbeSource:
    """The installed library's probe as planes, when it is consulted; `note` says why or why not."""

    def __init__(self, b, version: str, probes: bool, n: int):
        self.decl, self.probe, self.n, self.cache = b.probe, None, n, {}
        decl = b.probe
        if decl is None:
            self.note = f"{b.id} declares no probe"
        elif not probes:
            self.note = f"probe {decl.name} not consulted (table only)"
        elif decl.mode == "advisory":
            self.note = f"probe {decl.name} is advisory: it never changes a verdict"
        else:
            probe = probe_registry.get(decl.name)
            installed = probe.installed_version() if probe else None
            if probe is None:
                self.note = f"no probe named {decl.name!r} is installed"
            elif not hasattr(probe, "plane_rows"):
                self.note = f"probe {decl.name} cannot evaluate a whole plane"
            elif installed != version:
                self.note = (f"probe {decl.name} speaks only for the installed {b.package} "
                             f"{installed or '(not installed)'}, not {version}")
            else:
                self.probe = probe
                self.note = f"probe {decl.name} ({decl.mode}) consulted against the installed {b.package} {version}"
        self.judged = probe_registry.judged_fields(decl.name) if self.probe else frozenset()

    def plane(self, ctx: Ctx) -> tuple[Plane | None, str | None]:
        if self.probe is None:
            return None, None
        if self.decl.archs and ctx.arch not in self.decl.archs:
            return None, f"outside the probe's archs ({', '.join(self.decl.archs)})"
        key = (ctx.cc[0], 16 // ctx.elem_bytes)
        if key not in self.cache:
            rows = self.probe.plane_rows(*key, self.n)
            self.cache[key] = None if rows is None else Plane(self.n, tuple(rows))
        if self.cache[key] is None:
            return None, f"probe unavailable: {self.probe.unavailable_reason()}"
        return self.cache[key], None


def _core(b, bf, template, ctx, judged, n) -> Plane:
    """Where the support rules hold on everything the probe does not judge."""
    cleared = {f: None for f in judged & HEAD_DIM_FIELDS}
    out = Plane.empty(n)
    for rule, model in zip(b.support, bf.support):
        if rule.matches(template, ctx, HEAD_DIM_FIELDS | judged):
            out = out | paint(model.model_copy(update=cleared), ctx.elem_bytes, n)
    return out


def arch_plane(registry, backend: str, arch: str, dtype: str, version: str, *, cudnn: str | None = None,
               training: bool = False, n: int = 576, probe: _ProbeSource | None = None) -> ArchPlane:
    b, bf, vocab = registry.compiled[backend], registry.backends[backend], registry.vocabulary
    template = AttentionQuery(arch=arch, dtype=dtype, head_dim_qk=64, training=training, vocabulary=vocab)
    ctx = Ctx(arch, vocab.dtypes[dtype].bytes, version, cudnn, b.package, vocab.cc(arch))
    r = regions(b, bf, template, ctx, n)
    probe_plane, note = probe.plane(ctx) if probe else (None, None)
    effective = r.support
    if probe_plane is not None:
        if probe.decl.mode == "override":
            effective = probe_plane & _core(b, bf, template, ctx, probe.judged, n)
        else:  # restrict: the probe can only take away
            effective = r.support & probe_plane
    blocked = r.blocked
    wanted = (r.support | effective) & r.features
    planes = {
        "table": (r.support & effective & r.features) - blocked,
        "probe": ((effective - r.support) & r.features) - blocked,
        "probe_rejected": ((r.support - effective) & r.features) - blocked,
        "known_issue": wanted & blocked,
    }
    issues = {i: planes["known_issue"] & region for i, region in r.issues.items()}
    return ArchPlane(arch, n, planes, {i: p for i, p in issues.items() if p.count()}, note)


def build_matrix(registry, backend: str, version: str, dtype: str, *, archs=None, training=False, cudnn=None,
                 n: int = 576, probes: bool = False, version_source: str = "--version") -> Matrix:
    if backend not in registry.compiled:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(sorted(registry.compiled))}")
    b = registry.compiled[backend]
    if b.package == "cudnn":
        cudnn = version
    source = _ProbeSource(b, version, probes, n)
    rows = [arch_plane(registry, backend, a, dtype, version, cudnn=cudnn, training=training, n=n, probe=source)
            for a in (archs or backend_archs(registry, backend))]
    issues = {k.id: (k.reason, k.source) for k in registry.backends[backend].known_issues}
    return Matrix(backend, b.package, version, version_source, cudnn, dtype, training, n, source.note,
                  source.probe is not None, rows, issues)


# ---------------------------------------------------------------------------------------------
# Markdown and JSON


def _issue_cell(a: ArchPlane, sep: str, code=lambda s: f"`{s}`") -> str:
    return sep.join(f"{code(i)}: {describe_blocks(compact_blocks(plane), ', ')}" for i, plane in a.issues.items())


def legend_lines(m: Matrix) -> list[str]:
    probe = m.probe_note if m.probe_consulted else f"empty here: {m.probe_note}"
    return [
        f"- **{LABELS['table']}**: a support rule accepts" + (" and the probe agrees" if m.probe_consulted else ""),
        f"- **{LABELS['probe']}** / **{LABELS['probe_rejected']}**: {probe}",
        f"- **{LABELS['known_issue']}**: a support rule (or the probe) accepts but the known issue named rejects",
        f"- everything not listed is **{LABELS['unsupported']}**; head dims range over 1..{m.n} × 1..{m.n}; "
        "`a..b step s` is a, a+s, ..., b; qk = head_dim_qk, v = head_dim_v",
    ]


def markdown_table(m: Matrix) -> list[str]:
    extra = [o for o in ("probe", "probe_rejected") if m.probe_consulted or any(a.planes[o].count() for a in m.archs)]
    header = ["arch", LABELS["table"], *(LABELS[o] for o in extra), LABELS["known_issue"]]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for names, a in m.grouped():
        cells = [", ".join(names), describe_blocks(compact_blocks(a.planes["table"]), "<br>") or "none"]
        cells += [describe_blocks(compact_blocks(a.planes[o]), "<br>") or "" for o in extra]
        cells.append(_issue_cell(a, "<br>"))
        if a.probe_note and m.probe_consulted:
            cells[0] += f" ({a.probe_note})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def used_issues(ms: list[Matrix]) -> list[tuple[str, str | None]]:
    seen: dict[str, str | None] = {}
    for m in ms:
        for a in m.archs:
            for i in a.issues:
                seen.setdefault(i, m.issues.get(i, (None, None))[0])
    return list(seen.items())


def render_markdown(ms: list[Matrix]) -> str:
    lines: list[str] = []
    for m in ms:
        lines += [f"## {m.title()}", "", f"Version: {m.version_line()}. Probe: {m.probe_note}.", ""]
        lines += markdown_table(m) + [""]
    lines += ["Legend:", *legend_lines(ms[0])]
    issues = used_issues(ms)
    if issues:
        lines += ["", "Known issues:"] + [f"- `{i}`: {reason or ''}".rstrip() for i, reason in issues]
    return "\n".join(lines) + "\n"


def matrix_json(m: Matrix) -> dict:
    archs = []
    for a in m.archs:
        outcomes = {}
        for o in OUTCOMES[:-1]:
            outcomes[o] = {"count": a.planes[o].count(),
                           "blocks": blocks_json(a.planes[o])}
        outcomes["known_issue"]["by_issue"] = {i: blocks_json(plane) for i, plane in a.issues.items()}
        outcomes["unsupported"] = {"count": a.unsupported.count(), "complement": True}
        archs.append({"arch": a.arch, "probe": a.probe_note, "outcomes": outcomes})
    used = {i for a in m.archs for i in a.issues}
    return {"backend": m.backend, "package": m.package, "version": m.version, "version_source": m.version_source,
            "cudnn": m.cudnn, "dtype": m.dtype, "training": m.training, "head_dims": {"min": 1, "max": m.n},
            "probe": {"consulted": m.probe_consulted, "note": m.probe_note},
            "legend": {o: LABELS[o] for o in OUTCOMES}, "archs": archs,
            "known_issues": {i: {"reason": r, "source": s} for i, (r, s) in m.issues.items() if i in used}}


# ---------------------------------------------------------------------------------------------
# pictures: a raster of cells (cell x cell head dims) plus markers for the single shapes


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
    for outcome in ("table", "probe", "probe_rejected", "known_issue"):
        for qk, v in split_shapes(compact_blocks(a.planes[outcome]))[2]:
            label = f"({qk}, {v})"
            if outcome == "known_issue":
                label += " " + ", ".join(a.issues_at(qk, v))
            out.append((qk, v, outcome, label))
    return out[:limit]


def place_labels(marks, n: int, char: float, height: float, gap: float) -> list[tuple[float, float, str]]:
    """(x, y, align) for each marker's label, in head-dim units (x, y is the text's bottom left or right):
    the first of four spots around the marker that stays inside the plane and clear of earlier labels
    and of the markers."""
    boxes: list[tuple[float, float, float, float]] = [(qk - gap, v - gap, qk + gap, v + gap) for qk, v, _, _ in marks]
    out = []
    for qk, v, _, label in marks:
        width = len(label) * char
        spots = [(qk + gap, v + gap / 2, "left"), (qk + gap, v - gap / 2 - height, "left"),
                 (qk - gap, v + gap / 2, "right"), (qk - gap, v - gap / 2 - height, "right")]
        best = None
        for x, y, align in spots:
            x0, x1 = (x, x + width) if align == "left" else (x - width, x)
            box = (x0, y, x1, y + height)
            inside = x0 >= 0 and x1 <= n and y >= 0 and y + height <= n
            clear = all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3]
                        for b in boxes if b != (qk - gap, v - gap, qk + gap, v + gap))
            if inside and clear:
                best = (x, y, align, box)
                break
            if best is None and inside:
                best = (x, y, align, box)
        if best is None:
            best = (*spots[0], (0, 0, 0, 0))
        boxes.append(best[3])
        out.append(best[:3])
    return out


def default_cell(n: int) -> int:
    return 8 if n >= 128 else 1


def _caption(m: Matrix, cell: int) -> str:
    if cell == 1:
        return "one pixel per (head_dim_qk, head_dim_v); single shapes marked"
    return (f"each cell is {cell}×{cell} head dims and shows the most notable outcome among its points "
            f"({' > '.join(LABELS[o] for o in PRIORITY)}); single shapes marked")


def render_png(ms: list[Matrix], path, cell: int | None = None, dpi: int = 100) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch
    except ImportError as exc:
        raise ValueError(f"PNG output needs matplotlib ({exc}); install it with: {PLOT_HINT}") from None
    panels = [(m, names, a) for m in ms for names, a in m.grouped()]
    n = ms[0].n
    cell = cell or default_cell(n)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    legend_cols = 1 if cols == 1 else 3
    caption = textwrap.fill(_caption(ms[0], cell), 95 if cols == 1 else 150)
    bottom = 0.25 + 0.21 * -(-len(OUTCOMES) // legend_cols) + 0.14 * (caption.count("\n") + 1)  # inches
    height = 6.3 * rows + bottom
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, height), squeeze=False)
    cmap = ListedColormap([COLORS[o] for o in OUTCOMES])
    shapes = {"table": "o", "probe": "D", "probe_rejected": "s", "known_issue": "X"}
    for ax, (m, names, a) in zip(axes.flat, panels):
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
            ax.scatter([qk], [v], s=70, marker=shapes[outcome], color=COLORS[outcome], edgecolors="black",
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
        ax.set_title(f"{m.backend} {m.version} · {', '.join(names)}\n{m.dtype} · {m.mode}", fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    m = ms[0]
    counts = {o: sum(a.plane(o).count() for _, _, a in panels) for o in OUTCOMES}
    handles = []
    for o in OUTCOMES:
        label = LABELS[o]
        if o in ("probe", "probe_rejected") and not m.probe_consulted:
            label += " (empty: probe not consulted)"
        plural = "" if counts[o] == 1 else "s"
        handles.append(Patch(facecolor=COLORS[o], edgecolor="#888888", label=f"{label} ({counts[o]} shape{plural})"))
    fig.legend(handles=handles, loc="upper center", ncol=legend_cols, fontsize=8.5, frameon=False,
               bbox_to_anchor=(0.5, (bottom - 0.05) / height))
    fig.text(0.5, 0.1 / height, caption, ha="center", va="bottom", fontsize=7.5, color="#444444")
    fig.tight_layout(rect=(0, bottom / height, 1, 1))
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)


def render_svg(m: Matrix, names: list[str], a: ArchPlane, cell: int, scale: float = 1.0) -> str:
    n = a.n
    grid = cell_grid(a, cell)
    k = len(grid)
    px = cell * scale
    left, top, size = 44, 8, k * px
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + size + 8:.0f}" height="{top + size + 40:.0f}" '
           f'role="img" aria-label="{html.escape(m.backend)} {html.escape(", ".join(names))}">']
    for i in range(k):  # qk along x
        j = 0
        while j < k:  # v along y, runs of equal cells
            start, idx = j, grid[i][j]
            while j < k and grid[i][j] == idx:
                j += 1
            if OUTCOMES[idx] != "unsupported":
                y = top + size - j * px
                out.append(f'<rect x="{left + i * px:.1f}" y="{y:.1f}" width="{px:.1f}" '
                           f'height="{(j - start) * px:.1f}" class="{OUTCOMES[idx]}"/>')
    out.insert(1, f'<rect x="{left}" y="{top}" width="{size:.1f}" height="{size:.1f}" class="unsupported"/>')
    for t in range(0, n + 1, 64):
        pos = t * scale
        out.append(f'<line x1="{left + pos:.1f}" y1="{top}" x2="{left + pos:.1f}" y2="{top + size:.1f}" class="grid"/>')
        out.append(f'<line x1="{left}" y1="{top + size - pos:.1f}" x2="{left + size:.1f}" y2="{top + size - pos:.1f}" '
                   'class="grid"/>')
        out.append(f'<text x="{left + pos:.1f}" y="{top + size + 14:.1f}" text-anchor="middle">{t}</text>')
        out.append(f'<text x="{left - 4}" y="{top + size - pos + 4:.1f}" text-anchor="end">{t}</text>')
    out.append(f'<text x="{left + size / 2:.1f}" y="{top + size + 32:.1f}" text-anchor="middle">head_dim_qk</text>')
    out.append(f'<text x="12" y="{top + size / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + size / 2:.1f})">head_dim_v</text>')
    marks = markers(a)
    for (qk, v, outcome, label), (lx, ly, align) in zip(marks, place_labels(marks, n, 6.2 / scale, 11 / scale,
                                                                          7 / scale)):
        x, y = left + (qk - 0.5) * scale, top + size - (v - 0.5) * scale
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" class="{outcome} marker"><title>'
                   f'{html.escape(label)}: {LABELS[outcome]}</title></circle>')
        out.append(f'<text x="{left + lx * scale:.1f}" y="{top + size - ly * scale - 2:.1f}" '
                   f'text-anchor="{"start" if align == "left" else "end"}" class="label">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(ms: list[Matrix], cell: int | None = None) -> str:
    cell = cell or default_cell(ms[0].n)
    scale = min(1.0, 576 / ms[0].n)
    css = "\n".join([
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.3em .6em;"
        "vertical-align:top;text-align:left;font-size:90%}",
        ".panels{display:flex;flex-wrap:wrap;gap:1.5em}.panel h3{margin:.2em 0;font-size:100%}",
        "svg text{font-size:10px;fill:#333}svg .label{font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px}",
        "svg .grid{stroke:#fff;stroke-width:.6;opacity:.7}.marker{stroke:#000;stroke-width:1.2}",
        ".swatch{display:inline-block;width:1em;height:1em;vertical-align:middle;margin-right:.3em;"
        "border:1px solid #999}",
        *(f".{o}{{fill:{c};background:{c}}}" for o, c in COLORS.items()),
    ])
    body = [f"<h1>{html.escape(ms[0].backend)} support matrix</h1>"]
    for m in ms:
        body.append(f"<h2>{html.escape(m.title())}</h2><p>Version: {html.escape(m.version_line())}. "
                    f"Probe: {html.escape(m.probe_note)}.</p>")
        body.append("<table><tr><th>arch</th><th>" + LABELS["table"] + "</th><th>" + LABELS["known_issue"]
                    + "</th></tr>")
        for names, a in m.grouped():
            body.append(f"<tr><td>{html.escape(', '.join(names))}</td>"
                        f"<td>{html.escape(describe_blocks(compact_blocks(a.planes['table']), '; ')) or 'none'}"
                        + "".join(f"<br><b>{LABELS[o]}:</b> {html.escape(describe_blocks(compact_blocks(a.planes[o])))}"
                                  for o in ("probe", "probe_rejected") if a.planes[o].count())
                        + f"</td><td>{html.escape(_issue_cell(a, '; ', str))}</td></tr>")
        body.append("</table><div class='panels'>")
        for names, a in m.grouped():
            body.append(f"<div class='panel'><h3>{html.escape(', '.join(names))}</h3>"
                        f"{render_svg(m, names, a, cell, scale)}</div>")
        body.append("</div>")
    m = ms[0]
    body.append("<h2>Legend</h2><ul>")
    for o in OUTCOMES:
        note = f" (empty here: {m.probe_note})" if o in ("probe", "probe_rejected") and not m.probe_consulted else ""
        body.append(f"<li><span class='swatch {o}'></span>{LABELS[o]}{html.escape(note)}</li>")
    body.append(f"</ul><p>{html.escape(_caption(m, cell))}. Head dims 1..{m.n}.</p>")
    issues = used_issues(ms)
    if issues:
        body.append("<h2>Known issues</h2><ul>" + "".join(
            f"<li><code>{html.escape(i)}</code>: {html.escape(r or '')}</li>" for i, r in issues) + "</ul>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(ms[0].backend)} "
            f"support matrix</title>\n<style>\n{css}\n</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------------------------
# version diff


@dataclass
class Change:
    arch: str
    dtype: str
    kind: str  # gained | lost | issue_added | issue_removed
    block: Block
    detail: tuple[str, ...] = ()  # gained: what rejected it before; lost: what rejects it now; issue: the id


CHANGE_KINDS = ("gained", "lost", "issue_added", "issue_removed")


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


def diff_versions(registry, backend: str, old: str, new: str, *, archs=None, dtypes=None, training=False,
                  cudnn=None, n: int = 576) -> list[Change]:
    if backend not in registry.compiled:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(sorted(registry.compiled))}")
    b, bf, vocab = registry.compiled[backend], registry.backends[backend], registry.vocabulary
    changes: list[Change] = []
    for arch in archs or backend_archs(registry, backend):
        for dtype in dtypes or backend_dtypes(registry, backend):
            template = AttentionQuery(arch=arch, dtype=dtype, head_dim_qk=64, training=training, vocabulary=vocab)
            r = {}
            for version in (old, new):
                c = version if b.package == "cudnn" else cudnn
                ctx = Ctx(arch, vocab.dtypes[dtype].bytes, version, c, b.package, vocab.cc(arch))
                r[version] = regions(b, bf, template, ctx, n)
            ro, rn = r[old], r[new]
            so, sn = ro.supported, rn.supported
            for why, plane in _why(ro, sn - so):
                changes += [Change(arch, dtype, "gained", blk, why) for blk in compact_blocks(plane)]
            for why, plane in _why(rn, so - sn):
                changes += [Change(arch, dtype, "lost", blk, why) for blk in compact_blocks(plane)]
            wo, wn = ro.support & ro.features, rn.support & rn.features
            empty = Plane.empty(n)
            for issue_id in dict.fromkeys([*rn.issues, *ro.issues]):
                io, in_ = wo & ro.issues.get(issue_id, empty), wn & rn.issues.get(issue_id, empty)
                changes += [Change(arch, dtype, "issue_added", blk, (issue_id,)) for blk in compact_blocks(in_ - io)]
                changes += [Change(arch, dtype, "issue_removed", blk, (issue_id,))
                            for blk in compact_blocks(io - in_)]
    return changes


def _where(pairs: list[tuple[str, str]]) -> str:
    """'sm100, sm103 (bf16, fp16); sm90 (fp8_e4m3)': archs with the same dtypes together."""
    by_arch: dict[str, list[str]] = {}
    for arch, dtype in pairs:
        by_arch.setdefault(arch, []).append(dtype)
    groups: dict[tuple[str, ...], list[str]] = {}
    for arch, ds in by_arch.items():
        groups.setdefault(tuple(ds), []).append(arch)
    return "; ".join(f"{', '.join(archs)} ({', '.join(ds)})" for ds, archs in groups.items())


def render_diff(backend: str, old: str, new: str, changes: list[Change], fmt: str, *, training: bool, n: int) -> str:
    mode = "training" if training else "inference"
    if fmt == "json":
        return json.dumps({"backend": backend, "old": old, "new": new, "training": training,
                           "head_dims": {"min": 1, "max": n},
                           "changes": [{"arch": c.arch, "dtype": c.dtype, "kind": c.kind, "detail": list(c.detail),
                                        **c.block.as_json()} for c in changes]}, indent=2)
    grouped: dict[tuple, list[tuple[str, str]]] = {}
    for c in changes:
        grouped.setdefault((c.kind, c.block, c.detail), []).append((c.arch, c.dtype))
    lines = [f"{backend} {old} -> {new} ({mode}, head dims 1..{n}): {len(grouped)} change(s)"]
    order = list(CHANGE_KINDS)
    for (kind, block, detail), pairs in sorted(grouped.items(), key=lambda kv: (order.index(kv[0][0]),
                                                                                  kv[0][1].qks[0], kv[0][1].vs[0])):
        where = f"{block.describe()} on {_where(pairs)}"
        if kind == "gained":
            lines.append(f"  + now supported: {where} (at {old}: {', '.join(detail)})")
        elif kind == "lost":
            lines.append(f"  - no longer supported: {where} (at {new}: {', '.join(detail)})")
        elif kind == "issue_added":
            lines.append(f"  ! known issue {detail[0]} now blocks {where}")
        else:
            lines.append(f"  ~ known issue {detail[0]} no longer blocks {where}")
    if not grouped:
        lines.append("  no change")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# docs


def docs_matrices(registry) -> list[tuple[str, list[Matrix]]]:
    out = []
    for backend in [b for b in registry.policy.default if b in registry.compiled] + \
            sorted(b for b in registry.compiled if b not in registry.policy.default):
        b = registry.compiled[backend]
        if b.package not in DOC_VERSIONS:
            continue
        cudnn = DOC_VERSIONS["cudnn"] if uses_cudnn(registry, backend) else None
        ms = [build_matrix(registry, backend, DOC_VERSIONS[b.package], DOC_DTYPE, training=t, cudnn=cudnn,
                           version_source="pinned") for t in (False, True)]
        out.append((backend, ms))
    return out


def picture_name(backend: str, arch: str, training: bool) -> str:
    return f"matrix-{backend}-{arch}-{DOC_DTYPE}-{'training' if training else 'inference'}.png"


def docs_markdown(registry) -> str:
    sections = docs_matrices(registry)
    lines = ["# Support matrix", "",
             f"<!-- generated by `{DOCS_COMMAND}` from capabilities/*.yaml; do not edit by hand -->", "",
             f"Which (head_dim_qk, head_dim_v) pairs each backend accepts, per arch, for {DOC_DTYPE} without "
             "masks or other features, for inference (forward) and training (forward + backward), from the "
             "capability data only (probes are not consulted). Versions described: "
             + ", ".join(f"{p} {v}" for p, v in DOC_VERSIONS.items()) + ".", "",
             "For another version, dtype or arch: `attncap matrix --backend B --version V [--dtype D] [--arch A] "
             "[--training] --format md|json|html|png`; what changed between two versions: "
             "`attncap diff-versions B OLD NEW`.", "", "Legend:"]
    lines += legend_lines(sections[0][1][0]) + [""]
    for backend, ms in sections:
        b = registry.backends[backend]
        lines += [f"## {backend}", "", f"{b.description or ''} — {ms[0].version_line()}.".lstrip(" —"), ""]
        for m in ms:
            lines += [f"### {m.dtype}, {m.mode}", ""] + markdown_table(m) + [""]
            pictures = [p for p in DOC_PICTURES if p[0] == backend and p[2] == m.training]
            for _, arch, t in pictures:
                lines += [f"![{backend} {arch} {m.dtype} {m.mode}](img/{picture_name(backend, arch, t)})", ""]
        issues = used_issues(ms)
        if issues:
            lines += ["Known issues:", ""] + [f"- `{i}`: {' '.join((r or '').split())}".rstrip() for i, r in issues]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_docs(registry, directory, *, pictures: bool = True) -> list[Path]:
    directory = Path(directory)
    (directory / "img").mkdir(parents=True, exist_ok=True)
    written = [directory / "support-matrix.md"]
    written[0].write_text(docs_markdown(registry))
    if pictures:
        for backend, arch, training in DOC_PICTURES:
            b = registry.compiled[backend]
            cudnn = DOC_VERSIONS["cudnn"] if uses_cudnn(registry, backend) else None
            m = build_matrix(registry, backend, DOC_VERSIONS[b.package], DOC_DTYPE, archs=[arch], training=training,
                             cudnn=cudnn, version_source="pinned")
            path = directory / "img" / picture_name(backend, arch, training)
            render_png([m], path)
            written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# CLI


def _registry(args):
    from .loader import load_registry
    from .resolver import default_registry
    return load_registry(tuple(args.data)) if args.data else default_registry()


def _names(registry, args):
    vocab = registry.vocabulary
    archs, dtypes = [], []
    for a in args.arch:
        name = vocab.arch_name(a)
        if name is None:
            raise ValueError(f"unknown arch {a!r}; known: {', '.join(vocab.archs)}")
        archs.append(name)
    for d in args.dtype:
        name = vocab.dtype_name(d)
        if name is None:
            raise ValueError(f"unknown dtype {d!r}; known: {', '.join(vocab.dtypes)}")
        dtypes.append(name)
    return archs or None, dtypes or None


def _cudnn(registry, backend: str, given: str | None, env) -> str | None:
    if not uses_cudnn(registry, backend) or registry.compiled[backend].package == "cudnn":
        return given
    cudnn = given or env.cudnn
    if cudnn is None:
        raise ValueError(f"{backend}'s rules depend on the cuDNN version and no cuDNN is installed here: "
                         "pass --cudnn VERSION")
    return cudnn


def cmd_matrix(args) -> int:
    from .environment import Environment
    registry = _registry(args)
    if args.write_docs or args.check_docs:
        return _docs_command(registry, args)
    if not args.backend:
        raise ValueError("--backend is required (or --write-docs DIR)")
    if args.backend not in registry.compiled:
        raise ValueError(f"unknown backend {args.backend!r}; known: {', '.join(sorted(registry.compiled))}")
    b = registry.compiled[args.backend]
    env = Environment.detect()
    version, source = args.version, "--version"
    if version is None:
        version, source = env.version(b.package), "installed"
        if version is None:
            known = mentioned_versions(registry, args.backend)
            raise ValueError(f"{b.package} is not installed here: pass --version (the data names "
                             f"{', '.join(known[-5:]) or 'no versions'})")
    archs, dtypes = _names(registry, args)
    cudnn = _cudnn(registry, args.backend, args.cudnn, env)
    ms = [build_matrix(registry, args.backend, version, dtype, archs=archs, training=args.training, cudnn=cudnn,
                       n=args.max_head_dim, probes=not args.no_probes, version_source=source)
          for dtype in dtypes or ["bf16"]]
    if args.format == "png":
        if not args.output:
            raise ValueError("--format png needs -o FILE")
        render_png(ms, args.output, args.cell)
        print(f"wrote {args.output} ({ms[0].version_line()})", file=sys.stderr)
        return 0
    text = {"md": lambda: render_markdown(ms), "html": lambda: render_html(ms, args.cell),
            "json": lambda: json.dumps({"matrices": [matrix_json(m) for m in ms]}, indent=2) + "\n"}[args.format]()
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({ms[0].version_line()})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _docs_command(registry, args) -> int:
    if args.check_docs:
        path = Path(args.check_docs) / "support-matrix.md"
        if not path.exists() or path.read_text() != docs_markdown(registry):
            print(f"{path} is stale; regenerate with: {DOCS_COMMAND}", file=sys.stderr)
            return 1
        return 0
    try:
        import matplotlib  # noqa: F401
        pictures = True
    except ImportError:
        print(f"matplotlib is missing: writing the Markdown only ({PLOT_HINT} for the pictures)", file=sys.stderr)
        pictures = False
    for path in write_docs(registry, args.write_docs, pictures=pictures):
        print(f"wrote {path}")
    return 0


def cmd_diff_versions(args) -> int:
    from .environment import Environment
    registry = _registry(args)
    archs, dtypes = _names(registry, args)
    cudnn = _cudnn(registry, args.backend, args.cudnn, Environment.detect()) if args.backend in registry.compiled \
        else None
    changes = diff_versions(registry, args.backend, args.old, args.new, archs=archs, dtypes=dtypes,
                            training=args.training, cudnn=cudnn, n=args.max_head_dim)
    print(render_diff(args.backend, args.old, args.new, changes, args.format, training=args.training,
                      n=args.max_head_dim))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("matrix", help="a backend's head_dim_qk x head_dim_v support matrix per arch")
    p.add_argument("--backend")
    p.add_argument("--arch", action="append", default=[], help="repeatable (default: every arch the backend names)")
    p.add_argument("--dtype", action="append", default=[], help="repeatable (default: bf16)")
    p.add_argument("--version", help="the backend package's version (default: the installed one)")
    p.add_argument("--cudnn", help="cuDNN runtime version, for backends whose rules depend on it")
    p.add_argument("--training", action="store_true", help="backward pass needed")
    p.add_argument("--max-head-dim", type=int, default=576)
    p.add_argument("--format", choices=["md", "json", "html", "png"], default="md")
    p.add_argument("-o", "--output", metavar="FILE")
    p.add_argument("--cell", type=int, help="picture cell size in head dims (default 8; 1 = every point)")
    p.add_argument("--no-probes", action="store_true", help="the table only")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    p.add_argument("--write-docs", metavar="DIR", help="regenerate DIR/support-matrix.md and DIR/img/*.png")
    p.add_argument("--check-docs", metavar="DIR", help="exit 1 when DIR/support-matrix.md is stale")
    p.set_defaults(func=cmd_matrix)
    p = sub.add_parser("diff-versions", help="what support changed between two versions of a backend, from the data")
    p.add_argument("backend")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--arch", action="append", default=[])
    p.add_argument("--dtype", action="append", default=[], help="repeatable (default: every dtype the backend names)")
    p.add_argument("--training", action="store_true")
    p.add_argument("--cudnn", help="cuDNN runtime version, for backends whose rules depend on it")
    p.add_argument("--max-head-dim", type=int, default=576)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    p.set_defaults(func=cmd_diff_versions)


def main(argv: list[str] | None = None) -> int:
    from .cli import main as cli_main
    return cli_main(["matrix", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""Matrices as one self-contained HTML page: tables plus an inline SVG picture per group of archs."""

from __future__ import annotations

from html import escape

from .blocks import describe_plane
from .compute import COLORS, LABELS, OUTCOMES, PROBE_OUTCOMES, ArchPlane, Matrix
from .markdown import issue_cell, issue_effects, used_issues
from .picture import caption, cell_grid, default_cell, markers, place_labels

CSS = "\n".join([
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


def _cell_rects(grid: list[list[int]], left: float, top: float, size: float, px: float) -> list[str]:
    """One rect per vertical run of equal cells that are not unsupported (the background is)."""
    out = []
    k = len(grid)
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
    return out


def _axes(n: int, left: float, top: float, size: float, scale: float) -> list[str]:
    out = []
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
    return out


def _markers(a: ArchPlane, left: float, top: float, size: float, scale: float) -> list[str]:
    out = []
    marks = markers(a)
    for (qk, v, outcome, label), (lx, ly, align) in zip(marks, place_labels(marks, a.n, 6.2 / scale, 11 / scale,
                                                                          7 / scale)):
        x, y = left + (qk - 0.5) * scale, top + size - (v - 0.5) * scale
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" class="{outcome} marker"><title>'
                   f'{escape(label)}: {LABELS[outcome]}</title></circle>')
        out.append(f'<text x="{left + lx * scale:.1f}" y="{top + size - ly * scale - 2:.1f}" '
                   f'text-anchor="{"start" if align == "left" else "end"}" class="label">{escape(label)}</text>')
    return out


def render_svg(m: Matrix, names: list[str], a: ArchPlane, cell: int, scale: float = 1.0) -> str:
    grid = cell_grid(a, cell)
    px = cell * scale
    left, top, size = 44, 8, len(grid) * px
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + size + 8:.0f}" height="{top + size + 40:.0f}" '
            f'role="img" aria-label="{escape(m.backend)} {escape(", ".join(names))}">')
    background = f'<rect x="{left}" y="{top}" width="{size:.1f}" height="{size:.1f}" class="unsupported"/>'
    return "\n".join([head, background, *_cell_rects(grid, left, top, size, px),
                      *_axes(a.n, left, top, size, scale), *_markers(a, left, top, size, scale), "</svg>"])


def _summary_rows(m: Matrix) -> list[str]:
    """The table's header and rows (the caller closes it)."""
    out = ["<table><tr><th>arch</th><th>" + LABELS["table"] + "</th><th>" + LABELS["known_issue"] + "</th></tr>"]
    for names, a in m.grouped():
        out.append(f"<tr><td>{escape(', '.join(names))}</td>"
                   f"<td>{escape(describe_plane(a.planes['table'], '; ')) or 'none'}"
                   + "".join(f"<br><b>{LABELS[o]}:</b> {escape(describe_plane(a.planes[o]))}"
                             for o in PROBE_OUTCOMES if a.planes[o].count())
                   + f"</td><td>{escape(issue_cell(a, '; ', str))}</td></tr>")
    return out


def _matrix_section(m: Matrix, cell: int, scale: float) -> list[str]:
    out = [f"<h2>{escape(m.title())}</h2><p>Version: {escape(m.version_line())}. "
           f"Probe: {escape(m.probe_note)}.</p>"]
    out += _summary_rows(m) + ["</table><div class='panels'>"]
    for names, a in m.grouped():
        out.append(f"<div class='panel'><h3>{escape(', '.join(names))}</h3>"
                   f"{render_svg(m, names, a, cell, scale)}</div>")
    out.append("</div>")
    return out + _conditional_html(m)


def _conditional_html(m: Matrix) -> list[str]:
    """The query fields the planes share, and the known issues they leave open (conditional.py)."""
    from .blocks import describe_plane
    from .conditional import describe_fields, grouped
    out = [f"<p>Query fields for every point: {escape(describe_fields(m.fields))}.</p>"] if m.fields else []
    if m.conditional:
        out.append("<p>Known issues with other conditions (not in the pictures; they block these shapes when "
                   "their conditions hold):</p><ul>" + "".join(
                       f"<li><code>{escape(i.id)}</code> ({escape('; '.join(i.conditions))}): "
                       f"{escape(describe_plane(i.plane, ', '))} on {escape(', '.join(archs))}</li>"
                       for i, archs in grouped(m.conditional)) + "</ul>")
    return out


def _legend(m: Matrix, cell: int) -> list[str]:
    out = ["<h2>Legend</h2><ul>"]
    for o in OUTCOMES:
        note = f" (empty here: {m.probe_note})" if o in PROBE_OUTCOMES and not m.probe_consulted else ""
        out.append(f"<li><span class='swatch {o}'></span>{LABELS[o]}{escape(note)}</li>")
    effects = issue_effects([m])
    out.append(f"</ul><p>{escape(caption(cell))}. Head dims 1..{m.n}."
               + (f" Known-issue effects: {escape(effects)}." if effects else "") + "</p>")
    return out


def render_html(ms: list[Matrix], cell: int | None = None) -> str:
    cell = cell or default_cell(ms[0].n)
    scale = min(1.0, 576 / ms[0].n)
    body = [f"<h1>{escape(ms[0].backend)} support matrix</h1>"]
    for m in ms:
        body += _matrix_section(m, cell, scale)
    body += _legend(ms[0], cell)
    issues = used_issues(ms)
    if issues:
        body.append("<h2>Known issues</h2><ul>" + "".join(
            f"<li><code>{escape(i)}</code>: {escape(r or '')}</li>" for i, r in issues) + "</ul>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(ms[0].backend)} "
            f"support matrix</title>\n<style>\n{CSS}\n</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")

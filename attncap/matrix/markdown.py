"""A matrix as Markdown: one table row per group of archs with identical planes, then the legend."""

from __future__ import annotations

from .blocks import describe_plane
from .compute import LABELS, PROBE_OUTCOMES, ArchPlane, Matrix


def issue_cell(a: ArchPlane, sep: str, code=lambda s: f"`{s}`") -> str:
    """Each known issue of the arch and the shapes it blocks."""
    return sep.join(f"{code(i)}: {describe_plane(plane, ', ')}" for i, plane in a.issues.items())


def used_issues(ms: list[Matrix]) -> list[tuple[str, str | None]]:
    """(id, reason) of every known issue that blocks some shape, in order of appearance; the reason
    starts with the issue's effect ("[wrong_result] ...") when it has one."""
    seen: dict[str, str | None] = {}
    for m in ms:
        for a in m.archs:
            for i in a.issues:
                reason, _, effect = m.issues.get(i, (None, None, None))
                seen.setdefault(i, f"[{effect}] {reason or ''}".rstrip() if effect else reason)
    return list(seen.items())


def issue_effects(ms: list[Matrix]) -> str:
    """'effects: poisons_cuda_context (a, b); wrong_result (c)' over the issues that block some shape."""
    by: dict[str, list[str]] = {}
    for m in ms:
        for a in m.archs:
            for i in a.issues:
                effect = m.issues.get(i, (None, None, None))[2] or "effect not recorded"
                if i not in by.setdefault(effect, []):
                    by[effect].append(i)
    def names(ids: list[str]) -> str:
        return ", ".join(ids[:3] + ([f"{len(ids) - 3} more"] if len(ids) > 3 else []))
    return "; ".join(f"{e} ({names(ids)})" for e, ids in by.items())


def legend_lines(m: Matrix) -> list[str]:
    probe = m.probe_note if m.probe_consulted else f"empty here: {m.probe_note}"
    return [
        f"- **{LABELS['table']}**: a support rule accepts" + (" and the probe agrees" if m.probe_consulted else ""),
        f"- **{LABELS['probe']}** / **{LABELS['probe_rejected']}**: {probe}",
        f"- **{LABELS['known_issue']}**: a support rule (or the probe) accepts but the known issue named rejects; "
        "`[effect]` before its reason says what a caller who runs it anyway sees (docs/format.md)",
        f"- everything not listed is **{LABELS['unsupported']}**; head dims range over 1..{m.n} × 1..{m.n}; "
        "`a..b step s` is a, a+s, ..., b; qk = head_dim_qk, v = head_dim_v",
    ]


def markdown_table(m: Matrix) -> list[str]:
    extra = [o for o in PROBE_OUTCOMES if m.probe_consulted or any(a.planes[o].count() for a in m.archs)]
    header = ["arch", LABELS["table"], *(LABELS[o] for o in extra), LABELS["known_issue"]]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for names, a in m.grouped():
        cells = [", ".join(names), describe_plane(a.planes["table"], "<br>") or "none"]
        cells += [describe_plane(a.planes[o], "<br>") or "" for o in extra]
        cells.append(issue_cell(a, "<br>"))
        if a.probe_note and m.probe_consulted:
            cells[0] += f" ({a.probe_note})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def conditional_section(m: Matrix) -> list[str]:
    """The query the plane is for, and the known issues it leaves open (they need more query fields)."""
    from .conditional import conditional_lines, describe_fields
    lines = [f"Query fields for every point: {describe_fields(m.fields)}.", ""] if m.fields else []
    if m.conditional:
        lines += ["Known issues with other conditions (not in the table; they block these shapes when their "
                  "conditions hold):", *conditional_lines(m.conditional), ""]
    return lines


def render_markdown(ms: list[Matrix]) -> str:
    lines: list[str] = []
    for m in ms:
        lines += [f"## {m.title()}", "", f"Version: {m.version_line()}. Probe: {m.probe_note}.", ""]
        lines += markdown_table(m) + [""] + conditional_section(m)
    lines += ["Legend:", *legend_lines(ms[0])]
    issues = used_issues(ms)
    if issues:
        lines += ["", "Known issues:"] + [f"- `{i}`: {reason or ''}".rstrip() for i, reason in issues]
    return "\n".join(lines) + "\n"

"""Render resolutions and problems for people (text) and machines (json, GitHub annotations)."""

from __future__ import annotations

import json


def decision_table(resolution) -> str:
    """One line per backend in policy order, then its reasons indented below it."""
    width = max(len(d.backend) for d in resolution.decisions) if resolution.decisions else 10
    lines = []
    for d in resolution.decisions:
        mark = "*" if d.backend == resolution.selected else " "
        verdict = d.outcome if d.supported or d.outcome != "unverified" else "denied"  # unverified='deny'
        verdict = "rejected" if verdict == "supported" and not d.supported else verdict
        rule = f" [{d.rule}]" if d.supported and d.rule else ""
        lines.append(f"{mark} {d.backend:<{width}}  {verdict:<9}  by {d.decided_by}{rule}")
        lines += [f"      - {r.message}" + (f"  ({r.source})" if r.source and r.code in ("known_issue", "conflict", "namespace")
                                               else "")
                  for r in d.reasons]
    return "\n".join(lines)


def resolution_text(resolution) -> str:
    selected = resolution.selected or "none"
    return f"selected: {selected}  (arch {resolution.arch}, {resolution.query!r})\n{decision_table(resolution)}"


def to_json(data) -> str:
    return json.dumps(data, indent=2, default=str)


def problems_text(problems) -> str:
    return "\n".join(f"{p}" + ("" if p.severity == "error" else f" [{p.severity}: {p.check}]") for p in problems)


def problems_github(problems) -> str:
    """GitHub workflow commands, so problems show inline on pull requests."""
    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return "\n".join(
        f"::{'error' if p.severity == 'error' else 'warning'} file={p.file},line={p.line},col={p.column},"
        f"title=attncap {p.check}::{escape((p.field + ': ' if p.field else '') + p.message)}" for p in problems)


def problems_json(problems) -> str:
    return to_json([p.__dict__ for p in problems])

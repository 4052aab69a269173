"""A matrix as JSON: per arch, each outcome's count and compact blocks."""

from __future__ import annotations

import json

from .blocks import blocks_json
from .compute import LABELS, OUTCOMES, PLANE_OUTCOMES, ArchPlane, Matrix


def arch_json(a: ArchPlane) -> dict:
    outcomes = {o: {"count": a.planes[o].count(), "blocks": blocks_json(a.planes[o])} for o in PLANE_OUTCOMES}
    outcomes["known_issue"]["by_issue"] = {i: blocks_json(plane) for i, plane in a.issues.items()}
    outcomes["unsupported"] = {"count": a.unsupported.count(), "complement": True}
    return {"arch": a.arch, "probe": a.probe_note, "outcomes": outcomes}


def matrix_json(m: Matrix) -> dict:
    used = {i for a in m.archs for i in a.issues}
    return {"backend": m.backend, "package": m.package, "version": m.version, "version_source": m.version_source,
            "cudnn": m.cudnn, "dtype": m.dtype, "training": m.training, "head_dims": {"min": 1, "max": m.n},
            "probe": {"consulted": m.probe_consulted, "note": m.probe_note},
            "legend": {o: LABELS[o] for o in OUTCOMES}, "archs": [arch_json(a) for a in m.archs],
            "known_issues": {i: {"reason": r, "source": s, "effect": e} for i, (r, s, e) in m.issues.items()
                             if i in used},
            **conditional_json_of(m)}


def conditional_json_of(m: Matrix) -> dict:
    from .conditional import conditional_json
    return {"query_fields": m.fields, "conditional_known_issues": conditional_json(m.conditional)}


def render_json(ms: list[Matrix]) -> str:
    return json.dumps({"matrices": [matrix_json(m) for m in ms]}, indent=2) + "\n"

"""capabilities/flash_attn_4.yaml against FA4's own checks, at every published version.

tests/evidence/fa4_validator_history.json (made by tools/fa4_history.py from the wheels) says,
per version, what `_validate_head_dims` (or, in 4.0.0b3/b4, the inline asserts) accepts and which
entry-point gates surround it. Here every point the validator can judge (cc 9, 10, 11; head dims
1..576 x 1..576, every pass and dtype) is resolved through attncap with that version installed,
and the two must agree. The only allowed difference: the YAML rejects by a known issue what FA4
accepts (printed, per issue).

Versions whose answers cannot differ (same validator, same gates, and the same set of YAML
`versions:` specifiers matching) are checked once, through their first member. Within a version
both sides depend on a head dim only through the intervals between the boundaries named in the
table and in the YAML and through its residue modulo 16, so the grid is reduced to one
representative per (interval, residue class); that is exact, not a sample.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import attncap

ROOT = Path(__file__).resolve().parents[1]
HISTORY = json.loads((ROOT / "tests/evidence/fa4_validator_history.json").read_text())
FA4 = yaml.safe_load((ROOT / "capabilities/flash_attn_4.yaml").read_text())
BACKEND = "flash-attn-4"
ARCHS = {9: ["sm90"], 10: ["sm100", "sm103"], 11: ["sm110"]}
DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}
ALIGNMENT = {"fp16": 8, "bf16": 8, "fp8_e4m3": 16, "fp8_e5m2": 16}  # 16 // element size
LO, HI = HISTORY["grid"]


def _version_specs() -> list[str]:
    rules = [*FA4["support"], *FA4["known_issues"], *(r for rs in FA4["features"].values() for r in rs)]
    return sorted({r["versions"] for r in rules if r.get("versions")})


def _version_classes() -> dict[str, list[str]]:
    specs = [SpecifierSet(s) for s in _version_specs()]
    classes: dict[tuple, list[str]] = defaultdict(list)
    for ver, info in sorted(HISTORY["versions"].items(), key=lambda kv: Version(kv[0])):
        key = (info["validator"], json.dumps(info["gates"], sort_keys=True),
               tuple(s.contains(ver, prereleases=True) for s in specs))
        classes[key].append(ver)
    return {members[0]: members for members in classes.values()}


def _ranges(axis: str):
    """(lo, hi) inclusive intervals the YAML and the table name on one axis (0 = qk, 1 = v)."""
    key = ("head_dim_qk", "head_dim_v")[axis]
    for rule in [*FA4["support"], *(k.get("when", {}) for k in FA4["known_issues"])]:
        if rule.get(key):
            yield rule[key].get("min", LO), rule[key].get("max", HI)
        for pair in rule.get("head_dims", []):
            yield pair[axis], pair[axis]
    for v in HISTORY["validators"].values():
        for rects in v["accept"].values():
            for r in rects:
                yield r[2 * axis], r[2 * axis + 1]


def _representatives(axis: str) -> list[int]:
    cuts = {LO, HI + 1}
    for lo, hi in _ranges(axis):
        cuts |= {max(lo, LO), min(hi, HI) + 1}
    cuts = sorted(cuts)
    reps = []
    for a, b in zip(cuts, cuts[1:]):  # [a, b): one point per residue class that matters (mod 16)
        for cls in (lambda x: x % 16 == 0, lambda x: x % 16 == 8, lambda x: x % 8 != 0):
            reps += [next((x for x in range(a, b) if cls(x)), None)]
    return sorted({x for x in reps if x is not None})


def _accepts(validator: dict, cc: int, alignment: int, qk: int, v: int) -> bool:
    rects = validator["accept"][f"cc{cc}/a{alignment}"]
    return qk % alignment == 0 and v % alignment == 0 and any(
        a <= qk <= b and c <= v <= d for a, b, c, d in rects)


def _fa4_says(ver: str, cc: int, dtype: str, training: bool, qk: int, v: int) -> bool:
    info = HISTORY["versions"][ver]
    gates = info["gates"]
    fwd_dtypes = {DTYPES[d] for d in gates["fwd_dtypes"]}
    ok = cc in gates["fwd_archs"] and dtype in fwd_dtypes
    if dtype.startswith("fp8"):
        ok = ok and gates["fp8_fwd_archs"] is not None and cc in gates["fp8_fwd_archs"]
    if training:
        ok = ok and cc in gates["bwd_archs"] and dtype in {DTYPES[d] for d in gates["bwd_dtypes"]}
    for side in ("fwd", "bwd") if training else ("fwd",):
        call = gates[f"validator_call_{side}"]
        assert call == "inline" or cc in call, f"{ver}: the validator does not judge cc {cc} ({side})"
    return ok and _accepts(HISTORY["validators"][info["validator"]], cc, ALIGNMENT[dtype], qk, v)


CLASSES = _version_classes()


def test_every_published_version_is_covered():
    covered = sorted((v for vs in CLASSES.values() for v in vs), key=Version)
    assert covered == sorted(HISTORY["versions"], key=Version)
    assert "4.0.0b6" not in covered and {"4.0.0b3", "4.0.0b36"} <= set(covered)


def test_the_probe_names_exactly_the_versions_checked_here():
    """The FA4 probe's unwarmed reason says "the packaged table already equals the validator" for these only."""
    from attncap.probes.fa4 import CHECKED
    assert CHECKED == set(HISTORY["versions"]), "update CHECKED in attncap/probes/fa4.py with the history"


@pytest.mark.parametrize("version", list(CLASSES), ids=lambda v: f"{v}(+{len(CLASSES[v]) - 1})")
def test_yaml_matches_validator(version):
    qks, vs = _representatives(0), _representatives(1)
    excused: dict[str, list] = defaultdict(list)
    wrong = []
    for cc, archs in ARCHS.items():
        for arch in archs:
            env = attncap.Environment(arch=arch, versions={BACKEND: version})
            for dtype in ALIGNMENT:
                for training in (False, True):
                    for qk in qks:
                        for v in vs:
                            q = attncap.AttentionQuery(arch=arch, dtype=dtype, head_dim_qk=qk, head_dim_v=v,
                                                       training=training)
                            d = attncap.resolve(q, env, probes=False).decision(BACKEND)
                            fa4 = _fa4_says(version, cc, dtype, training, qk, v)
                            point = (arch, dtype, "train" if training else "infer", qk, v)
                            if d.supported == fa4:
                                continue
                            if fa4 and d.decided_by == "known_issue":
                                excused[d.reasons[0].rule].append(point)
                            else:
                                wrong.append((*point, "FA4 accepts" if fa4 else "FA4 rejects",
                                              [r.message for r in d.reasons][:2]))
    members = CLASSES[version]
    print(f"\n{version} (stands for {members[0]}..{members[-1]}, {len(members)} versions): "
          f"{len(qks)}x{len(vs)} head-dim representatives")
    for issue, points in sorted(excused.items()):
        print(f"  known issue {issue}: {len(points)} points, e.g. {points[:3]}")
    assert not wrong, f"{len(wrong)} disagreements, first: {wrong[:5]}"

"""One failing and one passing example per lint check, each a small overlay in tmp_path.

The overlays add a backend of their own (`toy`) where they can, so that they do not depend on
what the packaged data says; only problems about the overlay's files are looked at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attncap import lint
from attncap.loader import check_paths, packaged_dir

SCHEMA = "# yaml-language-server: $schema=../schemas/backend.schema.json\n"
TOY = SCHEMA + """backend: toy
package: toy
install: pip install "toy{specifier}"
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def found(tmp_path: Path, check: str) -> list:
    """The problems of check `check` about files in tmp_path, after loading it over the packaged data."""
    _registry, problems = check_paths([packaged_dir(), tmp_path])
    return [p for p in problems if p.check == check and p.file.startswith(str(tmp_path))]


def toy(tmp_path: Path, body: str, *, head: str = TOY) -> Path:
    return write(tmp_path, "toy.yaml", head + body)


# ---- document checks -------------------------------------------------------------------

def test_file_name(tmp_path):
    write(tmp_path, "not_toy.yaml", TOY + "support: [{id: all, source: test}]\n")
    [problem] = found(tmp_path, "file-name")
    assert problem.field == "backend" and problem.line == 2
    assert "'toy' must match the file name (expected 'not-toy'" in problem.message


def test_file_name_passes(tmp_path):
    toy(tmp_path, "support: [{id: all, source: test}]\n")
    assert found(tmp_path, "file-name") == []


@pytest.mark.parametrize("section", ["support", "known_issues", "features"])
def test_duplicate_id(tmp_path, section):
    rules = "\n  - {id: twice, versions: '>=1', reason: r, source: test}" * 2
    body = {"support": f"support:{rules}\n",
            "known_issues": f"support: [{{id: all, source: test}}]\nknown_issues:{rules}\n",
            "features": f"support: [{{id: all, source: test}}]\nfeatures:\n causal:{rules}\n"}[section]
    body = body.replace("versions: '>=1', reason: r, ", "") if section != "known_issues" else body
    toy(tmp_path, body)
    [problem] = found(tmp_path, "duplicate-id")
    assert problem.field.endswith("[1].id") and "duplicate id 'twice' (first at index 0)" in problem.message


def test_duplicate_id_passes(tmp_path):
    toy(tmp_path, "support:\n  - {id: one, source: test}\n  - {id: two, dtype: [fp16], source: test}\n")
    assert found(tmp_path, "duplicate-id") == []


def test_schema_line(tmp_path):
    toy(tmp_path, "support: [{id: all, source: test}]\n", head=TOY.removeprefix(SCHEMA))
    [problem] = found(tmp_path, "schema-line")
    assert problem.severity == "warning" and (problem.line, problem.column) == (1, 1)


def test_schema_line_passes(tmp_path):
    toy(tmp_path, "support: [{id: all, source: test}]\n")
    assert found(tmp_path, "schema-line") == []


@pytest.mark.parametrize("name, text, field", [
    ("policy.yaml", "families:\n  hopper: {order: [flash-attn-3, flash-attn-3], why: w}\n", "families.hopper.order[1]"),
    ("policy.yaml", "default: [torch-sdpa-math, torch-sdpa-math]\n", "default[1]"),
    ("dtypes.yaml", "dtypes:\n  - {name: fp6, bytes: 1}\n  - {name: fp6, bytes: 2}\n", "dtypes[1]"),
])
def test_duplicate_entry(tmp_path, name, text, field):
    write(tmp_path, name, text)
    [problem] = found(tmp_path, "duplicate-entry")
    assert problem.field == field and "is listed twice (first at index 0)" in problem.message


def test_duplicate_entry_passes(tmp_path):
    write(tmp_path, "policy.yaml", "default: [torch-sdpa-math, torch-sdpa-flash]\n")
    assert found(tmp_path, "duplicate-entry") == []


# ---- registry checks -------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ("support: [{id: r, arch: [sm90, sm999], source: test}]\n", "unknown arch 'sm999'"),
    ("support: [{id: r, arch: {family: nosuch}, source: test}]\n", "unknown arch 'nosuch'"),
    ("support: [{id: r, arch: {min: sm80, max: sm999}, source: test}]\n", "unknown arch 'sm999'"),
    ("support: [{id: r, dtype: [fp12], source: test}]\n", "unknown dtype 'fp12'"),
    ("support: [{id: r, source: test}]\nknown_issues:\n"
     "  - {id: k, versions: '>=1', when: {arch: [sm999]}, reason: r, source: test}\n", "unknown arch 'sm999'"),
    ("probe: {name: toy-probe, mode: advisory, archs: [sm999]}\nsupport: [{id: r, source: test}]\n",
     "unknown arch 'sm999' in the probe's domain"),
])
def test_unknown_name(tmp_path, body, message):
    toy(tmp_path, body)
    [problem] = found(tmp_path, "unknown-name")
    assert message in problem.message and problem.severity == "error"


def test_unknown_name_in_policy(tmp_path):
    write(tmp_path, "policy.yaml", "families:\n  nosuch: {order: [toy, nobackend], why: test}\n")
    toy(tmp_path, "support: [{id: r, source: test}]\n")
    messages = [p.message for p in found(tmp_path, "unknown-name")]
    assert any("unknown arch family 'nosuch'" in m for m in messages)
    assert "unknown backend 'nobackend'" in messages


def test_unknown_name_passes(tmp_path):
    write(tmp_path, "policy.yaml", "families:\n  hopper: {order: [toy], why: test}\n")
    toy(tmp_path, "probe: {name: toy-probe, mode: advisory, archs: [sm90]}\n"
                  "support: [{id: r, arch: [sm90, sm100], dtype: [bf16], source: test},\n"
                  "          {id: s, arch: {family: ampere}, source: test},\n"
                  "          {id: t, arch: {min: sm80, max: '9.0'}, source: test}]\n")
    assert found(tmp_path, "unknown-name") == []


@pytest.mark.parametrize("body, message", [
    ("support: [{id: r}]\n", "rule 'r' has no source"),
    ("support: [{id: r, source: test}]\nknown_issues: [{id: k, versions: '>=1', reason: r}]\n",
     "rule 'k' has no source"),
    ("support: [{id: r, source: test}]\nknown_issues: [{id: k, versions: '>=1', source: s}]\n",
     "known issue 'k' needs a reason in plain words (reason)"),
    ("support: [{id: r, source: test}]\nknown_issues: [{id: k, reason: r, source: s}]\n",
     "known issue 'k' needs the versions it affects (versions)"),
    ("support: [{id: r, source: test}]\nfeatures: {causal: [{id: all}]}\n", "rule 'all' has no source"),
])
def test_missing_source(tmp_path, body, message):
    toy(tmp_path, body)
    [problem] = found(tmp_path, "missing-source")
    assert problem.message.startswith(message)


def test_missing_source_passes(tmp_path):
    toy(tmp_path, "support: [{id: r, source: test}]\nfeatures: {causal: [{id: all, source: test}]}\n"
                  "known_issues: [{id: k, versions: '>=1', when: {dtype: [fp16]}, reason: r, source: s}]\n")
    assert found(tmp_path, "missing-source") == []


@pytest.mark.parametrize("spec", [">=2,<1", "==1.0,!=1.0", ">1.0,<1.0", "<0"])
def test_version_specifier(tmp_path, spec):
    toy(tmp_path, f"support: [{{id: r, versions: '{spec}', source: test}}]\n")
    [problem] = found(tmp_path, "version-specifier")
    assert problem.message == f"{spec!r} matches no version" and problem.field == "support[0].versions"


def test_version_specifier_in_known_issue_cudnn(tmp_path):
    toy(tmp_path, "support: [{id: r, source: test}]\n"
                  "known_issues: [{id: k, versions: '>=1', when: {cudnn: '>=9,<8'}, reason: r, source: s}]\n")
    [problem] = found(tmp_path, "version-specifier")
    assert problem.field == "known_issues[0].when.cudnn"


@pytest.mark.parametrize("spec", [">=4.0.0b5,<4.0.0b9", "==2.11.*", ">=1,<1.0.1", "<1.0"])
def test_version_specifier_passes(tmp_path, spec):
    toy(tmp_path, f"support: [{{id: r, versions: '{spec}', source: test}}]\n")
    assert found(tmp_path, "version-specifier") == []


@pytest.mark.parametrize("condition, message", [
    ("head_dim_qk: {min: 256, max: 8}", "empty range: min 256 > max 8"),
    ("seqlen_q: {min: 9, max: 15, multiple_of: 16}", "empty range: no multiple of 16 lies in 9..15"),
    ("dtype: []", "empty list: the rule can never match"),
    ("passes: []", "empty list: the rule covers no pass"),
    ("arch: {min: sm120, max: sm80}", "the arch range covers no known arch"),
    ("seqlen_kv: {residue: {modulo: 128, equals: 200}}", "empty range: residue: no value % 128 equals 200"),
    ("seqlen_kv: {multiple_of: 64, residue: {modulo: 128, equals: 32}}",
     "empty range: a multiple of 64 never has % 128 == 32"),
])
def test_empty_range(tmp_path, condition, message):
    toy(tmp_path, f"support: [{{id: r, {condition}, source: test}}]\n")
    [problem] = found(tmp_path, "empty-range")
    assert problem.message == message and problem.field == "support[0]." + condition.split(":")[0]


@pytest.mark.parametrize("relations, message", [
    ('["seqlen_q < seqlen_kv", "seqlen_kv < seqlen_q"]', "the relations on seqlen_kv and seqlen_q contradict each other"),
    ('["head_dim_qk != head_dim_qk"]', "'head_dim_qk != head_dim_qk' can never hold"),
])
def test_contradictory_relations(tmp_path, relations, message):
    toy(tmp_path, f"support: [{{id: r, relations: {relations}, source: test}}]\n")
    [problem] = found(tmp_path, "contradictory-relations")
    assert problem.message == message and problem.field == "support[0].relations"


def test_contradictory_relations_passes(tmp_path):
    toy(tmp_path, 'support: [{id: r, relations: ["seqlen_q <= seqlen_kv", "seqlen_kv >= seqlen_q", '
                  '"head_dim_qk >= head_dim_v"], source: test}]\n')
    assert found(tmp_path, "contradictory-relations") == []


def test_empty_range_passes(tmp_path):
    toy(tmp_path, "support: [{id: r, head_dim_qk: {min: 8, max: 8}, seqlen_q: {min: 9, max: 16, multiple_of: 16},"
                  " arch: {min: sm80, max: sm80}, source: test}]\n")
    assert found(tmp_path, "empty-range") == []


def test_shadowed_rule(tmp_path):
    toy(tmp_path, "support:\n"
                  "  - {id: wide, dtype: [fp16, bf16], head_dim_qk: {min: 8, max: 256}, source: test}\n"
                  "  - {id: narrow, dtype: [fp16], head_dim_qk: {min: 64, max: 128}, source: test}\n")
    [problem] = found(tmp_path, "shadowed-rule")
    assert problem.severity == "warning" and problem.line == 7 and problem.field == "support[1].id"
    assert "rule 'narrow' is entirely covered by rule 'wide'" in problem.message


def test_shadowed_rule_passes(tmp_path):
    toy(tmp_path, "support:\n"
                  "  - {id: wide, dtype: [fp16, bf16], head_dim_qk: {min: 8, max: 256}, source: test}\n"
                  "  - {id: fp32, dtype: [fp32], head_dim_qk: {min: 64, max: 128}, source: test}\n"
                  "  - {id: inference, dtype: [fp16], head_dim_qk: {min: 8, max: 512}, passes: [forward], "
                  "source: test}\n")
    assert found(tmp_path, "shadowed-rule") == []


def test_dead_known_issue(tmp_path):
    toy(tmp_path, "support: [{id: hopper, arch: [sm90], source: test}]\n"
                  "known_issues: [{id: k, versions: '>=1', when: {arch: [sm80]}, reason: r, source: s}]\n")
    [problem] = found(tmp_path, "dead-known-issue")
    assert problem.severity == "warning" and "known issue 'k' can never match" in problem.message


def test_dead_known_issue_versions(tmp_path):
    toy(tmp_path, "support: [{id: new, versions: '>=2', source: test}]\n"
                  "known_issues: [{id: k, versions: '<2', reason: r, source: s}]\n")
    assert len(found(tmp_path, "dead-known-issue")) == 1


def test_dead_known_issue_passes(tmp_path):
    toy(tmp_path, "support: [{id: hopper, arch: [sm90], versions: '>=1', source: test}]\n"
                  "known_issues: [{id: k, versions: '>=1.5,<2', when: {arch: {family: hopper}}, reason: r, "
                  "source: s}]\n")
    assert found(tmp_path, "dead-known-issue") == []


def test_install_template(tmp_path):
    toy(tmp_path, "support: [{id: r, source: test}]\n", head=TOY.replace('"toy{specifier}"', "toy"))
    [problem] = found(tmp_path, "install-template")
    assert problem.severity == "warning" and problem.field == "install" and problem.line == 4


def test_install_template_passes(tmp_path):
    toy(tmp_path, "support: [{id: r, source: test}]\n")
    assert found(tmp_path, "install-template") == []


def test_unknown_probe(tmp_path):
    toy(tmp_path, "probe: {name: no-such-probe, mode: advisory}\nsupport: [{id: r, source: test}]\n")
    [problem] = found(tmp_path, "unknown-probe")
    assert problem.severity == "warning" and problem.field == "probe.name"
    assert "no probe named 'no-such-probe' is installed" in problem.message


def test_unknown_probe_passes(tmp_path):
    toy(tmp_path, "probe: {name: fa4-head-dims, mode: advisory}\nsupport: [{id: r, source: test}]\n")
    assert found(tmp_path, "unknown-probe") == []


# ---- every check has a test --------------------------------------------------------------

ARCH = "archs:\n  - {name: sm95, compute_capability: '9.5', family: hopper, aliases: [%s]}\n"


@pytest.mark.parametrize("alias, claimed", [("sm90", "sm90"), ("SM_90A", "sm_90a"), ("'9.0'", "9.0")])
def test_vocabulary_collision(tmp_path, alias, claimed):
    write(tmp_path, "archs.yaml", ARCH % alias)
    [problem] = found(tmp_path, "vocabulary-collision")
    assert f"arch 'sm95' claims {claimed!r}, which already names arch 'sm90'" in problem.message
    assert problem.line == 2


def test_vocabulary_collision_passes(tmp_path):
    write(tmp_path, "archs.yaml", ARCH % "sm_95a")
    assert found(tmp_path, "vocabulary-collision") == []


def test_every_check_has_a_failing_and_a_passing_test():
    names = [n for n in globals() if n.startswith("test_")]
    for check in [*lint.DOCUMENT_CHECKS, *lint.REGISTRY_CHECKS]:
        stem = "test_" + check.replace("-", "_")
        assert stem in names, f"lint check {check!r} has no test named {stem}"
        assert stem + "_passes" in names, f"lint check {check!r} has no passing example {stem}_passes"


def test_warnings_do_not_fail_loading(tmp_path):
    """Warnings are kept on the registry; only errors make loading fail."""
    toy(tmp_path, "support: [{id: r, source: test}]\n", head=TOY.replace('"toy{specifier}"', "toy"))
    registry, problems = check_paths([packaged_dir(), tmp_path])
    assert registry is not None and any(p.check == "install-template" for p in problems)
    assert re.search(r"toy\.yaml:4:\d+: install: ", str(next(p for p in problems if p.check == "install-template")))


# ---- checked spans and profiles (docs/format.md, "Checked spans and outcomes") -----------

SPAN = "checked:\n  toy: {first: '1.0', last: '1.5', evidence: [toy 1.0 and 1.5 read]}\n"


def test_checked_spans(tmp_path):
    toy(tmp_path, "checked:\n  numpy: {first: '1.0', last: '2.0', evidence: [read]}\n"
                  "support: [{id: r, source: test}]\n")
    problems = found(tmp_path, "checked-spans")
    assert [p.severity for p in problems] == ["error", "warning"]
    assert "toy reads no versions of 'numpy'" in problems[0].message and problems[0].field == "checked.numpy"
    assert "no checked span for toy" in problems[1].message and problems[1].field == "package"


def test_checked_spans_passes(tmp_path):
    toy(tmp_path, SPAN + "support: [{id: r, source: test}]\n")
    assert found(tmp_path, "checked-spans") == []


def test_beyond_span(tmp_path):
    toy(tmp_path, SPAN + "support: [{id: r, versions: '>=2.0', source: test}]\n")
    [problem] = found(tmp_path, "beyond-span")
    assert problem.severity == "warning" and problem.field == "support[0].id"
    assert "names 2.0, newer than the last checked toy 1.5: it never takes effect" in problem.message


def test_beyond_span_passes(tmp_path):
    toy(tmp_path, SPAN + "support: [{id: r, versions: '>=1.2,<1.5', source: test}]\n")
    assert found(tmp_path, "beyond-span") == []


PROFILES = "# yaml-language-server: $schema=../schemas/profiles.schema.json\nprofiles:\n  mine:\n" \
           "    description: a consumer\n    accepts:\n      {backend}: {{versions: '<2.9', why: w, source: s}}\n"


def test_profiles(tmp_path):
    write(tmp_path, "profiles.yaml", PROFILES.format(backend="flash-attn-9"))
    [problem] = found(tmp_path, "profiles")
    assert "profile mine names unknown backend 'flash-attn-9'" in problem.message and problem.line == 4


def test_profiles_passes(tmp_path):
    write(tmp_path, "profiles.yaml", PROFILES.format(backend="flash-attn-2"))
    assert found(tmp_path, "profiles") == []

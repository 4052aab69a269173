"""Loading: overlays, ATTNCAP_PATH, all-or-nothing errors, YAML 1.1 surprises, size limits."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import attncap
from attncap.loader import ENV_PATH, LoadError, check_paths, load_registry, packaged_dir
from attncap.yamlsource import MAX_FILE_BYTES, YamlError, read_document

SCHEMA = "# yaml-language-server: $schema=../schemas/{}.schema.json\n"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    kind = {"archs.yaml": "archs", "dtypes.yaml": "dtypes", "policy.yaml": "policy"}.get(name, "backend")
    path.write_text(SCHEMA.format(kind) + text, encoding="utf-8")
    return path


def ids(rules) -> list[str]:
    return [r.id for r in rules]


@pytest.fixture(autouse=True)
def no_env_overlays(monkeypatch):
    monkeypatch.delenv(ENV_PATH, raising=False)


def test_packaged_data_loads_without_errors():
    registry, problems = check_paths([packaged_dir()])
    assert registry is not None, "\n".join(map(str, problems))
    assert {"torch-sdpa-math", "torch-sdpa-flash"} <= set(registry.backends)


# ---- overlays ----------------------------------------------------------------------------

def test_overlay_adds_a_backend(tmp_path):
    write(tmp_path, "toy_attention.yaml", 'backend: toy-attention\npackage: toy\ninstall: pip install "toy{specifier}"\n'
                                          "support: [{id: all, dtype: [bf16], source: test}]\n")
    registry = load_registry((tmp_path,))
    assert ids(registry.backends["toy-attention"].support) == ["all"]
    assert registry.backends["toy-attention"].package == "toy"
    assert "torch-sdpa-math" in registry.backends
    assert str(registry.origin("toy-attention", "support", "all")) == f"{tmp_path / 'toy_attention.yaml'}:5"


def test_overlay_adds_a_rule(tmp_path):
    packaged = ids(load_registry().backends["torch-sdpa-math"].support)
    write(tmp_path, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\n"
                                            "support: [{id: fp8-added, dtype: [fp8_e4m3], source: test}]\n"
                                            "features: {softcap: [{id: all, source: test}]}\n")
    backend = load_registry((tmp_path,)).backends["torch-sdpa-math"]
    assert ids(backend.support) == packaged + ["fp8-added"]
    assert ids(backend.features["softcap"]) == ["all"]
    assert backend.package == "torch" and "{specifier}" in backend.install  # kept from the packaged file


def test_overlay_replaces_a_rule_by_id(tmp_path):
    before = load_registry().backends["torch-sdpa-math"]
    assert "any" in ids(before.support)
    write(tmp_path, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\n"
                                            "support: [{id: any, dtype: [fp32], versions: '>=3', source: test}]\n")
    registry = load_registry((tmp_path,))
    after = registry.backends["torch-sdpa-math"]
    assert ids(after.support) == ids(before.support)
    replaced = next(r for r in after.support if r.id == "any")
    assert replaced.dtype == ["fp32"] and replaced.versions == ">=3"
    assert registry.origin("torch-sdpa-math", "support", "any").file == str(tmp_path / "torch_sdpa_math.yaml")


def test_overlay_removes_a_rule(tmp_path):
    before = load_registry().backends["torch-sdpa-math"]
    write(tmp_path, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\n"
                                            "support: [{id: any, remove: true}]\n"
                                            "features: {causal: [{id: all, remove: true}]}\n")
    after = load_registry((tmp_path,)).backends["torch-sdpa-math"]
    assert ids(after.support) == [i for i in ids(before.support) if i != "any"]
    assert ids(after.features["causal"]) == [i for i in ids(before.features["causal"]) if i != "all"]


def test_overlay_removes_and_adds_a_known_issue(tmp_path):
    write(tmp_path, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\nknown_issues:\n"
                                            "  - {id: k, versions: '>=2.11', when: {dtype: [fp16]}, reason: r, source: s}\n")
    assert ids(load_registry((tmp_path,)).backends["torch-sdpa-math"].known_issues)[-1] == "k"
    later = tmp_path / "later"
    write(later, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\nknown_issues: [{id: k, remove: true}]\n")
    assert "k" not in ids(load_registry((tmp_path, later)).backends["torch-sdpa-math"].known_issues)


def test_overlay_adds_an_arch(tmp_path):
    write(tmp_path, "archs.yaml", "archs:\n  - {name: sm130, compute_capability: '13.0', family: rubin, "
                                  "aliases: [sm_130, rubin-next], source: test}\n")
    vocab = load_registry((tmp_path,)).vocabulary
    assert "sm130" in vocab.archs and "sm90" in vocab.archs
    assert vocab.arch_name("sm_130") == vocab.arch_name("13.0") == vocab.arch_name((13, 0)) == "sm130"
    assert vocab.families()["rubin"] == ["sm130"]
    assert "sm130" in vocab.expand_archs(attncap.models.ArchRange(min="sm120"))[0]


def test_later_directories_win(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\nsupport: [{id: x, dtype: [fp16], source: a}]\n")
    write(b, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\nsupport: [{id: x, dtype: [bf16], source: b}]\n")
    rule = next(r for r in load_registry((a, b)).backends["torch-sdpa-math"].support if r.id == "x")
    assert rule.source == "b"


# ---- ATTNCAP_PATH ------------------------------------------------------------------------

def test_attncap_path_is_honoured(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "archs.yaml", "archs: [{name: sm130, compute_capability: '13.0', family: rubin}]\n")
    write(b, "toy.yaml", 'backend: toy\npackage: toy\ninstall: pip install "toy{specifier}"\n'
                         "support: [{id: rubin, arch: [sm130], source: test}]\n")
    monkeypatch.setenv(ENV_PATH, os.pathsep.join([str(a), "", str(b)]))  # empty entries are skipped
    registry = load_registry()
    assert "sm130" in registry.vocabulary.archs and "toy" in registry.backends
    assert str(b / "toy.yaml") in registry.files
    assert "toy" not in load_registry(use_env=False).backends


def test_attncap_path_with_a_bad_overlay_fails(tmp_path, monkeypatch):
    write(tmp_path, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\nsupport: [{id: x, head_dim_q: 1}]\n")
    monkeypatch.setenv(ENV_PATH, str(tmp_path))
    with pytest.raises(LoadError, match="unknown key 'head_dim_q'"):
        load_registry()


# ---- all or nothing ----------------------------------------------------------------------

def test_a_failing_load_reports_every_problem_of_every_file(tmp_path):
    attncap.clear_cache()
    default = attncap.default_registry()
    one, two = tmp_path / "one", tmp_path / "two"
    write(one, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\nsupport:\n  - {id: a, head_dim_q: 1}\n"
                                       "  - {id: b, same_head_dims: no}\n")
    write(one, "archs.yaml", "archs: [{name: sm130, compute_capability: 13.0, family: rubin}]\n")
    write(two, "toy.yaml", "backend: toy\nsupport: [{id: a, source: s}, {id: a, source: s}]\n")
    (two / "broken.yaml").write_text("backend: [unclosed\n", encoding="utf-8")
    with pytest.raises(LoadError) as caught:
        load_registry((one, two))
    where = sorted((Path(p.file).name, p.line, p.field) for p in caught.value.problems)
    assert where == [("archs.yaml", 2, "archs[0].compute_capability"),
                     ("broken.yaml", 2, ""),
                     ("torch_sdpa_math.yaml", 4, "support[0].head_dim_q"),
                     ("torch_sdpa_math.yaml", 5, "support[1].same_head_dims"),
                     ("toy.yaml", 3, "support[1].id")]
    assert all(p.severity == "error" for p in caught.value.problems)
    assert str(caught.value).count("\n") == len(caught.value.problems) - 1
    # Nothing was half-loaded: the default registry is the same object, without the overlay.
    assert attncap.default_registry() is default
    assert "toy" not in default.backends and "sm130" not in default.vocabulary.archs


def test_check_paths_returns_no_registry_on_errors(tmp_path):
    write(tmp_path, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\nsupport: [{id: gone, remove: true}]\n")
    registry, problems = check_paths([packaged_dir(), tmp_path])
    assert registry is None
    assert [p.check for p in problems if p.severity == "error"] == ["overlay"]


def test_a_missing_path_is_a_problem(tmp_path):
    with pytest.raises(LoadError, match="no such file or directory"):
        load_registry((tmp_path / "nowhere",))


# ---- YAML 1.1 surprises ------------------------------------------------------------------

def test_yaml_11_surprises_are_neutralised(tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_text("a: no\nb: 010\nc: 2026-01-01\nd: 1:20\ne: on\nf: 0x10\ng: 1_000\nh: yes\ni: Off\n"
                    "j: true\nk: 12\nl: ~\nm: 1.5\nn: 0o17\n", encoding="utf-8")
    assert read_document(path).value == {
        "a": "no", "b": 10, "c": "2026-01-01", "d": "1:20", "e": "on", "f": "0x10", "g": "1_000", "h": "yes",
        "i": "Off", "j": True, "k": 12, "l": None, "m": 1.5, "n": "0o17"}


def test_yaml_11_surprises_in_a_capability_file(tmp_path):
    write(tmp_path, "torch_sdpa_math.yaml", "backend: torch-sdpa-math\n"
                                            "support: [{id: no, note: 1:20, source: 2026-01-01, versions: '>=2.11'}]\n")
    rule = next(r for r in load_registry((tmp_path,)).backends["torch-sdpa-math"].support if r.id == "no")
    assert (rule.note, rule.source) == ("1:20", "2026-01-01")


def test_merge_keys_and_tags_are_refused(tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_text("base: &b {x: 1}\nrule:\n  <<: *b\n", encoding="utf-8")
    with pytest.raises(YamlError, match="merge keys"):
        read_document(path)
    path.write_text("x: !!binary aGVsbG8=\n", encoding="utf-8")
    with pytest.raises(YamlError, match="not allowed"):
        read_document(path)


# ---- limits ------------------------------------------------------------------------------

def test_a_3_mb_file_is_refused_fast(tmp_path):
    path = tmp_path / "torch_sdpa_math.yaml"
    path.write_text("backend: torch-sdpa-math\nnote: '" + "x" * (3 * 1024 * 1024) + "'\n", encoding="utf-8")
    assert path.stat().st_size > MAX_FILE_BYTES
    start = time.perf_counter()
    with pytest.raises(YamlError) as caught:
        read_document(path)
    assert time.perf_counter() - start < 0.5
    assert caught.value.problem.message == "file is larger than 2 MiB"
    start = time.perf_counter()
    registry, problems = check_paths([packaged_dir(), path])
    assert registry is None and time.perf_counter() - start < 2
    assert any(p.message == "file is larger than 2 MiB" for p in problems)


def test_an_alias_bomb_is_refused_fast(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(YamlError, match="alias bomb"):
        read_document(path)
    assert time.perf_counter() - start < 2

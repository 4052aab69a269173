"""docs/adding-hardware.md, followed literally: a future sm130 added by YAML alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import attncap
from attncap.cli import main

DOC = Path(__file__).parent.parent / "docs" / "adding-hardware.md"

# Step 2 of the recipe.
ARCHS = """\
# yaml-language-server: $schema=../schemas/archs.schema.json
archs:
  - name: sm130
    compute_capability: "13.0"
    family: rubin
    aliases: [sm_130, sm_130a, "130"]
    source: the vendor's compute capability table
"""

# Step 3a: rules for an existing backend; package and install come from the packaged file.
FLASH = """\
# yaml-language-server: $schema=../schemas/backend.schema.json
backend: torch-sdpa-flash
checked:  # the rules below name torch 2.15: say it was checked, or newer torch is evaluated as 2.14.0
  torch:
    first: 2.11.0
    last: 2.15.0
    evidence: [torch 2.15.0 wheel read (sdp_utils.cpp check_flash_attention_hardware_support)]
support:
  - id: sm130
    arch: [sm130]
    dtype: [fp16, bf16]
    head_dim_qk: {min: 1, max: 256}
    same_head_dims: true
    versions: ">=2.15"
    source: sdp_utils.cpp check_flash_attention_hardware_support (torch 2.15.0)
features:
  causal:
    - {id: sm130, arch: [sm130], versions: ">=2.15", source: sdp_utils.cpp (torch 2.15.0)}
"""

# Step 3b: a brand-new backend needs package and install.
RUBIN = """\
# yaml-language-server: $schema=../schemas/backend.schema.json
backend: rubin-attention
package: rubin-attention
install: pip install "rubin-attention{specifier}"
description: a vendor kernel library for the rubin family
checked:  # the releases these facts were checked against: newer ones are answered "unverified"
  rubin-attention: {first: 1.0.0, last: 1.1.0, evidence: [rubin_attention/interface.py of 1.0.0 and 1.1.0 read]}
support:
  - id: rubin
    arch: {family: rubin}
    dtype: [bf16, fp8_e4m3]
    head_dim_qk: {min: 64, max: 256, multiple_of: 64}
    head_dim_v: {min: 64, max: 256, multiple_of: 64}
    versions: ">=1.0"
    source: rubin_attention/interface.py check_shapes (1.0.0)
features:
  causal:
    - {id: all, source: rubin_attention/interface.py (1.0.0)}
known_issues:
  - id: fp8-training
    versions: "<1.1"
    when: {dtype: [fp8_e4m3], training: true}
    reason: the fp8 backward pass is not implemented before 1.1
    source: rubin-attention release notes 1.1.0
"""

# Step 4 (optional): the family's preference order.
POLICY = """\
# yaml-language-server: $schema=../schemas/policy.schema.json
families:
  rubin:
    order: [rubin-attention, torch-sdpa-flash, torch-sdpa-math]
    why: the vendor kernel first, then PyTorch's fused and reference paths
"""


@pytest.fixture
def overlay(tmp_path, monkeypatch) -> Path:
    """Steps 1-4: an overlay directory with the new arch and its rules."""
    monkeypatch.delenv("ATTNCAP_PATH", raising=False)
    directory = tmp_path / "my-capabilities"
    directory.mkdir()
    for name, text in {"archs.yaml": ARCHS, "torch_sdpa_flash.yaml": FLASH, "rubin_attention.yaml": RUBIN,
                       "policy.yaml": POLICY}.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_the_recipe_shows_these_files():
    text = DOC.read_text(encoding="utf-8")
    for snippet in (ARCHS, FLASH, RUBIN, POLICY):
        assert snippet in text, f"docs/adding-hardware.md no longer shows:\n{snippet}"
    assert "attncap validate my-capabilities/" in text


def test_step_5_validate(overlay, capsys, monkeypatch):
    monkeypatch.chdir(overlay.parent)
    assert main(["validate", "--strict", "my-capabilities/"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == "0 error(s), 0 warning(s) in my-capabilities\n"


def test_step_5_validate_through_the_command(overlay):
    proc = subprocess.run([sys.executable, "-m", "attncap.cli", "validate", str(overlay)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_step_6_resolve_on_the_new_arch(overlay):
    registry = attncap.load_registry((overlay,))
    assert registry.vocabulary.arch_name("sm_130a") == "sm130"
    query = attncap.AttentionQuery(arch="sm130", dtype="bf16", head_dim_qk=128, mask="causal", seqlen_q=4096,
                                   seqlen_kv=4096, training=True, vocabulary=registry.vocabulary)
    env = attncap.Environment(arch=None, versions={"torch": "2.15.0", "rubin-attention": "1.0.2"})
    resolution = attncap.resolve(query, env, registry=registry)
    assert resolution.arch == "sm130"
    assert resolution.selected == "rubin-attention"
    assert [d.backend for d in resolution.decisions][:3] == ["rubin-attention", "torch-sdpa-flash", "torch-sdpa-math"]
    assert resolution.decision("rubin-attention").rule == "rubin"
    flash = resolution.decision("torch-sdpa-flash")
    assert flash.supported and flash.rule == "sm130"

    # The known issue rejects fp8 training before 1.1; then the policy falls through to flash... which has no fp8.
    fp8 = attncap.AttentionQuery(arch="sm130", dtype="fp8_e4m3", head_dim_qk=128, training=True,
                                 vocabulary=registry.vocabulary)
    resolution = attncap.resolve(fp8, env, registry=registry)
    assert not resolution.decision("rubin-attention").supported
    assert "fp8 backward pass" in " ".join(r.message for r in resolution.decision("rubin-attention").reasons)
    fixed = attncap.resolve(fp8, env.replace(versions={"rubin-attention": "1.1.0"}), registry=registry)
    assert fixed.selected == "rubin-attention"


def test_without_the_overlay_sm130_is_unknown():
    with pytest.raises(attncap.InvalidQueryError, match="arch='sm130' is invalid"):
        attncap.AttentionQuery(arch="sm130", head_dim_qk=128, vocabulary=attncap.load_registry(use_env=False).vocabulary)


def test_attncap_path_makes_it_the_default(overlay):
    code = ("import attncap; q = attncap.AttentionQuery(arch='sm130', dtype='bf16', head_dim_qk=128); "
            "print(attncap.resolve(q, attncap.Environment(arch='sm130', versions={'rubin-attention': '1.0.0'})).selected)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "ATTNCAP_PATH": str(overlay)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "rubin-attention"


def test_step_7_pre_commit_hook():
    import yaml
    hooks = yaml.safe_load((DOC.parent.parent / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    [hook] = [h for h in hooks if h["id"] == "attncap-validate"]
    assert hook["entry"] == "attncap validate" and hook["language"] == "python"
    assert hook["pass_filenames"] is True and hook["files"] == r"\.ya?ml$"
    assert "attncap-validate" in DOC.read_text(encoding="utf-8")

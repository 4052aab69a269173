"""attncap matrix / diff-versions: equal to point-wise resolve(), readable output, docs not stale."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from attncap import AttentionQuery, Environment, resolve
from attncap.cli import main
from attncap.loader import load_registry
from attncap.matrix import (DOC_PICTURES, DOC_VERSIONS, DOCS_COMMAND, arch_plane, backend_archs, build_matrix,
                            compact_blocks, describe_values, diff_versions, docs_markdown, matrix_json,
                            picture_name, render_diff, render_html, render_markdown, render_png, runs, uses_cudnn)

DOCS = Path(__file__).resolve().parents[1] / "docs"
VERSIONS = {"flash-attn-4": ["4.0.0b4", "4.0.0b8", "4.0.0b10", "4.0.0b11", "4.0.0b16", "4.0.0b20", "4.0.0b36"],
            "flash-attn": ["2.3.0", "2.6.3", "2.8.3"], "flash-attn-3": ["3.0.0"],
            "torch": ["2.11.0", "2.13.0", "2.14.0"],
            "cudnn": ["9.1.0", "9.10.2", "9.14.0", "9.20.0", "9.25.0"]}


@pytest.fixture(scope="module")
def registry():
    return load_registry(use_env=False)


# The matrix describes a version as if the backend's `requires` were installed (cudnn-fused: TE).
REQUIRED = {"transformer-engine": "2.20.0"}  # inside cudnn-fused's checked span


def _env(package: str, version: str, cudnn: str | None) -> Environment:
    if package == "cudnn":
        return Environment(versions=REQUIRED, cudnn=version)
    return Environment(versions={package: version, **REQUIRED}, cudnn=cudnn)


@pytest.mark.parametrize("seed", range(4))
def test_matrix_equals_pointwise_resolve(registry, seed):
    rng = random.Random(seed)
    vocab = registry.vocabulary
    checked = 0
    for _ in range(50):
        backend = rng.choice(sorted(registry.compiled))
        package = registry.compiled[backend].package
        version, cudnn = rng.choice(VERSIONS[package]), rng.choice(VERSIONS["cudnn"])
        if package == "cudnn":
            cudnn = version
        arch, dtype, training = rng.choice(list(vocab.archs)), rng.choice(list(vocab.dtypes)), rng.random() < 0.5
        n = rng.choice([160, 320, 576])
        a = arch_plane(registry, backend, arch, dtype, version, cudnn=cudnn, training=training, n=n)
        env = _env(package, version, cudnn)
        # half the samples where something is supported or blocked, so small regions get hit
        interesting = [p for o in ("table", "known_issue") for p in a.planes[o].points()]
        for _ in range(30):
            if interesting and rng.random() < 0.5:
                qk, v = rng.choice(interesting)
            else:
                qk, v = rng.randint(1, n), rng.randint(1, n)
            query = AttentionQuery(arch=arch, dtype=dtype, head_dim_qk=qk, head_dim_v=v, training=training)
            decision = resolve(query, env, probes=False, registry=registry).decision(backend)
            outcome = a.outcome(qk, v)
            assert (outcome == "table") == decision.supported, (backend, version, cudnn, query, outcome)
            if outcome == "known_issue":
                assert decision.decided_by == "known_issue"
                assert set(a.issues_at(qk, v)) <= {r.rule for r in decision.reasons if r.code == "known_issue"}
            assert outcome in ("table", "known_issue", "unsupported")  # no probe when probes are off
            checked += 1
    assert checked == 1500


def test_matrix_with_the_installed_fa4_probe_equals_resolve(registry):
    """Probe on: the categories follow resolve(probes=True) for the installed flash-attn-4."""
    pytest.importorskip("flash_attn.cute.interface")
    from attncap import probes
    probe = probes.get("fa4-head-dims")
    installed = probe.installed_version()
    if installed is None or probe.status().startswith("unavailable"):
        pytest.skip("flash-attn-4's validator is not available")
    n = 320
    m = build_matrix(registry, "flash-attn-4", installed, "bf16", archs=["sm90", "sm100", "sm120"], n=n, probes=True)
    assert m.probe_consulted and "consulted" in m.probe_note
    assert m.archs[2].probe_note and "outside" in m.archs[2].probe_note
    env = Environment(versions={"flash-attn-4": installed})
    rng = random.Random(0)
    for a in m.archs:
        for _ in range(200):
            qk, v = rng.choice([rng.randint(1, n), 8 * rng.randint(1, n // 8)]), 8 * rng.randint(1, n // 8)
            query = AttentionQuery(arch=a.arch, dtype="bf16", head_dim_qk=qk, head_dim_v=v)
            supported = resolve(query, env, registry=registry).decision("flash-attn-4").supported
            assert (a.outcome(qk, v) in ("table", "probe")) == supported, (a.arch, qk, v, a.outcome(qk, v))


def test_fa4_sm100_matrix_markdown_and_json(registry):
    m = build_matrix(registry, "flash-attn-4", "4.0.0b36", "bf16", archs=["sm90", "sm100", "sm103"])
    a = m.archs[1]
    for shape in [(192, 128), (256, 256)]:
        assert a.outcome(*shape) == "table"
    assert a.outcome(512, 512) == "known_issue" and a.issues_at(512, 512) == ["sm100-symmetric-512"]
    # (64, 512) without qv= does not build (tests/evidence/fa4_compile_sm100.jsonl)
    assert a.outcome(64, 512) == "known_issue" and a.issues_at(64, 512) == ["sm100-mla-absorbed-64-512-without-qv"]
    assert a.outcome(136, 136) == "unsupported" and m.archs[0].outcome(136, 136) == "table"
    text = render_markdown([m])
    assert "flash-attn-4 4.0.0b36 (--version)" in text
    assert "| sm100, sm103 | qk 8..128 step 8 × v 8..128 step 8<br>shapes (192, 128), (256, 256) | " \
           "`sm100-symmetric-512`: (512, 512)<br>`sm100-mla-absorbed-64-512-without-qv`: (64, 512) |" in text
    assert "empty here: probe fa4-head-dims not consulted" in text
    data = matrix_json(m)
    sm100 = data["archs"][1]["outcomes"]
    assert sm100["table"]["count"] == 16 * 16 + 2
    assert sm100["known_issue"]["by_issue"] == {"sm100-symmetric-512": [
        {"head_dim_qk": [{"min": 512, "max": 512, "step": 1}], "head_dim_v": {"min": 512, "max": 512, "step": 1},
         "count": 1}], "sm100-mla-absorbed-64-512-without-qv": [
        {"head_dim_qk": [{"min": 64, "max": 64, "step": 1}], "head_dim_v": {"min": 512, "max": 512, "step": 1},
         "count": 1}]}
    assert sm100["unsupported"]["count"] == 576 * 576 - 260
    assert "sm100-symmetric-512" in data["known_issues"]
    json.dumps(data)


def test_training_matrix_names_each_issue(registry):
    m = build_matrix(registry, "flash-attn-4", "4.0.0b36", "bf16", archs=["sm90", "sm100"], training=True)
    sm90, sm100 = m.archs
    assert sm90.outcome(72, 72) == "known_issue" and sm90.issues_at(72, 72) == ["sm90-bwd-dq-pad16-3"]
    assert sm100.outcome(64, 512) == "known_issue"
    assert sm100.outcome(128, 8) == "known_issue" and sm100.outcome(128, 128) == "table"
    text = render_markdown([m])
    assert "`sm90-bwd-dq-pad16-3`: qk 72, 80 × v 8..256 step 8" in text


def test_runs_and_blocks():
    assert runs([8, 16, 24, 512]) == [[8, 16, 24], [512]]
    assert runs([1, 5, 6, 7, 8]) == [[1], [5, 6, 7, 8]]
    assert describe_values([24, 32, 56, 64, 120, 128, 136]) == "24, 32, 56, 64, 120..136 step 8"
    from attncap.grid import Plane
    rows = [0] * 9
    rows[8] = 1 << 8 | 1 << 4
    rows[4] = 1 << 8 | 1 << 4
    blocks = compact_blocks(Plane(8, tuple(rows)))
    assert [(b.qks, b.vs) for b in blocks] == [((4, 8), (4, 8))]


def test_diff_versions_shows_hd256_appearing_at_b11(registry):
    changes = diff_versions(registry, "flash-attn-4", "4.0.0b10", "4.0.0b11", dtypes=["bf16", "fp16"])
    gained = {(c.arch, c.dtype) for c in changes if c.kind == "gained" and c.block.point == (256, 256)}
    assert gained == {(a, d) for a in ("sm100", "sm103", "sm110") for d in ("bf16", "fp16")}
    # issue 17 item 8: b11's known issues with other conditions (seqlens, window, ...) show as well
    assert all(c.kind in ("gained", "conditional_added") for c in changes)
    text = render_diff("flash-attn-4", "4.0.0b10", "4.0.0b11", changes, "text", training=False, n=576)
    assert "+ now supported: (256, 256) on sm100, sm103, sm110 (bf16, fp16) (at 4.0.0b10: no support rule)" in text
    # 4.0.0b16: (512, 512) enters the rules and the known issue blocks it at once
    changes = diff_versions(registry, "flash-attn-4", "4.0.0b15", "4.0.0b16", archs=["sm100"], dtypes=["bf16"])
    assert [(c.kind, c.block.point, c.detail) for c in changes] == [
        ("issue_added", (512, 512), ("sm100-symmetric-512",))]
    # training at 4.0.0b30: the not-multiple-of-32 issues end, the pad-32 dV issue begins
    changes = diff_versions(registry, "flash-attn-4", "4.0.0b29", "4.0.0b30", archs=["sm100"], dtypes=["bf16"],
                            training=True)
    assert any(c.kind == "gained" and c.detail[0].startswith("known issue sm100-bwd-hdim") for c in changes)
    assert any(c.kind == "issue_added" and c.detail == ("sm100-mla-bwd-dv-misaligned-pad32",) for c in changes)
    data = json.loads(render_diff("flash-attn-4", "4.0.0b29", "4.0.0b30", changes, "json", training=True, n=576))
    assert data["changes"] and {"arch", "kind", "head_dim_qk", "head_dim_v"} <= set(data["changes"][0])


def test_cli(capsys, tmp_path):
    assert main(["diff-versions", "flash-attn-4", "4.0.0b10", "4.0.0b11", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "(256, 256) on sm100, sm103, sm110 (bf16)" in out
    assert main(["matrix", "--backend", "flash-attn-4", "--version", "4.0.0b36", "--arch", "sm_100a",
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["matrices"][0]["version"] == "4.0.0b36" and data["matrices"][0]["archs"][0]["arch"] == "sm100"
    # no silent default version: not installed -> say so
    assert main(["matrix", "--backend", "flash-attn-3"]) == 2
    assert "pass --version" in capsys.readouterr().err
    assert main(["matrix", "--backend", "torch-sdpa-cudnn", "--version", "2.14.0"]) == 2
    assert "--cudnn" in capsys.readouterr().err
    out_file = tmp_path / "m.html"
    assert main(["matrix", "--backend", "flash-attn-4", "--version", "4.0.0b36", "--format", "html",
                 "-o", str(out_file)]) == 0
    assert "4.0.0b36" in capsys.readouterr().err


def test_html_is_self_contained(registry):
    m = build_matrix(registry, "flash-attn-4", "4.0.0b36", "bf16", archs=["sm90", "sm100"])
    page = render_html([m])
    assert page.count("<svg") == 2 and "<style>" in page
    assert "(512, 512) sm100-symmetric-512" in page
    stripped = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http" not in stripped and "src=" not in stripped and "<link" not in stripped


def test_png(registry, tmp_path):
    pytest.importorskip("matplotlib")
    m = build_matrix(registry, "flash-attn-4", "4.0.0b36", "bf16", archs=["sm100"])
    path = tmp_path / "m.png"
    render_png([m], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 150_000


def test_whole_matrix_is_fast(registry):
    """Every backend x arch x dtype x mode over 576 x 576 head dims: the issue asks for < 5 s."""
    vocab = registry.vocabulary
    start = time.perf_counter()
    count = 0
    for backend, b in registry.compiled.items():
        version = DOC_VERSIONS[b.package]
        cudnn = DOC_VERSIONS["cudnn"] if uses_cudnn(registry, backend) else None
        for dtype in vocab.dtypes:
            for training in (False, True):
                m = build_matrix(registry, backend, version, dtype, archs=list(vocab.archs), training=training,
                                 cudnn=cudnn)
                count += len(m.archs)
    elapsed = time.perf_counter() - start
    assert count == len(registry.compiled) * len(vocab.archs) * len(vocab.dtypes) * 2
    assert elapsed < 15, f"{count} planes took {elapsed:.1f}s"


def test_support_matrix_doc_is_current(registry):
    path = DOCS / "support-matrix.md"
    assert path.exists(), f"docs/support-matrix.md is missing; generate it with: {DOCS_COMMAND}"
    assert path.read_text() == docs_markdown(registry), \
        f"docs/support-matrix.md is stale (the capability data changed); regenerate with: {DOCS_COMMAND}"


def test_support_matrix_pictures_exist(registry):
    """PNG bytes are not stable across matplotlib versions: only their presence and size are checked."""
    for backend, arch, training in DOC_PICTURES:
        assert arch in backend_archs(registry, backend)
        path = DOCS / "img" / picture_name(backend, arch, training)
        assert path.exists(), f"{path} is missing; regenerate with: {DOCS_COMMAND}"
        assert path.stat().st_size < 150_000
        assert f"img/{path.name}" in (DOCS / "support-matrix.md").read_text()


def test_png_without_matplotlib_names_the_extra(registry, monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    m = build_matrix(registry, "flash-attn-4", "4.0.0b36", "bf16", archs=["sm100"])
    with pytest.raises(ValueError, match=r"pip install 'attncap\[plot\]'"):
        render_png([m], tmp_path / "m.png")

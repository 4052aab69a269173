"""Issue 17: the edges a new user trips over, one test (or a few) per numbered item."""

from __future__ import annotations

import pytest

import attncap
import attncap.environment as environment
from attncap import AttentionQuery, Environment, InvalidQueryError
from attncap.cli import main
from attncap.testing import evaluate_marker

README_QUERY = dict(arch="sm100", dtype="bf16", head_dim_qk=256, training=True, seqlen_q=1, seqlen_kv=2048)


@pytest.fixture
def installed(monkeypatch):
    """Detection answers a fixed 'installed' environment (torch 2.13.0 only)."""
    env = Environment(versions={"torch": "2.13.0"})
    monkeypatch.setattr(environment, "_detect", lambda with_torch: env)
    attncap.clear_cache()
    yield env
    attncap.clear_cache()


# 1. One environment rule for Python, the CLI and pytest.

def test_item1_environment_is_pure_and_detect_replace_overlays(installed):
    query = AttentionQuery(**README_QUERY)
    pure = attncap.resolve(query, Environment(versions={"flash-attn-4": "4.0.0b11"}))
    overlay = attncap.resolve(query, Environment.detect().replace(versions={"flash-attn-4": "4.0.0b11"}))
    assert pure.selected is None
    assert overlay.selected == "torch-sdpa-flash"
    with pytest.raises(attncap.NoBackendError) as info:
        pure.require()
    message = str(info.value)
    assert "environment: flash-attn-4 4.0.0b11" in message
    assert "torch is installed here but not in this Environment" in message
    assert "Environment.detect().replace(versions=...)" in message
    torch_off = "torch-sdpa-flash,torch-sdpa-efficient,torch-sdpa-cudnn,torch-sdpa-math"
    others = attncap.resolve(query, Environment(versions={"torch": "2.13.0"}), disable=torch_off)
    assert others.selected is None
    assert "note:" not in str(attncap.NoBackendError(others))  # what it lacks is not installed here either


def test_item1_cli_version_is_detect_replace_and_no_detect_is_pure(installed, capsys):
    flags = ["resolve", "--arch", "sm100", "--head-dim", "256", "--training", "--seqlen-q", "1", "--seqlen-kv",
             "2048", "--version", "flash-attn-4=4.0.0b11"]
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert out.startswith("selected: torch-sdpa-flash")
    assert "environment: installed packages with --version/--cudnn: flash-attn-4 4.0.0b11, torch 2.13.0" in out
    assert main([*flags, "--no-detect"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("selected: none")
    assert "environment: only --version/--cudnn (--no-detect): flash-attn-4 4.0.0b11" in out


# 6. A GPU the vocabulary does not name.

def test_item6_unknown_gpu_is_named_everywhere(monkeypatch, capsys):
    monkeypatch.setattr(environment, "_torch_device", lambda: ("13.0", None))
    environment._detect.cache_clear()
    attncap.clear_cache()
    try:
        env = Environment.detect(device=True)
        assert env.arch is None and env.unknown_gpu == "13.0"
        with pytest.raises(InvalidQueryError, match=r"GPU with compute capability 13.0 is not in the data; "
                                                    r"add it \(docs/adding-hardware.md\)"):
            attncap.resolve(AttentionQuery(head_dim_qk=128), env)
        _, reason = evaluate_marker(("flash-attn-4",), {"head_dim_qk": 128}, env)
        assert "GPU with compute capability 13.0 is not in the data" in reason
        assert main(["info", "--device"]) == 0
        assert "arch: GPU with compute capability 13.0 is not in the data" in capsys.readouterr().out
        assert env.replace(arch="sm90").unknown_gpu is None  # a named arch replaces it
    finally:
        environment._detect.cache_clear()
        attncap.clear_cache()


# 7. replace() keeps the vocabulary the query was built with.

def test_item7_replace_keeps_an_overlay_vocabulary(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNCAP_PATH", raising=False)
    (tmp_path / "archs.yaml").write_text("archs:\n  - name: sm130\n    compute_capability: \"13.0\"\n"
                                         "    family: rubin\n    source: test\n")
    vocab = attncap.load_registry((tmp_path,)).vocabulary
    q = AttentionQuery(arch="sm130", head_dim_qk=128, training=True, vocabulary=vocab)
    assert q.replace(training=False) == AttentionQuery(arch="sm130", head_dim_qk=128, vocabulary=vocab)
    with pytest.raises(InvalidQueryError):  # without the overlay, sm130 stays unknown
        AttentionQuery(arch="sm130", head_dim_qk=128)


# 3. Reasons name the smallest change that makes the query run.

def _reasons(backend, env, **query):
    return attncap.resolve(AttentionQuery(**query), env, probes=False).decision(backend)


def test_item3_feature_version_failure_names_the_version():
    d = _reasons("flash-attn-2", Environment(versions={"flash-attn": "2.6.1"}), arch="sm80", head_dim_qk=256,
                 softcap=50.0, mask="causal", training=True)
    assert not d.supported
    messages = [r.message for r in d.reasons]
    assert any(m.startswith("flash-attn>=2.6.2,<2.8.4 supports this") for m in messages), messages
    assert d.install_hint == 'pip install "flash-attn>=2.6.2,<2.8.4" --no-build-isolation'


def test_item3_dropping_a_feature_is_named():
    d = _reasons("flash-attn-2", Environment(versions={"flash-attn": "2.8.3"}), arch="a6000", head_dim_qk=256,
                 mask="causal", training=True, dropout=0.1)
    assert "flash-attn-2 runs this without dropout (rule small-smem-backward-hd256-no-dropout)" in \
        [r.message for r in d.reasons]
    change = next(r for r in d.reasons if r.code == "change")
    assert (change.field, change.expected, change.actual) == ("dropout", 0.0, 0.1)


def test_item3_install_hint_may_need_another_cudnn():
    d = _reasons("torch-sdpa-cudnn", Environment(), arch="sm100", head_dim_qk=256, training=True)
    messages = [r.message for r in d.reasons]
    assert not any("no version of torch" in m for m in messages), messages
    assert any(m.startswith("torch>=2.14 with cuDNN >9.22.0 supports this (rule sm90-sm10x-hd256-backward-v214)")
               for m in messages), messages
    installed = _reasons("torch-sdpa-cudnn", Environment(versions={"torch": "2.13.0"}), arch="sm100",
                         head_dim_qk=256, training=True)
    assert any("torch>=2.14 with cuDNN >9.22.0" in r.message for r in installed.reasons)


def test_item3_no_hint_when_the_data_knows_no_change():
    d = _reasons("flash-attn-2", Environment(versions={"flash-attn": "2.8.3"}), arch="sm90", head_dim_qk=512)
    assert not any(r.code in ("change", "install") for r in d.reasons)


MASKED = """\
backend: masked-attn
package: masked-attn
install: pip install "masked-attn{specifier}"
support:
  - {id: all, head_dim_qk: {max: 256}, versions: ">=1.0", source: test}
features:
  causal:
    - {id: all, source: test}
  causal_bottom_right:
    - {id: all, source: test}
  softcap:
    - {id: top-left-only, mask: [none, causal], source: test}
known_issues:
  - id: bottom-right-hd64
    versions: ">=1.0"
    when: {mask: [causal_bottom_right], head_dims: [[64, 64]]}
    reason: test
    source: test
"""


def test_item3_causal_alignments_are_one_mask_when_lengths_are_equal(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNCAP_PATH", raising=False)
    (tmp_path / "masked_attn.yaml").write_text(MASKED)
    registry = attncap.load_registry((tmp_path,))
    env = Environment(versions={"masked-attn": "1.0"})

    def decide(**query):
        q = AttentionQuery(arch="sm90", head_dim_qk=query.pop("hd", 128), vocabulary=registry.vocabulary, **query)
        return attncap.resolve(q, env, registry=registry, probes=False).decision("masked-attn")
    assert decide(mask="causal_bottom_right", softcap=30.0, seqlen_q=512, seqlen_kv=512).supported
    assert decide(mask="causal_bottom_right", softcap=30.0).supported  # unknown lengths do not reject
    wrong = decide(mask="causal_bottom_right", softcap=30.0, seqlen_q=128, seqlen_kv=512)
    assert not wrong.supported and "mask causal_bottom_right is not one of causal, none" in wrong.reasons[0].message
    # a known issue fires on the same mask only when the lengths are known to be equal
    assert decide(mask="causal", hd=64, seqlen_q=512, seqlen_kv=512).decided_by == "known_issue"
    assert decide(mask="causal", hd=64).supported
    assert decide(mask="causal", hd=64, seqlen_q=128, seqlen_kv=512).supported


def test_item3_probe_no_opinion_lines_come_last():
    env = Environment(versions={"flash-attn-4": "4.0.0b11"})
    d = attncap.resolve(AttentionQuery(**README_QUERY), env).decision("flash-attn-4")
    codes = [r.code for r in d.reasons]
    assert d.decided_by == "known_issue" and codes[0] == "known_issue", codes
    assert codes[-1] == "probe" and d.probe.supported is None


# 5. attncap drift on bad input: exit 2 with a clear message, an empty grid is an error.

@pytest.mark.parametrize("flags, message", [
    (["--backend", "nope"], "--backend 'nope' is unknown; known: cudnn-fused, flash-attn-2"),
    (["--head-dims", "0"], "--head-dims '0': expected 1..N or N with N a positive integer"),
    (["--head-dims", "-5"], "--head-dims '-5': expected 1..N"),
    (["--head-dims", "abc"], "--head-dims 'abc': expected 1..N"),
    (["--head-dims", "1..x"], "--head-dims '1..x': expected 1..N"),
    (["--arch", "sm999"], "--arch 'sm999' is unknown; known: sm80,"),
    (["--dtype", "zz"], "--dtype 'zz' is unknown; known: fp16,"),
])
def test_item5_drift_bad_input_exits_2(flags, message, capsys):
    assert main(["drift", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_item5_drift_that_compares_nothing_is_an_error(monkeypatch, capsys):
    import attncap.drift as drift
    report = drift.DriftReport("flash-attn-4", "flash-attn-4", "4.0.0b36", "fa4-head-dims", [],
                               ["sm80 fp32: the table rejects it for reasons the probe does not judge"], 0)
    monkeypatch.setattr(drift, "run_drift", lambda *a, **k: report)
    assert main(["drift", "--arch", "sm80", "--dtype", "fp32"]) == 2
    assert "no point was compared (sm80 fp32: the table rejects it" in capsys.readouterr().err


def test_item9_one_point_is_singular():
    from attncap.drift import Finding
    assert Finding("sm100", "bf16", "probe-only", [256], [256]).describe().endswith("(1 point)")
    assert Finding("sm100", "bf16", "probe-only", [8, 16], [256]).describe().endswith("(2 points)")

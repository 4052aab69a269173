"""TransformerEngine's further query fields, cross-field relations, residues and TE-version conditions."""

from __future__ import annotations

import types

import pytest

from attncap.cli import main
from attncap.environment import Environment
from attncap.integrations.transformer_engine import _layout, _window, query_from_attention_params, te_selection
from attncap.loader import load_registry
from attncap.query import OPTIONAL_FIELDS, AttentionQuery, InvalidQueryError
from attncap.resolver import resolve

TE20 = Environment("sm90", {"transformer-engine": "2.20.2"}, cudnn="9.21.0")
TE14 = Environment("sm90", {"transformer-engine": "2.14.0"}, cudnn="9.21.0")


def fused(query, env=TE20, registry=None):
    return resolve(query, env, probes=False, registry=registry).decision("cudnn-fused")


def test_unasked_fields_are_none_and_change_nothing():
    plain = AttentionQuery(arch="sm90", head_dim_qk=128, seqlen_q=1024, mask="causal", training=True)
    assert all(getattr(plain, f) is None for f in OPTIONAL_FIELDS)
    for field, value in (("score_mod", False), ("num_splits", 1), ("context_parallel", "none"), ("packing", "none")):
        asked = plain.replace(**{field: value})
        assert asked != plain and getattr(asked, field) == value
        assert fused(asked).supported == fused(plain).supported is True


def test_a_page_size_is_a_kv_cache_and_kv_cache_false_contradicts_it():
    assert AttentionQuery(head_dim_qk=64, page_size=16).kv_cache is True
    with pytest.raises(InvalidQueryError, match="kv_cache=False"):
        AttentionQuery(head_dim_qk=64, page_size=16, kv_cache=False)


def test_padding_causal_needs_both_features():
    q = AttentionQuery(head_dim_qk=64, mask="padding_causal_bottom_right", seqlen_q=1, seqlen_kv=64)
    assert q.features[:2] == (("padding_mask",), ("causal_bottom_right",))


def test_relation_is_optimistic_when_a_length_is_unknown():
    window = dict(arch="sm90", head_dim_qk=128, window=(64, 64))
    assert fused(AttentionQuery(**window, seqlen_q=1024, seqlen_kv=512)).decided_by == "known_issue"
    assert fused(AttentionQuery(**window, seqlen_q=512, seqlen_kv=1024)).supported
    assert fused(AttentionQuery(**window)).supported  # unknown lengths never trigger a known issue


def test_transformer_engine_version_scopes_a_known_issue():
    q = AttentionQuery(arch="sm90", head_dim_qk=128, seqlen_q=4096, mask="causal", window=(128, 0),
                       context_parallel="p2p")
    assert any(r.rule == "te-cp-window-p2p" for r in fused(q, TE20).reasons)
    assert fused(q, TE14).supported


def test_residue_condition_in_an_overlay(tmp_path):
    (tmp_path / "cudnn_fused.yaml").write_text(
        "# yaml-language-server: $schema=../schemas/backend.schema.json\n"
        "backend: cudnn-fused\nknown_issues:\n"
        "  - id: kv-residue-64\n    versions: '>=9.0.0'\n"
        "    when: {training: true, seqlen_kv: {residue: {modulo: 128, equals: 64}}}\n"
        "    reason: test\n    source: test\n", encoding="utf-8")
    registry = load_registry((str(tmp_path),))
    base = dict(arch="sm90", head_dim_qk=128, training=True)
    assert fused(AttentionQuery(**base, seqlen_q=192, seqlen_kv=192), registry=registry).decided_by == "known_issue"
    assert fused(AttentionQuery(**base, seqlen_q=256, seqlen_kv=256), registry=registry).supported
    assert fused(AttentionQuery(**base), registry=registry).supported


def test_cli_flags_reach_the_query(capsys):
    args = ["explain", "cudnn-fused", "--arch", "sm90", "--head-dim", "128", "--num-splits", "2", "--cudnn", "9.21.0",
            "--version", "transformer-engine=2.20.2", "--no-probes"]
    assert main(args) == 1
    assert "te-num-splits: applies" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["resolve", "--head-dim", "64", "--arch", "sm90", "--packing", "kvq"])
    assert exc.value.code == 2
    assert "invalid choice: 'kvq'" in capsys.readouterr().err


def test_the_four_cases_of_the_issue_answer_as_te(capsys):
    te = ["--version", "transformer-engine=2.20.0", "--cudnn", "9.21.0", "--no-probes"]
    window = ["--arch", "sm90", "--head-dim", "128", "--window=64,64", "--seqlen-q", "1024", "--seqlen-kv", "512"]
    paged_mla = ["--arch", "sm90", "--head-dim", "192", "--head-dim-v", "128", "--mask", "padding", "--seqlen-q", "1",
                 "--seqlen-kv", "2048", "--page-size", "256"]
    sm120_decode = ["--arch", "sm120", "--head-dim", "192", "--mask", "causal_bottom_right", "--seqlen-q", "1",
                    "--seqlen-kv", "2048"]
    assert main(["explain", "cudnn-fused", *window, *te]) == 1
    assert main(["explain", "cudnn-fused", *paged_mla, *te]) == 1
    assert main(["explain", "cudnn-fused", *sm120_decode, *te]) == 0


def test_adapter_layouts_and_windows():
    assert _layout("paged_kv_bshd_bshd_bshd") == ("bshd", "none", True)
    assert _layout("t3hd") == ("thd", "qkv", False)
    assert _layout("sbhd_sb2hd") == ("sbhd", "kv", False)
    assert _window("causal", (-1, -1)) is None and _window("causal", (128, 5)) == (128, 0)
    assert _window("no_mask", (-1, 0)) is None and _window("padding", (64, 64)) == (64, 64)


def _params(**changes):
    base = dict(qkv_dtype="bf16", qkv_layout="thd_thd_thd", num_heads=16, num_gqa_groups=8, max_seqlen_q=4096,
                max_seqlen_kv=4096, head_dim_qk=256, head_dim_v=256, attn_mask_type="padding_causal",
                window_size=(1023, 0), bottom_right_diagonal=True, softcap=0.0, core_attention_bias_type="no_bias",
                core_attention_bias_requires_grad=True, pad_between_seqs=False, attention_dropout=0.0,
                context_parallel=False, cp_comm_type="p2p", deterministic=False, is_training=True, fp8=False,
                fp8_meta=None, inference_params=None, softmax_type="vanilla", return_max_logit=False, num_splits=1,
                has_score_mod=False)
    return types.SimpleNamespace(**{**base, **changes})


def test_adapter_gemma4_sliding_layer_selects_fused_attention():
    q = query_from_attention_params(_params(), arch="sm90")
    assert (q.layout, q.mask, q.window, q.gqa, q.context_parallel, q.bias_grad) == \
        ("thd", "padding_causal", (1023, 0), True, "none", None)
    env = Environment("sm90", {"transformer-engine": "2.14.0", "flash-attn": "2.8.3"}, cudnn="9.20.0")
    selection = te_selection(resolve(q, env, probes=False))
    assert selection.use_fused_attention and not selection.use_flash_attention


def test_adapter_fp8_recipe():
    recipe = types.SimpleNamespace(fp8_dpa=True, fp8_mha=False, delayed=lambda: False,
                                   float8_current_scaling=lambda: True)
    q = query_from_attention_params(_params(fp8=True, fp8_meta={"recipe": recipe}), arch="sm100")
    assert (q.dtype, q.fp8_recipe, q.fp8_mha) == ("fp8_e4m3", "current", False)


def test_query_from_tensors_tells_packed_layouts():
    torch = pytest.importorskip("torch")
    from attncap.torch import query_from_tensors
    qkv = torch.randn(2, 64, 3, 8, 64, dtype=torch.bfloat16)
    q, k, v = qkv.unbind(2)
    assert query_from_tensors(q, k, v, layout="bshd", arch="sm90").packing == "qkv"
    kv = torch.randn(2, 64, 2, 8, 64, dtype=torch.bfloat16)
    x = torch.randn(2, 64, 8, 64, dtype=torch.bfloat16)
    assert query_from_tensors(x, *kv.unbind(2), layout="bshd", arch="sm90").packing == "kv"
    assert query_from_tensors(x, x, x, layout="bshd", arch="sm90").packing is None  # one tensor thrice: not packed
    assert query_from_tensors(x, x.clone(), x.clone(), layout="bshd", arch="sm90").packing is None

"""attncap against TransformerEngine's real get_attention_backend (tools/te_harness.py, tools/te_diff.py).

The pure-Python transformer-engine wheels (2.20.2 and 2.14.0) are downloaded at test time (cached in
$ATTNCAP_TE_WHEELS or a temp dir); without a reachable package index these tests skip. Every
disagreement over the grid must be listed in tests/te_expectations.yaml with a verdict, and every
entry there must still occur.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import te_diff  # noqa: E402
import te_harness  # noqa: E402

from attncap.integrations.transformer_engine import (  # noqa: E402
    environment_for, query_from_attention_params, te_selection)
from attncap.resolver import resolve  # noqa: E402


@pytest.fixture(scope="module")
def te():
    loaded = {}
    for version in te_diff.VERSIONS:
        try:
            loaded[version] = te_harness.load(version)
        except te_harness.DownloadError as exc:
            pytest.skip(f"package index unreachable, cannot fetch transformer-engine=={version}: {exc}")
    return loaded


@pytest.fixture(scope="module")
def results(te):
    with pytest.MonkeyPatch.context() as mp:  # attncap's own answers: no ATTNCAP_* override left by anyone
        for name in ("ATTNCAP_BACKEND", "ATTNCAP_DISABLE", "ATTNCAP_PROBES", "ATTNCAP_UNVERIFIED", "ATTNCAP_PATH"):
            mp.delenv(name, raising=False)
        configs = te_diff.grid(te_diff.GRID_SIZE)
        return {version: te_diff.compare(version, configs) for version in te}


def test_the_grid_covers_enough_configurations(results):
    for version, (agree, _clusters) in results.items():
        judged = sum(agree["cudnn-fused"].values())
        assert judged >= 20000, (version, judged)


def _describe(key, entry) -> str:
    count, (arch, cudnn, query) = entry
    return f"  {key} x{count}, e.g. {arch} cuDNN {cudnn} {query!r}"


def test_every_disagreement_is_in_the_expectations_file(results):
    expected, verdicts = te_diff.load_expectations()
    unexplained = [_describe(k, e) for version in results for k, e in results[version][1].items()
                   if k not in expected]
    assert not unexplained, ("disagreements with TransformerEngine not in tests/te_expectations.yaml (fix attncap "
                             "or add them with a verdict):\n" + "\n".join(unexplained))
    assert all(c["verdict"] in verdicts for c in expected.values())


def test_every_expectation_still_occurs(results):
    expected, _ = te_diff.load_expectations()
    observed = {k for version in results for k in results[version][1]}
    stale = [k for k in expected if k not in observed]
    assert not stale, "entries in tests/te_expectations.yaml that no longer occur (remove them):\n" + \
        "\n".join(f"  {k}" for k in stale)


def test_attncap_is_never_more_permissive_than_tes_own_fused_gate_unless_listed(results):
    """The FusedAttention clusters where attncap says yes and utils.py says no are bugs unless listed as such."""
    expected, _ = te_diff.load_expectations()
    for version in results:
        for key in results[version][1]:
            if key[1] == "cudnn-fused" and key[2] == "attncap_permissive":
                assert expected[key]["verdict"] == "not-modelled", key


def _both(te, version, arch, cudnn, **params):
    """(TE's verdict, attncap's resolution) for one AttentionParams."""
    import torch
    params = {"qkv_dtype": torch.bfloat16, "qkv_layout": "bshd_bshd_bshd", "core_attention_bias_shape": None,
              "core_attention_bias_requires_grad": False, "is_training": False, **params}
    cc = tuple(int(x) for x in (arch[2:-1], arch[-1]))
    verdict = te[version].backends(te_harness.Config(arch=cc, cudnn=tuple(map(int, cudnn.split("."))), params=params))
    fields = te[version].fields
    query = query_from_attention_params(te[version].AttentionParams(**{k: v for k, v in params.items() if k in fields}),
                                        arch=arch)
    env = environment_for(arch=arch, transformer_engine=version, cudnn=cudnn, flash_attn="2.8.3")
    return verdict, resolve(query, env, probes=False)


def test_window_with_longer_queries_is_refused_as_te_does(te):
    verdict, res = _both(te, "2.20.2", "sm90", "9.21.0", head_dim_qk=128, head_dim_v=128, window_size=(64, 64),
                         max_seqlen_q=1024, max_seqlen_kv=512)
    assert verdict.fused == "python"
    d = res.decision("cudnn-fused")
    assert not d.supported and any(r.rule == "te-window-seqlen-q-gt-kv" for r in d.reasons)


def test_paged_mla_is_refused_as_te_does(te):
    verdict, res = _both(te, "2.20.2", "sm90", "9.21.0", head_dim_qk=192, head_dim_v=128, attn_mask_type="padding",
                         max_seqlen_q=1, max_seqlen_kv=2048, qkv_layout="paged_kv_bshd_bshd_bshd",
                         inference_params=te_harness.InferenceParams(is_paged=True, page_size=256, total_num_pages=8,
                                                                     max_pages_per_seq=8))
    assert verdict.fused == "python"
    assert not res.decision("cudnn-fused").supported


def test_sm120_decode_with_any_head_dim_passes_as_in_tes_cudnn_gate(te):
    verdict, res = _both(te, "2.20.2", "sm120", "9.21.0", head_dim_qk=192, head_dim_v=192,
                         attn_mask_type="causal_bottom_right", max_seqlen_q=1, max_seqlen_kv=2048)
    assert verdict.fused == "cudnn"
    assert res.decision("cudnn-fused").supported


def test_gemma4_sliding_layer_selects_fused_attention_as_te_does(te):
    verdict, res = _both(te, "2.14.0", "sm90", "9.20.0", head_dim_qk=256, head_dim_v=256, num_heads=16,
                         num_gqa_groups=8, qkv_layout="thd_thd_thd", attn_mask_type="padding_causal",
                         window_size=(1023, 0), is_training=True, max_seqlen_q=4096, max_seqlen_kv=4096)
    assert verdict.fused == "cudnn"
    selection = te_selection(res)
    assert selection.use_fused_attention and selection.fused_attention_backend == "F16_arbitrary_seqlen"
    assert not selection.use_flash_attention and not selection.use_unfused_attention

"""Benchmark workloads, written as TransformerEngine AttentionParams fields so that TE's gate and
attncap judge the very same configurations (attncap through its TE adapter).

Each workload is a list of (cc, cuDNN, AttentionParams fields), every configuration distinct, so
each resolve of it is a real cache miss. Fixed seeds: every run judges the same configurations.
"""

from __future__ import annotations

import itertools
import random

ARCHS = {(8, 0): "sm80", (8, 9): "sm89", (9, 0): "sm90", (10, 0): "sm100", (10, 3): "sm103", (12, 0): "sm120"}
CUDNNS = ((9, 10, 2), (9, 21, 0))
FA_VERSIONS = {"flash_attn": "2.8.3", "flash_attn_3": "3.0.0"}  # FA4: the installed one


def _params(torch, **fields) -> dict:
    """AttentionParams fields as DotProductAttention fills them, with `fields` on top."""
    p = dict(qkv_type=torch.Tensor, qkv_dtype=torch.bfloat16, qkv_layout="bshd_bshd_bshd", batch_size=2,
             num_heads=16, num_gqa_groups=16, max_seqlen_q=2048, max_seqlen_kv=2048, head_dim_qk=128,
             head_dim_v=128, attn_mask_type="causal", window_size=None, bottom_right_diagonal=True,
             alibi_slopes_shape=None, core_attention_bias_type="no_bias", core_attention_bias_shape=None,
             core_attention_bias_requires_grad=False, pad_between_seqs=False, attention_dropout=0.0,
             context_parallel=False, cp_comm_type="p2p", deterministic=False, is_training=True, fp8=False,
             fp8_meta=None, inference_params=None, softmax_type="vanilla", return_max_logit=False, num_splits=1,
             num_tokens_q=4096, num_tokens_kv=4096)
    p.update(fields)
    return p


def diverse(n: int = 600, seed: int = 16) -> list:
    """Head dims, archs, dtypes and passes varied; few features (causal or no mask, dense layouts)."""
    import torch
    rng = random.Random(seed)
    dims = [(d, d) for d in (32, 48, 64, 72, 80, 96, 112, 128, 160, 192, 224, 256)] + [(192, 128), (64, 512)]
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    out = []
    for i in range(n):
        (qk, v), seq = rng.choice(dims), 512 + 8 * i  # the length keeps each configuration distinct
        out.append((rng.choice(list(ARCHS)), rng.choice(CUDNNS), _params(
            torch, qkv_dtype=rng.choice(dtypes), head_dim_qk=qk, head_dim_v=v, is_training=rng.random() < 0.5,
            attn_mask_type=rng.choice(("causal", "no_mask")), qkv_layout=rng.choice(("bshd_bshd_bshd", "sbhd_sbhd_sbhd")),
            max_seqlen_q=seq, max_seqlen_kv=seq, num_tokens_q=2 * seq, num_tokens_kv=2 * seq)))
    return out


def feature_diverse(n: int = 600, seed: int = 16) -> list:
    """The TE differential test's grid: masks, layouts, windows, bias, dropout, softcap, GQA, CP, KV caches, FP8."""
    import te_diff  # tools/ (on the path through run.py)
    return [(arch, cudnn, p) for arch, cudnn, p in te_diff.grid(n, seed)]


def te_like(n: int = 600) -> list:
    """What TE runs in practice: LLM training and inference shapes on sm90/sm100, bf16, causal, GQA."""
    import torch
    models = ((32, 8, 128), (64, 8, 128), (40, 8, 128), (32, 32, 128), (16, 16, 64), (128, 8, 128))
    out = []
    for i, ((hq, hkv, hd), arch, cudnn, (layout, training)) in enumerate(itertools.islice(itertools.cycle(
            itertools.product(models, ((9, 0), (10, 0)), CUDNNS,
                              (("sbhd_sbhd_sbhd", True), ("thd_thd_thd", True), ("bshd_bshd_bshd", False))
                              )), n)):
        seq = 1024 + 16 * i
        fields = dict(num_heads=hq, num_gqa_groups=hkv, head_dim_qk=hd, head_dim_v=hd, qkv_layout=layout,
                      is_training=training, max_seqlen_q=seq, max_seqlen_kv=seq, num_tokens_q=2 * seq,
                      num_tokens_kv=2 * seq)
        if layout.startswith("thd"):
            fields["attn_mask_type"] = "padding_causal"
        out.append((arch, cudnn, _params(torch, **fields)))
    return out


WORKLOADS = {"diverse": diverse, "feature-diverse": feature_diverse, "TE-like": te_like}

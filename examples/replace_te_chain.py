"""Replace a TransformerEngine-style `get_attention_backend` if-chain with one attncap call.

The chain being replaced looks like this (a paraphrased, shortened sketch of the pattern in
TransformerEngine's dot_product_attention/utils.py, not its code; the real function is about
1,300 lines with ~110 such branches):

    def get_attention_backend(params):
        use_flash = os.environ.get("NVTE_FLASH_ATTN", "1") == "1"
        use_fused = os.environ.get("NVTE_FUSED_ATTN", "1") == "1"
        use_unfused = os.environ.get("NVTE_UNFUSED_ATTN", "1") == "1"
        if device_compute_capability < (8, 0):
            use_flash = use_fused = False             # "Disabling ... for compute capability < sm80"
        if params.qkv_dtype not in (torch.bfloat16, torch.float16):
            use_flash = False                         # "Disabling FlashAttention for unsupported dtype"
        if use_flash and params.head_dim_qk > 256:
            use_flash = False                         # "Disabling FlashAttention ... head_dim > 256"
        if use_flash and sm100 and (params.head_dim_qk, params.head_dim_v) == (256, 256) \\
                and params.max_seqlen_q != params.max_seqlen_kv:
            use_flash = False                         # a known FA4 issue, hand-copied
        if use_flash and params.window_size is not None and fa_version < "2.3":
            use_flash = False                         # feature needs a newer release
        ...                                           # mask, bias, dropout, CP, determinism, ...
        use_fused = use_fused and cudnn_backend_for(params) != NO_BACKEND   # C++ boolean expression
        if sm90_or_newer and use_fused:               # fixed preference
            use_flash = False
        return use_flash, use_fused, use_unfused      # reasons only as debug log lines

With attncap the facts live in capabilities/*.yaml (with sources and version ranges), and the
whole chain becomes `attncap.resolve(query, env)`: the first supported backend in policy order,
plus every backend's reasons (`Resolution.table()`) instead of the first few log lines.

Runs on a CPU machine: the environment is a what-if (`Environment.detect().replace(...)`).

    python examples/replace_te_chain.py [--arch sm100] [--fa4 4.0.0b11] [--cudnn 9.10.2]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import attncap

# TE's three families, as attncap backend ids. TE's unfused path is its own PyTorch code;
# attncap's nearest equivalent is PyTorch's math SDPA kernel, which runs anything.
FLASH = ("flash-attn-4", "flash-attn-3", "flash-attn-2")
FUSED = ("cudnn-fused",)
UNFUSED = ("torch-sdpa-math",)
OTHERS = ("torch-sdpa-flash", "torch-sdpa-efficient", "torch-sdpa-cudnn")  # not TE backends


@dataclass(frozen=True)
class AttentionParams:  # the handful of TE AttentionParams fields this example needs
    qkv_dtype: str = "bf16"
    num_heads: int = 16
    num_gqa_groups: int = 16
    head_dim_qk: int = 128
    head_dim_v: int = 128
    max_seqlen_q: int = 2048
    max_seqlen_kv: int = 2048
    attn_mask_type: str = "causal"      # TE: no_mask, causal, causal_bottom_right, padding, ...
    window_size: tuple | None = None
    attention_dropout: float = 0.0
    deterministic: bool = False
    is_training: bool = True


def get_attention_backend(params: AttentionParams, env: attncap.Environment):
    """(use_flash, flash_backend, use_fused, use_unfused, resolution): the whole if-chain."""
    query = attncap.AttentionQuery(
        dtype=params.qkv_dtype, head_dim_qk=params.head_dim_qk, head_dim_v=params.head_dim_v,
        num_heads_q=params.num_heads, num_heads_kv=params.num_gqa_groups, seqlen_q=params.max_seqlen_q,
        seqlen_kv=params.max_seqlen_kv, mask="none" if params.attn_mask_type == "no_mask" else params.attn_mask_type,
        window=params.window_size, dropout=params.attention_dropout, deterministic=params.deterministic,
        training=params.is_training)
    resolution = attncap.resolve(query, env, disable=OTHERS)  # ATTNCAP_DISABLE/ATTNCAP_BACKEND still apply
    selected = resolution.selected
    return (selected in FLASH, selected if selected in FLASH else None, selected in FUSED, selected in UNFUSED,
            resolution)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sm100")
    p.add_argument("--fa4", default="4.0.0b11", help="flash-attn-4 version (empty: not installed)")
    p.add_argument("--cudnn", default="9.10.2", help="cuDNN runtime version (empty: none)")
    p.add_argument("--table", action="store_true", help="print every backend's reasons")
    args = p.parse_args(argv)
    env = attncap.Environment.detect().replace(
        arch=args.arch, versions={"flash-attn-4": args.fa4 or None, "flash-attn": None, "flash-attn-3": None,
                                  "cudnn": args.cudnn or None})
    cases = {
        "llama-style hd128 causal training": AttentionParams(),
        "hd256 training": AttentionParams(head_dim_qk=256, head_dim_v=256),
        "hd256 decode (sq=1, skv=2048)": AttentionParams(head_dim_qk=256, head_dim_v=256, max_seqlen_q=1,
                                                         attn_mask_type="no_mask", is_training=False),
        "GQA 32:8 sliding window": AttentionParams(num_heads=32, num_gqa_groups=8, window_size=(1024, 0)),
        "hd512 training": AttentionParams(head_dim_qk=512, head_dim_v=512),
    }
    print(f"environment: {env}")
    for name, params in cases.items():
        use_flash, flash, use_fused, use_unfused, resolution = get_attention_backend(params, env)
        chosen = f"FlashAttention ({flash})" if use_flash else "FusedAttention" if use_fused else \
            "UnfusedDotProductAttention" if use_unfused else "none"
        print(f"{name:38s} -> {chosen}")
        for d in resolution.decisions:  # what NVTE_DEBUG=1 NVTE_DEBUG_LEVEL=2 would have told you, all of it
            if not d.supported and d.backend not in OTHERS and d.decided_by != "not_installed":
                print(f"    {d.backend}: {'; '.join(r.message for r in d.reasons)}")
        if args.table:
            print(resolution.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

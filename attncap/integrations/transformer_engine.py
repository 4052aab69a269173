"""TransformerEngine adapter: a TE `AttentionParams` -> attncap query and environment, and attncap's
answer in the shape of TE's `get_attention_backend` result.

Duck-typed: anything with AttentionParams' field names works (TE 2.14 .. 2.20), TE is never imported.
    query = query_from_attention_params(params, arch="sm90")
    env = environment_for(arch="sm90", transformer_engine="2.20.2", cudnn="9.21.0", flash_attn_3="3.0.0")
    selection = te_selection(resolve(query, env))   # TESelection(use_flash_attention=..., ...)

What a field of AttentionParams becomes:
    qkv_dtype, fp8 + fp8_meta["recipe"]   dtype (FP8 attention when the recipe has fp8_dpa), fp8_recipe, fp8_mha
    qkv_layout                            layout (the q format), packing (bs3hd/t3hd: qkv; bshd_bs2hd: kv),
                                          paged KV (paged_kv_ prefix)
    attn_mask_type                        mask (no_mask -> none; padding_causal... kept)
    window_size + attn_mask_type          window, normalised as TE's check_set_window_size does
    bottom_right_diagonal                 bottom_right (None when TE's params say None)
    core_attention_bias_type              bias (no_bias/alibi/post_scale_bias/pre_scale_bias)
    core_attention_bias_requires_grad     bias_grad (only with a bias tensor)
    inference_params                      kv_cache, page_size (when is_paged)
    context_parallel, cp_comm_type        context_parallel ("none" without CP)
    softmax_type                          sinks (off-by-one, learnable)
    is_training, attention_dropout, softcap, deterministic, pad_between_seqs (thd only),
    return_max_logit, num_splits, has_score_mod, num_heads/num_gqa_groups, max_seqlen_q/kv, head dims
"""

from __future__ import annotations

from typing import NamedTuple

from ..environment import Environment
from ..query import AttentionQuery

_MASKS = {"no_mask": "none"}  # every other TE mask name is attncap's name
_BIASES = {"no_bias": "none", "alibi": "alibi", "post_scale_bias": "post_scale", "pre_scale_bias": "pre_scale"}
FLASH_BACKENDS = ("flash-attn-2", "flash-attn-3", "flash-attn-4")
FUSED = "cudnn-fused"


class TESelection(NamedTuple):
    """attncap's answer in get_attention_backend's terms (its first five return values)."""

    use_flash_attention: bool
    flash_attention_backend: str | None  # the FA version, as TE reports it
    use_fused_attention: bool
    fused_attention_backend: str | None  # "F16_arbitrary_seqlen" or "FP8" (FusedAttnBackend member names)
    use_unfused_attention: bool
    flash_backend: str | None = None  # attncap's id of the FA backend chosen


def _recipe_kind(recipe) -> str | None:
    for kind, method in (("delayed", "delayed"), ("current", "float8_current_scaling"), ("mxfp8", "mxfp8"),
                         ("block", "float8_block_scaling"), ("nvfp4", "nvfp4")):
        test = getattr(recipe, method, None)
        if callable(test) and test():
            return kind
    return None


def _window(mask: str, window) -> tuple[int, int] | None:
    """TE's check_set_window_size, then attncap's convention (None = no window)."""
    window = None if window is None else tuple(window)
    if "causal" in mask:
        if window is None or window == (-1, -1):
            window = (-1, 0)
        elif window[0] >= 0 and window[1] != 0:
            window = (window[0], 0)
        return None if window == (-1, 0) else window
    if window is None or window == (-1, 0):
        return None
    return None if window == (-1, -1) else window


def _layout(qkv_layout: str) -> tuple[str, str, bool]:
    """(q format, packing, paged) of a TE qkv_layout such as 'paged_kv_bshd_bshd_bshd' or 't3hd'."""
    paged = qkv_layout.startswith("paged_kv_")
    parts = qkv_layout.replace("paged_kv_", "").split("_")
    fmt = "".join(ch for ch in parts[0] if ch.isalpha())
    packing = "qkv" if "3" in qkv_layout else "kv" if "2" in qkv_layout else "none"
    return fmt, packing, paged


def query_from_attention_params(params, *, arch=None, vocabulary=None) -> AttentionQuery:
    """The query for what TE's AttentionParams describe (see the module docstring for the mapping)."""
    fp8_meta = getattr(params, "fp8_meta", None) or {}
    recipe = fp8_meta.get("recipe") if getattr(params, "fp8", False) else None
    fp8_attention = recipe is not None and getattr(recipe, "fp8_dpa", False)
    dtype = params.qkv_dtype
    if fp8_attention and "float8" not in str(dtype):
        dtype = "fp8_e4m3"  # the forward tensors of TE's FP8 attention (HYBRID and E4M3 formats)
    fmt, packing, paged = _layout(params.qkv_layout)
    inference = getattr(params, "inference_params", None)
    mask = _MASKS.get(params.attn_mask_type, params.attn_mask_type)
    bias = _BIASES.get(params.core_attention_bias_type, params.core_attention_bias_type)
    has_bias_tensor = bias in ("post_scale", "pre_scale")
    softmax = getattr(params, "softmax_type", "vanilla")
    return AttentionQuery(
        arch=arch, dtype=dtype, head_dim_qk=params.head_dim_qk, head_dim_v=params.head_dim_v,
        num_heads_q=params.num_heads, num_heads_kv=params.num_gqa_groups, seqlen_q=params.max_seqlen_q,
        seqlen_kv=params.max_seqlen_kv, training=bool(params.is_training), mask=mask,
        window=_window(params.attn_mask_type, params.window_size), dropout=float(params.attention_dropout),
        softcap=float(getattr(params, "softcap", 0.0)), bias=bias, layout=fmt,
        pad_between_seqs=bool(params.pad_between_seqs) and fmt == "thd",
        page_size=inference.page_size if inference is not None and getattr(inference, "is_paged", False) else None,
        deterministic=bool(params.deterministic), sinks=softmax != "vanilla",
        kv_cache=inference is not None or paged,
        context_parallel=params.cp_comm_type if params.context_parallel else "none",
        return_max_logit=bool(getattr(params, "return_max_logit", False)),
        score_mod=bool(getattr(params, "has_score_mod", False)), num_splits=getattr(params, "num_splits", 1),
        packing=packing, bias_grad=bool(params.core_attention_bias_requires_grad) if has_bias_tensor else None,
        bottom_right=getattr(params, "bottom_right_diagonal", None),
        fp8_recipe=_recipe_kind(recipe) if fp8_attention else None,
        fp8_mha=bool(getattr(recipe, "fp8_mha", False)) if fp8_attention else None, vocabulary=vocabulary)


def environment_for(*, arch, transformer_engine: str, cudnn: str, flash_attn: str | None = None,
                    flash_attn_3: str | None = None, flash_attn_4: str | None = None, **versions) -> Environment:
    """The environment TE runs in: its version, cuDNN's, and the FlashAttention versions installed."""
    versions.update({"transformer-engine": transformer_engine, "flash-attn": flash_attn,
                     "flash-attn-3": flash_attn_3, "flash-attn-4": flash_attn_4})
    return Environment(arch, versions, cudnn=cudnn)


def te_selection(resolution) -> TESelection:
    """TE's selection from attncap's decisions: FusedAttention over FlashAttention on sm90+, FlashAttention
    first below (the policy's order per arch, which follows TE's); unfused when neither can run."""
    supported = {d.backend for d in resolution.decisions if d.supported}
    order = [d.backend for d in resolution.decisions]
    flash = next((b for b in order if b in FLASH_BACKENDS and b in supported), None)
    fused = FUSED in supported
    if flash is not None and fused:
        if order.index(FUSED) < order.index(flash):
            flash = None
        else:
            fused = False
    package = {"flash-attn-2": "flash-attn"}.get(flash, flash)
    fp8 = resolution.query.dtype.startswith("fp8")
    return TESelection(flash is not None, resolution.env.version(package) if flash else None, fused,
                       ("FP8" if fp8 else "F16_arbitrary_seqlen") if fused else None,
                       flash is None and not fused, flash)

"""Deterministic GPU evidence cases for attncap.

No torch or attncap import: this module only describes cases, so CI (CPU only) can
import it to map recorded results back onto attncap queries.

Each case is a flat dict:

    id            unique, stable string (backend prefix + fields)
    backend       torch-sdpa-flash | torch-sdpa-efficient | torch-sdpa-cudnn |
                  torch-sdpa-math | flash-attn-4
    dtype         fp16 | bf16 | fp32
    batch, seqlen_q, seqlen_kv, num_heads_q, num_heads_kv, head_dim_qk, head_dim_v
    mask          none | causal | causal_bottom_right | arbitrary   (SDPA's is_causal is
                  top-left, so SDPA causal cases use "causal"; FA4's causal=True is
                  bottom-right, so FA4 causal cases use "causal_bottom_right")
    mask_kind     for mask == arbitrary: bool | float (SDPA attn_mask dtype)
    dropout       float probability (SDPA only)
    window        None or [left, right] (FA4 only)
    training      True: the backward pass is run too
    group         which boundary family the case belongs to (for humans)

Usage: python tests/gpu/cases.py [--backend sdpa|fa4|fa4-sm90|B] [--count]
"""
from __future__ import annotations

import argparse
import json
import sys

SDPA_BACKENDS = [
    "torch-sdpa-flash",
    "torch-sdpa-efficient",
    "torch-sdpa-cudnn",
    "torch-sdpa-math",
]
FA4 = "flash-attn-4"

MULT8 = list(range(8, 257, 8))  # 8..256
ODD_DIMS = [1, 4, 12, 100, 264, 288, 512]  # not multiples of 8, or over 256


def _case(backend, group, *, dtype="fp16", batch=2, sq=128, skv=128, hq=4, hkv=None,
          dqk=64, dv=None, mask="none", mask_kind=None, dropout=0.0, window=None,
          training=True):
    hkv = hq if hkv is None else hkv
    dv = dqk if dv is None else dv
    c = {
        "backend": backend,
        "group": group,
        "dtype": dtype,
        "batch": batch,
        "seqlen_q": sq,
        "seqlen_kv": skv,
        "num_heads_q": hq,
        "num_heads_kv": hkv,
        "head_dim_qk": dqk,
        "head_dim_v": dv,
        "mask": mask,
        "mask_kind": mask_kind,
        "dropout": dropout,
        "window": list(window) if window is not None else None,
        "training": training,
    }
    short = backend.replace("torch-sdpa-", "sdpa-")
    parts = [short, dtype, f"b{batch}", f"sq{sq}", f"skv{skv}", f"h{hq}x{hkv}", f"d{dqk}x{dv}", mask]
    if mask_kind:
        parts.append(mask_kind)
    if dropout:
        parts.append(f"p{dropout}")
    if window is not None:
        parts.append(f"w{window[0]}_{window[1]}")
    parts.append("train" if training else "infer")
    c["id"] = "-".join(str(p) for p in parts)
    return c


def sdpa_cases():
    out = []
    for be in SDPA_BACKENDS:
        add = lambda group, **kw: out.append(_case(be, group, **kw))  # noqa: E731
        # A. head dims qk == v, fp16, training
        for d in MULT8 + ODD_DIMS:
            add("head_dim", dqk=d)
        # B. dtypes
        for dt in ("bf16", "fp32"):
            for d in (8, 64, 96, 128, 160, 192, 256, 100, 264, 512):
                add("dtype", dtype=dt, dqk=d)
        # C. qk != v
        for dqk, dv in ((192, 128), (128, 64), (64, 128), (128, 96), (96, 128), (256, 128),
                        (128, 256), (64, 512), (72, 64), (40, 24)):
            add("qk_ne_v", dqk=dqk, dv=dv)
        # D. GQA (enable_gqa)
        for hq, hkv, d in ((8, 2, 64), (8, 2, 128), (8, 2, 256), (8, 1, 128), (6, 3, 96)):
            add("gqa", hq=hq, hkv=hkv, dqk=d)
        add("gqa", hq=8, hkv=2, dqk=128, training=False)
        add("gqa", hq=8, hkv=2, dqk=128, mask="causal")
        # E. causal, incl. sq != skv (SDPA is top-left aligned)
        for d in (64, 128):
            for sq, skv in ((128, 128), (64, 256), (256, 64)):
                add("causal", dqk=d, sq=sq, skv=skv, mask="causal")
        add("causal", dtype="bf16", dqk=256, mask="causal")
        # F. decode
        for d in (64, 128):
            add("decode", dqk=d, sq=1, skv=256, training=False)
            add("decode", dqk=d, sq=1, skv=256, mask="causal", training=False)
        add("decode", dqk=128, sq=1, skv=256, hq=8, hkv=2, training=False)
        add("decode", dqk=256, sq=1, skv=256, dtype="bf16", training=False)
        # G. kv length 1
        add("kv_len_1", sq=128, skv=1)
        add("kv_len_1", sq=128, skv=1, training=False)
        add("kv_len_1", sq=1, skv=1, training=False)
        # H. attn_mask
        add("attn_mask", mask="arbitrary", mask_kind="bool")
        add("attn_mask", mask="arbitrary", mask_kind="float")
        add("attn_mask", mask="arbitrary", mask_kind="bool", training=False)
        add("attn_mask", mask="arbitrary", mask_kind="float", dqk=128, dtype="bf16", training=False)
        # I. dropout
        add("dropout", dropout=0.1)
        add("dropout", dropout=0.1, dqk=128, dtype="bf16")
        add("dropout", dropout=0.1, training=False)
        # J. inference only (no backward) across the head-dim boundary
        for d in (8, 12, 64, 128, 192, 200, 256, 264, 512):
            add("inference", dqk=d, training=False)
        add("inference", dtype="fp32", dqk=128, training=False)
        # K. ragged seqlens (not multiples of tiles), cross attention
        add("ragged", sq=100, skv=300)
        add("ragged", sq=77, skv=77, mask="causal", dtype="bf16")
    return out


def fa4_cases():
    out = []
    add = lambda group, **kw: out.append(_case(FA4, group, **kw))  # noqa: E731
    # A. every multiple of 8 with qk == v, bf16 and fp16, forward + backward
    for d in MULT8:
        add("head_dim", dtype="bf16", dqk=d)
    for d in MULT8:
        add("head_dim", dtype="fp16", dqk=d)
    # B. outside the range (expected rejected)
    for d in (1, 4, 12, 100, 264, 288, 512):
        add("head_dim_out", dtype="bf16", dqk=d)
    add("dtype", dtype="fp32", dqk=128)
    # C. qk != v
    pairs = ((192, 128), (64, 512), (128, 96), (96, 128), (72, 64), (128, 64),
             (64, 128), (128, 256), (256, 128), (192, 256), (256, 192), (32, 64), (64, 32),
             (136, 128), (128, 192), (8, 256), (256, 8), (16, 512), (320, 128), (128, 320),
             (40, 24), (100, 128))
    for dqk, dv in pairs:
        add("qk_ne_v", dtype="bf16", dqk=dqk, dv=dv)
    for dqk, dv in ((192, 128), (64, 512), (128, 96), (72, 64), (128, 256), (256, 128)):
        add("qk_ne_v", dtype="fp16", dqk=dqk, dv=dv)
    add("qk_ne_v", dtype="bf16", dqk=192, dv=128, mask="causal_bottom_right")
    # D. GQA
    for hq, hkv, d in ((8, 2, 64), (8, 2, 128), (8, 2, 192), (8, 2, 256), (8, 1, 128), (6, 3, 96)):
        add("gqa", dtype="bf16", hq=hq, hkv=hkv, dqk=d)
    add("gqa", dtype="bf16", hq=8, hkv=2, dqk=128, mask="causal_bottom_right")
    add("gqa", dtype="fp16", hq=8, hkv=2, dqk=128)
    add("gqa", dtype="fp16", hq=8, hkv=2, dqk=256, mask="causal_bottom_right")
    add("gqa", dtype="bf16", hq=8, hkv=2, dqk=128, sq=64, skv=256, mask="causal_bottom_right")
    # E. causal (FA convention: bottom-right), incl. sq != skv
    for d in (64, 128, 256):
        for sq, skv in ((128, 128), (64, 256), (256, 64)):
            add("causal", dtype="bf16", dqk=d, sq=sq, skv=skv, mask="causal_bottom_right")
    for d in (64, 128, 256):
        for sq, skv in ((128, 128), (64, 256), (256, 64)):
            add("causal", dtype="fp16", dqk=d, sq=sq, skv=skv, mask="causal_bottom_right")
    add("cross", dtype="bf16", dqk=128, sq=64, skv=256)
    add("cross", dtype="bf16", dqk=128, sq=256, skv=64)
    add("cross", dtype="bf16", dqk=256, sq=64, skv=320)
    # F. decode
    for d in (64, 128, 256):
        add("decode", dtype="bf16", dqk=d, sq=1, skv=512, training=False)
        add("decode", dtype="bf16", dqk=d, sq=1, skv=512, mask="causal_bottom_right", training=False)
    add("decode", dtype="bf16", dqk=128, sq=1, skv=512, hq=8, hkv=1, training=False)
    add("decode", dtype="bf16", dqk=128, sq=1, skv=512)
    add("decode", dtype="fp16", dqk=128, sq=1, skv=512, mask="causal_bottom_right", training=False)
    add("decode", dtype="fp16", dqk=256, sq=1, skv=512, hq=8, hkv=2, training=False)
    # G. kv length 1
    add("kv_len_1", dtype="bf16", dqk=128, sq=128, skv=1)
    add("kv_len_1", dtype="bf16", dqk=128, sq=1, skv=1, training=False)
    # H. sliding window (local)
    add("window", dtype="bf16", dqk=128, sq=256, skv=256, window=(64, 0))
    add("window", dtype="bf16", dqk=128, sq=256, skv=256, window=(32, 32))
    # I. ragged seqlens
    add("ragged", dtype="bf16", dqk=128, sq=1000, skv=1000)
    add("ragged", dtype="bf16", dqk=64, sq=77, skv=333, mask="causal_bottom_right")
    # J. inference only
    for d in (64, 128, 256):
        add("inference", dtype="bf16", dqk=d, training=False)
    return out


MULT16 = list(range(16, 257, 16))
# One (hd, hdv) pair of each measured 16-block with qk != v whose qk or v dim is a multiple of 8
# but not of 16 (the padded kernel shape is the block's), and pairs whose padded dims are equal.
# Picked so that every block gets one case and the 8-offset moves between qk, v and both.
SM90_VARIANT_PAIRS = ((16, 32), (32, 64), (16, 48), (48, 112), (64, 128), (64, 144), (80, 176),
                      (16, 208), (96, 32), (144, 64), (208, 144), (192, 208))


def _sm90_block_pairs():
    pairs = []
    for i, a in enumerate(MULT16):
        for j, b in enumerate(MULT16):
            if a == b:
                continue
            k = (i + j) % 3
            pairs.append((a - 8, b) if k == 0 else (a, b - 8) if k == 1 else (a - 8, b - 8))
    return pairs


def fa4_sm90_cases():
    """The SM90 head-dim plane beyond the multiples of 16 (tests/evidence/fa4_sm90_h200.jsonl):
    bf16, batch 2, 4 heads, seqlen 512, non-causal, forward + backward, as the shared
    16-step sweep; then causal, GQA, fp16 and other seqlens on a few pairs of each outcome."""
    out = []
    add = lambda group, **kw: out.append(_case(FA4, group, dtype=kw.pop("dtype", "bf16"),  # noqa: E731
                                               sq=kw.pop("sq", 512), skv=kw.pop("skv", 512), **kw))
    for a in MULT16:  # padded dims equal, raw dims not: (a-8, a) and (a, a-8)
        add("sm90_pad_equal", dqk=a - 8, dv=a)
        add("sm90_pad_equal", dqk=a, dv=a - 8)
    for dqk, dv in SM90_VARIANT_PAIRS:
        add("sm90_causal", dqk=dqk, dv=dv, mask="causal_bottom_right")
        add("sm90_gqa", dqk=dqk, dv=dv, hq=8, hkv=2, training=False)
        add("sm90_fp16", dqk=dqk, dv=dv, dtype="fp16")
        add("sm90_seqlen", dqk=dqk, dv=dv, sq=1, skv=2048, training=False)
        add("sm90_seqlen", dqk=dqk, dv=dv, sq=17, skv=4099)
    for dqk, dv in _sm90_block_pairs():
        add("sm90_blocks", dqk=dqk, dv=dv)
    # causal where the tiles differ from the non-causal ones: backward head_dim 97..128 (64x128), and
    # the forward head_dim 81..96 (192x128), which fits in SMEM for head_dim_v up to 176
    for dqk, dv in ((128, 64), (128, 32), (128, 96), (128, 144), (120, 64), (128, 192),
                    (96, 160), (96, 176), (88, 168), (80, 192)):
        add("sm90_causal_tiles", dqk=dqk, dv=dv, mask="causal_bottom_right")
    for dqk, dv in ((128, 208), (128, 224), (128, 240), (128, 256)):
        add("sm90_causal_tiles", dqk=dqk, dv=dv, mask="causal_bottom_right")
    # sliding window (local): the causal tiles for head_dim <= 128, smaller tile_n above
    for dqk, dv in ((16, 48), (32, 64), (64, 32), (96, 160), (128, 64), (128, 96), (128, 192), (128, 256),
                    (144, 64), (192, 128), (176, 256), (192, 256), (208, 144), (256, 64), (80, 208)):
        add("sm90_window", dqk=dqk, dv=dv, window=(128, 0))
    return out


def all_cases():
    return sdpa_cases() + fa4_cases()


def get(case_id):
    for c in all_cases() + fa4_sm90_cases():
        if c["id"] == case_id:
            return c
    raise KeyError(case_id)


def _check_unique(cases):
    ids = [c["id"] for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, dup


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default=None, help="sdpa | fa4 | a backend id")
    ap.add_argument("--count", action="store_true")
    a = ap.parse_args(argv)
    cases = all_cases()
    _check_unique(cases)
    if a.backend == "sdpa":
        cases = [c for c in cases if c["backend"] in SDPA_BACKENDS]
    elif a.backend == "fa4":
        cases = [c for c in cases if c["backend"] == FA4]
    elif a.backend == "fa4-sm90":
        cases = fa4_sm90_cases()
    elif a.backend:
        cases = [c for c in cases if c["backend"] == a.backend]
    if a.count:
        from collections import Counter
        print(json.dumps(Counter(c["backend"] for c in cases), indent=1), len(cases))
        return
    for c in cases:
        sys.stdout.write(json.dumps(c) + "\n")


if __name__ == "__main__":
    main()

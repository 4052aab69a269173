"""attncap against TransformerEngine's real get_attention_backend, config by config (see te_harness).

    python tools/te_diff.py [TE_VERSION ...]     prints agreement per backend and the disagreement clusters

A grid of AttentionParams (archs x dtypes x head dims x masks x layouts x features x TE's further
fields) is drawn with a fixed seed, so every run judges the same configurations. Per backend:
- FlashAttention 2/3/4: TE's gate (FA installed) vs attncap's decision for that backend.
- FusedAttention: TE's utils.py gate vs cudnn-fused. TE's C++/cuDNN check is stubbed as "supported"
  (te_harness), so attncap rejecting what utils.py passed on ("cudnn") is attncap modelling that
  check (a cluster to explain), while attncap accepting what utils.py refused is a bug to fix.
A disagreement cluster is (TE version, backend, direction, signature): TE's first "Disabling" message
for the backend when attncap is the permissive side, attncap's failing rule/feature when it is the
stricter side, with numbers replaced by N.
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import te_harness  # noqa: E402

VERSIONS = ("2.20.2", "2.14.0")
FA_VERSIONS = {"flash-attn-2": "2.8.3", "flash-attn-3": "3.0.0"}  # FA4: the installed one (its validator)
ARCHS = {(8, 0): "sm80", (8, 9): "sm89", (9, 0): "sm90", (10, 0): "sm100", (10, 3): "sm103", (12, 0): "sm120"}
CUDNNS = ((9, 8, 0), (9, 13, 1), (9, 18, 1), (9, 21, 0))
HEAD_DIMS = ((64, 64), (128, 128), (72, 72), (96, 96), (192, 128), (256, 256), (192, 192), (64, 512))
LAYOUTS = ("bshd_bshd_bshd", "sbhd_sbhd_sbhd", "thd_thd_thd", "bs3hd", "t3hd", "bshd_bs2hd")
MASKS = ("no_mask", "causal", "causal_bottom_right", "padding", "padding_causal", "padding_causal_bottom_right",
         "arbitrary")
SEQLENS = ((1024, 1024), (1, 2048), (1024, 512), (512, 1024), (2048, 2048), (4096, 4096))
BACKENDS = ("flash-attn-2", "flash-attn-3", "flash-attn-4", "cudnn-fused")
# TE's log lines name "FlashAttention N" for one version, or "FlashAttention" (no digit) for all.
_TE_NAMES = {"flash-attn-2": re.compile(r"FlashAttention( 2|(?! \d))"), "flash-attn-3": re.compile(r"FlashAttention( 3|(?! \d))"),
             "flash-attn-4": re.compile(r"FlashAttention( 4|(?! \d))"), "cudnn-fused": re.compile("FusedAttention")}


def _pick(rng, default, *others, p_default=0.6):
    return default if rng.random() < p_default else rng.choice(others)


def grid(n: int, seed: int = 15):
    """n (arch, cudnn, AttentionParams fields) configurations, the same for the same n and seed."""
    import torch
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        arch = rng.choice(list(ARCHS))
        sq, skv = rng.choice(SEQLENS)
        hq, hkv = rng.choice(((16, 16), (16, 8), (16, 2)))
        qk, v = rng.choice(HEAD_DIMS)
        layout = rng.choice(LAYOUTS)
        p = dict(qkv_dtype=rng.choice((torch.bfloat16, torch.float16)), qkv_type=torch.Tensor, qkv_layout=layout,
                 batch_size=2, num_heads=hq, num_gqa_groups=hkv, max_seqlen_q=sq, max_seqlen_kv=skv,
                 head_dim_qk=qk, head_dim_v=v, attn_mask_type=rng.choice(MASKS), is_training=rng.random() < 0.5,
                 window_size=_pick(rng, None, (128, 0), (64, 64), (1023, 0)),
                 bottom_right_diagonal=_pick(rng, True, False, p_default=0.8),
                 softcap=_pick(rng, 0.0, 30.0, p_default=0.85), attention_dropout=_pick(rng, 0.0, 0.1, p_default=0.8),
                 deterministic=rng.random() < 0.2, core_attention_bias_type="no_bias", core_attention_bias_shape=None,
                 core_attention_bias_requires_grad=False, alibi_slopes_shape=None,
                 softmax_type=_pick(rng, "vanilla", "off-by-one", "learnable", p_default=0.85),
                 return_max_logit=rng.random() < 0.1, num_splits=_pick(rng, 1, 2, p_default=0.9),
                 has_score_mod=rng.random() < 0.05, pad_between_seqs="thd" in layout and rng.random() < 0.3,
                 num_tokens_q=sq * 2, num_tokens_kv=skv * 2)
        bias = _pick(rng, "no_bias", "post_scale_bias", "alibi", p_default=0.75)
        p["core_attention_bias_type"] = bias
        if bias == "post_scale_bias":
            p["core_attention_bias_shape"] = (1, hq, sq, skv)
            p["core_attention_bias_requires_grad"] = rng.random() < 0.5
        if rng.random() < 0.12:
            p.update(context_parallel=True, cp_comm_type=rng.choice(("p2p", "a2a", "all_gather")), cp_size=2)
        if rng.random() < 0.12:
            paged = rng.random() < 0.5
            page = rng.choice((16, 256))
            p["inference_params"] = te_harness.InferenceParams(is_paged=paged, page_size=page if paged else 0,
                                                               total_num_pages=64, max_pages_per_seq=8)
            fmt = "".join(ch for ch in layout.split("_")[0] if ch.isalpha())  # a KV cache keeps q, k, v apart
            if paged and fmt == "thd":
                fmt = "bshd"
            p["qkv_layout"] = ("paged_kv_" if paged else "") + f"{fmt}_{fmt}_{fmt}"
        if rng.random() < 0.1:  # FP8 attention
            recipe = te_harness.Recipe(rng.choice(("delayed", "current", "mxfp8")), fp8_dpa=True,
                                       fp8_mha=rng.random() < 0.2)
            p.update(fp8=True, fp8_meta={"recipe": recipe}, qkv_dtype=torch.float8_e4m3fn,
                     qkv_type=te_harness.Float8Tensor, nominal_dtype=torch.bfloat16)
        out.append((arch, rng.choice(CUDNNS), p))
    return out


def _signature(text: str) -> str:
    text = text.split(" Found")[0].split(". Supported")[0].split(";")[0]
    if " because " in text and "score_mod" in text:  # TE lists every reason; the kind is enough
        text = text.split(" because ")[0]
    return re.sub(r"\d+", "N", text)[:160]


def _te_reason(backend: str, reasons: list[str]) -> str:
    name = _TE_NAMES[backend]
    for r in reasons:
        if name.search(r) and "preference" not in r and "prefer FlashAttention 3" not in r:
            return _signature(r)
    shared = next((r for r in reasons if "all backends" in r), None)
    return _signature(shared) if shared else "(no message: dropped without a log line)"


# Reasons that say something beside the verdict (hints, probe lines, version notes, an unchecked namespace).
_NOT_BLOCKERS = ("install", "probe", "change", "namespace", "version", "unverified")


def _attncap_reason(decision) -> str:
    reasons = [r for r in decision.reasons if r.code not in _NOT_BLOCKERS]
    if not reasons:
        return f"(decided by {decision.decided_by})"
    r = reasons[0]
    if r.code == "feature":
        return f"feature {r.message.split(':')[0].replace(f'{decision.backend} does not support ', '')}"
    if r.code == "known_issue":
        return f"known issue {r.rule}"
    return f"rule {r.rule}: {r.field}" if r.rule else f"{r.code}: {r.field}"


def compare(version: str, configs, *, seed_env=None):
    """(agreement Counter per backend, clusters {key: [count, example]}) for one TE version."""
    from attncap.integrations.transformer_engine import environment_for, query_from_attention_params
    from attncap.resolver import resolve
    import importlib.metadata
    te = te_harness.load(version)
    fa4 = importlib.metadata.version("flash-attn-4")
    agree: dict = defaultdict(Counter)
    clusters: dict = {}
    for arch, cudnn, params in configs:
        cfg = te_harness.Config(arch=arch, cudnn=cudnn, params=params, fa2=FA_VERSIONS["flash-attn-2"],
                                fa3=FA_VERSIONS["flash-attn-3"], fa4=fa4)
        try:
            verdict = te.backends(cfg)
        except (AssertionError, ValueError, KeyError):  # TE refuses the parameters themselves
            agree["te"]["invalid"] += 1
            continue
        name = ARCHS[arch]
        query = query_from_attention_params(te.AttentionParams(**{k: v for k, v in params.items() if k in te.fields}),
                                            arch=name)
        env = environment_for(arch=name, transformer_engine=version, cudnn=".".join(map(str, cudnn)),
                              flash_attn=FA_VERSIONS["flash-attn-2"], flash_attn_3=FA_VERSIONS["flash-attn-3"],
                              flash_attn_4=fa4)
        resolution = resolve(query, env, probes=False)
        te_says = {**verdict.flash, "cudnn-fused": verdict.fused == "cudnn"}
        for backend in BACKENDS:
            if backend == "flash-attn-3" and name != "sm90":
                continue  # TE never uses FA3 off sm90: nothing to compare
            ours = resolution.decision(backend)
            if ours.supported == te_says[backend]:
                agree[backend]["agree"] += 1
                continue
            agree[backend]["disagree"] += 1
            if ours.supported:
                key = (version, backend, "attncap_permissive", _te_reason(backend, verdict.reasons))
            else:
                key = (version, backend, "attncap_stricter", _attncap_reason(ours))
            entry = clusters.setdefault(key, [0, None])
            entry[0] += 1
            if entry[1] is None:
                entry[1] = (name, ".".join(map(str, cudnn)), query)
    return agree, clusters


GRID_SIZE = 20000


def main(argv) -> int:
    write = "--write" in argv
    versions = [a for a in argv if a != "--write"] or VERSIONS
    configs = grid(int(__import__("os").environ.get("ATTNCAP_TE_GRID", GRID_SIZE)))
    results = {}
    for version in versions:
        agree, clusters = results[version] = compare(version, configs)
        print(f"== TE {version}: {len(configs)} configurations")
        print(f"  TE refused the parameters of {agree.pop('te', {}).get('invalid', 0)}")
        for backend, c in agree.items():
            total = c["agree"] + c["disagree"]
            print(f"  {backend:<14} agree {c['agree']}/{total} ({100 * c['agree'] / total:.1f}%)")
        for key, (count, example) in sorted(clusters.items(), key=lambda kv: -kv[1][0]):
            print(f"  {count:>6}  {key[1]:<14} {key[2]:<19} {key[3]}")
            print(f"          e.g. {example[0]} cuDNN {example[1]} {example[2]!r}")
    if write:
        write_expectations(results)
    return 0



# ---------- expectations: every cluster with a verdict ----------

EXPECTATIONS = Path(__file__).resolve().parent.parent / "tests" / "te_expectations.yaml"
VERDICTS = {
    "cudnn-check": "utils.py passed the configuration to TE's C++ gate (fused_attn.cpp nvte_get_fused_attn_backend; "
                   "from TE 2.20 cuDNN's own support check), which the harness stubs as supported; attncap's rule "
                   "encodes that check (its source is the evidence) and a GPU run would decide",
    "te-unpads": "TE turns a padding mask (and padding between sequences) into cu_seqlens and calls FlashAttention's "
                 "varlen entry point (backends.py FlashAttention.forward: get_cu_seqlens_and_indices, PackTensors); "
                 "attncap's padding_mask/pad_between_seqs features mean a kernel that takes the mask itself",
    "te-pads-head-dim": "TE pads head_dim_qk/head_dim_v to max(head_dim_qk, head_dim_v) for FA2 (utils.py "
                        "'Supported after padding: padded head_dim'); attncap answers for the kernel, which needs "
                        "equal head dims",
    "te-restriction": "TE's own choice for its FlashAttention call path (the kernel could; TE does not pass the "
                      "argument or does not use it there): attncap answers for the kernel; a TE consumer profile "
                      "would carry it",
    "kernel-check": "TE's gate lets the configuration through to the FlashAttention call, which checks it itself; "
                    "attncap's rule is that kernel's own check (its source is the evidence)",
    "te-no-fa4": "this TE release has no FlashAttention-4 path at all (FlashAttentionUtils has no v4 fields)",
    "known-issue": "attncap refuses because of one of its known issues (GPU evidence or an upstream report, "
                   "its source); TE's gate does not know the problem",
    "not-modelled": "a TE gate condition attncap cannot state yet (see the signature); listed so that it is seen",
}


def _effect(backend: str, issue_id: str) -> str | None:
    from attncap.loader import default_registry
    return next((k.effect for k in default_registry().backends[backend].known_issues if k.id == issue_id), None)


def classify(key) -> str:
    _version, backend, direction, signature = key
    if signature.startswith("known issue ") and _effect(backend, signature[len("known issue "):]):
        return "known-issue"  # one with an effect: a bug seen on a GPU, not a gate
    if backend == "cudnn-fused":
        if signature.startswith("known issue te-"):
            return "BUG: attncap's copy of TE's own gate is stricter than TE"  # not a verdict: the test fails
        return "cudnn-check" if direction == "attncap_stricter" else "not-modelled"
    if direction == "attncap_stricter":
        if signature.startswith("known issue "):
            return "known-issue"
        if signature in ("feature padding_mask", "feature pad_between_seqs"):
            return "te-unpads"
        if backend == "flash-attn-2" and (signature.endswith(": same_head_dims") or signature.endswith(": head_dim_qk")):
            return "te-pads-head-dim"
        return "kernel-check"
    return "te-no-fa4" if "has no FlashAttention N path" in signature else "te-restriction"


def write_expectations(results, path=EXPECTATIONS) -> None:
    """Regenerate the expectations file from observed clusters (review every verdict before committing)."""
    lines = ["# Every disagreement between attncap and TransformerEngine's get_attention_backend over",
             "# tools/te_diff.py's grid, with a verdict (the `verdicts` below) and what it rests on.",
             "# tests/test_te_differential.py fails on a disagreement not listed here and on an entry that",
             "# no longer occurs. Regenerate: python tools/te_diff.py --write (then review the verdicts).",
             "verdicts:"]
    lines += [f"  {name}: {text!r}" for name, text in VERDICTS.items()]
    lines.append("clusters:")
    for version in results:
        for key, (count, example) in sorted(results[version][1].items(), key=lambda kv: (kv[0][1], -kv[1][0])):
            lines.append(f"  - {{te: {key[0]!r}, backend: {key[1]}, direction: {key[2]}, "
                         f"signature: {key[3]!r}, verdict: {classify(key)}, configs: {count}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_expectations(path=EXPECTATIONS) -> dict:
    import yaml
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {(c["te"], c["backend"], c["direction"], c["signature"]): c for c in data["clusters"]}, data["verdicts"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

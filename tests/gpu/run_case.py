"""Run ONE attention case on the GPU and print its result as one JSON line.

    python tests/gpu/run_case.py --case '<json from cases.py>'
    python tests/gpu/run_case.py --id <case id>
    python tests/gpu/run_case.py --env          # environment header record

One case per process on purpose: an unsupported shape can leave the CUDA context
broken (illegal address, misaligned access), which would poison every later case.

The last stdout line starting with "RESULT " carries the JSON record.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

ERR_CHARS = 300
REASON_CHARS = 400

# rel = ||x - ref|| / ||ref||, the reference computed in float64 from the same
# (already rounded) inputs.  Forward / backward limits per input dtype.
TOL = {
    "fp32": (2e-3, 5e-3),
    "fp16": (1e-2, 3e-2),
    "bf16": (4e-2, 8e-2),
}


_ANSI = re.compile(r"\x1b\[[0-9;]*m|\[[0-9;]*m(?=\S)")


def _short(e: BaseException | str, n: int = ERR_CHARS) -> str:
    s = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    s = _ANSI.sub("", str(s))
    s = re.sub(r"\(Triggered internally at [^)]*\)\.?", "", s)
    s = " ".join(s.split())
    return s[:n]


def _clean_reasons(msgs) -> str | None:
    """torch's debug reasons: one message per line/warning, with c10's prefix
    ('[W... sdp_utils.cpp:NN] Warning: ') and suffix ('(function ...)') removed."""
    out = []
    for m in msgs:
        for line in str(m).splitlines():
            line = re.sub(r"^\[W[^\]]*\]\s*(Warning:\s*)?", "", line.strip())
            line = re.sub(r"\s*\(function .*\)\s*$", "", line)
            line = _short(line, 1000)
            if line and line not in out:
                out.append(line)
    return _short(" | ".join(out), REASON_CHARS) if out else None


def _capture_fd2(fn):
    """Run fn() capturing Python warnings AND what C++ writes to fd 2 (c10's
    default warning handler prints there when no Python handler is active)."""
    import tempfile
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tf:
        os.dup2(tf.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                res = fn()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        tf.seek(0)
        text = tf.read().decode(errors="replace")
    return res, [str(x.message) for x in w] + text.splitlines()


def _add_cutlass_dsl_path():
    """nvidia-cutlass-dsl ships a .pth that is not processed when installed with
    --target and found through PYTHONPATH: add its dsl_packages by hand."""
    for p in list(sys.path):
        d = os.path.join(p or ".", "nvidia_cutlass_dsl", "dsl_packages")
        if os.path.isdir(d) and d not in sys.path:
            sys.path.insert(0, d)


def _dist_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except Exception:
        return None


def env_info():
    import torch
    info = {"record": "env", "python": sys.version.split()[0]}
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    info["cudnn_int"] = v
    if v:
        info["cudnn"] = f"{v // 10000}.{(v % 10000) // 100}.{v % 100}" if v >= 90000 else str(v)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        cc = torch.cuda.get_device_capability(0)
        info["compute_capability"] = f"{cc[0]}.{cc[1]}"
        info["arch"] = f"sm{cc[0]}{cc[1]}"
    try:
        info["driver"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:  # pragma: no cover
        info["driver"] = _short(e)
    for dist in ("flash-attn-4", "nvidia-cutlass-dsl", "nvidia-cutlass-dsl-libs-base",
                 "nvidia-cutlass-dsl-libs-cu13", "nvidia-cutlass-dsl-libs-cu12",
                 "quack-kernels", "apache-tvm-ffi", "torch-c-dlpack-ext",
                 "nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "triton", "cuda-bindings"):
        info[dist] = _dist_version(dist)
    _add_cutlass_dsl_path()
    try:
        import cutlass
        info["cutlass_module"] = getattr(cutlass, "__version__", None)
        import flash_attn.cute  # noqa: F401
        info["fa4_import"] = "ok"
    except Exception as e:
        info["fa4_import"] = _short(e)
    return info


# ATTNCAP_GPU_DEVICE=cpu exercises the harness (math backend, reference) without a GPU.
DEVICE = os.environ.get("ATTNCAP_GPU_DEVICE", "cuda")


def _sync():
    import torch
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _dtype(name):
    import torch
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _seed(case_id: str) -> int:
    h = 0
    for ch in case_id:
        h = (h * 131 + ord(ch)) % (2 ** 31 - 1)
    return h


def _err(x, ref):
    """(max abs error, relative l2 error); NaN/inf in x gives inf."""
    import torch
    x = x.double()
    if not torch.isfinite(x).all():
        return float("inf"), float("inf")
    d = x - ref
    mx = d.abs().max().item() if d.numel() else 0.0
    den = ref.norm().item()
    rel = d.norm().item() / den if den > 0 else d.norm().item()
    return mx, rel


def reference(q, k, v, *, scale, mask, mask_tensor=None, window=None):
    """float64 attention. q: (b, hq, sq, d), k/v: (b, hkv, skv, d). Returns (out, ...).

    mask: none | causal (top-left, j <= i) | causal_bottom_right (j <= i + skv - sq)
    | arbitrary (mask_tensor: bool keep-mask or float additive bias).
    window (FA convention, bottom-right aligned): j in [i+off-left, i+off+right].
    Fully masked rows give 0 output (FlashAttention's convention)."""
    import torch
    b, hq, sq, _ = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    if hq != hkv:
        k = k.repeat_interleave(hq // hkv, dim=1)
        v = v.repeat_interleave(hq // hkv, dim=1)
    s = (q @ k.transpose(-1, -2)) * scale
    allowed = torch.ones(sq, skv, dtype=torch.bool, device=q.device)
    i = torch.arange(sq, device=q.device)[:, None]
    j = torch.arange(skv, device=q.device)[None, :]
    off = skv - sq
    if mask == "causal":
        allowed = allowed & (j <= i)
    elif mask == "causal_bottom_right":
        allowed = allowed & (j <= i + off)
    if window is not None:
        left, right = window
        if left is not None and left >= 0:
            allowed = allowed & (j >= i + off - left)
        if right is not None and right >= 0:
            allowed = allowed & (j <= i + off + right)
    allowed = allowed.expand(b, hq, sq, skv)
    if mask == "arbitrary":
        if mask_tensor.dtype == torch.bool:
            allowed = allowed & mask_tensor.expand(b, hq, sq, skv)
        else:
            s = s + mask_tensor.double()
    s = s.masked_fill(~allowed, float("-inf"))
    row_any = allowed.any(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(~row_any, 0.0), dim=-1) * row_any
    return p @ v


def _make_result(case):
    r = {"record": "case", "id": case["id"], "backend": case["backend"]}
    for k in ("group", "dtype", "batch", "seqlen_q", "seqlen_kv", "num_heads_q", "num_heads_kv",
              "head_dim_qk", "head_dim_v", "mask", "mask_kind", "dropout", "window", "training"):
        r[k] = case.get(k)
    r.update({"can_use": None, "can_use_reason": None, "ran_forward": False, "ran_backward": None,
              "fwd_correct": None, "bwd_correct": None, "fwd_err": None, "bwd_err": None,
              "error": None, "bwd_error": None})
    return r


def _finish(r):
    """Overall observed verdict: the backend computes this case correctly."""
    fwd_ok = bool(r["ran_forward"]) and r["fwd_correct"] is not False
    bwd_ok = True
    if r["training"]:
        bwd_ok = bool(r["ran_backward"]) and r["bwd_correct"] is not False
    r["supported"] = fwd_ok and bwd_ok
    if r["supported"]:
        r["status"] = "ok"
    elif not r["ran_forward"]:
        r["status"] = "rejected"
    elif r["fwd_correct"] is False or r["bwd_correct"] is False:
        r["status"] = "wrong"
    else:
        r["status"] = "bwd_failed"
    return r


def _grads_check(r, case, tensors, ref_tensors, tol_b):
    errs = {}
    ok = True
    for name, t, rt in zip(("dq", "dk", "dv"), tensors, ref_tensors):
        if t.grad is None:
            errs[name] = None
            ok = False
            continue
        mx, rel = _err(t.grad, rt.grad)
        errs[name] = {"max_abs": _rnd(mx), "rel": _rnd(rel)}
        if not (rel <= tol_b):
            ok = False
    r["bwd_err"] = errs
    r["bwd_correct"] = ok


def _cuda_poisoned() -> bool | None:
    """After a failure: does a trivial CUDA op still work in this process?  An illegal
    address leaves the context sticky-broken (every later CUDA call fails)."""
    if DEVICE != "cuda":
        return None
    import torch
    try:
        torch.ones(1, device="cuda").add_(1).sum().item()
        torch.cuda.synchronize()
        return False
    except BaseException:
        return True


def _rnd(x):
    if x is None or not math.isfinite(x):
        return None if x is None else str(x)
    return float(f"{x:.3g}")


SDPA_ENUM = {
    "torch-sdpa-flash": "FLASH_ATTENTION",
    "torch-sdpa-efficient": "EFFICIENT_ATTENTION",
    "torch-sdpa-cudnn": "CUDNN_ATTENTION",
    "torch-sdpa-math": "MATH",
}


def run_sdpa(case):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    r = _make_result(case)
    dev = DEVICE
    dt = _dtype(case["dtype"])
    torch.manual_seed(_seed(case["id"]))
    b, sq, skv = case["batch"], case["seqlen_q"], case["seqlen_kv"]
    hq, hkv, dqk, dv = case["num_heads_q"], case["num_heads_kv"], case["head_dim_qk"], case["head_dim_v"]
    training = case["training"]
    q = torch.randn(b, hq, sq, dqk, device=dev, dtype=dt, requires_grad=training)
    k = torch.randn(b, hkv, skv, dqk, device=dev, dtype=dt, requires_grad=training)
    v = torch.randn(b, hkv, skv, dv, device=dev, dtype=dt, requires_grad=training)
    attn_mask = None
    if case["mask"] == "arbitrary":
        if case["mask_kind"] == "bool":
            attn_mask = torch.rand(b, 1, sq, skv, device=dev) > 0.3
            attn_mask[..., 0] = True
        else:
            attn_mask = torch.randn(b, hq, sq, skv, device=dev, dtype=dt)
    is_causal = case["mask"] == "causal"
    enable_gqa = hq != hkv
    p = float(case["dropout"] or 0.0)

    # 1. torch's own verdict, with its reasons (debug=True emits them as warnings)
    checker = {
        "torch-sdpa-flash": "can_use_flash_attention",
        "torch-sdpa-efficient": "can_use_efficient_attention",
        "torch-sdpa-cudnn": "can_use_cudnn_attention",
    }.get(case["backend"])
    try:
        try:
            params = torch.backends.cuda.SDPAParams(q, k, v, attn_mask, p, is_causal, enable_gqa)
        except TypeError:
            params = torch.backends.cuda.SDPAParams(q, k, v, attn_mask, p, is_causal)
        if checker:
            fn = getattr(torch.backends.cuda, checker)
            ok, msgs = _capture_fd2(lambda: bool(fn(params, True)))
            r["can_use"] = ok
            r["can_use_reason"] = _clean_reasons(msgs)
        try:
            choice = torch._fused_sdp_choice(q, k, v, attn_mask, p, is_causal, enable_gqa=enable_gqa)
            names = {int(m.value): n for n, m in SDPBackend.__members__.items()}
            r["default_choice"] = names.get(int(choice), str(choice))
        except Exception as e:
            r["default_choice"] = _short(e)
    except Exception as e:
        r["can_use_reason"] = _short(f"SDPAParams/can_use raised: {type(e).__name__}: {e}")

    # 2. the real run, this backend only
    backend = getattr(SDPBackend, SDPA_ENUM[case["backend"]])
    tol_f, tol_b = TOL[case["dtype"]]
    w = []
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with sdpa_kernel([backend]):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p,
                                                     is_causal=is_causal, enable_gqa=enable_gqa)
            _sync()
        r["ran_forward"] = True
    except Exception as e:
        r["error"] = _clean_reasons([f"{type(e).__name__}: {e}"] + [str(x.message) for x in w])
        return _finish(r)

    scale = 1.0 / math.sqrt(dqk)
    qr, kr, vr = (t.detach().double().requires_grad_(training) for t in (q, k, v))
    ref = reference(qr, kr, vr, scale=scale, mask=case["mask"], mask_tensor=attn_mask)
    if p > 0:
        r["fwd_correct"] = None  # dropout: no deterministic reference; finiteness only
        r["fwd_err"] = {"finite": bool(torch.isfinite(out).all().item())}
        if not r["fwd_err"]["finite"]:
            r["fwd_correct"] = False
    else:
        mx, rel = _err(out, ref)
        r["fwd_err"] = {"max_abs": _rnd(mx), "rel": _rnd(rel)}
        r["fwd_correct"] = rel <= tol_f
    if not training:
        return _finish(r)
    try:
        dout = torch.randn_like(out)
        with sdpa_kernel([backend]):
            out.backward(dout)
        _sync()
        r["ran_backward"] = True
    except Exception as e:
        r["ran_backward"] = False
        r["bwd_error"] = _short(e)
        return _finish(r)
    if p > 0:
        fin = all(bool(torch.isfinite(t.grad).all().item()) for t in (q, k, v))
        r["bwd_err"] = {"finite": fin}
        r["bwd_correct"] = None if fin else False
        return _finish(r)
    ref.backward(dout.double())
    _grads_check(r, case, (q, k, v), (qr, kr, vr), tol_b)
    return _finish(r)


def run_fa4(case):
    import torch
    r = _make_result(case)
    _add_cutlass_dsl_path()
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as e:
        r["error"] = _short(f"import flash_attn.cute failed: {type(e).__name__}: {e}")
        return _finish(r)
    dev = DEVICE
    dt = _dtype(case["dtype"])
    torch.manual_seed(_seed(case["id"]))
    b, sq, skv = case["batch"], case["seqlen_q"], case["seqlen_kv"]
    hq, hkv, dqk, dv = case["num_heads_q"], case["num_heads_kv"], case["head_dim_qk"], case["head_dim_v"]
    training = case["training"]
    # FA layout: (batch, seqlen, heads, dim)
    q = torch.randn(b, sq, hq, dqk, device=dev, dtype=dt, requires_grad=training)
    k = torch.randn(b, skv, hkv, dqk, device=dev, dtype=dt, requires_grad=training)
    v = torch.randn(b, skv, hkv, dv, device=dev, dtype=dt, requires_grad=training)
    causal = case["mask"] == "causal_bottom_right"
    window = tuple(case["window"]) if case.get("window") else (None, None)
    tol_f, tol_b = TOL[case["dtype"]]
    t0 = time.time()
    try:
        res = flash_attn_func(q, k, v, causal=causal, window_size=window)
        out = res[0] if isinstance(res, (tuple, list)) else res
        _sync()
        r["ran_forward"] = True
    except BaseException as e:  # AssertionError from _validate_head_dims, DSL errors...
        r["error"] = _short(e)
        r["fwd_s"] = round(time.time() - t0, 1)
        r["sticky_cuda_error"] = _cuda_poisoned()
        return _finish(r)
    r["fwd_s"] = round(time.time() - t0, 1)
    scale = 1.0 / math.sqrt(dqk)
    qr, kr, vr = (t.detach().double().transpose(1, 2).contiguous().requires_grad_(training)
                  for t in (q, k, v))
    ref = reference(qr, kr, vr, scale=scale, mask=case["mask"],
                    window=case["window"] if case.get("window") else None)
    ref_bshd = ref.transpose(1, 2)
    mx, rel = _err(out, ref_bshd)
    r["fwd_err"] = {"max_abs": _rnd(mx), "rel": _rnd(rel)}
    r["fwd_correct"] = rel <= tol_f
    if not training:
        return _finish(r)
    t0 = time.time()
    try:
        dout = torch.randn_like(out)
        out.backward(dout)
        _sync()
        r["ran_backward"] = True
    except BaseException as e:
        r["ran_backward"] = False
        r["bwd_error"] = _short(e)
        r["bwd_s"] = round(time.time() - t0, 1)
        r["sticky_cuda_error"] = _cuda_poisoned()
        return _finish(r)
    r["bwd_s"] = round(time.time() - t0, 1)
    ref_bshd.backward(dout.double())

    class _G:  # adapt (b,h,s,d) reference grads to FA's (b,s,h,d)
        def __init__(self, t):
            self.grad = t.grad.transpose(1, 2)

    _grads_check(r, case, (q, k, v), (_G(qr), _G(kr), _G(vr)), tol_b)
    return _finish(r)


def run(case):
    if case["backend"] == "flash-attn-4":
        return run_fa4(case)
    return run_sdpa(case)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", help="case as JSON")
    ap.add_argument("--id", help="case id from cases.py")
    ap.add_argument("--env", action="store_true")
    a = ap.parse_args(argv)
    if a.env:
        rec = env_info()
    else:
        if a.case:
            case = json.loads(a.case)
        else:
            import cases
            case = cases.get(a.id)
        t0 = time.time()
        try:
            rec = run(case)
        except BaseException as e:
            rec = _finish(_make_result(case))
            rec["status"] = "harness_error"
            rec["error"] = _short(f"{type(e).__name__}: {e} @ {traceback.format_exc()[-200:]}")
        rec["seconds"] = round(time.time() - t0, 1)
    sys.stdout.flush()
    print("RESULT " + json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()

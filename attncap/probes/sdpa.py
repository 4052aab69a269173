"""Probe PyTorch's own SDPA kernel checks: torch.backends.cuda.can_use_{flash,efficient,cudnn}_attention.

Only on a CUDA machine whose GPU is the queried arch, and only when torch is already
imported (a probe must not pay torch's import on the hot path). PyTorch's reason text, which
it emits as warnings with debug=True, is kept as the message.
"""

from __future__ import annotations

import sys
import warnings

from . import Probe, ProbeVerdict

_TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


class SDPAProbe(Probe):
    KERNELS = ("flash", "efficient", "cudnn")
    package = "torch"
    # PyTorch's checks cover the whole query we can express as tensors.
    judges = frozenset({"head_dim_qk", "head_dim_v", "head_dims", "same_head_dims", "alignment_bytes", "dtype",
                        "cudnn", "seqlen_q", "seqlen_kv", "num_heads_q", "num_heads_kv"})

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.name = f"torch-sdpa-{kernel}"
        self.reset()

    def reset(self) -> None:
        self._results = {}
        self._gpu = None  # (cuda available, compute capability), asked of torch once

    def _device(self, torch) -> tuple[bool, tuple[int, int] | None]:
        if self._gpu is None:
            available = torch.cuda.is_available()
            self._gpu = (available, tuple(torch.cuda.get_device_capability()) if available else None)
        return self._gpu

    def status(self) -> str:
        torch = sys.modules.get("torch")
        if torch is None:
            return "answers only in processes that have imported torch, on a CUDA device"
        if not torch.cuda.is_available():
            return "no CUDA device: no opinion"
        return f"ready: torch.backends.cuda.can_use_{self.kernel}_attention (torch {torch.__version__})"

    def check(self, query, ctx) -> ProbeVerdict:
        torch = sys.modules.get("torch")
        if torch is None:
            return self.verdict(None, "torch is not imported; attncap does not import it for a probe")
        available, cc = self._device(torch)
        if not available:
            return self.verdict(None, "no CUDA device")
        if cc != tuple(ctx.cc):
            return self.verdict(None, f"the GPU is not {ctx.arch}")
        if query.dtype not in _TORCH_DTYPES:
            return self.verdict(None, f"dtype {query.dtype} cannot be probed")
        if query.mask == "causal_bottom_right" and query.cross_attention:
            # SDPA takes bottom-right causal as a causal_lower_right bias, which SDPAParams cannot express.
            return self.verdict(None, "bottom-right causal with seqlen_q != seqlen_kv cannot be asked of can_use_*")
        key = query
        if key not in self._results:
            self._results[key] = self._ask(torch, query)
        return self._results[key]

    def _ask(self, torch, q) -> ProbeVerdict:
        dtype = getattr(torch, _TORCH_DTYPES[q.dtype])
        hq, hkv = q.num_heads_q or 1, q.num_heads_kv or q.num_heads_q or 1
        sq, skv = q.seqlen_q or 128, q.seqlen_kv or q.seqlen_q or 128

        def tensor(heads, seq, dim):
            return torch.empty((1, heads, seq, dim), dtype=dtype, device="cuda", requires_grad=q.training)
        mask = None if q.mask in ("none", "causal", "causal_bottom_right") else \
            torch.ones((1, 1, sq, skv), dtype=torch.bool, device="cuda")
        params = torch.backends.cuda.SDPAParams(
            tensor(hq, sq, q.head_dim_qk), tensor(hkv, skv, q.head_dim_qk), tensor(hkv, skv, q.head_dim_v),
            mask, q.dropout, q.mask in ("causal", "causal_bottom_right"), q.gqa)
        can_use = getattr(torch.backends.cuda, f"can_use_{self.kernel}_attention")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ok = bool(can_use(params, True))
        text = "; ".join(str(w.message).strip() for w in caught)[:500]
        return self.verdict(ok, text or f"can_use_{self.kernel}_attention -> {ok}")

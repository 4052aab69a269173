"""Probe PyTorch's own SDPA kernel checks: torch.backends.cuda.can_use_{flash,efficient,cudnn}_attention.

Only on a CUDA machine whose GPU is the queried arch, and only when torch is already
imported (a probe must not pay torch's import on the hot path); `attncap.probes.warm()` imports it. PyTorch's reason text, which
it emits with debug=True as C++ warnings (to file descriptor 2, or as Python warnings), is
captured and kept as the message, not printed.

A capability question must not allocate the problem: the checks read only sizes, strides,
dtype, device, requires_grad and the storage offset (torch's sdp_utils.cpp: check_cudnn_layout
reads every stride, check_last_dim_stride_equals_1_dense the last one, the alignment check the
offset), never the data. So q, k, v and the mask are views of a 256-byte allocation through a
non-owning storage that claims the full size, with the strides a contiguous tensor would have.
Where torch lacks that constructor, shapes over PROBE_MAX_BYTES get no opinion instead.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
import weakref

from ..forking import renew_after_fork
from . import HOW_TO_WARM, Probe, ProbeVerdict, imported, probes_changed, remember, timeout_setting

PROBE_MAX_BYTES = 64 * 1024 * 1024  # the most a probe may allocate when it cannot avoid allocating
_STDERR_LOCK = threading.Lock()  # one capture of file descriptor 2 at a time
_CPP_WARNING = re.compile(r"^\[W[^\]]*\] (?:Warning: )?(.*?)(?: \(function \w+\))?$")

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
        _instances.add(self)

    def reset(self) -> None:
        self._results = {}
        self._gpu = None  # (cuda available, compute capability), asked of torch once
        self._stale = False  # said "torch is not imported": forget cached resolutions once it is

    def warm(self, *, block: bool = True, timeout: float | None = None) -> bool | None:
        """Import torch (in a background thread shared by the SDPA probes, so that `timeout` holds) and ask it for
        the device once: True = a CUDA device, False = none (no opinion) or torch cannot be imported, None = still
        importing."""
        torch = self._torch()
        if torch is None:
            thread = _start_torch_import()
            if block and thread is not None:
                thread.join(timeout_setting() if timeout is None else timeout)
            torch = self._torch()
            if torch is None:
                return False if _torch_failure else None
        try:
            return self._device(torch)[0]
        except Exception:  # a broken CUDA install: the check says so
            return False

    def _torch(self):
        """torch when imported (fully); the first time after a "not imported" answer, cached resolutions are
        forgotten."""
        torch = imported("torch")
        if torch is not None and self._stale:
            self._stale = False
            probes_changed()
        return torch

    @staticmethod
    def _not_ready() -> str:
        if _torch_failure:
            return _torch_failure
        if _torch_thread is not None:
            return "importing torch is still running (in the background, started by warm()): the table answers " \
                   "until it finishes"
        return f"not asked: torch is not imported, and a resolve does not import it; to ask it: {HOW_TO_WARM}"

    def _device(self, torch) -> tuple[bool, tuple[int, int] | None]:
        if self._gpu is None:
            available = torch.cuda.is_available()
            self._gpu = (available, tuple(torch.cuda.get_device_capability()) if available else None)
        return self._gpu

    def status(self) -> str:
        torch = imported("torch")
        if torch is None:
            return f"unavailable: {self._not_ready()}"
        if not torch.cuda.is_available():
            return "no CUDA device: no opinion"
        return f"ready: torch.backends.cuda.can_use_{self.kernel}_attention (torch {torch.__version__})"

    def check(self, query, ctx) -> ProbeVerdict:
        torch = self._torch()
        if torch is None:
            self._stale = True  # before reading again: an import finishing meanwhile sees it, or we see torch
            torch = self._torch()
            if torch is None:
                return self.verdict(None, self._not_ready())
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
        cached = self._results.get(query)
        if cached is None:
            cached = remember(self._results, query, self._ask(torch, query))
        return cached

    def _ask(self, torch, q, device: str = "cuda") -> ProbeVerdict:
        dtype = getattr(torch, _TORCH_DTYPES[q.dtype])
        hq, hkv = q.num_heads_q or 1, q.num_heads_kv or q.num_heads_q or 1
        sq, skv = q.seqlen_q or 128, q.seqlen_kv or q.seqlen_q or 128
        shapes = [((1, hq, sq, q.head_dim_qk), dtype), ((1, hkv, skv, q.head_dim_qk), dtype),
                  ((1, hkv, skv, q.head_dim_v), dtype)]
        if q.mask not in ("none", "causal", "causal_bottom_right"):
            shapes.append(((1, 1, sq, skv), torch.bool))
        base = torch.empty(256, dtype=torch.uint8, device=device)  # the only memory the probe uses
        if not hasattr(torch._C, "_construct_storage_from_data_pointer"):
            total = sum(_numel(size) * torch.empty((), dtype=t).element_size() for size, t in shapes)
            if total > PROBE_MAX_BYTES:
                return self.verdict(None, f"this torch cannot describe a {total >> 20} MiB problem without "
                                          "allocating it; not probed")
        tensors = [_unallocated(torch, base, size, t, requires_grad=q.training and t is not torch.bool)
                   for size, t in shapes]
        params = torch.backends.cuda.SDPAParams(*tensors[:3], tensors[3] if len(tensors) > 3 else None, q.dropout,
                                                q.mask in ("causal", "causal_bottom_right"), q.gqa)
        can_use = getattr(torch.backends.cuda, f"can_use_{self.kernel}_attention")
        ok, reasons = _captured(lambda: bool(can_use(params, True)))
        text = "; ".join(reasons)[:500]
        return self.verdict(ok, text or f"can_use_{self.kernel}_attention -> {ok}")


_torch_lock = threading.Lock()
renew_after_fork(globals(), "_torch_lock")
_torch_thread: threading.Thread | None = None  # the import warm() started, once per process
_torch_failure: str | None = None
_instances: weakref.WeakSet = weakref.WeakSet()


def _start_torch_import() -> threading.Thread | None:
    global _torch_thread
    with _torch_lock:
        if _torch_thread is None and _torch_failure is None and imported("torch") is None:
            _torch_thread = threading.Thread(target=_import_torch, name="attncap-torch-import", daemon=True)
            _torch_thread.start()
        return _torch_thread


def _import_torch() -> None:
    global _torch_failure
    try:
        import torch  # noqa: F401  (the probes read it from sys.modules)
    except BaseException as exc:  # a broken torch: the probes keep their "no opinion", with this reason
        _torch_failure = f"cannot import torch: {type(exc).__name__}: {exc}"
    stale = [p for p in list(_instances) if p._stale]
    for p in stale:
        p._stale = False
    if stale:
        probes_changed()


def _after_fork_in_child() -> None:
    """The import thread is not copied into the child: a half-imported torch stays half-imported there."""
    global _torch_failure
    if _torch_thread is not None and _torch_failure is None and imported("torch") is None:
        _torch_failure = "the process forked while torch was importing: no opinion in the child"


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _numel(size) -> int:
    n = 1
    for s in size:
        n *= s
    return n


def _unallocated(torch, base, size, dtype, *, requires_grad: bool):
    """A contiguous tensor of `size` whose storage claims the full size but is `base`'s 256 bytes:
    what can_use_* reads (sizes, strides, dtype, device, offset) without the memory it would need."""
    strides, step = [], 1
    for s in reversed(size):
        strides.insert(0, step)
        step *= s
    make = getattr(torch._C, "_construct_storage_from_data_pointer", None)
    if make is None:  # an older torch: PROBE_MAX_BYTES bounded the size before we got here
        return torch.empty(size, dtype=dtype, device=base.device, requires_grad=requires_grad)
    nbytes = max(1, _numel(size)) * torch.empty((), dtype=dtype).element_size()
    storage = make(base.data_ptr(), base.device, nbytes)
    tensor = torch.empty(0, dtype=dtype, device=base.device).set_(storage, 0, size, strides)
    return tensor.requires_grad_(requires_grad)


def _captured(call) -> tuple:
    """call()'s result and the reasons torch gave: C++ warnings written to file descriptor 2 (captured,
    not printed) and Python warnings. Other threads' stderr output during the call is passed on."""
    import tempfile  # only here: a resolve that asks no probe does not pay its import
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            result = call()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        lines = sink.read().decode("utf-8", "replace").splitlines()
    reasons, other = [], []
    for line in lines:
        match = _CPP_WARNING.match(line.strip())
        (reasons if match else other).append(match.group(1).strip() if match else line)
    if other:  # not torch's: someone else's output, give it back
        sys.stderr.write("\n".join(other) + "\n")
    reasons += [str(w.message).strip() for w in caught]
    return result, reasons

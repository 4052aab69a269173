"""Check which attention backend actually ran, not only what attncap would select.

    with expect_backend("flash-attn-4"):
        out = flash_attn.cute.flash_attn_func(q, k, v)

On exit it raises AssertionError unless the expected backend ran and no other recorded one did:
- torch-sdpa-*: the block runs under `torch.nn.attention.sdpa_kernel([that backend])`, so SDPA
  cannot pick another kernel (it raises instead, reported as "did not run"), and calls to
  `torch.nn.functional.scaled_dot_product_attention` are counted;
- flash-attn-2/3/4: their public entry points are wrapped for the block and record each call.
Only calls made through the module attribute are seen (`flash_attn.flash_attn_func(...)`, or a
`from flash_attn import flash_attn_func` run inside the block); a function bound before the block
is not. Never imports a backend library that is not installed.
"""

from __future__ import annotations

import contextlib
import importlib
from collections import Counter

# backend -> the (module, attribute) entry points whose calls mean "this backend ran"
ENTRY_POINTS = {
    "flash-attn-4": [("flash_attn.cute.interface", "flash_attn_func"), ("flash_attn.cute.interface", "flash_attn_varlen_func"),
                     ("flash_attn.cute", "flash_attn_func"), ("flash_attn.cute", "flash_attn_varlen_func")],
    "flash-attn-3": [("flash_attn_interface", n) for n in ("flash_attn_func", "flash_attn_varlen_func",
                                                           "flash_attn_with_kvcache")],
    "flash-attn-2": [(m, n) for m in ("flash_attn", "flash_attn.flash_attn_interface")
                     for n in ("flash_attn_func", "flash_attn_varlen_func", "flash_attn_qkvpacked_func",
                               "flash_attn_kvpacked_func", "flash_attn_varlen_qkvpacked_func",
                               "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache")],
}
SDPA = {"torch-sdpa-flash": "FLASH_ATTENTION", "torch-sdpa-efficient": "EFFICIENT_ATTENTION",
        "torch-sdpa-cudnn": "CUDNN_ATTENTION", "torch-sdpa-math": "MATH"}


class Recorder:
    """The calls seen in an expect_backend block, per backend."""

    def __init__(self):
        self.calls: Counter = Counter()

    def wrap(self, backend: str, fn):
        def recorded(*args, **kwargs):
            self.calls[backend] += 1
            return fn(*args, **kwargs)
        recorded.__wrapped__ = fn
        return recorded


def recordable() -> list[str]:
    return sorted([*ENTRY_POINTS, *SDPA])


@contextlib.contextmanager
def expect_backend(backend: str):
    """Fail unless `backend` ran inside the block and no other recorded backend did (yields the Recorder)."""
    __tracebackhide__ = True
    if backend not in ENTRY_POINTS and backend not in SDPA:
        raise ValueError(f"attncap cannot record whether {backend!r} ran; it records {', '.join(recordable())}")
    recorder = Recorder()
    with contextlib.ExitStack() as stack:
        for name, points in ENTRY_POINTS.items():
            for module, attr in points:
                _patch(stack, module, attr, lambda fn, name=name: recorder.wrap(name, fn))
        sdpa = _sdpa_context(stack, recorder, backend)
        try:
            yield recorder
        except RuntimeError as exc:
            if backend in SDPA and ("backend" in str(exc).lower() or "kernel" in str(exc).lower()):  # SDPA refused: the forced kernel cannot run
                raise AssertionError(f"{backend} did not run: scaled_dot_product_attention raised {exc}") from exc
            raise
    others = {b: n for b, n in recorder.calls.items() if b != backend and n}
    if others:
        ran = ", ".join(f"{b} ({n} call{'s' if n != 1 else ''})" for b, n in sorted(others.items()))
        raise AssertionError(f"expected {backend}, but {ran} ran")
    if not recorder.calls[backend]:
        where = "scaled_dot_product_attention was not called" if backend in SDPA and sdpa else "no call was seen"
        raise AssertionError(f"expected {backend} to run, but {where} inside the block")


def _patch(stack, module: str, attr: str, make) -> None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # not installed (or broken): nothing of it can run either
        return
    original = getattr(mod, attr, None)
    if original is None:
        return
    setattr(mod, attr, make(original))
    stack.callback(setattr, mod, attr, original)


def _sdpa_context(stack, recorder: Recorder, backend: str) -> bool:
    """Count SDPA calls; when an SDPA backend is expected, allow only that one. False without torch."""
    import sys
    if "torch" not in sys.modules and backend not in SDPA:
        return False  # do not import torch for a flash-attn check; an unimported torch ran nothing
    try:
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except Exception:
        return False
    # An SDPA call counts for the expected SDPA backend (the context allows no other); otherwise for "torch-sdpa".
    name = backend if backend in SDPA else "torch-sdpa"
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = recorder.wrap(name, original)
    stack.callback(setattr, F, "scaled_dot_product_attention", original)
    if backend in SDPA:
        stack.enter_context(sdpa_kernel([getattr(SDPBackend, SDPA[backend])]))
    return True

"""attncap.recording.expect_backend on a CUDA GPU: the forced SDPA kernel is the one that ran
(torch.profiler's kernel names agree), and a kernel SDPA cannot use fails the block instead of
falling back. Skipped without torch or without a CUDA device."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from attncap.recording import expect_backend  # noqa: E402

# A substring of the CUDA kernel names each SDPA backend launches (forward), as seen on an H200 with
# torch 2.11.0+cu130: pytorch_flash::flash_fwd_kernel, fmha_cutlassF_bf16_aligned_64x64_rf_sm80,
# cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_... (which also says "flash").
KERNEL = {"torch-sdpa-flash": "pytorch_flash::", "torch-sdpa-efficient": "fmha_cutlass",
          "torch-sdpa-cudnn": "cudnn_generated"}


def _kernels(fn) -> list[str]:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type.name == "CUDA"]


@pytest.mark.parametrize("backend", sorted(KERNEL))
def test_the_expected_sdpa_kernel_ran(backend):
    q = torch.randn(2, 4, 128, 64, device="cuda", dtype=torch.bfloat16)

    def run():
        with expect_backend(backend) as recorder:
            F.scaled_dot_product_attention(q, q, q)
        assert recorder.calls[backend] == 1
    names = _kernels(run)
    assert any(KERNEL[backend] in n for n in names), names
    assert not any(k in n for n in names for b, k in KERNEL.items() if b != backend), names


def test_a_kernel_sdpa_cannot_use_fails_the_block():
    q = torch.randn(2, 4, 128, 512, device="cuda", dtype=torch.bfloat16)  # flash takes head dims <= 256
    with pytest.raises(AssertionError, match="torch-sdpa-flash did not run"):
        with expect_backend("torch-sdpa-flash"):
            F.scaled_dot_product_attention(q, q, q)

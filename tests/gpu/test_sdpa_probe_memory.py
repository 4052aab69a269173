"""The SDPA probe does not allocate the problem it is asked about (skipped without CUDA).

It describes q, k, v and the mask through a non-owning storage over 256 bytes; these tests check
on a real GPU that (a) the memory stays that small for a 128k-token training query, (b) torch's
reasons are captured, not printed, and (c) the verdicts equal can_use_* on real, allocated tensors.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import attncap  # noqa: E402
from attncap import AttentionQuery, Environment, resolve  # noqa: E402
from attncap.probes.sdpa import SDPAProbe  # noqa: E402

KERNELS = ("flash", "efficient", "cudnn")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def env():
    return Environment.detect(device=True)


@pytest.mark.parametrize("fields", [
    dict(head_dim_qk=128, num_heads_q=128, seqlen_q=131072, training=True),  # 24 GiB reserved before
    dict(head_dim_qk=128, num_heads_q=32, seqlen_q=65536, mask="padding"),  # a 4 GiB mask before
])
def test_a_huge_query_allocates_almost_nothing(env, fields, capfd):
    attncap.clear_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    resolution = resolve(AttentionQuery(arch=env.arch, dtype="bf16", **fields), env)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before < 4 * MIB
    probes = [resolution.decision(f"torch-sdpa-{k}").probe for k in KERNELS]
    assert all(p is not None and p.message for p in probes), probes
    printed = capfd.readouterr().err
    assert "[W" not in printed and "Warning:" not in printed, printed[:500]


CASES = [dict(head_dim_qk=h, head_dim_v=v, num_heads_q=hq, num_heads_kv=hkv, seqlen_q=sq, seqlen_kv=skv,
              training=t, mask=m, dtype=d, dropout=p)
         for h, v in ((64, 64), (128, 128), (192, 128), (256, 256), (96, 96), (72, 72), (320, 320))
         for hq, hkv in ((8, 8), (32, 8))
         for sq, skv in ((128, 128), (1, 512), (1000, 1000))
         for t in (False, True)
         for m in ("none", "causal", "padding")
         for d in ("bf16", "fp16", "fp32")
         for p in (0.0, 0.1)][::7]  # a spread sample


def _allocated_params(q):
    """SDPAParams from real tensors, as the probe built them before (what the checks were asked then)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[q.dtype]

    def tensor(heads, seq, dim):
        return torch.empty((1, heads, seq, dim), dtype=dtype, device="cuda", requires_grad=q.training)
    mask = torch.ones((1, 1, q.seqlen_q, q.seqlen_kv), dtype=torch.bool, device="cuda") if q.mask == "padding" \
        else None
    return torch.backends.cuda.SDPAParams(
        tensor(q.num_heads_q, q.seqlen_q, q.head_dim_qk), tensor(q.num_heads_kv, q.seqlen_kv, q.head_dim_qk),
        tensor(q.num_heads_kv, q.seqlen_kv, q.head_dim_v), mask, q.dropout, q.mask == "causal", q.gqa)


@pytest.mark.parametrize("kernel", KERNELS)
def test_verdicts_equal_can_use_on_allocated_tensors(env, kernel):
    probe = SDPAProbe(kernel)
    can_use = getattr(torch.backends.cuda, f"can_use_{kernel}_attention")
    differ = []
    for fields in CASES:
        if fields["mask"] == "causal" and fields["seqlen_q"] != fields["seqlen_kv"]:
            continue
        q = AttentionQuery(arch=env.arch, **fields)
        expected = bool(can_use(_allocated_params(q), False))
        verdict = probe._ask(torch, q)
        if verdict.supported is not expected:
            differ.append((fields, expected, verdict.message))
    assert differ == []

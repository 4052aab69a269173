"""The torch SDPA probes on a real GPU (skipped without CUDA): PyTorch's can_use_* as a veto."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import attncap  # noqa: E402
from attncap import AttentionQuery, Environment, resolve  # noqa: E402


@pytest.fixture(scope="module")
def env():
    return Environment.detect(device=True)


def decision(env, backend, **fields):
    query = AttentionQuery(arch=env.arch, num_heads_q=8, seqlen_q=128, **fields)
    return resolve(query, env).decision(backend)


@pytest.mark.parametrize("backend", ["torch-sdpa-flash", "torch-sdpa-efficient", "torch-sdpa-cudnn"])
def test_probe_agrees_on_a_plain_query(env, backend):
    d = decision(env, backend, dtype="bf16", head_dim_qk=128)
    assert d.probe is not None and d.probe.supported is True, d.probe
    assert d.supported and d.decided_by == "static"


def test_probe_vetoes_what_pytorch_rejects(env):
    # flash rejects an explicit attention mask; the table says so too, and the probe adds PyTorch's words.
    d = decision(env, "torch-sdpa-flash", dtype="bf16", head_dim_qk=128, mask="padding")
    assert not d.supported and d.probe.supported is False and d.probe.message


def test_fp32_is_not_asked_of_flash(env):
    d = decision(env, "torch-sdpa-flash", dtype="fp32", head_dim_qk=64)
    assert not d.supported


def test_bottom_right_cross_attention_gets_no_opinion(env):
    q = AttentionQuery(arch=env.arch, dtype="bf16", head_dim_qk=64, mask="causal_bottom_right", seqlen_q=16,
                       seqlen_kv=128)
    d = resolve(q, env).decision("torch-sdpa-flash")
    assert d.probe is not None and d.probe.supported is None
    attncap.clear_cache()

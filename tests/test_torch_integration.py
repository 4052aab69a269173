"""attncap.torch on CPU: queries from tensors, SDPA backend contexts, torch.compile-safe resolution."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import attncap  # noqa: E402
import attncap.torch as at  # noqa: E402
from attncap import AttentionQuery, Environment  # noqa: E402
from torch.nn.attention import SDPBackend  # noqa: E402

ENV_VARS = ("ATTNCAP_BACKEND", "ATTNCAP_DISABLE", "ATTNCAP_PROBES")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def qkv(b=2, hq=8, hkv=8, sq=128, skv=128, d=64, dv=None, dtype=torch.bfloat16, layout="bhsd", grad=False):
    def make(h, s, dim):
        shape = {"bhsd": (b, h, s, dim), "bshd": (b, s, h, dim), "sbhd": (s, b, h, dim), "thd": (b * s, h, dim)}
        return torch.zeros(shape[layout], dtype=dtype, requires_grad=grad)
    return make(hq, sq, d), make(hkv, skv, d), make(hkv, skv, dv or d)


def test_import_attncap_does_not_import_torch():
    code = "import sys, attncap, attncap.testing, attncap.pytest_plugin; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_query_from_sdpa_tensors_equals_the_hand_built_query():
    q, k, v = qkv(grad=True)
    got = at.query_from_tensors(q, k, v, causal=True, arch="sm90")
    assert got == AttentionQuery(arch="sm90", dtype="bf16", head_dim_qk=64, head_dim_v=64, num_heads_q=8,
                                 num_heads_kv=8, seqlen_q=128, seqlen_kv=128, training=True, mask="causal",
                                 layout="bshd")


@pytest.mark.parametrize("layout, expected", [("bhsd", "bshd"), ("bshd", "bshd"), ("sbhd", "sbhd")])
def test_every_dense_layout_reads_the_same_dimensions(layout, expected):
    q, k, v = qkv(hq=16, hkv=4, sq=32, skv=96, d=192, dv=128, dtype=torch.float16, layout=layout)
    got = at.query_from_tensors(q, k, v, layout=layout, arch="sm_100a", dropout_p=0.1, window=(64, 0),
                                softcap=30.0)
    assert got == AttentionQuery(arch="sm100", dtype="fp16", head_dim_qk=192, head_dim_v=128, num_heads_q=16,
                                 num_heads_kv=4, seqlen_q=32, seqlen_kv=96, dropout=0.1, window=(64, 0),
                                 softcap=30.0, layout=expected)


def test_gqa_heads_and_varlen():
    q, k, v = qkv(hq=32, hkv=8, layout="thd")
    got = at.query_from_tensors(q, k, v, layout="thd", arch="sm90", seqlen_q=128, mask="causal_bottom_right")
    assert (got.num_heads_q, got.num_heads_kv, got.gqa, got.layout) == (32, 8, True, "thd")
    assert (got.seqlen_q, got.seqlen_kv, got.mask) == (128, 128, "causal_bottom_right")
    assert ("gqa",) in got.features and ("varlen",) in got.features


def test_training_follows_requires_grad_and_grad_mode():
    q, k, v = qkv()
    assert not at.query_from_tensors(q, k, v, arch="sm90").training
    k.requires_grad_(True)
    assert at.query_from_tensors(q, k, v, arch="sm90").training
    with torch.no_grad():
        assert not at.query_from_tensors(q, k, v, arch="sm90").training
    assert not at.query_from_tensors(q, k, v, arch="sm90", training=False).training


def test_deterministic_follows_torch(monkeypatch):
    q, k, v = qkv(grad=True)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert at.query_from_tensors(q, k, v, arch="sm90").deterministic


def test_attn_mask_tensor_is_an_arbitrary_mask():
    q, k, v = qkv()
    mask = torch.ones(128, 128, dtype=torch.bool)
    assert at.query_from_tensors(q, k, v, attn_mask=mask, arch="sm90").mask == "arbitrary"
    with pytest.raises(ValueError, match="either attn_mask or causal"):
        at.query_from_tensors(q, k, v, attn_mask=mask, causal=True, arch="sm90")


def test_cpu_tensors_need_an_arch():
    with pytest.raises(ValueError, match=r"cannot tell the GPU arch of a cpu tensor: pass arch=\.\.\."):
        at.query_from_tensors(*qkv())


def test_meta_tensors_ask_what_if_questions():
    q, k, v = (t.to("meta") for t in qkv())
    assert at.query_from_tensors(q, k, v, arch="sm120").arch == "sm120"


@pytest.mark.parametrize("change, message", [
    (dict(layout="bsdh"), "layout='bsdh': expected one of bhsd, bshd, sbhd, thd"),
    (dict(k_dim=32), "q and k head dims differ: 64 != 32"),
    (dict(v_dtype=torch.float16), "q, k, v dtypes differ"),
    (dict(k_batch=3), "q and k batch sizes differ"),
])
def test_inconsistent_tensors_are_rejected(change, message):
    q, k, v = qkv()
    if "k_dim" in change:
        k = torch.zeros(2, 8, 128, change["k_dim"], dtype=torch.bfloat16)
    if "v_dtype" in change:
        v = v.to(change["v_dtype"])
    if "k_batch" in change:
        k, v = torch.zeros(3, 8, 128, 64, dtype=torch.bfloat16), torch.zeros(3, 8, 128, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=message):
        at.query_from_tensors(q, k, v, arch="sm90", layout=change.get("layout", "bhsd"))


def test_num_heads_must_divide():
    with pytest.raises(attncap.InvalidQueryError, match="num_heads_kv=3 is invalid"):
        at.query_from_tensors(*qkv(hq=8, hkv=3), arch="sm90")


# --- sdpa_kernel_for ---------------------------------------------------------------------------

SDPA_ENV = Environment(arch="sm90", versions={"torch": "2.13.0"})


def test_set_priority_exists_in_this_torch():
    import inspect
    from torch.nn.attention import sdpa_kernel
    assert ("set_priority" in inspect.signature(sdpa_kernel).parameters) == at._has_set_priority()
    assert at._has_set_priority()  # torch >= 2.6


def test_sdpa_backends_follow_the_resolution_order():
    query = AttentionQuery(arch="sm90", head_dim_qk=128, training=True)
    resolution = attncap.resolve(query, SDPA_ENV, probes=False)
    expected = [getattr(SDPBackend, at.SDPA_BACKENDS[d.backend]) for d in resolution.decisions
                if d.supported and d.backend in at.SDPA_BACKENDS]
    got = at.sdpa_backends_for(query, SDPA_ENV, probes=False)
    assert got == expected and SDPBackend.MATH == got[-1] and len(got) >= 3


def test_sdpa_backends_exclude_rejected_and_disabled_kernels():
    hd512 = AttentionQuery(arch="sm90", head_dim_qk=512)
    assert at.sdpa_backends_for(hd512, SDPA_ENV, probes=False) == [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    got = at.sdpa_backends_for(hd512, SDPA_ENV, probes=False, disable="torch-sdpa-efficient")
    assert got == [SDPBackend.MATH]


def test_sdpa_kernel_for_sets_the_priority_and_restores_it():
    from torch.nn.attention import _cur_sdpa_kernel_backends
    query = AttentionQuery(arch="sm90", head_dim_qk=512)
    before = _cur_sdpa_kernel_backends(with_priority=True)
    with at.sdpa_kernel_for(query, SDPA_ENV, probes=False):
        assert set(_cur_sdpa_kernel_backends()) == {SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH}
        assert _cur_sdpa_kernel_backends(with_priority=True)[:2] == [SDPBackend.EFFICIENT_ATTENTION,
                                                                      SDPBackend.MATH]
        assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
    assert _cur_sdpa_kernel_backends(with_priority=True) == before


def test_sdpa_runs_under_the_context_on_cpu():
    q, k, v = (torch.randn(1, 2, 16, 32) for _ in range(3))
    query = at.query_from_tensors(q, k, v, causal=True, arch="sm90")
    assert query.dtype == "fp32"
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with at.sdpa_kernel_for(query, SDPA_ENV, probes=False):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, expected)


def test_no_sdpa_backend_is_an_error_with_the_table(monkeypatch):
    monkeypatch.setenv("ATTNCAP_DISABLE", ",".join(at.SDPA_BACKENDS))
    query = AttentionQuery(arch="sm90", head_dim_qk=64)
    with pytest.raises(at.NoSDPABackendError, match="no torch SDPA backend can run") as info:
        at.sdpa_kernel_for(query, SDPA_ENV, probes=False)
    assert info.value.resolution.table() in str(info.value)


def test_a_forced_non_sdpa_backend_leaves_no_sdpa_backend(monkeypatch):
    monkeypatch.setenv("ATTNCAP_BACKEND", "flash-attn-4")
    assert at.sdpa_backends_for(AttentionQuery(arch="sm90", head_dim_qk=64), SDPA_ENV, probes=False) == []


# --- torch.compile -------------------------------------------------------------------------------

FIELDS = dict(arch="sm90", head_dim_qk=128, dtype=torch.bfloat16, training=True, mask="causal")


def branchy(x):
    backend = at.resolve_for(**FIELDS)
    if backend == "torch-sdpa-math":
        return x + 1
    if backend is None:
        return x * 0
    return x - 1


def test_resolve_for_matches_resolve():
    assert at.resolve_for(**FIELDS) == attncap.resolve(AttentionQuery(**FIELDS)).selected


def test_resolve_for_compiles_without_graph_breaks():
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(branchy)(torch.zeros(3))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(branchy, backend="eager", fullgraph=True)  # fullgraph: a break would raise
    torch.testing.assert_close(compiled(torch.zeros(3)), branchy(torch.zeros(3)))


@pytest.mark.parametrize("variable", ["ATTNCAP_DISABLE", "ATTNCAP_BACKEND"])
def test_compiled_resolution_follows_environment_changes(monkeypatch, variable):
    torch._dynamo.reset()
    x = torch.zeros(3)
    compiled = torch.compile(branchy, backend="eager", fullgraph=True)
    first = at.resolve_for(**FIELDS)
    assert first not in (None, "torch-sdpa-math")
    torch.testing.assert_close(compiled(x), x - 1)
    # Unset -> set: the case os.environ.get alone leaves unguarded in torch 2.13.
    if variable == "ATTNCAP_DISABLE":
        monkeypatch.setenv(variable, ",".join(b for b in attncap.default_registry().compiled
                                              if b != "torch-sdpa-math"))
    else:
        monkeypatch.setenv(variable, "torch-sdpa-math")
    assert at.resolve_for(**FIELDS) == "torch-sdpa-math"
    torch.testing.assert_close(compiled(x), x + 1)
    if variable == "ATTNCAP_DISABLE":  # set -> another value
        monkeypatch.setenv(variable, ",".join(attncap.default_registry().compiled))
        torch.testing.assert_close(compiled(x), x * 0)
    monkeypatch.delenv(variable)  # set -> unset
    torch.testing.assert_close(compiled(x), x - 1)


def test_environ_reader_matches_os_environ(monkeypatch):
    monkeypatch.setenv("ATTNCAP_DISABLE", "flash-attn-4, flash-attn-3")
    assert at._environ("ATTNCAP_DISABLE") == "flash-attn-4, flash-attn-3"
    assert at._environ("ATTNCAP_BACKEND") is None

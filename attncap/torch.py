"""PyTorch integration: queries from tensors, SDPA backend contexts, torch.compile-safe resolution.

The only attncap module that imports torch; `import attncap` never imports this one.

Layouts. attncap's `layout` field is about how sequences are packed: `bshd` (dense batch),
`sbhd` (sequence-major dense batch) or `thd` (varlen, packed tokens). The tensor layout names
accepted here say which tensor dimension is which:

    tensor layout   q shape                       attncap layout
    "bhsd"          (batch, heads, seq, dim)      "bshd"  PyTorch SDPA's convention (default)
    "bshd"          (batch, seq, heads, dim)      "bshd"  FlashAttention's convention
    "sbhd"          (seq, batch, heads, dim)      "sbhd"
    "thd"           (total_tokens, heads, dim)    "thd"   pass seqlen_q/seqlen_kv (max lengths) if known

"bhsd" is a transposed view of the same dense batch as "bshd", so it is evaluated as "bshd":
SDPA's kernels take (batch, heads, seq, dim), and a FlashAttention call on SDPA-shaped tensors
is one `.transpose(1, 2)` away.
"""

from __future__ import annotations

import functools
import inspect
import os

import torch

from .environment import Environment
from .query import AttentionQuery
from .resolver import _ENVIRON, ENV_DISABLE, ENV_FORCE, ENV_PROBES, BackendUnavailableError, Resolution, resolve

__all__ = ["NoSDPABackendError", "TENSOR_LAYOUTS", "query_from_tensors", "resolve_for", "sdpa_backends_for",
           "sdpa_kernel_for"]

# tensor layout -> (attncap layout, dimension index of heads, of sequence); None: no sequence dim
TENSOR_LAYOUTS = {"bhsd": ("bshd", 1, 2), "bshd": ("bshd", 2, 1), "sbhd": ("sbhd", 2, 0), "thd": ("thd", 1, None)}

SDPA_BACKENDS = {  # attncap backend id -> torch.nn.attention.SDPBackend member name
    "torch-sdpa-flash": "FLASH_ATTENTION",
    "torch-sdpa-efficient": "EFFICIENT_ATTENTION",
    "torch-sdpa-cudnn": "CUDNN_ATTENTION",
    "torch-sdpa-math": "MATH",
}


def query_from_tensors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                       attn_mask: torch.Tensor | None = None, mask: str | None = None, dropout_p: float = 0.0,
                       window: tuple[int, int] | None = None, softcap: float = 0.0, layout: str = "bhsd",
                       arch=None, training: bool | None = None, deterministic: bool | None = None,
                       **fields) -> AttentionQuery:
    """The AttentionQuery for attention over q, k, v.

    arch: from the tensors' CUDA device (torch.cuda.get_device_capability); CPU and meta tensors
    need `arch=` (a what-if question), else ValueError. An explicit `arch` always wins.
    training: by default, grad mode is on and any of q, k, v requires grad.
    deterministic: by default, torch.are_deterministic_algorithms_enabled().
    causal=True is PyTorch's top-left aligned mask ("causal"); for FlashAttention's bottom-right
    alignment pass mask="causal_bottom_right". A tensor attn_mask means mask="arbitrary".
    Other AttentionQuery fields (bias, page_size, sinks, pad_between_seqs, seqlen_q, ...) pass through.
    """
    if layout not in TENSOR_LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {', '.join(TENSOR_LAYOUTS)} (see attncap.torch)")
    attncap_layout, heads_dim, seq_dim = TENSOR_LAYOUTS[layout]
    ndim = 3 if layout == "thd" else 4
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != ndim:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; layout {layout!r} needs {ndim} dimensions")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} != {k.shape[-1]}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k and v shapes differ before the head dim: {tuple(k.shape)} vs {tuple(v.shape)}")
    batch_dims = [i for i in range(ndim - 1) if i not in (heads_dim, seq_dim)]
    if any(q.shape[i] != k.shape[i] for i in batch_dims):
        raise ValueError(f"q and k batch sizes differ: {tuple(q.shape)} vs {tuple(k.shape)} (layout {layout!r})")
    if attn_mask is not None and (causal or mask):
        raise ValueError("give either attn_mask or causal/mask, not both")
    if mask is None:
        mask = "arbitrary" if attn_mask is not None else "causal" if causal else "none"
    if training is None:
        training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    if seq_dim is not None:
        fields.setdefault("seqlen_q", q.shape[seq_dim])
        fields.setdefault("seqlen_kv", k.shape[seq_dim])
    packing = _packing(q, k, v)
    if packing is not None:
        fields.setdefault("packing", packing)
    return AttentionQuery(
        arch=arch if arch is not None else _device_arch(q), dtype=q.dtype, head_dim_qk=q.shape[-1],
        head_dim_v=v.shape[-1], num_heads_q=q.shape[heads_dim], num_heads_kv=k.shape[heads_dim],
        training=training, mask=mask, window=window, dropout=dropout_p, softcap=softcap, layout=attncap_layout,
        deterministic=deterministic, **fields)


def _packing(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """"qkv" / "kv" when the tensors are views of one packed buffer (TE's bs3hd / bshd_bs2hd layouts), else None
    (separate tensors leave the field unasked, as a hand-written query does)."""
    try:
        storage = [t.untyped_storage().data_ptr() for t in (q, k, v)]
    except (RuntimeError, NotImplementedError):  # meta tensors, fakes under torch.compile
        return None
    if storage[1] != storage[2] or storage[1] == 0 or k.data_ptr() == v.data_ptr():  # the same tensor twice: no
        return None
    return "qkv" if storage[0] == storage[1] and q.data_ptr() != k.data_ptr() else "kv"


def _device_arch(t: torch.Tensor) -> str:
    if t.device.type != "cuda":
        raise ValueError(f"cannot tell the GPU arch of a {t.device.type} tensor: pass arch=..., e.g. arch='sm90' "
                         "(CPU and meta tensors ask a what-if question)")
    major, minor = torch.cuda.get_device_capability(t.device)
    return f"{major}.{minor}"


class NoSDPABackendError(RuntimeError):
    """attncap finds no PyTorch SDPA backend that can run the query; the message has every reason."""

    def __init__(self, resolution: Resolution):
        self.resolution = resolution
        super().__init__(f"no torch SDPA backend can run {resolution.query!r} on {resolution.arch}:\n"
                         f"{resolution.table()}")


def sdpa_backends_for(query: AttentionQuery, env: Environment | None = None, **resolve_kwargs) -> list:
    """The SDPBackend members attncap finds supported for `query`, in policy order (may be empty)."""
    return _sdpa_backends(query, env, **resolve_kwargs)[0]


def _sdpa_backends(query, env, **resolve_kwargs) -> tuple[list, Resolution]:
    from torch.nn.attention import SDPBackend
    try:
        resolution = resolve(query, env, **resolve_kwargs)
    except BackendUnavailableError as exc:  # a forced backend that can't run: nothing is supported
        resolution = exc.resolution
    return [getattr(SDPBackend, SDPA_BACKENDS[d.backend]) for d in resolution.decisions
            if d.supported and d.backend in SDPA_BACKENDS], resolution


def sdpa_kernel_for(query: AttentionQuery, env: Environment | None = None, **resolve_kwargs):
    """A `torch.nn.attention.sdpa_kernel` context allowing only the SDPA backends attncap supports.

    Ordered as attncap's policy (Resolution.decisions) with set_priority=True where this torch
    has it (2.6+); older torch gets the same set without an order. Raises NoSDPABackendError
    (with the reasons table) when no SDPA backend can run the query.

        with attncap.torch.sdpa_kernel_for(query_from_tensors(q, k, v, causal=True)):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    """
    from torch.nn.attention import sdpa_kernel
    backends, resolution = _sdpa_backends(query, env, **resolve_kwargs)
    if not backends:
        raise NoSDPABackendError(resolution)
    if _has_set_priority():
        return sdpa_kernel(backends, set_priority=True)
    return sdpa_kernel(backends)


@functools.lru_cache(maxsize=1)
def _has_set_priority() -> bool:
    from torch.nn.attention import sdpa_kernel
    try:
        return "set_priority" in inspect.signature(sdpa_kernel).parameters
    except (TypeError, ValueError):
        return False


# --- torch.compile ---------------------------------------------------------------------------

def resolve_for(**fields) -> str | None:
    """The backend attncap selects for AttentionQuery(**fields) in the detected environment, or None.

    Safe inside torch.compile with Python-constant arguments: no graph breaks. The resolution
    itself runs eagerly once per compilation (torch.compiler.assume_constant_result) and its
    result is a constant in the graph; the ATTNCAP_BACKEND / ATTNCAP_DISABLE / ATTNCAP_PROBES
    variables are read here, in traced code, so dynamo guards on them and recompiles when one
    changes (TransformerEngine reads NVTE_* with os.environ.get for the same reason).
    """
    return _resolve_constant(_environ(ENV_FORCE), _environ(ENV_DISABLE), _environ(ENV_PROBES), **fields)


def _environ(name: str) -> str | None:
    """os.environ.get(name), spelled so that dynamo guards on the variable being unset too.

    With torch 2.13 dynamo guards a variable that is set on its value, but a missing one
    through os.environ.get (a KeyError inside os._Environ.__getitem__) gets no guard: a
    variable set after compilation went unnoticed. dict.get on os.environ's backing dict is
    guarded both ways. Falls back to os.environ.get where that dict does not exist.
    """
    key = _ENCODED.get(name)
    if key is None:
        return os.environ.get(name)
    value = _DATA.get(key)
    return None if value is None else os.environ.decodevalue(value)


_DATA = _ENVIRON  # os.environ's backing dict (resolve() reads the same), changed in place by os.environ[...] = ...
_ENCODED = {name: os.environ.encodekey(name) for name in (ENV_FORCE, ENV_DISABLE, ENV_PROBES)} \
    if isinstance(_DATA, dict) else {}


@torch.compiler.assume_constant_result
def _resolve_constant(force: str | None, disable: str | None, probes: str | None, **fields) -> str | None:
    # Runs eagerly (also under torch.compile), so logging and caches inside resolve() are fine.
    # AttentionQuery(**fields): validated once (attncap.memo). `probes` (ATTNCAP_PROBES) is an argument
    # for dynamo to guard on; resolve() reads and applies the variable itself.
    resolution = resolve(AttentionQuery(**fields), force=force or None, disable=disable or "")
    return resolution.selected

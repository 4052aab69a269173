"""attncap: which attention kernel can run this configuration on this GPU, and if not, why not.

    >>> import attncap
    >>> q = attncap.AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=256, training=True)
    >>> env = attncap.Environment(arch="sm100", versions={"flash-attn-4": "4.0.0b11"})
    >>> attncap.resolve(q, env).selected
    'flash-attn-4'

Importing attncap never imports torch. Names are imported on first use (PEP 562), so that
`import attncap` (and the pytest plugin) stay cheap until something is resolved.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AttentionQuery": "query", "InvalidQueryError": "query",
    "Environment": "environment",
    "LoadError": "loader", "load_registry": "loader",
    "BackendUnavailableError": "resolver", "Decision": "resolver", "NoBackendError": "resolver",
    "Resolution": "resolver", "clear_cache": "resolver", "default_registry": "loader", "resolve": "resolver",
    "Reason": "rules",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attncap' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)

"""attncap: which attention kernel can run this configuration on this GPU, and if not, why not.

    >>> import attncap
    >>> q = attncap.AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=256, training=True)
    >>> attncap.resolve(q, attncap.Environment(arch="sm100", versions={"flash-attn-4": "4.0.0b11"})).selected

Importing attncap never imports torch.
"""

from .environment import Environment
from .loader import LoadError, load_registry
from .query import AttentionQuery, InvalidQueryError
from .resolver import (BackendUnavailableError, Decision, NoBackendError, Resolution, clear_cache,
                       default_registry, resolve)
from .rules import Reason

__all__ = [
    "AttentionQuery", "BackendUnavailableError", "Decision", "Environment", "InvalidQueryError", "LoadError",
    "NoBackendError", "Reason", "Resolution", "clear_cache", "default_registry", "load_registry", "resolve",
]
__version__ = "0.1.0"

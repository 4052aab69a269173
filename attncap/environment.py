"""Environment: the arch and the installed versions that rules are evaluated against.

Versions come from distribution metadata (importlib.metadata), never from modules: FA2, FA3
and FA4 all install into the `flash_attn` namespace. Every field can be given by hand to ask
what-if questions from a CPU machine.
"""

from __future__ import annotations

import os
import sys
import threading
from types import MappingProxyType
from typing import Mapping

CUDNN = "cudnn"  # the version key of the cuDNN runtime
CUDNN_DISTRIBUTIONS = ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12")
ALWAYS_DETECTED = ("torch", "flash-attn", "flash-attn-3", "flash-attn-4", "transformer-engine")


class Environment:
    """Arch plus versions keyed by package (distribution name, or `cudnn`). Immutable, hashable."""

    __slots__ = ("arch", "versions", "_key", "_hash")

    def __init__(self, arch=None, versions: Mapping[str, str] | None = None, cudnn: str | None = None):
        merged = {_normalise(k): str(v) for k, v in (versions or {}).items() if v is not None}
        if cudnn is not None:
            merged[CUDNN] = str(cudnn)
        object.__setattr__(self, "arch", None if arch is None else _arch_name(arch))
        object.__setattr__(self, "versions", MappingProxyType(dict(sorted(merged.items()))))
        object.__setattr__(self, "_key", (self.arch, tuple(self.versions.items())))
        object.__setattr__(self, "_hash", hash(self._key))

    def __setattr__(self, name, value):
        raise AttributeError("Environment is immutable; use .replace(...)")

    @property
    def cudnn(self) -> str | None:
        return self.versions.get(CUDNN)

    def version(self, package: str) -> str | None:
        return self.versions.get(package)

    def replace(self, arch=None, versions: Mapping[str, str | None] | None = None, cudnn: str | None = None):
        """A copy with some fields changed; a version of None removes that package."""
        merged = dict(self.versions)
        for key, value in (versions or {}).items():
            merged.pop(_normalise(key), None)
            if value is not None:
                merged[_normalise(key)] = value
        return Environment(arch or self.arch, merged, cudnn)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, Environment) and self._key == other._key)

    def __repr__(self) -> str:
        return f"Environment(arch={self.arch!r}, versions={dict(self.versions)!r})"

    @staticmethod
    def detect(*, device: bool = False) -> Environment:
        """The installed versions and, when torch is imported (or device=True), the GPU's arch.

        Cached until forget_detected() (resolver.clear_cache() calls it); torch is never imported
        unless `device=True`.
        """
        with_torch = device or "torch" in sys.modules
        env = _detected.get(with_torch)
        if env is None:
            generation = _detected_generation
            env = _detect(with_torch)
            with _detected_lock:
                if generation == _detected_generation:  # not computed from data forgotten meanwhile
                    _detected[with_torch] = env
        return env


_detected: dict[bool, Environment] = {}
_detected_lock = threading.Lock()
_detected_generation = 0  # bumped by forget_detected(): a detection begun before it is not stored


def _reset_detected_lock() -> None:
    global _detected_lock
    _detected_lock = threading.Lock()  # a fork() child: another thread of the parent may have held it


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_reset_detected_lock)


def forget_detected() -> None:
    """The next Environment.detect() looks again (e.g. after ATTNCAP_PATH added a backend's package)."""
    global _detected_generation
    with _detected_lock:
        _detected_generation += 1
        _detected.clear()


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def _arch_name(value) -> str:
    from .loader import default_registry
    from .query import _arch
    return _arch(default_registry().vocabulary, value)


def _detect(with_torch: bool) -> Environment:
    from .loader import default_registry
    backends = default_registry().backends.values()
    packages = {p for b in backends for p in (b.package, *b.requires)} | set(ALWAYS_DETECTED)
    versions = {p: _distribution_version(p) for p in packages - {CUDNN}}
    versions[CUDNN] = next(filter(None, map(_distribution_version, CUDNN_DISTRIBUTIONS)), None)
    arch = None
    if with_torch:
        cc, cudnn = _torch_device()
        arch = cc if cc and default_registry().vocabulary.arch_name(cc) else None  # unknown GPUs: no arch
        versions[CUDNN] = cudnn or versions[CUDNN]
    return Environment(arch, versions)


def _distribution_version(name: str) -> str | None:
    import importlib.metadata  # 20 ms: only when detecting
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    except Exception as exc:  # unreadable metadata (a bad byte, a broken dist-info): that one only counts as absent
        import logging
        logging.getLogger("attncap").warning("attncap: cannot read the metadata of %s: %s: %s", name,
                                             type(exc).__name__, exc)
        return None


def _torch_device() -> tuple[str | None, str | None]:
    """(arch, cuDNN version) from torch; (None, None) without CUDA."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None, None
        major, minor = torch.cuda.get_device_capability()
        raw = torch.backends.cudnn.version()
    except Exception:  # a broken CUDA install must not break resolution
        return None, None
    cudnn = None if not raw else f"{raw // 10000}.{raw // 100 % 100}.{raw % 100}" if raw >= 90000 else \
        f"{raw // 1000}.{raw // 100 % 10}.{raw % 100}"
    return f"{major}.{minor}", cudnn

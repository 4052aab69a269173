"""Environment: the arch and the installed versions that rules are evaluated against.

Versions come from distribution metadata (importlib.metadata), never from modules: FA2, FA3
and FA4 all install into the `flash_attn` namespace. Every field can be given by hand to ask
what-if questions from a CPU machine.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

CUDNN = "cudnn"  # the version key of the cuDNN runtime
CUDNN_DISTRIBUTIONS = ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12")
ALWAYS_DETECTED = ("torch", "flash-attn", "flash-attn-3", "flash-attn-4", "transformer-engine")


class Environment:
    """Arch plus versions keyed by package (distribution name, or `cudnn`). Immutable, hashable."""

    __slots__ = ("arch", "versions", "_key", "_hash")

    def __init__(self, arch=None, versions: Mapping[str, str] | None = None, cudnn: str | None = None):
        """Versions given here must parse (InvalidVersionError names the value); cuDNN is kept as its runtime
        version (`9.24.1.1` -> `9.24.1`); a misspelt package name (close to a known one) is an error."""
        merged = _checked(versions, cudnn)
        self._set(None if arch is None else _arch_name(arch), merged)

    def _set(self, arch, merged: dict) -> None:
        object.__setattr__(self, "arch", arch)
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
        new = _checked({k: v for k, v in (versions or {}).items() if v is not None}, cudnn)
        for key in (versions or {}):
            merged.pop(_normalise(key), None)
        merged.update(new)  # only the new values are checked: a detected version is kept as found
        return _unchecked(_arch_name(arch) if arch else self.arch, merged)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, Environment) and self._key == other._key)

    def __repr__(self) -> str:
        return f"Environment(arch={self.arch!r}, versions={dict(self.versions)!r})"

    @staticmethod
    def detect(*, device: bool = False) -> Environment:
        """The installed versions and, when torch is imported (or device=True), the GPU's arch.

        Cached; torch is never imported unless `device=True`.
        """
        return _detect(device or "torch" in sys.modules)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def _checked(versions: Mapping[str, str] | None, cudnn) -> dict[str, str]:
    """Hand-given versions, validated (see attncap.versions); None values dropped."""
    from .versions import check_name, checked_version
    merged = {}
    for key, value in (versions or {}).items():
        if value is None:
            continue
        name = _normalise(str(key))
        if name not in ALWAYS_DETECTED and name != CUDNN:  # the common names need no registry
            check_name(name, known_packages(), strict=False)
        merged[name] = checked_version(name, value)
    if cudnn is not None:
        merged[CUDNN] = checked_version(CUDNN, cudnn)
    return merged


def _unchecked(arch, versions: dict) -> Environment:
    env = Environment.__new__(Environment)
    env._set(arch, versions)
    return env


def known_packages() -> set[str]:
    """The version keys attncap knows: every backend's package and requirements, torch, TE, cudnn."""
    from .loader import default_registry
    backends = default_registry().backends.values()
    return {p for b in backends for p in (b.package, *b.requires)} | set(ALWAYS_DETECTED) | {CUDNN}


def _arch_name(value) -> str:
    from .loader import default_registry
    from .query import _arch
    return _arch(default_registry().vocabulary, value)


@lru_cache(maxsize=2)
def _detect(with_torch: bool) -> Environment:
    from .loader import default_registry
    backends = default_registry().backends.values()
    packages = {p for b in backends for p in (b.package, *b.requires)} | set(ALWAYS_DETECTED)
    versions = {p: _distribution_version(p) for p in packages - {CUDNN}}
    wheel = next(filter(None, map(_distribution_version, CUDNN_DISTRIBUTIONS)), None)
    versions[CUDNN] = wheel and _runtime_cudnn(wheel)  # the wheel's 9.24.1.1 is the runtime 9.24.1
    arch = None
    if with_torch:
        cc, cudnn = _torch_device()
        arch = cc if cc and default_registry().vocabulary.arch_name(cc) else None  # unknown GPUs: no arch
        versions[CUDNN] = cudnn or versions[CUDNN]
    found = {k: v for k, v in versions.items() if v is not None}
    return _unchecked(None if arch is None else _arch_name(arch), found)


def _runtime_cudnn(wheel: str) -> str:
    from .versions import CUDNN as KEY, matched_as
    return matched_as(KEY, wheel).version or wheel


def _distribution_version(name: str) -> str | None:
    import importlib.metadata  # 20 ms: only when detecting
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
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

"""Environment: the arch and the installed versions that rules are evaluated against.

Versions come from distribution metadata (importlib.metadata), never from modules: FA2, FA3
and FA4 all install into the `flash_attn` namespace. Every field can be given by hand to ask
what-if questions from a CPU machine.

One rule, in Python, the CLI and the pytest plugin: `Environment(...)` holds exactly what it is
given (a pure what-if: any other package counts as not installed); `Environment.detect().replace(...)`
changes some packages of the installed environment. The CLI's `--version`/`--cudnn` and pytest's
`--attncap-env` are the latter; `--no-detect` (CLI, pytest) makes them the former.
"""

from __future__ import annotations

import re
import sys
import threading
from types import MappingProxyType
from typing import Mapping

from .forking import renew_after_fork
from .query import InvalidQueryError

CUDNN = "cudnn"  # the version key of the cuDNN runtime
CUDNN_DISTRIBUTIONS = ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12")
ALWAYS_DETECTED = ("torch", "flash-attn", "flash-attn-3", "flash-attn-4", "transformer-engine")


class Environment:
    """Arch plus versions keyed by package (distribution name, or `cudnn`). Immutable, hashable."""

    __slots__ = ("arch", "versions", "unknown_gpu", "_key", "_hash")

    def __init__(self, arch=None, versions: Mapping[str, str] | None = None, cudnn: str | None = None, *,
                 unknown_gpu: str | None = None):
        """Versions given here must parse (InvalidVersionError names the value); cuDNN is kept as its runtime
        version (`9.24.1.1` -> `9.24.1`); a misspelt package name (close to a known one) is an error.
        unknown_gpu: the compute capability ("13.0") of a detected GPU the vocabulary does not name."""
        merged = _checked(versions, cudnn)
        self._set(None if arch is None else _arch_name(arch), merged, unknown_gpu)

    def _set(self, arch, merged: dict, unknown_gpu: str | None = None) -> None:
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "versions", MappingProxyType(dict(sorted(merged.items()))))
        object.__setattr__(self, "unknown_gpu", None if self.arch is not None else unknown_gpu)
        object.__setattr__(self, "_key", (self.arch, tuple(self.versions.items()), self.unknown_gpu))
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
        return _unchecked(_arch_name(arch) if arch else self.arch, merged, self.unknown_gpu)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, Environment) and self._key == other._key)

    def __repr__(self) -> str:
        gpu = f", unknown_gpu={self.unknown_gpu!r}" if self.unknown_gpu else ""
        return f"Environment(arch={self.arch!r}, versions={dict(self.versions)!r}{gpu})"

    def describe(self) -> str:
        """'flash-attn-4 4.0.0b11, torch 2.13.0, cuDNN 9.10.2', or 'no packages'."""
        items = [f"{'cuDNN' if k == CUDNN else k} {v}" for k, v in self.versions.items()]
        return ", ".join(items) or "no packages"

    def no_arch_message(self) -> str:
        """Why this environment has no arch: no GPU, or a GPU the data does not know."""
        if self.unknown_gpu:
            return unknown_gpu_message(self.unknown_gpu)
        return "no GPU detected"

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
renew_after_fork(globals(), "_detected_lock")


def forget_detected() -> None:
    """The next Environment.detect() looks again (e.g. after ATTNCAP_PATH added a backend's package)."""
    global _detected_generation, _dist_index
    with _detected_lock:
        _detected_generation += 1
        _detected.clear()
        _versions.clear()
        _dist_index = None


def pure_what_if_note(env: Environment, packages) -> str | None:
    """A hint when `env` lacks packages that are installed here: Environment(...) is a pure what-if."""
    installed = Environment.detect()
    lacking = sorted({p for p in packages if env.version(p) is None and installed.version(p) is not None})
    if not lacking or env == installed:
        return None
    return (f"note: {', '.join(lacking)} {'is' if len(lacking) == 1 else 'are'} installed here but not in this "
            "Environment: Environment(...) holds only what it is given; Environment.detect().replace(versions=...) "
            "changes some packages of the installed environment (as the CLI's --version does)")


def unknown_gpu_message(cc: str) -> str:
    return (f"GPU with compute capability {cc} is not in the data; add it (docs/adding-hardware.md), "
            "or name an arch")


class UnknownGPUError(InvalidQueryError):
    """The query needs the environment's arch, and its GPU is not in the vocabulary."""

    def __init__(self, cc: str):
        self.field, self.value, self.allowed = "arch", None, "an arch the data names"
        ValueError.__init__(self, unknown_gpu_message(cc))


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


def _unchecked(arch, versions: dict, unknown_gpu: str | None = None) -> Environment:
    env = Environment.__new__(Environment)
    env._set(arch, versions, unknown_gpu)
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


def _detect(with_torch: bool) -> Environment:
    from .loader import default_registry
    backends = default_registry().backends.values()
    packages = {p for b in backends for p in (b.package, *b.requires)} | set(ALWAYS_DETECTED)
    versions = {p: _distribution_version(p) for p in packages - {CUDNN}}
    wheel = next(filter(None, map(_distribution_version, CUDNN_DISTRIBUTIONS)), None)
    versions[CUDNN] = wheel and _runtime_cudnn(wheel)  # the wheel's 9.24.1.1 is the runtime 9.24.1
    arch = unknown = None
    if with_torch:
        cc, cudnn = _torch_device()
        known = cc and default_registry().vocabulary.arch_name(cc)
        arch, unknown = (cc, None) if known else (None, cc)  # an unknown GPU: no arch, but say which
        versions[CUDNN] = cudnn or versions[CUDNN]
    found = {k: v for k, v in versions.items() if v is not None}
    return _unchecked(None if arch is None else _arch_name(arch), found, unknown)


def _runtime_cudnn(wheel: str) -> str:
    from .versions import CUDNN as KEY, matched_as
    return matched_as(KEY, wheel).version or wheel


_versions: dict[str, str | None] = {}  # distribution -> installed version: detection and the probes read it once


def _distribution_version(name: str) -> str | None:
    """The installed version of a distribution, None when absent; read once per process (forget_detected())."""
    try:
        return _versions[name]
    except KeyError:
        version = _quick_version(name)
        version = _versions[name] = _read_version(name) if version is _UNSURE else version
        return version


# importlib.metadata costs ~40 ms to import (email, zipfile, ...) and parses a whole METADATA file per
# lookup; `attncap resolve` asks for ~7 distributions. The common layout (dist-info/egg-info directories
# on sys.path, found as importlib.metadata's path finder finds them: the first one on sys.path, names
# PEP 503-normalised) is read here directly: only the header's `Version:`. Anything else (a zip or .egg
# on sys.path, another distribution finder, unreadable or undecodable metadata) is importlib.metadata's.
_UNSURE = object()
_dist_index: dict | None = None


def _normalised_dist(name: str) -> str:
    return _SEPARATORS.sub("_", name).lower()


_SEPARATORS = re.compile(r"[-_.]+")  # PEP 503 name normalisation (as dist-info directory names spell it)


def _quick_version(name: str):
    """The version from the first `<name>-*.dist-info`/`.egg-info` on sys.path (None: there is none), or _UNSURE."""
    global _dist_index
    if any(hasattr(f, "find_distributions") and getattr(f, "__name__", "") != "PathFinder" for f in sys.meta_path):
        return _UNSURE
    index = _dist_index
    if index is None:
        index = _dist_index = _index_distributions()
    if index is _UNSURE:
        return _UNSURE
    path = index.get(_normalised_dist(name))
    return None if path is None else _header_version(path)


def _index_distributions():
    import os
    found: dict[str, str] = {}
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:
            if os.path.exists(root):
                return _UNSURE  # a zip file, an unreadable directory
            continue
        if os.path.basename(root).lower().endswith(".egg"):
            return _UNSURE
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                found.setdefault(_normalised_dist(low.rpartition(".")[0].partition("-")[0]), os.path.join(root, child))
    return found


def _header_version(path: str):
    import os
    files = (os.path.join(path, "METADATA"), os.path.join(path, "PKG-INFO")) if os.path.isdir(path) else (path,)
    for file in files:
        try:
            with open(file, "rb") as f:
                head = f.read(1 << 16)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            continue
        except OSError:
            return _UNSURE
        try:
            text = head.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8")
        except UnicodeDecodeError:
            return _UNSURE  # importlib.metadata reports it (a warning, and the distribution counts as absent)
        for line in text.split("\n"):
            if line[:1].isspace():
                continue  # a folded header's continuation
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == "version":
                return value.strip() or _UNSURE
        return _UNSURE
    return _UNSURE


def _read_version(name: str) -> str | None:
    import importlib.metadata  # 40 ms: only where the quick reading is unsure
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

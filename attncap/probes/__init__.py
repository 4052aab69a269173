"""Live probes: ask the installed kernel library itself.

A probe answers supported / unsupported / no opinion (None) with a message. It speaks only
for the installed version of its package and only inside its declared arch domain. Built-in
probes live here; third parties register more through the `attncap.probes` entry-point group
(the entry point names a Probe subclass or instance). A probe that fails in any way gives no
opinion and says why; it never breaks resolution.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ..forking import renew_after_fork

log = logging.getLogger("attncap")
ENTRY_POINT_GROUP = "attncap.probes"
CACHE_SIZE = 4096  # verdicts a probe keeps, like the resolution cache: memory stays bounded


def remember(cache: dict, key, value, limit: int = CACHE_SIZE):
    """Store `value` under `key`, dropping the oldest entry when the cache is full; return value."""
    if len(cache) >= limit:
        try:
            cache.pop(next(iter(cache)), None)
        except (StopIteration, RuntimeError):  # emptied or resized by another thread meanwhile
            pass
    cache[key] = value
    return value


@dataclass(frozen=True)
class ProbeVerdict:
    probe: str
    supported: bool | None  # None = no opinion
    message: str
    provisional: bool = False  # may change soon (e.g. the library is still importing): not cached

    def describe(self) -> str:
        word = {True: "supported", False: "unsupported", None: "no opinion"}[self.supported]
        return f"{word} ({self.message})" if self.message else word

    def as_dict(self) -> dict:
        return {"probe": self.probe, "supported": self.supported, "message": self.message}


class Probe:
    """Base class. Subclasses set `name`, `package`, `judges` and implement `check`."""

    name: str = ""
    package: str = ""  # distribution whose installed version the probe speaks for
    judges: frozenset[str] = frozenset()  # rule fields the probe's verdict replaces

    def check(self, query, ctx) -> ProbeVerdict:
        """Judge `query` on `ctx` (arch, cc, elem_bytes, version); raise nothing you can avoid."""
        raise NotImplementedError

    def installed_version(self) -> str | None:
        from ..environment import (
            _distribution_version,  # unreadable metadata counts as absent, with a warning
        )
        return _distribution_version(self.package)

    def status(self) -> str:
        """Whether the probe can answer here, in words (for `attncap info`); may import its library."""
        version = self.installed_version()
        return f"{self.package} {version} installed" if version else f"{self.package} not installed: no opinion"

    def verdict(self, supported: bool | None, message: str, *, provisional: bool = False) -> ProbeVerdict:
        return ProbeVerdict(self.name, supported, message, provisional)


_probes: dict[str, Probe] = {}
_lock = threading.Lock()
renew_after_fork(globals(), "_lock")


def register(probe: Probe) -> None:
    with _lock:
        _probes[probe.name] = probe


def get(name: str) -> Probe | None:
    if name not in _probes:
        _load_builtin_and_entry_points()
    return _probes.get(name)


def names() -> list[str]:
    _load_builtin_and_entry_points()
    return sorted(_probes)


def judged_fields(name: str) -> frozenset[str]:
    probe = get(name)
    return probe.judges if probe else frozenset()


_installed: dict[str, str | None] = {}  # probe name -> installed version of its package, looked up once


def clear() -> None:
    """Forget probe results and failures (tests, or after installing a library)."""
    with _lock:
        _installed.clear()
        for probe in _probes.values():
            reset = getattr(probe, "reset", None)
            if reset:
                reset()


def _load_builtin_and_entry_points() -> None:
    from .fa4 import FA4HeadDimProbe
    from .sdpa import SDPAProbe
    with _lock:
        for probe in (FA4HeadDimProbe(), *(SDPAProbe(kernel) for kernel in SDPAProbe.KERNELS)):
            _probes.setdefault(probe.name, probe)
        for ep in _entry_points():
            if ep.name in _probes:
                continue
            try:
                obj = ep.load()
                _probes[ep.name] = obj() if isinstance(obj, type) else obj
            except Exception as exc:  # a broken plugin must not break resolution
                log.warning("attncap: probe entry point %r failed to load: %s", ep.name, exc)


def _entry_points() -> list:
    """The probe entry points of every readable distribution: one with unreadable metadata (a bad byte
    in METADATA) makes importlib's all-at-once scan raise, so then each distribution is read alone."""
    import importlib.metadata
    try:
        return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:
        pass
    found = []
    for dist in importlib.metadata.distributions():
        try:
            found += [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        except Exception as exc:
            log.warning("attncap: skipping a distribution with unreadable metadata (%s): %s: %s",
                        getattr(dist, "_path", "?"), type(exc).__name__, exc)
    return found


def judge(backend, query, ctx, env) -> ProbeVerdict | None:
    """The probe's verdict for a backend that declares one; None when it has nothing to say."""
    decl = backend.probe
    if decl is None:
        return None
    probe = get(decl.name)
    if probe is None:
        return ProbeVerdict(decl.name, None, f"no probe named {decl.name!r} is installed")
    if decl.archs and ctx.arch not in decl.archs:
        return None  # outside the domain the data declares for it: silence, not "yes"
    try:
        if decl.name not in _installed:  # a metadata lookup costs ~0.5 ms: once per process
            _installed[decl.name] = probe.installed_version()
        installed = _installed[decl.name]
        if installed is None:
            return probe.verdict(None, f"it asks the installed {probe.package}, and none is installed here")
        asked = (env.version(probe.package) if env is not None else None) or ctx.version  # as given, not as matched
        if installed != asked:
            return probe.verdict(None, f"it speaks for the installed {probe.package} {installed}, not {asked}")
        verdict = probe.check(query, ctx)
    except (Exception, SystemExit) as exc:  # a probe's sys.exit() must not end the caller
        # KeyboardInterrupt is let through: it cannot be told apart from the user's Ctrl-C.
        return ProbeVerdict(decl.name, None, f"probe failed: {type(exc).__name__}: {exc}")
    if verdict is not None and not isinstance(verdict, ProbeVerdict):
        return ProbeVerdict(decl.name, None, f"probe failed: check() returned {type(verdict).__name__}, "
                                             "not a ProbeVerdict")
    return verdict

"""Live probes: ask the installed kernel library itself.

A probe answers supported / unsupported / no opinion (None) with a message. It speaks only
for the installed version of its package and only inside its declared arch domain. Built-in
probes live here; third parties register more through the `attncap.probes` entry-point group
(the entry point names a Probe subclass or instance). A probe that fails in any way gives no
opinion and says why; it never breaks resolution.

A resolve never imports a probe's library and never waits for one: a probe answers when its
library is already imported (by the caller) or after `warm()`, and otherwise gives no opinion
at once, saying how to enable it. `warm()` (or ATTNCAP_PROBES=warm, which warms on the first
resolve) imports the libraries. When a probe becomes ready, every cached resolution that may
hold its earlier "no opinion" is forgotten (`on_change`). A library the caller imports itself is
noticed when the probe next checks a query (an uncached resolve that asks it), so a cached answer
can outlive that import until then: call `warm()` after importing to have it noticed at once.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from ..environment import _distribution_version
from ..forking import renew_after_fork
from ..settings import WARM, probes_mode

log = logging.getLogger("attncap")
ENTRY_POINT_GROUP = "attncap.probes"
ENV_PROBES = "ATTNCAP_PROBES"
TIMEOUT_ENV = "ATTNCAP_PROBE_TIMEOUT"  # the longest warm() waits by default, in seconds
DEFAULT_TIMEOUT = 60.0
HOW_TO_WARM = "attncap.probes.warm(), ATTNCAP_PROBES=warm or the CLI's --probe"
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
    # Kept for third-party probes: a provisional verdict is not cached by resolve(). The built-in
    # probes never give one; their "not ready" answers are final until the probe becomes ready,
    # which forgets the cached resolutions (probes_changed).
    provisional: bool = False

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
        return _distribution_version(self.package)  # unreadable metadata counts as absent, with a warning

    def status(self) -> str:
        """Whether the probe can answer here, in words (for `attncap info`); imports nothing."""
        version = self.installed_version()
        return f"{self.package} {version} installed" if version else f"{self.package} not installed: no opinion"

    def warm(self, *, block: bool = True, timeout: float | None = None) -> bool | None:
        """Import what check() needs: True = ready, False = it cannot answer here (its verdicts say why),
        None = still importing (block=False, or not done within `timeout` seconds). The default: nothing to import.

        check() must never import or wait; a probe that answered "not ready" and becomes ready calls
        probes_changed(), so that resolutions cached with the earlier answer are forgotten."""
        return True

    def verdict(self, supported: bool | None, message: str, *, provisional: bool = False) -> ProbeVerdict:
        if supported is None and not provisional:  # "no opinion", given on every resolve until warmed: one object
            return _no_opinion(self.name, message)
        return ProbeVerdict(self.name, supported, message, provisional)


@functools.lru_cache(maxsize=256)
def _no_opinion(probe: str, message: str) -> ProbeVerdict:
    return ProbeVerdict(probe, None, message)  # frozen: one object can serve every resolve


@functools.lru_cache(maxsize=256)  # given on every resolve of a what-if version: one string (its hash kept)
def _other_version(package: str, installed: str, asked: str) -> str:
    return f"it speaks for the installed {package} {installed}, not {asked}"


_probes: dict[str, Probe] = {}
_lock = threading.Lock()
renew_after_fork(globals(), "_lock")


def register(probe: Probe) -> None:
    with _lock:
        _probes[probe.name] = probe


def get(name: str) -> Probe | None:
    if name not in _probes and not _builtins_loaded:
        _load_builtin()  # the common case (a built-in probe): no scan of every distribution's entry points
    if name not in _probes and not _entry_points_loaded:
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
    """Forget probe results and failures (but a failed torch import: see warm()); warmed probes are warm again
    on their next check when their library is still imported, else after the next warm(). After installing a
    library, call attncap.clear_cache(): it also forgets the installed versions detected before."""
    global _entry_points_loaded, _warmed_on_use
    with _lock:
        _installed.clear()
        _entry_points_loaded = _warmed_on_use = False
        for probe in _probes.values():
            reset = getattr(probe, "reset", None)
            if reset:
                reset()


_builtins_loaded = False
_entry_points_loaded = False


def _load_builtin() -> None:
    """The built-in probes: no metadata scan (they win over entry points of the same name anyway)."""
    global _builtins_loaded
    from .fa4 import FA4HeadDimProbe
    from .sdpa import SDPAProbe
    with _lock:
        for probe in (FA4HeadDimProbe(), *(SDPAProbe(kernel) for kernel in SDPAProbe.KERNELS)):
            _probes.setdefault(probe.name, probe)
        _builtins_loaded = True


def _load_builtin_and_entry_points() -> None:
    global _entry_points_loaded
    if not _builtins_loaded:
        _load_builtin()
    with _lock:
        _entry_points_loaded = True
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


def imported(module: str):
    """sys.modules[module] when it is imported fully (not while a thread is still executing it), else None."""
    found = sys.modules.get(module)
    if found is None or getattr(getattr(found, "__spec__", None), "_initializing", False):
        return None
    return found


# ---- readiness: warm(), ATTNCAP_PROBES=warm, and forgetting answers given before -------------------

_listeners: list = []


def on_change(callback) -> None:
    """Call `callback()` whenever a probe becomes ready after having answered "not ready" (its library got
    imported): the resolver forgets its cached resolutions then. Callbacks must be quick and must not raise."""
    _listeners.append(callback)


def probes_changed() -> None:
    """A probe's answers changed (it became ready): forget whatever was cached from its earlier answers."""
    for callback in _listeners[:]:  # a copy: a listener may be added meanwhile
        try:
            callback()
        except Exception as exc:  # a listener must not break the probe (nor the import thread)
            log.warning("attncap: a probe change listener failed: %s: %s", type(exc).__name__, exc)


def timeout_setting() -> float:
    """ATTNCAP_PROBE_TIMEOUT (seconds, default 60): the longest warm() and ATTNCAP_PROBES=warm wait."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is invalid: expected a number of seconds") from None


def warm(names=None, *, block: bool = True, timeout: float | None = None) -> dict[str, bool | None]:
    """Import the libraries the probes ask (FA4's interface, torch), so that they answer from now on.

    names: a probe name or names (default: every probe whose package is installed). block=False starts the imports in
    the background and returns at once; block=True waits at most `timeout` seconds (default
    ATTNCAP_PROBE_TIMEOUT, 60) for all of them together. Returns {probe name: True (ready), False (cannot
    answer here; its verdicts say why) or None (still importing)}. An import that finishes later makes the
    probe ready then, and resolutions cached meanwhile are forgotten. Safe to call again: a ready probe
    returns at once, a failed import is not retried (attncap.clear_cache() forgets FA4's failure; a failed
    torch import, which the SDPA probes share, stays for the process).
    """
    if isinstance(names, str):
        names = [names]
    names = None if names is None else list(names)
    chosen = [get(n) for n in names] if names is not None else [_probes[n] for n in _all_names()]
    missing = [n for n, p in zip(names or (), chosen) if p is None]
    if missing:
        raise ValueError(f"no probe named {', '.join(map(repr, missing))}; known: {', '.join(_all_names())}")
    if names is None:
        chosen = [p for p in chosen if _installed_version(p) is not None]
    result: dict[str, bool | None] = {}
    for probe in chosen:  # start every import first, so that they overlap
        result[probe.name] = _warm_one(probe, block=False, timeout=0.0)
    if block:
        deadline = time.monotonic() + (timeout_setting() if timeout is None else timeout)
        for probe in chosen:
            if result[probe.name] is None:
                result[probe.name] = _warm_one(probe, block=True, timeout=max(0.0, deadline - time.monotonic()))
    return result


def _warm_one(probe: Probe, *, block: bool, timeout: float) -> bool | None:
    try:
        state = probe.warm(block=block, timeout=timeout)
    except (Exception, SystemExit) as exc:  # a third-party probe's warm() must not break the caller
        log.warning("attncap: warming probe %r failed: %s: %s", probe.name, type(exc).__name__, exc)
        return False
    return state if state in (True, False, None) else bool(state)


_all_names = names  # for warm(), whose parameter `names` hides names()


def _installed_version(probe: Probe) -> str | None:
    if probe.name not in _installed:
        try:
            _installed[probe.name] = probe.installed_version()
        except (Exception, SystemExit):
            _installed[probe.name] = None
    return _installed[probe.name]


_warmed_on_use = False  # ATTNCAP_PROBES=warm has started warming the probes in this process
_warm_on_use_lock = threading.Lock()
renew_after_fork(globals(), "_warm_on_use_lock")


def enabled(value: str | None) -> bool:
    """Whether ATTNCAP_PROBES (its raw value) leaves the probes on; with `warm`, the first call in a process
    warms them (blocking, at most ATTNCAP_PROBE_TIMEOUT). SettingError on a value it does not understand.

    Concurrent first calls: one starts the imports and waits for them; the others go on once the imports
    have started (their probes say the import is running), as they would on any later call."""
    global _warmed_on_use
    if value is None:
        return True
    mode = probes_mode(value, ENV_PROBES)
    if mode == WARM and not _warmed_on_use:
        first = False
        with _warm_on_use_lock:
            if not _warmed_on_use:
                warm(block=False)  # start every import before anyone may ask
                _warmed_on_use = first = True
        if first:
            warm()  # once: a slow import is waited for once, then finishes in the background
    return mode != "off"


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
        installed = _installed[decl.name]  # (not _installed_version(): a failure here is the probe's verdict)
        if installed is None:
            return probe.verdict(None, f"it asks the installed {probe.package}, and none is installed here")
        asked = (env.version(probe.package) if env is not None else None) or ctx.version  # as given, not as matched
        if installed != asked:
            return probe.verdict(None, _other_version(probe.package, installed, asked))
        verdict = probe.check(query, ctx)
    except (Exception, SystemExit) as exc:  # a probe's sys.exit() must not end the caller
        # KeyboardInterrupt is let through: it cannot be told apart from the user's Ctrl-C.
        return ProbeVerdict(decl.name, None, f"probe failed: {type(exc).__name__}: {exc}")
    if verdict is not None and not isinstance(verdict, ProbeVerdict):
        return ProbeVerdict(decl.name, None, f"probe failed: check() returned {type(verdict).__name__}, "
                                             "not a ProbeVerdict")
    return verdict

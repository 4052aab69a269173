"""resolve(): which backend runs a query here, and a Decision with reasons for every backend.

Per backend, in this order (DESIGN.md, "Evaluation, per backend"):
  disabled? -> installed? -> support rules -> probe (by its mode) -> features -> known issues.
Precedence: known issues > probe > static support. Selection is the first supported backend
in policy order.

The hot path: a plan per (arch, dtype, pass, environment, overrides) holds each backend's View
(views.py) and coverage; a resolve asks the Views in preference order whether they support the
query (a memoised boolean) and stops at the first that does. Decision objects are built when
`Resolution.decisions` is first read, their reasons when `Decision.reasons` is.
tests/reference_resolver.py computes the same decisions the plain way.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from typing import NamedTuple

from . import coverage, namespace
from . import probes as probe_registry
from .changes import smallest_changes, version_change
from .environment import Environment, UnknownGPUError, forget_detected
from .forking import renew_after_fork
from .loader import default_registry, forget_default_registry
from .query import AttentionQuery, InvalidQueryError
from .rules import CompiledBackend, Ctx, Reason, effect_note

log = logging.getLogger("attncap")

ENV_FORCE, ENV_DISABLE, ENV_PROBES, ENV_DEBUG = "ATTNCAP_BACKEND", "ATTNCAP_DISABLE", "ATTNCAP_PROBES", "ATTNCAP_DEBUG"
ENV_UNVERIFIED = coverage.ENV_UNVERIFIED
CACHE_SIZE = 4096
# os.environ's own dict: reading it directly keeps the cached path fast, and still sees
# every change made through os.environ (monkeypatch, os.environ[...] = ...).
_ENVIRON = getattr(os.environ, "_data", None)
_ENV_KEYS = tuple(os.environ.encodekey(k) for k in (ENV_FORCE, ENV_DISABLE, ENV_PROBES, ENV_UNVERIFIED)) \
    if hasattr(os.environ, "encodekey") else ()
_FORCE_KEY, _DISABLE_KEY, _PROBES_KEY, _UNVERIFIED_KEY = _ENV_KEYS if _ENVIRON is not None and len(_ENV_KEYS) == 4 \
    else (None,) * 4

_cache: dict = {}
_cache_lock = threading.Lock()
renew_after_fork(globals(), "_cache_lock")
_generation = 0  # bumped by clear_cache(): a resolution begun before it is not stored after it


def forget_resolutions() -> None:
    """Forget cached resolutions (those the cache holds and each query's last one), keeping the registry,
    plans and detected environment. Registered with probes.on_change: when a probe becomes ready
    (attncap.probes.warm(), or its library got imported), resolutions cached with its earlier "not ready"
    verdict must not outlive that. A resolution begun before this is not stored after it."""
    global _generation
    with _cache_lock:
        _generation += 1
        _cache.clear()


probe_registry.on_change(forget_resolutions)


def clear_cache() -> None:
    """Forget cached resolutions, the loaded registry, the detected environment and probe results."""
    global _generation
    # Forget the sources first, then bump the generation: a resolution that reads the
    # generation after the bump also reads the fresh sources, one that read it before is dropped.
    forget_default_registry()
    forget_detected()
    probe_registry.clear()
    _namespace_conflicts.cache_clear()
    namespace.clear()
    with _cache_lock:
        _generation += 1
        _cache.clear()
        _plans.clear()


class BackendUnavailableError(RuntimeError):
    """A forced backend cannot run the query; the message lists its reasons."""

    def __init__(self, resolution: Resolution, backend: str):
        self.resolution = resolution
        decision = resolution.decision(backend)
        lines = [f"{backend} was forced but cannot run {resolution.query!r}:"]
        lines += [f"  - {r.message}" for r in decision.reasons]
        super().__init__("\n".join(lines))


class UnverifiedWarning(UserWarning):
    """unverified="warn": the selected backend's versions are newer than the ones its facts were checked against."""


class NoBackendError(RuntimeError):
    def __init__(self, resolution: Resolution):
        self.resolution = resolution
        from .environment import pure_what_if_note
        packages = [p for d in resolution.decisions if d.decided_by == "not_installed" and d._ctx is not None
                    for p in (d._ctx.package, *d._ctx.absent)]
        note = pure_what_if_note(resolution.env, packages)
        super().__init__(f"no attention backend can run {resolution.query!r}:\n{resolution.table()}\n"
                         f"environment: {resolution.env.describe()}" + (f"\n{note}" if note else ""))


class Decision:
    """One backend's verdict. `reasons` are built on first access from what the evaluation kept.

    Fully slotted, one object per backend: uncached resolution allocates little for the
    garbage collector to walk.
    """

    __slots__ = ("backend", "supported", "decided_by", "rule", "static", "probe", "_compiled", "_query", "_ctx",
                 "_core", "_missing", "_reasons", "_outcome", "_notes")

    def __init__(self, backend, supported, decided_by, rule=None, static=None, probe=None, reasons=None,
                 compiled=None, query=None, ctx=None, core=False, missing=()):
        self.backend, self.supported, self.decided_by = backend, supported, decided_by
        self.rule, self.static, self.probe, self._reasons = rule, static, probe, reasons
        self._compiled, self._query, self._ctx, self._core, self._missing = compiled, query, ctx, core, missing
        # _outcome and _notes are set by classify() only (unset: a fully checked decision), keeping this cheap

    @property
    def outcome(self) -> str:
        """supported | unverified | unknown | rejected (coverage.py, docs/format.md "Checked spans and outcomes")."""
        return getattr(self, "_outcome", None) or ("supported" if self.supported else "rejected")

    @property
    def reasons(self) -> tuple[Reason, ...]:
        if self._reasons is None:
            self._reasons = getattr(self, "_notes", ()) + tuple(_explain(
                self._compiled, self._query, self._ctx, self.static, self.probe, self._core, self._missing,
                self._ctx.version is not None))
        return self._reasons

    @property
    def install_hint(self) -> str | None:
        return next((r.expected for r in self.reasons if r.code == "install"), None)

    def as_dict(self) -> dict:
        return {"backend": self.backend, "supported": self.supported, "outcome": self.outcome,
                "decided_by": self.decided_by, "rule": self.rule, "static": self.static,
                "probe": None if self.probe is None else self.probe.as_dict(),
                "reasons": [r.as_dict() for r in self.reasons]}

    def __repr__(self) -> str:
        return (f"Decision({self.backend!r}, supported={self.supported}, outcome={self.outcome!r}, "
                f"decided_by={self.decided_by!r})")


class Resolution:
    """Every backend's verdict on one query. `selected` is decided at once; the Decision objects are
    built on first access of `decisions` (a framework that reads only `selected` never pays for them)."""

    __slots__ = ("query", "env", "arch", "selected", "forced", "provisional", "_plan", "_early", "_policy",
                 "_probes", "_decisions")

    def __init__(self, query, env, arch, decisions=None, forced=None, selected=None, plan=None, early=None,
                 policy="allow", probes=False, provisional=False):
        """From built `decisions`, or lazily from a plan and what selection decided of its entries
        (`early`: {entry index: Decision or _Probed})."""
        self.query, self.env, self.arch, self.forced = query, env, arch, forced
        self._plan, self._early, self._policy, self._probes = plan, early, policy, probes
        self._decisions = decisions
        # provisional: a probe's verdict may change soon (its library is still importing): not cached
        self.provisional = provisional
        if decisions is not None:
            selected = next((d.backend for d in decisions if d.supported), None)
        self.selected = selected

    @property
    def decisions(self) -> tuple[Decision, ...]:
        if self._decisions is None:
            early = self._early
            self._decisions = tuple(_decision(entry, self, early.get(i)) for i, entry in enumerate(self._plan.entries))
        return self._decisions

    def decision(self, backend: str) -> Decision:
        for d in self.decisions:
            if d.backend == backend:
                return d
        raise KeyError(f"unknown backend {backend!r}; known: {', '.join(d.backend for d in self.decisions)}")

    @property
    def outcome(self) -> str:
        """The selected backend's outcome (supported or unverified); else unknown when some backend is, else none."""
        if self.selected is not None:
            return self.decision(self.selected).outcome
        return "unknown" if any(d.outcome == "unknown" for d in self.decisions) else "none"

    def require(self) -> str:
        """The selected backend, or NoBackendError listing every backend's reasons."""
        if self.selected is None:
            raise NoBackendError(self)
        return self.selected

    def table(self) -> str:
        from .report import decision_table
        return decision_table(self)

    def as_dict(self) -> dict:
        return {"query": self.query.as_dict(), "arch": self.arch,
                "environment": dict(self.env.versions), "selected": self.selected, "outcome": self.outcome,
                "decisions": [d.as_dict() for d in self.decisions]}


def resolve(query: AttentionQuery, env: Environment | None = None, *, prefer=None, disable=None, force=None,
            probes: bool = True, registry=None, unverified: str | None = None, profile: str | None = None
            ) -> Resolution:
    """Decide every backend for `query`; never raises for a valid query unless a forced backend can't run.

    unverified: "allow" (default; the reasons say so), "warn" (UnverifiedWarning when the selected backend is
    unverified) or "deny" (an unverified backend is not selected); else ATTNCAP_UNVERIFIED.
    profile: a consumer profile of profiles.yaml (e.g. "transformer-engine"): its own windows and order.
    """
    if env is None:
        env = Environment.detect()
    # prefer/disable: None, a comma-separated string or an iterable, materialised once (a one-shot
    # iterator must give the key and the resolution the same items). Inlined: this is the hot path.
    if prefer is not None and type(prefer) is not str:
        prefer = tuple(prefer)
    if disable is not None and type(disable) is not str:
        disable = tuple(disable)
    # The ATTNCAP_* variables, read once: the key and the resolution see the same values. None set is the
    # common case, told by membership tests on os.environ's own dict (this is the cached path's largest cost).
    data = _ENVIRON
    if data is not None and _FORCE_KEY not in data and _DISABLE_KEY not in data and _PROBES_KEY not in data \
            and _UNVERIFIED_KEY not in data:
        overrides = _NO_OVERRIDES
    else:
        overrides = _environment_overrides()
    # A query remembers its last resolution and what it was resolved under: asked again under the same
    # (a framework's every step), that comparison answers without hashing the query and environment.
    generation = _generation
    under = (env, overrides, prefer, disable, force, probes, registry, unverified, profile, generation)
    last = query._last
    if last is not None and last[0] == under:
        resolution = last[1]
    else:
        key = (query, env, overrides, prefer, disable, force, probes, registry)
        if unverified is not None or profile is not None:  # rarely given: keep the common key short
            key += (unverified, profile)
        resolution = _cache.get(key)
        if resolution is None:
            resolution = _resolve_uncached(query, env, prefer, disable, force, probes, registry, overrides,
                                           unverified, profile)
            if resolution.provisional:
                under = None  # its probe may change its mind soon: not kept
            else:
                with _cache_lock:
                    if generation == _generation:
                        if len(_cache) >= CACHE_SIZE:
                            _cache.pop(next(iter(_cache)), None)
                        _cache[key] = resolution
        if under is not None and generation == _generation:
            object.__setattr__(query, "_last", (under, resolution))
    if resolution.forced and not resolution.decision(resolution.forced).supported:
        raise BackendUnavailableError(resolution, resolution.forced)
    return resolution


def _environment_overrides() -> tuple:
    """The ATTNCAP_* variables, read on every call so a change takes effect (part of the cache key)."""
    data = _ENVIRON
    if data is None or len(_ENV_KEYS) != 4:
        return tuple(os.environ.get(k) for k in (ENV_FORCE, ENV_DISABLE, ENV_PROBES, ENV_UNVERIFIED))
    k1, k2, k3, k4 = _ENV_KEYS
    return data.get(k1), data.get(k2), data.get(k3), data.get(k4)


def _resolve_uncached(query, env, prefer, disable, force, probes, registry, overrides, unverified=None,
                      profile=None) -> Resolution:
    if overrides == _NO_OVERRIDES:  # the common case: no ATTNCAP_* variable set
        env_force = env_disable = env_probes = env_unverified = None
    else:
        env_force, env_disable, env_probes, env_unverified = map(_decode, overrides)
    force = force or env_force or None
    if disable is None:
        disable = env_disable
    disable = frozenset(_split(disable)) if disable else _NOTHING
    probes = probes and (env_probes is None or probe_registry.enabled(env_probes))  # `warm`: warms once
    prefer = tuple(_split(prefer)) if prefer else ()
    policy = unverified or env_unverified or "allow"
    if policy not in coverage.POLICIES:
        coverage.policy(policy)  # raises, naming the value
    registry = registry or default_registry()
    if profile is not None:
        coverage.check_profile(registry, profile)
    resolution = _resolve(query, env, prefer, disable, force, probes, registry, policy, profile)
    if policy == "warn" and resolution.outcome == "unverified":
        warnings.warn(UnverifiedWarning(f"{resolution.selected} is unverified here: "
                                        + "; ".join(r.message for r in resolution.decision(resolution.selected)
                                                    .reasons if r.field == "checked")), stacklevel=3)
    if log.isEnabledFor(logging.DEBUG) and os.environ.get(ENV_DEBUG) == "1":  # the table only for a listener
        log.debug("resolved %r -> %s\n%s", query, resolution.selected, resolution.table())
    return resolution


_NO_OVERRIDES = (None, None, None, None)
_NOTHING = frozenset()


def _decode(value) -> str | None:
    """A value from _environment_overrides(): bytes when read from os.environ's own dict."""
    return os.environ.decodevalue(value) if isinstance(value, bytes) else value


def _split(value) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [i.strip() for i in items if i and i.strip()]


_FORCED = (Reason("disabled", "not considered: another backend is forced"),)
_DISABLED = (Reason("disabled", "disabled by the caller (disable= or ATTNCAP_DISABLE)"),)


def arch_of(query: AttentionQuery, env: Environment) -> str:
    """The query's arch, else the environment's; InvalidQueryError when neither says."""
    arch = query.arch or env.arch
    if arch is None and env.unknown_gpu:
        raise UnknownGPUError(env.unknown_gpu)
    if arch is None:
        raise InvalidQueryError("arch", None, "an arch (no GPU was detected; pass arch=..., e.g. 'sm90')")
    return arch


def _resolve(query, env, prefer, disable, force, probes, registry, policy="allow", profile=None) -> Resolution:
    """Selection asks the backends in order and stops at the first supported one. A probe is asked where it
    can change that: before the table where its yes can select a backend (an override probe; any probe of an
    unknown build, which its yes makes unverified), else only when the table says yes. What selection did
    not decide is decided when `Resolution.decisions` is read (from the same Views, and the probes as they
    answer then)."""
    arch = query.arch or env.arch or arch_of(query, env)  # arch_of raises, naming what is missing
    plan = _plan(registry, arch, query, env, prefer, disable, force, profile)
    deny = policy == "deny"
    early = {}  # entry index -> a Decision made now, or _Probed (a probe asked now that had no opinion)
    selected = None
    provisional = False
    for i, entry in enumerate(plan.entries):
        probed = probes and entry.probed
        if probed and entry.probe_first:
            found = _probe(entry, query, env, policy, early, i, full=entry.probe_decides)
            provisional = provisional or found[1]
            if found[0] is not None:  # decided in full (the probe had an opinion, or decides the build)
                if found[0]:
                    selected = entry.name
                    break
                continue
        if entry.runnable and not (deny and entry.unverified):  # not disabled, installed, not refused as a whole
            # View.supported, its memo looked up inline where that alone answers (this loop is the hot path)
            view = entry.view or entry.make_view()
            if view.steady:
                key = view.key(query)
                supported = view.verdicts.get(key)
                if supported is None:
                    supported = view.decide(key, query, entry.ctx)
            else:
                supported = view.supported(query, entry.ctx)
            if supported and probed and not entry.probe_first:  # a restricting probe may say no
                found = _probe(entry, query, env, policy, early, i)
                provisional = provisional or found[1]
                supported = supported if found[0] is None else found[0]
            if supported:
                selected = entry.name
                break
    return Resolution(query, env, arch, None, force, selected, plan, early, policy, probes, provisional)


def _probe(entry, query, env, policy, early: dict, i: int, full: bool = False) -> tuple[bool | None, bool]:
    """Ask entry's probe during selection: (whether the backend is supported, None when the probe has no
    opinion and the table decides, unless `full`; whether the verdict is provisional). What it decided goes
    to early[i]."""
    verdict = probe_registry.judge(entry.b, query, entry.ctx, env)
    provisional = verdict is not None and verdict.provisional
    if not full and not _has_opinion(entry.b, verdict):
        early[i] = _Probed(verdict)
        return None, provisional
    view = entry.view or entry.make_view()
    decision = early[i] = _finish(_probed_decision(entry.b, query, entry.ctx, view, view.outcome(query, entry.ctx),
                                                   verdict), entry, policy)
    return decision.supported, provisional


class _Probed(NamedTuple):
    """A probe's word on an entry that does not change the table's verdict (no opinion)."""

    verdict: object  # ProbeVerdict | None


def _decision(entry, resolution: Resolution, early) -> Decision:
    """The Decision of one plan entry: the one selection made, or one made now from what selection left
    (`early`: the probe's verdict without opinion, or None; a probe selection did not ask is asked now)."""
    if entry.b is None:
        return Decision(entry.name, False, "disabled", reasons=_FORCED if resolution.forced else _DISABLED)
    if isinstance(early, Decision):
        return early
    q, ctx, view = resolution.query, entry.ctx, entry.make_view()
    outcome = view.outcome(q, ctx)
    if isinstance(early, _Probed):
        decision = _probed_decision(entry.b, q, ctx, view, outcome, early.verdict)
    elif resolution._probes and entry.probed:
        decision = _probed_decision(entry.b, q, ctx, view, outcome,
                                    probe_registry.judge(entry.b, q, ctx, resolution.env))
    else:
        decision = _static_decision(entry.b, q, ctx, outcome)
    return _finish(decision, entry, resolution._policy)


def _finish(d: Decision, entry, policy: str) -> Decision:
    """Coverage, a profile's window and the flash_attn namespace applied to a backend's decision."""
    if entry.cov is not None or entry.blocked is not None:
        d = classify(d, entry.cov, entry.blocked, policy)
    if entry.conflict is not None:
        d = _conflicted(d, entry.conflict)
    return d


def classify(d: Decision, cov, blocked, policy: str) -> Decision:
    """Apply a backend's coverage (coverage.Coverage or None) and a profile's refusal to its decision."""
    d._notes = () if cov is None else cov.notes
    if blocked is not None:
        d._notes += (blocked,)
        if d.supported:
            d.supported, d.decided_by, d._outcome = False, "profile", "rejected"
        return d
    if not d.supported or cov is None or cov.outcome == "supported":
        return d
    outcome = cov.outcome
    if outcome == "unknown" and cov.probe_decides and d.probe is not None and d.probe.supported:
        outcome = "unverified"  # an unknown build, but the installed library's own check accepts the query
    d._outcome = outcome
    if outcome == "unknown":
        d.supported = False
    elif policy == "deny":
        d.supported = False
        d._notes += (Reason("policy", "not selected: unverified='deny' (or ATTNCAP_UNVERIFIED=deny)",
                            field="unverified", expected="allow", actual="deny"),)
    return d


@functools.lru_cache(maxsize=64)
def _namespace_conflicts(env, registry) -> dict:
    return namespace.conflicts(env, {b.package for b in registry.compiled.values()})


def _conflicted(d: Decision, conflict: tuple[str, bool]) -> Decision:
    """A backend whose package the shared flash_attn namespace breaks (`conflict`: the message and whether
    it is proven): rejected, by `conflict`; one it may break (unchecked, a what-if): its verdict with the
    reason first. The reason is a note: the other reasons stay unbuilt until read."""
    ctx = d._ctx
    message, proven = conflict
    reason = Reason("conflict" if proven else "namespace", message, None, namespace.SOURCE, "versions", None,
                    ctx.version)
    d._notes = (reason, *getattr(d, "_notes", ()))
    if proven:
        d.supported, d.decided_by, d._outcome = False, "conflict", "rejected"
    return d


_plans: dict = {}


class _Entry:
    """One backend of a plan: everything about it that is the same for every query of the plan."""

    __slots__ = ("name", "b", "ctx", "view", "target", "cov", "blocked", "conflict", "probed", "probe_decides",
                 "probe_first", "runnable", "unverified")

    def __init__(self, name, b=None, ctx=None, target=None, cov=None, blocked=None, conflict=None):
        self.name, self.b, self.ctx = name, b, ctx  # b None: disabled (or another is forced)
        self.view, self.target = None, target  # the View, made on first use for the (dtype, training) target
        self.cov = cov  # coverage.Coverage, None when the versions are checked and there is nothing to note
        self.blocked = blocked  # a profile's refusal (Reason) or None
        self.conflict = conflict  # (message, proven) when the flash_attn namespace may break the package
        installed = ctx is not None and ctx.version is not None
        self.probed = installed and b.probe is not None  # with probes on, its probe is asked
        # An unknown build that a probe's yes makes unverified (classify): decided in full with the probe.
        self.probe_decides = self.probed and cov is not None and cov.outcome == "unknown" and cov.probe_decides
        # Asked before the table, as its yes can select a backend the table alone does not: an override
        # probe, or one that decides an unknown build. Any other probe can only turn the table's yes to no.
        self.probe_first = self.probed and (b.probe.mode == "override" or self.probe_decides)
        # Installed, and a statically supported query stays supported after classify() and _conflicted():
        self.runnable = installed and blocked is None and (cov is None or cov.outcome != "unknown") and \
            not (conflict and conflict[1])
        self.unverified = cov is not None and cov.outcome == "unverified"  # refused under unverified="deny"

    def make_view(self):
        """The View, built on first use: selection stops at the first supported backend, so a plan's
        first query often needs one or two of them."""
        if self.view is None:
            self.view = self.b.view(*self.target, self.ctx)
        return self.view


class _Plan:
    __slots__ = ("entries",)

    def __init__(self, entries: tuple[_Entry, ...]):
        self.entries = entries  # in preference order


def _plan(registry, arch, query, env, prefer, disable, force, profile=None) -> _Plan:
    """Per backend in preference order, a _Entry: its Ctx, View, Coverage, profile refusal and namespace conflict.

    Cached per environment, dtype and pass: everything here is the same for every query that shares them.
    """
    dtype = query.dtype
    key = (registry, arch, dtype, query.training, env, prefer, disable, force, profile)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    compiled = registry.compiled
    for name in (*prefer, *disable, *([force] if force else [])):
        if name not in compiled:
            raise InvalidQueryError("backend", name, f"one of {', '.join(sorted(compiled))}")
    # force, then prefer, then the profile's order; each backend once, where it first comes
    order = dict.fromkeys((*([force] if force else ()), *prefer, *registry.profile_preference(arch, profile)))
    elem_bytes = registry.vocabulary.dtypes[dtype].bytes
    cc = registry.vocabulary.cc(arch)
    conflicts = _namespace_conflicts(env, registry)
    entries = []
    for name in order:
        if (force and name != force) or name in disable:
            entries.append(_Entry(name))
        else:
            b = compiled[name]
            cov = coverage.assess(b, env)
            ctx = _ctx(b, env, arch, elem_bytes, cc, cov)
            cov = None if cov.outcome == "supported" and not cov.notes else cov
            installed = ctx.version is not None
            blocked = coverage.profile_block(registry, profile, b, env) if installed else None
            conflict = conflicts.get(ctx.package) if installed else None
            entries.append(_Entry(name, b, ctx, (dtype, query.training), cov, blocked, conflict))
    plan = _Plan(tuple(entries))
    if len(_plans) > CACHE_SIZE:
        _plans.clear()
    _plans[key] = plan
    return plan


def _ctx(b: CompiledBackend, env: Environment, arch: str, elem_bytes: int, cc, cov=None) -> Ctx:
    """What the rules of `b` are evaluated against: the versions as matched and clamped to the checked spans
    (coverage.assess); a missing required distribution counts as not installed."""
    cov = cov or coverage.assess(b, env)
    absent = tuple(r for r in b.requires if env.version(r) is None)
    version = None if absent else cov.version
    return Ctx(arch, elem_bytes, version, cov.cudnn, b.package, cc, absent, cov.transformer_engine)


def evaluate(b: CompiledBackend, q: AttentionQuery, c: Ctx, env: Environment, probes: bool, view=None) -> Decision:
    """One backend's decision: booleans now, reasons when asked."""
    if view is None:
        view = b.view(q.dtype, q.training, c)
    outcome = view.outcome(q, c)
    if not (probes and c.version is not None and b.probe is not None):
        return _static_decision(b, q, c, outcome)
    return _probed_decision(b, q, c, view, outcome, probe_registry.judge(b, q, c, env))


def _has_opinion(b: CompiledBackend, verdict) -> bool:
    """Whether a probe's verdict can change the static one (else it only joins the reasons)."""
    return verdict is not None and verdict.supported is not None and b.probe.mode != "advisory"


def _probed_decision(b: CompiledBackend, q: AttentionQuery, c: Ctx, view, outcome, verdict) -> Decision:
    """The Decision of an installed backend whose probe was asked."""
    rule, missing, issue, _ = outcome
    static = rule is not None
    core, decided_by = _apply_probe(b, view, q, c, static, verdict)
    if issue is not None:
        decided_by = "known_issue"
    rule_id = rule.id if static else ("probe" if core and verdict is not None else None)
    return Decision(b.id, core and not missing and issue is None, decided_by, rule_id, static, verdict, None, b, q, c,
                    core, missing)


def _static_decision(b: CompiledBackend, q: AttentionQuery, c: Ctx, outcome) -> Decision:
    """The Decision of a backend's Outcome when no probe is asked."""
    rule, missing, issue, supported = outcome
    decided_by = "known_issue" if issue is not None else "static" if c.version is not None else "not_installed"
    static = rule is not None
    return Decision(b.id, supported, decided_by, rule.id if static else None, static, None, None, b, q, c, static,
                    missing)


def _apply_probe(b, view, q, c, static, verdict) -> tuple[bool, str]:
    """The support verdict after the probe, and who decided it."""
    if not _has_opinion(b, verdict):
        return static, "static"
    if verdict.supported is False:
        return False, "probe" if static else "static"
    if b.probe.mode == "restrict":
        return static, "static"
    # override, probe says yes: the rules must still hold on everything the probe does not judge.
    judged = probe_registry.judged_fields(b.probe.name)
    core = any(r.matches(q, c, judged) for r in view.support)
    return core, "probe" if core and not static else "static"


def _explain(b, q, c, static, verdict, core, missing, installed) -> list[Reason]:
    reasons: list[Reason] = []
    if c.absent:
        reasons += [Reason("not_installed", f"{name} is not installed ({b.id} runs through it): pip install {name}",
                           field="requires", expected=f"pip install {name}") for name in c.absent]
    elif not installed:
        reasons.append(Reason("not_installed", f"{b.package} is not installed", field="versions"))
        reasons += _install_hint(b, q, c)
    elif not static:
        reasons += _support_failures(b, q, c)
    probe = [] if verdict is None else [Reason("probe", f"probe {verdict.probe}: {verdict.describe()}", field="probe",
                                               expected=None, actual=verdict.supported)]
    if verdict is not None and verdict.supported is not None:
        reasons += probe  # a probe with an opinion is a real reason; "no opinion" goes last
    for alternatives in missing:
        reasons += _feature_failures(b, alternatives, q, c, installed)
    issue = False
    for k in b.known_issues if installed else ():
        if k.matches(q, c):
            issue = True
            reasons.append(Reason("known_issue", f"known issue {k.id}{effect_note(k.effect)}: {k.reason}", k.id,
                                  k.source, expected=k.versions, actual=c.version, effect=k.effect))
    if installed and (not core or missing or issue):
        reasons += smallest_changes(b, q, c, versions=not any(r.code == "install" for r in reasons))
    if verdict is not None and verdict.supported is None:
        reasons += probe
    return reasons


# How far a failed constraint puts a rule from the query: another arch is far, a rule for
# other versions is farther than a head-dim limit of the installed one, and a rule for one
# exact shape tells less than a range does.
_DISTANCE = {"arch": 100, "dtype": 10, "passes": 10, "versions": 5, "cudnn": 5, "transformer_engine": 5,
             "head_dims": 3}


def _support_failures(b, q, c) -> list[Reason]:
    """Every failing constraint of the nearest support rule, and where the query would work."""
    if not b.support:
        return [Reason("unsupported", f"{b.id} declares no support rules")]
    covered = b.covered_archs
    if covered is not None and c.arch not in covered:
        shown = _arch_order(covered)
        return [Reason("arch", f"{b.id} has no rule for {c.arch}; its rules cover {', '.join(shown)}",
                       field="arch", expected=shown, actual=c.arch)]
    newer = _version_rule(b, q, c)
    if newer is not None:  # only the version is wrong: name the rule that a newer release satisfies
        return newer.failures(q, c) + _install_hint(b, q, c)
    nearest = min(b.support, key=lambda r: sum(_DISTANCE.get(ch.field, 1) for ch in r.checks if not ch.test(q, c)))
    return nearest.failures(q, c) + _elsewhere(b, q, c)  # min keeps the first of equally near rules


def _elsewhere(b, q, c) -> list[Reason]:
    """The archs on which the same query would be supported (by the table: probes speak for this GPU only)."""
    candidates = b.named_archs - {c.arch}
    archs = _arch_order(a for a in candidates if evaluate(b, q, c._replace(arch=a), None, False).supported)
    if not archs:
        return []
    return [Reason("arch", f"{b.id} supports this query on {', '.join(archs)} only", field="arch",
                   expected=archs, actual=c.arch)]


def _arch_order(archs) -> list[str]:
    return sorted(archs, key=lambda a: (len(a), a))  # by name: sm90 before sm100 (no vocabulary here)


def _version_rule(b, q, c):
    """The support rule that matches but for the version, preferring one still open-ended."""
    candidates = [r for r in b.support if r.matches(q, c, frozenset({"versions"}))]
    if c.version is not None:  # never advise a downgrade: keep rules that some version >= the installed one meets
        candidates = [r for r in candidates if not r.versions or not _only_older(r.versions, c.version)]
    open_ended = [r for r in candidates if r.versions and "<" not in r.versions and "==" not in r.versions]
    return open_ended[0] if open_ended else (candidates[-1] if candidates else None)


def _only_older(specifier: str, version: str) -> bool:
    """Every version `specifier` admits is older than `version` (an upper bound at or below it)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
    v = Version(version)
    return any((s.operator == "<" and Version(s.version) <= v) or (s.operator in ("<=", "==") and
               "*" not in s.version and Version(s.version) < v) for s in SpecifierSet(specifier))


def _install_hint(b, q, c) -> list[Reason]:
    """The install command for a version that supports the query, from the matching rule's specifier."""
    best = _version_rule(b, q, c)
    if best is None:  # perhaps with another cuDNN too
        return version_change(b, q, c) or \
            [Reason("unsupported", f"no version of {b.package} supports this query on {c.arch}")]
    spec = best.versions or ""
    command = b.install.replace("{specifier}", spec)
    return [Reason("install", f"{b.package}{spec} supports this (rule {best.id}): {command}", best.id,
                   best.source, "versions", command, c.version)]


def _feature_failures(b, alternatives, q, c, installed) -> list[Reason]:
    rules = [r for name in alternatives for r in b.features.get(name, ())]
    label = " or ".join(alternatives)
    if not rules:
        return [Reason("feature", f"{b.id} does not support {label}", field=label)]
    skip = frozenset() if installed else frozenset({"versions"})
    failures = min((r.failures(q, c, skip) for r in rules), key=len)
    return [Reason("feature", f"{label}: {f.message}", f.rule, f.source, f.field, f.expected, f.actual)
            for f in failures]

"""resolve(): which backend runs a query here, and a Decision with reasons for every backend.

Per backend, in this order (DESIGN.md, "Evaluation, per backend"):
  disabled? -> installed? -> support rules -> probe (by its mode) -> features -> known issues.
Precedence: known issues > probe > static support. Selection is the first supported backend
in policy order. Decisions are computed as booleans; their reasons are built on first access.
"""

from __future__ import annotations

import logging
import os
import threading

from . import probes as probe_registry
from .environment import Environment, forget_detected
from .loader import default_registry, forget_default_registry
from .query import AttentionQuery, InvalidQueryError
from .rules import CompiledBackend, Ctx, Reason
from .settings import flag

log = logging.getLogger("attncap")

ENV_FORCE, ENV_DISABLE, ENV_PROBES, ENV_DEBUG = "ATTNCAP_BACKEND", "ATTNCAP_DISABLE", "ATTNCAP_PROBES", "ATTNCAP_DEBUG"
CACHE_SIZE = 4096
# os.environ's own dict: reading it directly keeps the cached path fast, and still sees
# every change made through os.environ (monkeypatch, os.environ[...] = ...).
_ENVIRON = getattr(os.environ, "_data", None)
_ENV_KEYS = tuple(os.environ.encodekey(k) for k in (ENV_FORCE, ENV_DISABLE, ENV_PROBES)) \
    if hasattr(os.environ, "encodekey") else ()

_cache: dict = {}
_cache_lock = threading.Lock()


def _reset_cache_lock() -> None:
    global _cache_lock
    _cache_lock = threading.Lock()  # a fork() child: another thread of the parent may have held it


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_reset_cache_lock)
_generation = 0  # bumped by clear_cache(): a resolution begun before it is not stored after it


def clear_cache() -> None:
    """Forget cached resolutions, the loaded registry, the detected environment and probe results."""
    global _generation
    # Forget the sources first, then bump the generation: a resolution that reads the
    # generation after the bump also reads the fresh sources, one that read it before is dropped.
    forget_default_registry()
    forget_detected()
    probe_registry.clear()
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


class NoBackendError(RuntimeError):
    def __init__(self, resolution: Resolution):
        self.resolution = resolution
        super().__init__(f"no attention backend can run {resolution.query!r}:\n{resolution.table()}")


class Decision:
    """One backend's verdict. `reasons` are built on first access from what the evaluation kept.

    Fully slotted, one object per backend: uncached resolution allocates little for the
    garbage collector to walk.
    """

    __slots__ = ("backend", "supported", "decided_by", "rule", "static", "probe", "_compiled", "_query", "_ctx",
                 "_core", "_missing", "_reasons")

    def __init__(self, backend, supported, decided_by, rule=None, static=None, probe=None, reasons=None,
                 compiled=None, query=None, ctx=None, core=False, missing=()):
        self.backend, self.supported, self.decided_by = backend, supported, decided_by
        self.rule, self.static, self.probe, self._reasons = rule, static, probe, reasons
        self._compiled, self._query, self._ctx, self._core, self._missing = compiled, query, ctx, core, missing

    @property
    def reasons(self) -> tuple[Reason, ...]:
        if self._reasons is None:
            self._reasons = tuple(_explain(self._compiled, self._query, self._ctx, self.static, self.probe,
                                           self._core, self._missing, self._ctx.version is not None))
        return self._reasons

    @property
    def install_hint(self) -> str | None:
        return next((r.expected for r in self.reasons if r.code == "install"), None)

    def as_dict(self) -> dict:
        return {"backend": self.backend, "supported": self.supported, "decided_by": self.decided_by,
                "rule": self.rule, "static": self.static,
                "probe": None if self.probe is None else self.probe.as_dict(),
                "reasons": [r.as_dict() for r in self.reasons]}

    def __repr__(self) -> str:
        return f"Decision({self.backend!r}, supported={self.supported}, decided_by={self.decided_by!r})"


class Resolution:
    __slots__ = ("query", "env", "arch", "decisions", "selected", "forced")

    @property
    def provisional(self) -> bool:
        """A probe's verdict may change soon (it is still importing its library): do not cache this."""
        return any(d.probe is not None and d.probe.provisional for d in self.decisions)

    def __init__(self, query, env, arch, decisions, forced):
        self.query, self.env, self.arch, self.decisions, self.forced = query, env, arch, decisions, forced
        self.selected = next((d.backend for d in decisions if d.supported), None)

    def decision(self, backend: str) -> Decision:
        for d in self.decisions:
            if d.backend == backend:
                return d
        raise KeyError(f"unknown backend {backend!r}; known: {', '.join(d.backend for d in self.decisions)}")

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
                "environment": dict(self.env.versions), "selected": self.selected,
                "decisions": [d.as_dict() for d in self.decisions]}


def resolve(query: AttentionQuery, env: Environment | None = None, *, prefer=None, disable=None, force=None,
            probes: bool = True, registry=None) -> Resolution:
    """Decide every backend for `query`; never raises for a valid query unless a forced backend can't run."""
    if env is None:
        env = Environment.detect()
    # prefer/disable: None, a comma-separated string or an iterable, materialised once (a one-shot
    # iterator must give the key and the resolution the same items). Inlined: this is the hot path.
    if prefer is not None and type(prefer) is not str:
        prefer = tuple(prefer)
    if disable is not None and type(disable) is not str:
        disable = tuple(disable)
    overrides = _environment_overrides()  # read once: the key and the resolution see the same values
    key = (query, env, overrides, prefer, disable, force, probes, registry)
    resolution = _cache.get(key)
    if resolution is None:
        generation = _generation
        resolution = _resolve_uncached(query, env, prefer, disable, force, probes, registry, overrides)
        if not resolution.provisional:
            with _cache_lock:
                if generation == _generation:
                    if len(_cache) >= CACHE_SIZE:
                        _cache.pop(next(iter(_cache)), None)
                    _cache[key] = resolution
    if resolution.forced and not resolution.decision(resolution.forced).supported:
        raise BackendUnavailableError(resolution, resolution.forced)
    return resolution


def _environment_overrides() -> tuple:
    """The ATTNCAP_* variables, read on every call so a change takes effect (part of the cache key)."""
    data = _ENVIRON
    if data is None or len(_ENV_KEYS) != 3:
        return tuple(os.environ.get(k) for k in (ENV_FORCE, ENV_DISABLE, ENV_PROBES))
    k1, k2, k3 = _ENV_KEYS
    return data.get(k1), data.get(k2), data.get(k3)


def _resolve_uncached(query, env, prefer, disable, force, probes, registry, overrides) -> Resolution:
    env_force, env_disable, env_probes = map(_decode, overrides)
    force = force or env_force or None
    if disable is None:
        disable = env_disable or ""
    disable = frozenset(_split(disable))
    probes = probes and (env_probes is None or flag(ENV_PROBES, env_probes, True))
    prefer = tuple(_split(prefer or ()))
    resolution = _resolve(query, env, prefer, disable, force, probes, registry or default_registry())
    if os.environ.get(ENV_DEBUG) == "1":
        log.debug("resolved %r -> %s\n%s", query, resolution.selected, resolution.table())
    return resolution


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
    if arch is None:
        raise InvalidQueryError("arch", None, "an arch (no GPU was detected; pass arch=..., e.g. 'sm90')")
    return arch


def _resolve(query, env, prefer, disable, force, probes, registry) -> Resolution:
    arch = arch_of(query, env)
    plan = _plan(registry, arch, query, env, prefer, disable, force)
    decisions = []
    for name, b, ctx, view in plan:
        if b is None:
            decisions.append(Decision(name, False, "disabled", reasons=_FORCED if force else _DISABLED))
        else:
            decisions.append(evaluate(b, query, ctx, env, probes, view))
    return Resolution(query, env, arch, tuple(decisions), force)


_plans: dict = {}


def _plan(registry, arch, query, env, prefer, disable, force) -> tuple:
    """(backend, compiled backend or None if disabled, Ctx, View) in preference order.

    Cached per environment, dtype and pass: everything here is the same for every query that shares them.
    """
    dtype = query.dtype
    key = (registry, arch, dtype, query.training, env, prefer, disable, force)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    compiled = registry.compiled
    for name in (*prefer, *disable, *([force] if force else [])):
        if name not in compiled:
            raise InvalidQueryError("backend", name, f"one of {', '.join(sorted(compiled))}")
    order = [force] if force else []
    order += [b for b in (*prefer, *registry.preference(arch)) if b not in order]
    elem_bytes = registry.vocabulary.dtypes[dtype].bytes
    cc = registry.vocabulary.cc(arch)
    plan = []
    for name in order:
        if (force and name != force) or name in disable:
            plan.append((name, None, None, None))
        else:
            b = compiled[name]
            ctx = _ctx(b, env, arch, elem_bytes, cc)
            plan.append((name, b, ctx, b.view(query, ctx)))  # views read only the query's dtype and pass
    plan = tuple(plan)
    if len(_plans) > CACHE_SIZE:
        _plans.clear()
    _plans[key] = plan
    return plan


def _ctx(b: CompiledBackend, env: Environment, arch: str, elem_bytes: int, cc) -> Ctx:
    """What the rules of `b` are evaluated against; a missing required distribution counts as not installed."""
    absent = tuple(r for r in b.requires if env.version(r) is None)
    version = None if absent else env.version(b.package)
    return Ctx(arch, elem_bytes, version, env.cudnn, b.package, cc, absent)


def evaluate(b: CompiledBackend, q: AttentionQuery, c: Ctx, env: Environment, probes: bool, view=None) -> Decision:
    """One backend's decision: booleans now, reasons when asked (plain loops: this is the hot path)."""
    installed = c.version is not None
    if view is None:
        view = b.view(q, c)
    rule = None
    for r in view.support:
        if r.matches(q, c):
            rule = r
            break
    static = rule is not None
    core, decided_by, verdict = static, "static", None
    if probes and installed and b.probe is not None:
        verdict = probe_registry.judge(b, q, c, env)
        core, decided_by = _apply_probe(b, view, q, c, static, verdict)
    missing = ()
    for alternatives in q.features:
        if not _feature_ok(view, alternatives, q, c):
            missing += (alternatives,)
    issue = view.known_issue(q, c) if installed else None
    supported = installed and core and not missing and issue is None
    if issue is not None:
        decided_by = "known_issue"
    elif not installed:
        decided_by = "not_installed"
    rule_id = rule.id if rule is not None else ("probe" if core and verdict is not None else None)
    return Decision(b.id, supported, decided_by, rule_id, static, verdict, None, b, q, c, core, missing)


def _apply_probe(b, view, q, c, static, verdict) -> tuple[bool, str]:
    """The support verdict after the probe, and who decided it."""
    if verdict is None or verdict.supported is None or b.probe.mode == "advisory":
        return static, "static"
    if verdict.supported is False:
        return False, "probe" if static else "static"
    if b.probe.mode == "restrict":
        return static, "static"
    # override, probe says yes: the rules must still hold on everything the probe does not judge.
    judged = probe_registry.judged_fields(b.probe.name)
    core = any(r.matches(q, c, judged) for r in view.support)
    return core, "probe" if core and not static else "static"


def _feature_ok(view, alternatives, q, c) -> bool:
    always = view.always
    for name in alternatives:
        if name in always:
            return True
    return any(r.matches(q, c) for name in alternatives for r in view.features.get(name, ()))


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
    if verdict is not None:
        reasons.append(Reason("probe", f"probe {verdict.probe}: {verdict.describe()}", field="probe",
                              expected=None, actual=verdict.supported))
    for alternatives in missing:
        reasons += _feature_failures(b, alternatives, q, c, installed)
    for k in b.known_issues if installed else ():
        if k.matches(q, c):
            reasons.append(Reason("known_issue", f"known issue {k.id}: {k.reason}", k.id, k.source,
                                  expected=k.versions, actual=c.version))
    return reasons


# How far a failed constraint puts a rule from the query: another arch is far, a rule for
# other versions is farther than a head-dim limit of the installed one, and a rule for one
# exact shape tells less than a range does.
_DISTANCE = {"arch": 100, "dtype": 10, "passes": 10, "versions": 5, "cudnn": 5, "head_dims": 3}


def _support_failures(b, q, c) -> list[Reason]:
    """Every failing constraint of the nearest support rule, and where the query would work."""
    if not b.support:
        return [Reason("unsupported", f"{b.id} declares no support rules")]
    covered = _covered_archs(b)
    if covered is not None and c.arch not in covered:
        shown = _arch_order(covered)
        return [Reason("arch", f"{b.id} has no rule for {c.arch}; its rules cover {', '.join(shown)}",
                       field="arch", expected=shown, actual=c.arch)]
    newer = _version_rule(b, q, c)
    if newer is not None:  # only the version is wrong: name the rule that a newer release satisfies
        return newer.failures(q, c) + _install_hint(b, q, c)
    scored = [(r.failures(q, c), i) for i, r in enumerate(b.support)]
    failures, _ = min(scored, key=lambda t: (sum(_DISTANCE.get(f.code, 1) for f in t[0]), t[1]))
    return failures + _elsewhere(b, q, c)


def _elsewhere(b, q, c) -> list[Reason]:
    """The archs on which the same query would be supported (by the table: probes speak for this GPU only)."""
    candidates = _named_archs(b) - {c.arch}
    archs = _arch_order(a for a in candidates if evaluate(b, q, c._replace(arch=a), None, False).supported)
    if not archs:
        return []
    return [Reason("arch", f"{b.id} supports this query on {', '.join(archs)} only", field="arch",
                   expected=archs, actual=c.arch)]


def _rule_archs(rule) -> frozenset | None:
    """The archs a rule names; None when it names none (it applies on every arch)."""
    return next((ch.allowed for ch in rule.checks if ch.field == "arch"), None)


def _named_archs(b) -> frozenset:
    return frozenset().union(*filter(None, map(_rule_archs, b.support)))


def _covered_archs(b) -> frozenset | None:
    """The archs the support rules can apply on; None when one of them applies on every arch."""
    return None if any(_rule_archs(r) is None for r in b.support) else _named_archs(b)


def _arch_order(archs) -> list[str]:
    return sorted(archs, key=lambda a: (len(a), a))  # by name: sm90 before sm100 (no vocabulary here)


def _version_rule(b, q, c):
    """The support rule that matches but for the version, preferring one still open-ended."""
    candidates = [r for r in b.support if r.matches(q, c, frozenset({"versions"}))]
    open_ended = [r for r in candidates if r.versions and "<" not in r.versions and "==" not in r.versions]
    return open_ended[0] if open_ended else (candidates[-1] if candidates else None)


def _install_hint(b, q, c) -> list[Reason]:
    """The install command for a version that supports the query, from the matching rule's specifier."""
    best = _version_rule(b, q, c)
    if best is None:
        return [Reason("unsupported", f"no version of {b.package} supports this query on {c.arch}")]
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

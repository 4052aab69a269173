"""Compile rules into checks once, at load: each check is a fast boolean test plus an
explanation that is only built when a caller asks why.

A Ctx carries what a check needs beyond the query: the arch, the dtype's element size and
the versions in force. A value the query leaves unknown (seqlens, head counts) satisfies a
support or feature rule (we cannot tell, so we do not reject) but never triggers a known issue.

Every Check declares the query attributes it reads (`reads`): a View (a backend's rules on one
arch, dtype, pass and set of versions, with those checks decided) memoises its verdicts on them.
A new kind of check must declare them too (tests/test_equivalence.py checks every one).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from .query import OPTIONAL_FIELDS  # query imports nothing of attncap at module level
from .views import View, narrow, on_target

if TYPE_CHECKING:  # the data comes as models (full load) or as their plain Records (a wheel's snapshot)
    from .models import BackendFile, Conditions, IntRange, KnownIssue, Rule

Query = Any  # an attncap.query.AttentionQuery; not imported, so that query can depend on the loaded data


class Ctx(NamedTuple):
    arch: str
    elem_bytes: int
    version: str | None  # the backend package's version; None = not installed
    cudnn: str | None
    package: str
    cc: tuple[int, int]  # the arch's compute capability
    absent: tuple[str, ...] = ()  # required distributions that are not installed (then version is None)
    te: str | None = None  # the installed transformer-engine version (`transformer_engine` conditions)


@dataclass(frozen=True)
class Reason:
    """Why a backend was rejected (or how it was decided), in structured form."""

    code: str
    message: str
    rule: str | None = None
    source: str | None = None
    field: str | None = None
    expected: object = None
    actual: object = None
    effect: str | None = None  # known issues: what happens when it is hit (models.Effect)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


EFFECT_WORDS = {
    "raises": "raises a clear error", "compile_error": "kernel compilation fails",
    "resource_limit": "over a shared-memory/register limit", "wrong_result": "silently wrong results",
    "crash": "the process dies", "poisons_cuda_context": "poisons the CUDA context",
}


def effect_note(effect: str | None) -> str:
    """' [effect: what it means]' for a known issue's message, '' when the effect is not recorded."""
    return f" [{effect}: {EFFECT_WORDS.get(effect, effect)}]" if effect else ""


@dataclass(frozen=True)
class Check:
    field: str
    test: Callable[[Query, Ctx], bool]
    explain: Callable[[Query, Ctx], tuple[object, object, str]]  # (expected, actual, message)
    allowed: frozenset = frozenset()  # for set checks: the allowed values
    reads: tuple[str, ...] = ()  # the query attributes `test` reads (a View memoises on them); () = the Ctx only
    # For a known issue: (value of the query, the values it needs); `test` is False for any other value,
    # so a View finds the issues a query may hit by looking its value up (views._Issues).
    guard: tuple[Callable, frozenset] | None = None


_HEAD_DIMS = ("head_dim_qk", "head_dim_v")
_head_dims = attrgetter(*_HEAD_DIMS)


@functools.lru_cache(maxsize=4096)
def version_matches(specifier: str, version: str) -> bool:
    """PEP 440 match where pre-releases always count and local labels are ignored."""
    public = _public(version)
    return public is not None and _specifier(specifier).contains(public, prereleases=True)


@functools.lru_cache(maxsize=1024)
def _specifier(specifier: str) -> SpecifierSet:  # parsed once, whatever version it is matched with
    return SpecifierSet(specifier, prereleases=True)


@functools.lru_cache(maxsize=1024)
def _public(version: str) -> Version | None:
    try:
        return Version(Version(version).public)
    except InvalidVersion:
        return None


def _range_check(field: str, r: IntRange, optimistic: bool) -> Check:
    lo, hi, step = r.min, r.max, r.multiple_of
    res = (r.residue.modulo, r.residue.equals) if r.residue else None
    nres = (r.not_residue.modulo, r.not_residue.equals) if r.not_residue else None

    def test(q, c):
        v = getattr(q, field)
        if v is None:
            return optimistic
        return ((lo is None or v >= lo) and (hi is None or v <= hi) and (step is None or v % step == 0)
                and (res is None or v % res[0] == res[1]) and (nres is None or v % nres[0] != nres[1]))

    def explain(q, c):
        v = getattr(q, field)
        if v is None:
            return _describe_range(r), None, f"{field} is unknown"
        why = f"> max {hi}" if hi is not None and v > hi else f"< min {lo}" if lo is not None and v < lo \
            else f"not a multiple of {step}" if step is not None and v % step else \
            f"% {res[0]} = {v % res[0]}, not {res[1]}" if res is not None and v % res[0] != res[1] else \
            f"% {nres[0]} = {nres[1]}"
        return _describe_range(r), v, f"{field}={v} {why}"
    return Check(field, test, explain, reads=(field,))


def _describe_range(r: IntRange) -> str:
    text = f"{'' if r.min is None else r.min}..{'' if r.max is None else r.max}"
    text += f" step {r.multiple_of}" if r.multiple_of else ""
    text += f" % {r.residue.modulo} == {r.residue.equals}" if r.residue else ""
    return text + (f" % {r.not_residue.modulo} != {r.not_residue.equals}" if r.not_residue else "")


_COMPARE = {"<": int.__lt__, "<=": int.__le__, "==": int.__eq__, "!=": int.__ne__, ">=": int.__ge__,
            ">": int.__gt__}


def _relation_check(relation: str, optimistic: bool) -> Check:
    """`a op b` over two integer query fields; an unknown side passes a support rule, never an issue."""
    a, op, b = relation.split(" ")
    compare = _COMPARE[op]

    def test(q, c):
        x, y = getattr(q, a), getattr(q, b)
        return optimistic if x is None or y is None else compare(x, y)
    return Check("relations", test, lambda q, c: (relation, (getattr(q, a), getattr(q, b)),
                                                  f"needs {relation} ({a}={getattr(q, a)}, {b}={getattr(q, b)})"),
                 reads=(a, b))


def _optional_set_check(field: str, allowed: frozenset, optimistic: bool) -> Check:
    """A set check on a field the query may leave unknown (None)."""
    shown = ", ".join(sorted(allowed))

    def test(q, c):
        v = getattr(q, field)
        return optimistic if v is None else v in allowed
    return Check(field, test, lambda q, c: (sorted(allowed), getattr(q, field),
                                            f"{field} {getattr(q, field)} is not one of {shown}"), allowed, (field,),
                 None if optimistic else (_getter(field), allowed))


_GETTERS: dict[str, Callable] = {}


def _getter(field: str) -> Callable:
    """One attrgetter per field: a View groups the guards that read the same value."""
    return _GETTERS.setdefault(field, attrgetter(field))


def _set_check(field: str, allowed: frozenset, what: str, get: Callable, key=None, reads=()) -> Check:
    ordered = sorted(allowed, key=key) if key else sorted(allowed)
    shown = ", ".join(map(str, ordered))
    guard = (_getter(field), allowed) if reads == (field,) else None  # a query attribute, not the Ctx's arch
    return Check(field, lambda q, c: get(q, c) in allowed,
                 lambda q, c: (ordered, get(q, c), f"{what} {get(q, c)} is not one of {shown}"), allowed, reads,
                 guard)


def _flag_check(field: str, wanted: bool, describe: str, get: Callable, reads: tuple[str, ...],
                optimistic: bool = True) -> Check:
    def test(q, c):
        value = get(q)
        return optimistic if value is None else value == wanted
    # allowed: the values a known value must have (q.training, a view-level check, is never unknown)
    return Check(field, test, lambda q, c: (wanted, get(q), f"{'needs' if wanted else 'not with'} {describe}"),
                 frozenset({wanted}), reads, None if optimistic else (get, frozenset({wanted})))


# field: (what it means, its value on a query (None = unknown), the query attributes that value reads)
_FLAGS: dict[str, tuple[str, Callable, tuple[str, ...]]] = {
    "training": ("training (backward)", lambda q: q.training, ("training",)),
    "cross_attention": ("seqlen_q != seqlen_kv", lambda q: q.cross_attention if q.seqlen_q is not None else None,
                        ("cross_attention", "seqlen_q")),
    "gqa": ("grouped-query attention (num_heads_q != num_heads_kv)", lambda q: q.gqa, ("gqa",)),
    "window": ("a sliding window", lambda q: q.window is not None, ("window",)),
    "dropout": ("dropout", lambda q: q.dropout > 0, ("dropout",)),
    "softcap": ("softcap", lambda q: q.softcap > 0, ("softcap",)),
    "deterministic": ("deterministic", lambda q: q.deterministic, ("deterministic",)),
    "paged_kv": ("a paged KV cache", lambda q: q.page_size is not None, ("page_size",)),
    "sinks": ("attention sinks", lambda q: q.sinks, ("sinks",)),
    "pad_between_seqs": ("padding between sequences", lambda q: q.pad_between_seqs, ("pad_between_seqs",)),
    "kv_cache": ("a KV cache (inference)", lambda q: q.kv_cache, ("kv_cache",)),
    "return_max_logit": ("return_max_logit", lambda q: q.return_max_logit, ("return_max_logit",)),
    "score_mod": ("a score_mod callback", lambda q: q.score_mod, ("score_mod",)),
    "bias_grad": ("a bias that needs a gradient", lambda q: q.bias_grad, ("bias_grad",)),
    "bottom_right": ("bottom-right aligned window/ALiBi diagonal", lambda q: q.bottom_right, ("bottom_right",)),
    "fp8_mha": ("FP8 multi-head attention (fp8_mha)", lambda q: q.fp8_mha, ("fp8_mha",)),
}
_OPTIONAL_SETS = ("context_parallel", "packing", "fp8_recipe")


# field: (its version in a Ctx, what the version is of)
_VERSIONS: dict[str, tuple[Callable[[Ctx], str | None], Callable[[Ctx], str]]] = {
    "versions": (lambda c: c.version, lambda c: c.package),
    "cudnn": (lambda c: c.cudnn, lambda c: "cuDNN"),
    "transformer_engine": (lambda c: c.te, lambda c: "transformer-engine"),
}


@functools.lru_cache(maxsize=None)  # one Check per specifier: views.narrow tests each once per environment
def _version_check(field: str, spec: str) -> Check:
    get, label = _VERSIONS[field]

    def test(q, c):
        v = get(c)
        return v is not None and version_matches(spec, v)

    def explain(q, c):
        v = get(c)
        if v is None:
            return spec, None, f"{label(c)} is not installed (needs {spec})"
        return spec, v, f"{label(c)} {v} does not satisfy {spec}"
    return Check(field, test, explain)


def compile_conditions(cond: Conditions, vocab, *, optimistic: bool, passes=None) -> tuple[Check, ...]:
    """The checks of one rule, cheapest and most selective first."""
    checks: list[Check] = []
    if cond.arch is not None:
        archs, _ = vocab.expand_archs(cond.arch)
        checks.append(_set_check("arch", archs, "arch", lambda q, c: c.arch, key=vocab.cc))  # sm80 before sm100
    if cond.dtype is not None:
        checks.append(_set_check("dtype", frozenset(cond.dtype), "dtype", lambda q, c: q.dtype, reads=("dtype",)))
    if passes is not None and "backward" not in passes:
        checks.append(Check("passes", lambda q, c: not q.training,
                            lambda q, c: (passes, "backward", "training needs the backward pass; "
                                                              f"the rule covers {'/'.join(passes)} only"),
                            frozenset({False}), ("training",)))
    if passes is not None and "forward" not in passes:
        checks.append(Check("passes", lambda q, c: q.training,
                            lambda q, c: (passes, "forward", "the rule covers the backward pass only"),
                            frozenset({True}), ("training",)))
    for name in ("head_dim_qk", "head_dim_v"):
        if getattr(cond, name) is not None:
            checks.append(_range_check(name, getattr(cond, name), optimistic=True))
    if cond.head_dims is not None:
        pairs = frozenset(tuple(p) for p in cond.head_dims)
        shown = ", ".join(f"({a}, {b})" for a, b in sorted(pairs))
        checks.append(Check("head_dims", lambda q, c: (q.head_dim_qk, q.head_dim_v) in pairs,
                            lambda q, c: (sorted(pairs), (q.head_dim_qk, q.head_dim_v),
                                          f"(head_dim_qk, head_dim_v)=({q.head_dim_qk}, {q.head_dim_v}) "
                                          f"is not one of {shown}"), pairs, _HEAD_DIMS, (_head_dims, pairs)))
    if cond.same_head_dims is not None:
        same = cond.same_head_dims
        checks.append(Check("same_head_dims", lambda q, c: (q.head_dim_qk == q.head_dim_v) == same,
                            lambda q, c: (same, q.head_dim_qk == q.head_dim_v,
                                          f"head_dim_qk={q.head_dim_qk} and head_dim_v={q.head_dim_v} must "
                                          f"{'be equal' if same else 'differ'}"), reads=_HEAD_DIMS))
    if cond.alignment_bytes is not None:
        checks.append(_alignment_check(cond.alignment_bytes))
    for name in ("seqlen_q", "seqlen_kv", "num_heads_q", "num_heads_kv", "page_size", "num_splits"):
        if getattr(cond, name) is not None:
            checks.append(_range_check(name, getattr(cond, name), optimistic))
    if cond.mask is not None:
        checks.append(_mask_check(frozenset(cond.mask), optimistic))
    for name in ("layout", "bias"):
        if getattr(cond, name) is not None:
            checks.append(_set_check(name, frozenset(getattr(cond, name)), name,
                                     lambda q, c, f=name: getattr(q, f), reads=(name,)))
    for name, (describe, get, reads) in _FLAGS.items():
        if getattr(cond, name) is not None:
            checks.append(_flag_check(name, getattr(cond, name), describe, get, reads, optimistic))
    for name in _OPTIONAL_SETS:
        if getattr(cond, name) is not None:
            checks.append(_optional_set_check(name, frozenset(getattr(cond, name)), optimistic))
    for relation in cond.relations or ():
        checks.append(_relation_check(relation, optimistic))
    for name in _VERSIONS:
        if getattr(cond, name) is not None:
            checks.append(_version_check(name, getattr(cond, name)))
    return tuple(checks)


_CAUSAL = frozenset({"causal", "causal_bottom_right"})


def _mask_check(allowed: frozenset, optimistic: bool) -> Check:
    """A mask set where causal and causal_bottom_right are one mask when seqlen_q == seqlen_kv.

    Support and feature rules (optimistic) also accept unknown lengths. A known issue tests the mask as
    given: with equal lengths the caller can pass the other alignment, which the issue does not name
    (TransformerEngine's gates, for one, compare the mask type itself).
    """
    shown = ", ".join(sorted(allowed))

    def test(q, c):
        m = q.mask
        if m in allowed:
            return True
        if m not in _CAUSAL or not (_CAUSAL - {m}) & allowed:
            return False
        return optimistic and not q.cross_attention
    return Check("mask", test, lambda q, c: (sorted(allowed), q.mask, f"mask {q.mask} is not one of {shown}"), allowed,
                 ("mask", "cross_attention"), None if optimistic else (_getter("mask"), allowed))


def _alignment_check(n: int) -> Check:
    def test(q, c):
        return (q.head_dim_qk * c.elem_bytes) % n == 0 and (q.head_dim_v * c.elem_bytes) % n == 0

    def explain(q, c):
        bad = next(f for f in ("head_dim_qk", "head_dim_v") if (getattr(q, f) * c.elem_bytes) % n)
        v = getattr(q, bad)
        return n, v * c.elem_bytes, (f"{bad}={v} x {c.elem_bytes} bytes = {v * c.elem_bytes} bytes is not a "
                                     f"multiple of {n} (needs a multiple of {n // c.elem_bytes or 1} "
                                     f"elements for {q.dtype})")
    return Check("alignment_bytes", test, explain, reads=_HEAD_DIMS)


@dataclass(frozen=True)
class CompiledRule:
    id: str
    checks: tuple[Check, ...]
    source: str | None
    versions: str | None
    reason: str | None = None  # known issues: why
    cudnn: str | None = None  # the rule's cuDNN specifier, for hints naming another cuDNN
    effect: str | None = None  # known issues: what a caller who runs into it sees (models.Effect)

    def __post_init__(self):
        object.__setattr__(self, "_tests", tuple(ch.test for ch in self.checks))
        object.__setattr__(self, "reads", frozenset(name for ch in self.checks for name in ch.reads))
        object.__setattr__(self, "target", _target(self.checks))  # (archs, dtypes, training values) it admits
        # a known issue's most selective guard among its query checks (Check.guard), if any
        guarded = [ch for ch in self.checks if ch.guard and ch.field not in _DECIDED_BY_VIEW]
        object.__setattr__(self, "guard", min(guarded, key=_guard_rank).guard if guarded else None)

    def split(self) -> Split:
        """How Views use this rule (computed on first use, then kept)."""
        try:
            return self._split
        except AttributeError:
            object.__setattr__(self, "_split", _split(self))
            return self._split

    def matches(self, q: Query, c: Ctx, skip: frozenset = frozenset()) -> bool:
        if skip:
            return all(ch.test(q, c) for ch in self.checks if ch.field not in skip)
        return self.holds(q, c)

    def holds(self, q: Query, c: Ctx) -> bool:
        """Every check passes."""
        for test in self._tests:
            if not test(q, c):
                return False
        return True

    def failures(self, q: Query, c: Ctx, skip: frozenset = frozenset()) -> list[Reason]:
        out = []
        for ch in self.checks:
            if ch.field not in skip and not ch.test(q, c):
                expected, actual, message = ch.explain(q, c)
                out.append(Reason(ch.field, f"{message} in rule {self.id}", self.id, self.source, ch.field,
                                  expected, actual))
        return out


class Split(NamedTuple):
    """A rule as Views see it: the view-level checks apart from the query-dependent rest."""

    versions: tuple[Check, ...]  # its checks on the versions
    unversioned: tuple[Check, ...]  # the same but on the package's own version (for a package not installed)
    rest: CompiledRule  # the rule without view-level checks, as a View holds it


def _target(checks: tuple[Check, ...]) -> tuple:
    """(archs, dtypes, training values) that a rule's arch, dtype and pass checks admit; None = any."""
    admits = {"arch": None, "dtype": None, "training": None}
    for ch in checks:
        if ch.field in _TARGET_FIELDS:  # arch, dtype: their sets; passes, training: the training values
            key = "training" if ch.field == "passes" else ch.field
            admits[key] = ch.allowed if admits[key] is None else admits[key] & ch.allowed
    return admits["arch"], admits["dtype"], admits["training"]


def _split(rule: CompiledRule) -> Split:
    versions = tuple(ch for ch in rule.checks if ch.field in _VERSION_FIELDS)
    kept = tuple(ch for ch in rule.checks if ch.field not in _DECIDED_BY_VIEW)
    rest = rule if len(kept) == len(rule.checks) else \
        CompiledRule(rule.id, kept, rule.source, rule.versions, rule.reason, rule.cudnn, rule.effect)
    return Split(versions, tuple(ch for ch in versions if ch.field != "versions"), rest)


def _guard_rank(ch: Check) -> tuple[int, int]:
    """Rarer values first: an optional field (unasked: never a hit), a flag that needs the feature used,
    exact head-dim pairs; then by how many values the guard admits."""
    rare = ch.field in _OPTIONAL or ch.field == "head_dims" or (ch.field in _FLAGS and True in ch.guard[1])
    return (0 if rare else 1, len(ch.guard[1]))


_OPTIONAL = frozenset(OPTIONAL_FIELDS)

# Checks that depend only on the environment, the dtype and whether backward is needed: decided by a View.
_TARGET_FIELDS = frozenset({"arch", "dtype", "passes", "training"})
_VERSION_FIELDS = frozenset({"versions", "cudnn", "transformer_engine"})
_DECIDED_BY_VIEW = _TARGET_FIELDS | _VERSION_FIELDS


_SUPPORT, _ISSUES = object(), object()  # where a rule of a target belongs, beside the feature names
MAX_VIEWS = 256  # views a backend keeps (each with memos of views.MEMO_SIZE verdicts per part): memory stays bounded


@dataclass(frozen=True)
class CompiledBackend:
    id: str
    package: str
    install: str
    requires: tuple[str, ...]
    probe: object  # ProbeDeclaration | None
    support: tuple[CompiledRule, ...]
    features: dict[str, tuple[CompiledRule, ...]]
    known_issues: tuple[CompiledRule, ...]
    views: dict = field(default_factory=dict, compare=False)
    checked: dict = field(default_factory=dict, compare=False)  # package -> CheckedSpan (models)
    targets: dict = field(default_factory=dict, compare=False)  # (arch, dtype, training) -> rules on that target
    shared: dict = field(default_factory=dict, compare=False)  # a View's rules -> the View (one per content)
    assessed: dict = field(default_factory=dict, compare=False)  # Environment -> its coverage.Coverage

    def view(self, dtype: str, training: bool, c: Ctx) -> View:
        """The rules that can apply to queries of this dtype and pass on c's arch and versions.

        Built in two steps, each cached: the rules on the (arch, dtype, pass), then those the versions
        admit. Environments whose versions admit the same rules share one View (and its memo)."""
        key = (c.arch, c.version, c.cudnn, c.te, dtype, training)
        view = self.views.get(key)
        if view is None:
            installed = c.version is not None
            # (where, rule) in a fixed order: where is _SUPPORT, a feature's name or _ISSUES, and each rule
            # is one rule's own query part (rules.Split.rest)
            kept = narrow(self._on_target(c.arch, dtype, training), c)
            # A rule's query checks read the Ctx only for the element size (alignment).
            content = (c.elem_bytes, installed, *(id(r) for _, r in kept))
            view = self.shared.get(content)
            if view is None:
                parts: dict = {}
                for where, r in kept:
                    parts.setdefault(where, []).append(r)
                view = self.shared.setdefault(content, View(
                    tuple(parts.get(_SUPPORT, ())), {f: tuple(parts.get(f, ())) for f in self.features},
                    tuple(parts.get(_ISSUES, ())), installed))
            if len(self.views) > MAX_VIEWS:
                self.views.clear()
                self.shared.clear()
            self.views[key] = view
        return view

    def forget(self, *, views: bool = True) -> None:
        """Drop what evaluation kept: every View's memos, and with `views` the Views, targets and coverage too."""
        for view in self.views.values():
            view.forget()
        if views:
            for kept in (self.views, self.shared, self.targets, self.assessed):
                kept.clear()

    @functools.cached_property
    def named_archs(self) -> frozenset:
        """The archs its support rules name."""
        return frozenset().union(*filter(None, (_rule_archs(r) for r in self.support)))

    @functools.cached_property
    def covered_archs(self) -> frozenset | None:
        """The archs its support rules can apply on; None when one of them applies on every arch."""
        return None if any(_rule_archs(r) is None for r in self.support) else self.named_archs

    def _on_target(self, arch: str, dtype: str, training: bool) -> tuple:
        """(where, Split) of every rule whose arch, dtype and pass checks hold for this target."""
        key = (arch, dtype, training)
        found = self.targets.get(key)
        if found is None:
            found = self.targets.setdefault(key, on_target(self._placed, arch, dtype, training))
        return found

    @functools.cached_property
    def _placed(self) -> tuple:
        """(where, rule, its Split) of every rule: _SUPPORT, a feature's name or _ISSUES."""
        rules = [(_SUPPORT, r) for r in self.support]
        rules += [(name, r) for name, rs in self.features.items() for r in rs]
        rules += [(_ISSUES, r) for r in self.known_issues]
        return tuple((where, r, r.split()) for where, r in rules)


def _rule_archs(rule: CompiledRule) -> frozenset | None:
    """The archs a rule names; None when it names none (it applies on every arch)."""
    return next((ch.allowed for ch in rule.checks if ch.field == "arch"), None)


def _rule(rule: Rule, vocab) -> CompiledRule:
    checks = compile_conditions(rule, vocab, optimistic=True, passes=rule.passes)
    return CompiledRule(rule.id, checks, rule.source, rule.versions, cudnn=rule.cudnn)


def _known_issue(issue: KnownIssue, vocab) -> CompiledRule:
    when = issue.when.model_copy(update={"versions": issue.versions}) if issue.versions else issue.when
    checks = compile_conditions(when, vocab, optimistic=False)
    return CompiledRule(issue.id, checks, issue.source, issue.versions, issue.reason, cudnn=when.cudnn,
                        effect=issue.effect)


def compile_backend(b: BackendFile, vocab) -> CompiledBackend:
    support = tuple(_rule(r, vocab) for r in b.support)
    features = {name: tuple(_rule(r, vocab) for r in rules) for name, rules in b.features.items()}
    known = tuple(_known_issue(k, vocab) for k in b.known_issues)
    return CompiledBackend(b.backend, b.package, b.install, tuple(b.requires), b.probe, support, features, known,
                           checked=dict(b.checked))


def compile_registry(registry) -> dict[str, CompiledBackend]:
    return {name: compile_backend(b, registry.vocabulary) for name, b in registry.backends.items()}

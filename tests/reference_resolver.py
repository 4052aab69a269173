"""The straightforward evaluator: what attncap.resolve decides, computed the plain way.

Every backend in policy order, every rule of its file tested in full (arch, dtype, pass and version
checks included), no plans, no views, no memos, no guard index, no lazily built decisions. The
resolver's fast path must give the same decisions and reasons (tests/test_equivalence.py).

What the fast path does not change is reused as it is: the coverage of versions (coverage.assess),
the Ctx, the profile windows, classify() and the flash_attn namespace note.
"""

from __future__ import annotations

from attncap import coverage, namespace
from attncap.resolver import _DISABLED, _FORCED, Decision, Resolution, _conflicted, _ctx, arch_of, classify

VERSIONS = frozenset({"versions"})


def reference_resolve(query, env, registry, *, prefer=(), disable=(), force=None, policy="allow", profile=None):
    """A Resolution with every Decision built at once; probes are not asked."""
    arch = arch_of(query, env)
    compiled = registry.compiled
    # force, then prefer, then the profile's order; each backend once, where it first comes
    order = dict.fromkeys((*([force] if force else ()), *prefer, *registry.profile_preference(arch, profile)))
    vocab = registry.vocabulary
    conflicts = namespace.conflicts(env, {b.package for b in compiled.values()})
    decisions = []
    for name in order:
        if (force and name != force) or name in disable:
            decisions.append(Decision(name, False, "disabled", reasons=_FORCED if force else _DISABLED))
            continue
        b = compiled[name]
        cov = coverage.assess(b, env)
        c = _ctx(b, env, arch, vocab.dtypes[query.dtype].bytes, vocab.cc(arch), cov)
        d = evaluate_plainly(b, query, c)
        installed = c.version is not None
        blocked = coverage.profile_block(registry, profile, b, env) if installed else None
        cov = None if cov.outcome == "supported" and not cov.notes else cov
        if cov is not None or blocked is not None:
            d = classify(d, cov, blocked, policy)
        if installed and c.package in conflicts:
            d = _conflicted(d, conflicts[c.package])
        decisions.append(d)
    return Resolution(query, env, arch, tuple(decisions), force)


def evaluate_plainly(b, q, c) -> Decision:
    """One backend's static decision: the first support rule, each feature, any known issue."""
    installed = c.version is not None
    skip = frozenset() if installed else VERSIONS  # a package not installed: would some version do?
    rule = next((r for r in b.support if r.matches(q, c, skip)), None)
    missing = tuple(alternatives for alternatives in q.features
                    if not any(r.matches(q, c, skip) for name in alternatives for r in b.features.get(name, ())))
    issue = installed and any(k.matches(q, c) for k in b.known_issues)
    supported = installed and rule is not None and not missing and not issue
    decided_by = "known_issue" if issue else "static" if installed else "not_installed"
    return Decision(b.id, supported, decided_by, rule.id if rule else None, rule is not None, None, None, b, q, c,
                    rule is not None, missing)

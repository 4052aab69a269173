"""The straightforward evaluator: what attncap.resolve decides, computed the plain way.

Every backend in policy order, every rule of its file tested in full (arch, dtype, pass and version
checks included), no plans, no views, no memos, no guard index, no lazily built decisions. The
resolver's fast path must give the same decisions and reasons (tests/test_equivalence.py).

What the fast path does not change is reused as it is: the coverage of versions (coverage.assess),
the Ctx, the profile windows, classify(), the flash_attn namespace note, the rules' own checks
(CompiledRule.matches) and the reasons a Decision builds from its verdict (resolver._explain): so the
equivalence test's full comparison of reasons checks that both sides hand _explain the same verdict
(rule, static, core, missing, probe), not _explain itself.
"""

from __future__ import annotations

from attncap import coverage, namespace
from attncap import probes as probe_registry
from attncap.resolver import _DISABLED, _FORCED, Decision, Resolution, _conflicted, _ctx, arch_of, classify

VERSIONS = frozenset({"versions"})


def reference_resolve(query, env, registry, *, prefer=(), disable=(), force=None, policy="allow", profile=None,
                      probes=False):
    """A Resolution with every Decision built at once, every installed backend's probe asked when `probes`."""
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
        if probes and installed and b.probe is not None:
            d = with_probe(b, query, c, d, probe_registry.judge(b, query, c, env))
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


def with_probe(b, q, c, static: Decision, verdict) -> Decision:
    """The decision once the probe has spoken (DESIGN.md's probe modes): no opinion (or an advisory probe)
    leaves the table's verdict; a no rejects what the table supports; an override probe's yes replaces the
    table's no, provided every support rule's check the probe does not judge holds."""
    matched = static.static
    core, decided_by = matched, "static"
    if verdict is not None and verdict.supported is not None and b.probe.mode != "advisory":
        if verdict.supported is False:
            core, decided_by = False, "probe" if matched else "static"
        elif b.probe.mode == "override":
            judged = probe_registry.judged_fields(b.probe.name)
            core = any(r.matches(q, c, judged) for r in b.support)
            decided_by = "probe" if core and not matched else "static"
    issue = static.decided_by == "known_issue"
    rule = static.rule if matched else ("probe" if core and verdict is not None else None)
    return Decision(b.id, core and not static._missing and not issue, "known_issue" if issue else decided_by, rule,
                    matched, verdict, None, b, q, c, core, static._missing)

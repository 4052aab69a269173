"""`attncap explain`: every rule of one backend against a query, not only the nearest."""

from __future__ import annotations

import os

from . import coverage
from . import probes as probe_registry
from .resolver import ENV_PROBES, _ctx, arch_of, classify, evaluate


def explain_backend(registry, backend: str, query, env, *, probes: bool = True, unverified=None,
                    profile=None) -> dict:
    b = registry.compiled[backend]
    probes = probes and probe_registry.enabled(os.environ.get(ENV_PROBES))  # as resolve(): 0/off, warm
    arch = arch_of(query, env)
    vocab = registry.vocabulary
    policy = coverage.policy(unverified)
    coverage.check_profile(registry, profile)
    cov = coverage.assess(b, env)
    ctx = _ctx(b, env, arch, vocab.dtypes[query.dtype].bytes, vocab.cc(arch), cov)
    blocked = coverage.profile_block(registry, profile, b, env) if ctx.version is not None else None
    decision = classify(evaluate(b, query, ctx, env, probes), cov, blocked, policy)
    skip = frozenset() if ctx.version else frozenset({"versions"})

    def rows(rules, *, deny: bool = False):
        out = []
        for r in rules:
            failures = r.failures(query, ctx, skip)
            status = ("applies" if not failures else "clear") if deny else ("match" if not failures else "fail")
            why = [f.message for f in failures] if not deny else ([r.reason] if not failures else [])
            row = {"id": r.id, "status": status, "source": r.source, "why": why}
            if deny:
                row["effect"] = r.effect
            out.append(row)
        return out

    used = [name for alternatives in query.features for name in alternatives]
    return {
        "backend": backend, "package": b.package, "arch": arch,
        "version": None if ctx.version is None else env.cudnn if b.package == coverage.CUDNN else env.version(b.package),
        "matched_as": ctx.version, "supported": decision.supported, "outcome": decision.outcome,
        "decided_by": decision.decided_by,
        "support": rows(b.support),
        "features": [row | {"id": f"{name}/{row['id']}"} for name in used for row in rows(b.features.get(name, ()))]
        + [{"id": name, "status": "fail", "source": None, "why": ["not declared"]} for name in used
           if name not in b.features],
        "known_issues": rows(b.known_issues, deny=True),
        "probe": None if decision.probe is None else decision.probe.describe(),
        "reasons": [r.as_dict() for r in decision.reasons],
    }

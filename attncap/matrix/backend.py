"""What the capability data says about one backend: its archs, dtypes, versions, and a plane's query context."""

from __future__ import annotations

import re

from ..query import AttentionQuery
from ..rules import Ctx


def check_backend(registry, backend: str) -> None:
    if backend not in registry.compiled:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(sorted(registry.compiled))}")


def backend_archs(registry, backend: str) -> list[str]:
    """The archs a backend's support rules name (every arch when a rule names none), by compute capability."""
    vocab = registry.vocabulary
    names: set[str] = set()
    for rule in registry.backends[backend].support:
        if rule.arch is None:
            names = set(vocab.archs)
            break
        names |= vocab.expand_archs(rule.arch)[0]
    return sorted(names, key=vocab.cc)


def backend_dtypes(registry, backend: str) -> list[str]:
    vocab = registry.vocabulary
    named = {d for r in registry.backends[backend].support for d in (r.dtype or vocab.dtypes)}
    return [d for d in vocab.dtypes if d in named]


def _all_rules(bf) -> list:
    """The support rules, then every feature's rules."""
    return [*bf.support, *(r for rs in bf.features.values() for r in rs)]


def uses_cudnn(registry, backend: str) -> bool:
    bf = registry.backends[backend]
    return bf.package == "cudnn" or any(r.cudnn for r in _all_rules(bf)) or any(k.when.cudnn for k in bf.known_issues)


def mentioned_versions(registry, backend: str) -> list[str]:
    """Every version a `versions` specifier of the backend names, oldest first."""
    from packaging.version import InvalidVersion, Version
    bf = registry.backends[backend]
    specs = [r.versions for r in _all_rules(bf)] + [k.versions for k in bf.known_issues]
    found = set()
    for spec in filter(None, specs):
        for text in re.findall(r"[0-9][0-9A-Za-z.+!-]*", spec):
            try:
                found.add(Version(text))
            except InvalidVersion:
                pass
    return [str(v) for v in sorted(found)]


def plane_context(registry, backend: str, arch: str, dtype: str, version: str, cudnn: str | None,
                  training: bool, fields: dict | None = None) -> tuple[AttentionQuery, Ctx]:
    """The query every point of a plane shares (head dims aside) and the context its rules are judged in.

    `fields`: other AttentionQuery fields every point shares (seqlens, mask, window, ...)."""
    vocab = registry.vocabulary
    template = AttentionQuery(arch=arch, dtype=dtype, head_dim_qk=64, training=training, vocabulary=vocab,
                              **(fields or {}))
    b = registry.compiled[backend]
    version, cudnn = _as_evaluated(b, version, cudnn)
    return template, Ctx(arch, vocab.dtypes[dtype].bytes, version, cudnn, b.package, vocab.cc(arch))


def _as_evaluated(b, version: str | None, cudnn: str | None) -> tuple[str | None, str | None]:
    """The versions the rules are judged at, as resolve() does: matched, and clamped to the checked spans."""
    from ..coverage import assess
    from ..environment import Environment
    versions = {b.package: version} if b.package != "cudnn" else {}
    cov = assess(b, Environment(versions=versions, cudnn=version if b.package == "cudnn" else cudnn))
    return (version and cov.version), cov.cudnn

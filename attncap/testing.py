"""Test helpers: assert which backend attncap selects, and evaluate attention_backend markers.

Usable without pytest (plain AssertionError); the pytest plugin (attncap.pytest_plugin) builds
its marker, fixtures and --attncap-env on these functions. Never imports torch.
"""

from __future__ import annotations

from typing import Any, Mapping

from .environment import Environment
from .query import FIELDS, AttentionQuery, InvalidQueryError
from .resolver import BackendUnavailableError, Decision, Resolution, default_registry, resolve

SKIP_PREFIX = "attncap: "


class MarkerError(ValueError):
    """An attention_backend marker (or --attncap-env) that attncap cannot evaluate."""


def resolve_quietly(query: AttentionQuery, env: Environment | None = None, **kwargs) -> Resolution:
    """resolve(), but a forced backend (ATTNCAP_BACKEND) that cannot run gives its Resolution, not an error."""
    try:
        return resolve(query, env, **kwargs)
    except BackendUnavailableError as exc:
        return exc.resolution


def assert_selected(query: AttentionQuery | Mapping[str, Any], backend: str, env: Environment | None = None,
                    **resolve_kwargs) -> Resolution:
    """Fail with the full reasons table unless attncap selects `backend` for `query` in `env`.

    `query` is an AttentionQuery or a dict of its fields; `env` defaults to the detected environment.
    Returns the Resolution, so a test can look further.
    """
    __tracebackhide__ = True
    if not isinstance(query, AttentionQuery):
        query = build_query(dict(query))
    _check_backend(backend)
    resolution = resolve_quietly(query, env, **resolve_kwargs)
    if resolution.selected != backend:
        raise AssertionError(
            f"attncap selects {resolution.selected or 'no backend'}, not {backend}, for {query!r} "
            f"on {resolution.arch}\n{resolution.table()}")
    return resolution


def build_query(fields: dict[str, Any]) -> AttentionQuery:
    """An AttentionQuery from marker-style keyword arguments; unknown fields raise MarkerError."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise MarkerError(f"unknown AttentionQuery field(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(FIELDS)}")
    if "head_dim_qk" not in fields:
        raise MarkerError("head_dim_qk is required (head_dim_v defaults to it)")
    try:
        return AttentionQuery(**fields)
    except InvalidQueryError as exc:
        raise MarkerError(str(exc)) from None


def _check_backend(backend) -> None:
    known = default_registry().compiled
    if not isinstance(backend, str) or backend not in known:
        raise MarkerError(f"unknown backend {backend!r}; known: {', '.join(sorted(known))}")


def parse_env(text: str, base: Environment) -> Environment:
    """`arch=sm100,flash-attn-4=4.0.0b11,cudnn=9.10.2` applied to `base`; `package=` means not installed."""
    arch, cudnn, versions = None, None, {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise MarkerError(f"--attncap-env item {item!r}: expected KEY=VALUE (arch=sm100, cudnn=9.10.2, "
                              "flash-attn-4=4.0.0b11, package= for not installed)")
        if key == "arch":
            arch = value
        elif key == "cudnn":
            cudnn = value or None
            if cudnn is None:
                versions["cudnn"] = None
        else:
            versions[key] = value or None
    try:
        from .environment import known_packages
        from .versions import check_name
        for key in versions:  # a misspelt package would otherwise be ignored silently
            check_name(key.lower().replace("_", "-"), known_packages(), strict=True,
                       what="package in --attncap-env")
        return base.replace(arch=arch or None, versions=versions, cudnn=cudnn)
    except ValueError as exc:  # InvalidQueryError (arch), InvalidVersionError (a version or a package name)
        raise MarkerError(f"--attncap-env: {exc}") from None


def evaluate_marker(args: tuple, kwargs: dict, env: Environment, *, probes: bool = True
                    ) -> tuple[Decision | None, str | None]:
    """(decision, skip reason): the reason is None when the marker's backend can run its query in `env`.

    The marker's `arch`, when given, is a requirement: the environment's arch (detected, or from
    --attncap-env) must be that arch, so a test written for sm100 never runs on another GPU.
    """
    if len(args) != 1:
        raise MarkerError(f"expected exactly one backend id as positional argument, got {args!r}")
    backend = args[0]
    _check_backend(backend)
    query = build_query(dict(kwargs))
    if query.arch is not None and env.arch is not None and query.arch != env.arch:
        return None, f"{backend} on {env.arch}: the test is for {query.arch}"
    if query.arch is None and env.arch is None:
        return None, f"{backend}: no GPU detected here (evaluate as if on one with --attncap-env arch=...)"
    if query.arch is not None and env.arch is None:
        return None, (f"{backend} on {query.arch}: no GPU detected here (evaluate as if on one with "
                      f"--attncap-env arch={query.arch})")
    resolution = resolve_quietly(query, env, probes=probes)
    decision = resolution.decision(backend)
    if decision.supported:
        return decision, None
    reasons = "; ".join(r.message for r in decision.reasons) or decision.decided_by
    return decision, f"{backend} on {resolution.arch}: {reasons}"

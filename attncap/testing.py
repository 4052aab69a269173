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


def marker_archs(value) -> frozenset[str]:
    """A marker's `arch=`: an arch or alias ("sm100", "9.0"), a family ("blackwell"), a range
    ("sm100..sm121" or {"min": "sm100", "max": "sm121"}, either end optional), or a list of these."""
    vocab = default_registry().vocabulary
    families = vocab.families()
    if isinstance(value, (list, tuple, set, frozenset)) and not _is_cc_pair(value):
        return frozenset().union(*(marker_archs(v) for v in value)) if value else _bad_arch(value, families)
    if isinstance(value, dict):
        if not value or set(value) - {"min", "max"}:
            _bad_arch(value, families)
        lo, hi = value.get("min"), value.get("max")
    elif isinstance(value, str) and ".." in value:
        lo, _, hi = value.partition("..")
    elif isinstance(value, str) and value in families:
        return frozenset(families[value])
    else:
        name = _arch_or_none(vocab, value)
        return frozenset({name}) if name else _bad_arch(value, families)
    bounds = [None if not end else _arch_or_none(vocab, end) or _bad_arch(value, families) for end in (lo, hi)]
    low, high = (None if b is None else vocab.cc(b) for b in bounds)
    return frozenset(a for a in vocab.archs if (low is None or vocab.cc(a) >= low) and
                     (high is None or vocab.cc(a) <= high)) or _bad_arch(value, families)


def _is_cc_pair(value) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)


def _arch_or_none(vocab, value):
    try:
        return vocab.arch_name(value)
    except (TypeError, ValueError):
        return None


def _bad_arch(value, families):
    vocab = default_registry().vocabulary
    raise MarkerError(f"arch={value!r}: expected an arch or alias ({', '.join(_by_cc(vocab.archs))}), a family "
                      f"({', '.join(sorted(families))}), a range ('sm100..sm121' or {{'min': 'sm100'}}) "
                      "or a list of these")


def _by_cc(names) -> list[str]:
    vocab = default_registry().vocabulary
    return sorted(names, key=vocab.cc)


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
    --attncap-env) must be one of those it names (an arch, a family, a range or a list, see
    marker_archs), so a test written for sm100 never runs on another GPU. Without it the data
    decides: the test runs on every arch where attncap says the backend runs the query.
    """
    if len(args) != 1:
        raise MarkerError(f"expected exactly one backend id as positional argument, got {args!r}")
    backend = args[0]
    _check_backend(backend)
    fields = dict(kwargs)
    arch = fields.pop("arch", None)
    build_query(fields)  # bad fields fail first, on any machine
    wanted = None if arch is None else marker_archs(arch)
    shown = ", ".join(_by_cc(wanted)) if wanted else None
    if env.arch is None:
        where = f" on {shown}" if wanted else ""
        return None, (f"{backend}{where}: {env.no_arch_message()} here (evaluate as if on one with "
                      f"--attncap-env arch={_by_cc(wanted)[0] if wanted else '...'})")
    query = build_query({**fields, "arch": env.arch})
    if wanted is not None and env.arch not in wanted:
        resolution = resolve_quietly(query, env, probes=probes)
        also = " (attncap says it runs here too: widen or drop arch=)" \
            if resolution.decision(backend).supported else ""
        return None, f"{backend} on {env.arch}: the test is for {shown}{also}"
    resolution = resolve_quietly(query, env, probes=probes)
    decision = resolution.decision(backend)
    if decision.supported:
        return decision, None
    reasons = "; ".join(r.message for r in decision.reasons) or decision.decided_by
    return decision, f"{backend} on {resolution.arch}: {reasons}"

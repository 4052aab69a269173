"""Checked spans: were the versions in force checked, which versions the rules are evaluated at, and the outcome.

A version range in a rule says where a capability changes; a backend file's `checked` spans say how far the
facts were checked. Outside a span the nearest checked end's rules apply:
  newer than `last`  -> a supported answer is `unverified` (the rules of `last`; known issues stay in force),
  older than `first` -> `unknown` (the rules of `first` still have to support it: a rule saying the capability
                        begins later rejects it outright),
  an unknown build   -> `unknown` with the newest rules, `unverified` when a probe of the installed library
                        judged the query (the probe decides).
Assessed once per backend and environment (in the resolver's plan), never per query.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from packaging.version import Version

from .rules import Reason
from .versions import CUDNN, matched_as

OUTCOMES = ("supported", "unverified", "unknown", "rejected")
POLICIES = ("allow", "warn", "deny")
ENV_UNVERIFIED = "ATTNCAP_UNVERIFIED"
TRANSFORMER_ENGINE = "transformer-engine"  # a companion that rules read (rules.py `transformer_engine:`)


class Coverage(NamedTuple):
    version: str | None  # the backend package's version the rules see (None: not installed)
    cudnn: str | None  # the cuDNN version the rules see
    outcome: str  # what a supported answer becomes: supported | unverified | unknown
    notes: tuple[Reason, ...]  # normalisation and coverage reasons, listed first in the decision
    probe_decides: bool = False  # an unknown build of the package: a probe's yes makes it unverified
    transformer_engine: str | None = None  # the transformer-engine version the rules see (None: not installed)


CACHE_SIZE = 4096  # environments a backend keeps its coverage for


def assess(b, env) -> Coverage:
    """The coverage of backend `b` (compiled) in `env`, kept on `b` per environment (it reads nothing else)."""
    found = b.assessed.get(env)
    if found is None:
        if len(b.assessed) >= CACHE_SIZE:
            b.assessed.clear()
        found = b.assessed.setdefault(env, _assess(b, env))
    return found


def _assess(b, env) -> Coverage:
    version, cudnn, te = env.version(b.package), env.cudnn, env.version(TRANSFORMER_ENGINE)
    packages = dict.fromkeys((b.package, *b.checked))
    notes: list[Reason] = []
    states = set()
    unknown_build = False
    for package in packages:
        raw = env.cudnn if package == CUDNN else env.version(package)
        if raw is None:
            continue
        seen, state, why = _place(package, raw, b.checked.get(package))
        states.add(state)
        notes += why
        unknown_build |= state == "unknown_build" and package == b.package
        if package == b.package:
            version = seen
        if package == CUDNN:
            cudnn = seen
        if package == TRANSFORMER_ENGINE:
            te = seen
    outcome = "unknown" if states & {"older", "unknown_build"} else \
        "unverified" if states & {"newer", "ambiguous"} else "supported"
    return Coverage(version, cudnn, outcome, tuple(notes), unknown_build, te)


def _place(package: str, raw: str, span) -> tuple[str, str, list[Reason]]:
    """(version the rules see, state, reasons) for one package's raw version."""
    matched = matched_as(package, raw)
    notes = [Reason("version", matched.note, field="versions", actual=raw)] if matched.note else []
    if span is None:  # no span declared (an overlay's backend): matched as it is, no claim about coverage
        return matched.version or raw, "checked", notes
    if matched.version is None:
        notes = []  # the unknown-build note below says it
    first, last = (matched_as(package, v).version for v in (span.first, span.last))
    label = "cuDNN" if package == CUDNN else package
    if matched.version is None:
        notes.append(_note("unknown", f"{label} {raw} is an unknown build: the rules of the last checked "
                                      f"release {span.last} apply, unknown unless a probe judges the query",
                           span.last, raw))
        return last, "unknown_build", notes
    position = _position(matched.version, first, last)
    if position > 0:
        notes.append(_note("unverified", f"{label} {raw} is newer than the last checked release {span.last}: "
                                         f"the rules of {span.last} apply, unverified", span.last, raw))
        return last, "newer", notes
    if position < 0:
        notes.append(_note("unknown", f"{label} {raw} is older than the first checked release {span.first}: "
                                      f"the rules of {span.first} apply, unknown", span.first, raw))
        return first, "older", notes
    why = span.ambiguous.get(matched.version) or span.ambiguous.get(raw)
    if why is not None:
        notes.append(_note("unverified", f"{label} {raw} names several builds, unverified: {why}", None, raw))
        return matched.version, "ambiguous", notes
    return matched.version, "checked", notes


@lru_cache(maxsize=1024)
def _position(version: str, first: str, last: str) -> int:
    """-1 before the span first..last, 1 after it, 0 within (versions parsed once per triple)."""
    v = Version(version)
    return 1 if v > Version(last) else -1 if v < Version(first) else 0


def _note(code: str, message: str, expected, actual) -> Reason:
    return Reason(code, message, field="checked", expected=expected, actual=actual)


def policy(value) -> str:
    """The unverified= policy: the argument, else ATTNCAP_UNVERIFIED, else allow."""
    import os
    chosen = value if value is not None else os.environ.get(ENV_UNVERIFIED) or "allow"
    if chosen not in POLICIES:
        from .query import InvalidQueryError
        raise InvalidQueryError("unverified", chosen, f"one of {', '.join(POLICIES)} (argument unverified= or "
                                                      f"{ENV_UNVERIFIED})")
    return chosen


def profile_block(registry, profile: str | None, b, env) -> Reason | None:
    """Why consumer profile `profile` refuses backend `b` at the installed version, or None."""
    if profile is None:
        return None
    window = registry.profiles[profile].accepts.get(b.id)
    raw = env.version(b.package) if b.package != CUDNN else env.cudnn
    if window is None or raw is None:
        return None
    from .rules import version_matches
    seen = matched_as(b.package, raw).version
    if seen is not None and version_matches(window.versions, seen):
        return None
    command = b.install.replace("{specifier}", window.versions)
    return Reason("profile", f"profile {profile} accepts {b.package}{window.versions} only ({window.why}); "
                             f"{b.package} {raw} is outside it: {command}", profile, window.source, "versions",
                  command, raw)


def check_profile(registry, profile: str | None) -> None:
    if profile is not None and profile not in registry.profiles:
        from .versions import check_name
        check_name(profile, registry.profiles, strict=True, what="profile")


def within_span(b, version: str) -> tuple[str, str | None]:
    """(the version `b`'s rules are evaluated at, why it differs from `version`) for its own package."""
    span = b.checked.get(b.package)
    seen, state, notes = _place(b.package, version, span)
    if state in ("newer", "older", "unknown_build"):
        side = {"newer": "newer than", "older": "older than", "unknown_build": "an unknown build, outside"}[state]
        return seen, (f"{version} is beyond the checked span {span.first} .. {span.last} ({side} it): "
                      f"the rules of {seen} apply to it, {'unverified' if state == 'newer' else 'unknown'}")
    return seen, "; ".join(n.message for n in notes) or None

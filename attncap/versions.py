"""How a version string is matched against the data: validation, normalisation and their reasons.

The rules (docs/format.md, "Versions"), applied once per environment, never per query:
  - a local label is ignored: `2.7.4.post1+nv26.2` is matched as `2.7.4.post1`;
  - a development build of a release, `X.Y.Za0` or `X.Y.Z.devN` (NGC `2.11.0a0+gitf00d.nv26.02`, nightlies,
    source builds `4.0.0.dev0`), is matched as `X.Y.Z`, with a reason saying so;
  - `0.0.0` (setuptools-scm's fallback when a source build has no git metadata) and a detected version
    that does not parse are an unknown build: the newest checked rules apply and the answer is `unknown`
    unless a probe of the installed library judges the query;
  - cuDNN is matched by its runtime version, three parts: a four-part wheel version `9.24.1.1`
    (nvidia-cudnn-cu12) is the runtime `9.24.1`.
A version given by hand (CLI, Environment(...), --attncap-env) must parse: a typo is an error, never ignored.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from packaging.version import InvalidVersion, Version

CUDNN = "cudnn"


class InvalidVersionError(ValueError):
    """A version or a package name given by hand that attncap cannot use; the message says what is allowed."""


class Matched(NamedTuple):
    """What a raw version is matched as: `version` None for an unknown build; `note` says why when it differs."""

    version: str | None
    note: str | None


@lru_cache(maxsize=1024)
def matched_as(package: str, raw: str) -> Matched:
    """The version the rules of `package` see for the raw version string `raw`."""
    try:
        v = Version(raw)
    except InvalidVersion:
        return Matched(None, f"{package} {raw!r} is not a PEP 440 version: an unknown build")
    if not any(v.release):
        return Matched(None, f"{package} {raw} is an unknown build (a source build without version metadata)")
    if package == CUDNN and len(v.release) > 3:
        three = ".".join(map(str, v.release[:3]))
        return Matched(three, f"cuDNN {raw} (a wheel version) is the cuDNN runtime {three}")
    release = ".".join(map(str, v.release))
    if (v.pre == ("a", 0) or v.dev is not None) and v.pre in (None, ("a", 0)) and v.post is None:
        return Matched(release, f"{package} {raw} is a development build of {release}, matched as {release}")
    return Matched(v.public, None)  # a local label (+cu130, +nv26.2) is a build tag of the same release


def checked_version(package: str, value: object) -> str:
    """`value` as a version string, or InvalidVersionError naming it (for versions given by hand)."""
    text = str(value).strip()
    try:
        Version(text)
    except InvalidVersion:
        example = "9.10.2" if package == CUDNN else "2.8.3, 4.0.0b11 or 2.11.0a0+gitf00d"
        raise InvalidVersionError(f"{package}={text!r} is not a PEP 440 version (e.g. {example})") from None
    if package == CUDNN:
        return matched_as(CUDNN, text).version or text
    return text


def check_name(name: str, known, *, strict: bool, what: str = "package") -> None:
    """InvalidVersionError for an unknown distribution name: always when `strict`, else only for a likely typo."""
    known = sorted(set(known))
    if name in known:
        return
    import difflib  # only for a name that is not known
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6 if strict else 0.8)
    if not strict and not close:
        return  # a package attncap does not know (an overlay's backend may use it)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise InvalidVersionError(f"unknown {what} {name!r}{hint} (known: {', '.join(known)})")

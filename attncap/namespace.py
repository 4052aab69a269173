"""The shared `flash_attn` import namespace: flash-attn (FA2) and flash-attn-4 both install into it.

FA2's API lives in `flash_attn/__init__.py` (`from flash_attn import flash_attn_func`); FA4 ships
only `flash_attn/cute/...` (no `__init__.py` of its own, wheels 4.0.0b4 and 4.0.0b36). When both
are installed, FA2 works only while the `flash_attn/__init__.py` on disk is the one FA2 installed:
another distribution overwriting it, or an uninstall removing it, breaks
`from flash_attn import flash_attn_func` (with flash-attn-4 alone, flash_attn is a namespace
package without that API: huggingface/transformers#44559; TransformerEngine PR #3341 keeps exactly
one installed). attncap reads the distributions' file lists (importlib.metadata RECORD, with
hashes) to say which distribution owns that file: a broken FA2 is rejected (`conflict`). A what-if
environment has no files to read: there FA2 keeps its verdict with a `namespace` reason saying the
co-installation is unchecked.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import lru_cache

NAMESPACE = "flash_attn"
INIT = "flash_attn/__init__.py"
# Distributions known to install into flash_attn/ (FA2's RECORD lists flash_attn/__init__.py;
# flash-attn-4's lists flash_attn/cute/*); an installed distribution whose files say so counts too.
KNOWN_PROVIDERS = ("flash-attn", "flash-attn-4")
NEEDS_INIT = "flash-attn"  # the distribution whose API is flash_attn/__init__.py
SOURCE = "huggingface/transformers#44559; TransformerEngine PR #3341 (keep exactly one flash_attn distribution)"


@dataclass(frozen=True)
class Provider:
    distribution: str
    version: str
    lists_init: bool  # its RECORD lists flash_attn/__init__.py
    owns_init: bool  # ... and the file on disk has the hash it recorded


def providers(candidates) -> tuple[Provider, ...]:
    """The installed distributions among `candidates` whose file lists put files under flash_attn/."""
    return _providers(tuple(sorted(set(candidates) | set(KNOWN_PROVIDERS))))


@lru_cache(maxsize=4)
def _providers(candidates: tuple[str, ...]) -> tuple[Provider, ...]:
    import importlib.metadata
    out = []
    for name in candidates:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        files = [f for f in dist.files or () if f.as_posix().startswith(NAMESPACE + "/")]
        if not files:
            continue
        init = next((f for f in files if f.as_posix() == INIT), None)
        out.append(Provider(name, dist.version, init is not None, init is not None and _intact(dist, init)))
    return tuple(out)


def _intact(dist, record) -> bool:
    """The file on disk is the one this distribution recorded (same sha256)."""
    path = dist.locate_file(record)
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if record.hash is None:
        return True  # no hash recorded (e.g. editable install): trust the listing
    digest = base64.urlsafe_b64encode(hashlib.new(record.hash.mode, data).digest()).rstrip(b"=").decode()
    return digest == record.hash.value


def clear() -> None:
    _providers.cache_clear()


def conflicts(env, packages) -> dict[str, tuple[str, bool]]:
    """{package: (reason, proven)} for the packages of `env` that the shared namespace breaks (proven:
    the installed files show it) or may break (a what-if: unchecked)."""
    present = [p for p in KNOWN_PROVIDERS if env.version(p) is not None]
    if NEEDS_INIT not in present or len(present) < 2:
        return {}
    installed = {p.distribution: p for p in providers(packages)}
    others = ", ".join(f"{p} {env.version(p)}" for p in present if p != NEEDS_INIT)
    fa2 = installed.get(NEEDS_INIT)
    as_installed = all(p in installed and installed[p].version == env.version(p) for p in present)
    if not as_installed:
        return {NEEDS_INIT: (f"unchecked: {NEEDS_INIT} {env.version(NEEDS_INIT)} shares the flash_attn namespace with "
                             f"{others}; `from flash_attn import flash_attn_func` works only while {INIT} on disk "
                             f"is {NEEDS_INIT}'s, which attncap checks on installed distributions, not in a what-if",
                             False)}
    if fa2.owns_init:
        return {}
    owner = next((p.distribution for p in installed.values() if p.owns_init), None)
    state = f"is {owner}'s" if owner else ("was overwritten" if fa2.lists_init and _exists(fa2) else "is missing")
    return {NEEDS_INIT: (f"{NEEDS_INIT} {fa2.version} shares the flash_attn namespace with {others} and its {INIT} "
                         f"{state}: `from flash_attn import flash_attn_func` fails; reinstall {NEEDS_INIT} or keep one "
                         "installed", True)}


def _exists(provider: Provider) -> bool:
    import importlib.metadata
    return importlib.metadata.distribution(provider.distribution).locate_file(INIT).exists()


def describe(packages) -> str:
    """For `attncap info`: who provides flash_attn and who owns its __init__.py."""
    found = providers(packages)
    if not found:
        return "not installed"
    owner = next((p.distribution for p in found if p.owns_init), None)
    names = ", ".join(f"{p.distribution} {p.version}" for p in found)
    return f"provided by {names}; {INIT}: {owner or 'none (a namespace package: no FA2 API)'}"

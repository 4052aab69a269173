"""The loaded data: vocabularies (archs, dtypes), policy, and the merged backend files."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported at run time: a wheel's snapshot loads without pydantic or YAML (snapshot.py)
    from .models import Arch, ArchSpec, BackendFile, Dtype, PolicyFile
    from .yamlsource import Document, Problem


@dataclass(frozen=True)
class Location:
    """Where a piece of data was written: for lint messages and for `source` links."""

    file: str
    line: int
    column: int
    path: tuple
    doc: Document | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, doc: Document, path: tuple) -> Location:
        line, column = doc.position(path)
        return cls(doc.file, line, column, path, doc)

    def problem(self, message: str, *, sub: tuple = (), severity: str = "error", check: str = "") -> Problem:
        """A problem at this location, or at `sub` below it when the document knows where that is."""
        if self.doc is not None:
            return self.doc.problem(self.path + sub, message, severity=severity, check=check)
        from .yamlsource import Problem, dotted
        return Problem(self.file, self.line, self.column, dotted(self.path + sub), message, severity, check)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def cc_key(compute_capability: str) -> tuple[int, int]:
    major, minor = compute_capability.split(".")
    return int(major), int(minor)


@dataclass(frozen=True)
class Vocabulary:
    archs: dict[str, Arch]
    dtypes: dict[str, Dtype]
    arch_aliases: dict[str, str]
    dtype_aliases: dict[str, str]

    @classmethod
    def build(cls, archs: dict[str, Arch], dtypes: dict[str, Dtype]) -> Vocabulary:
        arch_aliases: dict[str, str] = {}
        for arch in archs.values():
            for alias in (arch.name, arch.compute_capability, *arch.aliases, *arch.renamed_from):
                arch_aliases[alias.lower()] = arch.name
        dtype_aliases = {alias.lower(): d.name for d in dtypes.values() for alias in (d.name, *d.aliases)}
        return cls(archs, dtypes, arch_aliases, dtype_aliases)

    def arch_name(self, value: object) -> str | None:
        """Canonical arch name for a name, alias, "9.0", (9, 0) or 90; None if unknown."""
        if isinstance(value, tuple) and len(value) == 2:
            value = f"{value[0]}.{value[1]}"
        return self.arch_aliases.get(str(value).lower())

    def dtype_name(self, value: object) -> str | None:
        return self.dtype_aliases.get(str(value).lower())

    def families(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for arch in self.archs.values():
            out.setdefault(arch.family, []).append(arch.name)
        return out

    def cc(self, name: str) -> tuple[int, int]:
        return cc_key(self.archs[name].compute_capability)

    def expand_archs(self, spec: ArchSpec) -> tuple[frozenset[str], list[str]]:
        """The arch names a rule's `arch` covers, and any names in it that are unknown.

        `spec` is a list of names, an ArchFamily or an ArchRange, as a model or as its plain Record."""
        if hasattr(spec, "family"):
            names = {a.name for a in self.archs.values() if a.family == spec.family}
            return frozenset(names), [] if names else [spec.family]
        if hasattr(spec, "min"):  # an ArchRange
            bounds, unknown = [], []
            for end in (spec.min, spec.max):
                name = None if end is None else self.arch_name(end)
                if end is not None and name is None:
                    unknown.append(end)
                bounds.append(None if name is None else self.cc(name))
            low, high = bounds
            names = {n for n in self.archs if (low is None or self.cc(n) >= low) and (high is None or self.cc(n) <= high)}
            return frozenset(names), unknown
        known = [n for n in spec if n in self.archs]
        return frozenset(known), [n for n in spec if n not in self.archs]


@dataclass(eq=False)  # compared and hashed by identity: it keys the resolution cache
class Registry:
    vocabulary: Vocabulary
    policy: PolicyFile
    backends: dict[str, BackendFile]
    origins: dict[tuple, Location]
    files: list[str]
    profiles: dict = field(default_factory=dict)  # consumer profiles by name (profiles.yaml)

    def origin(self, *key) -> Location | None:
        return self.origins.get(key)

    def preference(self, arch: str) -> tuple[str, ...]:
        """Backends in policy order for the arch's family; unlisted backends follow, sorted."""
        return self._preferences[arch]

    @cached_property
    def _preferences(self) -> dict[str, tuple[str, ...]]:
        return {arch: tuple(self._preference(arch)) for arch in self.vocabulary.archs}

    def profile_preference(self, arch: str, profile: str | None) -> tuple[str, ...]:
        """The order for `arch` under a consumer profile: its own family order where it has one."""
        if profile is None or self.vocabulary.archs[arch].family not in self.profiles[profile].families:
            return self._preferences[arch]
        return tuple(self._preference(arch, self.profiles[profile].families))

    def _preference(self, arch: str, families=None) -> list[str]:
        family = self.vocabulary.archs[arch].family
        chosen = (families or self.policy.families).get(family)
        order = list(chosen.order if chosen else self.policy.default)
        return [b for b in order if b in self.backends] + sorted(set(self.backends) - set(order))

    @cached_property
    def compiled(self):
        from .rules import compile_registry
        return compile_registry(self)

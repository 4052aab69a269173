"""Load capability directories into a Registry, with every problem located in its file.

Directories are read in order: the packaged data, then `ATTNCAP_PATH` (os.pathsep-separated),
then any given by the caller. A later directory overlays earlier ones: it can add an arch,
a dtype or a backend, add rules to a backend, replace a rule by id, or remove one with
`remove: true`. Loading is all-or-nothing: any error raises LoadError with all problems of
all files, and no registry is returned.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import memo
from .forking import renew_after_fork
from .registry import Location, Registry, Vocabulary

if TYPE_CHECKING:  # the full load imports them when it runs: a wheel's snapshot needs none (snapshot.py)
    from .models import BackendFile, Model, PolicyFile
    from .yamlsource import Document, Problem

ENV_PATH = "ATTNCAP_PATH"


class LoadError(Exception):
    """The capability data has errors; `problems` lists each with its file:line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def packaged_dir() -> Path:
    """The data shipped in the wheel, or the checkout's top-level directory when run from source."""
    here = Path(__file__).resolve().parent
    installed = here / "_data" / "capabilities"
    return installed if installed.is_dir() else here.parent / "capabilities"


def data_dirs(extra: tuple[str | os.PathLike, ...] = (), *, use_env: bool = True) -> list[Path]:
    dirs = [packaged_dir()]
    if use_env:
        dirs += [Path(p) for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p]
    if any(os.fspath(p) == "" for p in extra):  # Path("") is the current directory: never by accident
        raise ValueError("an empty path is not a capability directory (write '.' for the current directory)")
    return dirs + [Path(p) for p in extra]


_default = None
_default_lock = threading.Lock()
renew_after_fork(globals(), "_default_lock")


def default_registry() -> Registry:
    """The packaged data plus ATTNCAP_PATH overlays, loaded once (thread-safe)."""
    global _default
    registry = _default  # read once: forget_default_registry() may reset the global meanwhile
    if registry is None:
        with _default_lock:
            registry = _default
            if registry is None:
                registry = _default = load_registry()
    return registry


def forget_default_registry() -> None:
    """The next default_registry() call loads the data again (e.g. after ATTNCAP_PATH changed)."""
    global _default
    _default = None
    memo.forget()  # queries were validated against its vocabulary


def load_registry(extra: tuple[str | os.PathLike, ...] = (), *, use_env: bool = True) -> Registry:
    """Load and check the data; raise LoadError when any error is found.

    Checks that can only warn are left to `attncap validate`: loading is on a framework's path.
    Without overlays, an installed wheel's build-time snapshot of the same files stands in (snapshot.py).
    """
    dirs = data_dirs(extra, use_env=use_env)
    if dirs == [packaged_dir()]:
        from .snapshot import load as load_snapshot
        registry = load_snapshot(dirs[0])
        if registry is not None:
            return registry
    registry, problems = check_paths(dirs, warnings=False)
    if registry is None:
        raise LoadError(problems)
    return registry


def check_paths(paths: list[Path], *, warnings: bool = True) -> tuple[Registry | None, list[Problem]]:
    """Parse, validate, merge and lint; return the registry (None on errors) and all problems."""
    from . import lint  # here, with YAML and pydantic: a wheel's snapshot needs none of them (load_registry)
    parsed: list[tuple[Document, Model]] = []
    problems: list[Problem] = []
    for path in _yaml_files(paths, problems):
        doc, model = _parse(path, problems)
        if model is not None:
            parsed.append((doc, model))
            problems += lint.check_document(doc, model, warnings=warnings)
    if any(p.severity == "error" for p in problems):
        return None, problems + _missing_sources(parsed, problems)
    merged = _Merger()
    for doc, model in parsed:
        merged.add(doc, model, problems)
    if any(p.severity == "error" for p in problems):
        return None, problems
    registry = merged.registry(problems)
    if registry is not None:
        problems += lint.check_registry(registry, warnings=warnings)
    if any(p.severity == "error" for p in problems):
        return None, problems
    return registry, problems


def _missing_sources(parsed, problems: list[Problem]) -> list[Problem]:
    """Rules without a source, reported with the other errors of a run that stops before the merged
    data is linted (where missing-source is checked), so that fixing one error does not reveal another."""
    from .models import BackendFile
    seen = {(p.file, p.line, p.message) for p in problems}
    out = []
    for doc, model in parsed:
        if not isinstance(model, BackendFile):
            continue
        sections = [(("support",), model.support), (("known_issues",), model.known_issues)]
        sections += [(("features", name), rules) for name, rules in model.features.items()]
        for path, rules in sections:
            for i, rule in enumerate(rules):
                if not rule.source and not rule.remove:
                    p = doc.problem(path + (i, "id"), f"rule {rule.id!r} has no source: say where this fact comes from")
                    if (p.file, p.line, p.message) not in seen:
                        out.append(p)
    return out


def _yaml_files(paths: list[Path], problems: list[Problem]) -> list[Path]:
    from .models import VOCABULARY_FILES
    from .yamlsource import Problem
    files: list[Path] = []
    for path in paths:
        try:
            path.stat()
        except OSError as exc:  # e.g. a name too long, a symlink loop (is_dir() raises for some of these)
            if not isinstance(exc, FileNotFoundError):
                problems.append(Problem(_shown(path), 1, 1, "", f"cannot read: {exc.strerror or exc}"))
                continue
        if path.is_dir():
            # Vocabularies first, so a backend overlay in the same directory can use a new arch.
            found = sorted(path.glob("*.yaml"), key=lambda p: (p.name not in VOCABULARY_FILES, p.name))
            files += [p for p in found if not p.name.startswith(".")]
            problems += _skipped_files(path, found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(Problem(str(path), 1, 1, "", "no such file or directory"))
    return files


def _shown(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 200 else f"{text[:100]}...{text[-60:]} ({len(text)} characters)"


def _skipped_files(directory: Path, found: list[Path]) -> list[Problem]:
    """Files a directory holds but loading does not read: said, not skipped silently."""
    from .yamlsource import Problem
    out = [Problem(str(p), 1, 1, "", "a hidden file (editor backup?) is not loaded: rename it to load it",
                   severity="warning", check="overlay") for p in found if p.name.startswith(".")]
    out += [Problem(str(p), 1, 1, "", "capability files end in .yaml: this .yml file is not loaded (rename it)",
                    check="overlay") for p in sorted(directory.glob("*.yml")) if not p.name.startswith(".")]
    return out


def _parse(path: Path, problems: list[Problem]) -> tuple[Document | None, Model | None]:
    from pydantic import ValidationError

    from .models import VOCABULARY_FILES, BackendFile
    from .yamlsource import YamlError, read_document
    try:
        doc = read_document(path)
    except YamlError as exc:
        problems.append(exc.problem)
        return None, None
    model_type = VOCABULARY_FILES.get(path.name, BackendFile)
    if not isinstance(doc.value, dict):
        problems.append(doc.problem((), f"expected a mapping at the top level, found {type(doc.value).__name__}"))
        return doc, None
    try:
        return doc, model_type.model_validate(doc.value)
    except ValidationError as exc:
        problems += [_located(doc, err) for err in _without_union_noise(doc, exc.errors(include_url=False))]
        return doc, None


def _without_union_noise(doc: Document, errors: list[dict]) -> list[dict]:
    """Of a union's errors (pydantic reports every branch), keep the branch the written value is:
    a list written for `arch` gets the list's error, not also "should be a dictionary" twice."""
    def branch(err):  # (data path before the union label, the label)
        for i, part in enumerate(err["loc"]):
            if isinstance(part, str) and (part[:1].isupper() or "[" in part):
                return err["loc"][:i], part
        return None, None
    kept = []
    for err in errors:
        at, label = branch(err)
        if label is not None:
            value = _value_at(doc.value, at)
            written = "list" if isinstance(value, list) else "dict" if isinstance(value, dict) else None
            if written and (label.startswith("list") != (written == "list")):
                continue
        kept.append(err)
    return kept or errors


def _value_at(value, loc: tuple):
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _located(doc: Document, err: dict) -> Problem:
    """Turn a pydantic error into a Problem at the YAML position of its location."""
    path = _data_path(doc, err["loc"])
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = f"unknown key {path[-1]!r}" if path else "unknown key"
        if path and isinstance(path[-1], str) and not path[-1].replace("-", "_").isidentifier():
            message += ("; a comma inside an unquoted value of a {...} mapping starts a new key: quote the value "
                        "(source: \"a, b\")")
    elif err["type"] == "literal_error":
        message = f"{err['input']!r} is not allowed; expected {err['ctx']['expected']}"
    elif err["type"] == "missing":
        message = "required key is missing"
    elif err["type"] == "value_error":
        message = str(err.get("ctx", {}).get("error", message))  # our validators' own words, which name the value
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        message = f"{message} (got {err['input']!r})"
        if err["type"] == "string_type" and isinstance(err["input"], (int, float)) and "arch" in path:
            message += f": write the arch's name (e.g. sm{str(err['input']).replace('.', '')}); an unquoted " \
                       f"{err['input']!r} is a YAML number"
    at_key = err["type"] == "extra_forbidden" or "[key]" in err["loc"]
    return doc.problem(path, message, at_key=at_key)


def _data_path(doc: Document, loc: tuple) -> tuple:
    """Keep the parts of a pydantic location that index into the document.

    Pydantic inserts labels such as 'list[str]' or 'ArchFamily' for union branches; walking
    the data drops them, and a missing key's path ends at its parent.
    """
    path: tuple = ()
    value = doc.value
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        elif isinstance(value, dict) and part not in doc.positions and not str(part)[:1].isupper() \
                and "[" not in str(part):
            return path + (part,)  # an absent key: name it, positioned at its parent
        else:
            continue
        path += (part,)
    return path


def _models():
    from . import models
    return models


_MERGED_BY_ID = {"support", "features", "known_issues", "checked"}  # other keys of a backend overlay replace the value


@dataclass
class _Merger:
    """Accumulates vocabularies, policy and backends across directories, later ones winning."""

    archs: dict = field(default_factory=dict)
    dtypes: dict = field(default_factory=dict)
    policy: PolicyFile = field(default_factory=lambda: _models().PolicyFile())
    backends: dict[str, BackendFile] = field(default_factory=dict)
    origins: dict[tuple, Location] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    profiles: dict = field(default_factory=dict)
    backend_files: dict[tuple, str] = field(default_factory=dict)  # (directory, backend) -> its file

    def add(self, doc: Document, model: Model, problems: list[Problem]) -> None:
        from .models import ArchsFile, DtypesFile, PolicyFile, ProfilesFile
        self.files.append(doc.file)
        if isinstance(model, ArchsFile):
            for i, arch in enumerate(model.archs):
                self.archs[arch.name] = arch
                self.origins[("arch", arch.name)] = Location.of(doc, ("archs", i))
        elif isinstance(model, DtypesFile):
            for i, dtype in enumerate(model.dtypes):
                self.dtypes[dtype.name] = dtype
                self.origins[("dtype", dtype.name)] = Location.of(doc, ("dtypes", i))
        elif isinstance(model, PolicyFile):
            self._add_policy(doc, model)
        elif isinstance(model, ProfilesFile):
            for name, profile in model.profiles.items():  # a later directory replaces a profile by name
                self.profiles[name] = profile
                self.origins[("profile", name)] = Location.of(doc, ("profiles", name))
        else:
            self._add_backend(doc, model, problems)

    def _add_policy(self, doc: Document, policy: PolicyFile) -> None:
        update = {"families": {**self.policy.families, **policy.families}}
        if policy.default:
            update |= {"default": policy.default, "default_why": policy.default_why}
            self.origins[("policy", "default")] = Location.of(doc, ("default",))
        for family in policy.families:
            self.origins[("policy", family)] = Location.of(doc, ("families", family))
        self.policy = self.policy.model_copy(update=update)

    def _add_backend(self, doc: Document, new: BackendFile, problems: list[Problem]) -> None:
        old = self.backends.get(new.backend)
        b = new.backend
        other = self.backend_files.setdefault((Path(doc.file).parent, b), doc.file)
        if other != doc.file:  # e.g. flash_attn_4.yaml and flash-attn-4.yaml: which wins would be the sort order
            problems.append(doc.problem(("backend",), f"backend {b!r} is also defined in {other} (same directory): "
                                                      "keep one file per backend", check="overlay"))
        given = {k: getattr(new, k) for k in new.model_fields_set - _MERGED_BY_ID - {"backend"}}
        for key in given:
            self.origins[(b, key)] = Location.of(doc, (key,))
        self.origins.setdefault((b, "backend"), Location.of(doc, ("backend",)))
        base = old or _models().BackendFile(backend=b)
        support = self._merge_rules(doc, b, ("support",), base.support, new.support, problems)
        known = self._merge_rules(doc, b, ("known_issues",), base.known_issues, new.known_issues, problems)
        features = dict(base.features)
        for name, rules in new.features.items():
            features[name] = self._merge_rules(doc, b, ("features", name), features.get(name, []), rules, problems)
        checked = {**base.checked, **new.checked}  # an overlay states its own spans per package
        for package in new.checked:
            self.origins[(b, "checked", package)] = Location.of(doc, ("checked", package))
        self.backends[b] = base.model_copy(
            update={**given, "support": support, "known_issues": known, "features": features, "checked": checked})

    def _merge_rules(self, doc, backend, path, old, new, problems):
        """Rules by id: a new id is added, a known id replaced, `remove: true` deletes it."""
        section = ".".join(path)  # the key lint uses to find a rule's origin
        rules = {r.id: r for r in old}
        for i, rule in enumerate(new):
            where = path + (i,)
            if rule.remove:
                if rules.pop(rule.id, None) is None:
                    problems.append(doc.problem(where + ("id",), f"cannot remove {rule.id!r}: no such rule in "
                                                                  f"{backend} {section}", check="overlay"))
                continue
            rules[rule.id] = rule
            self.origins[(backend, section, rule.id)] = Location.of(doc, where)
        return list(rules.values())

    def registry(self, problems: list[Problem]) -> Registry | None:
        vocabulary = Vocabulary.build(self.archs, self.dtypes)
        for name, backend in self.backends.items():
            for key in ("package", "install"):
                if getattr(backend, key) is None:
                    loc = self.origins[(name, "backend")]
                    problems.append(loc.problem(f"backend {name!r} has no {key!r} (an overlay may omit it only "
                                                "for a backend that exists already)", check="overlay"))
        if any(p.severity == "error" for p in problems):
            return None
        return Registry(vocabulary, self.policy, self.backends, self.origins, self.files, self.profiles)

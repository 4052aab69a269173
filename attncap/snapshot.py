"""The packaged data, validated at build time, as plain JSON shipped in the wheel.

Loading the packaged YAML validates every document with pydantic and lints the merged
registry: most of `import attncap` + first resolve. The wheel's build hook (hatch_build.py)
runs that full load once and writes its result here (`attncap/_data/snapshot.json`) with the
sha256 of every YAML file it came from. At run time the snapshot stands in for the full load
only when it describes exactly the files installed beside it (same names, same hashes) and no
overlay is asked for (ATTNCAP_PATH, --data); anything else takes the full load. JSON, not
pickle: reading it runs no code.

The run-time path imports neither pydantic nor YAML nor lint nor the models: each validated model
comes back as a plain Record (plain.py) with every field written out by the build, defaults
included, so nothing is left to fill in. Origins come back as Locations without their Document
(lint, which reads documents, only runs on the full load). An overlay merges onto models only:
with an overlay the packaged data is fully loaded too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .plain import make

FORMAT = 3  # 2: consumer profiles; 3: plain records with every field (no pydantic at run time)
FILE_NAME = "snapshot.json"
KIND = "@"  # the key naming a model in the JSON (no data key starts with it: the build checks)


def packaged_snapshot() -> Path:
    return Path(__file__).resolve().parent / "_data" / FILE_NAME


def yaml_hashes(directory: Path) -> dict[str, str]:
    """{file name: sha256} of the YAML files the loader would read from `directory`."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.yaml"))}


# ---------- build time ----------

def write(capabilities: Path, out: Path) -> None:
    """Fully load and check `capabilities` (errors and warnings), then write the snapshot to `out`."""
    from .loader import LoadError, check_paths
    capabilities = Path(capabilities)
    registry, problems = check_paths([capabilities])
    if registry is None:
        raise LoadError(problems)
    base = str(capabilities.resolve())
    data = {
        "format": FORMAT,
        "hashes": yaml_hashes(capabilities),
        "archs": [_dump(a) for a in registry.vocabulary.archs.values()],
        "dtypes": [_dump(d) for d in registry.vocabulary.dtypes.values()],
        "policy": _dump(registry.policy),
        "backends": [_dump(b) for b in registry.backends.values()],
        "profiles": {name: _dump(p) for name, p in registry.profiles.items()},
        "origins": [[list(key), _relative(loc.file, base), loc.line, loc.column, list(loc.path)]
                    for key, loc in registry.origins.items()],
        "files": [_relative(f, base) for f in registry.files],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")  # key order is data order


def _relative(file: str, base: str) -> str:
    path = Path(file).resolve()
    if path.parent != Path(base):
        raise ValueError(f"{file} is not in {base}")
    return path.name


def _dump(value):
    """Plain JSON: a model is an object with every field (defaults included) and its name under "@"."""
    from pydantic import BaseModel
    if isinstance(value, BaseModel):
        return {KIND: type(value).__name__, **{name: _dump(getattr(value, name)) for name in type(value).model_fields}}
    if isinstance(value, dict):
        if any(not isinstance(k, str) or k.startswith(KIND) for k in value):
            raise TypeError(f"snapshot keys are strings not starting with {KIND!r}: {list(value)}")
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if isinstance(value, tuple):
            raise TypeError("tuples in the models: extend the snapshot format")
        return [_dump(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot snapshot a {type(value).__name__}")


# ---------- run time ----------

def load(capabilities: Path, snapshot: Path | None = None):
    """The registry of `capabilities` from its snapshot, or None when there is none or it does not match."""
    snapshot = snapshot or packaged_snapshot()
    try:
        data = json.loads(snapshot.read_text(encoding="utf-8"), object_hook=_record)
    except (OSError, ValueError, TypeError):  # TypeError: a model name that is not a string
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("hashes") != yaml_hashes(capabilities):
        return None
    from .registry import Location, Registry, Vocabulary
    base = str(capabilities)
    archs = {a.name: a for a in data["archs"]}
    dtypes = {d.name: d for d in data["dtypes"]}
    backends = {b.backend: b for b in data["backends"]}
    origins = {tuple(key): Location(os.path.join(base, file), line, column, tuple(path))
               for key, file, line, column, path in data["origins"]}
    return Registry(Vocabulary.build(archs, dtypes), data["policy"], backends, origins,
                    [os.path.join(base, f) for f in data["files"]], data["profiles"])


def _record(obj: dict):
    """json's object hook: a model's object becomes its plain Record (plain.py), other objects stay dicts."""
    name = obj.pop(KIND, None)
    return obj if name is None else make(name, obj)

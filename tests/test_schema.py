"""The committed JSON Schemas: current, valid for the packaged data, and in agreement with the models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from attncap import schema as schema_module
from attncap.cli import main
from attncap.loader import packaged_dir
from attncap.models import SCHEMA_NAMES, VOCABULARY_FILES, ArchsFile, BackendFile, DtypesFile, PolicyFile, ProfilesFile

PACKAGED = sorted(packaged_dir().glob("*.yaml"))
KIND = {model: name for model, name in SCHEMA_NAMES.items()}


def kind_of(path: Path) -> str:
    return KIND[VOCABULARY_FILES.get(path.name, BackendFile)]


def validator(kind: str) -> jsonschema.protocols.Validator:
    text = (schema_module.schemas_dir() / f"{kind}.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# (a) -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.name)
def test_packaged_file_validates_against_committed_schema(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(kind_of(path)).iter_errors(data)]
    assert not errors, "\n".join(errors)


# (b) -------------------------------------------------------------------------------------

def test_schema_check_passes_on_the_committed_schemas(capsys):
    assert main(["schema", "--check"]) == 0
    assert capsys.readouterr().err == ""


def test_schema_check_fails_on_a_stale_schema(tmp_path, monkeypatch, capsys):
    written = schema_module.write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.schema.json" for n in SCHEMA_NAMES.values())
    assert schema_module.check_schemas(tmp_path) == []

    stale = tmp_path / "backend.schema.json"
    stale.write_text(stale.read_text().replace('"head_dim_qk"', '"head_dim_q"'), encoding="utf-8")
    (tmp_path / "dtypes.schema.json").unlink()
    assert schema_module.check_schemas(tmp_path) == ["backend.schema.json", "dtypes.schema.json"]

    monkeypatch.setattr(schema_module, "schemas_dir", lambda: tmp_path)
    assert main(["schema", "--check"]) == 1
    err = capsys.readouterr().err
    assert "schemas/backend.schema.json is out of date with attncap/models.py" in err
    assert "schemas/dtypes.schema.json is out of date" in err
    assert "regenerate with: attncap schema --write" in err

    assert main(["schema", "--write"]) == 0
    assert main(["schema", "--check"]) == 0


def test_generate_is_deterministic():
    assert schema_module.generate() == schema_module.generate()


# (c) -------------------------------------------------------------------------------------

MODELS = {"backend": BackendFile, "archs": ArchsFile, "dtypes": DtypesFile, "policy": PolicyFile,
          "profiles": ProfilesFile}
B = {"backend": "toy", "package": "toy", "install": "pip install toy{specifier}"}
ARCH = {"name": "sm130", "compute_capability": "13.0", "family": "rubin"}

GOOD = [
    ("backend", B),
    ("backend", {"backend": "torch-sdpa-math"}),  # an overlay of a known backend
    ("backend", {**B, "support": [{"id": "a", "arch": ["sm90"], "dtype": ["bf16"],
                                   "head_dim_qk": {"min": 8, "max": 256, "multiple_of": 8},
                                   "head_dims": [[192, 128]], "same_head_dims": False, "versions": ">=1",
                                   "passes": ["forward"], "mask": ["causal"], "source": "s"}]}),
    ("backend", {**B, "support": [{"id": "a", "arch": {"family": "hopper"}}, {"id": "b", "arch": {"min": "sm80"}}]}),
    ("backend", {**B, "features": {"causal": [{"id": "all"}], "sinks": []}}),
    ("backend", {**B, "known_issues": [{"id": "k", "versions": ">=1", "when": {"training": True}, "reason": "r"}]}),
    ("backend", {**B, "support": [{"id": "gone", "remove": True}]}),
    ("backend", {**B, "probe": {"name": "p", "mode": "override", "archs": ["sm90"]}}),
    ("archs", {"archs": [ARCH]}),
    ("archs", {"archs": [{**ARCH, "compute_capability": [13, 0], "aliases": ["sm_130"], "renamed_from": ["x"]}]}),
    ("archs", {"archs": []}),
    ("dtypes", {"dtypes": [{"name": "fp4", "bytes": 1, "aliases": ["e2m1"]}]}),
    ("policy", {}),
    ("policy", {"default": ["a"], "families": {"rubin": {"order": ["a", "b"], "why": "w"}}}),
]

BAD = [
    ("backend", {"package": "toy"}),                                         # no backend id
    ("backend", {**B, "head_dim_q": 1}),                                     # unknown top-level key
    ("backend", {**B, "support": [{"id": "a", "head_dim_q": {"min": 8}}]}),  # typo'd key
    ("backend", {**B, "support": [{"source": "s"}]}),                        # rule without id
    ("backend", {**B, "support": [{"id": "Upper"}]}),                        # name pattern
    ("backend", {**B, "support": [{"id": "a", "same_head_dims": "no"}]}),    # "no" is not a bool
    ("backend", {**B, "support": [{"id": "a", "head_dims": [[192, "128"]]}]}),
    ("backend", {**B, "support": [{"id": "a", "head_dims": [[192]]}]}),      # not a pair
    ("backend", {**B, "support": [{"id": "a", "head_dims": [[192, 0]]}]}),   # head dim >= 1
    ("backend", {**B, "support": [{"id": "a", "alignment_bytes": 0}]}),
    ("backend", {**B, "support": [{"id": "a", "head_dim_qk": {"min": "8"}}]}),
    ("backend", {**B, "support": [{"id": "a", "head_dim_qk": {"multiple_of": 0}}]}),
    ("backend", {**B, "support": [{"id": "a", "arch": "sm90"}]}),            # a bare string, not a list
    ("backend", {**B, "support": [{"id": "a", "arch": {"family": "hopper", "min": "sm80"}}]}),
    ("backend", {**B, "support": [{"id": "a", "mask": ["diagonal"]}]}),
    ("backend", {**B, "support": [{"id": "a", "passes": ["sideways"]}]}),
    ("backend", {**B, "support": [{"id": "a", "versions": 2}]}),             # a number, not a specifier string
    ("backend", {**B, "support": [{"id": "a", "remove": "yes"}]}),
    ("backend", {**B, "support": {"id": "a"}}),                              # a mapping, not a list
    ("backend", {**B, "features": {"flash_decoding": [{"id": "a"}]}}),       # unknown feature
    ("backend", {**B, "known_issues": [{"id": "k", "when": {"passes": ["forward"]}}]}),  # passes: rules only
    ("backend", {**B, "known_issues": [{"id": "k", "when": {"training": "true"}}]}),
    ("backend", {**B, "probe": {"name": "p", "mode": "sometimes"}}),
    ("backend", {**B, "probe": {"name": "p"}}),
    ("archs", {}),
    ("archs", {"archs": [{**ARCH, "compute_capability": 13.0}]}),           # a YAML float
    ("archs", {"archs": [{**ARCH, "compute_capability": "13"}]}),
    ("archs", {"archs": [{**ARCH, "compute_capability": [13, 0, 1]}]}),
    ("archs", {"archs": [{**ARCH, "compute_capability": [13, "0"]}]}),
    ("archs", {"archs": [{**ARCH, "compute_capability": [True, 0]}]}),
    ("archs", {"archs": [{k: v for k, v in ARCH.items() if k != "family"}]}),
    ("archs", {"archs": [{**ARCH, "aliases": [""]}]}),
    ("dtypes", {"dtypes": [{"name": "fp4", "bytes": 0}]}),
    ("dtypes", {"dtypes": [{"name": "fp4"}]}),
    ("policy", {"families": {"rubin": {"order": ["a"]}}}),                   # no why
    ("policy", {"default": "a"}),
]

# Where the JSON Schema is knowingly weaker than the models: an editor does not flag these,
# `attncap validate` does. Listed so that a schema that catches up fails this test and moves them to BAD.
SCHEMA_GAPS = [
    ("backend", {**B, "support": [{"id": "a", "versions": "=>2.11"}]}),      # PEP 440 syntax
    ("backend", {**B, "support": [{"id": "a", "head_dim_qk": {"min": 8.0}}]}),  # JSON Schema: 8.0 is an integer
    ("backend", {**B, "known_issues": [{"id": "k", "versions": ">=1,<"}]}),
]


def accepted_by_models(kind: str, data) -> bool:
    try:
        MODELS[kind].model_validate(data)
        return True
    except ValidationError:
        return False


def accepted_by_schema(kind: str, data) -> bool:
    return validator(kind).is_valid(data)


@pytest.mark.parametrize("kind, data", GOOD, ids=lambda x: x if isinstance(x, str) else "")
def test_both_accept(kind, data):
    assert accepted_by_models(kind, data), "pydantic rejects a good document"
    assert accepted_by_schema(kind, data), "JSON Schema rejects a good document"


@pytest.mark.parametrize("kind, data", BAD, ids=lambda x: x if isinstance(x, str) else "")
def test_both_reject(kind, data):
    assert not accepted_by_models(kind, data), "pydantic accepts a bad document"
    assert not accepted_by_schema(kind, data), "JSON Schema accepts a bad document"


@pytest.mark.parametrize("kind, data", SCHEMA_GAPS, ids=lambda x: x if isinstance(x, str) else "")
def test_known_schema_gaps(kind, data):
    assert not accepted_by_models(kind, data)
    assert accepted_by_schema(kind, data), "the schema now rejects this: move the case to BAD"


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.name)
def test_packaged_file_accepted_by_both(path):
    from attncap.yamlsource import read_document
    data = read_document(path).value
    assert accepted_by_models(kind_of(path), data)
    assert accepted_by_schema(kind_of(path), data)


# (d) -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.name)
def test_schema_line(path):
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    kind = kind_of(path)
    assert first == f"# yaml-language-server: $schema=../schemas/{kind}.schema.json"
    assert (path.parent / f"../schemas/{kind}.schema.json").resolve().is_file()

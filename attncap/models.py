"""The capability file format: pydantic models for every YAML file in `capabilities/`.

The models check each document on its own (types, shapes, PEP 440 syntax). Facts that need
several files at once (does this arch exist? is this rule shadowed?) are checked by `lint`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr,
                      WithJsonSchema, model_validator)

from .query import BIASES, CONTEXT_PARALLEL, FP8_RECIPES, LAYOUTS, MASKS, PACKINGS

Int = Annotated[int, Field(strict=True)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Name = Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]

Pass = Literal["forward", "backward"]
# The query's own vocabularies (query.py): one list for the data's conditions and the query's checks.
Mask = Literal[MASKS]
Layout = Literal[LAYOUTS]
Bias = Literal[BIASES]
ContextParallel = Literal[CONTEXT_PARALLEL]
Packing = Literal[PACKINGS]
Fp8Recipe = Literal[FP8_RECIPES]
RELATION_FIELDS = ("seqlen_q", "seqlen_kv", "head_dim_qk", "head_dim_v", "num_heads_q", "num_heads_kv")
RELATION_OPERATORS = ("<", "<=", "==", "!=", ">=", ">")


def _check_relation(value: str) -> str:
    parts = value.split(" ")
    if len(parts) != 3 or parts[0] not in RELATION_FIELDS or parts[2] not in RELATION_FIELDS \
            or parts[1] not in RELATION_OPERATORS:
        raise ValueError(f"{value!r} is not 'FIELD OP FIELD' (one space apart) with FIELD one of "
                         f"{', '.join(RELATION_FIELDS)} and OP one of {' '.join(RELATION_OPERATORS)}")
    return value


# A relation between two integer query fields, e.g. "seqlen_q <= seqlen_kv".
Relation = Annotated[StrictStr, AfterValidator(_check_relation), WithJsonSchema({
    "type": "string", "description": "FIELD OP FIELD, e.g. 'seqlen_q <= seqlen_kv'",
    "pattern": "^(" + "|".join(RELATION_FIELDS) + ") (<|<=|==|!=|>=|>) (" + "|".join(RELATION_FIELDS) + ")$"})]
ProbeMode = Literal["override", "restrict", "advisory"]
# What happens to a caller who runs into a known issue, worst last.
Effect = Literal["raises", "compile_error", "resource_limit", "wrong_result", "crash", "poisons_cuda_context"]
Feature = Literal[
    "causal", "causal_bottom_right", "padding_mask", "arbitrary_mask", "sliding_window",
    "dropout", "softcap", "alibi", "post_scale_bias", "gqa", "varlen", "pad_between_seqs",
    "paged_kv", "deterministic", "sinks", "pre_scale_bias",
]
FEATURES: tuple[str, ...] = Feature.__args__  # type: ignore[attr-defined]


def _check_specifier(value: str) -> str:
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{value!r} is not a PEP 440 specifier set (e.g. '>=4.0.0b5,<4.0.0b9')") from None
    return value


def _check_compute_capability(value: object) -> str:
    """Accept "9.0" or [9, 0]; refuse YAML floats, whose digits are not what was written."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value):
        return f"{value[0]}.{value[1]}"
    if isinstance(value, float):
        raise ValueError(f"write the compute capability as a quoted string like \"{value}\" "
                         "(YAML reads an unquoted 9.0 as a number)")
    if isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value):
        return value
    raise ValueError(f"{value!r} is not a compute capability: write \"9.0\" or [9, 0]")


def _check_version(value: str) -> str:
    try:
        Version(value)
    except InvalidVersion:
        raise ValueError(f"{value!r} is not a PEP 440 version (e.g. '2.8.3.post1', '4.0.0b36')") from None
    return value


Specifier = Annotated[StrictStr, AfterValidator(_check_specifier)]
VersionText = Annotated[StrictStr, AfterValidator(_check_version)]
ComputeCapability = Annotated[str, BeforeValidator(_check_compute_capability), WithJsonSchema({
    "title": "Compute Capability", "description": 'a string "9.0" or a pair [9, 0]',
    "anyOf": [{"type": "string", "pattern": r"^\d+\.\d+$"},
              {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}]})]


class Model(BaseModel):
    # defer_build: schemas are built on first validation (the full load), not at import, so a
    # wheel's snapshot (snapshot.py) rebuilds models without paying for them.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Residue(Model):
    """`value % modulo == equals`, e.g. {modulo: 128, equals: 64} for seqlen_kv % 128 == 64."""

    modulo: PositiveInt
    equals: Annotated[int, Field(strict=True, ge=0)]


class IntRange(Model):
    """An inclusive integer range; any subset of the keys."""

    min: Int | None = None
    max: Int | None = None
    multiple_of: PositiveInt | None = None
    residue: Residue | None = None  # value % modulo == equals
    not_residue: Residue | None = None  # value % modulo != equals


class ArchFamily(Model):
    family: Name


class ArchRange(Model):
    """Compute-capability range, ends given as arch names or "9.0"; inclusive, either optional."""

    min: StrictStr | None = None
    max: StrictStr | None = None


ArchSpec = Union[list[Name], ArchFamily, ArchRange]
HeadDimPair = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]


class Conditions(Model):
    """What a rule requires of a query; a missing key means "any"."""

    arch: ArchSpec | None = None
    dtype: list[Name] | None = None
    head_dim_qk: IntRange | None = None
    head_dim_v: IntRange | None = None
    head_dims: list[HeadDimPair] | None = None
    same_head_dims: StrictBool | None = None
    alignment_bytes: PositiveInt | None = None
    versions: Specifier | None = None
    cudnn: Specifier | None = None
    training: StrictBool | None = None
    cross_attention: StrictBool | None = None
    seqlen_q: IntRange | None = None
    seqlen_kv: IntRange | None = None
    num_heads_q: IntRange | None = None
    num_heads_kv: IntRange | None = None
    page_size: IntRange | None = None
    gqa: StrictBool | None = None
    mask: list[Mask] | None = None
    layout: list[Layout] | None = None
    bias: list[Bias] | None = None
    window: StrictBool | None = None
    dropout: StrictBool | None = None
    softcap: StrictBool | None = None
    deterministic: StrictBool | None = None
    paged_kv: StrictBool | None = None
    sinks: StrictBool | None = None
    pad_between_seqs: StrictBool | None = None
    # TransformerEngine's dimensions; a query that leaves one unknown passes a support or feature
    # rule and never triggers a known issue on it.
    kv_cache: StrictBool | None = None
    context_parallel: list[ContextParallel] | None = None
    return_max_logit: StrictBool | None = None
    score_mod: StrictBool | None = None
    num_splits: IntRange | None = None
    packing: list[Packing] | None = None
    bias_grad: StrictBool | None = None
    bottom_right: StrictBool | None = None
    fp8_recipe: list[Fp8Recipe] | None = None
    fp8_mha: StrictBool | None = None
    relations: list[Relation] | None = None  # all must hold, e.g. ["seqlen_q <= seqlen_kv"]
    transformer_engine: Specifier | None = None  # the installed transformer-engine version (PEP 440)


class Rule(Conditions):
    """A support rule or a feature rule: the query is accepted when all conditions hold."""

    id: Name
    passes: list[Pass] = ["forward", "backward"]
    source: StrictStr | None = None
    note: StrictStr | None = None
    remove: StrictBool = False  # in an overlay: delete the packaged rule with this id


class KnownIssue(Model):
    """A deny rule: any query matching `when` at an affected version is rejected."""

    id: Name
    versions: Specifier | None = None
    when: Conditions = Conditions.model_construct()  # not Conditions(): that would build the schema at import
    effect: Effect | None = None
    reason: StrictStr | None = None
    source: StrictStr | None = None
    note: StrictStr | None = None
    remove: StrictBool = False


class ProbeDeclaration(Model):
    name: Name
    mode: ProbeMode
    archs: list[Name] | None = None  # the probe's domain; outside it the probe has no opinion


class CheckedSpan(Model):
    """The releases of one package that a backend's facts were checked against, first..last inclusive.

    Outside the span a supported answer is `unverified` (newer: the rules of `last` apply) or `unknown`
    (older: the rules of `first` apply); see docs/format.md, "Checked spans and outcomes".
    """

    first: VersionText
    last: VersionText
    evidence: Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(min_length=1)]  # wheels read, GPU runs
    # A version string that names several builds whose capabilities differ: answered `unverified`, with why.
    ambiguous: dict[VersionText, StrictStr] = {}
    note: StrictStr | None = None

    @model_validator(mode="after")
    def _ordered(self):
        if Version(self.first) > Version(self.last):
            raise ValueError(f"first {self.first} is newer than last {self.last}")
        return self


class BackendFile(Model):
    """One backend. `package`, `install` may be omitted only in an overlay of a known backend."""

    backend: Name
    package: Name | None = None
    requires: list[Name] = []  # other distributions that must be installed (any version), e.g. transformer-engine
    install: StrictStr | None = None
    description: StrictStr | None = None
    probe: ProbeDeclaration | None = None
    support: list[Rule] = []
    features: dict[Feature, list[Rule]] = {}
    known_issues: list[KnownIssue] = []
    # Per package the rules read (`package`, and companions: cudnn, torch, a `requires` entry): what was checked.
    checked: dict[Name, CheckedSpan] = {}


class Arch(Model):
    name: Name
    compute_capability: ComputeCapability
    family: Name
    aliases: list[Annotated[StrictStr, Field(min_length=1)]] = []
    renamed_from: list[Annotated[StrictStr, Field(min_length=1)]] = []
    source: StrictStr | None = None
    note: StrictStr | None = None


class ArchsFile(Model):
    archs: list[Arch]


class Dtype(Model):
    name: Name
    bytes: PositiveInt
    aliases: list[Annotated[StrictStr, Field(min_length=1)]] = []
    note: StrictStr | None = None


class DtypesFile(Model):
    dtypes: list[Dtype]


class FamilyPolicy(Model):
    order: list[Name]
    why: StrictStr
    source: StrictStr | None = None


class PolicyFile(Model):
    default: list[Name] = []
    default_why: StrictStr | None = None
    families: dict[Name, FamilyPolicy] = {}


class ProfileWindow(Model):
    """The versions of a backend's package that a consumer accepts (its policy, not the kernel's capability)."""

    versions: Specifier
    why: StrictStr
    source: StrictStr


class Profile(Model):
    """A consumer's own windows and preferences (e.g. TransformerEngine's), applied only when asked for."""

    description: StrictStr
    accepts: dict[Name, ProfileWindow] = {}  # backend id -> window
    families: dict[Name, FamilyPolicy] = {}  # preference order per arch family, replacing policy.yaml's
    source: StrictStr | None = None


class ProfilesFile(Model):
    profiles: dict[Name, Profile] = {}


# The special files of a capabilities directory; every other *.yaml is a backend file.
VOCABULARY_FILES: dict[str, type[Model]] = {
    "archs.yaml": ArchsFile,
    "dtypes.yaml": DtypesFile,
    "policy.yaml": PolicyFile,
    "profiles.yaml": ProfilesFile,
}
SCHEMA_NAMES: dict[type[Model], str] = {
    BackendFile: "backend",
    ArchsFile: "archs",
    DtypesFile: "dtypes",
    PolicyFile: "policy",
    ProfilesFile: "profiles",
}

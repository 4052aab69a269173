"""The wheel's snapshot (plain Records, no pydantic) and the full load (validated models) are one registry.

Compiled: the same checks, rule by rule, compared by structure (closures by their code and captured
values). Resolved: identical decisions and reason texts (as_dict and the table) over a broad seeded
random set of queries, environments and options, explain, and the matrix and diff-versions outputs.
And the snapshot's run-time path imports none of pydantic, YAML, lint or the models.

ATTNCAP_EQUIV_SCALE=10 runs ten times as many random queries (CI runs 1).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from pydantic import BaseModel

import attncap
from attncap import AttentionQuery, BackendUnavailableError, Environment, cli, loader, resolve, snapshot
from attncap.explain import explain_backend
from attncap.loader import load_registry, packaged_dir
from attncap.plain import Record
from attncap.query import BIASES, CONTEXT_PARALLEL, FP8_RECIPES, LAYOUTS, MASKS, PACKINGS

SCALE = float(os.environ.get("ATTNCAP_EQUIV_SCALE", "1"))
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def snapshot_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("snapshot") / snapshot.FILE_NAME
    snapshot.write(packaged_dir(), path)
    return path


@pytest.fixture(scope="module")
def full():
    registry = load_registry(use_env=False)
    assert all(loc.doc is not None for loc in registry.origins.values()), "expected the full load (a checkout)"
    return registry


@pytest.fixture(scope="module")
def fast(snapshot_file):
    registry = snapshot.load(packaged_dir(), snapshot_file)
    assert registry is not None and all(isinstance(b, Record) for b in registry.backends.values())
    return registry


# ---- compiled: the same thing ---------------------------------------------------------------

def same_compiled(a, b, where: str, seen: set) -> None:
    """Structural equality of compiled data; models and their Records compare field by field."""
    if (id(a), id(b)) in seen:  # shared (or cyclic) parts are compared once
        return
    seen.add((id(a), id(b)))
    if isinstance(a, BaseModel):
        assert isinstance(b, Record) and type(b).__name__ == type(a).__name__, where
        for name in type(a).model_fields:
            same_compiled(getattr(a, name), getattr(b, name), f"{where}.{name}", seen)
    elif isinstance(a, Record):
        assert isinstance(b, (Record, BaseModel)) and type(b).__name__ == type(a).__name__, where
        for name in vars(a):
            same_compiled(getattr(a, name), getattr(b, name), f"{where}.{name}", seen)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            same_compiled(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}", seen)
    elif isinstance(a, types.FunctionType):
        assert isinstance(b, types.FunctionType), where
        assert a.__code__.co_code == b.__code__.co_code and a.__qualname__ == b.__qualname__, where
        same_compiled(a.__code__.co_consts, b.__code__.co_consts, f"{where}<consts>", seen)
        same_compiled(a.__defaults__, b.__defaults__, f"{where}<defaults>", seen)
        cells_a, cells_b = a.__closure__ or (), b.__closure__ or ()
        assert len(cells_a) == len(cells_b), where
        for name, x, y in zip(a.__code__.co_freevars, cells_a, cells_b):
            same_compiled(x.cell_contents, y.cell_contents, f"{where}<{name}>", seen)
    elif isinstance(a, types.CodeType):
        assert isinstance(b, types.CodeType) and a.co_code == b.co_code, where
        same_compiled(a.co_consts, b.co_consts, f"{where}<consts>", seen)
    elif isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b), where
        for k in a:
            same_compiled(a[k], b[k], f"{where}[{k!r}]", seen)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_compiled(x, y, f"{where}[{i}]", seen)
    else:
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
        if a == b:
            return
        assert not isinstance(a, (str, bytes, int, float, type(None), frozenset, set)), f"{where}: {a!r} != {b!r}"
        # Any other object (a bound method, a partial, an attrgetter, a plain class): by what pickling sees
        same_compiled(a.__reduce_ex__(4), b.__reduce_ex__(4), f"{where}<{type(a).__name__}>", seen)


def test_both_compile_to_the_same_thing(full, fast):
    assert list(full.compiled) == list(fast.compiled)
    for name in full.compiled:
        same_compiled(full.compiled[name], fast.compiled[name], name, set())
    for arch in full.vocabulary.archs:
        assert full.preference(arch) == fast.preference(arch)
        for profile in full.profiles:
            assert full.profile_preference(arch, profile) == fast.profile_preference(arch, profile)
    assert full.vocabulary.families() == fast.vocabulary.families()


def test_records_dump_as_the_models_do(full, fast):
    for name, b in full.backends.items():
        assert fast.backends[name].model_dump() == b.model_dump()
    assert fast.policy.model_dump() == full.policy.model_dump()
    assert [a.model_dump() for a in fast.vocabulary.archs.values()] == \
        [a.model_dump() for a in full.vocabulary.archs.values()]


def test_records_pickle_and_stay_frozen(fast):
    backends = pickle.loads(pickle.dumps(fast.backends))
    assert backends == fast.backends
    rule = fast.backends["flash-attn-4"].support[0]
    with pytest.raises(AttributeError, match="frozen"):
        rule.id = "other"
    changed = rule.model_copy(update={"head_dim_qk": None})
    assert changed.head_dim_qk is None and rule.head_dim_qk is not None and changed.id == rule.id


# ---- resolved: identical decisions and reasons ------------------------------------------------

def _boundary_versions(registry) -> dict[str, list[str]]:
    """Per package (and cudnn, transformer-engine): versions at and around every specifier boundary."""
    found: dict[str, set[str]] = {}

    def add(package, spec):
        for s in SpecifierSet(spec):
            base = s.version.replace(".*", "")
            found.setdefault(package, set()).update({base, base + ".post1", base + ".dev0", base + "+local"})

    def walk(cond, package):
        if cond.versions:
            add(package, cond.versions)
        if cond.cudnn:
            add("cudnn", cond.cudnn)
        if cond.transformer_engine:
            add("transformer-engine", cond.transformer_engine)
    for b in registry.backends.values():
        rules = [*b.support, *(r for rules in b.features.values() for r in rules)]
        for r in rules:
            walk(r, b.package)
        for k in b.known_issues:
            walk(k.when, b.package)
            if k.versions:
                add(b.package, k.versions)
        for package, span in b.checked.items():
            found.setdefault(package, set()).update({span.first, span.last, *span.ambiguous})
    return {p: sorted(v | {"0.1", "99.0"}) for p, v in found.items()}


HEAD_DIMS = [8, 16, 32, 40, 48, 64, 72, 80, 96, 100, 112, 128, 136, 160, 192, 200, 224, 256, 288, 320, 512, 576]


def _environments(rng: random.Random, registry, versions, n: int = 40) -> list[Environment]:
    """What-if environments over the boundary versions (a pool: plans are built once per environment)."""
    archs = list(registry.vocabulary.archs)
    return [Environment(arch=rng.choice(archs) if rng.random() < 0.7 else None,
                        versions={p: rng.choice([None, *v]) for p, v in versions.items() if rng.random() < 0.8})
            for _ in range(n)]


def _random_case(rng: random.Random, registry, environments):
    vocab = registry.vocabulary
    hq = rng.choice([None, 1, 8, 16, 32, 64])
    seqlen_q = rng.choice([None, 1, 128, 1000, 4096, 32768])
    fields = dict(
        arch=rng.choice([*vocab.archs, "h100", "9.0"]), dtype=rng.choice([*vocab.dtypes, "bfloat16"]),
        head_dim_qk=rng.choice(HEAD_DIMS + [rng.randint(1, 600)]),
        head_dim_v=rng.choice([None, None, *HEAD_DIMS]), training=rng.random() < 0.5,
        num_heads_q=hq, num_heads_kv=None if hq is None else rng.choice([d for d in (1, 2, 4, 8, hq) if hq % d == 0]),
        seqlen_q=seqlen_q, seqlen_kv=None if seqlen_q is None else rng.choice([1, 128, 1000, 4096, 32768, seqlen_q]),
        mask=rng.choice(MASKS), layout=rng.choice(LAYOUTS), bias=rng.choice(BIASES),
        window=rng.choice([None, None, (128, 0), (-1, 0), (1023, 0)]), dropout=rng.choice([0.0, 0.0, 0.1]),
        softcap=rng.choice([0.0, 0.0, 30.0]), deterministic=rng.random() < 0.2, sinks=rng.random() < 0.1,
        pad_between_seqs=rng.random() < 0.1, page_size=rng.choice([None, None, 16, 64, 256]))
    if rng.random() < 0.3:  # TransformerEngine's fields
        fields.update(kv_cache=rng.choice([None, True, False]), context_parallel=rng.choice([None, *CONTEXT_PARALLEL]),
                      packing=rng.choice([None, *PACKINGS]), fp8_recipe=rng.choice([None, *FP8_RECIPES]),
                      return_max_logit=rng.choice([None, True, False]), bias_grad=rng.choice([None, True, False]),
                      bottom_right=rng.choice([None, True, False]), num_splits=rng.choice([None, 1, 2]))
    env = rng.choice(environments)
    if env.arch is not None and rng.random() < 0.7:
        fields["arch"] = env.arch  # mostly the environment's own GPU (another one is an error of the caller)
    options = {}
    if rng.random() < 0.15:
        options["profile"] = rng.choice(list(registry.profiles))
    if rng.random() < 0.15:
        options["unverified"] = rng.choice(["allow", "warn", "deny"])
    if rng.random() < 0.1:
        options["disable"] = rng.sample(list(registry.backends), 2)
    if rng.random() < 0.1:
        options["prefer"] = rng.choice(list(registry.backends))
    if rng.random() < 0.05:
        options["force"] = rng.choice(list(registry.backends))
    return fields, env, options


def _outcome(query, env, options, registry, reasons: bool):
    try:
        res = resolve(query, env, probes=False, registry=registry, **options)
    except BackendUnavailableError as exc:
        return ("raises", str(exc))
    if reasons:  # every reason's text, built (the costly part: a sample of the queries)
        return res.selected, res.as_dict(), res.table()
    return res.selected, [(d.backend, d.supported, d.outcome, d.decided_by, d.rule, d.static) for d in res.decisions]


def test_identical_resolutions_over_random_queries(full, fast, monkeypatch):
    for name in [k for k in os.environ if k.startswith("ATTNCAP_")]:
        monkeypatch.delenv(name)
    rng = random.Random(16)
    environments = _environments(rng, full, _boundary_versions(full))
    n = int(2000 * SCALE)
    compared = 0
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            fields, env, options = _random_case(rng, full, environments)
            try:
                query = AttentionQuery(**fields)
            except attncap.InvalidQueryError:
                continue
            reasons = compared % 5 == 0
            a, b = _outcome(query, env, options, full, reasons), _outcome(query, env, options, fast, reasons)
            assert a == b, (fields, env, options)
            compared += 1
    assert compared > n * 0.9


def test_identical_explanations(full, fast):
    rng = random.Random(6)
    environments = _environments(rng, full, _boundary_versions(full), 10)
    for _ in range(int(100 * SCALE)):
        fields, env, options = _random_case(rng, full, environments)
        try:
            query = AttentionQuery(**fields)
        except attncap.InvalidQueryError:
            continue
        for backend in full.backends:
            kw = {k: v for k, v in options.items() if k in ("unverified", "profile")}
            a = explain_backend(full, backend, query, env, probes=False, **kw)
            b = explain_backend(fast, backend, query, env, probes=False, **kw)
            assert a == b, (backend, fields, env)


# ---- the CLI's matrix and diff-versions from either form ---------------------------------------

def _cli(args: list[str], capsys) -> str:
    assert cli.main(args) == 0
    return capsys.readouterr().out


def test_identical_matrix_and_version_diffs(snapshot_file, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(loader.ENV_PATH, raising=False)
    outputs = {}
    for form, path in (("snapshot", snapshot_file), ("full", tmp_path / "absent.json")):
        monkeypatch.setattr(snapshot, "packaged_snapshot", lambda path=path: path)
        attncap.clear_cache()
        registry = attncap.default_registry()
        assert all(isinstance(b, Record) for b in registry.backends.values()) == (form == "snapshot")
        out = []
        for backend in registry.backends:
            spans = registry.backends[backend].checked
            package = registry.compiled[backend].package
            span = spans.get(package)
            first, last = (span.first, span.last) if span else ("9.0.0", "9.20.0")
            cudnn = [] if package == "cudnn" or "cudnn" not in spans else ["--cudnn", spans["cudnn"].last]
            out.append(_cli(["matrix", "--backend", backend, "--version", last, "--format", "json",
                             "--max-head-dim", "256", "--no-probes", *cudnn], capsys))
            out.append(_cli(["diff-versions", backend, first, last, "--max-head-dim", "256", *cudnn], capsys))
        outputs[form] = out
    attncap.clear_cache()
    assert outputs["snapshot"] == outputs["full"]


# ---- the run-time path of an installed wheel ----------------------------------------------------

WHEEL_PATH = """
import sys
import attncap
from attncap.cli import main
registry = attncap.default_registry()
registry.compiled
assert all(loc.doc is None for loc in registry.origins.values()), "the snapshot was not used"
q = attncap.AttentionQuery(arch="sm90", dtype="bf16", head_dim_qk=128, mask="causal", training=True)
env = attncap.Environment(arch="sm90", versions={"flash-attn-3": "3.0.0b1", "torch": "2.13.0"}, cudnn="9.10.2")
res = attncap.resolve(q, env, probes=False)
res.table(), res.as_dict(), [d.reasons for d in res.decisions]
assert main(["explain", "flash-attn-4", "--arch", "sm100", "--head-dim", "192", "--no-probes"]) in (0, 1)
assert main(["matrix", "--backend", "flash-attn-4", "--version", "4.0.0b36", "--no-probes"]) == 0
heavy = [m for m in ("pydantic", "yaml", "attncap.models", "attncap.lint", "attncap.yamlsource") if m in sys.modules]
assert not heavy, heavy
print("ok")
"""


def test_the_snapshot_path_imports_no_pydantic_yaml_or_lint(tmp_path):
    """attncap laid out as the wheel installs it, with its snapshot (benchmarks/run.py's layout)."""
    package = tmp_path / "attncap"
    shutil.copytree(ROOT / "attncap", package, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    shutil.copytree(ROOT / "capabilities", package / "_data" / "capabilities")
    snapshot.write(ROOT / "capabilities", package / "_data" / snapshot.FILE_NAME)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNCAP_")}
    proc = subprocess.run([sys.executable, "-c", WHEEL_PATH], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-2000:]

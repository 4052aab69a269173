"""The resolver's fast path (plans, Views, outcome memos, the known-issue guard index, lazily built
decisions) decides exactly as the straightforward evaluator (tests/reference_resolver.py).

100,000 random queries over every field, on what-if environments whose versions sit at and around
every specifier boundary the data names, with prefer/disable/force, the unverified policies and the
transformer-engine profile. Decisions (supported, outcome, decided_by, rule) are compared on every
query; reasons, in full, on every REASONS_EVERY-th. Probes are off there; a second test turns them on
with a deterministic fake verdict (yes, no or no opinion) per backend and shape, on environments that also
hold unknown builds, since selection asks a probe only where its answer can change what is selected.
"""

from __future__ import annotations

import os
import random
import warnings
import zlib

import pytest
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from reference_resolver import reference_resolve

import attncap
from attncap import AttentionQuery, BackendUnavailableError, Environment, resolve
from attncap.query import (
    BIASES,
    CONTEXT_PARALLEL,
    FP8_RECIPES,
    LAYOUTS,
    MASKS,
    PACKINGS,
)
from attncap.views import View

QUERIES = int(100_000 * float(os.environ.get("ATTNCAP_FUZZ_SCALE", "1")))
ENVIRONMENTS = 60
REASONS_EVERY = 25
DIMS = (8, 16, 32, 40, 48, 64, 72, 80, 96, 100, 104, 112, 120, 128, 136, 160, 176, 192, 200, 224, 240, 256, 264,
        320, 512, 576)


@pytest.fixture(scope="module")
def registry():
    return attncap.load_registry(use_env=False)


def boundary_versions(registry) -> dict[str, list[str]]:
    """Per package (and cudnn), the versions at every bound its rules and checked spans name, with neighbours."""
    found: dict[str, set[str]] = {}
    for b in registry.compiled.values():
        rules = (*b.support, *(r for rs in b.features.values() for r in rs), *b.known_issues)
        specs = [(b.package, r.versions) for r in rules] + [("cudnn", r.cudnn) for r in rules]
        for package, span in b.checked.items():
            specs += [(package, f">={span.first}"), (package, f"<={span.last}")]
        for package, spec in specs:
            try:
                bounds = [s.version.replace(".*", "") for s in SpecifierSet(spec or "")]
            except InvalidSpecifier:
                continue
            found.setdefault(package, set()).update(
                str(v) + suffix for v in map(Version, bounds) for suffix in ("", ".post1", ".dev0")
                if not (suffix and (v.is_postrelease or v.is_devrelease)))
    # transformer-engine conditions of known issues: the releases they name, and beyond
    found.setdefault("transformer-engine", set()).update({"2.13.0", "2.14.0", "2.17.0", "2.20.0", "2.20.2", "2.21.0"})
    return {p: sorted(v | {"0.1", "99.0"}) for p, v in found.items()}


def random_environment(rng, registry, versions) -> Environment:
    chosen = {p: rng.choice(v) for p, v in versions.items() if rng.random() < 0.75}
    arch = rng.choice([None, *registry.vocabulary.archs])
    return Environment(arch=arch, versions=chosen)


def random_query(rng, registry, env_arch) -> AttentionQuery:
    vocab = registry.vocabulary
    hq = rng.choice([None, 8, 16, 32, 64])
    kv = None if hq is None or rng.random() < 0.5 else rng.choice([d for d in (1, 2, 4, 8, 16) if hq % d == 0])
    sq = rng.choice([None, 1, 128, 2048, 4096, rng.randint(1, 1 << 17)])
    skv = None if sq is None else rng.choice([sq, sq, 2048, rng.randint(1, 1 << 17)])
    optional = lambda values: rng.choice(values) if rng.random() < 0.15 else None  # noqa: E731
    page_size = rng.choice([None, None, None, 16, 64, 256])
    kv_cache = optional([True]) if page_size is not None else optional([True, False])  # paged: a KV cache
    return AttentionQuery(
        arch=None if env_arch is not None and rng.random() < 0.5 else rng.choice(list(vocab.archs)),
        dtype=rng.choice(list(vocab.dtypes)),
        head_dim_qk=rng.choice(DIMS) if rng.random() < 0.9 else rng.randint(1, 1024),
        head_dim_v=None if rng.random() < 0.6 else rng.choice(DIMS),
        num_heads_q=hq, num_heads_kv=kv, seqlen_q=sq, seqlen_kv=skv, training=rng.random() < 0.5,
        mask=rng.choice(MASKS), window=None if rng.random() < 0.7 else rng.choice([(128, 0), (-1, 0), (1023, 0),
                                                                                    (64, 64)]),
        dropout=rng.choice([0.0, 0.0, 0.0, 0.1]), softcap=rng.choice([0.0, 0.0, 0.0, 30.0]),
        bias=rng.choice(BIASES), layout=rng.choice(LAYOUTS), pad_between_seqs=rng.random() < 0.1,
        page_size=page_size, deterministic=rng.random() < 0.2,
        sinks=rng.random() < 0.1, kv_cache=kv_cache, context_parallel=optional(CONTEXT_PARALLEL),
        return_max_logit=optional([True, False]), score_mod=optional([True, False]), num_splits=optional([1, 2, 4]),
        packing=optional(PACKINGS), bias_grad=optional([True, False]), bottom_right=optional([True, False]),
        fp8_recipe=optional(FP8_RECIPES), fp8_mha=optional([True, False]))


def random_overrides(rng, registry) -> dict:
    names = sorted(registry.compiled)
    overrides = {}
    roll = rng.random()
    if roll < 0.1:
        overrides["prefer"] = tuple(rng.sample(names, rng.randint(1, 3)))
    elif roll < 0.2:
        overrides["disable"] = tuple(rng.sample(names, rng.randint(1, 3)))
    elif roll < 0.25:
        overrides["force"] = rng.choice(names)
    overrides["unverified"] = rng.choice(["allow", "allow", "warn", "deny"])
    if rng.random() < 0.15:
        overrides["profile"] = "transformer-engine"
    return overrides


def fast(query, env, registry, overrides, probes=False):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", attncap.UnverifiedWarning)
            return resolve(query, env, probes=probes, registry=registry, **overrides)
    except BackendUnavailableError as exc:  # a forced backend that cannot run: its resolution is still compared
        return exc.resolution


def verdicts(resolution) -> tuple:
    return resolution.selected, resolution.outcome, tuple(
        (d.backend, d.supported, d.outcome, d.decided_by, d.rule) for d in resolution.decisions)


def test_fast_path_decides_as_the_straightforward_evaluator(registry, monkeypatch):
    for name in ("ATTNCAP_BACKEND", "ATTNCAP_DISABLE", "ATTNCAP_PROBES", "ATTNCAP_UNVERIFIED"):
        monkeypatch.delenv(name, raising=False)
    rng = random.Random(16)
    versions = boundary_versions(registry)
    environments = [random_environment(rng, registry, versions) for _ in range(ENVIRONMENTS)]
    compared = reasons_compared = 0
    for i in range(QUERIES):
        env = rng.choice(environments)
        query = random_query(rng, registry, env.arch)
        overrides = random_overrides(rng, registry)
        got = fast(query, env, registry, overrides)
        policy = overrides.pop("unverified")
        expected = reference_resolve(query, env, registry, policy=policy, **overrides)
        assert verdicts(got) == verdicts(expected), (query, env, overrides, policy)
        if i % REASONS_EVERY == 0:
            assert [d.as_dict() for d in got.decisions] == [d.as_dict() for d in expected.decisions], \
                (query, env, overrides, policy)
            reasons_compared += 1
        compared += 1
    assert compared == QUERIES and reasons_compared == -(-QUERIES // REASONS_EVERY)


def fake_judge(b, q, c, env):
    """A probe's verdict that depends only on the backend and the shape: yes, no or no opinion."""
    if b.probe is None or (b.probe.archs and c.arch not in b.probe.archs):
        return None
    supported = (True, False, None)[zlib.crc32(repr((b.id, c.arch, q.dtype, q.head_dim_qk, q.head_dim_v)).encode()) % 3]
    return attncap.probes.ProbeVerdict(b.probe.name, supported, "fake")


def test_with_probes_the_fast_path_decides_as_the_straightforward_evaluator(registry, monkeypatch):
    for name in ("ATTNCAP_BACKEND", "ATTNCAP_DISABLE", "ATTNCAP_PROBES", "ATTNCAP_UNVERIFIED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(attncap.probes, "judge", fake_judge)
    attncap.clear_cache()
    rng = random.Random(19)
    versions = boundary_versions(registry)
    for package in ("torch", "flash-attn-4"):  # unknown builds: a probe's yes makes them unverified
        versions[package] = [*versions[package], "0.0.0", "0.0.0", "0.0.0"]
    environments = [random_environment(rng, registry, versions) for _ in range(ENVIRONMENTS)]
    for i in range(QUERIES // 5):
        env = rng.choice(environments)
        query = random_query(rng, registry, env.arch)
        overrides = random_overrides(rng, registry)
        got = fast(query, env, registry, overrides, probes=True)
        policy = overrides.pop("unverified")
        expected = reference_resolve(query, env, registry, policy=policy, probes=True, **overrides)
        assert verdicts(got) == verdicts(expected), (query, env, overrides, policy)
        if i % REASONS_EVERY == 0:
            assert [d.as_dict() for d in got.decisions] == [d.as_dict() for d in expected.decisions], \
                (query, env, overrides, policy)
    attncap.clear_cache()


def test_memoised_outcomes_are_the_evaluated_ones(registry):
    """A query answered from a View's memos gets the Outcome (and verdict) a View without memos gives."""
    rng = random.Random(17)
    versions = boundary_versions(registry)
    env = Environment(arch="sm90", versions={p: v[len(v) // 2] for p, v in versions.items()})
    for _ in range(3000):
        query = random_query(rng, registry, "sm90")
        resolution = resolve(query, env, probes=False, registry=registry)
        for entry in resolution._plan.entries:
            if entry.b is not None:
                view = entry.make_view()
                fresh = View(view.support, view.features, view.known_issues, view.installed)
                expected = fresh.outcome(query, entry.ctx)
                assert view.outcome(query, entry.ctx) == expected
                assert view.supported(query, entry.ctx) == expected.supported  # stops at the first failing part


def test_every_check_declares_what_it_reads(registry):
    """A View memoises on the attributes its checks declare (Check.reads): a check that reads another
    attribute of the query would make the memo answer for a different query."""

    class Recorder:
        def __init__(self, query):
            self._query, self.read = query, set()

        def __getattr__(self, name):
            self.read.add(name)
            return getattr(self._query, name)

    rng = random.Random(18)
    queries = [random_query(rng, registry, None) for _ in range(300)]
    from attncap.resolver import _ctx
    env = Environment(versions={"flash-attn-4": "4.0.0b36", "torch": "2.13.0", "transformer-engine": "2.20.2"},
                      cudnn="9.21.0")
    vocab = registry.vocabulary
    for b in registry.compiled.values():
        for rule in (*b.support, *(r for rs in b.features.values() for r in rs), *b.known_issues):
            for query in queries:
                c = _ctx(b, env, query.arch, vocab.dtypes[query.dtype].bytes, vocab.cc(query.arch))
                for check in rule.checks:
                    recorder = Recorder(query)
                    check.test(recorder, c)
                    assert recorder.read <= set(check.reads), (b.id, rule.id, check.field, recorder.read)

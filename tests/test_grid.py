"""The plane evaluation equals point-wise resolve() (probes off) on random samples."""

from __future__ import annotations

import random

import pytest

from attncap import AttentionQuery, Environment, default_registry, resolve
from attncap.grid import Plane, blocks, describe_values, paint, regions
from attncap.models import Conditions, IntRange
from attncap.resolver import _ctx

VERSIONS = {"flash-attn-4": ["4.0.0b4", "4.0.0b8", "4.0.0b10", "4.0.0b11", "4.0.0b16", "4.0.0b36"],
            "flash-attn": ["2.3.0", "2.6.3", "2.8.3"], "torch": ["2.11.0", "2.13.0"],
            "transformer-engine": ["2.20.0"]}  # cudnn-fused requires it; planes assume requirements are met


def _plane_verdict(registry, backend, query, env, n=320):
    b = registry.compiled[backend]
    vocab = registry.vocabulary
    ctx = _ctx(b, env, query.arch, vocab.dtypes[query.dtype].bytes, vocab.cc(query.arch))  # versions as matched
    return regions(b, registry.backends[backend], query, ctx, n)


@pytest.mark.parametrize("seed", range(4))
def test_plane_equals_pointwise_resolve(seed):
    rng = random.Random(seed)
    registry = default_registry()
    archs, dtypes = list(registry.vocabulary.archs), list(registry.vocabulary.dtypes)
    checked = 0
    for _ in range(60):
        versions = {k: rng.choice(v) for k, v in VERSIONS.items()}
        env = Environment(versions=versions, cudnn=rng.choice(["8.9.7", "9.1.0", "9.10.2", "9.20.0"]))
        template = AttentionQuery(
            arch=rng.choice(archs), dtype=rng.choice(dtypes), head_dim_qk=64, training=rng.random() < 0.5,
            mask=rng.choice(["none", "causal", "causal_bottom_right"]), seqlen_q=rng.choice([1, 128]),
            seqlen_kv=rng.choice([128, 2048]), window=rng.choice([None, (64, 0)]))
        backend = rng.choice(sorted(registry.backends))
        plane = _plane_verdict(registry, backend, template, env)
        for _ in range(25):
            qk, v = rng.randint(1, 320), rng.choice([rng.randint(1, 320), None])
            query = template.replace(head_dim_qk=qk, head_dim_v=v or qk)
            decision = resolve(query, env, probes=False).decision(backend)
            expected = decision.supported or decision.outcome == "unknown"  # the rules allow; coverage withholds
            assert ((qk, v or qk) in plane.supported) == expected, (backend, query, env)
            checked += 1
    assert checked == 1500


def test_paint_ranges_alignment_pairs_and_same_dims():
    n = 64
    cond = Conditions(head_dim_qk=IntRange(min=8, max=32), head_dim_v=IntRange(max=16), alignment_bytes=16)
    plane = paint(cond, 2, n)
    assert {p for p in plane.points()} == {(qk, v) for qk in (8, 16, 24, 32) for v in (8, 16)}
    pairs = paint(Conditions(head_dims=[[48, 16], [8, 8]]), 2, n)
    assert set(pairs.points()) == {(48, 16), (8, 8)}
    same = paint(Conditions(head_dim_qk=IntRange(max=4), same_head_dims=True), 2, n)
    assert set(same.points()) == {(1, 1), (2, 2), (3, 3), (4, 4)}
    assert (Plane.full(4) - same).count() == 12


def test_blocks_and_descriptions():
    plane = paint(Conditions(head_dim_qk=IntRange(min=8, max=24, multiple_of=8), head_dim_v=IntRange(min=8, max=16)),
                  2, 32)
    [(qks, vs)] = blocks(plane)
    assert describe_values(qks) == "8..24 step 8" and describe_values(vs) == "8..16"

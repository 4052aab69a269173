"""The memo in front of query validation (attncap.memo): same answers, same errors, bounded, forgettable."""

from __future__ import annotations

import threading

import pytest

import attncap
from attncap import AttentionQuery, Environment, InvalidQueryError, resolve
from attncap import memo

BASE = dict(arch="sm90", dtype="bf16", head_dim_qk=128, num_heads_q=16, seqlen_q=1024, training=True)
ENV = Environment(arch="sm90", versions={"flash-attn-3": "3.0.0", "flash-attn": "2.8.3", "torch": "2.13.0"},
                  cudnn="9.10.2")

# field: (a good value, bad values; each bad value that compares equal to a good one comes first)
FIELDS = {
    "arch": ("sm90", ["nope", 90.5]),
    "dtype": ("bf16", ["bf17", 3]),
    "head_dim_qk": (128, [128.0, 0, True]),
    "head_dim_v": (128, [128.0, -1]),
    "num_heads_q": (16, [16.0, 0]),
    "num_heads_kv": (8, [8.0, 3]),
    "seqlen_q": (1024, [1024.0, 0]),
    "seqlen_kv": (1024, [1024.0, 0]),
    "training": (True, [1, "yes"]),
    "mask": ("causal", ["causes", 1]),
    "window": ((128, 0), [(128.0, 0), (True, 0), (-2, 0), "128,0"]),
    "dropout": (0.0, [False, 1.5, float("nan")]),
    "softcap": (0.0, [False, -1.0, float("inf")]),
    "bias": ("none", ["nothing"]),
    "layout": ("bshd", ["bxhd"]),
    "pad_between_seqs": (False, [0, None]),
    "page_size": (16, [16.0, 0]),
    "deterministic": (False, [0]),
    "sinks": (False, [0]),
    "kv_cache": (True, [1]),
    "context_parallel": ("p2p", ["p3p"]),
    "return_max_logit": (True, [1]),
    "score_mod": (True, [1]),
    "num_splits": (2, [2.0, 0]),
    "packing": ("kv", ["kvq"]),
    "bias_grad": (True, [1]),
    "bottom_right": (True, [1]),
    "fp8_recipe": ("delayed", ["delay"]),
    "fp8_mha": (True, [1]),
}


def validated(**kwargs) -> AttentionQuery:
    """The validated path, memo bypassed."""
    q = AttentionQuery.__new__(AttentionQuery)
    q.__init__(**kwargs)
    return q


def error_of(build, *args, **kwargs) -> str:
    with pytest.raises(InvalidQueryError) as info:
        build(*args, **kwargs)
    return str(info.value)


def test_every_field_is_covered():
    assert set(FIELDS) == set(attncap.query.FIELDS)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_bad_values_raise_the_same_errors_after_a_good_one_was_memoised(field):
    good, bads = FIELDS[field]
    kept = AttentionQuery(**{**BASE, field: good})
    assert AttentionQuery(**{**BASE, field: good}) is kept  # memoised
    assert kept == validated(**{**BASE, field: good})
    for bad in bads:
        expected = error_of(validated, **{**BASE, field: bad})
        assert error_of(AttentionQuery, **{**BASE, field: bad}) == expected
        assert error_of(AttentionQuery, **{**BASE, field: bad}) == expected  # errors are never memoised


def test_unhashable_and_unusual_arguments_take_the_validated_path():
    a = AttentionQuery(**BASE, window=[128, 0])  # a list: unhashable
    b = AttentionQuery(**BASE, window=[128, 0])
    assert a == b == AttentionQuery(**BASE, window=(128, 0)) and a is not b

    class Name(str):
        pass
    c = AttentionQuery(**{**BASE, "dtype": Name("bf16")})
    assert c == AttentionQuery(**BASE) and c is not AttentionQuery(**{**BASE, "dtype": Name("bf16")})


def test_clear_cache_forgets_the_memo():
    a = AttentionQuery(**BASE)
    attncap.clear_cache()
    b = AttentionQuery(**BASE)
    assert a == b and a is not b
    assert AttentionQuery(**BASE) is b


def test_the_memo_is_bounded():
    assert memo._memoised.cache_info().maxsize == memo.MAX_ENTRIES
    for i in range(memo.MAX_ENTRIES + 100):
        AttentionQuery(**{**BASE, "seqlen_q": 1 + i})
    assert memo._memoised.cache_info().currsize == memo.MAX_ENTRIES


def test_threads_get_equal_validated_queries():
    results, errors = [], []

    def work(i):
        try:
            for j in range(200):
                kwargs = {**BASE, "seqlen_q": 1 + (i * 7 + j) % 50}
                results.append((AttentionQuery(**kwargs), kwargs))
                if j % 50 == 0:
                    memo.forget()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(q == validated(**kwargs) for q, kwargs in results)


def test_resolve_of_memoised_queries_is_unchanged():
    first = resolve(AttentionQuery(**BASE), ENV, probes=False)
    assert resolve(AttentionQuery(**BASE), ENV, probes=False) is first
    attncap.clear_cache()
    again = resolve(validated(**BASE), ENV, probes=False)
    assert [d.as_dict() for d in again.decisions] == [d.as_dict() for d in first.decisions]

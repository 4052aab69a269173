"""The packaged FA4 data answers the questions the project exists for (issues 3 and 4)."""

from __future__ import annotations

import pytest

import attncap
from attncap import AttentionQuery, Environment, resolve

B36, B11, B10 = "4.0.0b36", "4.0.0b11", "4.0.0b10"


def fa4(version=B36, *, arch="sm100", **query):
    query.setdefault("dtype", "bf16")
    env = Environment(versions={"flash-attn-4": version, "torch": "2.13.0"})
    return resolve(AttentionQuery(arch=arch, **query), env, probes=False).decision("flash-attn-4")


def messages(decision) -> str:
    return "\n".join(r.message for r in decision.reasons)


def test_hd256_training_needs_b11_and_the_hint_comes_from_the_data():
    old = fa4(B10, head_dim_qk=256, training=True)
    assert not old.supported
    assert old.install_hint == 'pip install "flash-attn-4>=4.0.0b11"'
    assert fa4(B36, head_dim_qk=256, training=True).supported
    assert fa4(B11, head_dim_qk=256, training=True).supported


def test_seed_false_green_fa4_hd256_training_elsewhere_is_rejected_with_reason_and_force_is_loud():
    d = fa4(B36, arch="sm90", head_dim_qk=512, training=True)
    assert not d.supported and "head_dim_qk=512 > max 256" in messages(d)
    query = AttentionQuery(arch="sm120", head_dim_qk=256, training=True)
    with pytest.raises(attncap.BackendUnavailableError, match="flash-attn-4 was forced"):
        resolve(query, Environment(versions={"flash-attn-4": B36}), force="flash-attn-4", probes=False)


def test_known_issue_applies_whatever_rule_matched():
    cross = fa4(B36, head_dim_qk=256, seqlen_q=1, seqlen_kv=2048)
    assert (cross.supported, cross.decided_by) == (False, "known_issue")
    assert cross.rule is not None  # a support rule matched; the known issue still wins
    assert fa4(B36, head_dim_qk=256, seqlen_q=2048, seqlen_kv=2048).supported


def test_symmetric_512_is_a_known_issue_although_the_validator_accepts_it():
    d = fa4(B36, head_dim_qk=512)
    assert (d.supported, d.decided_by) == (False, "known_issue")
    assert "512" in messages(d)


def test_deepseek_shape_training_on_sm90():
    assert fa4(B36, arch="sm90", head_dim_qk=192, head_dim_v=128, training=True).supported


def test_fp8_is_sm100_only_and_forward_only():
    d = fa4(B36, arch="sm90", dtype="fp8_e4m3", head_dim_qk=128)
    assert not d.supported and "sm100" in messages(d)
    assert fa4(B36, dtype="fp8_e4m3", head_dim_qk=128).supported
    assert not fa4(B36, dtype="fp8_e4m3", head_dim_qk=128, training=True).supported


def test_sm120_is_decided_by_the_table_not_the_validators_silence():
    d = fa4(B36, arch="sm120", head_dim_qk=128)
    assert d.decided_by == "static" and d.probe is None
    assert not fa4(B36, arch="sm80", head_dim_qk=128, training=True).supported  # SM80: forward only


@pytest.mark.parametrize("arch", ["sm100", "sm103", "sm110"])
def test_blackwell_family_shares_cc10_rules(arch):
    assert fa4(B36, arch=arch, head_dim_qk=192, head_dim_v=128).supported

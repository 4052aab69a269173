"""A known issue's `effect` is visible: in reasons, resolve --json, explain, and the matrix outputs;
and the SM90 FA4 answers the issue asks for."""

from __future__ import annotations

import json

import pytest

import attncap
from attncap.cli import main
from attncap.matrix import build_matrix
from attncap.matrix.as_json import matrix_json
from attncap.matrix.markdown import issue_effects, render_markdown

ENV = attncap.Environment(arch="sm90", versions={"flash-attn-4": "4.0.0b36"})


def fa4(hd, hdv, training=False, **kw):
    q = attncap.AttentionQuery(arch="sm90", dtype="bf16", head_dim_qk=hd, head_dim_v=hdv, training=training, **kw)
    return attncap.resolve(q, ENV, probes=False).decision("flash-attn-4")


def test_reason_and_json_carry_the_effect():
    d = fa4(32, 96)
    assert not d.supported and d.decided_by == "known_issue"
    issue = next(r for r in d.reasons if r.code == "known_issue")
    assert issue.effect == "poisons_cuda_context"
    assert "[poisons_cuda_context: poisons the CUDA context]" in issue.message
    assert issue.as_dict()["effect"] == "poisons_cuda_context"
    assert "tests/evidence/fa4_sm90_plane16_h200.jsonl" in issue.source


def test_explain_says_what_happens(capsys):
    argv = ["explain", "flash-attn-4", "--arch", "sm90", "--dtype", "bf16", "--head-dim", "32", "--head-dim-v", "96",
            "--version", "flash-attn-4=4.0.0b36", "--no-probes"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "rejected (decided by known_issue)" in out
    assert "effect: poisons_cuda_context (poisons the CUDA context)" in out
    assert "tests/evidence/fa4_sm90_h200.jsonl" in out
    assert main(argv + ["--json"]) == 1
    rows = [r for r in json.loads(capsys.readouterr().out)["known_issues"] if r["status"] == "applies"]
    assert [r["effect"] for r in rows] == ["poisons_cuda_context"]


def test_matrix_outputs_show_effects():
    from attncap.loader import default_registry
    registry = default_registry()
    m = build_matrix(registry, "flash-attn-4", "4.0.0b36", "bf16", archs=["sm90"], training=True, n=256)
    data = matrix_json(m)
    assert data["known_issues"]["sm90-fwd-o-overflows-smem"]["effect"] == "poisons_cuda_context"
    assert data["known_issues"]["sm90-bwd-dq-pad16-3"]["effect"] == "wrong_result"
    text = render_markdown([m])
    assert "- `sm90-bwd-dq-pad16-3`: [wrong_result] silently wrong dQ" in text
    effects = issue_effects([m])
    assert "poisons_cuda_context (sm90-fwd-o-overflows-smem" in effects and "compile_error (" in effects


@pytest.mark.parametrize("hd,hdv,training,effect", [
    (32, 96, False, "poisons_cuda_context"),   # measured (multiples of 16)
    (40, 120, False, "poisons_cuda_context"),  # its 16-block (48, 128): padded dims decide
    (24, 200, False, "resource_limit"),        # registers: 192-row tile, head_dim_v > 192
    (88, 152, False, "resource_limit"),        # shared memory, non-causal 192x144 tile
    (136, 200, True, "resource_limit"),        # backward shared memory
    (56, 40, True, "compile_error"),           # backward compile error
    (72, 64, True, "wrong_result"),            # wrong dQ
])
def test_sm90_plane_rejections(hd, hdv, training, effect):
    d = fa4(hd, hdv, training)
    assert not d.supported
    assert effect in [r.effect for r in d.reasons if r.code == "known_issue"]


@pytest.mark.parametrize("hd,hdv,training", [(192, 128, True), (136, 128, True), (32, 64, True), (96, 32, True),
                                             (48, 112, False), (256, 64, True), (144, 184, True)])
def test_sm90_plane_supported(hd, hdv, training):
    assert fa4(hd, hdv, training).supported


def test_sm90_masks_change_tiles():
    # causal/local backward for head_dim 97..128 uses a 64-row tile, which fits where 80 rows do not
    assert fa4(128, 192, True, mask="causal_bottom_right", seqlen_q=512, seqlen_kv=512).supported
    assert fa4(128, 192, True, window=(128, 0)).supported
    assert not fa4(128, 192, True).supported
    # a window shrinks the forward tile for head_dim > 128: inference fits, the backward does not
    assert fa4(176, 256, False, window=(128, 0)).supported and not fa4(176, 256, False).supported
    assert not fa4(176, 256, True, window=(128, 0)).supported


def test_sm90_undecided_is_not_supported():
    # versions before the one measured
    old = attncap.resolve(attncap.AttentionQuery(arch="sm90", head_dim_qk=192, head_dim_v=128),
                          attncap.Environment(arch="sm90", versions={"flash-attn-4": "4.0.0b30"}), probes=False)
    assert not old.decision("flash-attn-4").supported

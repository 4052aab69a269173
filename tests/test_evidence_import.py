"""`attncap evidence import`: a synthetic sweep with planted disagreements gives exactly those."""

from __future__ import annotations

import json

import pytest

from attncap.cli import main
from attncap.evidence import effect_of, read_sweep, rectangles, run_import

ENV = {"record": "env", "arch": "sm90", "gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "flash-attn-4": "4.0.0b36"}
ILLEGAL = "AcceleratorError: CUDA error: an illegal memory access was encountered"
MLIR = "MLIRError: Operation creation failed: error: unknown: failed to partition"


def case(hd, hdv, *, training=True, fwd=True, fwd_err=None, bwd=True, bwd_ok=True, bwd_err=None, sticky=None):
    """A tests/gpu/runner.py record (the fields the import reads)."""
    return {"record": "case", "id": f"d{hd}x{hdv}-{'train' if training else 'infer'}", "backend": "flash-attn-4",
            "dtype": "bf16", "batch": 2, "seqlen_q": 512, "seqlen_kv": 512, "num_heads_q": 4, "num_heads_kv": 4,
            "head_dim_qk": hd, "head_dim_v": hdv, "mask": "none", "window": None, "dropout": 0.0,
            "training": training, "ran_forward": fwd, "fwd_correct": True if fwd else None, "error": fwd_err,
            "ran_backward": (bwd if fwd else None) if training else None,
            "bwd_correct": bwd_ok if (training and fwd and bwd) else None, "bwd_error": bwd_err,
            "sticky_cuda_error": sticky}


def write(tmp_path, records, name="tests/evidence/synthetic.jsonl", header=True):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in ([ENV] if header else []) + records))
    return path


# What the table says for FA4 4.0.0b36 on sm90 (capabilities/flash_attn_4.yaml):
AGREEING = [
    case(128, 128),                                             # supported, and it ran
    case(192, 128),                                             # supported (DeepSeek shape)
    case(16, 64, fwd=False, fwd_err=ILLEGAL, sticky=True),       # sm90-fwd-o-overflows-smem: poisons
    case(64, 32, bwd=False, bwd_err=MLIR),                       # sm90-bwd-compile-64
    case(72, 72, bwd_ok=False),                                  # sm90-bwd-dq-pad16-3: wrong dQ
]
PLANTED = [
    # the table accepts, the run fails: a 2x2 square of 16-blocks, qk 129..160 x v 1..32
    case(144, 16, bwd=False, bwd_err=ILLEGAL, sticky=True),
    case(160, 32, bwd=False, bwd_err=ILLEGAL, sticky=True),
    case(136, 24, bwd=False, bwd_err=ILLEGAL, sticky=True),
    case(152, 8, bwd=False, bwd_err=ILLEGAL, sticky=True),
    # the table rejects (a known issue), the run is fine
    case(32, 96, training=False),
    # both fail, but not as the known issue says: a compile error where the data records a poisoned context
    case(48, 160, fwd=False, fwd_err=MLIR),
]


def test_planted_disagreements_are_exactly_reported(tmp_path):
    path = write(tmp_path, AGREEING + PLANTED)
    result = run_import(str(path), backend="flash-attn-4")
    got = {(r.obs.head_dim_qk, r.obs.head_dim_v, r.obs.training, "verdict" if r.disagrees else "effect")
           for r in result["problems"]}
    assert got == {(144, 16, True, "verdict"), (160, 32, True, "verdict"), (136, 24, True, "verdict"),
                   (152, 8, True, "verdict"), (32, 96, False, "verdict"),
                   (48, 160, False, "effect"), (48, 160, True, "effect")}
    # the four training failures merge into one rectangle of 16-blocks, citing the file
    yaml = result["yaml"]
    assert yaml.count("- id:") == 1, yaml
    assert "head_dim_qk: {min: 129, max: 160}, head_dim_v: {min: 1, max: 32}" in yaml
    assert "training: true" in yaml and "effect: poisons_cuda_context" in yaml
    assert "source: tests/evidence/synthetic.jsonl (NVIDIA H200, flash-attn-4 4.0.0b36)" in yaml
    assert 'versions: ">=4.0.0b36"' in yaml


def test_exit_status_and_formats(tmp_path, capsys):
    good, bad = write(tmp_path, AGREEING, "good.jsonl"), write(tmp_path, AGREEING + PLANTED, "bad.jsonl")
    assert main(["evidence", "import", str(good)]) == 0
    assert "0 disagreement(s)" in capsys.readouterr().out
    assert main(["evidence", "import", str(bad)]) == 1
    text = capsys.readouterr().out
    assert "7 disagreement(s)" in text and f"{bad}:7: bf16 qk=144 v=16 training" in text
    assert "table says supported, observed fails (poisons_cuda_context)" in text
    assert main(["evidence", "import", str(bad), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert len(data["disagreements"]) == 7 and data["arch"] == "sm90"
    kinds = {(d["head_dim_qk"], d["kind"]) for d in data["disagreements"]}
    assert (48, "effect") in kinds and (32, "verdict") in kinds
    assert main(["evidence", "import", str(bad), "--format", "github"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith(f"::error file={bad},line=") for line in lines) == 7
    assert lines[-1].startswith("::notice") and "%0A" in lines[-1]


def test_flat_sweep_shape_and_bad_input(tmp_path, capsys):
    flat = {"hd": 16, "hdv": 48, "dtype": "bf16", "causal": False, "seqlen_q": 512, "seqlen_k": 512, "hq": 4,
            "hkv": 4, "bwd": True, "ran_fwd": False, "fwd_error": ILLEGAL, "sticky_cuda_error": True}
    path = write(tmp_path, [flat], "flat.jsonl", header=False)
    assert main(["evidence", "import", str(path)]) == 2
    assert "no env header names the arch: pass --arch" in capsys.readouterr().err
    assert main(["evidence", "import", str(path), "--arch", "sm_90", "--version", "flash-attn-4=4.0.0b36"]) == 0
    obs = read_sweep(str(path), arch="sm90").observations
    assert [(o.training, o.ok, o.effect) for o in obs] == [(False, False, "poisons_cuda_context"),
                                                          (True, False, "poisons_cuda_context")]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(ENV) + "\n" + '{"record": "case", "head_dim_qk": "x"}\n')
    assert main(["evidence", "import", str(broken)]) == 2
    assert f"{broken}:2: field 'head_dim_qk' must be an integer" in capsys.readouterr().err
    broken.write_text("not json\n")
    assert main(["evidence", "import", str(broken)]) == 2
    assert f"{broken}:1: not JSON" in capsys.readouterr().err
    assert main(["evidence", "import", str(path), "--block", "0", "--arch", "sm90"]) == 2


@pytest.mark.parametrize("error,sticky,effect", [
    (ILLEGAL, None, "poisons_cuda_context"),
    ("CompilerDiagnosticError: error: PTX assembly failed: (C7602) Insufficient registers", None, "resource_limit"),
    ("CUDADialectError: error[CUDA_LAUNCH_INVALID_CONFIG]: CUDA launch failed", None, "resource_limit"),
    (MLIR, None, "compile_error"),
    ("AssertionError: head_dim must be a multiple of 8", None, "raises"),
    ("anything", True, "poisons_cuda_context"),
])
def test_effect_of_error_text(error, sticky, effect):
    assert effect_of(error, sticky) == effect


def test_rectangles_merge_blocks():
    # an L shape of 16-blocks: two rows of two blocks, then one block
    points = {(16, 16), (16, 32), (32, 16), (32, 32), (48, 16)}
    assert sorted(rectangles(points, 16)) == [(1, 2, 1, 2), (3, 3, 1, 1)]
    assert rectangles({(8, 8), (16, 16)}, 16) == [(1, 1, 1, 1)]
    assert sorted(rectangles({(8, 8), (16, 16)}, 8)) == [(1, 1, 1, 1), (2, 2, 2, 2)]

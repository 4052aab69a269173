"""Probes: the real FA4 validator, override modes, drift, and fault isolation with fake modules."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

import attncap
from fakes import fake_fa4_site
from attncap import AttentionQuery, Environment, resolve
from attncap.drift import run_drift

HAVE_FA4 = importlib.util.find_spec("flash_attn") is not None and importlib.util.find_spec("triton") is not None
needs_fa4 = pytest.mark.skipif(not HAVE_FA4, reason="flash-attn-4 (with triton) is not installed")


def installed_fa4() -> str:
    return importlib.metadata.version("flash-attn-4")


@pytest.fixture
def fa4_env():
    from attncap import probes
    # These tests ask the real validator: a resolve alone never imports FA4, so warm it explicitly.
    assert probes.warm(["fa4-head-dims"]) == {"fa4-head-dims": True}
    return Environment(versions={"flash-attn-4": installed_fa4(), "torch": "2.13.0"})


@needs_fa4
def test_real_validator_agrees_and_records_its_verdict(fa4_env):
    d = resolve(AttentionQuery(arch="sm90", head_dim_qk=256, training=True), fa4_env).decision("flash-attn-4")
    assert d.supported and d.decided_by == "static"
    assert d.probe.supported is True and "_validate_head_dims(256, 256, 9, 8) accepted" in d.probe.message
    rejected = resolve(AttentionQuery(arch="sm90", head_dim_qk=264), fa4_env).decision("flash-attn-4")
    assert rejected.probe.supported is False and "is not supported on SM90" in rejected.probe.message


@needs_fa4
def test_validator_silence_outside_its_domain_is_no_opinion(fa4_env):
    d = resolve(AttentionQuery(arch="sm120", head_dim_qk=128), fa4_env).decision("flash-attn-4")
    assert d.probe is None and d.decided_by == "static"


@needs_fa4
def test_known_issue_beats_the_probe(fa4_env):
    d = resolve(AttentionQuery(arch="sm100", head_dim_qk=512), fa4_env).decision("flash-attn-4")
    assert d.probe.supported is True
    assert (d.supported, d.decided_by) == (False, "known_issue")


@needs_fa4
def test_probe_speaks_only_for_the_installed_version():
    env = Environment(versions={"flash-attn-4": "4.0.0b11"})
    d = resolve(AttentionQuery(arch="sm100", head_dim_qk=128), env).decision("flash-attn-4")
    assert d.probe.supported is None and "speaks for the installed flash-attn-4" in d.probe.message


def test_probes_off_by_argument_and_environment(monkeypatch):
    env = Environment(versions={"flash-attn-4": "4.0.0b36"})
    q = AttentionQuery(arch="sm100", head_dim_qk=128)
    assert resolve(q, env, probes=False).decision("flash-attn-4").probe is None
    monkeypatch.setenv("ATTNCAP_PROBES", "0")
    assert resolve(q, env).decision("flash-attn-4").probe is None


@needs_fa4
def test_drift_is_zero_on_the_packaged_data_except_known_issues(fa4_env):
    report = run_drift(attncap.default_registry(), "flash-attn-4", fa4_env, n=320)
    assert report.drift == [], [f.describe() for f in report.drift]
    assert all(f.issues for f in report.findings)


@needs_fa4
def test_deleting_a_rule_shows_as_drift_and_the_probe_decides(tmp_path, fa4_env):
    (tmp_path / "flash_attn_4.yaml").write_text("backend: flash-attn-4\nsupport:\n  - {id: sm100-hd256, remove: true}\n")
    registry = attncap.load_registry((tmp_path,), use_env=False)
    report = run_drift(registry, "flash-attn-4", fa4_env, archs=["sm100"], dtypes=["bf16"], n=320)
    assert [(f.qks, f.vs, f.kind) for f in report.drift] == [([256], [256], "probe-only")]
    q = AttentionQuery(arch="sm100", head_dim_qk=256, seqlen_q=128)
    d = resolve(q, fa4_env, registry=registry).decision("flash-attn-4")
    assert (d.supported, d.decided_by, d.static) == (True, "probe", False)


@needs_fa4
def test_cli_drift_exit_codes(tmp_path):
    run = [sys.executable, "-m", "attncap.cli", "drift", "--arch", "sm100", "--dtype", "bf16", "--head-dims", "1..300"]
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    (tmp_path / "flash_attn_4.yaml").write_text("backend: flash-attn-4\nsupport:\n  - {id: sm100-hd256, remove: true}\n")
    out = subprocess.run(run + ["--data", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert "head_dim_qk 256 x head_dim_v 256 (1 point)" in out.stdout and "id: drift-sm100-bf16" in out.stdout


# ---- fault isolation: a fake flash_attn package shadows the real one in a subprocess ----------

GOOD = "def _validate_head_dims(head_dim, head_dim_v, compute_capability, alignment):\n    assert head_dim <= 8, 'no'\n"
FAKES = {
    "import-error": "raise ImportError('cutlass-dsl is broken')\n",
    "missing-function": "def something_else():\n    pass\n",
    "signature-change": "def _validate_head_dims(head_dim, head_dim_v, arch):\n    pass\n",
    "runtime-error": "def _validate_head_dims(head_dim, head_dim_v, compute_capability, alignment):\n"
                     "    raise RuntimeError('CUDA driver missing')\n",
    "slow-import": "import time\ntime.sleep(2)\n" + GOOD,
    "optimize": GOOD,
}
EXPECT = {
    "import-error": "cannot import flash_attn.cute.interface: ImportError: cutlass-dsl is broken",
    "missing-function": "has no _validate_head_dims",
    "signature-change": "changed; expected",
    "runtime-error": "raised RuntimeError: CUDA driver missing",
    "slow-import": "is still running",
    "optimize": "python -O strips the validator's asserts",
}
SCRIPT = textwrap.dedent("""
    import json, attncap
    from attncap import AttentionQuery, Environment, resolve
    env = Environment(versions={"flash-attn-4": "4.0.0b36"})
    out = []
    for hd in (128, 256):
        d = resolve(AttentionQuery(arch="sm100", head_dim_qk=hd, seqlen_q=64), env).decision("flash-attn-4")
        out.append({"supported": d.supported, "decided_by": d.decided_by, "probe": d.probe.as_dict()})
    print(json.dumps(out))
""")


@pytest.mark.parametrize("fault", sorted(FAKES))
def test_probe_faults_degrade_to_no_opinion(tmp_path, fault):
    site = fake_fa4_site(tmp_path, FAKES[fault], without_torch=True)  # warm: FA4's import only
    # ATTNCAP_PROBES=warm imports the library on the first resolve, waiting at most the timeout: short only
    # where the test is about a slow import (the others must finish, preflight included, on a loaded machine).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()]),
           "ATTNCAP_PROBE_TIMEOUT": "0.5" if fault == "slow-import" else "60", "ATTNCAP_PROBES": "warm"}
    flags = ["-O"] if fault == "optimize" else []
    proc = subprocess.run([sys.executable, *flags, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for row in json.loads(proc.stdout):
        # The table still answers: (128, 128) is supported on sm100, (256, 256) too from 4.0.0b11.
        assert row["supported"] is True and row["decided_by"] == "static"
        assert row["probe"]["supported"] is None
        assert EXPECT[fault] in row["probe"]["message"]


def test_a_working_fake_validator_overrides_the_table(tmp_path):
    site = fake_fa4_site(tmp_path, GOOD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()]), "ATTNCAP_PROBES": "warm"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["supported"], r["decided_by"]) for r in rows] == [(False, "probe"), (False, "probe")]
    assert "no" in rows[0]["probe"]["message"]


def test_third_party_probe_through_registry(monkeypatch):
    from attncap import probes

    class Yes(probes.Probe):
        name, package, judges = "fa4-head-dims", "flash-attn-4", frozenset({"head_dim_qk", "head_dim_v",
                                                                            "head_dims", "alignment_bytes"})

        def installed_version(self):
            return "4.0.0b36"

        def check(self, query, ctx):
            return self.verdict(True, "yes")
    monkeypatch.setitem(probes._probes, "fa4-head-dims", Yes())
    attncap.clear_cache()
    env = Environment(versions={"flash-attn-4": "4.0.0b36"})
    d = resolve(AttentionQuery(arch="sm90", head_dim_qk=400), env).decision("flash-attn-4")
    assert (d.supported, d.decided_by) == (True, "probe")  # override mode: the probe's yes replaces the table's no
    fp8 = resolve(AttentionQuery(arch="sm90", head_dim_qk=128, dtype="fp8_e4m3"), env).decision("flash-attn-4")
    assert not fp8.supported  # the probe judges head dims only: the dtype rule still holds
    attncap.clear_cache()


def test_sdpa_probe_without_cuda_has_no_opinion():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("covered by tests/gpu/test_sdpa_probe_gpu.py")
    env = Environment(versions={"torch": importlib.metadata.version("torch")})
    d = resolve(AttentionQuery(arch="sm90", head_dim_qk=128), env).decision("torch-sdpa-flash")
    assert d.probe is not None and d.probe.supported is None and "no CUDA device" in d.probe.message
    assert d.supported and d.decided_by == "static"


def test_a_probe_looks_up_the_installed_version_once(monkeypatch):
    from attncap import probes
    calls = []

    class Counting(probes.Probe):
        name, package, judges = "fa4-head-dims", "flash-attn-4", frozenset({"head_dim_qk", "head_dim_v"})

        def installed_version(self):
            calls.append(1)
            return "4.0.0b36"

        def check(self, query, ctx):
            return self.verdict(True, "yes")
    monkeypatch.setitem(probes._probes, "fa4-head-dims", Counting())
    attncap.clear_cache()
    env = Environment(versions={"flash-attn-4": "4.0.0b36"})
    for hd in range(8, 136, 8):
        resolve(AttentionQuery(arch="sm90", head_dim_qk=hd), env)
    assert len(calls) == 1  # a metadata lookup costs ~0.5 ms: never per resolve
    attncap.clear_cache()


def test_a_backend_after_the_selected_one_is_probed_when_its_decision_is_read(monkeypatch):
    """Selection stops at the first supported backend; a later backend's probe is asked when the
    decisions are read, and its opinion counts there as it would have during selection."""
    from attncap import probes
    calls = []

    class No(probes.Probe):
        name, package, judges = "fa4-head-dims", "flash-attn-4", frozenset({"head_dim_qk", "head_dim_v"})

        def installed_version(self):
            return "4.0.0b36"

        def check(self, query, ctx):
            calls.append(query)
            return self.verdict(False, "no")
    monkeypatch.setitem(probes._probes, "fa4-head-dims", No())
    attncap.clear_cache()
    env = Environment(versions={"flash-attn-4": "4.0.0b36", "flash-attn": "2.8.3"})
    resolution = resolve(AttentionQuery(arch="sm90", head_dim_qk=128), env, prefer=["flash-attn-2"])
    assert resolution.selected == "flash-attn-2" and calls == []  # FA4 comes later: not asked to select
    fa4 = resolution.decision("flash-attn-4")
    assert (fa4.supported, fa4.decided_by, fa4.probe.supported) == (False, "probe", False) and len(calls) == 1
    first = resolve(AttentionQuery(arch="sm90", head_dim_qk=136), env, prefer=["flash-attn-4"])
    assert first.decision("flash-attn-4").decided_by == "probe" and len(calls) == 2  # asked first: during selection
    attncap.clear_cache()


def test_a_restricting_probe_is_asked_only_when_the_table_says_yes(monkeypatch):
    """A `restrict` probe can only turn a yes into a no: selection asks it only where the table says yes;
    the decisions ask it for the rest when read, so every probed decision shows its verdict."""
    from attncap import probes
    calls = []

    class No(probes.Probe):
        name, package, judges = "torch-sdpa-flash", "torch", frozenset()

        def installed_version(self):
            return "2.13.0"

        def check(self, query, ctx):
            calls.append(query.head_dim_qk)
            return self.verdict(False, "no")
    monkeypatch.setitem(probes._probes, "torch-sdpa-flash", No())
    attncap.clear_cache()
    env = Environment(versions={"torch": "2.13.0"})
    big = resolve(AttentionQuery(arch="sm90", head_dim_qk=512), env, prefer=["torch-sdpa-flash"])
    assert calls == []  # the table rejects head dim 512 for SDPA flash: nothing for the probe to restrict
    d = big.decision("torch-sdpa-flash")
    assert (d.supported, d.decided_by, d.probe.supported) == (False, "static", False) and calls == [512]
    small = resolve(AttentionQuery(arch="sm90", head_dim_qk=128), env, prefer=["torch-sdpa-flash"])
    assert calls == [512, 128] and small.selected != "torch-sdpa-flash"  # the table's yes, the probe's no
    assert small.decision("torch-sdpa-flash").decided_by == "probe"
    attncap.clear_cache()

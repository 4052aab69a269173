"""Reliability under attack (issue 18), probes and values: probe faults give "no opinion" with the
reason in bounded time (item 15), the SDPA probe allocates nothing of the problem (item 14, CPU
part; tests/gpu/test_sdpa_probe_memory.py on a GPU), and non-integral scalars are refused (item 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from attncap import AttentionQuery, Environment, InvalidQueryError, resolve
from fakes import fake_fa4_site

# ---- 15. probe faults, with a fake flash-attn-4 first on the path --------------------------------

SIGNATURE = "(head_dim, head_dim_v, compute_capability, alignment)"
FAULTS = {
    "returns-false": (f"def _validate_head_dims{SIGNATURE}:\n    return False\n",
                      "returned False; expected None (accept) or an AssertionError"),
    "validator-system-exit": (f"import sys\ndef _validate_head_dims{SIGNATURE}:\n    sys.exit(3)\n",
                              "raised SystemExit: 3"),
    "import-system-exit": ("import sys\nsys.exit('plugin gave up')\n",
                           "cannot import flash_attn.cute.interface: SystemExit: plugin gave up"),
    "lazy-getattr-raises": ("def __getattr__(name):\n    raise RuntimeError(f'lazy import of {name} failed')\n",
                            "inspecting flash_attn.cute.interface failed: RuntimeError: lazy import of "
                            "_validate_head_dims failed"),
    "lazy-getattr-not-callable": ("def __getattr__(name):\n    return 42\n",
                                  "_validate_head_dims is a int, not a function"),
    "signature-raises": ("class _V:\n    @property\n    def __signature__(self):\n        raise RuntimeError('no')\n"
                         "    def __call__(self, *a):\n        pass\n_validate_head_dims = _V()\n",
                         "cannot read the signature of _validate_head_dims: RuntimeError: no"),
    "import-hangs": ("import time\ntime.sleep(3600)\n", "is still running"),
    "import-aborts": ("import os\nos.abort()\n", "killed a check interpreter (signal 6 SIGABRT)"),
    "import-segfaults": ("import ctypes\nctypes.string_at(0)\n", "killed a check interpreter (signal 11 SIGSEGV)"),
}
SCRIPT = textwrap.dedent("""
    import json
    from attncap import AttentionQuery, Environment, probes, resolve
    probes.warm(["fa4-head-dims"])  # a resolve alone never imports FA4: ask it to (waits ATTNCAP_PROBE_TIMEOUT)
    env = Environment(versions={"flash-attn-4": "4.0.0b36"})
    d = resolve(AttentionQuery(arch="sm100", head_dim_qk=128, seqlen_q=64), env).decision("flash-attn-4")
    print(json.dumps({"supported": d.supported, "decided_by": d.decided_by, "probe": d.probe.as_dict()}))
""")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_probe_faults_give_no_opinion_with_the_reason(tmp_path, fault):
    body, expected = FAULTS[fault]
    site = fake_fa4_site(tmp_path / "site", body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()]), "ATTNCAP_PROBE_TIMEOUT": "5",
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONFAULTHANDLER": ""}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]  # the caller survives an abort or a segfault in the import
    row = json.loads(proc.stdout.splitlines()[-1])
    assert (row["supported"], row["decided_by"]) == (True, "static")  # the table still answers
    assert row["probe"]["supported"] is None and expected in row["probe"]["message"], row


def test_a_passing_preflight_is_remembered_per_installed_copy(tmp_path):
    good = f"def _validate_head_dims{SIGNATURE}:\n    assert head_dim <= 8, 'no'\n"
    site = fake_fa4_site(tmp_path / "site", good)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()]),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=90)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["probe"]["supported"] is False  # the fake validator answered
    assert len((tmp_path / "cache" / "attncap" / "fa4-preflight-passed").read_text().split()) == 1


def test_unreadable_metadata_of_any_distribution_does_not_break_resolve(tmp_path):
    site = tmp_path / "site"
    for name, version in (("zzz_broken", "1.0"), ("flash_attn_4", "4.0.0b36")):
        meta = site / f"{name}-{version}.dist-info"
        meta.mkdir(parents=True)
        (meta / "METADATA").write_bytes(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
                                        + b"Summary: caf\xe9 \xff\n")
        (meta / "entry_points.txt").write_text("[attncap.probes]\nbroken = nowhere:Probe\n", encoding="utf-8")
    script = ("from attncap import AttentionQuery, resolve\n"
              "r = resolve(AttentionQuery(arch='sm90', head_dim_qk=64))\n"
              "print(r.selected, r.decision('flash-attn-4').decided_by)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cannot read the metadata of flash-attn-4" in proc.stderr  # said once, as a warning
    assert proc.stdout.split()[1] == "not_installed"  # unreadable counts as absent, for that distribution only


def test_probe_system_exit_in_check_does_not_end_the_caller(monkeypatch):
    import attncap
    from attncap import probes

    class Exits(probes.Probe):
        name, package, judges = "fa4-head-dims", "flash-attn-4", frozenset({"head_dim_qk"})

        def installed_version(self):
            return "4.0.0b36"

        def check(self, query, ctx):
            raise SystemExit("bye")
    monkeypatch.setitem(probes._probes, "fa4-head-dims", Exits())
    attncap.clear_cache()
    try:
        d = resolve(AttentionQuery(arch="sm90", head_dim_qk=128), Environment(versions={"flash-attn-4": "4.0.0b36"}))
        assert d.decision("flash-attn-4").probe.message == "probe failed: SystemExit: bye"
    finally:
        attncap.clear_cache()


# ---- 14. the SDPA probe describes the problem without allocating it (CPU part) ------------------

def test_sdpa_tensors_claim_the_full_size_over_256_bytes():
    torch = pytest.importorskip("torch")
    from attncap.probes.sdpa import _unallocated
    base = torch.empty(256, dtype=torch.uint8)
    size = (1, 128, 131072, 128)  # 4 GiB of bf16 if it were allocated
    t = _unallocated(torch, base, size, torch.bfloat16, requires_grad=True)
    assert tuple(t.shape) == size and t.stride() == (128 * 131072 * 128, 131072 * 128, 128, 1)
    assert t.data_ptr() == base.data_ptr() and t.storage_offset() == 0 and t.requires_grad
    assert t.dtype == torch.bfloat16 and t.device == base.device


def test_sdpa_reasons_are_captured_not_printed(capfd):
    from attncap.probes.sdpa import _captured

    def torch_like():
        os.write(2, b"[W1202 00:11:52.000000000 4242 sdp_utils.cpp:123] Warning: Flash attention requires q,k,v to "
                    b"have the same last dimension (function check_head_dim_size_flash)\nsomeone else's line\n")
        return False
    result, reasons = _captured(torch_like)
    assert result is False
    assert reasons == ["Flash attention requires q,k,v to have the same last dimension"]
    assert capfd.readouterr().err == "someone else's line\n"  # not torch's: passed on


# ---- 17. values that slipped past query validation ----------------------------------------------

class Float0d:
    """What np.array(64.7) looks like to the old check: an __index__ that refuses, an __int__ that truncates."""

    ndim, dtype = 0, "float64"

    def __index__(self):
        raise TypeError("only integer scalar arrays can be converted to a scalar index")

    def __int__(self):
        return 64


INTEGER_FIELDS = ("head_dim_qk", "head_dim_v", "num_heads_q", "num_heads_kv", "seqlen_q", "seqlen_kv", "page_size")


def _query(field, value):
    fields = {"arch": "sm90", "head_dim_qk": 64, "num_heads_q": 8, field: value}
    return AttentionQuery(**fields)


@pytest.mark.parametrize("field", INTEGER_FIELDS)
def test_non_integral_scalars_are_refused(field):
    bad = [Float0d(), True, 64.0]
    torch = sys.modules.get("torch") or pytest.importorskip("torch")
    bad += [torch.tensor(64.7), torch.tensor(64.0), torch.tensor(True), torch.tensor([8]), torch.tensor(8.0).half()]
    try:
        import numpy as np
        bad += [np.array(64.7), np.float64(64.0), np.bool_(True), np.array([8])]
    except ImportError:
        pass
    for value in bad:
        with pytest.raises(InvalidQueryError) as caught:
            _query(field, value)
        assert caught.value.field == field and "a positive integer" in str(caught.value)


@pytest.mark.parametrize("field", INTEGER_FIELDS)
def test_integer_scalars_are_still_accepted(field):
    torch = pytest.importorskip("torch")
    for value in (8, torch.tensor(8), torch.tensor(8, dtype=torch.int32)):
        assert getattr(_query(field, value), field) == 8 and type(getattr(_query(field, value), field)) is int

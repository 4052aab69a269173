"""No blocking, no surprise imports (issue 16, item 5).

A resolve with probes on never imports torch or FA4 and never waits: a probe answers when its
library is already imported or after attncap.probes.warm() / ATTNCAP_PROBES=warm / the CLI's
--probe, and otherwise gives no opinion at once, saying how to enable it (and, for an FA4 version
whose validator the packaged table was checked against, that the table already equals it).
Nothing here asserts a duration: the scripts record imports, threads and child processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import attncap
from attncap import AttentionQuery, Environment, probes, resolve
from attncap.probes.fa4 import CHECKED
from attncap.settings import SettingError, probes_mode
from fakes import fake_fa4_site

ROOT = Path(__file__).resolve().parents[1]
HAVE_FA4 = importlib.util.find_spec("flash_attn") is not None and importlib.util.find_spec("triton") is not None
needs_fa4 = pytest.mark.skipif(not HAVE_FA4, reason="flash-attn-4 (with triton) is not installed")
GOOD = "def _validate_head_dims(head_dim, head_dim_v, compute_capability, alignment):\n    assert head_dim <= 8, 'no'\n"

# Records every thread started or joined and every child process, then resolves; prints what it saw.
WATCH = textwrap.dedent("""
    import json, sys, threading, time
    import subprocess  # imported only to watch it: attncap must not use it on a resolve
    events = []
    _start, _join, _popen = threading.Thread.start, threading.Thread.join, subprocess.Popen.__init__
    def start(self, *a, **k):
        events.append(f"thread start {self.name}")
        return _start(self, *a, **k)
    def join(self, *a, **k):
        events.append(f"thread join {self.name}")
        return _join(self, *a, **k)
    def popen(self, *a, **k):
        events.append(f"subprocess {a[:1]}")
        return _popen(self, *a, **k)
    threading.Thread.start, threading.Thread.join, subprocess.Popen.__init__ = start, join, popen
    import attncap
    from attncap import AttentionQuery, Environment, resolve
    attncap.default_registry().compiled
    modules_before = set(sys.modules)
    out = {"rows": []}
    """)
WATCH_END = textwrap.dedent("""
    new = sorted(set(sys.modules) - modules_before)
    out.update(events=events, torch="torch" in sys.modules,
               flash_attn=sorted(m for m in sys.modules if m.split(".")[0] == "flash_attn"),
               threads=[t.name for t in threading.enumerate() if t is not threading.main_thread()], new=new)
    print(json.dumps(out))
    """)


def run_script(body: str, *, env: dict | None = None, pythonpath: list[str] = (), timeout: int = 120) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ATTNCAP_")}
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(ROOT)])
    environ.update(env or {})
    proc = subprocess.run([sys.executable, "-c", WATCH + textwrap.dedent(body) + WATCH_END], capture_output=True,
                          text=True, env=environ, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


FIRST_RESOLVES = """
    for arch in ("sm90", "sm100", "sm103", "sm110"):
        for training in (False, True):
            for env in (None, Environment.detect().replace(arch=arch)):
                start = time.perf_counter()
                r = resolve(AttentionQuery(arch=arch, head_dim_qk=128, training=training, mask="causal"), env)
                d = r.decision("flash-attn-4")
                out["rows"].append({"arch": arch, "seconds": time.perf_counter() - start, "selected": r.selected,
                                    "supported": d.supported, "probe": d.probe and d.probe.as_dict(),
                                    "sdpa": r.decision("torch-sdpa-flash").probe.as_dict()})
"""


@needs_fa4
@pytest.mark.parametrize("setting", [None, "1", "on"])
def test_resolve_with_fa4_installed_imports_nothing_and_waits_for_nothing(setting):
    out = run_script(FIRST_RESOLVES, env={} if setting is None else {"ATTNCAP_PROBES": setting})
    assert out["torch"] is False and out["flash_attn"] == [], out["new"]
    assert out["events"] == [] and out["threads"] == []  # no import thread, no join, no preflight child
    installed = importlib.metadata.version("flash-attn-4")
    first = out["rows"][0]
    print(f"first resolve (not asserted): {first['seconds'] * 1e3:.1f} ms; modules imported: {len(out['new'])}")
    for row in out["rows"]:
        assert row["selected"] == "flash-attn-4" and row["supported"] is True  # the table answers
        probe = row["probe"]
        assert probe["supported"] is None
        assert "flash_attn.cute.interface is not imported" in probe["message"]
        assert "attncap.probes.warm()" in probe["message"] and "ATTNCAP_PROBES=warm" in probe["message"]
        if installed in CHECKED:  # the checked fact: nothing is lost by not asking
            assert f"the packaged table already equals the validator of flash-attn-4 {installed}" in probe["message"]
        assert "torch is not imported" in row["sdpa"]["message"] and "warm()" in row["sdpa"]["message"]


@needs_fa4
def test_a_caller_that_imported_torch_gets_the_sdpa_probe_and_still_no_fa4_import():
    out = run_script("""
        import torch  # the caller's own import
        events.clear()  # torch's own threads are not attncap's
        r = resolve(AttentionQuery(arch="sm100", head_dim_qk=128), Environment.detect().replace(arch="sm100"))
        out["rows"] = [r.decision("flash-attn-4").probe.as_dict(), r.decision("torch-sdpa-flash").probe.as_dict()]
    """)
    fa4, sdpa = out["rows"]
    assert out["flash_attn"] == [] and not [e for e in out["events"] if "attncap" in e or "subprocess" in e]
    assert fa4["supported"] is None and "flash_attn.cute.interface is not imported" in fa4["message"]
    assert "torch is not imported" not in sdpa["message"]  # asked: torch answers (no CUDA device on CPU)


def test_an_unchecked_version_says_the_table_was_not_checked(tmp_path):
    site = fake_fa4_site(tmp_path, GOOD, version="4.0.0b99")
    out = run_script("""
        r = resolve(AttentionQuery(arch="sm100", head_dim_qk=128), Environment(versions={"flash-attn-4": "4.0.0b99"}))
        out["rows"].append(r.decision("flash-attn-4").probe.as_dict())
    """, pythonpath=[site])
    assert out["events"] == [] and out["flash_attn"] == []
    message = out["rows"][0]["message"]
    assert "was not checked against the validator of flash-attn-4 4.0.0b99" in message and "warm()" in message
    assert "4.0.0b99" not in CHECKED


def test_an_interface_the_caller_imported_is_asked_at_once(tmp_path):
    site = fake_fa4_site(tmp_path, GOOD)
    out = run_script("""
        import flash_attn.cute.interface  # the caller's own import (a framework that runs FA4)
        r = resolve(AttentionQuery(arch="sm100", head_dim_qk=128), Environment(versions={"flash-attn-4": "4.0.0b36"}))
        d = r.decision("flash-attn-4")
        out["rows"].append([d.supported, d.decided_by, d.probe.as_dict()])
    """, pythonpath=[site])
    assert out["events"] == []  # adopted in place: no thread, no preflight
    supported, decided_by, probe = out["rows"][0]
    assert (supported, decided_by, probe["supported"]) == (False, "probe", False)
    assert "_validate_head_dims(128, 128, 10, 8): no" in probe["message"]


def test_warm_forgets_the_answers_cached_before_it(tmp_path):
    site = fake_fa4_site(tmp_path, GOOD)
    out = run_script("""
        from attncap import probes
        env = Environment(versions={"flash-attn-4": "4.0.0b36"})
        q = AttentionQuery(arch="sm100", head_dim_qk=128)
        before = resolve(q, env)
        assert resolve(q, env) is before  # cached
        out["warm"] = probes.warm()
        after = resolve(q, env)
        out["rows"] = [before.decision("flash-attn-4").probe.as_dict(), after.decision("flash-attn-4").probe.as_dict(),
                       after is before, resolve(q, env) is after,
                       [before.decision("flash-attn-4").supported, after.decision("flash-attn-4").supported]]
    """, pythonpath=[site], env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    before, after, same, cached_again, supported = out["rows"]
    assert out["warm"]["fa4-head-dims"] is True
    assert "is not imported" in before["message"] and before["supported"] is None
    assert after["supported"] is False and "_validate_head_dims(128, 128, 10, 8)" in after["message"]
    assert same is False and cached_again is True  # the earlier answer did not stick; the new one is cached
    assert supported == [True, False]  # the fake validator rejects what the table accepts (override mode)
    assert any(e.startswith("thread start attncap-fa4-import") for e in out["events"])  # warm() imports


def test_warm_without_blocking_answers_from_the_table_until_the_import_finishes(tmp_path):
    site = fake_fa4_site(tmp_path, "import time\ntime.sleep(1)\n" + GOOD)
    out = run_script("""
        from attncap import probes
        env = Environment(versions={"flash-attn-4": "4.0.0b36"})
        q = AttentionQuery(arch="sm100", head_dim_qk=128)
        out["started"] = probes.warm(["fa4-head-dims"], block=False)
        pending = resolve(q, env).decision("flash-attn-4")
        out["done"] = probes.warm(["fa4-head-dims"])  # now wait for it
        ready = resolve(q, env).decision("flash-attn-4")
        out["rows"] = [[pending.supported, pending.probe.as_dict()], [ready.supported, ready.probe.as_dict()]]
    """, pythonpath=[site], env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert out["started"] == {"fa4-head-dims": None} and out["done"] == {"fa4-head-dims": True}
    (pending_ok, pending), (ready_ok, ready) = out["rows"]
    assert pending_ok is True and pending["supported"] is None and "is still running" in pending["message"]
    assert ready_ok is False and ready["supported"] is False  # the finished import replaced the cached answer


def test_attncap_probes_warm_imports_on_the_first_resolve(tmp_path):
    site = fake_fa4_site(tmp_path, GOOD)
    out = run_script("""
        d = resolve(AttentionQuery(arch="sm100", head_dim_qk=128), Environment(versions={"flash-attn-4": "4.0.0b36"}))
        out["rows"].append(d.decision("flash-attn-4").probe.as_dict())
    """, pythonpath=[site], env={"ATTNCAP_PROBES": "warm", "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert out["rows"][0]["supported"] is False and "_validate_head_dims(128, 128, 10, 8)" in out["rows"][0]["message"]
    assert out["flash_attn"]  # imported, as asked


@needs_fa4
def test_not_asking_the_installed_fa4_loses_nothing_where_the_table_was_checked():
    """Across archs, dtypes, passes and head dims, the unwarmed answers equal the warmed (validator's) ones."""
    if importlib.metadata.version("flash-attn-4") not in CHECKED:
        pytest.skip("the installed flash-attn-4 is not in the validator history")
    out = run_script("""
        from attncap import probes
        env = Environment.detect()
        dims = (8, 40, 64, 72, 96, 128, 160, 192, 200, 256, 264, 320, 512, 576)
        def table():
            rows = []
            for arch in ("sm90", "sm100", "sm103", "sm110"):
                for dtype in ("bf16", "fp16", "fp8_e4m3"):
                    for training in (False, True):
                        for qk in dims:
                            for v in dims:
                                q = AttentionQuery(arch=arch, dtype=dtype, training=training, head_dim_qk=qk,
                                                   head_dim_v=v)
                                d = resolve(q, env).decision("flash-attn-4")
                                rows.append([arch, dtype, training, qk, v, d.supported,
                                             d.probe.supported if d.probe else None])
            return rows
        cold = table()
        out["warm"] = probes.warm(["fa4-head-dims"])
        out["rows"] = [cold, table()]
    """, timeout=600)
    assert out["warm"] == {"fa4-head-dims": True}
    cold, warmed = out["rows"]
    assert all(row[6] is None for row in cold)  # not asked
    assert sum(row[6] is not None for row in warmed) == len(warmed)  # asked everywhere in its domain
    differ = [(a, b) for a, b in zip(cold, warmed) if a[5] != b[5]]
    assert not differ, differ[:5]


# ---- the resolver forgets answers when a probe becomes ready (the on_change hook) --------------

def test_a_probe_that_becomes_ready_makes_cached_resolutions_stale(monkeypatch):
    class Later(probes.Probe):
        name, package, judges = "fa4-head-dims", "flash-attn-4", frozenset({"head_dim_qk", "head_dim_v"})
        ready = False

        def installed_version(self):
            return "4.0.0b36"

        def check(self, query, ctx):
            return self.verdict(False, "the library says no") if self.ready else self.verdict(None, "not ready")

    later = Later()
    monkeypatch.setitem(probes._probes, "fa4-head-dims", later)
    attncap.clear_cache()
    try:
        env = Environment(versions={"flash-attn-4": "4.0.0b36"})
        q = AttentionQuery(arch="sm100", head_dim_qk=128)
        first = resolve(q, env)
        assert first.decision("flash-attn-4").probe.message == "not ready" and resolve(q, env) is first
        later.ready = True
        probes.probes_changed()  # what a built-in probe calls when its import finishes
        second = resolve(q, env)
        assert second is not first and second.decision("flash-attn-4").probe.message == "the library says no"
        assert not second.decision("flash-attn-4").supported
    finally:
        attncap.clear_cache()


def test_warm_of_an_unknown_probe_is_an_error():
    with pytest.raises(ValueError, match="no probe named 'nope'"):
        probes.warm(["nope"])


def test_warm_reports_a_failing_third_party_warm_as_unavailable(monkeypatch):
    class Broken(probes.Probe):
        name, package = "toy-broken", "toy-attn"

        def warm(self, *, block=True, timeout=None):
            raise RuntimeError("cannot")
    monkeypatch.setitem(probes._probes, "toy-broken", Broken())
    assert probes.warm(["toy-broken"]) == {"toy-broken": False}


# ---- ATTNCAP_PROBES=warm and ATTNCAP_PROBE_TIMEOUT spellings -----------------------------------

@pytest.mark.parametrize("value, mode", [(None, "on"), ("", "on"), ("1", "on"), ("on", "on"), ("0", "off"),
                                         ("False", "off"), ("warm", "warm"), (" WARM ", "warm")])
def test_attncap_probes_modes(value, mode):
    assert probes_mode(value) == mode


def test_attncap_probes_error_names_warm():
    with pytest.raises(SettingError, match=r"ATTNCAP_PROBES='warmer' is invalid: expected one of 0, 1, true, "
                                           r"false, yes, no, on, off, warm"):
        probes_mode("warmer")


def test_a_bad_probe_timeout_names_the_variable(monkeypatch):
    monkeypatch.setenv("ATTNCAP_PROBE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="ATTNCAP_PROBE_TIMEOUT='soon' is invalid"):
        probes.timeout_setting()


# ---- the CLI -----------------------------------------------------------------------------------

CLI = """
    from attncap.cli import main
    out["rc"] = main(ARGS)
"""


@needs_fa4
def test_cli_resolve_imports_no_kernel_library_unless_asked_to_probe():
    args = ["resolve", "--arch", "sm100", "--head-dim", "128", "--training"]
    out = run_script(CLI.replace("ARGS", repr(args)))
    assert out["rc"] == 0 and out["torch"] is False and out["flash_attn"] == [] and out["events"] == []
    assert not any(m.startswith(("attncap.matrix", "attncap.drift", "attncap.evidence", "attncap.releases"))
                   for m in out["new"])  # the other commands' modules are not imported for `resolve`


def test_cli_probe_flag_asks_the_installed_library(tmp_path, capsys):
    site = fake_fa4_site(tmp_path, GOOD)
    args = ["resolve", "--arch", "sm100", "--head-dim", "128", "--version", "flash-attn-4=4.0.0b36", "--probe"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ATTNCAP_")}
    environ.update(PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "attncap.cli", *args], capture_output=True, text=True,
                          env=environ, timeout=120, cwd=ROOT)
    assert "_validate_head_dims(128, 128, 10, 8): no" in proc.stdout, proc.stdout + proc.stderr
    both = subprocess.run([sys.executable, "-m", "attncap.cli", *args, "--no-probes"], capture_output=True,
                          text=True, env=environ, timeout=120, cwd=ROOT)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_cli_explain_probe_warms_only_the_explained_backends_probe(monkeypatch):
    from attncap import probes
    from attncap.cli import main
    warmed = []
    monkeypatch.setattr(probes, "warm", lambda names=None, **kwargs: warmed.append(names) or {})
    base = ["explain", "--arch", "sm90", "--head-dim", "128", "--probe"]
    main([*base, "cudnn-fused"])  # no probe: nothing to import
    main([*base, "flash-attn-4"])
    assert warmed == [[], ["fa4-head-dims"]]


def test_cli_info_without_probes_imports_nothing():
    out = run_script(CLI.replace("ARGS", repr(["info", "--no-probes"])))
    assert out["rc"] == 0 and out["torch"] is False and out["flash_attn"] == [] and out["events"] == []


def test_explain_reads_attncap_probes_as_resolve_does(monkeypatch):
    from attncap.explain import explain_backend
    env = Environment(versions={"flash-attn-4": "4.0.0b11"})  # not the installed version: a quick no-opinion
    q = AttentionQuery(arch="sm100", head_dim_qk=128)
    registry = attncap.default_registry()
    assert explain_backend(registry, "flash-attn-4", q, env)["probe"] is not None
    monkeypatch.setenv("ATTNCAP_PROBES", "0")
    assert explain_backend(registry, "flash-attn-4", q, env)["probe"] is None
    monkeypatch.setenv("ATTNCAP_PROBES", "maybe")
    with pytest.raises(SettingError):
        explain_backend(registry, "flash-attn-4", q, env)


# ---- detection reads versions without importlib.metadata where it can (the CLI's own cost) -------

def test_the_quick_version_reader_agrees_with_importlib_metadata():
    import importlib.metadata as metadata
    from attncap import environment
    environment.forget_detected()
    checked = 0
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        quick = environment._quick_version(name)
        if quick is not environment._UNSURE:
            assert quick == metadata.version(name), name
            checked += 1
    assert checked and environment._quick_version("surely-not-installed-attncap-test") is None


def test_the_quick_version_reader_leaves_odd_metadata_to_importlib(tmp_path, monkeypatch):
    from attncap import environment
    folded = tmp_path / "folded_pkg-1.0.dist-info"
    folded.mkdir()
    (folded / "METADATA").write_text("Metadata-Version: 2.1\nName: folded-pkg\nSummary: a\n  Version: 9.9\n"
                                     "Version: 1.0\n\nbody\nVersion: 2.0\n")
    bad = tmp_path / "bad_bytes-1.0.dist-info"
    bad.mkdir()
    (bad / "METADATA").write_bytes(b"Metadata-Version: 2.1\nName: bad-bytes\nSummary: caf\xe9\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    environment.forget_detected()
    try:
        assert environment._quick_version("Folded.Pkg") == "1.0"  # the header's own Version, not a continuation
        assert environment._quick_version("bad-bytes") is environment._UNSURE  # importlib.metadata's to report
        monkeypatch.syspath_prepend(str(tmp_path / "some.zip"))
        (tmp_path / "some.zip").write_bytes(b"PK")
        environment.forget_detected()
        assert environment._quick_version("folded-pkg") is environment._UNSURE  # a zip on sys.path
    finally:
        environment.forget_detected()

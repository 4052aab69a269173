"""Issue 17: the edges a new user trips over, one test (or a few) per numbered item."""

from __future__ import annotations

import pytest

import attncap
import attncap.environment as environment
from attncap import AttentionQuery, Environment, InvalidQueryError
from attncap.cli import main
from attncap.testing import evaluate_marker

pytest_plugins = ["pytester"]

README_QUERY = dict(arch="sm100", dtype="bf16", head_dim_qk=256, training=True, seqlen_q=1, seqlen_kv=2048)


@pytest.fixture
def installed(monkeypatch):
    """Detection answers a fixed 'installed' environment (torch 2.13.0 only)."""
    env = Environment(versions={"torch": "2.13.0"})
    monkeypatch.setattr(environment, "_detect", lambda with_torch: env)
    attncap.clear_cache()
    yield env
    attncap.clear_cache()


# 1. One environment rule for Python, the CLI and pytest.

def test_item1_environment_is_pure_and_detect_replace_overlays(installed):
    query = AttentionQuery(**README_QUERY)
    pure = attncap.resolve(query, Environment(versions={"flash-attn-4": "4.0.0b11"}))
    overlay = attncap.resolve(query, Environment.detect().replace(versions={"flash-attn-4": "4.0.0b11"}))
    assert pure.selected is None
    assert overlay.selected == "torch-sdpa-flash"
    with pytest.raises(attncap.NoBackendError) as info:
        pure.require()
    message = str(info.value)
    assert "environment: flash-attn-4 4.0.0b11" in message
    assert "torch is installed here but not in this Environment" in message
    assert "Environment.detect().replace(versions=...)" in message
    torch_off = "torch-sdpa-flash,torch-sdpa-efficient,torch-sdpa-cudnn,torch-sdpa-math"
    others = attncap.resolve(query, Environment(versions={"torch": "2.13.0"}), disable=torch_off)
    assert others.selected is None
    assert "note:" not in str(attncap.NoBackendError(others))  # what it lacks is not installed here either


def test_item1_cli_version_is_detect_replace_and_no_detect_is_pure(installed, capsys):
    flags = ["resolve", "--arch", "sm100", "--head-dim", "256", "--training", "--seqlen-q", "1", "--seqlen-kv",
             "2048", "--version", "flash-attn-4=4.0.0b11"]
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert out.startswith("selected: torch-sdpa-flash")
    assert "environment: installed packages with --version/--cudnn: flash-attn-4 4.0.0b11, torch 2.13.0" in out
    assert main([*flags, "--no-detect"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("selected: none")
    assert "environment: only --version/--cudnn (--no-detect): flash-attn-4 4.0.0b11" in out


# 6. A GPU the vocabulary does not name.

def test_item6_unknown_gpu_is_named_everywhere(monkeypatch, capsys):
    monkeypatch.setattr(environment, "_torch_device", lambda: ("13.0", None))
    environment.forget_detected()
    attncap.clear_cache()
    try:
        env = Environment.detect(device=True)
        assert env.arch is None and env.unknown_gpu == "13.0"
        with pytest.raises(InvalidQueryError, match=r"GPU with compute capability 13.0 is not in the data; "
                                                    r"add it \(docs/adding-hardware.md\)"):
            attncap.resolve(AttentionQuery(head_dim_qk=128), env)
        _, reason = evaluate_marker(("flash-attn-4",), {"head_dim_qk": 128}, env)
        assert "GPU with compute capability 13.0 is not in the data" in reason
        assert main(["info", "--device"]) == 0
        assert "arch: GPU with compute capability 13.0 is not in the data" in capsys.readouterr().out
        assert env.replace(arch="sm90").unknown_gpu is None  # a named arch replaces it
    finally:
        environment.forget_detected()
        attncap.clear_cache()


# 7. replace() keeps the vocabulary the query was built with.

def test_item7_replace_keeps_an_overlay_vocabulary(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNCAP_PATH", raising=False)
    (tmp_path / "archs.yaml").write_text("archs:\n  - name: sm130\n    compute_capability: \"13.0\"\n"
                                         "    family: rubin\n    source: test\n")
    vocab = attncap.load_registry((tmp_path,)).vocabulary
    q = AttentionQuery(arch="sm130", head_dim_qk=128, training=True, vocabulary=vocab)
    assert q.replace(training=False) == AttentionQuery(arch="sm130", head_dim_qk=128, vocabulary=vocab)
    import pickle
    assert pickle.loads(pickle.dumps(q)) == q  # pickling keeps it too
    with pytest.raises(InvalidQueryError):  # without the overlay, sm130 stays unknown
        AttentionQuery(arch="sm130", head_dim_qk=128)


# 3. Reasons name the smallest change that makes the query run.

def _reasons(backend, env, **query):
    return attncap.resolve(AttentionQuery(**query), env, probes=False).decision(backend)


def test_item3_feature_version_failure_names_the_version():
    d = _reasons("flash-attn-2", Environment(versions={"flash-attn": "2.6.1"}), arch="sm80", head_dim_qk=256,
                 softcap=50.0, mask="causal", training=True)
    assert not d.supported
    messages = [r.message for r in d.reasons]
    assert any(m.startswith("flash-attn>=2.6.2 supports this") for m in messages), messages  # no cap: 2.8.4+ is unverified, not unsupported (issue 14)
    assert d.install_hint == 'pip install "flash-attn>=2.6.2" --no-build-isolation'


def test_item3_dropping_a_feature_is_named():
    d = _reasons("flash-attn-2", Environment(versions={"flash-attn": "2.8.3"}), arch="a6000", head_dim_qk=256,
                 mask="causal", training=True, dropout=0.1)
    assert "flash-attn-2 runs this without dropout (rule small-smem-backward-hd256-no-dropout)" in \
        [r.message for r in d.reasons]
    change = next(r for r in d.reasons if r.code == "change")
    assert (change.field, change.expected, change.actual) == ("dropout", 0.0, 0.1)


def test_item3_install_hint_may_need_another_cudnn():
    d = _reasons("torch-sdpa-cudnn", Environment(), arch="sm100", head_dim_qk=256, training=True)
    messages = [r.message for r in d.reasons]
    assert not any("no version of torch" in m for m in messages), messages
    assert any(m.startswith("torch>=2.14 with cuDNN >9.22.0 supports this (rule sm90-sm10x-hd256-backward-v214)")
               for m in messages), messages
    installed = _reasons("torch-sdpa-cudnn", Environment(versions={"torch": "2.13.0"}), arch="sm100",
                         head_dim_qk=256, training=True)
    assert any("torch>=2.14 with cuDNN >9.22.0" in r.message for r in installed.reasons)


def test_item3_no_hint_when_the_data_knows_no_change():
    d = _reasons("flash-attn-2", Environment(versions={"flash-attn": "2.8.3"}), arch="sm90", head_dim_qk=512)
    assert not any(r.code in ("change", "install") for r in d.reasons)


MASKED = """\
backend: masked-attn
package: masked-attn
install: pip install "masked-attn{specifier}"
support:
  - {id: all, head_dim_qk: {max: 256}, versions: ">=1.0", source: test}
features:
  causal:
    - {id: all, source: test}
  causal_bottom_right:
    - {id: all, source: test}
  softcap:
    - {id: top-left-only, mask: [none, causal], source: test}
known_issues:
  - id: bottom-right-hd64
    versions: ">=1.0"
    when: {mask: [causal_bottom_right], head_dims: [[64, 64]]}
    reason: test
    source: test
"""


def test_item3_causal_alignments_are_one_mask_when_lengths_are_equal(tmp_path, monkeypatch):
    monkeypatch.delenv("ATTNCAP_PATH", raising=False)
    (tmp_path / "masked_attn.yaml").write_text(MASKED)
    registry = attncap.load_registry((tmp_path,))
    env = Environment(versions={"masked-attn": "1.0"})

    def decide(**query):
        q = AttentionQuery(arch="sm90", head_dim_qk=query.pop("hd", 128), vocabulary=registry.vocabulary, **query)
        return attncap.resolve(q, env, registry=registry, probes=False).decision("masked-attn")
    assert decide(mask="causal_bottom_right", softcap=30.0, seqlen_q=512, seqlen_kv=512).supported
    assert decide(mask="causal_bottom_right", softcap=30.0).supported  # unknown lengths do not reject
    wrong = decide(mask="causal_bottom_right", softcap=30.0, seqlen_q=128, seqlen_kv=512)
    assert not wrong.supported and "mask causal_bottom_right is not one of causal, none" in wrong.reasons[0].message
    # a known issue names the mask as given: with equal lengths the caller passes the alignment it does not name
    assert decide(mask="causal_bottom_right", hd=64, seqlen_q=512, seqlen_kv=512).decided_by == "known_issue"
    assert decide(mask="causal", hd=64, seqlen_q=512, seqlen_kv=512).supported
    assert decide(mask="causal", hd=64).supported
    assert decide(mask="causal", hd=64, seqlen_q=128, seqlen_kv=512).supported


def test_item3_probe_no_opinion_lines_come_last():
    env = Environment(versions={"flash-attn-4": "4.0.0b11"})
    d = attncap.resolve(AttentionQuery(**README_QUERY), env).decision("flash-attn-4")
    codes = [r.code for r in d.reasons]
    assert d.decided_by == "known_issue" and codes[0] == "known_issue", codes
    assert codes[-1] == "probe" and d.probe.supported is None


# 5. attncap drift on bad input: exit 2 with a clear message, an empty grid is an error.

@pytest.mark.parametrize("flags, message", [
    (["--backend", "nope"], "--backend 'nope' is unknown; known: cudnn-fused, flash-attn-2"),
    (["--head-dims", "0"], "--head-dims '0': expected 1..N or N with N a positive integer"),
    (["--head-dims", "-5"], "--head-dims '-5': expected 1..N"),
    (["--head-dims", "abc"], "--head-dims 'abc': expected 1..N"),
    (["--head-dims", "1..x"], "--head-dims '1..x': expected 1..N"),
    (["--arch", "sm999"], "--arch 'sm999' is unknown; known: sm80,"),
    (["--dtype", "zz"], "--dtype 'zz' is unknown; known: fp16,"),
])
def test_item5_drift_bad_input_exits_2(flags, message, capsys):
    assert main(["drift", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_item5_drift_that_compares_nothing_is_an_error(monkeypatch, capsys):
    import attncap.drift as drift
    report = drift.DriftReport("flash-attn-4", "flash-attn-4", "4.0.0b36", "fa4-head-dims", [],
                               ["sm80 fp32: the table rejects it for reasons the probe does not judge"], 0)
    monkeypatch.setattr(drift, "run_drift", lambda *a, **k: report)
    assert main(["drift", "--arch", "sm80", "--dtype", "fp32"]) == 2
    assert "no point was compared (sm80 fp32: the table rejects it" in capsys.readouterr().err


def test_item9_one_point_is_singular():
    from attncap.drift import Finding
    assert Finding("sm100", "bf16", "probe-only", [256], [256]).describe().endswith("(1 point)")
    assert Finding("sm100", "bf16", "probe-only", [8, 16], [256]).describe().endswith("(2 points)")


# 4. The pytest plugin: arch lists, families and ranges; the kernel that actually ran.

def test_item4_marker_arch_takes_lists_families_and_ranges():
    from attncap.testing import MarkerError, marker_archs
    assert marker_archs(["sm100", "sm_103a"]) == {"sm100", "sm103"}
    assert marker_archs("blackwell") == {"sm100", "sm103"}
    assert marker_archs("sm100..sm110") == {"sm100", "sm103", "sm110"}
    assert marker_archs({"min": "sm120"}) == {"sm120", "sm121"}
    assert marker_archs((9, 0)) == {"sm90"}
    with pytest.raises(MarkerError, match=r"arch='sm999': expected an arch or alias \(sm80, sm86.*a family \(ada, "
                                          r"ampere, blackwell"):
        marker_archs("sm999")


def test_item4_a_marker_for_a_family_runs_on_b300_and_says_when_a_gate_is_too_narrow():
    env = Environment("sm103", {"flash-attn-4": "4.0.0b36"})
    decision, reason = evaluate_marker(("flash-attn-4",), {"arch": ["sm100", "sm103"], "head_dim_qk": 128}, env)
    assert reason is None and decision.supported
    assert evaluate_marker(("flash-attn-4",), {"arch": "blackwell", "head_dim_qk": 128}, env)[1] is None
    _, reason = evaluate_marker(("flash-attn-4",), {"arch": "sm100", "head_dim_qk": 128}, env)
    assert reason == ("flash-attn-4 on sm103: the test is for sm100 (attncap says it runs here too: widen or "
                      "drop arch=)")
    _, reason = evaluate_marker(("flash-attn-4",), {"arch": "sm100..sm110", "head_dim_qk": 128},
                                Environment("sm90", {"flash-attn-4": "4.0.0b36"}))
    assert reason == "flash-attn-4 on sm90: the test is for sm100, sm103, sm110 (attncap says it runs here too: " \
                     "widen or drop arch=)"


def test_item4_expect_backend_sees_the_sdpa_kernel_that_ran():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from attncap.recording import expect_backend
    q = torch.randn(1, 2, 8, 16)
    with expect_backend("torch-sdpa-math") as recorder:
        F.scaled_dot_product_attention(q, q, q)
    assert recorder.calls["torch-sdpa-math"] == 1
    with pytest.raises(AssertionError, match="torch-sdpa-efficient did not run: scaled_dot_product_attention raised"):
        with expect_backend("torch-sdpa-efficient"):  # no efficient kernel on CPU: SDPA may not fall back
            F.scaled_dot_product_attention(q, q, q)
    with pytest.raises(AssertionError, match="expected torch-sdpa-math to run, but scaled_dot_product_attention "
                                             "was not called inside the block"):
        with expect_backend("torch-sdpa-math"):
            pass


def test_item4_expect_backend_records_flash_attn_calls(monkeypatch):
    import sys
    import types
    from attncap.recording import expect_backend
    fa2 = types.ModuleType("flash_attn")
    fa2.flash_attn_func = lambda *a, **k: "fa2 out"
    fa4 = types.ModuleType("flash_attn.cute.interface")
    fa4.flash_attn_func = lambda *a, **k: "fa4 out"
    for name, module in {"flash_attn": fa2, "flash_attn.flash_attn_interface": types.ModuleType("x"),
                         "flash_attn.cute": types.ModuleType("y"), "flash_attn.cute.interface": fa4}.items():
        monkeypatch.setitem(sys.modules, name, module)
    with expect_backend("flash-attn-4") as recorder:
        assert sys.modules["flash_attn.cute.interface"].flash_attn_func(1, 2, 3) == "fa4 out"
    assert recorder.calls["flash-attn-4"] == 1
    with pytest.raises(AssertionError, match=r"expected flash-attn-4, but flash-attn-2 \(1 call\) ran"):
        with expect_backend("flash-attn-4"):
            sys.modules["flash_attn"].flash_attn_func(1, 2, 3)
    assert fa2.flash_attn_func(1) == "fa2 out" and not hasattr(fa2.flash_attn_func, "__wrapped__")  # restored
    with pytest.raises(ValueError, match="cannot record whether 'cudnn-fused' ran"):
        with expect_backend("cudnn-fused"):
            pass


PLUGIN_EDGES = """
import pytest
from attncap import AttentionQuery

def test_policy_on_cpu(attncap_assert_selected):
    attncap_assert_selected(AttentionQuery(head_dim_qk=128), "flash-attn-4")

@pytest.mark.attention_backend("torch-sdpa-math", head_dim_qk=16)
def test_math_ran(attncap_expect_backend):
    import torch
    import torch.nn.functional as F
    q = torch.randn(1, 2, 8, 16)
    with attncap_expect_backend():
        F.scaled_dot_product_attention(q, q, q)
"""


def test_item4_plugin_skips_assert_selected_without_a_gpu_and_checks_what_ran(pytester):
    pytest.importorskip("torch")
    pytester.makepyfile(test_edges=PLUGIN_EDGES)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--attncap-env", "flash-attn-4=4.0.0b36,torch=2.13.0",
                                "--attncap-no-detect")
    result.assert_outcomes(skipped=2)  # no arch here: both skip, neither raises
    result.stdout.fnmatch_lines(["*attncap: flash-attn-4: no GPU detected here and the query names no arch*"])
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--attncap-env",
                                "arch=sm90,flash-attn-4=4.0.0b36,torch=2.13.0", "--attncap-no-detect")
    result.assert_outcomes(passed=2)  # flash-attn-4 is selected on sm90; the math kernel ran (CPU)


# 2. The shared flash_attn namespace.

def test_item2_what_if_with_fa2_and_fa4_says_the_namespace_is_unchecked():
    env = Environment(versions={"flash-attn-4": "4.0.0b4", "flash-attn": "2.8.3"})
    r = attncap.resolve(AttentionQuery(arch="sm120", head_dim_qk=128, mask="causal"), env, probes=False)
    d = r.decision("flash-attn-2")
    assert r.selected == "flash-attn-2"  # co-installed normally, FA2 owns flash_attn/__init__.py and works
    assert d.reasons[0].code == "namespace" and d.reasons[0].message.startswith(
        "unchecked: flash-attn 2.8.3 shares the flash_attn namespace with flash-attn-4 4.0.0b4")
    assert "transformers#44559" in d.reasons[0].source
    assert "namespace" in attncap.report.resolution_text(r)
    alone = attncap.resolve(AttentionQuery(arch="sm120", head_dim_qk=128, mask="causal"),
                            Environment(versions={"flash-attn": "2.8.3"}), probes=False)
    assert not any(r.code == "namespace" for r in alone.decision("flash-attn-2").reasons)


def _fake_dist(site, name, version, files: dict[str, bytes]):
    import base64
    import hashlib
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    rows = []
    for path, data in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{path},sha256={digest},{len(data)}")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


@pytest.fixture
def co_installed(tmp_path, monkeypatch):
    import sys
    from attncap import namespace
    site = tmp_path / "site"
    _fake_dist(site, "flash-attn", "2.8.3", {"flash_attn/__init__.py": b"def flash_attn_func(): pass\n"})
    _fake_dist(site, "flash-attn-4", "4.0.0b36", {"flash_attn/cute/__init__.py": b""})
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    namespace.clear()
    attncap.clear_cache()
    yield site, Environment(versions={"flash-attn": "2.8.3", "flash-attn-4": "4.0.0b36"})
    namespace.clear()
    attncap.clear_cache()


def test_item2_installed_side_by_side_with_fa2_owning_init_is_fine(co_installed, capsys):
    from attncap import namespace
    site, env = co_installed
    assert namespace.conflicts(env, ["flash-attn", "flash-attn-4"]) == {}
    assert namespace.describe(["flash-attn"]) == ("provided by flash-attn 2.8.3, flash-attn-4 4.0.0b36; "
                                                  "flash_attn/__init__.py: flash-attn")


@pytest.mark.parametrize("damage, state", [("overwrite", "was overwritten"), ("remove", "is missing")])
def test_item2_installed_fa2_whose_init_is_gone_is_rejected(co_installed, damage, state):
    from attncap import namespace
    site, env = co_installed
    init = site / "flash_attn/__init__.py"
    init.write_text("# another distribution's\n") if damage == "overwrite" else init.unlink()
    reason, proven = namespace.conflicts(env, ["flash-attn", "flash-attn-4"])["flash-attn"]
    assert proven and f"its flash_attn/__init__.py {state}: `from flash_attn import flash_attn_func` fails" in reason
    d = attncap.resolve(AttentionQuery(arch="sm90", head_dim_qk=128), env, probes=False).decision("flash-attn-2")
    assert d.decided_by == "conflict" and not d.supported


def test_item2_info_names_the_namespace_owner_and_the_conflict(co_installed, capsys):
    site, _ = co_installed
    (site / "flash_attn/__init__.py").unlink()
    environment.forget_detected()
    try:
        assert main(["info"]) == 0
    finally:
        environment.forget_detected()
    out = capsys.readouterr().out
    assert "flash_attn namespace: provided by flash-attn 2.8.3, flash-attn-4 4.0.0b36; flash_attn/__init__.py: " \
           "none (a namespace package: no FA2 API)" in out
    assert "  conflict: flash-attn 2.8.3 shares the flash_attn namespace with flash-attn-4 4.0.0b36 and its " \
           "flash_attn/__init__.py is missing" in out


# 8. Known issues with other conditions in diff-versions and matrix; both take the query flags.

def test_item8_diff_versions_shows_b11s_cross_attention_issue(capsys):
    assert main(["diff-versions", "flash-attn-4", "4.0.0b10", "4.0.0b11", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "+ now supported: (256, 256) on sm100, sm103, sm110 (bf16)" in out
    assert ("! known issue sm100-hd256-cross-attention now blocks (256, 256) on sm100, sm103, sm110 (bf16) when: "
            "with seqlen_q != seqlen_kv") in out
    # with the decode shape fixed, the issue is in the plane itself: nothing is gained
    assert main(["diff-versions", "flash-attn-4", "4.0.0b10", "4.0.0b11", "--dtype", "bf16", "--seqlen-q", "1",
                 "--seqlen-kv", "2048"]) == 0
    out = capsys.readouterr().out
    assert "now supported" not in out
    assert "! known issue sm100-hd256-cross-attention now blocks (256, 256) on sm100, sm103, sm110 (bf16)\n" in out


def test_item8_matrix_lists_conditional_issues_and_takes_query_flags(capsys):
    import json
    flags = ["matrix", "--backend", "flash-attn-4", "--version", "4.0.0b11", "--arch", "sm100", "--max-head-dim", "300"]
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "- `sm100-hd256-cross-attention` (with seqlen_q != seqlen_kv): (256, 256) on sm100: the (256, 256) " \
           "kernel diverges" in out
    assert main([*flags, "--seqlen-q", "1", "--seqlen-kv", "2048", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)["matrices"][0]
    assert data["query_fields"] == {"seqlen_q": 1, "seqlen_kv": 2048}
    assert "sm100-hd256-cross-attention" in data["archs"][0]["outcomes"]["known_issue"]["by_issue"]
    assert all(i["id"] != "sm100-hd256-cross-attention" for i in data["conditional_known_issues"])
    assert main([*flags, "--seqlen-q", "0"]) == 2  # a bad flag is a clear error
    assert "seqlen_q=0 is invalid" in capsys.readouterr().err


# 9. Smaller edges.

def test_item9_schema_without_a_flag_checks_and_never_writes(monkeypatch, capsys):
    import attncap.schema as schema
    monkeypatch.setattr(schema, "write_schemas", lambda: pytest.fail("attncap schema wrote files"))
    assert main(["schema"]) == 0
    assert "schemas/ are up to date" in capsys.readouterr().out


def test_item9_version_flag_and_info(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"attncap {attncap.__version__}\n"
    assert main(["info"]) == 0
    assert f"attncap: {attncap.__version__}\n" in capsys.readouterr().out


def test_item9_arch_lists_are_in_compute_capability_order():
    d = _reasons("flash-attn-2", Environment(versions={"flash-attn": "2.8.3"}), arch="sm110", head_dim_qk=64)
    failed = next(r for r in d.reasons if r.field == "arch")
    assert "sm80, sm86, sm87, sm89, sm90, sm100, sm103" in failed.message, failed.message
    q = AttentionQuery(arch="sm86", head_dim_qk=64)
    d = attncap.resolve(q, Environment(versions={"flash-attn": "2.8.3"}), probes=False).decision("flash-attn-2")
    rule = attncap.default_registry().compiled["flash-attn-2"].support[0]  # sm80-sm87-sm90
    assert rule.failures(q, d._ctx)[0].message.startswith("arch sm86 is not one of sm80, sm87, sm90")


def test_item9_probe_message_when_not_installed_never_prints_none(monkeypatch):
    from attncap import probes
    probe = probes.get("fa4-head-dims")
    monkeypatch.setattr(type(probe), "installed_version", lambda self: None)
    monkeypatch.setattr(probes, "_installed", {})
    attncap.clear_cache()
    try:
        d = attncap.resolve(AttentionQuery(arch="sm100", head_dim_qk=128),
                            Environment(versions={"flash-attn-4": "4.0.0b36"})).decision("flash-attn-4")
        assert d.probe.message == "it asks the installed flash-attn-4, and none is installed here"
    finally:
        attncap.clear_cache()


def test_item9_debug_logs_reach_stderr_from_the_cli(monkeypatch, capsys):
    import logging
    monkeypatch.setenv("ATTNCAP_DEBUG", "1")
    log = logging.getLogger("attncap")
    monkeypatch.setattr(log, "handlers", [])
    attncap.clear_cache()
    assert main(["resolve", "--arch", "sm90", "--head-dim", "72", "--no-detect"]) in (0, 1)
    assert "attncap debug: resolved AttentionQuery(arch='sm90', head_dim_qk=72" in capsys.readouterr().err


def test_item9_explain_collapses_clear_known_issues(capsys):
    assert main(["explain", "flash-attn-4", "--arch", "sm100", "--head-dim", "128", "--no-probes",
                 "--version", "flash-attn-4=4.0.0b36"]) == 0
    out = capsys.readouterr().out
    section = out.split("known_issues:\n", 1)[1]
    import re
    assert re.match(r"    \d+ clear: sm100-symmetric-512, sm100-hd256-cross-attention, ", section), section[:200]
    assert "TransformerEngine PR #2932" not in out  # no source for an issue that does not apply


def test_item9_matrix_cudnn_fused_takes_cudnn(capsys):
    assert main(["matrix", "--backend", "cudnn-fused", "--cudnn", "9.25.0", "--arch", "sm90",
                 "--max-head-dim", "64"]) == 0
    assert "Version: cudnn 9.25.0 (--cudnn)" in capsys.readouterr().out


def test_item9_install_hints_name_cuda_13_and_12_and_a_checkout_extra():
    from attncap.matrix.png import PLOT_HINT
    assert "'.[plot]'" in PLOT_HINT
    d = _reasons("cudnn-fused", Environment(versions={"transformer-engine": "2.9.0"}), arch="sm90", head_dim_qk=64)
    assert "nvidia-cudnn-cu13" in d.install_hint and "nvidia-cudnn-cu12" in d.install_hint


def test_item9_cli_hides_torchs_numpy_warning():
    import warnings
    from attncap.cli import _quiet_and_debug
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _quiet_and_debug()
        warnings.warn("Failed to initialize NumPy: No module named 'numpy'", UserWarning)
        warnings.warn("something else", UserWarning)
    assert [str(w.message) for w in seen] == ["something else"]


# 10. Validation messages: one clear line each, with a hint.

def _problems(tmp_path, text: str, name: str = "torch_sdpa_math.yaml") -> list[str]:
    from attncap.loader import check_paths, data_dirs
    (tmp_path / name).write_text(text)
    _, problems = check_paths(data_dirs((tmp_path,), use_env=False), warnings=False)
    return [f"{p.line}:{p.column}: {p.field}: {p.message}" for p in problems if p.severity == "error"]


def test_item10_float_arch_is_one_error_with_a_hint(tmp_path):
    assert _problems(tmp_path, "backend: torch-sdpa-math\nsupport:\n  - id: x\n    arch: [9.0]\n    source: t\n") == [
        "4:12: support[0].arch[0]: Input should be a valid string (got 9.0): write the arch's name (e.g. sm90); "
        "an unquoted 9.0 is a YAML number"]


def test_item10_tabs_and_indentation_are_explained(tmp_path):
    assert _problems(tmp_path, "backend: torch-sdpa-math\nsupport:\n\t- id: x\n") == [
        "3:1: : invalid YAML: a tab character: YAML indents with spaces only"]
    problems = _problems(tmp_path, "backend: torch-sdpa-math\nsupport:\n  - id: x\n     source: y\n")
    assert len(problems) == 1 and "check this line's indentation" in problems[0], problems


def test_item10_duplicate_id_does_not_hide_a_missing_source(tmp_path):
    problems = _problems(tmp_path, "backend: torch-sdpa-math\nsupport:\n  - id: a\n    arch: [sm90]\n"
                                   "  - id: a\n    arch: [sm90]\n    source: s\n")
    assert problems == ["5:9: support[1].id: duplicate id 'a' (first at index 0)",
                        "3:9: support[0].id: rule 'a' has no source: say where this fact comes from"]


def test_item10_an_alias_where_a_name_is_required_names_the_name(tmp_path):
    assert _problems(tmp_path, "backend: torch-sdpa-math\nsupport:\n  - id: x\n    arch: [sm_90a]\n"
                               "    source: t\n") == [
        "4:11: support[0].arch: arch 'sm_90a' is an alias; rules use the canonical name: use sm90"]


def test_item10_comma_in_an_unquoted_flow_value_says_quote_it(tmp_path):
    problems = _problems(tmp_path, "backend: torch-sdpa-math\nsupport:\n"
                                   "  - {id: x, source: a guess (hypothetical, untested)}\n")
    assert problems == ["3:44: support[0].untested): unknown key 'untested)'; a comma inside an unquoted value of a "
                        "{...} mapping starts a new key: quote the value (source: \"a, b\")"], problems


def test_item9_png_title_wraps_and_the_legend_has_no_empty_rows():
    from attncap.matrix.compute import build_matrix
    from attncap.matrix.png import legend_labels, panel_title
    m = build_matrix(attncap.default_registry(), "cudnn-fused", "9.25.0", "bf16", n=64)
    title = panel_title(m, ["sm80", "sm86", "sm87", "sm89", "sm90", "sm100", "sm103", "sm110", "sm120", "sm121"])
    assert all(len(line) <= 48 for line in title.splitlines()) and "sm121" in title
    labels = legend_labels({"table": 3, "probe": 0, "probe_rejected": 0, "known_issue": 1, "unsupported": 0})
    assert labels == [("table", "supported (3 shapes)"), ("known_issue", "blocked by a known issue (1 shape)")]


def test_item6_cli_without_arch_asks_the_gpu_and_names_an_unknown_one(monkeypatch, capsys):
    monkeypatch.setattr(environment, "_torch_device", lambda: ("13.0", None))
    environment.forget_detected()
    attncap.clear_cache()
    try:
        assert main(["resolve", "--head-dim", "128"]) == 2
        assert "attncap: GPU with compute capability 13.0 is not in the data; add it (docs/adding-hardware.md)" \
            in capsys.readouterr().err
    finally:
        environment.forget_detected()
        attncap.clear_cache()


def test_item8_html_lists_conditional_issues(capsys):
    assert main(["matrix", "--backend", "flash-attn-4", "--version", "4.0.0b11", "--arch", "sm100",
                 "--max-head-dim", "300", "--format", "html"]) == 0
    out = capsys.readouterr().out
    assert "<code>sm100-hd256-cross-attention</code> (with seqlen_q != seqlen_kv): (256, 256) on sm100</li>" in out

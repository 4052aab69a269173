"""The pytest plugin (attention_backend marker, fixtures, --attncap-env, summary) run through pytester."""

from __future__ import annotations

import pytest

import attncap
from attncap import AttentionQuery, Environment
from attncap.testing import MarkerError, assert_selected, parse_env

pytest_plugins = ["pytester"]

# The seed's scenario: an FA4 head-dim-256 training test, and one FA4 cannot run anywhere it is asked.
DEMO = """
import pytest

@pytest.mark.attention_backend("flash-attn-4", head_dim_qk=256, head_dim_v=256, training=True)
def test_fa4_hd256_training(attncap_decision):
    assert attncap_decision.backend == "flash-attn-4" and attncap_decision.supported
    assert attncap_decision.rule in ("sm100-hd256", "sm90")

@pytest.mark.attention_backend("flash-attn-4", head_dim_qk=512, training=True)
def test_fa4_hd512_training():
    pass

@pytest.mark.attention_backend("flash-attn-4", head_dim_qk=512, training=True)
def test_fa4_hd512_training_again():
    pass
"""

SM100_B11 = "arch=sm100,flash-attn-4=4.0.0b11"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch):
    for name in ("ATTNCAP_BACKEND", "ATTNCAP_DISABLE", "ATTNCAP_PROBES"):
        monkeypatch.delenv(name, raising=False)


def run(pytester, source, *args):
    pytester.makepyfile(test_demo=source)
    return pytester.runpytest("-p", "no:cacheprovider", "-rs", "-W", "ignore::DeprecationWarning", *args)


def test_hd256_training_runs_where_fa4_supports_it(pytester):
    result = run(pytester, DEMO, "--attncap-env", SM100_B11, "-k", "hd256")
    result.assert_outcomes(passed=1, deselected=2)


def test_hd256_training_is_skipped_with_the_reasons_where_fa4_cannot(pytester):
    result = run(pytester, DEMO, "--attncap-env", "arch=sm120,flash-attn-4=4.0.0b36", "-k", "hd256")
    result.assert_outcomes(skipped=1, deselected=2)
    result.stdout.fnmatch_lines([
        "SKIPPED [[]1] test_demo.py:3: attncap: flash-attn-4 on sm120: head_dim_qk=256 > max 128 in rule sm12x; "
        "head_dim_v=256 > max 128 in rule sm12x; flash-attn-4 supports this query on sm90, sm100, sm103, sm110 only"])


def test_too_old_version_skips_with_the_install_hint(pytester):
    result = run(pytester, DEMO, "--attncap-env", "arch=sm100,flash-attn-4=4.0.0b9", "-k", "hd256")
    result.assert_outcomes(skipped=1, deselected=2)
    result.stdout.fnmatch_lines(["*flash-attn-4 4.0.0b9 does not satisfy >=4.0.0b11 in rule sm100-hd256*",
                                 '*pip install "flash-attn-4>=4.0.0b11"*'])


def test_terminal_summary_groups_skips_by_reason(pytester):
    result = run(pytester, DEMO, "--attncap-env", "arch=sm90,flash-attn-4=4.0.0b36", "--attncap-no-probes")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "*- attncap -*",
        "attncap: 2 tests skipped (--attncap-env arch=sm90,flash-attn-4=4.0.0b36):",
        # (512, 512) training is a known issue on SM100/SM110 too, so no other arch is suggested.
        "  flash-attn-4 on sm90: head_dim_qk=512 > max 256 in rule sm90; head_dim_v=512 > max 256 in rule sm90 (2)"])
    assert "probe" not in result.stdout.str().split("- attncap -")[1]  # --attncap-no-probes


def test_no_summary_without_attncap_skips(pytester):
    result = run(pytester, DEMO, "--attncap-env", SM100_B11, "-k", "hd256")
    assert "attncap:" not in result.stdout.str()


def test_a_forced_other_backend_skips_rather_than_running_elsewhere(pytester, monkeypatch):
    monkeypatch.setenv("ATTNCAP_BACKEND", "torch-sdpa-math")
    result = run(pytester, DEMO, "--attncap-env", SM100_B11, "-k", "hd256")
    result.assert_outcomes(skipped=1, deselected=2)
    result.stdout.fnmatch_lines(["*flash-attn-4 on sm100: not considered: *forced*"])


def test_disabled_backend_skips(pytester, monkeypatch):
    monkeypatch.setenv("ATTNCAP_DISABLE", "flash-attn-4")
    result = run(pytester, DEMO, "--attncap-env", SM100_B11, "-k", "hd256")
    result.stdout.fnmatch_lines(["*flash-attn-4 on sm100: disabled by the caller*"])


def test_marker_arch_is_a_requirement_on_the_environment(pytester):
    source = """
import pytest

@pytest.mark.attention_backend("torch-sdpa-math", arch="sm_100a", head_dim_qk=64)
def test_for_sm100(attncap_decision):
    assert attncap_decision.supported
"""
    run(pytester, source, "--attncap-env", "arch=sm90").assert_outcomes(skipped=1)
    run(pytester, source, "--attncap-env", "arch=sm100").assert_outcomes(passed=1)


def test_class_and_function_markers_must_all_hold(pytester):
    source = """
import pytest

@pytest.mark.attention_backend("torch-sdpa-math", head_dim_qk=64)
class TestBoth:
    @pytest.mark.attention_backend("flash-attn-4", head_dim_qk=512, training=True)
    def test_needs_both(self):
        pass

    def test_needs_math(self, attncap_decision):
        assert attncap_decision.backend == "torch-sdpa-math"
"""
    run(pytester, source, "--attncap-env", "arch=sm90,flash-attn-4=4.0.0b36").assert_outcomes(passed=1, skipped=1)


@pytest.mark.parametrize("marker, message", [
    ('"flash-attn-4", head_dim=128', "unknown AttentionQuery field(s) 'head_dim'; known: arch, dtype, head_dim_qk"),
    ('"flash-attn-4", head_dim_qk=128, dtype="fp64"', "dtype='fp64' is invalid: expected one of"),
    ('"flash-attn-5", head_dim_qk=128', "unknown backend 'flash-attn-5'; known: "),
    ('head_dim_qk=128', "expected exactly one backend id"),
    ('"flash-attn-4", training=True', "head_dim_qk is required"),
])
def test_invalid_marker_is_a_clear_error(pytester, marker, message):
    source = f"""
import pytest

@pytest.mark.attention_backend({marker})
def test_bad():
    pass
"""
    result = run(pytester, source, "--attncap-env", "arch=sm90")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*@pytest.mark.attention_backend(*): {message}*"])


def test_invalid_env_option_is_a_usage_error(pytester):
    result = run(pytester, DEMO, "--attncap-env", "arch=sm999")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attncap-env: arch='sm999' is invalid*"])
    result = run(pytester, DEMO, "--attncap-env", "sm100")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--attncap-env item 'sm100': expected KEY=VALUE*"])


def test_decision_fixture_needs_the_marker(pytester):
    result = run(pytester, "def test_plain(attncap_decision):\n    pass\n", "--attncap-env", "arch=sm90")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*attncap_decision needs @pytest.mark.attention_backend*"])


def test_assert_selected_fixture_uses_the_what_if_environment(pytester):
    source = """
from attncap import AttentionQuery

def test_selected(attncap_assert_selected, attncap_env):
    assert attncap_env.arch == "sm100" and attncap_env.version("flash-attn-4") == "4.0.0b11"
    query = AttentionQuery(head_dim_qk=256, training=True)
    attncap_assert_selected(query, "flash-attn-4", disable="cudnn-fused")

def test_not_selected(attncap_assert_selected):
    attncap_assert_selected(dict(head_dim_qk=512, training=True), "flash-attn-4")
"""
    result = run(pytester, source, "--attncap-env", SM100_B11 + ",cudnn=")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "E*AssertionError: attncap selects torch-sdpa-efficient, not flash-attn-4, for AttentionQuery(*) on sm100",
        "E*  flash-attn-4 * rejected   by static",
        "E*- flash-attn-4 4.0.0b11 does not satisfy >=4.0.0b16 in rule sm100-symmetric-512",
        "E*torch-sdpa-efficient  supported*"])


def test_marker_is_registered(pytester):
    pytester.makepyfile(test_demo=DEMO)
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.attention_backend(backend, **query):*"])
    result = pytester.runpytest("--strict-markers", "--attncap-env", SM100_B11, "-k", "hd256",
                                "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=1, deselected=2)


# --- attncap.testing without pytester ---------------------------------------------------------

def test_assert_selected_message_has_the_full_table():
    env = Environment(arch="sm90", versions={"torch": "2.13.0"})
    query = AttentionQuery(head_dim_qk=512, training=True)
    with pytest.raises(AssertionError) as info:
        assert_selected(query, "torch-sdpa-flash", env, probes=False)
    text = str(info.value)
    assert text.startswith("attncap selects torch-sdpa-efficient, not torch-sdpa-flash, for ")
    assert text.endswith(attncap.resolve(query, env, probes=False).table())
    assert assert_selected(query, "torch-sdpa-efficient", env, probes=False).selected == "torch-sdpa-efficient"


def test_assert_selected_rejects_unknown_backend():
    with pytest.raises(MarkerError, match="unknown backend 'fa4'"):
        assert_selected(AttentionQuery(arch="sm90", head_dim_qk=64), "fa4", Environment(arch="sm90"))


def test_parse_env_applies_versions_and_removals():
    base = Environment(arch="sm90", versions={"flash-attn-3": "3.0.0", "torch": "2.13.0"}, cudnn="9.8.0")
    env = parse_env("arch=sm_100a, flash_attn_4=4.0.0b11, flash-attn-3=, cudnn=9.10.2, torch=2.9.0", base)
    assert env == Environment(arch="sm100", versions={"flash-attn-4": "4.0.0b11", "torch": "2.9.0"},
                              cudnn="9.10.2")
    assert parse_env("cudnn=", base).cudnn is None


def test_the_plugin_warms_no_probe_under_attncap_probes_0(monkeypatch):
    """ATTNCAP_PROBES=0 turns the probes off for every resolve: the plugin imports no library for them."""
    from attncap import probes
    from attncap.pytest_plugin import _State
    calls = []
    monkeypatch.setattr(probes, "warm", lambda *args, **kwargs: calls.append(1))
    monkeypatch.setenv("ATTNCAP_PROBES", "0")
    _State(None, True).warm_probes()
    assert calls == []
    monkeypatch.setenv("ATTNCAP_PROBES", "1")
    _State(None, True).warm_probes()
    assert calls == [1]

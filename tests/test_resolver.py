"""Resolver semantics on a small toy backend written as an overlay (independent of the packaged data)."""

from __future__ import annotations

import textwrap
import threading

import pytest

import attncap
from attncap import AttentionQuery, Environment, InvalidQueryError, resolve

TOY = """\
backend: toy-attn
package: toy-attn
install: pip install "toy-attn{specifier}"
support:
  - id: sm90-range
    arch: [sm90]
    dtype: [fp16, bf16]
    head_dim_qk: {min: 8, max: 256}
    head_dim_v: {min: 8, max: 256}
    alignment_bytes: 16
    versions: ">=1.0"
    source: toy docs
  - id: sm100-hd256
    arch: [sm100]
    dtype: [bf16]
    head_dims: [[256, 256]]
    versions: ">=1.5"
    source: toy 1.5 release notes
  - id: sm100-fwd-fp8
    arch: [sm100]
    dtype: [fp8_e4m3]
    head_dim_qk: {max: 128}
    passes: [forward]
    versions: ">=1.0"
    source: toy docs
features:
  causal_bottom_right:
    - {id: all, source: toy docs}
  sliding_window:
    - {id: sm90-only, arch: [sm90], versions: ">=1.2", source: toy 1.2}
known_issues:
  - id: hd256-cross
    versions: ">=1.5,<2.0"
    when: {head_dims: [[256, 256]], cross_attention: true}
    reason: wrong results when seqlen_q != seqlen_kv
    source: toy issue 7
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    (d / "toy_attn.yaml").write_text(TOY)
    return attncap.load_registry((d,), use_env=False)


def q(registry, **kw):
    kw.setdefault("dtype", "bf16")
    return AttentionQuery(vocabulary=registry.vocabulary, **kw)


def decide(registry, query, version="1.5", **kw):
    env = Environment(versions={"toy-attn": version} if version else {})
    return resolve(query, env, registry=registry, probes=False, **kw).decision("toy-attn")


def test_supported_names_the_matching_rule(registry):
    d = decide(registry, q(registry, arch="sm90", head_dim_qk=128))
    assert (d.supported, d.decided_by, d.rule) == (True, "static", "sm90-range")


def test_nearest_rule_reports_every_failure_with_numbers(registry):
    d = decide(registry, q(registry, arch="sm90", head_dim_qk=300, head_dim_v=4))
    assert not d.supported
    messages = [r.message for r in d.reasons]
    assert "head_dim_qk=300 > max 256 in rule sm90-range" in messages
    assert "head_dim_v=4 < min 8 in rule sm90-range" in messages
    assert {r.rule for r in d.reasons} == {"sm90-range"}


def test_alignment_reason_counts_bytes(registry):
    d = decide(registry, q(registry, arch="sm90", head_dim_qk=100))
    assert any("head_dim_qk=100 x 2 bytes = 200 bytes is not a multiple of 16" in r.message for r in d.reasons)


def test_too_old_version_gives_install_hint_from_the_data(registry):
    d = decide(registry, q(registry, arch="sm100", head_dim_qk=256, seqlen_q=64), version="1.4")
    assert not d.supported
    assert d.install_hint == 'pip install "toy-attn>=1.5"'
    assert any(r.code == "versions" and "toy-attn 1.4 does not satisfy >=1.5" in r.message for r in d.reasons)


def test_not_installed_says_which_version_would_do(registry):
    d = decide(registry, q(registry, arch="sm100", head_dim_qk=256), version=None)
    assert (d.supported, d.decided_by) == (False, "not_installed")
    assert d.install_hint == 'pip install "toy-attn>=1.5"'


def test_not_installed_and_no_version_supports_it(registry):
    d = decide(registry, q(registry, arch="sm120", head_dim_qk=64), version=None)
    assert d.install_hint is None
    assert any("no version of toy-attn supports this query on sm120" in r.message for r in d.reasons)


def test_known_issue_wins_whatever_rule_matched(registry):
    cross = q(registry, arch="sm100", head_dim_qk=256, seqlen_q=1, seqlen_kv=2048)
    d = decide(registry, cross)
    assert (d.supported, d.decided_by, d.rule) == (False, "known_issue", "sm100-hd256")
    issue = next(r for r in d.reasons if r.code == "known_issue")
    assert (issue.rule, issue.source) == ("hd256-cross", "toy issue 7")
    assert decide(registry, cross, version="2.0").supported  # fixed in 2.0: the issue's range ends


def test_forward_only_rule_rejects_training(registry):
    fp8 = dict(arch="sm100", dtype="fp8_e4m3", head_dim_qk=128)
    assert decide(registry, q(registry, **fp8)).supported
    d = decide(registry, q(registry, training=True, **fp8))
    assert not d.supported
    assert any("training needs the backward pass" in r.message for r in d.reasons)


def test_features_are_default_deny_with_conditions(registry):
    assert not decide(registry, q(registry, arch="sm90", head_dim_qk=64, dropout=0.1)).supported
    swa = q(registry, arch="sm90", head_dim_qk=64, window=(128, 0))
    assert decide(registry, swa, version="1.2").supported
    d = decide(registry, swa, version="1.1")
    assert any(r.code == "feature" and "sliding_window" in r.message for r in d.reasons)


def test_causal_conventions(registry):
    # Top-left causal with different lengths is not what a bottom-right kernel computes...
    d = decide(registry, q(registry, arch="sm90", head_dim_qk=64, mask="causal", seqlen_q=10, seqlen_kv=20))
    assert not d.supported
    # ...but with equal lengths the two conventions coincide.
    assert decide(registry, q(registry, arch="sm90", head_dim_qk=64, mask="causal", seqlen_q=20)).supported


def test_force_fails_loudly_instead_of_falling_back(registry):
    query = q(registry, arch="sm120", head_dim_qk=256, training=True)
    with pytest.raises(attncap.BackendUnavailableError, match="toy-attn was forced but cannot run"):
        resolve(query, Environment(versions={"toy-attn": "1.5", "torch": "2.13.0"}), registry=registry,
                force="toy-attn", probes=False)


def test_force_from_environment_variable(registry, monkeypatch):
    query = q(registry, arch="sm90", head_dim_qk=64)
    env = Environment(versions={"toy-attn": "1.5", "torch": "2.13.0"})
    monkeypatch.setenv("ATTNCAP_BACKEND", "toy-attn")
    r = resolve(query, env, registry=registry, probes=False)
    assert r.selected == "toy-attn"
    assert all(d.decided_by == "disabled" for d in r.decisions if d.backend != "toy-attn")


def test_disable_argument_and_environment_variable(registry, monkeypatch):
    query = q(registry, arch="sm90", head_dim_qk=64)
    env = Environment(versions={"toy-attn": "1.5"})
    assert resolve(query, env, registry=registry, prefer=["toy-attn"], probes=False).selected == "toy-attn"
    monkeypatch.setenv("ATTNCAP_DISABLE", "toy-attn")
    r = resolve(query, env, registry=registry, prefer=["toy-attn"], probes=False)
    assert r.decision("toy-attn").decided_by == "disabled"
    # The argument wins over the variable.
    assert resolve(query, env, registry=registry, prefer=["toy-attn"], disable=[], probes=False).selected == "toy-attn"


def test_a_preferred_backend_comes_first_and_only_once():
    """prefer= moves a backend to the front; it is not also left where the policy puts it (it was)."""
    query, env = AttentionQuery(arch="sm90", head_dim_qk=136), Environment(versions={"flash-attn": "2.8.3"})
    backends = [d.backend for d in resolve(query, env, prefer=["flash-attn-4", "flash-attn-4"], probes=False).decisions]
    assert backends[0] == "flash-attn-4"
    assert len(backends) == len(set(backends)) == len(attncap.default_registry().compiled)


def test_a_query_asked_again_under_other_conditions_is_resolved_for_them(monkeypatch):
    """A query keeps its last resolution for the very same conditions only: another environment, other
    overrides, an ATTNCAP_* variable or a cleared cache each get their own answer."""
    query = AttentionQuery(arch="sm90", head_dim_qk=128)
    fa2, fa3 = Environment(versions={"flash-attn": "2.8.3"}), Environment(versions={"flash-attn-3": "3.0.0"})
    for _ in range(2):
        assert resolve(query, fa2, probes=False).selected == "flash-attn-2"
        assert resolve(query, fa3, probes=False).selected == "flash-attn-3"
    both = Environment(versions={"flash-attn": "2.8.3", "flash-attn-3": "3.0.0"})
    first = resolve(query, both, probes=False)
    assert resolve(query, both, probes=False) is first
    assert resolve(query, both, probes=False, prefer=["flash-attn-2"]).selected == "flash-attn-2"
    assert resolve(query, both, probes=False, disable=[first.selected]).selected != first.selected
    monkeypatch.setenv("ATTNCAP_DISABLE", first.selected)
    assert resolve(query, both, probes=False).selected != first.selected
    monkeypatch.delenv("ATTNCAP_DISABLE")
    assert resolve(query, both, probes=False) is first
    attncap.clear_cache()
    assert resolve(query, both, probes=False) is not first


def test_cache_hits_and_clear(registry):
    query, env = q(registry, arch="sm90", head_dim_qk=64), Environment(versions={"toy-attn": "1.5"})
    first = resolve(query, env, registry=registry, probes=False)
    assert resolve(q(registry, arch="sm90", head_dim_qk=64), env, registry=registry, probes=False) is first
    attncap.clear_cache()
    assert resolve(query, env, registry=registry, probes=False) is not first


def test_concurrent_resolves_agree_with_serial(registry):
    queries = [q(registry, arch=a, head_dim_qk=h) for a in ("sm90", "sm100") for h in (64, 128, 256, 300)]
    env = Environment(versions={"toy-attn": "1.5"})
    serial = [resolve(x, env, registry=registry, probes=False).selected for x in queries]
    attncap.clear_cache()
    results, errors = [], []

    def work():
        try:
            for _ in range(200):
                results.append([resolve(x, env, registry=registry, probes=False).selected for x in queries])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == serial for r in results)


@pytest.mark.parametrize("field,value,fragment", [
    ("head_dim_qk", 0, "a positive integer"),
    ("dtype", "float64", "one of fp16"),
    ("dropout", 1.5, "[0, 1)"),
    ("arch", "sm_75", "one of sm80"),
    ("mask", "diagonal", "one of none, causal"),
    ("window", (1, 2, 3), "(left, right)"),
    ("window", b"ab", "(left, right)"),
])
def test_invalid_query_values_name_field_value_and_allowed(field, value, fragment):
    kw = {"head_dim_qk": 64, field: value}
    with pytest.raises(InvalidQueryError) as info:
        AttentionQuery(**kw)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field and fragment in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize("alias", ["sm_90a", "9.0", (9, 0), "90", "SM90", "h100"])
def test_arch_aliases(alias):
    assert AttentionQuery(arch=alias, head_dim_qk=64).arch == "sm90"


def test_renamed_arch_and_dtype_aliases():
    assert AttentionQuery(arch="sm_101", head_dim_qk=64).arch == "sm110"
    assert AttentionQuery(dtype="torch.bfloat16", head_dim_qk=64) == AttentionQuery(dtype="bf16", head_dim_qk=64)


def test_query_is_hashable_immutable_and_picklable():
    import pickle
    a = AttentionQuery(arch="sm90", head_dim_qk=64, num_heads_q=32, num_heads_kv=8)
    assert a.gqa and hash(a) == hash(pickle.loads(pickle.dumps(a)))
    with pytest.raises(AttributeError):
        a.head_dim_qk = 3


def test_environment_what_if_and_local_versions(registry):
    query = q(registry, arch="sm100", head_dim_qk=256, seqlen_q=8)
    # A local label (an NGC build) matches as its public version.
    assert decide(registry, query, version="1.5+nv26.2").supported
    env = Environment(versions={"toy-attn": "1.5"}).replace(versions={"toy-attn": None})
    assert env.version("toy-attn") is None


def test_missing_arch_is_a_clear_error(registry):
    with pytest.raises(InvalidQueryError, match="no GPU was detected"):
        resolve(q(registry, head_dim_qk=64), Environment(), registry=registry)


def test_table_lists_every_backend_with_reasons(registry):
    r = resolve(q(registry, arch="sm90", head_dim_qk=300), Environment(versions={"toy-attn": "1.5"}),
                registry=registry, probes=False)
    table = r.table()
    assert "toy-attn" in table and "head_dim_qk=300 > max 256" in table
    assert set(r.as_dict()) == {"query", "arch", "environment", "selected", "outcome", "decisions"}


def test_cli_resolve_exit_codes(capsys):
    from attncap.cli import main
    assert main(["resolve", "--arch", "sm90", "--head-dim", "64", "--version", "torch=2.13.0", "--no-probes"]) == 0
    assert main(["resolve", "--arch", "sm90", "--head-dim", "0"]) == 2
    assert "head_dim_qk=0 is invalid" in capsys.readouterr().err


def test_cli_explain_lists_every_rule(tmp_path, capsys):
    from attncap.cli import main
    (tmp_path / "toy_attn.yaml").write_text(textwrap.dedent(TOY))
    rc = main(["explain", "toy-attn", "--arch", "sm100", "--head-dim", "256", "--data", str(tmp_path),
               "--version", "toy-attn=1.4", "--no-probes"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "sm90-range: fail" in out and "sm100-hd256: fail" in out and "toy-attn 1.4 does not satisfy >=1.5" in out


def test_a_required_distribution_must_be_installed_too(tmp_path):
    (tmp_path / "toy_attn.yaml").write_text(TOY)
    (tmp_path / "toy_fused.yaml").write_text(
        "backend: toy-fused\npackage: cudnn\nrequires: [toy-engine]\ninstall: pip install \"toy-cudnn{specifier}\"\n"
        "support:\n  - {id: all, versions: \">=9\", source: toy}\n")
    registry = attncap.load_registry((tmp_path,), use_env=False)
    query = q(registry, arch="sm90", head_dim_qk=64)
    without = resolve(query, Environment(cudnn="9.1"), registry=registry, probes=False).decision("toy-fused")
    assert (without.supported, without.decided_by) == (False, "not_installed")
    assert [r.message for r in without.reasons] == [
        "toy-engine is not installed (toy-fused runs through it): pip install toy-engine"]
    env = Environment(versions={"toy-engine": "1.0"}, cudnn="9.1")
    assert resolve(query, env, registry=registry, probes=False).decision("toy-fused").supported


def test_an_overlay_replaces_scalar_keys_and_keeps_the_rest(tmp_path):
    (tmp_path / "torch_sdpa_math.yaml").write_text("backend: torch-sdpa-math\nrequires: [toy-engine]\n")
    registry = attncap.load_registry((tmp_path,), use_env=False)
    math = registry.backends["torch-sdpa-math"]
    assert math.requires == ["toy-engine"] and math.package == "torch" and math.support


def test_debug_variable_logs_each_new_decision(registry, monkeypatch, caplog):
    query, env = q(registry, arch="sm90", head_dim_qk=72), Environment(versions={"toy-attn": "1.5"})
    monkeypatch.setenv("ATTNCAP_DEBUG", "1")
    attncap.clear_cache()
    with caplog.at_level("DEBUG", logger="attncap"):
        resolve(query, env, registry=registry, probes=False)
    [record] = [r for r in caplog.records if r.name == "attncap"]
    assert "-> toy-attn" in record.getMessage() and "sm90-range" in record.getMessage()


def test_cli_info_lists_packages_backends_and_probe_status(capsys):
    from attncap.cli import main
    assert main(["info", "--json"]) == 0
    import json
    data = json.loads(capsys.readouterr().out)
    assert "transformer-engine" in data["versions"] and "flash-attn-4" in data["backends"]
    assert set(data["probes"]) >= {"fa4-head-dims", "torch-sdpa-flash"}
    assert all(isinstance(status, str) and status for status in data["probes"].values())


def test_a_rule_without_arch_covers_every_arch_in_the_reasons(tmp_path):
    # torch-sdpa-math's rule names no arch; an overlay adds one for a new arch beside it.
    (tmp_path / "archs.yaml").write_text('archs:\n  - {name: sm130, compute_capability: "13.0", family: rubin}\n')
    (tmp_path / "torch_sdpa_math.yaml").write_text(
        "backend: torch-sdpa-math\nsupport:\n  - {id: sm130-fp8, arch: [sm130], dtype: [fp8_e5m2], source: t}\n")
    registry = attncap.load_registry((tmp_path,), use_env=False)
    query = AttentionQuery(arch="sm90", dtype="fp8_e5m2", head_dim_qk=64, vocabulary=registry.vocabulary)
    d = resolve(query, Environment(versions={"torch": "2.13.0"}), registry=registry, probes=False)
    messages = [r.message for r in d.decision("torch-sdpa-math").reasons]
    assert not any("has no rule for sm90" in m for m in messages), messages
    assert "torch-sdpa-math supports this query on sm130 only" in messages


def test_cli_explain_without_an_arch_is_a_clear_error(capsys, monkeypatch):
    from attncap.cli import main
    monkeypatch.setattr(attncap.Environment, "detect", staticmethod(lambda **kw: Environment()))
    assert main(["explain", "flash-attn-4", "--head-dim", "64"]) == 2
    assert "no GPU was detected" in capsys.readouterr().err

"""Checked spans, outcomes (supported / unverified / unknown), version normalisation, profiles, coverage."""

from __future__ import annotations

import json
import textwrap
import warnings

import pytest

from attncap import AttentionQuery, Environment, load_registry, resolve
from attncap.cli import main
from attncap.coverage import within_span
from attncap.resolver import UnverifiedWarning
from attncap.testing import MarkerError, parse_env
from attncap.versions import InvalidVersionError, matched_as

H100_TRAIN = AttentionQuery(arch="sm90", dtype="bf16", head_dim_qk=128, training=True)
A100_TRAIN = AttentionQuery(arch="sm80", dtype="bf16", head_dim_qk=128, training=True)
NONE = {"flash-attn-4": None, "flash-attn": None, "flash-attn-3": None, "transformer-engine": None}


def env(**versions) -> Environment:
    cudnn = versions.pop("cudnn", None)
    names = {k.replace("_", "-"): v for k, v in versions.items()}
    return Environment(versions={"torch": "2.13.0", **{k: v for k, v in NONE.items() if k not in names}, **names},
                       cudnn=cudnn)


def decide(query, environment, backend, **kwargs):
    return resolve(query, environment, probes=False, **kwargs).decision(backend)


# ---- normalisation ----------------------------------------------------------------------

@pytest.mark.parametrize("raw, seen, note", [
    ("2.8.3", "2.8.3", None),
    ("4.0.0b36", "4.0.0b36", None),
    ("2.7.4.post1", "2.7.4.post1", None),
    ("2.7.4.post1+nv26.2", "2.7.4.post1", None),           # local label: a build tag of the release
    ("2.11.0a0+gitf00d.nv26.02", "2.11.0", "development build of 2.11.0"),   # NGC
    ("2.11.0.dev20251201+cu128", "2.11.0", "development build of 2.11.0"),   # nightly
    ("4.0.0.dev0", "4.0.0", "development build of 4.0.0"),                   # source build
    ("4.0.0b37.dev5+gabc", "4.0.0b37.dev5", None),        # dev of a pre-release keeps its place
    ("0.0.0", None, "unknown build"),
    ("banana", None, "unknown build"),
])
def test_matched_as(raw, seen, note):
    matched = matched_as("pkg", raw)
    assert matched.version == seen
    assert (matched.note is None) if note is None else (note in matched.note)


def test_cudnn_wheel_versions_are_the_runtime_version():
    assert matched_as("cudnn", "9.24.1.1").version == "9.24.1"
    assert matched_as("cudnn", "9.28.0.42.dev76646929").version == "9.28.0"
    assert Environment(cudnn="9.24.1.1").cudnn == "9.24.1"
    assert Environment(versions={"cudnn": "9.14.0.64"}).cudnn == "9.14.0"
    assert Environment().replace(cudnn="9.24.1.1") == Environment(cudnn="9.24.1")


def test_detection_normalises_the_cudnn_wheel(monkeypatch):
    from attncap import environment
    wheels = {"nvidia-cudnn-cu12": "9.24.1.1"}
    monkeypatch.setattr(environment, "_distribution_version", lambda name: wheels.get(name))
    assert environment._detect(False).cudnn == "9.24.1"  # the uncached detection


def test_cudnn_four_part_answers_as_three_part():
    decode = AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=128, seqlen_q=1, seqlen_kv=4096)
    for wheel, runtime in (("9.24.1.1", "9.24.1"), ("9.14.0.64", "9.14.0")):
        a = resolve(decode, env(cudnn=wheel), probes=False)
        b = resolve(decode, env(cudnn=runtime), probes=False)
        assert a.as_dict() == b.as_dict()
    assert decide(decode, env(cudnn="9.24.1.1"), "torch-sdpa-cudnn").supported  # 9.24.1 is exempt from the bug


@pytest.mark.parametrize("kwargs, fragment", [
    ({"versions": {"flash-attn-4": "banana"}}, "flash-attn-4='banana' is not a PEP 440 version"),
    ({"cudnn": "nine"}, "cudnn='nine' is not a PEP 440 version"),
    ({"versions": {"flashattn4": "4.0.0b3"}}, "did you mean 'flash-attn-4'?"),
    ({"versions": {"flash-attn4": "4.0.0b3"}}, "known: cudnn, flash-attn, flash-attn-3, flash-attn-4"),
])
def test_environment_rejects_bad_versions_and_misspelt_names(kwargs, fragment):
    with pytest.raises(InvalidVersionError) as exc:
        Environment(**kwargs)
    assert fragment in str(exc.value)
    with pytest.raises(ValueError):
        Environment().replace(**kwargs)


def test_environment_accepts_a_package_it_does_not_know():
    assert Environment(versions={"toy-attn": "1.0"}).version("toy-attn") == "1.0"


@pytest.mark.parametrize("text, fragment", [
    ("arch=sm90,flash-attn-4=banana", "not a PEP 440 version"),
    ("arch=sm90,flashattn4=4.0.0b36", "did you mean 'flash-attn-4'?"),
    ("arch=sm90,cudnn=nine", "cudnn='nine'"),
])
def test_attncap_env_rejects_bad_versions_and_names(text, fragment):
    with pytest.raises(MarkerError, match="--attncap-env") as exc:
        parse_env(text, Environment())
    assert fragment in str(exc.value)


# ---- outcomes ----------------------------------------------------------------------------

def test_ngc_torch_build_is_matched_as_its_release():
    res = resolve(H100_TRAIN, env(torch="2.11.0a0+gitf00d.nv26.02"), probes=False)
    for backend in ("torch-sdpa-math", "torch-sdpa-flash", "torch-sdpa-efficient", "torch-sdpa-cudnn"):
        d = res.decision(backend)
        assert d.supported and d.outcome == "supported", backend
        assert any("development build of 2.11.0, matched as 2.11.0" in r.message for r in d.reasons)


def test_newer_release_is_supported_unverified_naming_the_last_checked():
    d = decide(A100_TRAIN, env(flash_attn="2.9.0"), "flash-attn-2")
    assert d.supported and d.outcome == "unverified"
    messages = [r.message for r in d.reasons]
    assert any("2.9.0 is newer than the last checked release 2.8.3.post1" in m for m in messages)
    assert d.install_hint is None and not any("<2.8.4" in m for m in messages)  # never a downgrade
    res = resolve(A100_TRAIN, env(flash_attn="2.9.0"), probes=False)
    assert res.selected == "flash-attn-2" and res.outcome == "unverified"
    assert res.as_dict()["decisions"][0]["outcome"] == "unverified"


@pytest.mark.parametrize("installed", ["4.0.0b36", "4.0.0b40"])
def test_no_downgrade_hint(installed):
    wide_v = AttentionQuery(arch="sm90", dtype="bf16", head_dim_qk=128, head_dim_v=512)  # only 4.0.0b3..b4 took it
    d = decide(wide_v, env(flash_attn_4=installed), "flash-attn-4")
    assert not d.supported and d.install_hint is None
    not_installed = decide(wide_v, env(), "flash-attn-4")
    assert not_installed.install_hint == 'pip install "flash-attn-4>=4.0.0b3,<4.0.0b5"'  # no version to go down from


def test_older_release_is_unknown_unless_a_rule_says_the_capability_began_later():
    d = decide(H100_TRAIN, env(torch="2.10.0"), "torch-sdpa-math")
    assert d.outcome == "unknown" and not d.supported
    assert any("older than the first checked release 2.11.0" in r.message for r in d.reasons)
    res = resolve(H100_TRAIN, env(torch="2.10.0"), probes=False)
    assert res.selected is None and res.outcome == "unknown"
    window = AttentionQuery(arch="sm80", dtype="bf16", head_dim_qk=128, window=(64, 0))
    old = decide(window, env(flash_attn="2.0.9"), "flash-attn-2")
    assert old.outcome == "rejected"  # sliding_window begins at 2.3.0, after the first checked 2.1.1
    assert decide(AttentionQuery(arch="sm80", dtype="bf16", head_dim_qk=128), env(flash_attn="2.0.9"),
                  "flash-attn-2").outcome == "unknown"


def test_unknown_build_is_unknown_without_a_probe():
    d = decide(H100_TRAIN, env(flash_attn_4="0.0.0"), "flash-attn-4")
    assert d.outcome == "unknown" and not d.supported
    assert any("unknown build" in r.message for r in d.reasons)


def test_unknown_build_with_a_probe_that_accepts_is_unverified(monkeypatch):
    from attncap import probes, resolver
    from attncap.probes import ProbeVerdict as Verdict
    monkeypatch.setattr(probes, "judge", lambda b, q, c, e: Verdict("fa4-head-dims", True, "accepted"))
    monkeypatch.setattr(probes, "judged_fields", lambda name: frozenset({"head_dim_qk", "head_dim_v"}))
    resolver.clear_cache()
    d = resolve(H100_TRAIN, env(flash_attn_4="0.0.0"), probes=True).decision("flash-attn-4")
    assert d.supported and d.outcome == "unverified"


@pytest.mark.parametrize("says", [True, False])
def test_a_restricting_probe_decides_an_unknown_build(monkeypatch, says):
    """SDPA's probes only restrict the table, but for an unknown torch build a yes makes the backend
    unverified: selection asks the probe there too, and selects what the decision says."""
    from attncap import probes, resolver
    from attncap.probes import ProbeVerdict as Verdict
    monkeypatch.setattr(probes, "judge", lambda b, q, c, e: Verdict(b.probe.name, says, "asked"))
    resolver.clear_cache()
    res = resolve(AttentionQuery(arch="sm90", dtype="bf16", head_dim_qk=128), Environment(versions={"torch": "0.0.0"}),
                  prefer=["torch-sdpa-flash"])
    d = res.decision("torch-sdpa-flash")
    assert (res.selected == "torch-sdpa-flash") == d.supported == says
    assert d.outcome == ("unverified" if says else "rejected")
    resolver.clear_cache()


def test_dev_build_of_the_next_release_uses_the_newest_rules():
    d = decide(H100_TRAIN, env(flash_attn_4="4.0.0.dev0"), "flash-attn-4")
    assert d.supported and d.outcome == "unverified"
    assert any("newer than the last checked release 4.0.0b36" in r.message for r in d.reasons)


def test_known_issue_open_at_the_last_checked_release_stays_in_force():
    sm100_hd256 = AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=256, training=True, window=(128, 0))
    at_last = decide(sm100_hd256, env(flash_attn_4="4.0.0b36"), "flash-attn-4")
    newer = decide(sm100_hd256, env(flash_attn_4="4.0.0b50"), "flash-attn-4")
    assert at_last.decided_by == newer.decided_by
    assert [r.rule for r in at_last.reasons if r.code == "known_issue"] == \
        [r.rule for r in newer.reasons if r.code == "known_issue"]


def test_fa3_beta_is_unverified_and_selected_on_hopper():
    res = resolve(H100_TRAIN, env(flash_attn_3="3.0.0b1"), probes=False, disable="cudnn-fused")
    d = res.decision("flash-attn-3")
    assert res.selected == "flash-attn-3" and d.outcome == "unverified"
    assert any("names several builds" in r.message and "2024-07-11" in r.message for r in d.reasons)
    assert decide(H100_TRAIN, env(flash_attn_3="3.0.0"), "flash-attn-3").outcome == "supported"


def test_companion_outside_its_span():
    older_te = decide(H100_TRAIN, env(transformer_engine="2.9.0", cudnn="9.19.0"), "cudnn-fused")
    assert older_te.outcome == "unknown" and not older_te.supported
    assert any("transformer-engine 2.9.0 is older" in r.message for r in older_te.reasons)
    newer_cudnn = decide(H100_TRAIN, env(cudnn="9.28.0"), "torch-sdpa-cudnn")
    assert newer_cudnn.supported and newer_cudnn.outcome == "unverified"


# ---- policy -----------------------------------------------------------------------------

def test_unverified_policy(monkeypatch):
    e = env(flash_attn="2.9.0")
    assert resolve(A100_TRAIN, e, probes=False, unverified="allow").selected == "flash-attn-2"
    denied = resolve(A100_TRAIN, e, probes=False, unverified="deny")
    assert denied.selected != "flash-attn-2" and denied.decision("flash-attn-2").outcome == "unverified"
    assert any(r.code == "policy" for r in denied.decision("flash-attn-2").reasons)
    with pytest.warns(UnverifiedWarning, match="flash-attn-2 is unverified here"):
        resolve(A100_TRAIN, e, probes=False, unverified="warn")
    monkeypatch.setenv("ATTNCAP_UNVERIFIED", "deny")
    assert resolve(A100_TRAIN, e, probes=False).selected != "flash-attn-2"
    assert resolve(A100_TRAIN, e, probes=False, unverified="allow").selected == "flash-attn-2"  # argument wins
    monkeypatch.setenv("ATTNCAP_UNVERIFIED", "maybe")
    with pytest.raises(ValueError, match="unverified='maybe' is invalid: expected one of allow, warn, deny"):
        resolve(A100_TRAIN, e, probes=False)


def test_checked_versions_never_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve(A100_TRAIN, env(flash_attn="2.8.3"), probes=False, unverified="warn").outcome == "supported"


# ---- profiles ---------------------------------------------------------------------------

def test_transformer_engine_profile_applies_its_window_only_when_asked():
    e = env(flash_attn="2.9.0")
    assert decide(A100_TRAIN, e, "flash-attn-2").supported
    d = decide(A100_TRAIN, e, "flash-attn-2", profile="transformer-engine")
    assert not d.supported and d.decided_by == "profile"
    assert any("profile transformer-engine accepts flash-attn>=2.1.1,<2.8.4" in r.message for r in d.reasons)
    assert decide(A100_TRAIN, env(flash_attn="2.8.3"), "flash-attn-2", profile="transformer-engine").supported


def test_profile_order_and_unknown_profile():
    res = resolve(H100_TRAIN, env(flash_attn_3="3.0.0", flash_attn_4="4.0.0b36"), probes=False,
                  profile="transformer-engine")
    order = [d.backend for d in res.decisions]
    assert order.index("flash-attn-3") < order.index("flash-attn-4")
    with pytest.raises(ValueError, match="did you mean 'transformer-engine'"):
        resolve(H100_TRAIN, env(), probes=False, profile="transformer-engin")


# ---- CLI --------------------------------------------------------------------------------

BASE = ["--no-probes", "--version", "flash-attn-4=", "--version", "flash-attn-3=", "--version", "torch=2.13.0",
        "--version", "transformer-engine="]


def test_cli_exit_codes(capsys):
    assert main(["resolve", "--arch", "sm80", "--head-dim", "128", "--training", "--version", "flash-attn=2.9.0",
                 *BASE]) == 3
    out = capsys.readouterr().out
    assert "flash-attn-2          unverified" in out and "last checked release 2.8.3.post1" in out
    assert main(["resolve", "--arch", "sm80", "--head-dim", "128", "--version", "flash-attn=2.8.3", *BASE]) == 0
    assert main(["resolve", "--arch", "sm90", "--head-dim", "128", "--version", "flash-attn=", *BASE,
                 "--version", "torch=2.10.0"]) == 4
    assert main(["explain", "flash-attn-2", "--arch", "sm80", "--head-dim", "128", "--version", "flash-attn=2.9.0",
                 *BASE]) == 3
    assert main(["explain", "torch-sdpa-math", "--arch", "sm90", "--head-dim", "128", *BASE,
                 "--version", "torch=2.10.0"]) == 4
    capsys.readouterr()
    assert main(["resolve", "--arch", "sm80", "--head-dim", "128", "--version", "flash-attn=2.9.0", *BASE,
                 "--unverified", "deny", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["selected"] != "flash-attn-2" and data["outcome"] == "supported"


@pytest.mark.parametrize("args, fragment", [
    (["--version", "flash-attn-4=banana"], "flash-attn-4='banana' is not a PEP 440 version"),
    (["--cudnn", "nine"], "cudnn='nine' is not a PEP 440 version"),
    (["--version", "flashattn4=4.0.0b36"], "unknown package in --version 'flashattn4'; did you mean 'flash-attn-4'?"),
    (["--version", "rubbish=1.0"], "known: cudnn, flash-attn"),
    (["--profile", "nope"], "unknown profile 'nope'"),
])
def test_cli_bad_versions_and_names_are_exit_2(capsys, args, fragment):
    assert main(["resolve", "--arch", "sm90", "--head-dim", "128", "--no-probes", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_diff_versions_beyond_the_span(capsys):
    assert main(["diff-versions", "flash-attn-2", "2.8.3", "2.9.0"]) == 0
    out = capsys.readouterr().out
    assert "2.9.0 is beyond the checked span 2.1.1 .. 2.8.3.post1" in out
    assert "no longer supported" not in out and "compared as 2.8.3.post1" in out
    assert main(["diff-versions", "flash-attn-2", "2.8.3", "2.9.0", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requested"] == ["2.8.3", "2.9.0"] and data["new"] == "2.8.3.post1" and data["changes"] == []


def test_within_span():
    registry = load_registry()
    fa2 = registry.compiled["flash-attn-2"]
    assert within_span(fa2, "2.5.0") == ("2.5.0", None)
    assert within_span(fa2, "2.9.0")[0] == "2.8.3.post1"
    assert within_span(fa2, "2.0.9")[0] == "2.1.1"


# ---- coverage report --------------------------------------------------------------------

def _fake_index(root, releases: dict[str, list[str]]) -> str:
    for name, versions in releases.items():
        folder = root / "simple" / name
        folder.mkdir(parents=True)
        files = [f"{name.replace('-', '_')}-{v}.tar.gz" for v in versions]
        (folder / "index.html").write_text("<html><body>" + "".join(f'<a href="{f}">{f}</a>' for f in files)
                                           + "</body></html>")
    return (root / "simple").as_uri()


def test_coverage_report_with_a_fake_index(tmp_path, capsys):
    url = _fake_index(tmp_path, {"flash-attn": ["2.8.3", "2.8.3.post1", "2.9.0", "2.9.1"],
                                 "nvidia-cudnn-cu12": ["9.25.0.1", "9.26.1.1", "9.26.1.1.dev5"]})
    assert main(["coverage", "--index-url", url]) == 0
    out = capsys.readouterr().out
    assert "flash-attn          checked 2.1.1 .. 2.8.3.post1 (1 evidence); published after: 2.9.1, 2.9.0" in out
    assert "cudnn               checked 9.0.0 .. 9.25.0 (1 evidence); published after: 9.26.1" in out
    assert "flash-attn-4        checked 4.0.0b3 .. 4.0.0b36 (2 evidence); not found on the package index" in out
    assert "3.0.0b1: unverified" in out
    assert main(["coverage", "--offline", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["backend"], r["package"]) for r in rows} >= {("cudnn-fused", "transformer-engine"),
                                                             ("torch-sdpa-cudnn", "cudnn")}
    assert all(r["published_after"] is None for r in rows)


# ---- data -------------------------------------------------------------------------------

def _overlay(tmp_path, body: str):
    (tmp_path / "toy_attn.yaml").write_text(textwrap.dedent(body))
    return tmp_path


TOY = """\
    # yaml-language-server: $schema=../schemas/backend.schema.json
    backend: toy-attn
    package: toy-attn
    install: pip install "toy-attn{specifier}"
    checked:
      %s
    support:
      - {id: any, source: here}
    """


@pytest.mark.parametrize("span, fragment", [
    ('toy-attn: {first: "2.0", last: "1.0", evidence: [read]}', "first 2.0 is newer than last 1.0"),
    ('toy-attn: {first: "2.0", last: "x", evidence: [read]}', "'x' is not a PEP 440 version"),
    ('toy-attn: {first: "1.0", last: "2.0", evidence: []}', "checked.toy-attn.evidence"),
    ('numpy: {first: "1.0", last: "2.0", evidence: [read]}', "toy-attn reads no versions of 'numpy'"),
])
def test_span_errors_name_the_file_and_field(tmp_path, span, fragment):
    from attncap.loader import LoadError
    with pytest.raises(LoadError) as exc:
        load_registry((_overlay(tmp_path, TOY % span),))
    text = str(exc.value)
    assert "toy_attn.yaml:" in text and fragment in text


def test_every_packaged_backend_states_its_span():
    registry = load_registry()
    for name, backend in registry.backends.items():
        assert backend.package in backend.checked, name
        assert all(span.evidence for span in backend.checked.values())
    fa2 = registry.backends["flash-attn-2"]
    assert not any("2.8.4" in (r.versions or "") for r in fa2.support)  # TE's window lives in profiles.yaml
    assert "<2.8.4" in registry.profiles["transformer-engine"].accepts["flash-attn-2"].versions


def test_packaged_profiles_file_is_shipped():
    from attncap.loader import packaged_dir
    assert (packaged_dir() / "profiles.yaml").is_file()

"""The build-time snapshot of the packaged data (attncap/snapshot.py, hatch_build.py)."""

from __future__ import annotations

import shutil
import types

import pytest
from pydantic import BaseModel

import attncap
from attncap import cli, loader, snapshot
from attncap.loader import load_registry, packaged_dir
from attncap.plain import Record


def same_data(model, plain, where="") -> None:
    """The snapshot's plain form equals the full load's model, field by field, every field present."""
    if isinstance(model, BaseModel):
        assert isinstance(plain, Record) and type(plain).__name__ == type(model).__name__, where
        assert list(vars(plain)) == list(type(model).model_fields), where  # all fields, defaults included
        for name in type(model).model_fields:
            same_data(getattr(model, name), getattr(plain, name), f"{where}.{name}")
    elif isinstance(model, dict):
        assert type(plain) is dict and list(model) == list(plain), where
        for k in model:
            same_data(model[k], plain[k], f"{where}[{k!r}]")
    elif isinstance(model, list):
        assert type(plain) is list and len(model) == len(plain), where
        for i, (x, y) in enumerate(zip(model, plain)):
            same_data(x, y, f"{where}[{i}]")
    else:
        assert type(model) is type(plain) and model == plain, where


@pytest.fixture
def snap(tmp_path, monkeypatch):
    """A snapshot of the packaged data, installed where the loader looks for the wheel's one."""
    path = tmp_path / "snapshot.json"
    snapshot.write(packaged_dir(), path)
    monkeypatch.setattr(snapshot, "packaged_snapshot", lambda: path)
    monkeypatch.delenv(loader.ENV_PATH, raising=False)
    attncap.clear_cache()
    yield path
    attncap.clear_cache()


def test_round_trip_equals_the_full_load(snap):
    full = load_registry(use_env=False)
    fast = snapshot.load(packaged_dir(), snap)
    assert fast is not None
    assert list(fast.backends) == list(full.backends)
    for name in full.backends:
        same_data(full.backends[name], fast.backends[name], name)
    same_data(full.policy, fast.policy, "policy")
    same_data(full.vocabulary.archs, fast.vocabulary.archs, "archs")
    same_data(full.vocabulary.dtypes, fast.vocabulary.dtypes, "dtypes")
    assert list(fast.profiles) == list(full.profiles) and full.profiles
    same_data(full.profiles, fast.profiles, "profiles")
    assert fast.vocabulary.arch_aliases == full.vocabulary.arch_aliases
    assert fast.vocabulary.dtype_aliases == full.vocabulary.dtype_aliases
    assert fast.origins == full.origins and fast.files == full.files
    assert {k: str(v) for k, v in fast.origins.items()} == {k: str(v) for k, v in full.origins.items()}
    assert set(fast.compiled) == set(full.compiled)
    q = attncap.AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=192, head_dim_v=128, training=True)
    env = attncap.Environment(versions={"flash-attn-4": "4.0.0b36", "torch": "2.13.0"}, cudnn="9.10.2")
    a, b = attncap.resolve(q, env, probes=False, registry=full), attncap.resolve(q, env, probes=False, registry=fast)
    assert [d.as_dict() for d in a.decisions] == [d.as_dict() for d in b.decisions]


def test_the_loader_uses_it_without_overlays_only(snap, tmp_path, monkeypatch):
    registry = load_registry(use_env=False)
    assert all(loc.doc is None for loc in registry.origins.values())  # from the snapshot
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    assert all(loc.doc is not None for loc in load_registry((overlay,), use_env=False).origins.values())
    monkeypatch.setenv(loader.ENV_PATH, str(overlay))
    assert all(loc.doc is not None for loc in load_registry().origins.values())


def test_a_changed_or_added_yaml_file_falls_back(tmp_path):
    data = tmp_path / "capabilities"
    shutil.copytree(packaged_dir(), data)
    path = tmp_path / "snapshot.json"
    snapshot.write(data, path)
    assert snapshot.load(data, path) is not None
    victim = data / "flash_attn_4.yaml"
    victim.write_text(victim.read_text() + "\n# edited after the build\n")
    assert snapshot.load(data, path) is None
    snapshot.write(data, path)
    (data / "extra.yaml").write_text("backend: extra\n")
    assert snapshot.load(data, path) is None
    path.write_text("{not json")
    assert snapshot.load(data, path) is None
    for text in ("[1]", '{"@": 3}', '{"format": 3, "hashes": {"@": ["x"]}}'):  # valid JSON, not a snapshot
        path.write_text(text)
        assert snapshot.load(data, path) is None
    assert snapshot.load(data, tmp_path / "absent.json") is None


def test_a_mismatching_snapshot_is_not_used_by_the_loader(snap):
    text = snap.read_text().replace(f'"format":{snapshot.FORMAT}', '"format":0')
    snap.write_text(text)
    assert all(loc.doc is not None for loc in load_registry(use_env=False).origins.values())


def test_the_build_refuses_bad_data(tmp_path):
    data = tmp_path / "capabilities"
    shutil.copytree(packaged_dir(), data)
    (data / "broken.yaml").write_text("backend: broken\nsupport: 3\n")
    with pytest.raises(attncap.LoadError):
        snapshot.write(data, tmp_path / "snapshot.json")


def test_validate_still_runs_the_full_checks(snap, monkeypatch, capsys):
    calls = []
    real = loader.check_paths
    monkeypatch.setattr(loader, "check_paths", lambda paths, **kw: calls.append(kw) or real(paths, **kw))
    assert cli.main(["validate"]) == 0
    assert calls and calls[0].get("warnings", True) is True


def test_the_build_hook_ships_the_snapshot(tmp_path):
    pytest.importorskip("hatchling")
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("hatch_build", root / "hatch_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hook = types.SimpleNamespace(root=str(root), target_name="wheel")
    build_data = {"force_include": {}}
    module.SnapshotHook.initialize(hook, "standard", build_data)
    (source, target), = build_data["force_include"].items()
    assert target == "attncap/_data/snapshot.json"
    assert snapshot.load(root / "capabilities", Path(source)) is not None
    editable = {"force_include": {}}
    module.SnapshotHook.initialize(hook, "editable", editable)
    assert editable["force_include"] == {}

"""Hardening: malicious data files, concurrency through the cache, and probe faults.

Every malicious input is refused with a located message, in bounded time and memory, and leaves
the default registry as it was. What could crash or hang the process runs in a subprocess.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

import attncap
from attncap import AttentionQuery, Environment, resolve
from attncap import resolver
from fakes import fake_fa4_site
from attncap.loader import ENV_PATH, LoadError, check_paths, packaged_dir
from attncap.yamlsource import YamlError, read_document

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = packaged_dir()
HAVE_FA4 = importlib.util.find_spec("flash_attn") is not None and importlib.util.find_spec("triton") is not None
ENV = Environment(versions={"torch": "2.11.0", "flash-attn-4": "4.0.0b36", "flash-attn": "2.8.3",
                            "flash-attn-3": "3.0.0b1", "cudnn": "9.10.2"})
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_env_overlays(monkeypatch):
    monkeypatch.delenv(ENV_PATH, raising=False)
    monkeypatch.delenv("ATTNCAP_BACKEND", raising=False)
    monkeypatch.delenv("ATTNCAP_DISABLE", raising=False)


def _summary(res) -> tuple:
    return res.selected, tuple((d.backend, d.supported, d.decided_by, d.rule) for d in res.decisions)


BASELINE_QUERIES = [AttentionQuery(arch=a, head_dim_qk=h, training=t) for a in ("sm80", "sm90", "sm100")
                    for h in (64, 256) for t in (False, True)]


def _baseline() -> list:
    resolver.forget_resolutions()  # resolve afresh, not from the caches
    return [_summary(resolve(q, ENV, probes=False)) for q in BASELINE_QUERIES]


@pytest.fixture
def default_unchanged():
    """The default registry is the same object before and after, and still resolves the same."""
    default = attncap.default_registry()
    before = _baseline()
    yield default
    assert attncap.default_registry() is default
    assert _baseline() == before


@contextlib.contextmanager
def bounded(seconds: float = 60, megabytes: int = 200):
    """Peak traced Python memory of the block, and a hang guard on its wall time.

    The memory bound is what catches an expansion (an alias bomb expanded is gigabytes); the time
    bound only tells a hang from slow work, so it is far above the block's time on a loaded machine
    (it exceeded an earlier 5 s under load 4-9 on two cores, with tracemalloc on)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    assert peak < megabytes * MB, f"peak {peak / MB:.0f} MB"


def _assert_located(problems) -> None:
    for p in problems:
        text = str(p)
        assert text.startswith(f"{p.file}:{p.line}:{p.column}: ") and p.line >= 1 and p.column >= 1, text


def _within(seconds: float, fn, unblock=lambda: None):
    """Run fn in a daemon thread; fail (after unblocking it) if it does not return in time."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            out["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        unblock()
        pytest.fail(f"did not return within {seconds}s (hung)")
    if "error" in out:
        raise out["error"]
    return out["value"]


# ---- malicious files ------------------------------------------------------------------------

def _python_tag(d: Path, marker: Path) -> None:
    (d / "torch_sdpa_math.yaml").write_text(
        f'backend: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8")


def _python_tag_deep(d: Path, marker: Path) -> None:
    # 40 flow levels: not provably shallow, so the pure-Python composer reads it.
    deep = "[" * 40 + "x" + "]" * 40
    (d / "torch_sdpa_math.yaml").write_text(
        f"backend: torch-sdpa-math\nnote: !!python/object/new:os.system [\"touch {marker}\"]\nx: {deep}\n"
        f"y: !!python/name:os.system\n", encoding="utf-8")


def _alias_bomb(d: Path, marker: Path) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    (d / "torch_sdpa_math.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _fifty_mb(d: Path, marker: Path) -> None:
    with open(d / "torch_sdpa_math.yaml", "wb") as f:
        f.write(b"backend: torch-sdpa-math\nnote: '")
        f.write(b"x" * (50 * MB))
        f.write(b"'\n")


def _non_utf8(d: Path, marker: Path) -> None:
    (d / "torch_sdpa_math.yaml").write_bytes(b"backend: torch-sdpa-math\nnote: caf\xe9\n")


def _directory(d: Path, marker: Path) -> None:
    (d / "torch_sdpa_math.yaml").mkdir()
    (d / "torch_sdpa_math.yaml" / "README").write_text("a directory, not a file\n")


def _dangling_symlink(d: Path, marker: Path) -> None:
    (d / "torch_sdpa_math.yaml").symlink_to(d / "nowhere.txt")


def _symlink_loop(d: Path, marker: Path) -> None:
    (d / "torch_sdpa_math.yaml").symlink_to(d / "torch_sdpa_math.yaml")


def _unreadable(d: Path, marker: Path) -> None:
    path = d / "torch_sdpa_math.yaml"
    path.write_text("backend: torch-sdpa-math\n", encoding="utf-8")
    path.chmod(0)


MALICIOUS = {
    "python-tag": (_python_tag, "tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"),
    "python-tag-pure-python-parser": (_python_tag_deep, "python/object/new:os.system' is not allowed"),
    "alias-bomb-9-levels": (_alias_bomb, "more than 200000 values (an alias bomb?)"),
    "50-mb-file": (_fifty_mb, "file is larger than 2 MiB"),
    "non-utf8": (_non_utf8, "not UTF-8 (byte 0xe9)"),
    "directory-named-like-a-file": (_directory, "is a directory, not a YAML file"),
    "dangling-symlink": (_dangling_symlink, "cannot read: No such file or directory"),
    "symlink-loop": (_symlink_loop, "cannot read: Too many levels of symbolic links"),
    "unreadable": (_unreadable, "cannot read: Permission denied"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_overlay_is_refused(case, tmp_path, monkeypatch, default_unchanged):
    if case == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads a mode-000 file (the dangling-symlink and symlink-loop cases cover unreadable)")
    write, message = MALICIOUS[case]
    overlay, marker = tmp_path / "overlay", tmp_path / "pwned"
    overlay.mkdir()
    write(overlay, marker)
    with bounded():
        registry, problems = check_paths([PACKAGED, overlay])
    assert registry is None
    _assert_located(problems)
    mine = [p for p in problems if p.file.startswith(str(overlay))]
    assert mine and any(message in p.message for p in mine), [str(p) for p in problems]
    assert all(p.severity == "error" for p in mine)
    # Through ATTNCAP_PATH: load_registry raises, nothing is half-loaded.
    monkeypatch.setenv(ENV_PATH, str(overlay))
    with bounded(), pytest.raises(LoadError) as caught:
        attncap.load_registry()
    assert message in str(caught.value)
    assert not marker.exists(), "a YAML tag ran a command"
    monkeypatch.delenv(ENV_PATH)


def test_python_tags_never_construct_anything(tmp_path):
    marker = tmp_path / "pwned"
    for i, tag in enumerate(["!!python/object/apply:os.system", "!!python/object/new:os.system",
                             "!!python/object:os.system", "!!python/module:os", "!!python/name:os.system",
                             "!!python/tuple", "!!binary", "!!set", "!!omap", "!!timestamp", "!custom"]):
        path = tmp_path / f"t{i}.yaml"
        path.write_text(f'x: {tag} ["touch {marker}"]\n', encoding="utf-8")
        with pytest.raises(YamlError, match="is not allowed"):
            read_document(path)
    assert not marker.exists()


def test_fifo_is_refused_without_hanging(tmp_path, default_unchanged):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    fifo = overlay / "torch_sdpa_math.yaml"
    os.mkfifo(fifo)

    def unblock():  # a reader blocked in open() wakes up when a writer opens the FIFO
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    for paths in ([PACKAGED, overlay], [PACKAGED, fifo]):  # in a directory, and given as a file
        registry, problems = _within(5, lambda: check_paths(paths), unblock)
        assert registry is None
        _assert_located(problems)
        assert [p.message for p in problems if p.file == str(fifo)] == ["is not a regular file (a FIFO, socket or "
                                                                        "device?)"]
    assert "not a regular file" in str(_within(5, lambda: _load_error(overlay), unblock))


def _load_error(overlay: Path) -> LoadError:
    try:
        attncap.load_registry((overlay,), use_env=False)
    except LoadError as exc:
        return exc
    raise AssertionError("loaded")


def test_a_directory_is_not_read_as_a_file(tmp_path):
    d = tmp_path / "flash_attn_4.yaml"
    d.mkdir()
    with pytest.raises(YamlError, match="is a directory, not a YAML file"):
        read_document(d)


DEEP_SCRIPT = textwrap.dedent("""
    import json, resource, sys, tempfile, time
    from pathlib import Path
    from attncap.loader import check_paths, packaged_dir
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tmp = Path(tempfile.mkdtemp())
    cases = {
        "flow-list": lambda n: "[" * n + "x" + "]" * n,
        "flow-map": lambda n: "{a: " * n + "x" + "}" * n,
        "block-list": lambda n: "- " * n + "x",
        "block-list-wide": lambda n: "-  " * n + "x",
        "explicit-keys": lambda n: "? " * n + "x",
        "mixed-block": lambda n: "- ? " * (n // 2) + "x",
        "flow-in-block": lambda n: "- " * 60 + "[" * n + "x" + "]" * n,
    }
    for name, make in cases.items():
        for n in (10_000, 200_000):
            path = tmp / "torch_sdpa_math.yaml"
            path.write_text(make(n) + "\\n", encoding="utf-8")
            print(f"{name} {n}", file=sys.stderr, flush=True)  # names the culprit if the process dies
            start = time.perf_counter()
            registry, problems = check_paths([packaged_dir(), path])
            row = {"case": f"{name}-{n}", "loaded": registry is not None, "seconds": time.perf_counter() - start,
                   "problems": [str(p) for p in problems if p.file == str(path)]}
            print(json.dumps(row), flush=True)
    print(json.dumps({"rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024}))
""")


def test_deep_nesting_is_refused_without_crashing_the_process():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DEEP_SCRIPT], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, f"the process died ({proc.returncode}) on: {proc.stderr.splitlines()[-1:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    *cases, memory = rows
    assert len(cases) == 14
    for row in cases:
        assert not row["loaded"] and row["seconds"] < 5, row
        assert row["problems"] and all(p.endswith("nesting is deeper than 64 levels") for p in row["problems"]), row
        assert all(":1:" in p for p in row["problems"]), row
    assert memory["rss_mb"] < 200, memory
    assert time.perf_counter() - start < 30


def test_a_failed_default_load_leaves_nothing_half_loaded(tmp_path, monkeypatch):
    _python_tag(tmp_path, tmp_path / "pwned")
    good = attncap.default_registry()
    expected = _baseline()
    monkeypatch.setenv(ENV_PATH, str(tmp_path))
    attncap.clear_cache()
    try:
        for _ in range(2):  # the failure is not cached as a half-built registry
            with pytest.raises(LoadError, match="is not allowed"):
                attncap.default_registry()
        with pytest.raises(LoadError):
            resolve(BASELINE_QUERIES[0], ENV.replace(versions={"torch": "2.12.0"}), probes=False)  # uncached
    finally:
        monkeypatch.delenv(ENV_PATH)
    reloaded = attncap.default_registry()
    assert reloaded is not good and set(reloaded.backends) == set(good.backends)
    assert _baseline() == expected


# ---- concurrency ----------------------------------------------------------------------------

QUERIES = [AttentionQuery(arch=a, head_dim_qk=h, training=t) for a in ("sm80", "sm89", "sm90", "sm100", "sm120")
           for h in (64, 96, 128, 192, 256) for t in (False, True)]


def _run_threads(n: int, target) -> list:
    errors: list = []

    def guarded(i):
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_16_threads_resolving_through_the_cache_agree_with_serial():
    assert len(QUERIES) == 50
    attncap.clear_cache()
    serial = {q: _summary(resolve(q, ENV, probes=False)) for q in QUERIES}
    attncap.clear_cache()
    mismatches: list = []
    sizes: list = []

    def work(i):
        bad = 0
        for k in range(10_000):
            q = QUERIES[(k * 7 + i) % 50]
            if _summary(resolve(q, ENV, probes=False)) != serial[q]:
                bad += 1
            if k % 2000 == 0:
                sizes.append(len(resolver._cache))
        mismatches.append(bad)
    start = time.perf_counter()
    assert _run_threads(16, work) == []
    assert mismatches == [0] * 16
    assert max(sizes) <= resolver.CACHE_SIZE and len(resolver._cache) <= resolver.CACHE_SIZE
    assert time.perf_counter() - start < 30


def test_the_cache_stays_bounded_under_concurrent_distinct_queries(monkeypatch):
    monkeypatch.setattr(resolver, "CACHE_SIZE", 256)  # the bound, not its value, is under test
    attncap.clear_cache()
    queries = [AttentionQuery(arch="sm90", head_dim_qk=8 * (1 + i % 40), seqlen_q=1 + i) for i in range(1200)]
    peak: list = []

    def work(i):
        for q in queries[i::4]:
            resolve(q, ENV, probes=False)
            peak.append(len(resolver._cache))
    assert _run_threads(4, work) == []
    assert max(peak) <= 256 and len(resolver._cache) <= 256
    attncap.clear_cache()


def test_clear_cache_racing_with_resolves_never_raises():
    attncap.clear_cache()
    serial = {q: _summary(resolve(q, ENV, probes=False)) for q in QUERIES}
    stop = threading.Event()
    mismatches: list = []

    def work(i):
        if i == 0:  # the clearer
            for _ in range(25):
                attncap.clear_cache()
                time.sleep(0.01)
            stop.set()
            return
        k = 0
        while not stop.is_set() or k < 500:
            q = QUERIES[(k + i) % 50]
            if _summary(resolve(q, ENV, probes=False)) != serial[q]:
                mismatches.append(q)
            k += 1
    assert _run_threads(8, work) == []
    assert not mismatches
    attncap.clear_cache()


FA4_RACE = textwrap.dedent("""
    import importlib.metadata, json, sys, threading, time
    from attncap import AttentionQuery, Environment, resolve
    from attncap.probes import get
    assert "flash_attn.cute.interface" not in sys.modules
    env = Environment(versions={"flash-attn-4": importlib.metadata.version("flash-attn-4")})
    dims = [(64, 64), (96, 96), (128, 128), (192, 128), (256, 256), (264, 264), (512, 512), (40, 40)]
    probe = get("fa4-head-dims")
    seen, errors, barrier = [], [], threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            k, deadline = 0, time.monotonic() + 40
            while time.monotonic() < deadline:
                qk, v = dims[(k + i) % len(dims)]
                # Distinct seqlens: every resolve is a cache miss, so each asks the probe.
                q = AttentionQuery(arch="sm100", head_dim_qk=qk, head_dim_v=v, seqlen_q=1 + 8 * k + i)
                d = resolve(q, env).decision("flash-attn-4")
                seen.append([qk, v, d.supported, d.probe.supported, d.probe.message])
                k += 1
                if probe._validator is not None and k > 40:
                    break
                time.sleep(0.005)  # let the import thread have the GIL now and then
        except BaseException as exc:
            errors.append(repr(exc))
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = {}
    for qk, v in dims:
        q = AttentionQuery(arch="sm100", head_dim_qk=qk, head_dim_v=v)  # not resolved (so not cached) above
        d = resolve(q, env).decision("flash-attn-4")
        table = resolve(q, env, probes=False).decision("flash-attn-4")
        final[f"{qk},{v}"] = [d.supported, d.probe.supported, table.supported]
    print(json.dumps({"alive": sum(t.is_alive() for t in threads), "errors": errors, "seen": seen,
                      "final": final}))
""")


@pytest.mark.skipif(not HAVE_FA4, reason="flash-attn-4 (with triton) is not installed")
def test_fa4_probe_first_import_races_with_resolves():
    env = {**os.environ, "ATTNCAP_PROBE_TIMEOUT": "0.3", "ATTNCAP_PROBES": "warm"}  # import FA4 on first use
    env.pop(ENV_PATH, None)
    proc = subprocess.run([sys.executable, "-c", FA4_RACE], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["alive"] == 0 and out["errors"] == []
    final = out["final"]
    assert all(opinion is not None for _, opinion, _ in final.values()), final  # the import finished
    pending = opinions = 0
    for qk, v, supported, opinion, message in out["seen"]:
        want_supported, want_opinion, table = final[f"{qk},{v}"]
        if opinion is None:
            pending += 1
            assert "still running" in message, message
            assert supported == table, (qk, v, message)  # the table's answer while the probe is busy
        else:
            opinions += 1
            assert "_validate_head_dims(" in message, message
            assert (supported, opinion) == (want_supported, want_opinion), (qk, v, message)
    assert pending and opinions, (pending, opinions)


# ---- probe faults -------------------------------------------------------------------------

HANG = textwrap.dedent("""
    import json, time
    from attncap import AttentionQuery, Environment, resolve
    env = Environment(versions={"flash-attn-4": "4.0.0b36"})
    out = []
    for hd in (128, 64, 128):
        start = time.perf_counter()
        d = resolve(AttentionQuery(arch="sm100", head_dim_qk=hd), env).decision("flash-attn-4")
        out.append({"seconds": time.perf_counter() - start, "supported": d.supported,
                    "decided_by": d.decided_by, "probe": d.probe.as_dict()})
    print(json.dumps(out))
""")


def test_a_hanging_probe_import_is_waited_for_once(tmp_path):
    # ATTNCAP_PROBES=warm warms every installed probe; keep this about FA4 (torch's import would share the wait)
    fake_fa4_site(tmp_path, "import time\ntime.sleep(30)\n"
                        "def _validate_head_dims(head_dim, head_dim_v, compute_capability, alignment):\n    pass\n",
                  without_torch=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "ATTNCAP_PROBE_TIMEOUT": "1",
           "ATTNCAP_PROBES": "warm"}  # the first resolve imports the library (and waits at most the timeout)
    env.pop(ENV_PATH, None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", HANG], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - start < 15, "the process waited for the hanging import at exit"
    first, second, again = json.loads(proc.stdout)
    # Bounds from the 1 s timeout and the 30 s hang, not from speed: the first resolve waits the timeout
    # (not the hang), the next ones do not wait it again.
    assert 0.9 < first["seconds"] < 15, first
    assert second["seconds"] < 0.9 and again["seconds"] < 0.9, (second, again)
    for row in (first, second, again):
        assert (row["supported"], row["decided_by"]) == (True, "static")  # the table's answer
        assert row["probe"]["supported"] is None and "still running" in row["probe"]["message"], row


STALE = textwrap.dedent("""
    import json, time
    from attncap import AttentionQuery, Environment, resolve
    env = Environment(versions={"flash-attn-4": "4.0.0b36"})
    q = AttentionQuery(arch="sm100", head_dim_qk=128)
    before = resolve(q, env).decision("flash-attn-4").probe.message
    time.sleep(1.5)  # the import has finished by now
    other = resolve(q.replace(seqlen_q=64), env).decision("flash-attn-4").probe.message
    after = resolve(q, env).decision("flash-attn-4").probe.message
    print(json.dumps([before, other, after]))
""")


def test_a_pending_probe_verdict_is_not_cached_forever(tmp_path):
    fake_fa4_site(tmp_path, "import time\ntime.sleep(0.5)\n"
                        "def _validate_head_dims(head_dim, head_dim_v, compute_capability, alignment):\n    pass\n",
                  without_torch=True)  # FA4 only
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "ATTNCAP_PROBE_TIMEOUT": "0.1",
           "ATTNCAP_PROBES": "warm"}
    env.pop(ENV_PATH, None)
    proc = subprocess.run([sys.executable, "-c", STALE], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    before, other, after = json.loads(proc.stdout)
    assert "still running" in before and "accepted" in other  # the probe itself has moved on
    assert "accepted" in after, after


ENTRY_POINT_PROBES = textwrap.dedent("""
    from attncap.probes import Probe

    class Boom(Probe):
        name, package = "toy-boom", "toy-attn"
        def check(self, query, ctx):
            raise RuntimeError("the kernel library exploded")

    class PlainBool(Probe):
        name, package = "toy-bool", "toy-attn"
        def check(self, query, ctx):
            return True  # not a ProbeVerdict

    class BadVersion(Probe):
        name, package = "toy-version", "toy-attn"
        def installed_version(self):
            raise OSError("metadata unreadable")
        def check(self, query, ctx):
            return self.verdict(True, "yes")

    class Yes(Probe):
        name, package, judges = "toy-yes", "toy-attn", frozenset({"head_dim_qk", "head_dim_v"})
        def check(self, query, ctx):
            return self.verdict(True, "plugin says yes")
""")

ENTRY_POINT_SCRIPT = textwrap.dedent("""
    import json
    from attncap import AttentionQuery, Environment, resolve
    env = Environment(versions={"toy-attn": "1.0", "torch": "2.11.0"})
    out = {}
    for backend in ("toy-boom", "toy-bool", "toy-version", "toy-unloadable", "toy-yes"):
        d = resolve(AttentionQuery(arch="sm90", head_dim_qk=128), env).decision(backend)
        out[backend] = {"supported": d.supported, "decided_by": d.decided_by, "probe": d.probe.as_dict(),
                        "reasons": [r.message for r in d.reasons if r.code == "probe"]}
    print(json.dumps(out))
""")


def test_third_party_probe_failures_through_entry_points(tmp_path):
    site, data = tmp_path / "site", tmp_path / "data"
    site.mkdir()
    data.mkdir()
    (site / "toy_probes.py").write_text(ENTRY_POINT_PROBES)
    meta = site / "toy_attn-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-attn\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text(
        "[attncap.probes]\ntoy-boom = toy_probes:Boom\ntoy-bool = toy_probes:PlainBool\n"
        "toy-version = toy_probes:BadVersion\ntoy-unloadable = toy_no_such_module:Probe\ntoy-yes = toy_probes:Yes\n")
    for name in ("toy-boom", "toy-bool", "toy-version", "toy-unloadable", "toy-yes"):
        (data / f"{name.replace('-', '_')}.yaml").write_text(
            f'backend: {name}\npackage: toy-attn\ninstall: pip install "toy-attn{{specifier}}"\n'
            f"probe: {{name: {name}, mode: override}}\n"
            "support: [{id: sm90, arch: [sm90], head_dim_qk: {max: 64}, source: test}]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), ENV_PATH: str(data)}
    proc = subprocess.run([sys.executable, "-c", ENTRY_POINT_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected = {
        "toy-boom": "probe failed: RuntimeError: the kernel library exploded",
        "toy-bool": "probe failed: check() returned bool, not a ProbeVerdict",
        "toy-version": "probe failed: OSError: metadata unreadable",
        "toy-unloadable": "no probe named 'toy-unloadable' is installed",
    }
    for backend, message in expected.items():
        row = out[backend]
        assert row["probe"]["supported"] is None and message in row["probe"]["message"], row
        assert (row["supported"], row["decided_by"]) == (False, "static"), row  # the table: hd 128 > 64
        assert any(message in r for r in row["reasons"]), row  # the failure is in the reasons
    # A working plugin probe does override the table, so the entry point really was loaded.
    assert (out["toy-yes"]["supported"], out["toy-yes"]["decided_by"]) == (True, "probe"), out["toy-yes"]


def test_yaml_special_floats_are_values_not_crashes(tmp_path):
    path = tmp_path / "floats.yaml"
    path.write_text("a: [.inf, -.inf, +.INF, .nan, .NaN, 1.5]\n", encoding="utf-8")
    a = read_document(path).value["a"]
    assert a[:3] == [float("inf"), float("-inf"), float("inf")] and all(x != x for x in a[3:5]) and a[5] == 1.5


@pytest.mark.parametrize("prefix", ["", "deep: " + "[" * 40 + "x" + "]" * 40 + "\n"])  # libyaml, pure Python
def test_control_characters_are_located_on_one_line(tmp_path, prefix):
    path = tmp_path / "ctl.yaml"
    path.write_text(prefix + "a: caf\u00e9\nb: x\x00y\n", encoding="utf-8")  # libyaml counts bytes, not chars
    with pytest.raises(YamlError) as caught:
        read_document(path)
    p = caught.value.problem
    assert (p.line, p.column) == (prefix.count("\n") + 2, 5)
    assert str(p).isprintable() and p.message == "invalid YAML: character '\\x00' is not allowed"

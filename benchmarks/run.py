"""attncap benchmarks: `python benchmarks/run.py` prints one table.

Every figure is measured beside a reference in the same run, so the ratios hold on a busy machine
where absolute times drift (the header states the machine and its load average, before and after):
  - uncached resolve  vs TransformerEngine's real get_attention_backend (tools/te_harness.py: TE's
    pure-Python wheel, its C++/cuDNN gate stubbed, so TE's figure is a lower bound), on the same
    configurations (benchmarks/workloads.py), each a real miss; per-environment plans cold (built
    during the pass, as on a framework's first step and on every new dtype) and warm, apart;
  - per forward       vs TE's per-step check (AttentionParams(...) + `!=` against the cached one, as
    DotProductAttention does on every step);
  - import + load     vs `python -c pass`, in alternating subprocesses, attncap laid out and
    byte-compiled as its wheel installs it, with the build hook's snapshot and without (full load);
  - first resolve with flash-attn-4 installed and probes on, in a fresh process: not warmed (the default),
    and after attncap.probes.warm(); `attncap resolve` beside `import attncap` + load (wall, alternating, in
    the wheel's layout).
Times are CPU time (process_time; user + system of a child process), except where a row says wall. A
sample of one call is its two clock readings apart less what one reading costs (measured at start, about
0.8 us here), on both sides; the uncached workloads alternate TE and attncap pass by pass.
Ratio = attncap / reference (0.2x: attncap takes a fifth of the reference's time). Without the
package index (no TE wheel) the TE rows say so and the rest still runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tools"))  # te_harness, te_diff

import attncap  # noqa: E402
from attncap import AttentionQuery, Environment, resolve  # noqa: E402

TE_VERSION = "2.20.2"
ENV = Environment(versions={"flash-attn-4": "4.0.0b36", "flash-attn": "2.8.3", "flash-attn-3": "3.0.0",
                            "torch": "2.13.0"}, cudnn="9.10.2")
notes: list[str] = []


CLOCK = time.process_time  # CPU time: on a loaded machine, waiting for a core is not the code's cost


def _clock_cost() -> float:
    """What reading CLOCK adds to a sample timed with two readings: the median of back-to-back readings
    (about 0.8 us here, a tenth of an uncached resolve). Subtracted from every single-call sample, TE's too."""
    pairs = []
    for _ in range(20_000):
        start = CLOCK()
        pairs.append(CLOCK() - start)
    return statistics.median(pairs)


CLOCK_COST = _clock_cost()


def since(start: float) -> float:
    """Seconds of CPU time since `start` (a CLOCK() reading), less the clock's own cost."""
    return CLOCK() - start - CLOCK_COST


def median_per_call(fn, number: int, repeat: int = 7) -> float:
    return statistics.median(t / number for t in timeit.repeat(fn, number=number, repeat=repeat, timer=CLOCK))


def p99(samples: list) -> float:
    return sorted(samples)[min(len(samples) - 1, int(len(samples) * 0.99))]


def installed(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# ---------- TransformerEngine, the anchor ----------

class Anchor:
    """TE's gate on one configuration at a time, the FA versions of the workload installed."""

    def __init__(self):
        import te_harness
        self.h = te_harness
        self.te = te_harness.load(TE_VERSION)
        self.te.utils.AttentionLogging._log_level = 30  # WARNING: TE's level without NVTE_DEBUG
        self.fa4 = installed("flash-attn-4")

    def prepare(self, configs) -> list:
        """[(params, attncap query, env)] for the configurations TE accepts (it raises on the rest)."""
        from attncap.integrations.transformer_engine import environment_for, query_from_attention_params
        from workloads import ARCHS, FA_VERSIONS
        out, envs, seen = [], {}, set()
        with self.te.active():
            for cc, cudnn, fields in configs:
                params = self.te.AttentionParams(**{k: v for k, v in fields.items() if k in self.te.fields})
                try:
                    self._call(cc, cudnn, params)
                except (AssertionError, ValueError, KeyError):
                    continue
                env = envs.get((cc, cudnn)) or envs.setdefault((cc, cudnn), environment_for(
                    arch=ARCHS[cc], transformer_engine=TE_VERSION, cudnn=".".join(map(str, cudnn)),
                    flash_attn_4=self.fa4, **FA_VERSIONS))
                query = query_from_attention_params(params, arch=ARCHS[cc])
                if (query, env) not in seen:  # each configuration a real miss on both sides
                    seen.add((query, env))
                    out.append((cc, cudnn, params, query, env))
        return out

    def _call(self, cc, cudnn, params):
        self.h._State.cc, self.h._State.cudnn = cc, cudnn
        self._set_for(cc)
        return self.te.get_attention_backend(params)

    def times(self, items) -> list:
        """Per-call seconds of one pass over `items`."""
        samples = []
        with self.te.active():
            for cc, cudnn, params, _q, _e in items:
                self.h._State.cc, self.h._State.cudnn = cc, cudnn
                self._set_for(cc)
                start = CLOCK()
                self.te.get_attention_backend(params)
                samples.append(since(start))
        return samples

    def _set_for(self, cc):
        """FA2 everywhere, FA3 on sm90, FA4 from sm90: what a TE user would have installed."""
        from workloads import FA_VERSIONS
        self.te._set_flash(FA_VERSIONS["flash_attn"], FA_VERSIONS["flash_attn_3"] if cc == (9, 0) else None,
                           self.fa4 if cc >= (9, 0) else None, True)


def load_anchor() -> Anchor | None:
    try:
        return Anchor()
    except Exception as exc:  # DownloadError (no package index), torch missing, ...
        notes.append(f"TE anchor skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        return None


def _fresh_caches(plans: bool, memos: bool = False) -> None:
    """Forget cached resolutions; if `memos`, also each View's outcomes and each probe's answers per shape
    (a shape is new again); if `plans`, also the per-environment plans and the views they hold (the arch,
    dtype and pass are new again). The loaded registry and the probes' readiness are kept."""
    from attncap import probes, resolver
    resolver.forget_resolutions()
    if plans or memos:
        for b in attncap.default_registry().compiled.values():
            b.forget(views=plans)
        for probe in probes._probes.values():  # the built-in probes keep their library's answers per shape
            getattr(probe, "_results", {}).clear()
    if plans:
        resolver._plans.clear()


def _other_lengths(q: AttentionQuery) -> AttentionQuery:
    """The same configuration at other sequence lengths (what the next batch of a framework may ask)."""
    if q.seqlen_q is None:
        return q
    return q.replace(seqlen_q=q.seqlen_q + 7, seqlen_kv=None if q.seqlen_kv is None else q.seqlen_kv + 7)


def attncap_times(items, *, cold: bool, memos: bool = True, probes: bool = False) -> tuple[list, list]:
    """Per-call seconds of one pass over `items`; and, when cold, those of the calls that built a plan.

    Every call is a resolution-cache miss, and no configuration timed was resolved before in the pass:
    every outcome memo is forgotten before it. cold: plans and views too (each call as the first
    of its arch, dtype, pass and environment). Else the plans are built first by resolving each
    configuration at other sequence lengths, and `memos` says whether what that left in the memos is
    kept (each shape seen before at other lengths, as with a framework's varying batches) or forgotten
    too (each configuration's rules evaluated afresh)."""
    from attncap import resolver
    samples, planned = [], []
    _fresh_caches(plans=cold, memos=True)
    if not cold:
        for _c, _d, _p, q, env in items:
            resolve(_other_lengths(q), env, probes=probes)
        _fresh_caches(plans=False, memos=not memos)
    for _c, _d, _p, q, env in items:
        before = len(resolver._plans)
        start = CLOCK()
        resolve(q, env, probes=probes)
        elapsed = since(start)
        samples.append(elapsed)
        if cold and len(resolver._plans) != before:
            planned.append(elapsed)
    return samples, planned


def bench_uncached(rows: list, anchor: Anchor | None, rounds: int) -> None:
    import workloads
    attncap.default_registry().compiled  # the load is measured separately
    for name, make in workloads.WORKLOADS.items():
        if anchor is None:
            continue
        items = anchor.prepare(make())
        te, warm, probed, fresh, cold, planned = [], [], [], [], [], []
        for _ in range(rounds):  # one pass of each per round: a burst of load on the box hits both sides alike
            te += anchor.times(items)
            warm += attncap_times(items, cold=False)[0]
            probed += attncap_times(items, cold=False, probes=True)[0]
            fresh += attncap_times(items, cold=False, memos=False)[0]
            samples, built = attncap_times(items, cold=True)
            cold += samples
            planned += built
        te_median = statistics.median(te)
        label = f"{name} ({len(items)} configs)"
        rows.append((f"uncached, {label}, shapes seen", statistics.median(warm), p99(warm),
                     "TE get_attention_backend", te_median, "<= 0.22x, <= 15 us"))
        # TE's gate imports flash_attn.cute.interface where FA4 is installed: attncap's FA4 probe then asks it
        # (once per shape: the warm-up at other lengths asked it, as with every memo of this row)
        asked = "flash_attn.cute.interface" in sys.modules
        rows.append((f"  ... probes on (default), {'FA4 imported' if asked else 'not warmed'}",
                     statistics.median(probed), p99(probed), "TE get_attention_backend", te_median, ""))
        rows.append((f"uncached, {label}, new shapes", statistics.median(fresh), p99(fresh),
                     "TE get_attention_backend", te_median, "<= 0.22x, <= 15 us"))
        rows.append((f"uncached, {label}, plans cold", statistics.median(cold), p99(cold), "TE get_attention_backend",
                     te_median, "p99 too"))
        if planned:
            rows.append((f"  ... a call that built a plan ({len(planned) // rounds}/pass)",
                         statistics.median(planned), p99(planned), "TE get_attention_backend", te_median,
                         "<= 200 us"))
        rows.append((f"  TE get_attention_backend, {name}", te_median, p99(te), "", None, ""))
    if anchor is None:
        rows.append(("uncached vs TE: skipped (see note)", None, None, "", None, ""))
    # every reason built, and the probes on (installed FA4 imported), on one shape at 2000 lengths
    queries = [AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=128, training=True, mask="causal",
                              seqlen_q=1024 + i) for i in range(2000)]
    samples = []
    for _ in range(rounds):
        _fresh_caches(plans=False, memos=True)  # each round alike: the first query sees the shape first
        resolve(queries[0], ENV, probes=False)
        for q in queries[1:]:
            start = CLOCK()
            for d in resolve(q, ENV, probes=False).decisions:
                d.reasons
            samples.append(since(start))
    rows.append(("uncached + every reason built", statistics.median(samples), p99(samples), "", None, ""))
    # a query no backend runs (FP8 at head dim 2048+ on sm90): NoBackendError and its table of every reason
    nothing = [AttentionQuery(arch="sm90", dtype="fp8_e4m3", head_dim_qk=2048 + 8 * i, training=True,
                              mask="causal", seqlen_q=1024 + i) for i in range(300)]
    samples = []
    for _ in range(rounds):
        _fresh_caches(plans=False, memos=True)  # every round: each of the 300 shapes new
        for q in nothing:
            start = CLOCK()
            try:
                resolve(q, ENV, probes=False).require()
            except attncap.NoBackendError as exc:
                str(exc)
            samples.append(since(start))
    rows.append(("uncached, NoBackendError with its table", statistics.median(samples), p99(samples), "", None,
                 "<= 1 ms"))
    probed = _uncached_with_probes(queries, rounds)
    if probed is not None:
        rows.append(("uncached, probes on, FA4 imported, shape seen", statistics.median(probed), p99(probed), "",
                     None, ""))


def _uncached_with_probes(queries, rounds) -> list | None:
    """Uncached resolution with the probes on, against the installed flash-attn-4 (imported first)."""
    fa4 = installed("flash-attn-4")
    try:
        import flash_attn.cute.interface  # noqa: F401  (the import is not part of the figure)
    except ImportError:
        return None
    env = ENV.replace(versions={"flash-attn-4": fa4, "torch": installed("torch")})
    samples = []
    for _ in range(rounds):
        _fresh_caches(plans=False, memos=True)  # each round alike: the first query sees the shape first
        resolve(queries[0], env)
        for q in queries[1:]:
            start = CLOCK()
            resolve(q, env)
            samples.append(since(start))
    return samples


# ---------- per forward ----------

PER_STEP = dict(arch="sm90", dtype="bf16", head_dim_qk=128, num_heads_q=32, num_heads_kv=8, seqlen_q=4096,
                training=True, mask="causal", layout="sbhd")


def _nothing(**fields) -> None:
    return None


class _Called(type):
    def __call__(cls, *args, **fields):
        return None


class _Nothing(metaclass=_Called):
    pass


def bench_per_forward(rows: list, anchor: Anchor | None) -> None:
    env = Environment(arch="sm90", versions=dict(ENV.versions), cudnn="9.10.2")
    q = AttentionQuery(**PER_STEP)
    resolve(q, env, probes=False)
    lookup = {q: "x"}
    rows.append(("resolve, cached (query kept)", median_per_call(lambda: resolve(q, env, probes=False), 100_000),
                 None, "dict lookup", median_per_call(lambda: lookup.get(q), 100_000), "<= 0.5 us"))
    te_step = None
    if anchor is not None:
        import workloads
        with anchor.te.active():
            fields = workloads.te_like(1)[0][2]
            fields = {k: v for k, v in fields.items() if k in anchor.te.fields}
            AttentionParams = anchor.te.AttentionParams
            cached = AttentionParams(**fields)
            te_step = median_per_call(lambda: AttentionParams(**fields) != cached, 20_000)
        rows.append(("TE per-step check: AttentionParams(...) + !=", te_step, None, "", None, ""))
    ref = "TE per-step check" if te_step else ""
    fields = dict(PER_STEP)
    rows.append(("per forward: resolve(AttentionQuery(...))",
                 median_per_call(lambda: resolve(AttentionQuery(**fields), env, probes=False), 20_000), None,
                 ref, te_step, "<= 1 us, <= 0.2x"))
    # The floor under that row: what Python alone takes to pass the same keywords, to a function and to a
    # class with a metaclass __call__ (as AttentionQuery's memo has), doing nothing with them.
    rows.append(("  floor: f(**same keywords), f does nothing", median_per_call(lambda: _nothing(**fields), 100_000),
                 None, "", None, ""))
    rows.append(("  floor: C(**same keywords), metaclass __call__", median_per_call(lambda: _Nothing(**fields),
                                                                                   100_000), None, "", None, ""))
    try:
        import torch
        import attncap.torch as at
    except ImportError:
        notes.append("attncap.torch rows skipped: torch not importable")
        return
    fields.pop("layout")
    at.resolve_for(**fields)
    rows.append(("per forward: attncap.torch.resolve_for(...)", median_per_call(lambda: at.resolve_for(**fields),
                                                                               20_000), None, ref, te_step,
                 "<= 1 us, <= 0.2x"))
    x = torch.empty(2, 32, 4096, 128, dtype=torch.bfloat16, device="meta")
    kv = torch.empty(2, 8, 4096, 128, dtype=torch.bfloat16, device="meta")
    rows.append(("per forward: resolve(query_from_tensors(...))",
                 median_per_call(lambda: resolve(at.query_from_tensors(x, kv, kv, causal=True, arch="sm90"), env,
                                                 probes=False), 20_000), None, ref, te_step, ""))


# ---------- import + load, first resolve: fresh processes ----------

def paired_subprocess(code: str, floor: str = "pass", runs: int = 9, path: str | None = None) -> tuple[float, float]:
    """Median CPU seconds (user + system) of `code` and of `floor` in fresh processes, run alternately
    (drift hits both alike), ATTNCAP_* unset, in `path` (first on PYTHONPATH for `code`)."""
    env = _clean_env()
    code_env = dict(env, PYTHONPATH=path) if path else env
    a, b = [], []
    for _ in range(runs):
        for code_, out, env_ in ((code, a, code_env), (floor, b, env)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", code_], check=True, env=env_, cwd=path)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            out.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(a), statistics.median(b)


def installed_layout(root: str, with_snapshot: bool) -> str:
    """attncap laid out as the wheel installs it (data under attncap/_data/, the build hook's snapshot
    when `with_snapshot`, byte-compiled as pip does) in `root`, to be put on PYTHONPATH."""
    import compileall
    import shutil
    from attncap import snapshot
    here = os.path.join(os.path.dirname(__file__), os.pardir)
    package = os.path.join(root, "attncap")
    shutil.copytree(os.path.join(here, "attncap"), package, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    shutil.copytree(os.path.join(here, "capabilities"), os.path.join(package, "_data", "capabilities"))
    if with_snapshot:
        snapshot.write(os.path.join(here, "capabilities"), os.path.join(package, "_data", snapshot.FILE_NAME))
    compileall.compile_dir(package, quiet=1)
    return root


def bench_load(rows: list) -> None:
    import tempfile
    from attncap.loader import load_registry

    def load():
        load_registry(use_env=False).compiled
    rows.append(("full load + validate + compile data (in process)", median_per_call(load, 3, 5), None, "", None,
                 ""))
    code = "import attncap; attncap.default_registry().compiled"
    with tempfile.TemporaryDirectory() as full, tempfile.TemporaryDirectory() as snap:
        imp, floor = paired_subprocess("import attncap, sys; assert 'torch' not in sys.modules",
                                       path=installed_layout(snap, True))
        rows.append(("import attncap (subprocess)", imp, None, "python -c pass", floor, ""))
        for label, root, with_snapshot in (("full load", full, False), ("wheel snapshot", snap, True)):
            if not with_snapshot:
                installed_layout(root, with_snapshot)
            first, floor = paired_subprocess(code, path=root)
            rows.append((f"import + load, {label} (subprocess)", first, None, "python -c pass", floor, ""))
            rows.append((f"  ... over bare Python, {label}", first - floor, None, "", None, "<= 150 ms"))


FIRST_RESOLVE = """
import json, resource, sys, time
import attncap
from attncap import AttentionQuery, Environment, probes, resolve
attncap.default_registry().compiled
env = Environment.detect().replace(arch="ARCH")
q = AttentionQuery(arch="ARCH", dtype="bf16", head_dim_qk=128, training=True, mask="causal")
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2 ** 20
before, rss_before = len(sys.modules), rss()
warm = collect = None
if WARM:
    import gc
    start = time.perf_counter()
    probes.warm()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    gc.collect()  # the full collection torch's ~2,000 modules leave due: paid once by any process importing torch
    collect = time.perf_counter() - start
start = time.perf_counter()
r = resolve(q, env)
elapsed = time.perf_counter() - start
print(json.dumps({"s": elapsed, "warm": warm, "gc": collect, "modules": len(sys.modules) - before, "torch": "torch" in sys.modules,
                  "rss": [rss_before, rss()], "selected": r.selected,
                  "probe": r.decision("flash-attn-4").probe.describe()}))
"""


def _first_resolve(arch: str, warm: bool, runs: int = 3) -> tuple[list, dict]:
    import json
    out = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", FIRST_RESOLVE.replace("ARCH", arch).replace("WARM", str(warm))],
                              capture_output=True, text=True, timeout=300, env=_clean_env(), check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out, out[-1]


def _paired_wall(a: list, b: list, runs: int = 7, path: str | None = None) -> tuple[float, float]:
    """Median wall seconds of commands a and b in fresh processes, run alternately (in `path`, first on
    PYTHONPATH, when given)."""
    env = _clean_env()
    if path:
        env["PYTHONPATH"] = path
    ta, tb = [], []
    for _ in range(runs):
        for cmd, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=env, timeout=300, cwd=path, check=True)  # a failure is no time
            out.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def _clean_env() -> dict:
    """This process's environment without the ATTNCAP_* variables (overlays, probes, overrides)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ATTNCAP_")}


def bench_first_resolve(rows: list) -> None:
    """The first resolve of a process with flash-attn-4 installed and probes on: not warmed (the default: no
    import, no wait), after attncap.probes.warm() (and what warm() costs), and the CLI, whole and over the load."""
    fa4 = installed("flash-attn-4")
    if fa4 is None:
        rows.append(("first resolve, FA4 installed: skipped", None, None, "flash-attn-4 not installed", None, ""))
        return
    for arch in ("sm90", "sm100"):
        runs, last = _first_resolve(arch, warm=False)
        rows.append((f"first resolve, {arch}, FA4 {fa4}, probes on (wall)", statistics.median(r["s"] for r in runs),
                     None, "", None, "<= 50 ms"))
        notes.append(f"first resolve on {arch}, probes on, not warmed: imported {last['modules']} modules (torch: "
                     f"{last['torch']}), RSS {last['rss'][0]:.0f} -> {last['rss'][1]:.0f} MB, selected "
                     f"{last['selected']}; FA4 probe: {last['probe'][:90]}...")
    runs, last = _first_resolve("sm100", warm=True)
    rows.append(("  attncap.probes.warm() (imports FA4, torch; wall)", statistics.median(r["warm"] for r in runs),
                 None, "", None, ""))
    rows.append(("  first resolve after warm(), sm100 (wall)", statistics.median(r["s"] for r in runs), None, "",
                 None, ""))
    notes.append(f"warmed (sm100): imported {last['modules']} modules (torch: {last['torch']}), RSS "
                 f"{last['rss'][0]:.0f} -> {last['rss'][1]:.0f} MB; FA4 probe: {last['probe']}; the resolve is timed "
                 f"after gc.collect() ({statistics.median(r['gc'] for r in runs) * 1e3:.0f} ms: the full collection "
                 "that importing torch leaves due, paid once by any process that imports it)")
    import tempfile
    cli = [sys.executable, "-c", "import sys; from attncap.cli import main; sys.exit(main())",
           "resolve", "--arch", "sm100", "--head-dim", "128", "--training"]
    load = [sys.executable, "-c", "import attncap; attncap.default_registry().compiled"]
    with tempfile.TemporaryDirectory() as root:  # laid out and byte-compiled as the wheel installs it
        installed_layout(root, True)
        done = subprocess.run(cli, capture_output=True, text=True, timeout=300, cwd=root,
                              env=dict(os.environ, PYTHONPATH=root))
        if done.returncode:
            notes.append(f"attncap resolve failed ({done.returncode}): {done.stderr.strip()[-200:]}")
        wall, load_wall = _paired_wall(cli, load, path=root)
    rows.append(("`attncap resolve --arch sm100` (CLI, wall, wheel)", wall, None, "import + load (wall)", load_wall,
                 "<= 0.3 s"))
    rows.append(("  ... over import + load (the command's own part)", wall - load_wall, None, "", None, ""))


def bench_grid(rows: list) -> None:
    from attncap.grid import regions
    from attncap.rules import Ctx
    registry = attncap.default_registry()
    vocab = registry.vocabulary

    def everything():
        for name, b in registry.compiled.items():
            for arch in vocab.archs:
                for dtype in vocab.dtypes:
                    t = AttentionQuery(arch=arch, dtype=dtype, head_dim_qk=64)
                    ctx = Ctx(arch, vocab.dtypes[dtype].bytes, ENV.version(b.package), ENV.cudnn, b.package,
                              vocab.cc(arch))
                    regions(b, registry.backends[name], t, ctx, 576).supported
    points = len(registry.backends) * len(vocab.archs) * len(vocab.dtypes) * 576 * 576
    rows.append((f"matrix: all planes ({points / 1e6:.0f}M points)", median_per_call(everything, 1, 3), None, "",
                 None, "< 5 s"))


def bench_drift(rows: list) -> None:
    try:
        from importlib.metadata import version
        installed = version("flash-attn-4")
        import flash_attn.cute.interface  # noqa: F401  (import cost is not part of the figure)
    except Exception:
        rows.append(("drift over the FA4 grid", None, None, "flash-attn-4 not importable", None, ""))
        return
    from attncap.drift import run_drift
    env = Environment(versions={"flash-attn-4": installed})
    start = time.perf_counter()
    report = run_drift(attncap.default_registry(), "flash-attn-4", env)
    rows.append((f"drift, FA4 {installed} ({report.compared / 1e6:.1f}M points)", time.perf_counter() - start,
                 None, "", None, "< 10 s"))


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            return f"{seconds / scale:.3g} {unit}"
    return ""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"attncap {attncap.__version__}, Python {platform.python_version()}, {cpu}, {os.cpu_count()} CPUs, "
            f"torch {installed('torch')}, flash-attn-4 {installed('flash-attn-4')}, TE {TE_VERSION} (anchor)")


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the grid, drift and first-resolve figures")
    parser.add_argument("--rounds", type=int, default=7, help="passes over each workload (default 7)")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = parser.parse_args()
    load_before = load_average()
    rows: list = []
    anchor = load_anchor()
    gc.collect()
    bench_uncached(rows, anchor, args.rounds)
    bench_per_forward(rows, anchor)
    bench_load(rows)
    if not args.quick:
        bench_first_resolve(rows)
        bench_grid(rows)
        bench_drift(rows)
    lines = [machine(), f"load average (1/5/15 min) {load_before} at start, {load_average()} at end; "
             f"single-call samples less the clock's own {fmt(CLOCK_COST)}", "",
             f"| {'figure':<52} | {'median':>9} | {'p99':>9} | {'reference':<26} | {'ref. median':>11} | "
             f"{'ratio':>6} | target |",
             f"|{'-' * 54}|{'-' * 11}|{'-' * 11}|{'-' * 28}|{'-' * 13}|{'-' * 8}|--------|"]
    for name, value, tail, ref_name, ref, target in rows:
        ratio = f"{value / ref:.2f}x" if value and ref else ""
        lines.append(f"| {name:<52} | {fmt(value):>9} | {fmt(tail):>9} | {ref_name:<26} | {fmt(ref):>11} | "
                     f"{ratio:>6} | {target} |")
    lines += [""] + [f"- {n}" for n in notes]
    print("\n".join(lines))
    if args.readme:
        readme = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
        text = open(readme).read()
        head, _, rest = text.partition("<!-- bench:start -->")
        _, _, tail = rest.partition("<!-- bench:end -->")
        with open(readme, "w") as f:
            f.write(f"{head}<!-- bench:start -->\n{chr(10).join(lines)}\n<!-- bench:end -->{tail}")


if __name__ == "__main__":
    main()

"""attncap benchmarks: `python benchmarks/run.py` prints one table.

Each figure is a median over repeated batches, beside a floor measured in the same run, so
the ratios hold on a busy machine where absolute times drift:
  - cached resolve        vs a dict lookup of the same query;
  - uncached resolve      vs a hand-written if-chain answering the same FA4 question;
  - import / load         vs `python -c pass` and against the targets in the README.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import attncap  # noqa: E402
from attncap import AttentionQuery, Environment, resolve  # noqa: E402

ENV = Environment(versions={"flash-attn-4": "4.0.0b36", "flash-attn": "2.8.3", "flash-attn-3": "3.0.0",
                            "torch": "2.13.0"}, cudnn="9.10.2")


def median_per_call(fn, number: int, repeat: int = 7) -> float:
    return statistics.median(t / number for t in timeit.repeat(fn, number=number, repeat=repeat))


def subprocess_time(code: str, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fa4_if_chain(arch: str, dtype: str, hd: int, hdv: int, training: bool, version: tuple) -> bool:
    """The hand-written floor: FA4 4.0.0b36's head-dim rules as a framework would inline them."""
    if arch not in ("sm90", "sm100", "sm103", "sm110") or dtype not in ("bf16", "fp16"):
        return False
    if hd % 8 or hdv % 8:
        return False
    if arch == "sm90":
        return 8 <= hd <= 256 and 8 <= hdv <= 256
    if hd == hdv == 512 or (hd, hdv) == (256, 256) and version < (4, 0, 0, 11):
        return False
    return (8 <= hd <= 128 and 8 <= hdv <= 128) or (hd, hdv) in ((192, 128), (256, 256), (64, 512))


def queries(n: int) -> list[AttentionQuery]:
    """Distinct queries (different seqlens), so each resolve is a cache miss."""
    return [AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=128, training=True, mask="causal",
                           seqlen_q=1024 + i) for i in range(n)]


def bench_resolve(rows: list) -> None:
    q = AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=128, training=True, mask="causal", seqlen_q=4096)
    resolve(q, ENV, probes=False)
    floor = {q: "x"}
    cached = median_per_call(lambda: resolve(q, ENV, probes=False), 100_000)
    lookup = median_per_call(lambda: floor.get(q), 100_000)
    rows.append(("resolve, cached", cached, "dict lookup", lookup, "<= 0.5 us"))
    build = median_per_call(lambda: AttentionQuery(arch="sm100", dtype="bf16", head_dim_qk=128, training=True,
                                                   mask="causal", seqlen_q=4096), 20_000)
    raw = median_per_call(lambda: ("sm100", "bf16", 128, True, "causal", 4096), 20_000)
    rows.append(("AttentionQuery(...) construction, validated", build, "tuple literal", raw, ""))

    chain = median_per_call(lambda: fa4_if_chain("sm100", "bf16", 128, 128, True, (4, 0, 0, 36)), 100_000)
    batch = queries(2550)
    samples, reasons = [], []
    for _ in range(7):
        attncap.clear_cache()
        attncap.default_registry().compiled  # the load is measured separately
        for x in batch[:50]:
            resolve(x, ENV, probes=False)  # warm the per-environment views
        start = time.perf_counter()
        for x in batch[50:2050]:
            resolve(x, ENV, probes=False)
        samples.append((time.perf_counter() - start) / 2000)
        start = time.perf_counter()
        for x in batch[2050:]:  # not resolved yet: resolution plus every decision's reasons
            for d in resolve(x, ENV, probes=False).decisions:
                d.reasons
        reasons.append((time.perf_counter() - start) / 500)
    rows.append(("resolve, uncached, 8 backends", statistics.median(samples), "FA4 if-chain", chain, "<= 15 us"))
    rows.append(("  ... with every reason built", statistics.median(reasons), "FA4 if-chain", chain, "(lazy)"))
    probed = _uncached_with_probes(batch)
    if probed is not None:
        rows.append(("  ... probes on (installed FA4 asked)", probed, "FA4 if-chain", chain, ""))


def _uncached_with_probes(batch) -> float | None:
    """Uncached resolution with the probes on, against the installed flash-attn-4 (imported first)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        env = ENV.replace(versions={"flash-attn-4": version("flash-attn-4"), "torch": version("torch")})
        import flash_attn.cute.interface  # noqa: F401  (the import is not part of the figure)
    except (PackageNotFoundError, ImportError):
        return None
    samples = []
    for _ in range(5):
        attncap.clear_cache()
        for x in batch[:50]:
            resolve(x, env)
        start = time.perf_counter()
        for x in batch[50:2050]:
            resolve(x, env)
        samples.append((time.perf_counter() - start) / 2000)
    return statistics.median(samples)


def bench_load(rows: list) -> None:
    from attncap.loader import load_registry

    def load():
        load_registry(use_env=False).compiled
    rows.append(("load + validate + compile data", median_per_call(load, 3, 5), "", None, ""))
    floor = subprocess_time("pass")
    imp = subprocess_time("import attncap, sys; assert 'torch' not in sys.modules")
    first = subprocess_time("import attncap; attncap.default_registry().compiled")
    rows.append(("import attncap (subprocess)", imp, "python -c pass", floor, ""))
    rows.append(("import + load (subprocess)", first, "python -c pass", floor, "<= 150 ms"))


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
    rows.append((f"matrix: all planes ({points / 1e6:.0f}M points)", median_per_call(everything, 1, 3), "", None,
                 "< 5 s"))


def bench_drift(rows: list) -> None:
    try:
        from importlib.metadata import version
        installed = version("flash-attn-4")
        import flash_attn.cute.interface  # noqa: F401  (import cost is not part of the figure)
    except Exception:
        rows.append(("drift over the FA4 grid", None, "flash-attn-4 not importable", None, ""))
        return
    from attncap.drift import run_drift
    env = Environment(versions={"flash-attn-4": installed})
    start = time.perf_counter()
    report = run_drift(attncap.default_registry(), "flash-attn-4", env)
    rows.append((f"drift, FA4 {installed} ({report.compared / 1e6:.1f}M points)", time.perf_counter() - start,
                 "", None, "< 10 s"))


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            return f"{seconds / scale:.3g} {unit}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the grid and drift figures")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = parser.parse_args()
    rows: list = []
    bench_resolve(rows)
    bench_load(rows)
    if not args.quick:
        bench_grid(rows)
        bench_drift(rows)
    lines = [f"attncap {attncap.__version__}, Python {platform.python_version()}, {platform.machine()}, "
             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", "",
             f"| {'figure':<44} | {'median':>9} | {'floor':<15} | {'floor median':>12} | {'ratio':>6} | target |",
             f"|{'-' * 46}|{'-' * 11}|{'-' * 17}|{'-' * 14}|{'-' * 8}|--------|"]
    for name, value, floor_name, floor, target in rows:
        ratio = f"{value / floor:.1f}x" if value and floor else ""
        lines.append(f"| {name:<44} | {fmt(value):>9} | {floor_name:<15} | {fmt(floor):>12} | {ratio:>6} | {target} |")
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

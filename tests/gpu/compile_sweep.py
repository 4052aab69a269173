"""Compile-only evidence: FlashAttention-4's CuTe DSL kernels compiled for a GPU we do not have.

FA4 4.0.0b36 supports compiling without a GPU: FLASH_ATTENTION_ARCH picks the kernel classes
(`arch // 10` dispatch in flash_attn/cute/interface.py), CUTE_DSL_ARCH the compile target
(sm_100a, sm_103a, sm_110a, sm_120a), FLASH_ATTENTION_NUM_SMS the SM count, and torch's
FakeTensorMode (device "cuda") makes the interface compile without launching. One driver
query remains on the compile path (cutlass.utils.HardwareInfo() for the persistent grid
size, tile_scheduler.py); the worker replaces it by a stub answering FLASH_ATTENTION_NUM_SMS.
The DSL's own ptxas turns the PTX into a cubin for the target; nothing needs libcuda.

    python tests/gpu/compile_sweep.py --arch sm100 --out tests/evidence/fa4_compile_sm100.jsonl --jobs 2
    python tests/gpu/compile_sweep.py --arch sm120 --out ... --deadline 1800 --resume
    python tests/gpu/compile_sweep.py --arch sm100 --only 64x64,192x128   # a few pairs

Every (head_dim_qk, head_dim_v) multiple of 8 in 8..256, plus (192, 128), (64, 512), (256, 256),
(512, 512), forward and backward, bf16, batch 2, seqlen_q = seqlen_kv = 1024, 4 query and 4 kv
heads, not causal (the forward is the training one: it writes the LSE the backward needs).
Pairs the attncap table calls supported on the arch run first, coarse grid first (multiples of
32, then 16, then 8), so that --deadline leaves an evenly sampled plane; then the pairs FA4's
validator refuses (instant), then the rest.
Tasks go to long-lived worker processes (one compile at a time each, --jobs of them); a worker
that crashes or passes --timeout is killed, its task recorded as crash/timeout, and a fresh one
started.

Output (JSON Lines, like tests/evidence/fa4_h100.jsonl): an env record, one record per
(pair, pass), a summary.

    {"record": "env", "evidence": "compile", "arch": "sm100", "target": "sm_100a",
     "flash-attn-4": "4.0.0b36", "nvidia-cutlass-dsl": "4.8.1", "dsl_libs": "cu12", "torch": ...,
     "num_sms": 148, "limits": {"smem_per_block": 232448, "regs_per_block": 65536,
     "regs_per_thread": 255}, "config": {...},
     "runs": [{"date": "2026-12-06", "machine": "16 CPUs (x86_64)", "torch": "2.11.0+cu130",
               "dsl_libs": "cu12", "jobs": 13, "records": 1556}, ...]}
    {"record": "compile", "id": "fa4-compile-sm100-bf16-d64x64-fwd", "backend": "flash-attn-4",
     "evidence": "compile", "arch": "sm100", "dtype": "bf16", "head_dim_qk": 64, "head_dim_v": 64,
     "pass": "forward" | "backward", "training": true,
     "outcome": "compiles" | "compile_error" | "resources" | "rejected" | "timeout" | "crash",
     "error_class": null | "validator" | "kernel_assert" | "layout_division" | "mlir_op_creation_failed" | ...,
     "error": null | first 360 characters + " [at file:line via fa4_file:line]",
     "kernels": [{"name": "FlashAttentionForwardSm100", "smem": 232448, "threads": 512,
                  "regs": 128}], "over_limit": [] | ["smem 240000 > 232448", ...],
     "seconds": 2.4}
    {"record": "summary", "counts": {"forward": {"compiles": 256, ...}, ...}, "not_run": [...]}

The env record describes the last run (its torch and dsl_libs); `runs` says where each part of a
file resumed across machines was compiled (date, machine, torch, DSL libs, jobs, record count).

Outcomes: `compiles` = every kernel of the pass compiled to a cubin for the target and its
launch fits the target (dynamic SMEM <= the DSL's SMEM_CAPACITY_MAP entry, registers x threads
<= 64K); it is NOT evidence that the kernel runs or is correct. `resources` = compiled but a
launch would exceed a limit, or ptxas failed for lack of registers / shared memory (numbers in
over_limit / error). `compile_error` = the DSL or ptxas rejected the kernel (error_class says
how). `rejected` = FA4's head-dim validator (_validate_head_dims) refused the shape before any
kernel was built, which the tables already model. `timeout` / `crash` =
the worker did not answer.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import queue
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# SM count passed as FLASH_ATTENTION_NUM_SMS (grid size and split heuristics only): B200, B300,
# Jetson Thor, RTX 5090.
NUM_SMS = {"sm100": 148, "sm103": 148, "sm110": 20, "sm120": 170}
REGS_PER_BLOCK = 65536  # 64K 32-bit registers per block, every cc >= 5.0 (CUDA Programming Guide)
REGS_PER_THREAD = 255
BATCH, SEQLEN, HEADS = 2, 1024, 4
SPECIAL_PAIRS = [(192, 128), (64, 512), (256, 256), (512, 512)]
PASSES = ("forward", "backward")


def plane():
    """Every pair of the sweep: multiples of 8 in 8..256 squared, then the special shapes."""
    pairs = [(d, dv) for d in range(8, 257, 8) for dv in range(8, 257, 8)]
    return pairs + [p for p in SPECIAL_PAIRS if p not in pairs]


def record_id(arch, hd, hdv, pass_):
    return f"fa4-compile-{arch}-bf16-d{hd}x{hdv}-{'fwd' if pass_ == 'forward' else 'bwd'}"


# --------------------------------------------------------------------------- worker side

def _classify(msg: str):
    """(outcome, error_class) of a compile failure message."""
    m = msg.lower()
    if "insufficient registers" in m or "too many registers" in m:
        return "resources", "ptxas_registers"
    if "too much shared data" in m or ("shared memory" in m and "exceed" in m):
        return "resources", "smem"
    if "failed to perform a valid division" in m:
        return "compile_error", "layout_division"
    if "operation creation failed" in m:
        return "compile_error", "mlir_op_creation_failed"
    if "failed to partition" in m:
        return "compile_error", "partition"
    if "ptxas" in m:
        return "compile_error", "ptxas"
    if "tmem" in m:
        return "compile_error", "tmem"
    return "compile_error", None


def _cubin_regs(path):
    """Registers per thread of the kernels in a cubin: EIATTR_REGCOUNT (attribute 0x2f) entries of
    its .nv.info section, [format 0x04, 0x2f, size 8, symbol index u32, count u32] (what
    `ptxas -v` prints as "Used N registers")."""
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return []
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = sections[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]
    regs = []
    for s in sections:
        if names[s[0]:names.index(b"\0", s[0])] != b".nv.info":
            continue
        info, i = data[s[4]:s[4] + s[5]], 0
        while i + 4 <= len(info):
            fmt, attr, size = info[i], info[i + 1], struct.unpack_from("<H", info, i + 2)[0]
            if fmt != 0x04:  # only EIFMT_SVAL entries carry a payload
                i += 4
                continue
            if attr == 0x2F and size == 8:
                regs.append(struct.unpack_from("<I", info, i + 8)[0])
            i += 4 + size
    return regs


_LAUNCH_T = "!llvm.struct<(array<3 x i32>, array<3 x i32>, i64, ptr, ptr, i32)>"


def _launches(ir_text):
    """[(dynamic smem bytes, threads per block)] of every cudaLaunchKernelEx config in the host
    IR; None where the value is not a compile-time constant."""
    out = []
    for func in ir_text.split("llvm.func ")[1:]:
        consts = dict(re.findall(r"(%\d+) = llvm\.mlir\.constant\((-?\d+) : i\d+\)", func))
        geps = {}
        for name, base, idx in re.findall(
                r"(%\d+) = llvm\.getelementptr (%\d+)\[([\d, ]+)\] : \(!llvm\.ptr\) -> !llvm\.ptr, "
                + re.escape(_LAUNCH_T), func):
            geps[name] = (base, tuple(int(i) for i in idx.split(",")))
        fields = {}
        for val, ptr in re.findall(r"llvm\.store (%\d+), (%\d+) :", func):
            if ptr in geps:
                base, idx = geps[ptr]
                fields.setdefault(base, {})[idx] = consts.get(val)
        for f in fields.values():
            smem = f.get((0, 2))
            dims = [f.get((0, 1, i)) for i in range(3)]
            threads = None if None in dims else int(dims[0]) * int(dims[1]) * int(dims[2])
            out.append((None if smem is None else int(smem), threads))
    return out


class Worker:
    """One process compiling one task at a time (env set up once, before cutlass is imported)."""

    def __init__(self, arch, dump_dir):
        self.arch = arch
        self.dump_dir = dump_dir
        os.environ["FLASH_ATTENTION_ARCH"] = arch
        os.environ["CUTE_DSL_ARCH"] = f"sm_{arch[2:]}a"
        os.environ["FLASH_ATTENTION_NUM_SMS"] = str(NUM_SMS[arch])
        os.environ["FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED"] = "0"
        os.environ["CUTE_DSL_KEEP"] = "cubin"
        os.environ["CUTE_DSL_DUMP_DIR"] = dump_dir
        import warnings
        warnings.filterwarnings("ignore")
        import torch
        import cutlass.cute as cute
        import cutlass.utils
        from torch._subclasses.fake_tensor import FakeTensorMode

        num_sms = NUM_SMS[arch]

        class TargetHardwareInfo:
            """Stands in for cutlass.utils.HardwareInfo, which asks the CUDA driver."""

            def __init__(self, device_id=0):
                pass

            def get_device_multiprocessor_count(self):
                return num_sms

            def get_max_active_clusters(self, cluster_size, stream=None):
                return num_sms // cluster_size

        cutlass.utils.HardwareInfo = TargetHardwareInfo
        from flash_attn.cute import interface
        self.torch, self.cute, self.interface, self.FakeTensorMode = torch, cute, interface, FakeTensorMode
        self._compile = cute.compile
        self.kernels = None
        cute.compile = self._recording_compile
        validate = interface._validate_head_dims
        self.validated = False

        def recording_validate(*args):
            validate(*args)
            self.validated = True

        interface._validate_head_dims = recording_validate

    def _recording_compile(self, *args, **kwargs):
        k = {"name": type(args[0]).__name__, "compiled": False}
        self.kernels.append(k)
        fn = self._compile(*args, **kwargs)
        launches = _launches(str(getattr(fn, "ir_module", "")))
        if launches:
            k["smem"], k["threads"] = max(launches, key=lambda x: x[0] or 0)
        regs = []
        for path in glob.glob(os.path.join(self.dump_dir, "*.cubin")):
            regs += _cubin_regs(path)
            os.remove(path)
        k["regs"] = max(regs) if regs else None
        k["compiled"] = True
        return fn

    def run(self, task):
        torch, interface = self.torch, self.interface
        hd, hdv, pass_ = task["head_dim_qk"], task["head_dim_v"], task["pass"]
        self.kernels, self.validated = [], False
        t0 = time.time()
        rec = {"outcome": "compiles", "error_class": None, "error": None}
        try:
            with self.FakeTensorMode(allow_non_fake_inputs=True):
                dev = torch.device("cuda")
                q = torch.empty(BATCH, SEQLEN, HEADS, hd, dtype=torch.bfloat16, device=dev)
                k = torch.empty(BATCH, SEQLEN, HEADS, hd, dtype=torch.bfloat16, device=dev)
                v = torch.empty(BATCH, SEQLEN, HEADS, hdv, dtype=torch.bfloat16, device=dev)
                if pass_ == "forward":
                    interface._flash_attn_fwd(q, k, v, return_lse=True)
                else:
                    out = torch.empty(BATCH, SEQLEN, HEADS, hdv, dtype=torch.bfloat16, device=dev)
                    lse = torch.empty(BATCH, HEADS, SEQLEN, dtype=torch.float32, device=dev)
                    interface._flash_attn_bwd(q, k, v, out, torch.empty_like(out), lse)
        except BaseException as e:  # noqa: BLE001 - every failure is data
            msg = f"{type(e).__name__}: {e}"
            frames = traceback.extract_tb(e.__traceback__)
            where = frames[-1]
            fa4 = [f for f in frames if f"flash_attn{os.sep}cute" in f.filename]
            at = f"{os.path.basename(where.filename)}:{where.lineno}"
            if fa4 and fa4[-1] is not where:  # the innermost FA4 line that led there
                at += f" via {os.path.basename(fa4[-1].filename)}:{fa4[-1].lineno}"
            if where.name == "_validate_head_dims":
                rec.update(outcome="rejected", error_class="validator")
            elif isinstance(e, AssertionError):  # a kernel class refuses the shape while building it
                rec.update(outcome="compile_error", error_class="kernel_assert")
            else:
                outcome, cls = _classify(msg)
                rec.update(outcome=outcome, error_class=cls or type(e).__name__)
            rec["error"] = (" ".join(msg.split())[:360] + f" [at {at}]")
        for path in glob.glob(os.path.join(self.dump_dir, "*")):
            os.remove(path)
        rec["kernels"] = self.kernels
        rec["seconds"] = round(time.time() - t0, 2)
        return rec


def worker_main(arch):
    dump = tempfile.mkdtemp(prefix=f"fa4cc-{arch}-")
    w = Worker(arch, dump)
    print("READY", flush=True)
    for line in sys.stdin:
        task = json.loads(line)
        rec = w.run(task)
        print("RESULT " + json.dumps(rec), flush=True)


# --------------------------------------------------------------------------- parent side

def limits(arch):
    from cutlass.cutlass_dsl.cutlass import SMEM_CAPACITY_MAP
    return {"smem_per_block": SMEM_CAPACITY_MAP[f"sm_{arch[2:]}"], "regs_per_block": REGS_PER_BLOCK,
            "regs_per_thread": REGS_PER_THREAD}


def over_limit(kernels, lim):
    out = []
    for k in kernels:
        if k.get("smem") is not None and k["smem"] > lim["smem_per_block"]:
            out.append(f"{k['name']}: smem {k['smem']} > {lim['smem_per_block']}")
        if k.get("regs") and k.get("threads") and k["regs"] * k["threads"] > lim["regs_per_block"]:
            out.append(f"{k['name']}: regs {k['regs']} x threads {k['threads']} > {lim['regs_per_block']}")
    return out


class Proc:
    """A worker subprocess with a reader thread, restarted after a crash or timeout."""

    def __init__(self, arch, log):
        self.arch, self.log = arch, log
        self.start()

    def start(self):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--arch", self.arch],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                  bufsize=1)
        self.q = queue.Queue()
        threading.Thread(target=self._read, args=(self.p, self.q), daemon=True).start()
        self.ready = False

    @staticmethod
    def _read(p, q):
        for line in p.stdout:
            q.put(line)
        q.put(None)

    def _next(self, timeout):
        deadline = time.time() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                return "timeout"
            if line is None:
                return "crash"
            if line.startswith("READY"):
                self.ready = True
                return "ready"
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])

    def run(self, task, timeout, startup_timeout=120):
        if not self.ready:
            r = self._next(startup_timeout)
            if not self.ready:
                self.restart()
                return {"outcome": "crash", "error_class": "worker_start", "error": str(r), "kernels": []}
        t0 = time.time()
        self.p.stdin.write(json.dumps(task) + "\n")
        self.p.stdin.flush()
        r = self._next(timeout)
        if isinstance(r, dict):
            return r
        rc = self.p.poll()
        self.restart()
        return {"outcome": r, "error_class": None, "kernels": [], "seconds": round(time.time() - t0, 2),
                "error": f"worker {'exceeded ' + str(timeout) + 's' if r == 'timeout' else 'died, rc=' + str(rc)}"}

    def restart(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.start()

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def table_supported(arch, hd, hdv, pass_):
    """Does attncap's table (probes off) call this bf16 pair supported for the pass?"""
    import attncap
    env = attncap.Environment(arch=arch, versions={"flash-attn-4": fa4_version()})
    q = attncap.AttentionQuery(arch=None, dtype="bf16", head_dim_qk=hd, head_dim_v=hdv, num_heads_q=HEADS,
                               num_heads_kv=HEADS, seqlen_q=SEQLEN, seqlen_kv=SEQLEN,
                               training=pass_ == "backward")
    return attncap.resolve(q, env, probes=False).decision("flash-attn-4").supported


def validator_accepts(arch, hd, hdv):
    """FA4's own head-dim validator for bf16 (alignment 8); cc 8.x / 12.x are never validated."""
    major = int(arch[2:]) // 10
    if major in (8, 12):
        return True
    from flash_attn.cute import interface
    try:
        interface._validate_head_dims(hd, hdv, major, 8)
        return True
    except AssertionError:
        return False


def fa4_version():
    from importlib.metadata import version
    return version("flash-attn-4")


def env_record(arch):
    from importlib.metadata import version
    import torch
    libs = [d for d in ("cu12", "cu13") if _has_dist(f"nvidia-cutlass-dsl-libs-{d}")]
    return {"record": "env", "evidence": "compile", "backend": "flash-attn-4", "arch": arch,
            "target": f"sm_{arch[2:]}a", "flash-attn-4": fa4_version(), "nvidia-cutlass-dsl": version("nvidia-cutlass-dsl"),
            "dsl_libs": "+".join(libs), "torch": torch.__version__.split("+")[0], "gpu": None,
            "num_sms": NUM_SMS[arch], "limits": limits(arch),
            "config": {"dtype": "bf16", "batch": BATCH, "seqlen_q": SEQLEN, "seqlen_kv": SEQLEN,
                       "num_heads_q": HEADS, "num_heads_kv": HEADS, "causal": False,
                       "forward": "_flash_attn_fwd(q, k, v, return_lse=True)",
                       "backward": "_flash_attn_bwd(q, k, v, out, dout, lse)"}}


def runs(prev_env, n_prev, env, jobs, n_new):
    """The env record's `runs`: where each part of a resumed file was compiled. A resumed file keeps
    its earlier runs (one is made up from an older header without them) and gains this one."""
    import platform
    out = []
    if prev_env is not None and n_prev:
        out = list(prev_env.get("runs") or [{"date": None, "machine": None, "torch": prev_env.get("torch"),
                                              "dsl_libs": prev_env.get("dsl_libs"), "jobs": None,
                                              "records": n_prev}])
    if n_new:
        import torch
        out.append({"date": time.strftime("%Y-%m-%d", time.gmtime()),
                    "machine": f"{os.cpu_count()} CPUs ({platform.machine()})", "torch": torch.__version__,
                    "dsl_libs": env["dsl_libs"], "jobs": jobs, "records": n_new})
    return out


def _has_dist(name):
    from importlib.metadata import PackageNotFoundError, version
    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=sorted(NUM_SMS))
    ap.add_argument("--out")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per (pair, pass)")
    ap.add_argument("--deadline", type=float, help="stop starting tasks after this many seconds")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--only", help="comma-separated HDxHDV pairs")
    ap.add_argument("--passes", default="forward,backward")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker_main(a.arch)
    if not a.out:
        ap.error("--out is required")
    pairs = plane() if not a.only else [tuple(int(x) for x in p.split("x")) for p in a.only.split(",")]
    passes = a.passes.split(",")
    tasks = [{"id": record_id(a.arch, hd, hdv, p), "head_dim_qk": hd, "head_dim_v": hdv, "pass": p,
              "table": table_supported(a.arch, hd, hdv, p)} for hd, hdv in pairs for p in passes]
    # What the table calls supported first, then what FA4's validator refuses (no compile, instant).
    # Coarse grid first (both dims multiples of 32, then of 16), so that a --deadline leaves the
    # plane evenly sampled rather than a corner of it.
    def coarseness(t):
        return next(i for i, m in enumerate((32, 16, 8, 1)) if t["head_dim_qk"] % m == 0 == t["head_dim_v"] % m)
    tasks.sort(key=lambda t: (not t["table"], validator_accepts(a.arch, t["head_dim_qk"], t["head_dim_v"]),
                              coarseness(t)))
    partial = a.out + ".partial"
    done = {}
    prev_env, resumed = None, set()
    if a.resume:
        for path in (a.out, partial):
            if os.path.exists(path):
                for line in open(path):
                    r = json.loads(line)
                    if r.get("record") == "compile":
                        done[r["id"]] = r
                    elif r.get("record") == "env" and path == a.out:
                        prev_env = r
            if path == a.out:  # records only in the .partial count as this run's
                resumed = set(done)
    lim = limits(a.arch)
    todo = [t for t in tasks if t["id"] not in done]
    lock = threading.Lock()
    t_start = time.time()
    log = open(a.out + ".log", "a")
    pf = open(partial, "a")
    not_run = []

    def take():
        with lock:
            if not todo:
                return None
            if a.deadline is not None and time.time() - t_start > a.deadline:
                not_run.extend(t["id"] for t in todo)
                todo.clear()
                return None
            return todo.pop(0)

    def loop():
        proc = None
        try:
            while (task := take()) is not None:
                proc = proc or Proc(a.arch, log)
                r = proc.run({k: task[k] for k in ("head_dim_qk", "head_dim_v", "pass")}, a.timeout)
                rec = {"record": "compile", "id": task["id"], "backend": "flash-attn-4", "evidence": "compile",
                       "arch": a.arch, "dtype": "bf16", "head_dim_qk": task["head_dim_qk"],
                       "head_dim_v": task["head_dim_v"], "pass": task["pass"], "training": True,
                       "table_supported": task["table"], **r}
                rec["over_limit"] = over_limit(rec.get("kernels", []), lim)
                if rec["outcome"] == "compiles" and rec["over_limit"]:
                    rec["outcome"] = "resources"
                with lock:
                    done[task["id"]] = rec
                    pf.write(json.dumps(rec) + "\n")
                    pf.flush()
                    print(f"{len(done)}/{len(tasks)} {task['id']} {rec['outcome']} {rec.get('error_class') or ''} "
                          f"{rec.get('seconds')}s", flush=True)
        finally:
            if proc:
                proc.close()

    threads = [threading.Thread(target=loop) for _ in range(a.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    order = {t["id"]: i for i, t in enumerate(sorted(tasks, key=lambda t: (t["head_dim_qk"], t["head_dim_v"], t["pass"])))}
    recs = sorted((r for r in done.values() if r["id"] in order), key=lambda r: order[r["id"]])
    counts = {}
    for r in recs:
        counts.setdefault(r["pass"], Counter())[r["outcome"]] += 1
    missing = sorted(set(order) - {r["id"] for r in recs}, key=order.get)
    env = env_record(a.arch)
    env["runs"] = runs(prev_env, sum(r["id"] in resumed for r in recs), env, a.jobs,
                       sum(r["id"] not in resumed for r in recs))
    with open(a.out, "w") as f:
        f.write(json.dumps(env) + "\n")
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"record": "summary", "counts": {k: dict(v) for k, v in counts.items()},
                            "not_run": missing}) + "\n")
    print(json.dumps(counts), f"not run: {len(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

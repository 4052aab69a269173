"""TransformerEngine's real `get_attention_backend`, run on a CPU machine without TE's C++ or a GPU.

The `transformer-engine` wheel on the package index is pure Python and holds
`transformer_engine/pytorch/attention/dot_product_attention/utils.py`. This module downloads it
once per cache directory (pip download; nothing of TE is committed), loads that one file with its
imports stubbed (transformer_engine_torch, the rest of the TE package, CUDA queries, cuDNN version,
compute capability, FlashAttention version detection) and calls the real function.

What is stubbed, and so is not TE's answer:
- `tex.get_fused_attn_backend`, TE's C++ gate (fused_attn.cpp; from TE 2.20 cuDNN's own support
  check): it always answers "a sub-backend" (FP8 for FP8 inputs, else F16_arbitrary_seqlen). So
  `fused` is "python" when utils.py itself refuses FusedAttention, and "cudnn" when utils.py let
  the configuration through to the C++/cuDNN check, which only a GPU can answer.
- FlashAttention detection: the caller says which FA versions are installed; each FA version is
  judged in its own call with only that one installed (TE returns only the preferred FA).
- FA4's `_validate_head_dims` is the installed flash-attn-4's own, when importable.

Usage (tests, benchmarks):
    te = load("2.20.2")                    # TE utils.py for that version
    v = te.backends(Config(arch=(9, 0), cudnn=(9, 21, 0), params={"head_dim_qk": 128, ...}))
    v.fa2, v.fa3, v.fa4, v.fused, v.reasons
    te.get_attention_backend(te.AttentionParams(...))  # the raw function, inside `with te.active():`
"""

from __future__ import annotations

import ast
import contextlib
import enum
import importlib.abc
import importlib.machinery
import logging
import os
import subprocess
import sys
import tempfile
import types
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

UTILS = "transformer_engine/pytorch/attention/dot_product_attention/utils.py"
CONTEXT_PARALLEL = "transformer_engine/pytorch/attention/dot_product_attention/context_parallel.py"
UTILS_MODULE = "transformer_engine.pytorch.attention.dot_product_attention.utils"
CP_MODULE = "transformer_engine.pytorch.attention.dot_product_attention.context_parallel"
CACHE_ENV = "ATTNCAP_TE_WHEELS"  # a directory to keep downloaded wheels in (default: a temp dir)


class DownloadError(RuntimeError):
    """The wheel could not be fetched (no package index reachable)."""


def wheel(version: str, cache: str | os.PathLike | None = None) -> Path:
    """The transformer-engine wheel of `version`, downloaded into `cache` once."""
    cache = Path(cache or os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "attncap-te-wheels")
    target = cache / version
    found = sorted(target.glob("transformer_engine-*.whl"))
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"transformer-engine=={version}", "--no-deps",
           "--only-binary=:all:", "-d", str(target), "-q", "--disable-pip-version-check"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DownloadError(f"pip download transformer-engine=={version} failed: {exc}") from None
    found = sorted(target.glob("transformer_engine-*.whl"))
    if done.returncode or not found:
        raise DownloadError(f"pip download transformer-engine=={version} failed: "
                            f"{(done.stderr or done.stdout).strip()[-400:]}")
    return found[0]


# ---------- stubs ----------

class _Stub:
    """Anything: any attribute, call, item or base class. Used as a decorator it returns the function."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub()

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else _Stub()

    def __getitem__(self, key):
        return key

    def __int__(self):
        return 0


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Stub()
        setattr(self, name, value)
        return value


class _Names:
    """TE's enum maps (AttnMaskType["causal"], QKVLayout[...]): the name stands for itself."""

    def __getitem__(self, key):
        return key


class FusedAttnBackend(enum.IntEnum):
    No_Backend = -1
    F16_max512_seqlen = 0
    F16_arbitrary_seqlen = 1
    FP8 = 2


FP8_DTYPES = ("fp8_e4m3", "fp8_e5m2")


class _Tensor:
    """Stand-ins for TE's tensor classes (qkv_type); only identity matters to the gate."""


class Float8Tensor(_Tensor):
    pass


class MXFP8Tensor(_Tensor):
    pass


@dataclass
class Recipe:
    """An FP8 recipe as the gate reads it (transformer_engine.common.recipe)."""

    kind: str = "delayed"  # delayed, current, mxfp8, block, nvfp4
    fp8_dpa: bool = True
    fp8_mha: bool = False

    def delayed(self): return self.kind == "delayed"
    def float8_current_scaling(self): return self.kind == "current"
    def mxfp8(self): return self.kind == "mxfp8"
    def float8_block_scaling(self): return self.kind == "block"
    def nvfp4(self): return self.kind == "nvfp4"


@dataclass
class InferenceParams:
    """The fields of TE's InferenceParams that the gate reads."""

    is_paged: bool = False
    page_size: int = 0
    total_num_pages: int = 0
    max_pages_per_seq: int = 0
    cache_manager: object = None

    def __post_init__(self):
        self.cache_manager = types.SimpleNamespace(max_pages_per_seq=self.max_pages_per_seq)


class _State:
    """What the stubs report; set per call."""

    cc: tuple = (9, 0)
    cudnn: tuple = (9, 21, 0)
    fused_calls: int = 0


def _fused_backend(*args, **kwargs):
    """tex.get_fused_attn_backend: the C++/cuDNN gate is not modelled; say "a sub-backend"."""
    _State.fused_calls += 1
    values = list(args) + list(kwargs.values())
    if len(args) == 1 and not kwargs:  # TE >= 2.20: one FusedAttentionParams
        values = list(vars(args[0]).values())
    backend = FusedAttnBackend.FP8 if any(v in FP8_DTYPES for v in values if isinstance(v, str)) \
        else FusedAttnBackend.F16_arbitrary_seqlen
    return (backend, "") if len(args) == 1 and not kwargs else backend


def _modules() -> dict[str, types.ModuleType]:
    """The modules utils.py imports, as stubs that answer what the gate reads."""
    import torch
    mods: dict[str, types.ModuleType] = {}

    def module(name, **attrs):
        m = _StubModule(name)
        m.__path__ = []  # a package, so that submodules import
        m.__dict__.update(attrs)
        mods[name] = m
        return m

    tex = module("transformer_engine_torch", get_fused_attn_backend=_fused_backend)
    tex.NVTE_Fused_Attn_Backend = FusedAttnBackend
    module("transformer_engine", __version__="0")
    names = _Names()
    module("transformer_engine.pytorch.cpp_extensions.fused_attn", QKVLayout=names, QKVFormat=names,
           AttnBiasType=names, AttnMaskType=names, SoftmaxType=names, FusedAttnBackend=FusedAttnBackend,
           **{f"META_{k}": i for i, k in enumerate(("QKV", "DQKV", "O", "DO", "S", "DP"))})
    module("transformer_engine.pytorch.attention.inference", InferenceParams=InferenceParams)
    module("transformer_engine.pytorch.cpu_offload", is_cpu_offload_enabled=lambda: False)
    module("transformer_engine.pytorch.tensor.float8_tensor", Float8Tensor=Float8Tensor,
           Float8TensorStorage=type("Float8TensorStorage", (_Tensor,), {}),
           Float8Quantizer=_Stub, Float8CurrentScalingQuantizer=_Stub)
    module("transformer_engine.pytorch.tensor.mxfp8_tensor", MXFP8Tensor=MXFP8Tensor, MXFP8Quantizer=_Stub)
    module("transformer_engine.pytorch.tensor.storage.mxfp8_tensor_storage",
           MXFP8TensorStorage=type("MXFP8TensorStorage", (_Tensor,), {}))
    module("transformer_engine.pytorch.quantization",
           get_fp8_te_dtype=lambda recipe, fprop_tensor=True: "fp8_e4m3" if fprop_tensor else "fp8_e5m2")
    te_dtype = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                torch.float8_e4m3fn: "fp8_e4m3", torch.float8_e5m2: "fp8_e5m2"}
    module("transformer_engine.pytorch.constants", TE_DType=te_dtype, MXFP8_BLOCK_SCALING_SIZE=32)
    module("transformer_engine.pytorch.utils", get_device_compute_capability=lambda: _State.cc,
           get_cudnn_version=lambda: _State.cudnn)
    module("transformer_engine.pytorch.export", is_in_onnx_export_mode=lambda: False)
    module("transformer_engine.pytorch.jit", jit_fuser=lambda f: f)
    try:
        import numpy  # noqa: F401  (imported by utils.py, unused by the gate)
    except ImportError:
        module("numpy")
    return mods


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any other transformer_engine module utils.py imports: an empty stub package."""

    def __init__(self, mods):
        self.mods = mods

    def find_spec(self, name, path=None, target=None):
        if name == "transformer_engine_torch" or name.split(".")[0] == "transformer_engine":
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = self.mods.get(spec.name) or _StubModule(spec.name)
        m.__path__ = []
        self.mods[spec.name] = m
        return m

    def exec_module(self, module):
        pass


@contextlib.contextmanager
def _no_custom_ops():
    """utils.py registers torch custom ops at import (a second TE version would clash with the first)
    and marks a function for torch.compile (importing torch._dynamo takes seconds): both unneeded here."""
    import torch.compiler
    import torch.library as lib
    saved = lib.custom_op, getattr(lib, "register_autograd", None)
    saved_constant = torch.compiler.assume_constant_result
    torch.compiler.assume_constant_result = lambda f: f
    lib.custom_op = lambda *a, **k: (lambda f: types.SimpleNamespace(
        register_fake=lambda g: g, register_autograd=lambda *x, **y: None, __call__=f))
    lib.register_autograd = lambda *a, **k: None
    try:
        yield
    finally:
        lib.custom_op, lib.register_autograd = saved
        torch.compiler.assume_constant_result = saved_constant


# ---------- one TE version ----------

@dataclass
class Config:
    """One call: the device, cuDNN, FA versions installed and AttentionParams fields."""

    arch: tuple = (9, 0)
    cudnn: tuple = (9, 21, 0)
    params: dict = field(default_factory=dict)
    fa2: str | None = "2.8.3"
    fa3: str | None = "3.0.0"
    fa4: str | None = "4.0.0b11"
    fa3_softcap: bool = True


@dataclass
class Verdict:
    """Per backend: True/False for FA2/FA3/FA4/unfused; fused is "python" (utils.py refused it)
    or "cudnn" (utils.py passed it on to the C++/cuDNN check, stubbed as supported)."""

    fa2: bool
    fa3: bool
    fa4: bool
    fused: str
    unfused: bool
    reasons: list = field(default_factory=list)  # TE's "Disabling ..." messages, all calls

    @property
    def flash(self) -> dict:
        return {"flash-attn-2": self.fa2, "flash-attn-3": self.fa3, "flash-attn-4": self.fa4}


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list = []

    def emit(self, record):
        if isinstance(record.msg, str) and record.msg.startswith("Disabling"):
            self.messages.append(record.getMessage())


class TE:
    """The gate of one TE version. Call only inside `with te.active():` (backends() does)."""

    def __init__(self, version: str, cache=None):
        self.version = version
        path = wheel(version, cache)
        with zipfile.ZipFile(path) as z:
            source = z.read(UTILS).decode()
            cp_source = z.read(CONTEXT_PARALLEL).decode() if CONTEXT_PARALLEL in z.namelist() else None
        self.mods = _modules()
        self.mods["transformer_engine"].__version__ = version
        self.finder = _StubFinder(self.mods)
        utils = types.ModuleType(UTILS_MODULE)
        utils.__file__ = f"{path}/{UTILS}"
        self.mods[UTILS_MODULE] = utils  # dataclasses look the module up while it executes
        with self.active(), _no_custom_ops(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(source, utils.__file__, "exec"), utils.__dict__)
        if cp_source is not None and "def cp_per_step_configs(" in cp_source:  # TE >= 2.20 calls it
            self.mods[CP_MODULE] = _function_module(CP_MODULE, cp_source, "cp_per_step_configs", path)
        self.utils = utils
        self.AttentionParams = utils.AttentionParams
        self.get_attention_backend = utils.get_attention_backend
        self.fields = frozenset(utils.AttentionParams.__dataclass_fields__)
        utils.AttentionLogging._log_level = logging.DEBUG
        self.capture = _Capture()
        logger = logging.getLogger("DotProductAttention")
        logger.propagate = False
        if self.capture not in logger.handlers:
            logger.addHandler(self.capture)
        fa = utils.FlashAttentionUtils
        fa.warning_printed = fa.v3_warning_printed = fa.v4_warning_printed = True  # no torch.cuda calls
        self.has_fa4 = hasattr(fa, "v4_is_installed")  # TE 2.14 has no FlashAttention 4 path
        self.fa4_validator = _fa4_validator()

    @contextlib.contextmanager
    def active(self):
        """These stubs and this version's modules in sys.modules (one TE version at a time)."""
        saved = {n: sys.modules.get(n) for n in self.mods}
        sys.modules.update(self.mods)
        sys.meta_path.insert(0, self.finder)
        try:
            yield self
        finally:
            sys.meta_path.remove(self.finder)
            for n, m in saved.items():
                if m is None:
                    sys.modules.pop(n, None)
                else:
                    sys.modules[n] = m

    def _set_flash(self, fa2, fa3, fa4, softcap):
        from packaging.version import Version
        fa = self.utils.FlashAttentionUtils
        fa.is_installed = fa2 is not None
        fa.version = Version(fa2 or "0")
        if fa2 is not None:
            fa.set_flash_attention_version()
        fa.v3_is_installed = fa3 is not None
        fa.fa3_version = Version(fa3 or "0")
        fa.v3_0_0_beta = fa3 is not None and Version("3.0.0b") < fa.fa3_version < Version("3.0.0")
        fa.fa3_supports_softcap = softcap
        if self.has_fa4:
            fa.v4_is_installed = fa4 is not None
            fa.fa4_version = Version(fa4 or "0")
            fa.v4_validate_head_dims = self.fa4_validator if fa4 is not None else None

    def call(self, cfg: Config, fa2=None, fa3=None, fa4=None):
        """One raw call with the given FA versions installed: (TE's return tuple, its reasons)."""
        _State.cc, _State.cudnn = tuple(cfg.arch), tuple(cfg.cudnn)
        self._set_flash(fa2, fa3, fa4, cfg.fa3_softcap)
        params = self.AttentionParams(**{k: v for k, v in cfg.params.items() if k in self.fields})
        self.capture.messages = []
        out = self.get_attention_backend(params)
        return out, self.capture.messages

    def backends(self, cfg: Config) -> Verdict:
        """Every backend's verdict: one call per installed FA version (FA3 only on sm90, FA4 from sm90)."""
        with self.active(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calls = _State.fused_calls
            out, reasons = self.call(cfg, fa2=cfg.fa2)
            fa2 = bool(out[5][0])
            fused = "cudnn" if out[5][1] else "python"
            if fused == "cudnn" and _State.fused_calls == calls:
                fused = "python"  # passed without reaching the C++ gate: cannot happen; be strict
            unfused = bool(out[5][2])
            fa3 = fa4 = False
            if tuple(cfg.arch) == (9, 0) and cfg.fa3 is not None:
                out, more = self.call(cfg, fa3=cfg.fa3)
                fa3, reasons = bool(out[5][0]), reasons + [m for m in more if m not in reasons]
            if not self.has_fa4:
                reasons.append(f"Disabling FlashAttention 4: TE {self.version} has no FlashAttention 4 path")
            elif tuple(cfg.arch) < (9, 0):
                reasons.append("Disabling FlashAttention 4 for compute capability < sm90 (not called)")
            elif cfg.fa4 is not None:
                out, more = self.call(cfg, fa4=cfg.fa4)
                fa4, reasons = bool(out[5][0]), reasons + [m for m in more if m not in reasons]
        return Verdict(fa2, fa3, fa4, fused, unfused, reasons)


def _function_module(name: str, source: str, function: str, path) -> types.ModuleType:
    """A module holding one top-level function of `source` (it must need nothing else of the file)."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    m = types.ModuleType(name)
    exec(compile(ast.Module([node], []), f"{path}/{CONTEXT_PARALLEL}", "exec"), m.__dict__)
    return m


def _fa4_validator():
    """flash-attn-4's own head-dim validator (TE calls it), if installed; else TE skips that check."""
    try:
        from flash_attn.cute.interface import _validate_head_dims
    except Exception:
        return None
    return _validate_head_dims


_loaded: dict = {}


def load(version: str, cache=None) -> TE:
    """TE `version`'s gate, loaded once per process."""
    if version not in _loaded:
        _loaded[version] = TE(version, cache)
    return _loaded[version]

"""Probe FlashAttention-4's own head-dim validator, `flash_attn.cute.interface._validate_head_dims`.

The validator judges head dims and alignment only, per compute-capability major (9, 10, 11).
It fails with `assert`, so under `python -O` it accepts everything: then we give no opinion.
Importing FA4 takes seconds (and needs triton on a CPU-only torch), so the import runs once,
in a background thread, and a slow or failed import is remembered as "no opinion".
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading

from . import Probe, ProbeVerdict

MODULE = "flash_attn.cute.interface"
FUNCTION = "_validate_head_dims"
EXPECTED_PARAMETERS = ("head_dim", "head_dim_v", "compute_capability", "alignment")
IMPORT_TIMEOUT_ENV = "ATTNCAP_PROBE_TIMEOUT"


class FA4HeadDimProbe(Probe):
    name = "fa4-head-dims"
    package = "flash-attn-4"
    judges = frozenset({"head_dim_qk", "head_dim_v", "head_dims", "same_head_dims", "alignment_bytes"})

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._thread: threading.Thread | None = None
            self._validator = None
            self._failure: str | None = None
            self._pending: str | None = None
            self._results: dict[tuple, ProbeVerdict] = {}
            self._planes: dict[tuple, tuple[int, ...]] = {}

    def check(self, query, ctx) -> ProbeVerdict:
        if sys.flags.optimize:
            return self.verdict(None, "python -O strips the validator's asserts, so it would accept anything")
        # FA4 passes the compute-capability major (arch // 10) and 16 bytes in elements.
        args = (query.head_dim_qk, query.head_dim_v, ctx.cc[0], 16 // ctx.elem_bytes)
        cached = self._results.get(args)
        if cached is not None:
            return cached
        validator = self._load()
        if validator is None:
            if self._failure is None and self._pending:  # still importing: ask again next time
                return self.verdict(None, self._pending, provisional=True)
            return self.verdict(None, self._failure or "validator unavailable")
        verdict = self._call(validator, args)
        self._results[args] = verdict
        return verdict

    def plane_rows(self, ctx, n: int) -> tuple[int, ...] | None:
        """The validator's verdict on the (qk, v) plane 1..n for ctx's arch and dtype, as bitmask rows
        (bit v of row qk set = accepted); None when the validator is unavailable. Cached."""
        if sys.flags.optimize:
            return None
        args = (ctx.cc[0], 16 // ctx.elem_bytes, n)
        if args not in self._planes:
            validator = self._load()
            if validator is None:
                return None
            self._planes[args] = self._plane(validator, *args)
        return self._planes[args]

    @staticmethod
    def _plane(validator, cc_major: int, alignment: int, n: int) -> tuple[int, ...]:
        rows = [0] * (n + 1)
        for qk in range(1, n + 1):
            for v in range(1, n + 1):
                try:
                    validator(qk, v, cc_major, alignment)
                except AssertionError:
                    continue
                rows[qk] |= 1 << v
        return tuple(rows)

    def status(self) -> str:
        if self.installed_version() is None:
            return f"{self.package} not installed: no opinion"
        if sys.flags.optimize:
            return "python -O strips the validator's asserts: no opinion"
        validator = self._load()
        return f"ready: {MODULE}.{FUNCTION} ({self.package} {self.installed_version()})" if validator else \
            f"unavailable: {self.unavailable_reason()}"

    def unavailable_reason(self) -> str:
        return self._failure or self._pending or ("python -O strips asserts" if sys.flags.optimize else "")

    def _call(self, validator, args) -> ProbeVerdict:
        qk, v, cc, alignment = args
        call = f"{FUNCTION}({qk}, {v}, {cc}, {alignment})"
        try:
            validator(*args)
        except AssertionError as exc:
            return self.verdict(False, f"{call}: {exc}".rstrip(": "))
        except Exception as exc:
            return self.verdict(None, f"{call} raised {type(exc).__name__}: {exc}")
        return self.verdict(True, f"{call} accepted")

    def _load(self):
        """The validator; the import runs once in the background and is waited for once.

        A failed import is remembered; a slow one gives no opinion until it finishes.
        """
        with self._lock:
            if self._validator is not None or self._failure is not None:
                return self._validator
            first = self._thread is None
            if first:
                self._thread = threading.Thread(target=self._import, name="attncap-fa4-import", daemon=True)
                self._thread.start()
            thread = self._thread
        timeout = float(os.environ.get(IMPORT_TIMEOUT_ENV, "60")) if first else 0.0
        thread.join(timeout)
        if thread.is_alive():
            self._pending = f"importing {MODULE} is still running (waited {timeout:g}s)"
            return None
        return self._validator

    def _set_failure(self, message: str) -> None:
        with self._lock:
            self._failure = message

    def _import(self) -> None:
        try:
            module = importlib.import_module(MODULE)
        except BaseException as exc:  # ImportError, a CUDA/triton failure, SystemExit from a plugin...
            self._set_failure(f"cannot import {MODULE}: {type(exc).__name__}: {exc}")
            return
        validator = getattr(module, FUNCTION, None)
        if validator is None:
            self._set_failure(f"{MODULE} has no {FUNCTION} (FA4 before 4.0.0b5, or renamed)")
            return
        try:
            params = tuple(inspect.signature(validator).parameters)
        except (TypeError, ValueError) as exc:
            self._set_failure(f"cannot read the signature of {FUNCTION}: {exc}")
            return
        if params != EXPECTED_PARAMETERS:
            self._set_failure(f"{FUNCTION}{params} changed; expected {EXPECTED_PARAMETERS}")
            return
        with self._lock:
            self._validator = validator

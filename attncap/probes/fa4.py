"""Probe FlashAttention-4's own head-dim validator, `flash_attn.cute.interface._validate_head_dims`.

The validator judges head dims and alignment only, per compute-capability major (9, 10, 11).
It fails with `assert`, so under `python -O` it accepts everything: then we give no opinion.

Importing FA4 takes seconds (and torch, ~2,000 modules), so a resolve never does it: the probe
answers when `flash_attn.cute.interface` is already imported (by the caller) or after
`attncap.probes.warm()` / ATTNCAP_PROBES=warm, and otherwise gives no opinion at once, saying
so. For the FA4 versions in CHECKED (tests/evidence/fa4_validator_history.json, checked by
tests/test_fa4_history.py) the packaged table already equals the validator, and the reason says
that too. warm() imports once, in a background thread; a failed import is remembered as "no
opinion" with its reason; when the import finishes the resolutions cached meanwhile are
forgotten (attncap.probes.probes_changed), so no answer given before sticks.

Faults an in-process import cannot survive (a segfault or abort in a native extension) are
bounded by a preflight: before the first in-process import of an installed FA4, a child
interpreter imports it; if the child dies, this process never imports it. A passing preflight
is remembered per installed copy (version, file, mtime) in the user cache directory, so it
costs one extra import once. warm() waits at most ATTNCAP_PROBE_TIMEOUT for all of it.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib
import importlib.machinery
import inspect
import os
import sys
import threading
import weakref
from pathlib import Path

from . import HOW_TO_WARM, Probe, ProbeVerdict, imported, probes_changed, remember, timeout_setting

MODULE = "flash_attn.cute.interface"
FUNCTION = "_validate_head_dims"
EXPECTED_PARAMETERS = ("head_dim", "head_dim_v", "compute_capability", "alignment")
PREFLIGHT_TIMEOUT = 600  # seconds a preflight import may take before it counts as hanging
# The flash-attn-4 versions whose validator the packaged table was checked against, point for point
# (tests/test_fa4_history.py over tests/evidence/fa4_validator_history.json; a test keeps the two equal).
CHECKED = frozenset({"4.0.0b3", "4.0.0b4", "4.0.0b5"} | {f"4.0.0b{n}" for n in range(7, 37)})
_instances: weakref.WeakSet = weakref.WeakSet()


class FA4HeadDimProbe(Probe):
    name = "fa4-head-dims"
    package = "flash-attn-4"
    judges = frozenset({"head_dim_qk", "head_dim_v", "head_dims", "same_head_dims", "alignment_bytes"})

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()
        _instances.add(self)

    def _after_fork_in_child(self) -> None:
        """fork() copied this state but not the import thread: never wait for it, nor import again here.

        The dead thread may hold the module's import lock, so a second import could hang forever.
        """
        self._lock = threading.Lock()
        if self._thread is not None and self._validator is None and self._failure is None:
            self._failure = f"the process forked while {MODULE} was importing: no opinion in the child"

    def reset(self) -> None:
        with self._lock:
            self._thread: threading.Thread | None = None  # the background import warm() started
            self._validator = None
            self._failure: str | None = None
            self._stale = False  # a "not ready" verdict was given: becoming ready must forget cached resolutions
            self._results: dict[tuple, ProbeVerdict] = {}
            self._planes: dict[tuple, tuple[int, ...]] = {}

    # ---- answering: never imports, never waits --------------------------------------------------

    def check(self, query, ctx) -> ProbeVerdict:
        if sys.flags.optimize:
            return self.verdict(None, "python -O strips the validator's asserts, so it would accept anything")
        # FA4 passes the compute-capability major (arch // 10) and 16 bytes in elements.
        args = (query.head_dim_qk, query.head_dim_v, ctx.cc[0], 16 // ctx.elem_bytes)
        cached = self._results.get(args)
        if cached is not None:
            return cached
        validator = self._validator or self._ready()
        if validator is None:
            return self.verdict(None, self.unavailable_reason())
        return remember(self._results, args, self._call(validator, args))

    def _ready(self):
        """The validator when it can be used now: warmed, or imported by the caller (adopted at once)."""
        self._current()
        if self._validator is None:
            # Set before reading the state again: either a settling import sees the flag (and forgets the
            # cached resolutions), or this reads the validator it stored.
            self._stale = True
        return self._validator

    def _current(self):
        """The validator, adopting a module the caller has imported meanwhile; imports nothing."""
        if self._validator is None and self._failure is None and self._thread is None:
            module = imported(MODULE)
            if module is not None:
                self._settle(*_inspect(module))
        return self._validator

    def plane_rows(self, ctx, n: int) -> tuple[int, ...] | None:
        """The validator's verdict on the (qk, v) plane 1..n for ctx's arch and dtype, as bitmask rows
        (bit v of row qk set = accepted); None when the validator is not ready (warm() it first). Cached."""
        if sys.flags.optimize:
            return None
        args = (ctx.cc[0], 16 // ctx.elem_bytes, n)
        if args not in self._planes:
            validator = self._current()
            if validator is None:
                return None
            remember(self._planes, args, self._plane(validator, *args), limit=64)
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
        if self._current() is not None:
            return f"ready: {MODULE}.{FUNCTION} ({self.package} {self.installed_version()})"
        return f"unavailable: {self.unavailable_reason()}"

    def unavailable_reason(self) -> str:
        """Why the validator does not answer (now); empty when it does."""
        if sys.flags.optimize:
            return "python -O strips asserts"
        if self._validator is not None:
            return ""
        if self._failure is not None:
            return self._failure
        if self._thread is not None:
            return f"importing {MODULE} is still running (in the background, started by warm()): " \
                   "the table answers until it finishes"
        return _not_imported(self.package, self.installed_version())

    def _call(self, validator, args) -> ProbeVerdict:
        qk, v, cc, alignment = args
        call = f"{FUNCTION}({qk}, {v}, {cc}, {alignment})"
        try:
            returned = validator(*args)
        except AssertionError as exc:
            return self.verdict(False, f"{call}: {exc}".rstrip(": "))
        except (Exception, SystemExit) as exc:  # not KeyboardInterrupt: that may be the user's Ctrl-C
            return self.verdict(None, f"{call} raised {type(exc).__name__}: {exc}")
        if returned is not None:  # FA4 rejects with assert and returns None: anything else is not its contract
            return self.verdict(None, f"{call} returned {returned!r}; expected None (accept) or an AssertionError")
        return self.verdict(True, f"{call} accepted")

    # ---- warming: the only place FA4 gets imported ----------------------------------------------

    def warm(self, *, block: bool = True, timeout: float | None = None) -> bool | None:
        """Import FA4's interface (preflight first) in a background thread, once; wait at most `timeout`
        seconds (default ATTNCAP_PROBE_TIMEOUT) when `block`. True ready, False unavailable, None importing."""
        if sys.flags.optimize or self.installed_version() is None:
            return False  # check() gives no opinion whatever is imported
        if self._current() is None and self._failure is None:
            with self._lock:
                if self._thread is None and self._validator is None and self._failure is None:
                    self._thread = threading.Thread(target=self._import, name="attncap-fa4-import", daemon=True)
                    self._thread.start()
                thread = self._thread
            if block and thread is not None:
                thread.join(timeout_setting() if timeout is None else timeout)
        return True if self._validator is not None else False if self._failure is not None else None

    def _settle(self, validator=None, failure: str | None = None) -> None:
        """The import's outcome, once; forget the cached resolutions when a "not ready" answer was given."""
        with self._lock:
            if self._validator is not None or self._failure is not None:
                return
            self._validator, self._failure = validator, failure
            stale = self._stale
        if stale:
            probes_changed()

    def _import(self) -> None:
        try:
            fault = _preflight()
            if fault:
                self._settle(failure=fault)
                return
            try:
                module = importlib.import_module(MODULE)
            except BaseException as exc:  # ImportError, a CUDA/triton failure, SystemExit from a plugin...
                self._settle(failure=f"cannot import {MODULE}: {type(exc).__name__}: {exc}")
                return
            self._settle(*_inspect(module))
        except BaseException as exc:  # anything else: no opinion, never a dead thread
            self._settle(failure=f"inspecting {MODULE} failed: {type(exc).__name__}: {exc}")


def _inspect(module) -> tuple:
    """(validator, None) when the module's FUNCTION is what the probe expects, else (None, the reason)."""
    try:
        validator = getattr(module, FUNCTION, None)
    except BaseException as exc:  # a lazy module's __getattr__
        return None, f"inspecting {MODULE} failed: {type(exc).__name__}: {exc}"
    if validator is None:
        return None, f"{MODULE} has no {FUNCTION} (FA4 before 4.0.0b5, or renamed)"
    if not callable(validator):
        return None, f"{MODULE}.{FUNCTION} is a {type(validator).__name__}, not a function"
    try:
        params = tuple(inspect.signature(validator).parameters)
    except Exception as exc:
        return None, f"cannot read the signature of {FUNCTION}: {type(exc).__name__}: {exc}"
    if params != EXPECTED_PARAMETERS:
        return None, f"{FUNCTION}{params} changed; expected {EXPECTED_PARAMETERS}"
    return validator, None


def _interface_file() -> Path | None:
    """Where `flash_attn/cute/interface.py` would be imported from, found without importing anything."""
    spec = importlib.machinery.PathFinder.find_spec(MODULE.split(".")[0], sys.path)
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root, *MODULE.split(".")[1:-1], MODULE.split(".")[-1] + ".py")
        if candidate.is_file():
            return candidate
    return None


PASSED_FILE = "fa4-preflight-passed"  # in the user cache directory: one key per line, the newest 32


def _passed_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attncap" / PASSED_FILE


def _preflight_key(file: Path) -> str:
    stat = file.stat()
    key = f"{sys.executable}|{file}|{stat.st_mtime_ns}|{stat.st_size}|{sys.version}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _passed() -> list[str]:
    try:
        return _passed_file().read_text(encoding="ascii").split()
    except (OSError, ValueError):
        return []


def _remember_passed(key: str) -> None:
    path = _passed_file()
    keys = [k for k in _passed() if k != key][-31:] + [key]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text("\n".join(keys) + "\n", encoding="ascii")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old list or the new one
    except OSError:
        pass  # an unwritable cache: the check just runs again in the next process


def _preflight() -> str | None:
    """Import MODULE in a child interpreter first; the reason not to import it here, or None."""
    if MODULE in sys.modules:
        return None  # imported already (by the caller): nothing left to guard
    try:
        file = _interface_file()
        key = _preflight_key(file) if file else None
    except (OSError, ValueError, ImportError):
        key = None
    if key is not None and key in _passed():
        return None
    import signal
    import subprocess
    code = f"import sys; sys.path[:] = {sys.path!r}; import {MODULE}"
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None  # cannot start a child: import in-process as before
    _children.add(proc)
    try:
        proc.wait(PREFLIGHT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        return f"importing {MODULE} hung for {PREFLIGHT_TIMEOUT}s in a check interpreter: not imported here"
    finally:
        _children.discard(proc)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else ""
        return f"importing {MODULE} killed a check interpreter (signal {-proc.returncode} {name}): not imported here"
    if proc.returncode == 0 and key is not None:
        _remember_passed(key)
    return None  # a Python-level failure shows up, with its message, in the in-process import


_children: set = set()  # preflight interpreters still running


@atexit.register
def _kill_children() -> None:
    """A preflight of an import that hangs must not outlive the process that started it."""
    for proc in list(_children):
        proc.kill()


def _after_fork_in_child() -> None:
    _children.clear()  # the parent's preflights: not the child's to kill at its exit
    for probe in list(_instances):
        probe._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


@functools.lru_cache(maxsize=64)  # asked on every resolve until warmed: one string (its hash kept) per version
def _not_imported(package: str, version: str | None) -> str:
    head = f"not asked: {MODULE} is not imported, and a resolve does not import it"
    if version in CHECKED:
        return (f"{head}; the packaged table already equals the validator of {package} {version} (checked "
                f"over head dims 1..576, known issues aside); to ask it anyway: {HOW_TO_WARM}")
    return (f"{head}; the table was not checked against the validator of {package} {version}: to ask it, "
            f"{HOW_TO_WARM}")

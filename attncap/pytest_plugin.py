"""pytest plugin (entry point pytest11): skip tests whose attention backend cannot run here.

    @pytest.mark.attention_backend("flash-attn-4", head_dim_qk=256, training=True)
    def test_fa4_hd256(attncap_decision): ...

The marker takes one backend id and any AttentionQuery fields. The test runs only when that
backend can run that query in the environment (detected, or --attncap-env); otherwise it is
skipped with attncap's reasons, never run on another backend. A marker `arch` is a
requirement on the environment's arch: one arch, a family ("blackwell"), a range
("sm100..sm121") or a list; without it the data decides where the test runs. Fixtures:
attncap_decision (the backend's Decision), attncap_env (the Environment markers are evaluated
in), attncap_assert_selected, attncap_expect_backend (fails unless that backend actually ran).
Options: --attncap-env arch=sm100,flash-attn-4=4.0.0b11,cudnn=9.10.2 (what-if: changes to the
installed environment; `pkg=` means not installed), --attncap-no-detect (the --attncap-env items
are the whole environment), --attncap-no-probes. Importing the plugin never imports torch or loads data;
with probes on, the first marked test warms them (attncap.probes.warm(): imports FA4 / torch once), so
markers are answered by the installed library's own checks.
"""

from __future__ import annotations

import os

from collections import Counter

import pytest

MARKER = "attention_backend"
_STATE = pytest.StashKey["_State"]()
_DECISION = pytest.StashKey[object]()


class _State:
    def __init__(self, env_text: str | None, probes: bool, detect: bool = True):
        self.env_text, self.probes, self.detect = env_text, probes, detect
        self._env = None
        self._warmed = False
        self.skips: Counter = Counter()  # skip reason (without the prefix) -> count

    def warm_probes(self) -> None:
        """Once per session, for a resolve with probes on: a test suite asks the installed libraries (a resolve
        alone never imports them)."""
        if not self._warmed:
            self._warmed = True
            from attncap import probes
            from attncap.settings import probes_mode
            if probes_mode(os.environ.get(probes.ENV_PROBES)) != "off":  # ATTNCAP_PROBES=0: resolve asks none
                probes.warm()

    def env(self):
        """The environment markers are evaluated in, built on first use."""
        if self._env is None:
            from attncap import Environment
            from attncap.testing import parse_env
            keys = {item.partition("=")[0].strip() for item in (self.env_text or "").split(",")}
            if not self.detect:  # a pure what-if, as Environment(...) and the CLI's --no-detect
                base = Environment()
            elif "arch" in keys:
                base = Environment.detect()
            else:  # the arch must come from the GPU: let detection import torch
                base = Environment.detect(device=True)
            self._env = parse_env(self.env_text, base) if self.env_text else base
        return self._env

    # Hooks, registered per config (the plugin object is this state).
    def pytest_runtest_logreport(self, report):
        """Count attncap skips by reason; runs on the controller under xdist too."""
        if report.skipped and isinstance(report.longrepr, tuple):
            from attncap.testing import SKIP_PREFIX
            message = str(report.longrepr[2]).removeprefix("Skipped: ")
            if message.startswith(SKIP_PREFIX):
                self.skips[message[len(SKIP_PREFIX):]] += 1

    def pytest_terminal_summary(self, terminalreporter):
        if not self.skips:
            return
        total = sum(self.skips.values())
        tr = terminalreporter
        tr.write_sep("-", "attncap")
        where = f" (--attncap-env {self.env_text})" if self.env_text else ""
        tr.write_line(f"attncap: {total} test{'s' if total != 1 else ''} skipped{where}:")
        for reason, count in sorted(self.skips.items(), key=lambda kv: (-kv[1], kv[0])):
            tr.write_line(f"  {reason} ({count})")


def pytest_addoption(parser):
    group = parser.getgroup("attncap", "attention backend capabilities (attncap)")
    group.addoption("--attncap-env", metavar="KEY=VALUE,...", default=None,
                    help="evaluate attention_backend markers in a what-if environment, e.g. "
                         "arch=sm100,flash-attn-4=4.0.0b11,cudnn=9.10.2 (PACKAGE= means not installed)")
    group.addoption("--attncap-no-detect", action="store_true", default=False,
                    help="--attncap-env is the whole environment (Environment(...)), not changes to the installed "
                         "one (Environment.detect().replace(...))")
    group.addoption("--attncap-no-probes", action="store_true", default=False,
                    help="answer attention_backend markers from the capability tables only")
    parser.addini("attncap_env", "default for --attncap-env", default=None)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARKER}(backend, **query): run only if attncap says `backend` can run the query "
                   "(AttentionQuery fields) here; otherwise skip with its reasons")
    text = config.getoption("attncap_env", None) or config.getini("attncap_env") or None
    state = _State(text, probes=not config.getoption("attncap_no_probes", False),
                   detect=not config.getoption("attncap_no_detect", False))
    if text:
        from attncap import Environment
        from attncap.testing import MarkerError, parse_env
        try:  # fail on a bad option at start-up, not in the first marked test
            parse_env(text, Environment())
        except MarkerError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = state
    config.pluginmanager.register(state, "attncap-state")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return
    from attncap.testing import SKIP_PREFIX, MarkerError, evaluate_marker
    state = item.config.stash[_STATE]
    if state.probes:
        state.warm_probes()
    first = None
    for mark in markers:  # closest first; every marker (function, class, module) must hold
        try:
            decision, reason = evaluate_marker(mark.args, mark.kwargs, state.env(), probes=state.probes)
        except MarkerError as exc:
            pytest.fail(f"@pytest.mark.{MARKER}{_signature(mark)}: {exc}", pytrace=False)
        if reason is not None:
            pytest.skip(SKIP_PREFIX + reason)
        first = first or decision
    item.stash[_DECISION] = first


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Point an attncap skip at the test (as skipif does), not at this plugin."""
    report = yield
    if report.skipped and type(report.longrepr) is tuple and item.get_closest_marker(MARKER) is not None:
        from attncap.testing import SKIP_PREFIX
        if str(report.longrepr[2]).removeprefix("Skipped: ").startswith(SKIP_PREFIX):
            filename, line = item.reportinfo()[:2]
            report.longrepr = (str(filename), (line or 0) + 1, report.longrepr[2])
    return report


def _signature(mark) -> str:
    parts = [repr(a) for a in mark.args] + [f"{k}={v!r}" for k, v in mark.kwargs.items()]
    return f"({', '.join(parts)})"


@pytest.fixture
def attncap_decision(request):
    """The Decision of the backend named by the test's attention_backend marker (closest marker)."""
    decision = request.node.stash.get(_DECISION, None)
    if decision is None:
        pytest.fail(f"attncap_decision needs @pytest.mark.{MARKER}(backend, ...) on the test", pytrace=False)
    return decision


@pytest.fixture
def attncap_env(request):
    """The Environment attention_backend markers are evaluated in (--attncap-env applied)."""
    return request.config.stash[_STATE].env()


@pytest.fixture
def attncap_assert_selected(request):
    """assert_selected(query, backend) in the session's environment (--attncap-env applied).

    A query without arch where no GPU is detected (a CPU runner) skips the test with the reason.
    """
    from attncap.testing import SKIP_PREFIX, assert_selected
    state = request.config.stash[_STATE]

    def check(query, backend, env=None, **resolve_kwargs):
        __tracebackhide__ = True
        resolve_kwargs.setdefault("probes", state.probes)
        if resolve_kwargs["probes"]:
            state.warm_probes()
        env = env if env is not None else state.env()
        arch = query.get("arch") if isinstance(query, dict) else getattr(query, "arch", None)
        if arch is None and env.arch is None:
            pytest.skip(f"{SKIP_PREFIX}{backend}: {env.no_arch_message()} here and the query names no arch "
                        "(pass arch=..., or --attncap-env arch=...)")
        return assert_selected(query, backend, env, **resolve_kwargs)
    return check


@pytest.fixture
def attncap_expect_backend(request):
    """`with attncap_expect_backend():` fails unless the marker's backend (or the one named) actually ran
    inside the block and no other recorded backend did (attncap.recording.expect_backend)."""
    from attncap.recording import expect_backend
    marker = request.node.get_closest_marker(MARKER)

    def expect(backend=None):
        if backend is None:
            if marker is None or not marker.args:
                pytest.fail(f"attncap_expect_backend() needs a backend or @pytest.mark.{MARKER}(backend, ...)",
                            pytrace=False)
            backend = marker.args[0]
        return expect_backend(backend)
    return expect

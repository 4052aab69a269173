"""A backend's head_dim_qk x head_dim_v planes, one per arch, each point with one outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import probes as probe_registry
from ..grid import HEAD_DIM_FIELDS, Plane, paint, regions
from ..rules import Ctx
from .backend import backend_archs, check_backend, plane_context

OUTCOMES = ("table", "probe", "probe_rejected", "known_issue", "unsupported")
# The outcomes an ArchPlane holds as planes; unsupported is what they leave.
PLANE_OUTCOMES = OUTCOMES[:-1]
LABELS = {
    "table": "supported",
    "probe": "supported by the probe",
    "probe_rejected": "rejected by the probe",
    "known_issue": "blocked by a known issue",
    "unsupported": "unsupported",
}
COLORS = {"table": "#2ca25f", "probe": "#3182bd", "probe_rejected": "#9e6ac8", "known_issue": "#e6550d",
          "unsupported": "#efefef"}
# A picture cell that holds points of several outcomes shows the first of these.
PRIORITY = ("known_issue", "probe_rejected", "probe", "table")
# The outcomes that stay empty unless the probe is consulted.
PROBE_OUTCOMES = ("probe", "probe_rejected")


def mode_name(training: bool) -> str:
    return "training" if training else "inference"


@dataclass
class ArchPlane:
    arch: str
    n: int
    planes: dict[str, Plane]  # every outcome but unsupported
    issues: dict[str, Plane]  # each known issue's part of the known_issue plane (they may overlap)
    probe_note: str | None = None

    @property
    def unsupported(self) -> Plane:
        out = Plane.full(self.n)
        for plane in self.planes.values():
            out = out - plane
        return out

    def plane(self, outcome: str) -> Plane:
        return self.unsupported if outcome == "unsupported" else self.planes[outcome]

    def outcome(self, qk: int, v: int) -> str:
        return next((o for o in PLANE_OUTCOMES if (qk, v) in self.planes[o]), "unsupported")

    def key(self) -> tuple:
        return (tuple(self.planes[o].rows for o in PLANE_OUTCOMES),
                tuple((i, p.rows) for i, p in self.issues.items()), self.probe_note)

    def issues_at(self, qk: int, v: int) -> list[str]:
        return [i for i, p in self.issues.items() if (qk, v) in p]


@dataclass
class Matrix:
    """One backend at one version, one dtype and one mode, over several archs."""

    backend: str
    package: str
    version: str
    version_source: str  # "installed" or "--version" / "docs"
    cudnn: str | None
    dtype: str
    training: bool
    n: int
    probe_note: str
    probe_consulted: bool
    archs: list[ArchPlane]
    issues: dict[str, tuple[str | None, str | None, str | None]] = field(default_factory=dict)  # id -> (reason, source, effect)
    fields: dict = field(default_factory=dict)  # other query fields every point shares (--seqlen-q, ...)
    conditional: list = field(default_factory=list)  # ConditionalIssue: known issues that need more fields

    @property
    def mode(self) -> str:
        return mode_name(self.training)

    def title(self) -> str:
        return f"{self.backend} · {self.dtype} · {self.mode}"

    def version_line(self) -> str:
        line = f"{self.package} {self.version} ({self.version_source})"
        if self.cudnn and self.package != "cudnn":
            line += f", cuDNN {self.cudnn}"
        return line

    def grouped(self) -> list[tuple[list[str], ArchPlane]]:
        """Archs with identical planes together, in arch order."""
        out: list[tuple[list[str], ArchPlane]] = []
        index: dict[tuple, int] = {}
        for a in self.archs:
            k = a.key()
            if k in index:
                out[index[k]][0].append(a.arch)
            else:
                index[k] = len(out)
                out.append(([a.arch], a))
        return out


def _consulted_probe(b, version: str, probes: bool):
    """(the backend's probe, or None when it is not consulted; a note that says why or why not)."""
    decl = b.probe
    if decl is None:
        return None, f"{b.id} declares no probe"
    if not probes:
        return None, f"probe {decl.name} not consulted (table only)"
    if decl.mode == "advisory":
        return None, f"probe {decl.name} is advisory: it never changes a verdict"
    probe = probe_registry.get(decl.name)
    installed = probe.installed_version() if probe else None
    if probe is None:
        return None, f"no probe named {decl.name!r} is installed"
    if not hasattr(probe, "plane_rows"):
        return None, f"probe {decl.name} cannot evaluate a whole plane"
    if installed != version:
        return None, (f"probe {decl.name} speaks only for the installed {b.package} "
                      f"{installed or '(not installed)'}, not {version}")
    probe_registry.warm([decl.name])  # a matrix with probes on asks the installed library: import it now
    return probe, f"probe {decl.name} ({decl.mode}) consulted against the installed {b.package} {version}"


class _ProbeSource:
    """The installed library's probe as planes, when it is consulted; `note` says why or why not."""

    def __init__(self, b, version: str, probes: bool, n: int):
        self.decl, self.n = b.probe, n
        self.probe, self.note = _consulted_probe(b, version, probes)
        self.judged = probe_registry.judged_fields(self.decl.name) if self.probe else frozenset()

    def plane(self, ctx: Ctx) -> tuple[Plane | None, str | None]:
        if self.probe is None:
            return None, None
        if self.decl.archs and ctx.arch not in self.decl.archs:
            return None, f"outside the probe's archs ({', '.join(self.decl.archs)})"
        rows = self.probe.plane_rows(ctx, self.n)  # the probe maps ctx to its own arguments and caches
        if rows is None:
            return None, f"probe unavailable: {self.probe.unavailable_reason()}"
        return Plane(self.n, rows), None


def _core(b, bf, template, ctx, judged, n) -> Plane:
    """Where the support rules hold on everything the probe does not judge."""
    cleared = {f: None for f in judged & HEAD_DIM_FIELDS}
    out = Plane.empty(n)
    for rule, model in zip(b.support, bf.support):
        if rule.matches(template, ctx, HEAD_DIM_FIELDS | judged):
            out = out | paint(model.model_copy(update=cleared), ctx.elem_bytes, n)
    return out


def arch_plane(registry, backend: str, arch: str, dtype: str, version: str, *, cudnn: str | None = None,
               training: bool = False, n: int = 576, probe: _ProbeSource | None = None,
               fields: dict | None = None) -> ArchPlane:
    b, bf = registry.compiled[backend], registry.backends[backend]
    template, ctx = plane_context(registry, backend, arch, dtype, version, cudnn, training, fields)
    r = regions(b, bf, template, ctx, n)
    probe_plane, note = probe.plane(ctx) if probe else (None, None)
    effective = r.support
    if probe_plane is not None:
        if probe.decl.mode == "override":
            effective = probe_plane & _core(b, bf, template, ctx, probe.judged, n)
        else:  # restrict: the probe can only take away
            effective = r.support & probe_plane
    blocked = r.blocked
    wanted = (r.support | effective) & r.features
    planes = {
        "table": (r.support & effective & r.features) - blocked,
        "probe": ((effective - r.support) & r.features) - blocked,
        "probe_rejected": ((r.support - effective) & r.features) - blocked,
        "known_issue": wanted & blocked,
    }
    issues = {i: planes["known_issue"] & region for i, region in r.issues.items()}
    return ArchPlane(arch, n, planes, {i: p for i, p in issues.items() if p.count()}, note)


def build_matrix(registry, backend: str, version: str, dtype: str, *, archs=None, training=False, cudnn=None,
                 n: int = 576, probes: bool = False, version_source: str = "--version", fields=None) -> Matrix:
    check_backend(registry, backend)
    b = registry.compiled[backend]
    if b.package == "cudnn":
        cudnn = version
    source = _ProbeSource(b, version, probes, n)
    archs = archs or backend_archs(registry, backend)
    rows = [arch_plane(registry, backend, a, dtype, version, cudnn=cudnn, training=training, n=n, probe=source,
                       fields=fields) for a in archs]
    issues = {k.id: (k.reason, k.source, k.effect) for k in registry.backends[backend].known_issues}
    from .conditional import conditional_issues
    conditional = [i for a in archs
                   for i in conditional_issues(registry, backend, a, dtype, version, cudnn, training, n, fields)]
    return Matrix(backend, b.package, version, version_source, cudnn, dtype, training, n, source.note,
                  source.probe is not None, rows, issues, dict(fields or {}), conditional)

"""The smallest change that makes a rejected query run on a backend, when the data knows one.

Candidates, smallest first: one feature fewer (dropout, softcap, ...), the other causal alignment,
then another version of the backend's package, then another cuDNN (with or without another
version). Each candidate is re-evaluated by the table, known issues included; probes are not
asked (they speak for the installed version and this GPU only). Versions tried are the lower
bounds the backend's own specifiers name, so a hint never names a version the data has not seen.
"""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .rules import Reason

# (query field, value without the feature, what the query then does)
_DROPS = (
    ("dropout", 0.0, "without dropout"),
    ("softcap", 0.0, "without softcap"),
    ("window", None, "without a sliding window"),
    ("bias", "none", "without a bias"),
    ("sinks", False, "without attention sinks"),
    ("page_size", None, "without a paged KV cache"),
    ("deterministic", False, "without deterministic backward"),
    ("pad_between_seqs", False, "without padding between sequences"),
)
_OTHER_ALIGNMENT = {"causal": "causal_bottom_right", "causal_bottom_right": "causal"}


def smallest_changes(b, q, c, *, versions: bool = True) -> list[Reason]:
    """Reasons naming the changes that make `b` run `q` under `c`; [] when the data knows none.

    `versions=False` when the caller already named a version that works (an install hint).
    """
    from .resolver import evaluate
    found = []
    for field, value, what in _changes_of_query(q):
        d = evaluate(b, q.replace(**{field: value}), c, None, False)
        if d.supported:
            found.append(Reason("change", f"{b.id} runs this {what} (rule {d.rule})", d.rule, None, field,
                                value, getattr(q, field)))
    return found + (version_change(b, q, c) if versions else [])


def _changes_of_query(q):
    for field, value, what in _DROPS:
        if getattr(q, field) != value:
            yield field, value, what
    other = _OTHER_ALIGNMENT.get(q.mask)
    if other is not None and q.cross_attention:  # with equal lengths both are the same mask
        yield "mask", other, f"with mask={other}"


def version_change(b, q, c) -> list[Reason]:
    """Another version of the package, else another cuDNN (with the same or another version); also for a
    package that is not installed (c.version None)."""
    from .resolver import evaluate

    def works(version, cudnn):
        return evaluate(b, q, c._replace(version=version, cudnn=cudnn, absent=()), None, False)
    if not any(r.matches(q, c, _VERSION_FIELDS) for r in b.support):
        return []  # no support rule holds at any version: trying each version cannot help
    versions = _candidates([r.versions for r in _rules(b)], c.version)
    for version, spec in versions:
        d = works(version, c.cudnn)
        if d.supported:
            return [_install(b, spec, None, d)]
    if b.package != "cudnn":
        current = [(c.version, None)] if c.version is not None else []
        for cudnn, cudnn_spec in _candidates([r.cudnn for r in _rules(b)], c.cudnn):
            for version, spec in current + versions:
                d = works(version, cudnn)
                if d.supported:
                    return [_install(b, spec, cudnn_spec, d)]
    return []


_VERSION_FIELDS = frozenset({"versions", "cudnn"})


def _install(b, spec: str | None, cudnn_spec: str | None, d) -> Reason:
    """`spec` None: the installed version will do (only cuDNN changes)."""
    with_cudnn = f" with cuDNN {cudnn_spec.strip()}" if cudnn_spec else ""
    if spec is None:
        return Reason("change", f"{b.package} as installed{with_cudnn} supports this (rule {d.rule})", d.rule,
                      None, "cudnn", cudnn_spec, None)
    spec = ("==" + spec[1:] if spec.startswith(" ") else spec) + _upper_bound(b, d.rule)
    command = b.install.replace("{specifier}", spec)
    return Reason("install", f"{b.package}{spec}{with_cudnn} supports this (rule {d.rule}): {command}", d.rule,
                  None, "versions", command, None)


def _rules(b):
    return (*b.support, *(r for rules in b.features.values() for r in rules), *b.known_issues)


# A specifier's version X, as a candidate: which version to try, and how to show it.
_CANDIDATE = {">=": (False, ">="), "==": (False, " "), "~=": (False, "~="), ">": (True, ">"),
              "<": (False, ">="), "<=": (True, ">"), "!=": (False, " ")}  # " ": exactly that version


def _candidates(specifiers, current: str | None) -> list[tuple[str, str]]:
    """(a version, its specifier as shown) for every boundary the specifiers name (a known issue's
    `<X` is where it is fixed) newer than `current`, ascending: the nearest upgrade first, never a
    downgrade (an older release is no fix for a newer one). `>X` and `<=X` try X with its last number one higher."""
    found = {}
    for text in filter(None, specifiers):
        try:
            for spec in SpecifierSet(text):
                if spec.operator not in _CANDIDATE or spec.version.endswith(".*"):
                    continue
                bump, shown = _CANDIDATE[spec.operator]
                version = Version(spec.version)
                if bump:
                    version = Version(".".join(map(str, (*version.release[:-1], version.release[-1] + 1))))
                found.setdefault(version, (str(version), shown + spec.version))
        except (InvalidSpecifier, InvalidVersion):
            continue
    try:
        now = Version(current) if current is not None else None
    except InvalidVersion:
        now = None
    return [found[v] for v in sorted(v for v in found if now is None or v > now)]  # never a downgrade


def _upper_bound(b, rule_id: str | None) -> str:
    """The `<X` parts of the deciding support rule's specifier: the data's checked span."""
    rule = next((r for r in b.support if r.id == rule_id), None)
    if rule is None or not rule.versions:
        return ""
    try:
        uppers = [str(s) for s in SpecifierSet(rule.versions) if s.operator in ("<", "<=")]
    except InvalidSpecifier:
        return ""
    return "".join(f",{u}" for u in sorted(uppers))

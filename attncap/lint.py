"""Semantic checks on the data, beyond what the models check. Each check is a small named
function; `document` checks see one file, `registry` checks see the merged data.

Severity: errors fail `attncap validate` and loading; warnings fail only `validate --strict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from .models import ArchsFile, BackendFile, Conditions, DtypesFile, IntRange, KnownIssue, Model, PolicyFile, Rule
from .rules import version_matches
from .yamlsource import Document, Problem

DOCUMENT_CHECKS: dict[str, Callable] = {}
REGISTRY_CHECKS: dict[str, Callable] = {}
WARNING_ONLY: set[str] = set()  # checks that never report errors: loading skips them, validate runs them
SCHEMA_LINE = "# yaml-language-server: $schema="


def _registrar(table: dict[str, Callable]):
    def check(name: str, *, warns_only: bool = False):
        def register(fn):
            table[name] = fn
            if warns_only:
                WARNING_ONLY.add(name)
            return fn
        return register
    return check


document_check = _registrar(DOCUMENT_CHECKS)  # a check of one file (doc, model)
registry_check = _registrar(REGISTRY_CHECKS)  # a check of the merged data (registry)


def check_document(doc: Document, model: Model, *, warnings: bool = True) -> list[Problem]:
    return [p for name, fn in DOCUMENT_CHECKS.items() if warnings or name not in WARNING_ONLY
            for p in _named(name, fn(doc, model))]


def check_registry(registry, *, warnings: bool = True) -> list[Problem]:
    return [p for name, fn in REGISTRY_CHECKS.items() if warnings or name not in WARNING_ONLY
            for p in _named(name, fn(registry))]


def _named(name: str, problems) -> Iterator[Problem]:
    for p in problems:
        if name in WARNING_ONLY and p.severity == "error":  # loading skips it, so it must never fail
            raise AssertionError(f"lint check {name!r} is declared warns_only but reported an error")
        yield Problem(p.file, p.line, p.column, p.field, p.message, p.severity, name)


# ---- one file --------------------------------------------------------------------------

@document_check("file-name")
def file_name(doc: Document, model: Model):
    if isinstance(model, BackendFile):
        expected = Path(doc.file).stem.replace("_", "-")
        if model.backend != expected:
            yield doc.problem(("backend",), f"backend {model.backend!r} must match the file name "
                                            f"(expected {expected!r} for {Path(doc.file).name})")


@document_check("duplicate-id")
def duplicate_ids(doc: Document, model: Model):
    if not isinstance(model, BackendFile):
        return
    sections = [(("support",), model.support), (("known_issues",), model.known_issues)]
    sections += [(("features", name), rules) for name, rules in model.features.items()]
    for path, rules in sections:
        seen: dict[str, int] = {}
        for i, rule in enumerate(rules):
            if rule.id in seen:
                yield doc.problem(path + (i, "id"), f"duplicate id {rule.id!r} (first at index {seen[rule.id]})")
            seen.setdefault(rule.id, i)


@document_check("duplicate-entry")
def duplicate_entries(doc: Document, model: Model):
    """A name listed twice: in a vocabulary the later entry silently replaces the earlier one."""
    if isinstance(model, PolicyFile):
        lists = [(("default",), model.default)]
        lists += [(("families", f, "order"), p.order) for f, p in model.families.items()]
    elif isinstance(model, (ArchsFile, DtypesFile)):
        key = "archs" if isinstance(model, ArchsFile) else "dtypes"
        lists = [((key,), [entry.name for entry in getattr(model, key)])]
    else:
        return
    for path, names in lists:
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in first:
                yield doc.problem(path + (i,), f"{name!r} is listed twice (first at index {first[name]})")
            first.setdefault(name, i)


@document_check("schema-line", warns_only=True)
def schema_line(doc: Document, model: Model):
    if not doc.first_line.startswith(SCHEMA_LINE):  # the text parsed: the file is read once
        yield Problem(doc.file, 1, 1, "", f"first line should be '{SCHEMA_LINE}...' so editors validate the file",
                      severity="warning")


# ---- the merged data -------------------------------------------------------------------

def _rules(registry) -> Iterator[tuple[str, str, Rule | KnownIssue, object]]:
    """(backend, section, rule, location) for every rule of every backend."""
    for name, backend in registry.backends.items():
        sections = [("support", backend.support), ("known_issues", backend.known_issues)]
        sections += [(f"features.{f}", rules) for f, rules in backend.features.items()]
        for section, rules in sections:
            for rule in rules:
                yield name, section, rule, registry.origin(name, section, rule.id)


def _conditions(rule) -> Conditions:
    return rule.when if isinstance(rule, KnownIssue) else rule


def _where(rule) -> tuple:
    return ("when",) if isinstance(rule, KnownIssue) else ()


@registry_check("unknown-name")
def unknown_names(registry):
    vocab = registry.vocabulary
    for backend, section, rule, loc in _rules(registry):
        cond, at = _conditions(rule), _where(rule)
        if cond.arch is not None:
            for name in vocab.expand_archs(cond.arch)[1]:
                canonical = vocab.arch_name(name)
                message = (f"arch {name!r} is an alias; rules use the canonical name: use {canonical}" if canonical
                           else f"unknown arch {name!r}; known: {', '.join(vocab.archs)}")
                yield loc.problem(message, sub=at + ("arch",))
        for name in cond.dtype or ():
            if name not in vocab.dtypes:
                yield loc.problem(f"unknown dtype {name!r}; known: {', '.join(vocab.dtypes)}", sub=at + ("dtype",))
    for name, backend in registry.backends.items():
        for arch in (backend.probe.archs or []) if backend.probe else []:
            if arch not in vocab.archs:
                yield registry.origin(name, "probe").problem(f"unknown arch {arch!r} in the probe's domain",
                                                             sub=("archs",))
    families = vocab.families()
    for family, policy in registry.policy.families.items():
        loc = registry.origin("policy", family)
        if family not in families:
            yield loc.problem(f"unknown arch family {family!r}; known: {', '.join(families)}")
        for b in policy.order:
            if b not in registry.backends:
                yield loc.problem(f"unknown backend {b!r}", sub=("order",))
    for b in registry.policy.default:
        if b not in registry.backends:
            yield registry.origin("policy", "default").problem(f"unknown backend {b!r}")


@registry_check("vocabulary-collision")
def vocabulary_collisions(registry):
    """A name, alias or compute capability that two archs (or dtypes) claim: one would silently win."""
    vocab = registry.vocabulary
    tables = [("arch", [(a.name, (a.name, a.compute_capability, *a.aliases, *a.renamed_from))
                        for a in vocab.archs.values()]),
              ("dtype", [(d.name, (d.name, *d.aliases)) for d in vocab.dtypes.values()])]
    for kind, entries in tables:
        owner: dict[str, str] = {}
        for name, spellings in entries:
            for spelling in dict.fromkeys(s.lower() for s in spellings):
                other = owner.setdefault(spelling, name)
                if other != name:
                    loc = registry.origin(kind, name)
                    yield loc.problem(f"{kind} {name!r} claims {spelling!r}, which already names {kind} {other!r}"
                                      + (f" ({registry.origin(kind, other)})" if registry.origin(kind, other) else ""))


@registry_check("missing-source")
def missing_source(registry):
    for backend, section, rule, loc in _rules(registry):
        if not rule.source:
            yield loc.problem(f"rule {rule.id!r} has no source: say where this fact comes from", sub=("id",))
        if isinstance(rule, KnownIssue):
            for key, what in (("reason", "a reason in plain words"), ("versions", "the versions it affects")):
                if not (getattr(rule, key) or "").strip():  # "" would match every version, without a word
                    yield loc.problem(f"known issue {rule.id!r} needs {what} ({key})", sub=("id",))


def candidate_versions(*specifiers: str | None) -> list[str]:
    """Versions around every bound the specifiers mention: enough to decide satisfiability."""
    out = ["0", "999999"]
    for spec in filter(None, specifiers):
        for clause in SpecifierSet(spec):
            text = clause.version.rstrip(".*")
            try:
                v = Version(text)
            except InvalidVersion:
                continue
            release = ".".join(map(str, v.release))
            out += [str(v), f"{v.public}.post1", f"{release}.1", f"{v.public}.dev0" if not v.dev else str(v)]
    return out


def satisfiable(*specifiers: str | None) -> bool:
    specs = [s for s in specifiers if s]
    return any(all(version_matches(s, v) for s in specs) for v in candidate_versions(*specs))


@registry_check("version-specifier")
def unsatisfiable_versions(registry):
    for backend, section, rule, loc in _rules(registry):
        cond = _conditions(rule)
        for key, spec in (("versions", rule.versions), ("cudnn", cond.cudnn),
                          ("transformer_engine", cond.transformer_engine)):
            if spec and not satisfiable(spec):
                sub = (key,) if key == "versions" or not isinstance(rule, KnownIssue) else ("when", key)
                yield loc.problem(f"{spec!r} matches no version", sub=sub)


def _empty_range(r: IntRange) -> str | None:
    for name, res in (("residue", r.residue), ("not_residue", r.not_residue)):
        if res is not None and res.equals >= res.modulo:
            return f"{name}: no value % {res.modulo} equals {res.equals}"
    if r.residue and r.not_residue and r.residue == r.not_residue:
        return "residue and not_residue are the same: nothing satisfies both"
    if r.residue and r.multiple_of and r.residue.modulo % r.multiple_of == 0 and r.residue.equals % r.multiple_of:
        return f"a multiple of {r.multiple_of} never has % {r.residue.modulo} == {r.residue.equals}"
    if r.min is not None and r.max is not None:
        if r.min > r.max:
            return f"min {r.min} > max {r.max}"
        if r.multiple_of and -(-r.min // r.multiple_of) * r.multiple_of > r.max:  # the first multiple >= min: O(1)
            return f"no multiple of {r.multiple_of} lies in {r.min}..{r.max}"
    return None


RANGE_FIELDS = ("head_dim_qk", "head_dim_v", "seqlen_q", "seqlen_kv", "num_heads_q", "num_heads_kv", "page_size",
                "num_splits")
LIST_FIELDS = ("arch", "dtype", "head_dims", "mask", "layout", "bias", "context_parallel", "packing", "fp8_recipe")


# Which orderings of (a, b) each relation allows: "<", "=", ">".
_ORDERINGS = {"<": "<", "<=": "<=", "==": "=", "!=": "<>", ">=": "=>", ">": ">"}


def contradictory_relations(relations: list[str]) -> str | None:
    """Why no query satisfies all `relations` together (per pair of fields), else None."""
    allowed: dict = {}
    for relation in relations:
        a, op, b = relation.split(" ")
        ways = set(_ORDERINGS[op])
        if a == b:
            if "=" not in ways:
                return f"{relation!r} can never hold"
            continue
        if a > b:  # one orientation per pair
            a, b, ways = b, a, {{"<": ">", ">": "<"}.get(w, w) for w in ways}
        allowed[(a, b)] = allowed.get((a, b), set("<=>")) & ways
        if not allowed[(a, b)]:
            return f"the relations on {a} and {b} contradict each other"
    return None


@registry_check("contradictory-relations")
def relations_that_cannot_hold(registry):
    for backend, section, rule, loc in _rules(registry):
        cond, at = _conditions(rule), _where(rule)
        why = contradictory_relations(cond.relations) if cond.relations else None
        if why:
            yield loc.problem(why, sub=at + ("relations",))


@registry_check("empty-range")
def empty_ranges(registry):
    vocab = registry.vocabulary
    for backend, section, rule, loc in _rules(registry):
        cond, at = _conditions(rule), _where(rule)
        for key in RANGE_FIELDS:
            r = getattr(cond, key)
            why = _empty_range(r) if r is not None else None
            if why:
                yield loc.problem(f"empty range: {why}", sub=at + (key,))
        for key in LIST_FIELDS:
            if getattr(cond, key) == []:
                yield loc.problem("empty list: the rule can never match", sub=at + (key,))
        if cond.arch is not None and not isinstance(cond.arch, list) and not vocab.expand_archs(cond.arch)[0]:
            yield loc.problem("the arch range covers no known arch", sub=at + ("arch",))
        if isinstance(rule, Rule) and not rule.passes:
            yield loc.problem("empty list: the rule covers no pass", sub=("passes",))


def _in_range(r: IntRange | None, v: int) -> bool:
    return r is None or ((r.min is None or v >= r.min) and (r.max is None or v <= r.max)
                         and (r.multiple_of is None or v % r.multiple_of == 0)
                         and (r.residue is None or v % r.residue.modulo == r.residue.equals)
                         and (r.not_residue is None or v % r.not_residue.modulo != r.not_residue.equals))


def _contains_range(outer: IntRange, inner: IntRange | None, values: list[int] | None) -> bool:
    """Does `outer` hold every value `inner` (or the explicit `values`) can take?"""
    if values is not None:
        return all(_in_range(outer, v) for v in values)
    if inner is None:
        return False
    if (outer.residue or outer.not_residue) and (inner.residue, inner.not_residue) != (outer.residue,
                                                                                       outer.not_residue):
        return False  # residues: only the same ones are known to be covered
    return ((outer.min is None or (inner.min is not None and inner.min >= outer.min))
            and (outer.max is None or (inner.max is not None and inner.max <= outer.max))
            and (outer.multiple_of is None or (inner.multiple_of or 0) % outer.multiple_of == 0
                 and inner.multiple_of is not None))


def covers(b: Rule, a: Rule, vocab) -> bool:
    """True when every query rule `a` accepts is accepted by rule `b` too (conservative)."""
    for key in Conditions.model_fields:
        want = getattr(b, key)
        have = getattr(a, key)
        if want is None:
            continue
        if key == "arch":
            ok = have is not None and vocab.expand_archs(have)[0] <= vocab.expand_archs(want)[0]
        elif key in ("head_dim_qk", "head_dim_v"):
            pairs = [p[0 if key == "head_dim_qk" else 1] for p in a.head_dims] if a.head_dims else None
            ok = _contains_range(want, have, pairs)
        elif key in RANGE_FIELDS:
            ok = _contains_range(want, have, None)
        elif key == "head_dims":
            ok = have is not None and {tuple(p) for p in have} <= {tuple(p) for p in want}
        elif key in LIST_FIELDS:
            ok = have is not None and set(have) <= set(want)
        elif key == "alignment_bytes":
            ok = have is not None and have % want == 0
        else:
            ok = have == want
        if not ok:
            return False
    return set(a.passes) <= set(b.passes)


# Candidate pairs per backend (~1-5 us each) before the check gives up, saying so: a fixed allowance
# plus 64 per rule (rules that share an arch, dtype and head-dim pair with few others stay well inside).
SHADOW_COMPARISONS, SHADOW_COMPARISONS_PER_RULE = 200_000, 64


def _cover_keys(rule: Rule, vocab) -> tuple:
    """The values covers() requires a covering rule to hold (None: any value; a covering rule needs None)."""
    return (None if rule.arch is None else vocab.expand_archs(rule.arch)[0],
            None if rule.dtype is None else frozenset(rule.dtype),
            None if rule.head_dims is None else frozenset(map(tuple, rule.head_dims)),
            frozenset(rule.passes))


class _CoverIndex:
    """Per key (arch, dtype, head-dim pairs, passes): which rules hold each value, and which hold any.

    A rule can cover `a` only if, on every key, it holds any value or every value of `a`; so the
    rules holding the rarest value of `a` (or any value) are the only candidates: a rule is compared
    with the rules that share its arch, dtype and pairs, not with every rule.
    """

    def __init__(self, keys: list[tuple]):
        self.keys = keys
        self.holders = [dict() for _ in keys[0]] if keys else []
        self.wild = [set() for _ in keys[0]] if keys else []
        for j, rule_keys in enumerate(keys):
            for k, values in enumerate(rule_keys):
                if values is None:
                    self.wild[k].add(j)
                else:
                    for v in values:
                        self.holders[k].setdefault(v, set()).add(j)

    def pool(self, i: int):
        """The indices of the rules that may cover rule i (a superset of covers(), rule i included)."""
        best, size = None, len(self.keys)
        for k, values in enumerate(self.keys[i]):
            if values is None:
                pools = (self.wild[k],)
            elif not values:
                continue  # an empty list: anything holds it
            else:
                pools = (min((self.holders[k][v] for v in values), key=len), self.wild[k])
            if sum(map(len, pools)) < size:
                best, size = pools, sum(map(len, pools))
        return range(len(self.keys)) if best is None else set().union(*best)  # copies the smallest pool only

    def may_cover(self, j: int, i: int) -> bool:
        return all(theirs is None or (mine is not None and mine <= theirs)
                   for mine, theirs in zip(self.keys[i], self.keys[j]))


@registry_check("shadowed-rule", warns_only=True)
def shadowed_rules(registry):
    """Bounded: the index makes this O(rules x rules sharing an arch, dtype and pairs), and at most
    SHADOW_COMPARISONS + SHADOW_COMPARISONS_PER_RULE x rules candidate pairs per backend are looked at;
    past that a warning says which rules were not checked (e.g. 10,000 rules on one arch and dtype told
    apart by head-dim ranges only)."""
    vocab = registry.vocabulary
    for name, backend in registry.backends.items():
        rules = backend.support
        index = _CoverIndex([_cover_keys(r, vocab) for r in rules])
        budget = limit = SHADOW_COMPARISONS + SHADOW_COMPARISONS_PER_RULE * len(rules)
        for i, a in enumerate(rules):
            other = None
            pool = index.pool(i)
            budget -= len(pool)
            for j in sorted(pool) if budget >= 0 else ():
                b = rules[j]
                if j != i and index.may_cover(j, i) and covers(b, a, vocab) and not (j > i and covers(a, b, vocab)):
                    other = b
                    break
            if other is not None:
                yield registry.origin(name, "support", a.id).problem(
                    f"rule {a.id!r} is entirely covered by rule {other.id!r}: it can never decide anything",
                    sub=("id",), severity="warning")
            if budget < 0:
                yield registry.origin(name, "support", a.id).problem(
                    f"shadowed-rule: not checked from rule {a.id!r} on ({len(rules) - i} rules): more than "
                    f"{limit} candidate pairs among rules sharing an arch, dtype and head dims",
                    sub=("id",), severity="warning")
                break


def _overlap_range(x: IntRange, y: IntRange) -> bool:
    lo = max(v for v in (x.min, y.min, 0) if v is not None)
    hi = min(v for v in (x.max, y.max, 10**9) if v is not None)
    return lo <= hi


def intersects(rule: Rule, issue: KnownIssue, vocab) -> bool:
    """Could some query match both the support rule and the known issue? (conservative: yes if unsure)"""
    when = issue.when
    for key in Conditions.model_fields:
        x, y = getattr(rule, key), getattr(when, key)
        if x is None or y is None:
            continue
        if key == "arch":
            ok = bool(vocab.expand_archs(x)[0] & vocab.expand_archs(y)[0])
        elif key in RANGE_FIELDS:
            ok = _overlap_range(x, y)
        elif key == "head_dims":
            ok = bool({tuple(p) for p in x} & {tuple(p) for p in y})
        elif key in LIST_FIELDS:
            ok = bool(set(x) & set(y))
        elif key in ("versions", "cudnn", "transformer_engine", "alignment_bytes", "relations"):
            ok = True
        else:
            ok = x == y
        if not ok:
            return False
    for pairs, other in ((rule.head_dims, when), (when.head_dims, rule)):
        if pairs and not any(_in_range(other.head_dim_qk, a) and _in_range(other.head_dim_v, b) for a, b in pairs):
            return False
    if when.training and "backward" not in rule.passes:
        return False
    return satisfiable(rule.versions, issue.versions)


@registry_check("dead-known-issue", warns_only=True)
def dead_known_issues(registry):
    vocab = registry.vocabulary
    for name, backend in registry.backends.items():
        for issue in backend.known_issues:
            if not any(intersects(rule, issue, vocab) for rule in backend.support):
                yield registry.origin(name, "known_issues", issue.id).problem(
                    f"known issue {issue.id!r} can never match a supported query (no support rule overlaps it)",
                    sub=("id",), severity="warning")


@registry_check("install-template", warns_only=True)
def install_template(registry):
    for name, backend in registry.backends.items():
        if backend.install and "{specifier}" not in backend.install:
            yield registry.origin(name, "install").problem(
                "the install command has no {specifier}: hints could not name the version that is needed",
                severity="warning")


@registry_check("unknown-probe", warns_only=True)
def unknown_probe(registry):
    from . import probes
    for name, backend in registry.backends.items():
        if backend.probe and backend.probe.name not in probes.names():
            yield registry.origin(name, "probe").problem(
                f"no probe named {backend.probe.name!r} is installed; known: {', '.join(probes.names())}",
                sub=("name",), severity="warning")


@registry_check("checked-spans")
def checked_spans(registry):
    """A span names a package the backend's rules read; the backend's own package should have one."""
    for name, backend in registry.backends.items():
        readable = {backend.package, *backend.requires, "cudnn", "torch"}
        for package in backend.checked:
            if package not in readable:
                yield registry.origin(name, "checked", package).problem(
                    f"{name} reads no versions of {package!r}; a span may name {', '.join(sorted(readable))}")
        if backend.package not in backend.checked and registry.origin(name, "package") is not None:
            yield registry.origin(name, "package").problem(
                f"no checked span for {backend.package}: answers cannot say which of its releases were checked "
                "(add checked: {" + f"{backend.package}" + ": {first, last, evidence}})", severity="warning")


@registry_check("profiles")
def profile_backends(registry):
    for profile_name, profile in registry.profiles.items():
        where = registry.origin("profile", profile_name)
        named = [*profile.accepts, *(b for f in profile.families.values() for b in f.order)]
        for backend in dict.fromkeys(named):
            if backend not in registry.backends:
                yield where.problem(f"profile {profile_name} names unknown backend {backend!r}; known: "
                                    f"{', '.join(sorted(registry.backends))}")
        for family in profile.families:
            if family not in registry.vocabulary.families():
                yield where.problem(f"profile {profile_name} names unknown arch family {family!r}")



@registry_check("beyond-span", warns_only=True)
def beyond_span(registry):
    """A bound newer than the checked span's last release never takes effect: versions past `last` are
    evaluated as `last` (docs/format.md, "Checked spans and outcomes"). Extend `checked` with the release."""
    for name, section, rule, loc in _rules(registry):
        backend, cond = registry.backends[name], _conditions(rule)
        for key, package in (("versions", backend.package), ("cudnn", "cudnn")):
            spec, span = getattr(rule, key, None) or getattr(cond, key, None), backend.checked.get(package)
            if not spec or span is None:
                continue
            last = Version(span.last)
            beyond = [s.version for s in SpecifierSet(spec) if "*" not in s.version and Version(s.version) > last]
            if beyond:
                yield loc.problem(f"{key} {spec!r} names {', '.join(beyond)}, newer than the last checked "
                                  f"{package} {span.last}: it never takes effect; extend checked.{package}",
                                  sub=("id",), severity="warning")

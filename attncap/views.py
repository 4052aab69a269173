"""A backend's rules as one query evaluates them: on one arch, dtype and pass, at given versions.

A View holds the rules whose arch, dtype, pass and version checks hold there, without those checks,
and memoises its verdicts on the query attributes the remaining checks declare they read
(rules.Check.reads). Known issues are found through their guards (rules.Check.guard): a query tries
only the issues whose guard admits its value. Built and kept by rules.CompiledBackend.view.
"""

from __future__ import annotations

import functools
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from .query import OPTIONAL_FIELDS

if TYPE_CHECKING:
    from .rules import CompiledRule, Ctx, Split

Query = Any  # an attncap.query.AttentionQuery
_OPTIONAL = frozenset(OPTIONAL_FIELDS)
MEMO_SIZE = 1024  # verdicts a memo keeps
_VOLATILE = frozenset({"seqlen_q", "seqlen_kv"})  # what changes from one batch to the next


class Outcome(NamedTuple):
    """A backend's static verdict on a query (no probe): what a Decision is built from."""

    rule: CompiledRule | None  # the first support rule that matches
    missing: tuple  # the feature alternatives no feature rule allows
    issue: CompiledRule | None  # a known issue that matches (installed versions only)
    supported: bool  # installed, a rule, nothing missing, no issue


class _Issues:
    """Known issues indexed by their guards: a query tries only those whose guard admits its value."""

    def __init__(self, issues: list[CompiledRule]):
        unguarded, guarded = [], {}
        for issue in issues:
            if issue.guard is None:
                unguarded.append(issue)
                continue
            value_of, values = issue.guard
            buckets = guarded.setdefault(value_of, {})
            for value in values:
                buckets[value] = buckets.get(value, ()) + (issue,)
        self.unguarded, self.guarded = tuple(unguarded), tuple(guarded.items())

    def first(self, q: Query, c: Ctx) -> CompiledRule | None:
        for issue in self.unguarded:
            if issue.holds(q, c):
                return issue
        for value_of, buckets in self.guarded:
            for issue in buckets.get(value_of(q), ()):
                if issue.holds(q, c):
                    return issue
        return None


class _Part:
    """One memoised part of a View's verdict: its value depends only on the query attributes `key` reads."""

    __slots__ = ("reads", "key", "memo", "compute")

    def __init__(self, reads, compute: Callable):
        self.reads = reads = frozenset(reads)
        self.key = _key_of(reads)
        self.memo: dict = {}
        self.compute = compute  # (q, c) -> the value

    def get(self, q: Query, c: Ctx):
        key = self.key(q)
        found = self.memo.get(key, _MISSING)
        return self.put(key, q, c) if found is _MISSING else found

    def put(self, key, q: Query, c: Ctx):
        """The value for `q`, whose key is `key`: computed and kept."""
        found = self.compute(q, c)
        if len(self.memo) >= MEMO_SIZE:
            self.memo.clear()
        self.memo[key] = found
        return found


_MISSING = object()


def _any_holds(rules: tuple[CompiledRule, ...], q: Query, c: Ctx) -> bool:
    for r in rules:
        if r.holds(q, c):
            return True
    return False


@functools.lru_cache(maxsize=None)  # few distinct sets: views share their key functions
def _key_of(reads: frozenset) -> Callable:
    """A query's memo key: the attributes in `reads` (optional fields through the one tuple holding them)."""
    reads = set(reads)
    if reads & _OPTIONAL:  # one tuple holds them all (reading it is cheaper than a property each)
        reads = (reads - _OPTIONAL) | {"_extra"}
    return attrgetter(*sorted(reads)) if reads else _no_key


def _no_key(q: Query) -> None:
    return None


class View:
    """A backend's rules that can apply on one arch at given versions, with the arch and version
    checks already decided: the hot path evaluates only what depends on the query.

    A verdict depends only on the query attributes that the remaining checks read (each Check
    declares its `reads`), so it is memoised on those, whole (`verdicts`: whether supported) and by
    part (the support rule, each feature's alternatives, the known issues): a query that differs from
    earlier ones only in what this backend's rules ignore (most often the sequence lengths) costs one
    lookup, and one that is new as a whole but not in each part costs a lookup per part it reaches
    (supported() stops at the first part that fails; outcome(), for Decisions, asks every part).
    Known issues that read the sequence lengths stay out of the whole verdict's key (a part of their
    own, asked after it).
    """

    def __init__(self, support: tuple[CompiledRule, ...], features: dict[str, tuple[CompiledRule, ...]],
                 known_issues: tuple[CompiledRule, ...], installed: bool = True):
        self.support, self.features, self.known_issues = support, features, known_issues
        self.installed = installed  # the backend's package is installed (else no known issue applies)
        support_reads = frozenset().union(*(r.reads for r in support))
        self._support = _Part(support_reads, self._first_support)
        every = support_reads.union(*[r.reads for rules in features.values() for r in rules])
        # features with a rule that has no query-dependent check left
        self.always = frozenset([name for name, rules in features.items() for r in rules if not r.checks])
        self._features: dict = {}  # feature alternatives -> _Part, made when a query first asks for them
        self._by_features: dict = {}  # a query's `features` -> what _feature_parts() found for them
        # Known issues that read the sequence lengths, which change from batch to batch, are a part of their
        # own and stay out of the whole verdict's key: a new length costs that part's lookup, not a new verdict.
        issues = known_issues if installed else ()
        steady = [i for i in issues if not i.reads & _VOLATILE]
        volatile = [i for i in issues if i.reads & _VOLATILE]
        if volatile and every & _VOLATILE:  # support or a feature reads lengths too: one key for all
            steady, volatile = [*steady, *volatile], []
        self._issues = _Part(frozenset().union(*(i.reads for i in steady)), _Issues(steady).first)
        self._volatile = _Part(frozenset().union(*(i.reads for i in volatile)), _Issues(volatile).first) \
            if volatile else None
        every |= self._issues.reads
        self.steady = self._volatile is None  # the whole verdict alone answers (the resolver's inline lookup)
        # Whether supported, memoised whole (features: which feature rules are asked at all): selection needs
        # only this boolean, found by stopping at the first failing part. The full Outcome (every missing
        # feature, the issue) is built from the parts for Decisions.
        self._verdict = _Part(every | {"features"}, self._supported)
        self.verdicts, self.key = self._verdict.memo, self._verdict.key

    def outcome(self, q: Query, c: Ctx) -> Outcome:
        """The static verdict on `q`, from the memoised parts."""
        rule = self._support.get(q, c)
        missing = tuple(alternatives for alternatives, part in self._feature_parts(q.features)
                        if part is None or not part.get(q, c))
        issue = self._issues.get(q, c)  # none when not installed: no issues then
        if issue is None and self._volatile is not None:
            issue = self._volatile.get(q, c)
        return Outcome(rule, missing, issue, self.installed and rule is not None and not missing and issue is None)

    def supported(self, q: Query, c: Ctx) -> bool:
        """Whether `q` is supported: outcome(q, c).supported, without building the Outcome (memoised)."""
        if not self._verdict.get(q, c):
            return False
        return self._volatile is None or self._volatile.get(q, c) is None

    def decide(self, key, q: Query, c: Ctx) -> bool:
        """supported() of a steady View for a query whose key (self.key(q)) is not in `verdicts`."""
        return self._verdict.put(key, q, c)

    def forget(self) -> None:
        """Drop every memoised verdict (benchmarks: each query evaluated afresh)."""
        parts = (self._verdict, self._support, self._issues, self._volatile, *self._features.values())
        for part in filter(None, parts):
            part.memo.clear()

    def _supported(self, q: Query, c: Ctx) -> bool:
        """outcome(q, c).supported but for the issues reading sequence lengths, stopping at the first part
        that fails."""
        if not self.installed or self._support.get(q, c) is None:
            return False
        for _, part in self._feature_parts(q.features):
            if part is None or not part.get(q, c):
                return False
        return self._issues.get(q, c) is None

    def _first_support(self, q: Query, c: Ctx) -> CompiledRule | None:
        for r in self.support:
            if r.holds(q, c):
                return r
        return None

    def _feature_parts(self, features: tuple) -> tuple:
        """(alternatives, the _Part telling whether some rule of one of them holds, None when none has a rule)
        of each entry of a query's `features` that a rule without query checks does not already allow."""
        found = self._by_features.get(features)
        if found is None:
            found = tuple((alternatives, self._feature_part(alternatives)) for alternatives in features
                          if self.always.isdisjoint(alternatives))
            if len(self._by_features) >= MEMO_SIZE:
                self._by_features.clear()
            self._by_features[features] = found
        return found

    def _feature_part(self, alternatives: tuple[str, ...]) -> _Part | None:
        part = self._features.get(alternatives)
        if part is None:
            rules = tuple(r for name in alternatives for r in self.features.get(name, ()))
            if not rules:
                return None
            reads = frozenset().union(*(r.reads for r in rules))
            part = self._features.setdefault(alternatives, _Part(reads, functools.partial(_any_holds, rules)))
        return part


def on_target(rules: tuple[tuple[Any, CompiledRule, Split], ...], arch: str, dtype: str, training: bool) -> tuple:
    """(where, Split) of the (where, rule, its Split) whose rule's arch, dtype and pass checks hold."""
    out = []
    for where, r, split in rules:
        archs, dtypes, trainings = r.target
        if (archs is None or arch in archs) and (dtypes is None or dtype in dtypes) and \
                (trainings is None or training in trainings):
            out.append((where, split))
    return tuple(out)


def narrow(splits: tuple, c: Ctx) -> list[tuple[Any, CompiledRule]]:
    """(where, rule without its view-level checks) of the (where, Split) pairs on a target whose version
    checks hold (the package's own dropped when it is not installed)."""
    out = []
    installed = c.version is not None
    held: dict = {}  # id(version Check) -> whether it holds: rules share one Check per specifier
    for where, split in splits:
        for ch in split.versions if installed else split.unversioned:
            ok = held.get(id(ch))
            if ok is None:
                ok = held[id(ch)] = ch.test(None, c)  # a version check reads the Ctx only
            if not ok:
                break
        else:
            out.append((where, split.rest))
    return out

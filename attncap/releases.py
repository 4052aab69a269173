"""`attncap coverage`: per backend, the checked span of each package its rules read and the releases published
after it (from `pip index versions`), so maintainers see what to check next."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from packaging.version import InvalidVersion, Version

from .versions import CUDNN, matched_as

# The distributions that publish a package's releases, when the version key is not one (cuDNN's runtime).
INDEX_NAMES = {CUDNN: ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12")}


def published(distribution: str, index_url: str | None = None, timeout: float = 60.0) -> list[str] | None:
    """The versions `pip index versions` lists for `distribution` (pre-releases too); None if it lists none.

    With index_url, only that index is asked: pip's configuration files and PIP_* variables are ignored.
    """
    command = [sys.executable, "-m", "pip", "index", "versions", "--pre", "--disable-pip-version-check",
               distribution]
    env = None
    if index_url is not None:
        command += ["--index-url", index_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.partition(":")[2].split(",") if v.strip()]
    return None


def newer_releases(package: str, last: str, index_url: str | None = None) -> list[str] | None:
    """Releases of `package` newer than `last` (as matched: cuDNN wheels by runtime version), newest first."""
    found: list[str] | None = None
    for name in INDEX_NAMES.get(package, (package,)):
        versions = published(name, index_url)
        if versions is not None:
            found = (found or []) + versions
    if found is None:
        return None
    limit = Version(matched_as(package, last).version or last)
    newer = {}
    for raw in found:
        seen = matched_as(package, raw).version
        try:
            if seen is not None and Version(seen) > limit:
                newer.setdefault(seen, raw)
        except InvalidVersion:
            continue
    return sorted(newer, key=Version, reverse=True)


def coverage_report(registry, index_url: str | None = None, offline: bool = False) -> list[dict]:
    """One entry per backend and package span: first, last, evidence, and the releases published after last."""
    asked: dict[tuple[str, str], list[str] | None] = {}
    rows = []
    for name in sorted(registry.backends):
        backend = registry.backends[name]
        packages = dict.fromkeys((backend.package, *backend.checked))
        for package in packages:
            span = backend.checked.get(package)
            row = {"backend": name, "package": package, "first": span and span.first, "last": span and span.last,
                   "evidence": list(span.evidence) if span else [], "ambiguous": dict(span.ambiguous) if span else {},
                   "published_after": None}
            if span is not None and not offline:
                key = (package, span.last)
                if key not in asked:
                    asked[key] = newer_releases(package, span.last, index_url)
                row["published_after"] = asked[key]
            rows.append(row)
    return rows


def coverage_text(rows: list[dict], offline: bool) -> str:
    lines = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        lines.append(backend)
        for r in (r for r in rows if r["backend"] == backend):
            if r["first"] is None:
                lines.append(f"  {r['package']:<19} no checked span: answers cannot say which releases were checked")
                continue
            span = r["first"] if r["first"] == r["last"] else f"{r['first']} .. {r['last']}"
            after = r["published_after"]
            tail = ("" if offline else "; not found on the package index" if after is None
                    else f"; published after: {', '.join(after)}" if after else "; nothing published after it")
            lines.append(f"  {r['package']:<19} checked {span} ({len(r['evidence'])} evidence){tail}")
            lines += [f"      {version}: unverified, {why}" for version, why in r["ambiguous"].items()]
    return "\n".join(lines)


def cmd_coverage(args) -> int:
    from .loader import default_registry, load_registry
    registry = load_registry(tuple(args.data)) if args.data else default_registry()
    rows = coverage_report(registry, args.index_url, args.offline)
    print(json.dumps(rows, indent=2) if args.json else coverage_text(rows, args.offline))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("coverage", help="per backend: the checked span of each package and newer releases")
    p.add_argument("--index-url", help="ask only this package index (pip configuration ignored)")
    p.add_argument("--offline", action="store_true", help="do not ask the package index")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_coverage)

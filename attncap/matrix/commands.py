"""The `attncap matrix` and `attncap diff-versions` subcommands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .as_json import render_json
from .backend import check_backend, mentioned_versions, uses_cudnn
from .compute import build_matrix
from .conditional import add_query_flags, query_fields
from .diff import diff_versions, render_diff
from .docs import check_docs, write_docs_command
from .html import render_html
from .markdown import render_markdown
from .png import render_png


def _registry(args):
    from ..loader import default_registry, load_registry
    return load_registry(tuple(args.data)) if args.data else default_registry()


def _vocabulary_names(given: list[str], lookup, known, what: str) -> list[str] | None:
    """The canonical names of `given` (None when none is given); an unknown one is an error."""
    names = []
    for g in given:
        name = lookup(g)
        if name is None:
            raise ValueError(f"unknown {what} {g!r}; known: {', '.join(known)}")
        names.append(name)
    return names or None


def _names(registry, args):
    vocab = registry.vocabulary
    return (_vocabulary_names(args.arch, vocab.arch_name, vocab.archs, "arch"),
            _vocabulary_names(args.dtype, vocab.dtype_name, vocab.dtypes, "dtype"))


def _cudnn(registry, backend: str, given: str | None, env) -> str | None:
    if not uses_cudnn(registry, backend) or registry.compiled[backend].package == "cudnn":
        return given
    cudnn = given or env.cudnn
    if cudnn is None:
        raise ValueError(f"{backend}'s rules depend on the cuDNN version and no cuDNN is installed here: "
                         "pass --cudnn VERSION")
    return cudnn


def _version(registry, backend: str, given: str | None, env, cudnn: str | None = None) -> tuple[str, str]:
    """(version, where it comes from): --version, else the installed package's."""
    if given is not None:
        return given, "--version"
    package = registry.compiled[backend].package
    if package == "cudnn" and cudnn is not None:  # cudnn-fused's version is the cuDNN one, as --help says
        return cudnn, "--cudnn"
    version = env.version(package)
    if version is None:
        known = mentioned_versions(registry, backend)
        raise ValueError(f"{package} is not installed here: pass --version (the data names "
                         f"{', '.join(known[-5:]) or 'no versions'})")
    return version, "installed"


def _render(ms, args) -> str:
    if args.format == "md":
        return render_markdown(ms)
    if args.format == "html":
        return render_html(ms, args.cell)
    return render_json(ms)


def cmd_matrix(args) -> int:
    from ..environment import Environment
    registry = _registry(args)
    if args.check_docs:
        return check_docs(registry, args.check_docs)
    if args.write_docs:
        return write_docs_command(registry, args.write_docs)
    if not args.backend:
        raise ValueError("--backend is required (or --write-docs DIR)")
    check_backend(registry, args.backend)
    env = Environment.detect()
    version, source = _version(registry, args.backend, args.version, env, args.cudnn)
    archs, dtypes = _names(registry, args)
    cudnn = _cudnn(registry, args.backend, args.cudnn, env)
    fields = query_fields(args)
    ms = [build_matrix(registry, args.backend, version, dtype, archs=archs, training=args.training, cudnn=cudnn,
                       n=args.max_head_dim, probes=not args.no_probes, version_source=source, fields=fields)
          for dtype in dtypes or ["bf16"]]
    if not args.output:
        if args.format == "png":
            raise ValueError("--format png needs -o FILE")
        sys.stdout.write(_render(ms, args))
        return 0
    if args.format == "png":
        render_png(ms, args.output, args.cell)
    else:
        Path(args.output).write_text(_render(ms, args))
    print(f"wrote {args.output} ({ms[0].version_line()})", file=sys.stderr)
    return 0


def cmd_diff_versions(args) -> int:
    from ..environment import Environment
    registry = _registry(args)
    archs, dtypes = _names(registry, args)
    cudnn = _cudnn(registry, args.backend, args.cudnn, Environment.detect()) if args.backend in registry.compiled \
        else None
    old, new, notes = _within_spans(registry, args)
    changes = diff_versions(registry, args.backend, old, new, archs=archs, dtypes=dtypes,
                            training=args.training, cudnn=cudnn, n=args.max_head_dim, fields=query_fields(args))
    out = render_diff(args.backend, old, new, changes, args.format, training=args.training, n=args.max_head_dim)
    if args.format == "json":
        out = json.dumps({**json.loads(out), "requested": [args.old, args.new], "checked": notes}, indent=2)
    print("\n".join(notes + [out]) if args.format != "json" else out)
    return 0


def _within_spans(registry, args) -> tuple[str, str, list[str]]:
    """The versions compared: a version outside the backend's checked span is compared as the span's end
    whose rules apply to it (so a newer release shows no invented removals), with a line saying so."""
    from ..coverage import within_span
    from ..versions import checked_version
    check_backend(registry, args.backend)
    b = registry.compiled[args.backend]
    compared, notes = [], []
    for version in (args.old, args.new):
        seen, why = within_span(b, checked_version(b.package, version))
        compared.append(seen)
        if why:
            notes.append(f"{args.backend} {version}: {why}; compared as {seen}")
    return compared[0], compared[1], notes


def add_matrix_arguments(p) -> None:
    p.add_argument("--backend")
    p.add_argument("--arch", action="append", default=[], help="repeatable (default: every arch the backend names)")
    p.add_argument("--dtype", action="append", default=[], help="repeatable (default: bf16)")
    p.add_argument("--version", help="the backend package's version (default: the installed one)")
    p.add_argument("--cudnn", help="cuDNN runtime version, for backends whose rules depend on it")
    p.add_argument("--training", action="store_true", help="backward pass needed")
    p.add_argument("--max-head-dim", type=int, default=576)
    p.add_argument("--format", choices=["md", "json", "html", "png"], default="md")
    p.add_argument("-o", "--output", metavar="FILE")
    p.add_argument("--cell", type=int, help="picture cell size in head dims (default 8; 1 = every point)")
    p.add_argument("--no-probes", action="store_true", help="the table only")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    p.add_argument("--write-docs", metavar="DIR", help="regenerate DIR/support-matrix.md and DIR/img/*.png")
    p.add_argument("--check-docs", metavar="DIR", help="exit 1 when DIR/support-matrix.md is stale")
    add_query_flags(p)
    p.set_defaults(func=cmd_matrix)


def _add_diff_arguments(p) -> None:
    p.add_argument("backend")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--arch", action="append", default=[])
    p.add_argument("--dtype", action="append", default=[], help="repeatable (default: every dtype the backend names)")
    p.add_argument("--training", action="store_true")
    p.add_argument("--cudnn", help="cuDNN runtime version, for backends whose rules depend on it")
    p.add_argument("--max-head-dim", type=int, default=576)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    add_query_flags(p)
    p.set_defaults(func=cmd_diff_versions)


def register_cli(sub) -> None:
    add_matrix_arguments(sub.add_parser("matrix", help="a backend's head_dim_qk x head_dim_v support matrix per arch"))
    _add_diff_arguments(sub.add_parser("diff-versions",
                                       help="what support changed between two versions of a backend, from the data"))

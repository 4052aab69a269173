"""The `attncap` command. Exit codes: 0 = ok / selected, 1 = none can run or problems found, 2 = bad input."""

from __future__ import annotations

import argparse
import os
import sys

from . import report
from .query import BIASES, LAYOUTS, MASKS


def _query_args(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("query")
    q.add_argument("--arch", help="e.g. sm90, sm_100a, 9.0 (default: the detected GPU)")
    q.add_argument("--dtype", default="bf16")
    q.add_argument("--head-dim", type=int, required=True, help="head_dim_qk")
    q.add_argument("--head-dim-v", type=int, help="default: --head-dim")
    q.add_argument("--training", action="store_true", help="backward pass needed")
    q.add_argument("--causal", action="store_true", help="causal mask, top-left aligned (PyTorch convention)")
    q.add_argument("--mask", choices=MASKS)
    q.add_argument("--window", help="sliding window L,R (-1 = unbounded)")
    q.add_argument("--dropout", type=float, default=0.0)
    q.add_argument("--softcap", type=float, default=0.0)
    q.add_argument("--bias", default="none", choices=BIASES)
    q.add_argument("--gqa", help="query heads:kv heads, e.g. 32:8")
    q.add_argument("--seqlen-q", type=int)
    q.add_argument("--seqlen-kv", type=int)
    q.add_argument("--layout", default="bshd", choices=LAYOUTS)
    q.add_argument("--page-size", type=int, help="paged KV cache page size")
    q.add_argument("--deterministic", action="store_true")
    q.add_argument("--sinks", action="store_true")
    e = p.add_argument_group("environment (what-if)")
    e.add_argument("--version", action="append", default=[], metavar="PACKAGE=VERSION",
                   help="e.g. flash-attn-4=4.0.0b11; PACKAGE= (empty) means not installed")
    e.add_argument("--cudnn", help="cuDNN runtime version, e.g. 9.10.2")
    e.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    e.add_argument("--no-probes", action="store_true", help="answer from the table only")
    p.add_argument("--json", action="store_true")


def _context(args):
    """(registry, query, env) from the parsed arguments; raises ValueError on bad input."""
    from .environment import Environment
    from .loader import default_registry, load_registry
    from .query import AttentionQuery
    registry = load_registry(tuple(args.data)) if args.data else default_registry()
    heads = _pair(args.gqa, ":", "--gqa") if args.gqa else (None, None)
    window = _pair(args.window, ",", "--window") if args.window else None
    mask = args.mask or ("causal" if args.causal else "none")
    query = AttentionQuery(
        arch=args.arch, dtype=args.dtype, head_dim_qk=args.head_dim, head_dim_v=args.head_dim_v,
        training=args.training, mask=mask, window=window, dropout=args.dropout, softcap=args.softcap,
        bias=args.bias, num_heads_q=heads[0], num_heads_kv=heads[1], seqlen_q=args.seqlen_q,
        seqlen_kv=args.seqlen_kv, layout=args.layout, page_size=args.page_size,
        deterministic=args.deterministic, sinks=args.sinks, vocabulary=registry.vocabulary)
    versions = {}
    for item in args.version:
        package, sep, version = item.partition("=")
        if not sep:
            raise ValueError(f"--version {item!r}: expected PACKAGE=VERSION")
        versions[package] = version or None
    # The query carries the arch (it may come from an overlay's vocabulary).
    env = Environment.detect().replace(versions=versions, cudnn=args.cudnn)
    return registry, query, env


def _pair(text: str, sep: str, flag: str) -> tuple[int, int]:
    try:
        a, b = text.split(sep)
        return int(a), int(b)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected two integers separated by {sep!r}") from None


def cmd_resolve(args) -> int:
    from .resolver import BackendUnavailableError, resolve
    registry, query, env = _context(args)
    try:
        resolution = resolve(query, env, probes=not args.no_probes, registry=registry)
    except BackendUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(report.to_json(resolution.as_dict()) if args.json else report.resolution_text(resolution))
    return 0 if resolution.selected else 1


def cmd_explain(args) -> int:
    from .explain import explain_backend
    registry, query, env = _context(args)
    if args.backend not in registry.backends:
        raise ValueError(f"unknown backend {args.backend!r}; known: {', '.join(sorted(registry.backends))}")
    data = explain_backend(registry, args.backend, query, env, probes=not args.no_probes)
    print(report.to_json(data) if args.json else _explain_text(data))
    return 0 if data["supported"] else 1


def _explain_text(data) -> str:
    lines = [f"{data['backend']} ({data['package']} {data['version'] or 'not installed'}) on {data['arch']}: "
             f"{'supported' if data['supported'] else 'rejected'} (decided by {data['decided_by']})"]
    for section in ("support", "features", "known_issues"):
        lines.append(f"{section}:")
        for row in data[section]:
            mark = {"match": "+", "fail": "-", "applies": "!", "clear": " "}[row["status"]]
            lines.append(f"  {mark} {row['id']}: {row['status']}" + (f"  ({row['source']})" if row.get("source") else ""))
            lines += [f"      {m}" for m in row["why"]]
    if data["probe"]:
        lines.append(f"probe: {data['probe']}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    from . import probes
    from .environment import Environment
    from .loader import default_registry
    env = Environment.detect(device=args.device)
    registry = default_registry()
    packages = sorted({p for b in registry.backends.values() for p in (b.package, *b.requires)} | {"torch"})
    data = {"arch": env.arch, "versions": {p: env.version(p) for p in packages},
            "backends": {n: registry.backends[n].package for n in sorted(registry.backends)},
            "probes": {name: probes.get(name).status() for name in probes.names()}, "data": registry.files}
    if args.json:
        print(report.to_json(data))
        return 0
    print(f"arch: {env.arch or 'no GPU detected (use --device to ask torch)'}")
    print("installed:")
    for p in packages:
        print(f"  {p:<20} {env.version(p) or '-'}")
    print(f"backends: {', '.join(data['backends'])}")
    print("probes:")
    for name, status in data["probes"].items():
        print(f"  {name:<20} {status}")
    print(f"data: {len(registry.files)} files")
    return 0


def cmd_validate(args) -> int:
    from pathlib import Path
    from .loader import check_paths, data_dirs
    _registry, problems = check_paths(data_dirs(tuple(args.paths), use_env=False))
    errors = [p for p in problems if p.severity == "error"]
    render = {"text": report.problems_text, "json": report.problems_json, "github": report.problems_github}
    if problems or args.format == "json":
        print(render[args.format](problems))
    failed = bool(errors) or (args.strict and bool(problems))
    if args.format == "text":
        checked = ", ".join(str(Path(p)) for p in args.paths) or "packaged data"
        print(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s) in {checked}", file=sys.stderr)
    return 1 if failed else 0


def cmd_schema(args) -> int:
    from .schema import check_schemas, write_schemas
    if args.check:
        stale = check_schemas()
        for name in stale:
            print(f"schemas/{name} is out of date with attncap/models.py", file=sys.stderr)
        if stale:
            print("regenerate with: attncap schema --write", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas():
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attncap", description="Which attention kernel can run this, and why not.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("resolve", help="select a backend and explain every verdict")
    _query_args(p)
    p.set_defaults(func=cmd_resolve)
    p = sub.add_parser("explain", help="every rule of one backend against the query")
    p.add_argument("backend")
    _query_args(p)
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("info", help="detected arch, installed backend packages, probes")
    p.add_argument("--device", action="store_true", help="import torch to detect the GPU")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("validate", help="check capability files (schema + lint)")
    p.add_argument("paths", nargs="*", help="overlay files or directories (default: the packaged data only)")
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("schema", help="write or check the JSON Schemas in schemas/")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 when schemas/ is stale")
    group.add_argument("--write", action="store_true", help="regenerate schemas/ (default)")
    p.set_defaults(func=cmd_schema)
    from . import drift
    drift.register_cli(sub)
    from . import matrix
    matrix.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .loader import LoadError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LoadError as exc:
        print(f"attncap: the capability data has errors:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"attncap: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `attncap resolve ... | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:  # e.g. `-o` into a missing or unwritable directory, a path too long
        name = "" if exc.filename is None else f"{str(exc.filename)[:200]}: "
        print(f"attncap: {name}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the conventional 128 + SIGINT, no traceback
        print("attncap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `attncap` command. Exit codes: 0 = ok / selected, 1 = none can run or problems found, 2 = bad input,
3 = selected (resolve) or supported (explain) but unverified: a version is newer than the checked span,
4 = nothing selected but some backend is unknown (resolve) / the backend is unknown (explain): a version is
older than the checked span or an unknown build."""

from __future__ import annotations

import argparse
import os
import sys

from . import report
from .query import BIASES, CONTEXT_PARALLEL, FP8_RECIPES, LAYOUTS, MASKS, PACKINGS


def _query_args(p: argparse.ArgumentParser) -> None:
    q = p.add_argument_group("query")
    q.add_argument("--arch", help="e.g. sm90, sm_100a, 9.0 (default: the detected GPU)")
    q.add_argument("--dtype", default="bf16")
    q.add_argument("--head-dim", type=int, required=True, help="head_dim_qk")
    q.add_argument("--head-dim-v", type=int, help="default: --head-dim")
    q.add_argument("--training", action="store_true", help="backward pass needed")
    add_feature_flags(q)
    e = p.add_argument_group("environment (what-if)")
    e.add_argument("--version", action="append", default=[], metavar="PACKAGE=VERSION",
                   help="e.g. flash-attn-4=4.0.0b11; PACKAGE= (empty) means not installed")
    e.add_argument("--cudnn", help="cuDNN runtime version, e.g. 9.10.2")
    e.add_argument("--no-detect", action="store_true",
                   help="ignore the installed packages: only --version/--cudnn count (Python: Environment(...)); "
                        "without it they change the installed environment (Environment.detect().replace(...))")
    e.add_argument("--data", action="append", default=[], metavar="DIR", help="overlay capability directory")
    probing = e.add_mutually_exclusive_group()
    probing.add_argument("--no-probes", action="store_true", help="answer from the table only")
    probing.add_argument("--probe", action="store_true",
                         help="ask the installed libraries: import them for their probes first (FA4: seconds; "
                              "attncap.probes.warm()); without it a probe answers only for what is imported, "
                              "i.e. not in this command")
    e.add_argument("--unverified", choices=("allow", "warn", "deny"),
                   help="versions newer than the checked span: select with a reason (allow, the default), "
                        "warn, or do not select (deny); default ATTNCAP_UNVERIFIED or allow")
    e.add_argument("--profile", help="a consumer profile (profiles.yaml), e.g. transformer-engine: its own "
                                     "version windows and preferences")
    p.add_argument("--json", action="store_true")


def add_feature_flags(q) -> None:
    """The query's flags beyond arch, dtype, head dims and pass (also used by matrix and diff-versions)."""
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
    # TransformerEngine's further dimensions: left out = not asked (never rejects)
    tri = argparse.BooleanOptionalAction
    q.add_argument("--kv-cache", action=tri, help="a KV cache (inference); --page-size implies it")
    q.add_argument("--context-parallel", choices=CONTEXT_PARALLEL, help="context parallelism (cp_comm_type)")
    q.add_argument("--return-max-logit", action=tri)
    q.add_argument("--score-mod", action=tri, help="a score_mod callback")
    q.add_argument("--num-splits", type=int)
    q.add_argument("--packing", choices=PACKINGS, help="kv: bshd_bs2hd-style; qkv: bs3hd/t3hd-style")
    q.add_argument("--bias-grad", action=tri, help="the bias needs a gradient")
    q.add_argument("--bottom-right", action=tri, help="window/ALiBi diagonal aligned bottom-right (TE default)")
    q.add_argument("--fp8-recipe", choices=FP8_RECIPES)
    q.add_argument("--fp8-mha", action=tri)


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
        deterministic=args.deterministic, sinks=args.sinks, kv_cache=args.kv_cache,
        context_parallel=args.context_parallel, return_max_logit=args.return_max_logit, score_mod=args.score_mod,
        num_splits=args.num_splits, packing=args.packing, bias_grad=args.bias_grad, bottom_right=args.bottom_right,
        fp8_recipe=args.fp8_recipe, fp8_mha=args.fp8_mha, vocabulary=registry.vocabulary)
    versions = {}
    from .environment import known_packages
    from .versions import check_name
    known = known_packages() | {p for b in registry.backends.values() for p in (b.package, *b.requires)}
    for item in args.version:
        package, sep, version = item.partition("=")
        if not sep:
            raise ValueError(f"--version {item!r}: expected PACKAGE=VERSION")
        check_name(package.strip().lower().replace("_", "-"), known, strict=True, what="package in --version")
        versions[package.strip()] = version.strip() or None
    # The query carries the arch (it may come from an overlay's vocabulary).
    # Without --arch the arch is the GPU's ("default: the detected GPU"): only then ask torch.
    base = Environment() if args.no_detect else Environment.detect(device=args.arch is None)
    env = base.replace(versions=versions, cudnn=args.cudnn)
    return registry, query, env


def _pair(text: str, sep: str, flag: str) -> tuple[int, int]:
    try:
        a, b = text.split(sep)
        return int(a), int(b)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected two integers separated by {sep!r}") from None


def _warm_if_asked(args, names=None) -> None:
    """--probe: import what the probes ask (their verdicts, ready or not, say the rest); `names`: only those
    probes (`explain --backend cudnn-fused --probe` imports neither torch nor FA4)."""
    if args.probe:
        from . import probes
        probes.warm(names)


def cmd_resolve(args) -> int:
    from .resolver import BackendUnavailableError, resolve
    registry, query, env = _context(args)
    _warm_if_asked(args)
    try:
        resolution = resolve(query, env, probes=not args.no_probes, registry=registry, unverified=args.unverified,
                             profile=args.profile)
    except BackendUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(report.to_json(resolution.as_dict()) if args.json else report.resolution_text(resolution))
    if not args.json:
        print(_environment_line(args, env))
    return {"supported": 0, "unverified": 3, "unknown": 4}.get(resolution.outcome, 1)


def _environment_line(args, env) -> str:
    """Which environment the answer is for: the rule is the same as in Python (environment.py)."""
    given = " with --version/--cudnn" if args.version or args.cudnn else ""
    where = "only --version/--cudnn (--no-detect)" if args.no_detect else f"installed packages{given}"
    return f"environment: {where}: {env.describe()}"


def cmd_explain(args) -> int:
    from .explain import explain_backend
    registry, query, env = _context(args)
    if args.backend not in registry.backends:
        raise ValueError(f"unknown backend {args.backend!r}; known: {', '.join(sorted(registry.backends))}")
    probe = registry.compiled[args.backend].probe
    _warm_if_asked(args, [probe.name] if probe is not None else [])
    data = explain_backend(registry, args.backend, query, env, probes=not args.no_probes,
                           unverified=args.unverified, profile=args.profile)
    print(report.to_json(data) if args.json else _explain_text(data))
    if data["supported"]:
        return 3 if data["outcome"] == "unverified" else 0
    return 4 if data["outcome"] == "unknown" else 1


def _explain_text(data) -> str:
    from .rules import EFFECT_WORDS
    verdict = data["outcome"] if data["supported"] or data["outcome"] == "unknown" else "rejected"
    lines = [f"{data['backend']} ({data['package']} {data['version'] or 'not installed'}) on {data['arch']}: "
             f"{verdict} (decided by {data['decided_by']})"]
    lines += [f"  {r['message']}" for r in data["reasons"] if r.get("field") in ("checked", "versions", "unverified")
              and r["code"] in ("version", "unverified", "unknown", "policy", "profile")]
    for section in ("support", "features", "known_issues"):
        lines.append(f"{section}:")
        rows = data[section]
        if section == "known_issues":  # the clear ones on one line: only those that apply need their sources
            clear = [row["id"] for row in rows if row["status"] == "clear"]
            rows = [row for row in rows if row["status"] != "clear"]
            if clear:
                lines.append(f"    {len(clear)} clear: {', '.join(clear)}")
        for row in rows:
            mark = {"match": "+", "fail": "-", "applies": "!", "clear": " "}[row["status"]]
            lines.append(f"  {mark} {row['id']}: {row['status']}" + (f"  ({row['source']})" if row.get("source") else ""))
            if row.get("effect") and row["status"] == "applies":
                lines.append(f"      effect: {row['effect']} ({EFFECT_WORDS.get(row['effect'], row['effect'])})")
            lines += [f"      {m}" for m in row["why"]]
    if data["probe"]:
        lines.append(f"probe: {data['probe']}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    from . import namespace, probes
    from .environment import Environment
    from .loader import default_registry
    env = Environment.detect(device=args.device)
    registry = default_registry()
    if not args.no_probes:
        probes.warm()  # info exists to say whether the probes answer here: ask their libraries
    packages = sorted({p for b in registry.backends.values() for p in (b.package, *b.requires)} | {"torch"})
    from . import __version__
    data = {"attncap": __version__, "arch": env.arch, "unknown_gpu": env.unknown_gpu, "versions": {p: env.version(p) for p in packages},
            "backends": {n: registry.backends[n].package for n in sorted(registry.backends)},
            "probes": {name: probes.get(name).status() for name in probes.names()}, "data": registry.files,
            "flash_attn_namespace": namespace.describe(packages), "conflicts": namespace.conflicts(env, packages)}
    if args.json:
        print(report.to_json(data))
        return 0
    no_arch = env.no_arch_message() + ("" if env.unknown_gpu or args.device else " (use --device to ask torch)")
    print(f"attncap: {data['attncap']}")
    print(f"arch: {env.arch or no_arch}")
    print("installed:")
    for p in packages:
        print(f"  {p:<20} {env.version(p) or '-'}")
    print(f"flash_attn namespace: {data['flash_attn_namespace']}")
    for package, (reason, proven) in data["conflicts"].items():
        print(f"  {'conflict' if proven else 'note'}: {reason}")
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
    if not args.write:  # --check is the default: writing goes into the installed package's schemas/
        stale = check_schemas()
        for name in stale:
            print(f"schemas/{name} is out of date with attncap/models.py", file=sys.stderr)
        if stale:
            print("regenerate with: attncap schema --write", file=sys.stderr)
        else:
            print("schemas/ are up to date with attncap/models.py (regenerate with --write)")
        return 1 if stale else 0
    for path in write_schemas():
        print(f"wrote {path}")
    return 0


CORE = ("resolve", "explain", "info", "validate", "schema")  # defined here: need no other command's module


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; for a `command` in CORE, without the other modules' commands (their imports cost tens of ms
    on every `attncap resolve`)."""
    from . import __version__
    parser = argparse.ArgumentParser(prog="attncap", description="Which attention kernel can run this, and why not.")
    parser.add_argument("--version", action="version", version=f"attncap {__version__}")
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
    p.add_argument("--no-probes", action="store_true",
                   help="do not import the probes' libraries (FA4, torch): their status says so")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("validate", help="check capability files (schema + lint)")
    p.add_argument("paths", nargs="*", help="overlay files or directories (default: the packaged data only)")
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("schema", help="write or check the JSON Schemas in schemas/")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 when schemas/ is stale (default)")
    group.add_argument("--write", action="store_true", help="regenerate schemas/ (in a checkout)")
    p.set_defaults(func=cmd_schema)
    if command in CORE:
        return parser
    from . import drift
    drift.register_cli(sub)
    from . import evidence
    evidence.register_cli(sub)
    from . import releases
    releases.register_cli(sub)
    from . import matrix
    matrix.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .loader import LoadError
    _quiet_and_debug()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
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


def _quiet_and_debug() -> None:
    """ATTNCAP_DEBUG=1 logs decisions to stderr (a library leaves handlers to its caller; the CLI is the
    caller); torch's "Failed to initialize NumPy" warning (torch without numpy, e.g. CI's CPU torch,
    imported when the probes are warmed: --probe, info, drift) says nothing about attention kernels."""
    import logging
    import warnings
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    if os.environ.get("ATTNCAP_DEBUG") == "1":
        log = logging.getLogger("attncap")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("attncap debug: %(message)s"))
            log.addHandler(handler)
        log.setLevel(logging.DEBUG)


if __name__ == "__main__":
    sys.exit(main())

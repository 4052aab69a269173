"""`python -m attncap.matrix ARGS`: the same as `attncap matrix ARGS` (e.g. --write-docs docs/, --check-docs docs/),
without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys

from .commands import add_matrix_arguments


def main(argv: list[str] | None = None) -> int:
    from ..loader import LoadError
    parser = argparse.ArgumentParser(prog="python -m attncap.matrix",
                                     description="a backend's head_dim_qk x head_dim_v support matrix per arch")
    add_matrix_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LoadError as exc:
        print(f"attncap: the capability data has errors:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"attncap: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

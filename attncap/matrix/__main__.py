"""`python -m attncap.matrix ARGS` is `attncap matrix ARGS` (e.g. --write-docs docs/, --check-docs docs/)."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["matrix", *sys.argv[1:]]))

"""`attncap matrix` and `attncap diff-versions`: a backend's whole head_dim_qk x head_dim_v plane.

Every point of the plane (1..N x 1..N, N = 576 by default) gets one outcome per arch:

  table           some support rule accepts (and the probe agrees, when it is consulted)
  probe           only the installed library's probe accepts, and it overrides the table
  probe_rejected  the table accepts, the installed library's probe rejects
  known_issue     the table or the probe accepts, a known issue rejects (which one is kept)
  unsupported     everything else

The planes come from attncap.grid (bitmask rows), so the whole matrix for every backend, arch,
dtype and mode takes well under a second; tests compare it point-wise with resolve(). Output:
Markdown (compact ranges and shape lists), JSON (blocks per outcome), self-contained HTML (inline
SVG, no external assets) and PNG (matplotlib, the optional extra `attncap[plot]`).

`python -m attncap.matrix --write-docs docs/` regenerates docs/support-matrix.md and docs/img/.

Modules: backend (what the data says about a backend), blocks (compact descriptions of a plane),
compute (the planes and their outcomes), diff (version diff), markdown, as_json, picture (what the
PNG and the SVG share), png, html, docs (the generated pages), commands (the CLI).
"""

from __future__ import annotations

from .as_json import matrix_json, render_json
from .backend import backend_archs, backend_dtypes, mentioned_versions, uses_cudnn
from .blocks import Block, compact_blocks, describe_blocks, describe_plane, describe_values, runs
from .commands import register_cli
from .compute import COLORS, LABELS, OUTCOMES, PRIORITY, ArchPlane, Matrix, arch_plane, build_matrix
from .diff import CHANGE_KINDS, Change, diff_versions, render_diff
from .docs import (DOC_DTYPE, DOC_PICTURES, DOC_VERSIONS, DOCS_COMMAND, check_docs, docs_markdown, picture_name,
                   write_docs)
from .html import render_html, render_svg
from .markdown import render_markdown
from .png import PLOT_HINT, render_png

__all__ = [
    "CHANGE_KINDS", "COLORS", "DOCS_COMMAND", "DOC_DTYPE", "DOC_PICTURES", "DOC_VERSIONS", "LABELS", "OUTCOMES",
    "PLOT_HINT", "PRIORITY", "ArchPlane", "Block", "Change", "Matrix", "arch_plane", "backend_archs",
    "backend_dtypes", "build_matrix", "check_docs", "compact_blocks", "describe_blocks", "describe_plane",
    "describe_values", "diff_versions", "docs_markdown", "matrix_json", "mentioned_versions", "picture_name",
    "register_cli", "render_diff", "render_html", "render_json", "render_markdown", "render_png", "render_svg",
    "runs", "uses_cudnn", "write_docs",
]

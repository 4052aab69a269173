"""Wheel build hook: validate the packaged capability data once, at build time, into the
plain-JSON snapshot that installed copies load instead of re-validating (attncap/snapshot.py)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class SnapshotHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return  # an editable install reads the checkout's YAML (full load)
        root = Path(self.root)
        sys.path.insert(0, str(root))
        try:
            from attncap.snapshot import FILE_NAME, write
            out = Path(tempfile.mkdtemp(prefix="attncap-snapshot-")) / FILE_NAME
            write(root / "capabilities", out)  # raises LoadError on any error in the data
        finally:
            sys.path.remove(str(root))
        build_data["force_include"][str(out)] = f"attncap/_data/{FILE_NAME}"

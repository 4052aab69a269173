"""Test doubles shared by the probe tests."""

from __future__ import annotations

from pathlib import Path


def fake_fa4_site(site: Path, interface_body: str) -> Path:
    """A directory to put first on PYTHONPATH: a fake `flash_attn.cute.interface` and flash-attn-4 4.0.0b36 metadata."""
    pkg = site / "flash_attn" / "cute"
    pkg.mkdir(parents=True)
    (site / "flash_attn" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "interface.py").write_text(interface_body)
    meta = site / "flash_attn_4-4.0.0b36.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: flash-attn-4\nVersion: 4.0.0b36\n")
    return site

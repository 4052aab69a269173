"""Test doubles shared by the probe tests."""

from __future__ import annotations

from pathlib import Path


def fake_fa4_site(site: Path, interface_body: str, version: str = "4.0.0b36") -> Path:
    """A directory to put first on PYTHONPATH: a fake `flash_attn.cute.interface` and flash-attn-4 metadata
    (4.0.0b36 unless `version` says otherwise)."""
    pkg = site / "flash_attn" / "cute"
    pkg.mkdir(parents=True)
    (site / "flash_attn" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "interface.py").write_text(interface_body)
    meta = site / f"flash_attn_4-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: flash-attn-4\nVersion: {version}\n")
    return site

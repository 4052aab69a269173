"""Test doubles shared by the probe tests."""

from __future__ import annotations

from pathlib import Path


def fake_fa4_site(site: Path, interface_body: str, version: str = "4.0.0b36", *, without_torch: bool = False) -> Path:
    """A directory to put first on PYTHONPATH: a fake `flash_attn.cute.interface` and flash-attn-4 metadata
    (4.0.0b36 unless `version` says otherwise); without_torch: a `torch` that fails to import, so that warming
    the probes imports FA4 only."""
    if without_torch:
        site.mkdir(parents=True, exist_ok=True)
        (site / "torch.py").write_text("raise ImportError('not imported in this test')\n")
    pkg = site / "flash_attn" / "cute"
    pkg.mkdir(parents=True)
    (site / "flash_attn" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "interface.py").write_text(interface_body)
    meta = site / f"flash_attn_4-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: flash-attn-4\nVersion: {version}\n")
    return site

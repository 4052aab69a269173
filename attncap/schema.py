"""JSON Schema for the capability files, generated from the models and committed in schemas/."""

from __future__ import annotations

import json
from pathlib import Path

from .models import SCHEMA_NAMES


def schemas_dir() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "_data" / "schemas"
    return installed if installed.is_dir() else here.parent / "schemas"


def generate() -> dict[str, str]:
    """File name -> schema text, deterministic so a diff means the models changed."""
    out = {}
    for model, name in SCHEMA_NAMES.items():
        schema = model.model_json_schema()
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"https://attncap.dev/schemas/{name}.schema.json", **schema}
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path | None = None) -> list[Path]:
    directory = directory or schemas_dir()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_schemas(directory: Path | None = None) -> list[str]:
    """Names of the committed schemas that differ from the models."""
    directory = directory or schemas_dir()
    stale = []
    for name, text in generate().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale

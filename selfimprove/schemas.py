"""The JSON schemas of the documents selfimprove writes, published under docs/schemas/ (generated, never edited).

`python -m selfimprove.schemas [DOCS_DIR]` rewrites them from the models; tests/test_report_model.py fails when a
committed schema differs from its model. To publish another document, add its model to `DOCUMENTS`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def documents() -> dict[str, Any]:
    """file name under docs/schemas/ -> the pydantic model it is generated from."""
    from selfimprove.core.report import Report

    return {"report.schema.json": Report}


def schema_text(model: Any) -> str:
    """The published form of one model's JSON schema (as serialised: aliases, sorted keys, two-space indent)."""
    schema = model.model_json_schema(mode="serialization")
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(docs_dir: Path) -> list[Path]:
    out = docs_dir / "schemas"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in documents().items():
        (out / name).write_text(schema_text(model), encoding="utf-8")
        written.append(out / name)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(path)

"""Export the contracts as JSON Schema files (``python -m citystream.schemas.export``).

The files in ``schemas/jsonschema/`` are generated from the pydantic models, committed, and
checked by a test: a model change without a re-export fails the suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson

from citystream.schemas.events import EVENT_MODELS, SCHEMA_VERSION

OUT_DIR = Path(__file__).resolve().parent / "jsonschema"


def rendered() -> dict[str, bytes]:
    """File name -> JSON Schema bytes for every contract."""
    out: dict[str, bytes] = {}
    for kind, model in sorted(EVENT_MODELS.items()):
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"urn:citystream:schema:{kind}:v{SCHEMA_VERSION}"
        out[f"{kind}.json"] = orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    return out


def main() -> int:
    """Write the schema files; returns the number written."""
    OUT_DIR.mkdir(exist_ok=True)
    files = rendered()
    for name, data in files.items():
        (OUT_DIR / name).write_bytes(data)
    print(f"wrote {len(files)} schemas to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

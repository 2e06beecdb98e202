"""The JSON Schema of service.yaml as a file, for editors: shipped in runtime/ and in every service.

`python -m scaffold.schema` rewrites runtime/service.schema.json from runtime.config's table;
a test fails when the committed file and the table disagree.
"""
from __future__ import annotations

import json
from pathlib import Path

import runtime
from runtime.config import json_schema

#: The schema shipped with the runtime package (package data: runtime = *.json).
PACKAGED = Path(runtime.__file__).resolve().parent / "service.schema.json"
#: Where a generated service keeps its copy, relative to the service folder.
IN_SERVICE = Path(".kiln") / "service.schema.json"


def schema_text() -> str:
    """The schema as the JSON text written to both places."""
    return json.dumps(json_schema(), indent=2) + "\n"


def write_schema(path: Path) -> Path:
    """Write the schema to PATH, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")
    return path


if __name__ == "__main__":  # pragma: no cover
    print(write_schema(PACKAGED))

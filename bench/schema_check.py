"""Time the accept/refuse check of a valid body: jsonschema, kiln's old hand compiler, fastjsonschema.

    .venv/bin/python bench/schema_check.py [--old REV] [--repeat 7]

Two schemas, as runtime/docs/validation.py builds them: the predict body of bench/iris-service
(from the app's own OpenAPI document) with `{"input": [[5.1, 3.5, 1.4, 0.2]]}`, and an object
with 5 typed properties. Each check is timed with timeit, best of --repeat, and shown as a
ratio to jsonschema's Draft4Validator.is_valid measured in the same run. The old hand compiler
(runtime/docs/schema_check.py before fastjsonschema) is read from git: REV, else the newest
commit whose schema_check.py still has it; without git it is left out.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jsonschema import Draft4Validator

from runtime.docs.schema_check import compile_check
from runtime.docs.validation import FORMATS, to_json_schema

PATHS = ("runtime/docs/schema_check.py", "runtime/schema_check.py")
ITEM = {"type": "object", "required": ["name", "price"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100},
                       "price": {"type": "number", "minimum": 0},
                       "quantity": {"type": "integer", "minimum": 1},
                       "tags": {"type": "array", "items": {"type": "string"}},
                       "added": {"type": "string", "format": "date-time", "nullable": True}}}
ITEM_BODY = {"name": "lamp", "price": 12.5, "quantity": 3, "tags": ["home", "light"],
             "added": "2026-11-23T05:00:00+00:00"}
PREDICT_BODY = {"input": [[5.1, 3.5, 1.4, 0.2]]}


def predict_schema() -> dict[str, Any]:
    """The JSON Schema kiln checks POST /api/v1.0/predict bodies against, from the iris app."""
    from runtime.app import create_app
    from runtime.docs import validation

    os.environ.setdefault("KILN_AUTH_TOKENS", "bench:bench")
    app = create_app(ROOT / "bench" / "iris-service")
    with app.app_context():
        checks = app.extensions[validation.KEY].get()
    schema: dict[str, Any] = checks[("/api/v1.0/predict", "POST")].schema
    return schema


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout


def _module(source: str) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "old_schema_check.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("old_schema_check", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def old_compiler(rev: str | None) -> tuple[str, Callable[..., Any]] | None:
    """The hand compiler's compile_check and the commit it came from, or None."""
    try:
        revs = [rev] if rev else _git("log", "--format=%H", "--", *PATHS).split()
        for commit in revs:
            for path in PATHS:
                try:
                    source = _git("show", f"{commit}:{path}")
                except subprocess.CalledProcessError:
                    continue
                if "def compile_schema" in source:
                    return commit[:7], _module(source).compile_check
    except (OSError, subprocess.CalledProcessError):
        pass
    return None


def best(check: Callable[[Any], bool], body: Any, repeat: int) -> float:
    """Seconds per call, best of REPEAT rounds of about 0.2 s."""
    assert check(body), "the bench body must be valid"
    timer = timeit.Timer(lambda: check(body))
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", metavar="REV", help="git revision holding the hand compiler")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    old = old_compiler(args.old)
    cases = [("predict", predict_schema(), PREDICT_BODY),
             ("object, 5 typed properties", to_json_schema(ITEM, {}), ITEM_BODY)]
    print(f"python {sys.version.split()[0]}; best of {args.repeat}; "
          f"ratio = time / jsonschema's time in this run (lower is faster)")
    if old is None:
        print("(the old hand compiler was not found in git: left out)")
    for name, schema, body in cases:
        contenders: list[tuple[str, Callable[[Any], bool]]] = [
            ("jsonschema Draft4Validator.is_valid",
             Draft4Validator(schema, format_checker=FORMATS).is_valid)]
        if old is not None:
            contenders.append((f"hand compiler ({old[0]})", old[1](schema, FORMATS)))
        fast = compile_check(schema, FORMATS)
        assert fast is not None, "fastjsonschema did not compile the schema"
        contenders.append(("fastjsonschema", fast))
        print(f"\n{name}: {body}")
        base = 0.0
        for label, check in contenders:
            seconds = best(check, body, args.repeat)
            base = base or seconds
            print(f"  {label:40} {seconds * 1e6:8.2f} us   x{seconds / base:.3f}")


if __name__ == "__main__":
    main()

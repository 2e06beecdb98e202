"""A fast yes/no check of a parsed JSON body against a Draft 4 JSON Schema, by fastjsonschema.

jsonschema walks a schema on every call (about 200 us for a small nested object);
fastjsonschema generates a Python function from the schema once, a few microseconds a call.
The check only answers "valid or not": the messages still come from jsonschema, which runs
only for bodies found invalid (runtime/docs/validation.py), so a 400 says what jsonschema says.

Both libraries are made to decide alike: fastjsonschema is told the schema is Draft 4, the
formats it checks are the ones jsonschema's FormatChecker checks (any other format passes, as
in jsonschema), and it never fills in defaults (it would write them into the request's
body). A schema it cannot compile, or one that still holds a `$ref` (runtime/docs/validation.py
inlines the document's own; fastjsonschema would fetch any other over the network), gets no
fast check, and jsonschema alone decides. Where the two still differ (fastjsonschema reads `$`
in a pattern as the very end of the string), a body refused here is refused only when
jsonschema finds an error in it.
"""
from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import fastjsonschema
from jsonschema import FormatChecker

log = logging.getLogger("kiln.docs")

Check = Callable[[Any], bool]
DRAFT4 = "http://json-schema.org/draft-04/schema#"
#: Compiled checks kept, by schema: one per documented body, shared by the apps of a process.
CACHE_SIZE = 512


def _nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """Every object in SCHEMA, itself included, wherever it sits."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from _nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _nodes(value)


def _formats(schema: dict[str, Any], formats: FormatChecker) -> dict[str, Check] | None:
    """The formats SCHEMA names, each checked as FORMATS checks it; None when a $ref is left."""
    names: set[str] = set()
    for node in _nodes(schema):
        if isinstance(node.get("$ref"), str):
            return None
        if isinstance(node.get("format"), str):
            names.add(node["format"])
    return {name: functools.partial(formats.conforms, format=name) for name in names}


@functools.lru_cache(maxsize=CACHE_SIZE)
def _compile(text: str, formats: FormatChecker) -> Check | None:
    schema = json.loads(text)
    named = _formats(schema, formats)
    if named is None:
        return None
    try:
        validate = fastjsonschema.compile({**schema, "$schema": DRAFT4}, formats=named,
                                          use_default=False, detailed_exceptions=False)
    except Exception as err:  # noqa: BLE001 - generated code fails in many ways; jsonschema decides
        log.debug("docs: no fast check for %s: %s", text[:200], err)
        return None

    def fits(body: Any) -> bool:
        try:
            validate(body)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return fits


def compile_check(schema: Any, formats: FormatChecker) -> Check | None:
    """A check of bodies against SCHEMA that agrees with jsonschema's Draft 4 validator using
    FORMATS, or None where only jsonschema can tell. Compiled once per schema, then cached."""
    if not isinstance(schema, dict):
        return None
    try:
        text = json.dumps(schema, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # not JSON (a date from YAML, say): nothing to compile
        return None
    if json.loads(text) != schema:  # a key that is not a string (YAML's 1:) would change
        return None
    return _compile(text, formats)

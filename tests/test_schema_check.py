"""The compiled body check agrees with jsonschema's Draft 4 validator, value by value."""
from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft4Validator

from runtime.docs.schema_check import compile_check
from runtime.docs.validation import FORMATS

OBJECT = {"type": "object", "required": ["a"], "additionalProperties": False,
          "properties": {"a": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
                         "b": {"type": ["string", "null"], "minLength": 2, "maxLength": 3,
                               "pattern": "^x"},
                         "c": {"type": "array", "items": {"type": "number"}, "minItems": 1,
                               "maxItems": 2}}}
VALUES: list[Any] = [None, True, False, 0, 1, 1.0, 1.5, -1, "", "x", "xy", "xyzw", "ab", [],
                     [1], [1, 2, 3], ["a"], {}, {"a": 1}, {"a": 0}, {"a": True}, {"a": 1.0},
                     {"a": 1, "b": None}, {"a": 1, "b": "xy"}, {"a": 1, "b": "ab"},
                     {"a": 1, "c": [1.5]}, {"a": 1, "c": []}, {"a": 1, "z": 1},
                     {"a": 1, "c": [True]}, "2026-11-23", "2026-11-23T05:00:00Z",
                     "0f8fad5b-d9cb-469f-a165-70867728950e", "a@b", "10.0.0.1", "::1"]
SCHEMAS: list[dict[str, Any]] = [
    {},
    {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": "string"}, {"type": "array"}, {"type": "object"}, {"type": ["integer", "string"]},
    {"enum": [1, "x", None]}, {"enum": [True]}, {"enum": [0]},
    {"minimum": 1}, {"maximum": 1, "exclusiveMaximum": True}, {"minimum": 0, "maximum": 1},
    {"minLength": 2}, {"maxLength": 1}, {"pattern": "y"},
    {"format": "date"}, {"format": "date-time"}, {"format": "uuid"}, {"format": "email"},
    {"format": "ipv4"}, {"format": "ipv6"}, {"format": "no-such-format"},
    {"items": {"type": "integer"}}, {"minItems": 1}, {"maxItems": 1},
    {"required": ["a"]}, {"properties": {"a": {"type": "string"}}},
    {"additionalProperties": False}, {"additionalProperties": {"type": "integer"}},
    {"minProperties": 1}, {"maxProperties": 1},
    {"allOf": [{"type": "number"}, {"minimum": 1}]},
    {"anyOf": [{"type": "string"}, {"type": "boolean"}]},
    {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    {"not": {"type": "object"}},
    OBJECT,
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(s)[:60] for s in SCHEMAS])
def test_compiled_check_agrees_with_jsonschema(schema: dict[str, Any]) -> None:
    check = compile_check(schema, FORMATS)
    assert check is not None
    validator = Draft4Validator(schema, format_checker=FORMATS)
    disagree = [v for v in VALUES if check(v) != validator.is_valid(v)]
    assert disagree == []


@pytest.mark.parametrize("schema", [
    {"multipleOf": 2}, {"uniqueItems": True}, {"patternProperties": {"^a": {}}},
    {"dependencies": {"a": ["b"]}}, {"items": [{"type": "integer"}]},
    {"$ref": "#/definitions/x"}, {"enum": [[1]]}, {"type": "any"}, {"pattern": "("},
    {"properties": {"a": {"multipleOf": 3}}},
])
def test_keywords_left_to_jsonschema_get_no_compiled_check(schema: dict[str, Any]) -> None:
    assert compile_check(schema, FORMATS) is None

"""Body checks: fastjsonschema decides, jsonschema words the 400, and the two agree."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from jsonschema import Draft4Validator

from runtime.docs.schema_check import compile_check
from runtime.docs.validation import FORMATS, BodyCheck

PREDICT = {"type": "object", "required": ["input"], "properties": {"input": {}}}
ITEM = {"type": "object", "required": ["name", "price"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1},
                       "price": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                       "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2,
                                "uniqueItems": True},
                       "colour": {"type": "string", "enum": ["red", "blue"], "nullable": True},
                       "added": {"type": "string", "format": "date-time"},
                       "id": {"type": "string", "format": "uuid", "readOnly": True},
                       "stock": {"type": "integer", "multipleOf": 10, "default": 0}}}
COMPONENTS = {"Item": ITEM, "Dimensions": {"type": "object", "properties": {
    "width": {"type": "number"}, "unit": {"type": "string", "format": "no-such-format"}}}}
ORDER = {"type": "object", "required": ["item"],
         "properties": {"item": {"$ref": "#/components/schemas/Item"},
                        "size": {"$ref": "#/components/schemas/Dimensions"},
                        "note": {"type": "string", "nullable": True, "maxLength": 5}}}
GOOD_ITEM = {"name": "lamp", "price": 12.5}


@pytest.mark.parametrize(("schema", "body", "message"), [
    # the bench's predict body
    (PREDICT, {"input": [[5.1, 3.5, 1.4, 0.2]]}, None),
    (PREDICT, {"input": None}, None),
    (PREDICT, {"inputs": [1]}, "input: is required"),
    (PREDICT, [1, 2], "body: must be object, got array"),
    # an object with typed properties, as marshmallow documents one
    (ITEM, GOOD_ITEM, None),
    (ITEM, {**GOOD_ITEM, "tags": ["a", "b"], "colour": None, "stock": 20,
            "added": "2026-11-23T05:00:00+00:00"}, None),
    (ITEM, {"name": "lamp"}, "price: is required"),
    (ITEM, {"name": 3, "price": 1}, "name: must be string, got integer"),
    (ITEM, {"name": "", "price": 1}, "name: '' should be non-empty"),
    (ITEM, {"name": "lamp", "price": 0}, "price: 0 is less than or equal to the minimum of 0"),
    (ITEM, {"name": "lamp", "price": True}, "price: must be number, got boolean"),
    (ITEM, {**GOOD_ITEM, "tags": ["a", "a"]}, "tags: ['a', 'a'] has non-unique elements"),
    (ITEM, {**GOOD_ITEM, "tags": ["a", 1]}, "tags.1: must be string, got integer"),
    (ITEM, {**GOOD_ITEM, "colour": "green"}, "colour: 'green' is not one of ['red', 'blue', None]"),
    (ITEM, {**GOOD_ITEM, "added": "yesterday"}, "added: 'yesterday' is not a 'date-time'"),
    (ITEM, {**GOOD_ITEM, "stock": 15}, "stock: 15 is not a multiple of 10"),
    (ITEM, {**GOOD_ITEM, "stock": "ten"}, "stock: must be integer, got string"),
    (ITEM, {**GOOD_ITEM, "id": "x"}, "id: 'x' is not a 'uuid'"),
    (ITEM, {**GOOD_ITEM, "weight": 2}, "weight: is not allowed"),
    # $refs inlined, nullable, a format nobody checks
    (ORDER, {"item": GOOD_ITEM, "size": {"width": 2, "unit": "anything"}, "note": None}, None),
    (ORDER, {"item": {"name": "lamp"}}, "item.price: is required"),
    (ORDER, {"item": GOOD_ITEM, "size": {"width": "wide"}},
     "size.width: must be number, got string"),
    (ORDER, {"item": GOOD_ITEM, "note": "too long"}, "note: 'too long' is too long"),
    (ORDER, {"item": GOOD_ITEM, "note": 5}, "note: must be string or null, got integer"),
])
def test_bodies_accepted_or_refused_with_jsonschemas_words(schema: dict[str, Any], body: Any,
                                                           message: str | None) -> None:
    check = BodyCheck(schema, COMPONENTS, required=True, json_only=True)
    assert check.problems(body) == ([] if message is None else [message])


VALUES: list[Any] = [None, True, False, 0, 1, 1.0, 1.5, -1, 2, 4, "", "x", "xy", "xyzw", "ab",
                     "x\n", [], [1], [1, 1], [1, 2, 3], ["a"], {}, {"a": 1}, {"a": 0},
                     {"a": True}, {"a": 1.0}, {"a": 1, "b": None}, {"a": 1, "b": "xy"},
                     {"a": 1, "b": "ab"}, {"a": 1, "c": [1.5]}, {"a": 1, "c": []},
                     {"a": 1, "z": 1}, {"a": 1, "c": [True]}, {"b": 1}, "2026-11-23",
                     "2026-11-23T05:00:00Z", "2026-11-23T05:00:00+00:00",
                     "0f8fad5b-d9cb-469f-a165-70867728950e", "a@b", "10.0.0.1", "::1",
                     "example.com", "not a uri", "(", "a" * 300]
SCHEMAS: list[dict[str, Any]] = [
    {},
    {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": "string"}, {"type": "array"}, {"type": "object"}, {"type": ["integer", "string"]},
    {"enum": [1, "x", None]}, {"enum": [True]}, {"enum": [0]}, {"enum": [[1], {"a": 1}]},
    {"minimum": 1}, {"maximum": 1, "exclusiveMaximum": True}, {"minimum": 0, "maximum": 1},
    {"multipleOf": 2}, {"minLength": 2}, {"maxLength": 1}, {"pattern": "y"},
    {"format": "date"}, {"format": "date-time"}, {"format": "uuid"}, {"format": "email"},
    {"format": "ipv4"}, {"format": "ipv6"}, {"format": "hostname"}, {"format": "uri"},
    {"format": "regex"}, {"format": "no-such-format"},
    {"items": {"type": "integer"}}, {"items": [{"type": "integer"}], "additionalItems": False},
    {"minItems": 1}, {"maxItems": 1}, {"uniqueItems": True},
    {"required": ["a"]}, {"properties": {"a": {"type": "string"}}},
    {"additionalProperties": False}, {"additionalProperties": {"type": "integer"}},
    {"patternProperties": {"^a": {"type": "string"}}}, {"dependencies": {"a": ["b"]}},
    {"minProperties": 1}, {"maxProperties": 1},
    {"allOf": [{"type": "number"}, {"minimum": 1}]},
    {"anyOf": [{"type": "string"}, {"type": "boolean"}]},
    {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    {"not": {"type": "object"}},
    {"type": "object", "required": ["a"], "additionalProperties": False,
     "properties": {"a": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
                    "b": {"type": ["string", "null"], "minLength": 2, "maxLength": 3,
                          "pattern": "^x"},
                    "c": {"type": "array", "items": {"type": "number"}, "minItems": 1,
                          "maxItems": 2}}},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[str(s)[:60] for s in SCHEMAS])
def test_fast_check_agrees_with_jsonschema(schema: dict[str, Any]) -> None:
    check = compile_check(schema, FORMATS)
    assert check is not None
    validator = Draft4Validator(schema, format_checker=FORMATS)
    assert [v for v in VALUES if check(v) != validator.is_valid(v)] == []


def test_where_a_pattern_disagrees_jsonschema_has_the_last_word() -> None:
    check = BodyCheck({"type": "string", "pattern": "^x$"}, {}, required=True, json_only=True)
    assert check.problems("x\n") == []  # re.search("^x$", "x\n") matches, as jsonschema says
    assert check.problems("y") == ["body: 'y' does not match '^x$'"]


@pytest.mark.parametrize("schema", [
    {"$ref": "#/definitions/x"}, {"$ref": "http://127.0.0.1:9/schema.json"},
    {"properties": {"a": {"allOf": [{"$ref": "file:///etc/schema.json"}]}}},
    {"type": "any"}, {"pattern": "("}, {"properties": {1: {"type": "string"}}},
])
def test_schemas_left_to_jsonschema_alone(schema: dict[str, Any]) -> None:
    assert compile_check(schema, FORMATS) is None


def test_defaults_are_not_written_into_the_body() -> None:
    body: dict[str, Any] = {"name": "lamp", "price": 1}
    assert BodyCheck(ITEM, {}, required=True, json_only=True).problems(body) == []
    assert body == {"name": "lamp", "price": 1}


def test_one_compiled_check_per_schema() -> None:
    for schema in (PREDICT, ITEM):
        check = compile_check(schema, FORMATS)
        assert check is not None
        assert compile_check(copy.deepcopy(schema), FORMATS) is check

"""Compile a Draft 4 JSON Schema into a fast yes/no check of a parsed JSON body.

jsonschema walks a schema on every call (about 200 us for a small nested object); a compiled
check is a tree of closures, a few microseconds. It answers only "valid or not": the
messages still come from jsonschema, which runs only for bodies found invalid. A schema that
uses a keyword not compiled here gets no fast check (`compile_check` returns None), so the
two can never disagree. Unknown keywords are ignored, as jsonschema ignores them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jsonschema import FormatChecker

Check = Callable[[Any], bool]


class NotCompiled(Exception):
    """Raised inside compilation when a keyword is left to jsonschema."""


#: Keywords jsonschema's Draft 4 validator acts on that this module does not compile.
LEFT_TO_JSONSCHEMA = {"patternProperties", "dependencies", "uniqueItems", "multipleOf",
                      "additionalItems", "$ref"}

_TYPES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_SCALARS = (str, int, float, bool, type(None))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Any, b: Any) -> bool:
    """JSON equality of two scalars: true is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _anything(value: Any) -> bool:
    return True


def _all(checks: list[Check]) -> Check:
    checks = [c for c in checks if c is not _anything]
    if not checks:
        return _anything
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> bool:
        for one in checks:
            if not one(value):
                return False
        return True

    return check


def _type(schema: dict[str, Any]) -> Check | None:
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = kind if isinstance(kind, list) else [kind]
    if any(k not in _TYPES for k in kinds):
        raise NotCompiled("type")
    tests = [_TYPES[k] for k in kinds]
    if len(tests) == 1:
        return tests[0]
    return lambda value: any(test(value) for test in tests)


def _enum(schema: dict[str, Any]) -> Check | None:
    if "enum" not in schema:
        return None
    values = schema["enum"]
    if not isinstance(values, list) or not all(isinstance(v, _SCALARS) for v in values):
        raise NotCompiled("enum")
    return lambda value: isinstance(value, _SCALARS) and any(_same(value, v) for v in values)


def _numbers(schema: dict[str, Any]) -> Check | None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is None and high is None:
        return None
    low_open, high_open = bool(schema.get("exclusiveMinimum")), bool(schema.get("exclusiveMaximum"))

    def check(value: Any) -> bool:
        if not _is_number(value):
            return True
        if low is not None and (value <= low if low_open else value < low):
            return False
        return not (high is not None and (value >= high if high_open else value > high))

    return check


def _strings(schema: dict[str, Any], formats: FormatChecker) -> Check | None:
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    fmt = schema.get("format")
    if shortest is None and longest is None and pattern is None and fmt is None:
        return None

    def check(value: Any) -> bool:
        if fmt is not None and not formats.conforms(value, fmt):
            return False
        if not isinstance(value, str):
            return True
        if shortest is not None and len(value) < shortest:
            return False
        if longest is not None and len(value) > longest:
            return False
        return pattern is None or pattern.search(value) is not None

    return check


def _arrays(schema: dict[str, Any], formats: FormatChecker) -> Check | None:
    items = schema.get("items")
    if isinstance(items, list):
        raise NotCompiled("items as a list")
    each = compile_schema(items, formats) if isinstance(items, dict) else None
    shortest, longest = schema.get("minItems"), schema.get("maxItems")
    if each is None and shortest is None and longest is None:
        return None

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        if shortest is not None and len(value) < shortest:
            return False
        if longest is not None and len(value) > longest:
            return False
        if each is not None:
            for item in value:
                if not each(item):
                    return False
        return True

    return check


def _objects(schema: dict[str, Any], formats: FormatChecker) -> Check | None:
    required = schema.get("required") or []
    extra = schema.get("additionalProperties", True)
    properties = {name: compile_schema(sub, formats)
                  for name, sub in (schema.get("properties") or {}).items()}
    if extra is True:  # an unconstrained known property needs no call
        properties = {n: c for n, c in properties.items() if c is not _anything}
    extra_check = compile_schema(extra, formats) if isinstance(extra, dict) else None
    fewest, most = schema.get("minProperties"), schema.get("maxProperties")
    if not (required or properties or extra is not True or fewest is not None or most is not None):
        return None

    known = tuple(properties.items())

    def check(value: Any) -> bool:
        # Loops, not any()/all() over generators: this runs on every request with a body.
        if not isinstance(value, dict):
            return True
        for name in required:
            if name not in value:
                return False
        if fewest is not None and len(value) < fewest:
            return False
        if most is not None and len(value) > most:
            return False
        if extra is True:  # only the known properties need a look
            for name, known_check in known:
                if name in value and not known_check(value[name]):
                    return False
            return True
        for name, item in value.items():
            sub = properties.get(name)
            if sub is not None:
                if not sub(item):
                    return False
            elif extra is False or (extra_check is not None and not extra_check(item)):
                return False
        return True

    return check


def _combinators(schema: dict[str, Any], formats: FormatChecker) -> list[Check]:
    checks: list[Check] = []
    if isinstance(schema.get("allOf"), list):
        checks.append(_all([compile_schema(s, formats) for s in schema["allOf"]]))
    if isinstance(schema.get("anyOf"), list):
        any_of = [compile_schema(s, formats) for s in schema["anyOf"]]
        checks.append(lambda value: any(check(value) for check in any_of))
    if isinstance(schema.get("oneOf"), list):
        one_of = [compile_schema(s, formats) for s in schema["oneOf"]]
        checks.append(lambda value: sum(1 for check in one_of if check(value)) == 1)
    if isinstance(schema.get("not"), dict):
        negated = compile_schema(schema["not"], formats)
        checks.append(lambda value: not negated(value))
    return checks


def compile_schema(schema: Any, formats: FormatChecker) -> Check:
    """SCHEMA as a check; raises NotCompiled for keywords left to jsonschema."""
    if not isinstance(schema, dict):
        raise NotCompiled("schema is not an object")
    if LEFT_TO_JSONSCHEMA & set(schema):
        raise NotCompiled(", ".join(sorted(LEFT_TO_JSONSCHEMA & set(schema))))
    parts = [_type(schema), _enum(schema), _numbers(schema), _strings(schema, formats),
             _arrays(schema, formats), _objects(schema, formats)]
    return _all([p for p in parts if p is not None] + _combinators(schema, formats))


def compile_check(schema: Any, formats: FormatChecker) -> Check | None:
    """A fast check agreeing with jsonschema's Draft 4 validator, or None when not compiled."""
    try:
        return compile_schema(schema, formats)
    except (NotCompiled, re.error):
        return None

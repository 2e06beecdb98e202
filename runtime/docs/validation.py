"""Refuse a JSON body that does not match its route's documented requestBody, before user code.

The schemas come from the service's OpenAPI document (runtime/docs/openapi.py), turned into JSON
Schema once per app: OpenAPI 3.0's `nullable` becomes a `null` type, `$ref`s to components
are inlined, and readOnly properties are not required in a request. A body is checked by
fastjsonschema's code generated once per schema (runtime/docs/schema_check.py), a few
microseconds, so the predict path stays cheap; only a body found invalid goes through
jsonschema's Draft 4 validator (the draft OpenAPI 3.0 schemas follow) for messages that name
the fields.
"""
from __future__ import annotations

import datetime
import functools
import ipaddress
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, Response
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from runtime.docs.openapi import openapi_path
from runtime.docs.schema_check import compile_check
from runtime.serving.lifecycle import UNMATCHED, Current, lifecycle, route_label
from runtime.serving.responses import ANY_CONTENT_TYPE, error

log = logging.getLogger("kiln.docs")
KEY = "kiln_validation"
MAX_ERRORS = 10
JSON_TYPES = ("application/json",)

FORMATS = FormatChecker(formats=())


@FORMATS.checks("uuid", raises=ValueError)
def _uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(uuid.UUID(value))


@FORMATS.checks("date", raises=ValueError)
def _date(value: object) -> bool:
    return not isinstance(value, str) or bool(datetime.date.fromisoformat(value))


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(datetime.datetime.fromisoformat(value))


@FORMATS.checks("email")
def _email(value: object) -> bool:
    return not isinstance(value, str) or "@" in value


@FORMATS.checks("ipv4", raises=ValueError)
def _ipv4(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv4Address(value))


@FORMATS.checks("ipv6", raises=ValueError)
def _ipv6(value: object) -> bool:
    return not isinstance(value, str) or bool(ipaddress.IPv6Address(value))


def to_json_schema(schema: Any, components: dict[str, Any],
                   seen: tuple[str, ...] = ()) -> Any:
    """An OpenAPI 3.0 Schema Object as plain Draft 4 JSON Schema, its $refs inlined."""
    if isinstance(schema, list):
        return [to_json_schema(item, components, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in seen:  # a recursive schema: accept anything below the second visit
            return {}
        name = ref.rsplit("/", 1)[-1]
        return to_json_schema(components.get(name, {}), components, (*seen, ref))
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {k: to_json_schema(v, components, seen) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value, components, seen)
        elif key != "nullable":
            out[key] = value
    if schema.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    properties = out.get("properties")
    if isinstance(out.get("required"), list) and isinstance(properties, dict):
        read_only = {n for n, p in properties.items() if isinstance(p, dict) and p.get("readOnly")}
        if read_only:
            out["required"] = [n for n in out["required"] if n not in read_only]
            if not out["required"]:
                del out["required"]
    return out


def _field(err: ValidationError, name: str | None = None) -> str:
    parts = [str(p) for p in err.absolute_path]
    if name is not None:
        parts.append(name)
    return ".".join(parts) or "body"


def _describe(err: ValidationError) -> list[str]:
    """One entry per field: `price: must be number, got string`."""
    if err.validator == "required":
        missing = [n for n in err.validator_value
                   if isinstance(err.instance, dict) and n not in err.instance]
        return [f"{_field(err, n)}: is required" for n in missing] or [
            f"{_field(err)}: {err.message}"]
    if err.validator == "type":
        expected = err.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [f"{_field(err)}: must be {expected}, got {_json_type(err.instance)}"]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = set(err.schema.get("properties") or {})
        extra = sorted(str(k) for k in err.instance if k not in known)
        return [f"{_field(err, k)}: is not allowed" for k in extra] or [err.message]
    return [f"{_field(err)}: {err.message}"]


def _json_type(value: Any) -> str:
    for name, kind in (("null", type(None)), ("boolean", bool), ("integer", int),
                       ("number", float), ("string", str), ("array", list), ("object", dict)):
        if isinstance(value, kind):
            return name
    return type(value).__name__


class BodyCheck:
    """The documented JSON body of one route and method."""

    def __init__(self, schema: dict[str, Any], components: dict[str, Any], required: bool,
                 json_only: bool, any_content_type: bool = False):
        self.required = required
        self.json_only = json_only
        #: Read as JSON whatever the Content-Type (protocol clients send none).
        self.any_content_type = any_content_type
        self.schema = to_json_schema(schema, components)
        self.validator = Draft4Validator(self.schema, format_checker=FORMATS)
        self.fits = compile_check(self.schema, FORMATS) or self.validator.is_valid

    def problems(self, body: Any) -> list[str]:
        """What is wrong with BODY, one entry per field; empty when it fits."""
        if self.fits(body):
            return []
        found: list[str] = []
        for err in sorted(self.validator.iter_errors(body), key=lambda e: list(map(str, e.path))):
            found.extend(_describe(err))
        # Draft 4 reports each missing key with the whole required list: keep one of each.
        return list(dict.fromkeys(found))[:MAX_ERRORS]


def checks_from_spec(app: Flask, spec: dict[str, Any]) -> dict[tuple[str, str], BodyCheck]:
    """A BodyCheck for each (URL rule, METHOD) whose operation documents a JSON body."""
    components = spec.get("components", {}).get("schemas", {})
    bodies = spec.get("components", {}).get("requestBodies", {})
    checks: dict[tuple[str, str], BodyCheck] = {}
    for rule in app.url_map.iter_rules():
        path = openapi_path(rule.rule)
        item = spec["paths"].get(path)
        if item is None and path.endswith("/"):
            item = spec["paths"].get(path[:-1])
        if not isinstance(item, dict):
            continue
        for method in rule.methods or ():
            operation = item.get(method.lower())
            if not isinstance(operation, dict):
                continue
            body = operation.get("requestBody")
            if isinstance(body, dict) and isinstance(body.get("$ref"), str):
                body = bodies.get(body["$ref"].rsplit("/", 1)[-1])
            if not isinstance(body, dict) or not isinstance(body.get("content"), dict):
                continue
            content = body["content"]
            media = next((m for m in content if m.split(";")[0].strip() in JSON_TYPES
                          or m.split(";")[0].strip().endswith("+json")), None)
            if media is None:
                continue
            schema = (content[media] or {}).get("schema") or {}
            json_only = all(m == media for m in content)
            try:
                checks[(route_label(rule.rule), method)] = BodyCheck(
                    schema, components, bool(body.get("required")), json_only,
                    body.get(ANY_CONTENT_TYPE) is True)
            except Exception as err:  # noqa: BLE001 - a schema jsonschema refuses is unchecked
                log.warning("docs: %s %s: request body not checked: %s", method, rule.rule, err)
    return checks


class _Lazy:
    """The app's BodyChecks, built from its document on the first request that needs them."""

    def __init__(self, app: Flask, get_spec: Callable[[], dict[str, Any]]):
        self.app = app
        self.get_spec = get_spec
        self.checks: dict[tuple[str, str], BodyCheck] | None = None
        self.lock = threading.Lock()

    def get(self) -> dict[tuple[str, str], BodyCheck]:
        checks = self.checks
        if checks is None:
            with self.lock:
                if self.checks is None:
                    self.checks = checks_from_spec(self.app, self.get_spec())
                checks = self.checks
        return checks


def _validate(lazy: _Lazy, current: Current) -> Response | None:
    if current.route == UNMATCHED:
        return None
    check = lazy.get().get((current.route, current.method))
    if check is None:
        return None
    request = current.request
    empty = not current.length and "chunked" not in request.environ.get(
        "HTTP_TRANSFER_ENCODING", "").lower()
    if check.any_content_type:
        # A body that is not JSON (Triton's binary extension, say) is left to the view.
        body = request.get_json(force=True, silent=True)
        problems = check.problems(body) if body is not None else []
    elif not request.is_json:
        if check.json_only and (check.required or not empty):
            return error(415, f"{current.method} {request.path} expects a JSON body "
                              f"(Content-Type: application/json)")
        return None
    elif empty and not check.required:
        return None
    else:
        problems = check.problems(request.get_json())
    if problems:
        return error(400, "request body does not match the documented schema: "
                          + "; ".join(problems))
    return None


def init_app(app: Flask, get_spec: Callable[[], dict[str, Any]]) -> None:
    """Check JSON bodies against the document GET_SPEC returns (built on the first request)."""
    app.extensions[KEY] = lazy = _Lazy(app, get_spec)
    lifecycle(app).gates.append(functools.partial(_validate, lazy))

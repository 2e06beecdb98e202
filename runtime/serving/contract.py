"""The typed predict contract: `PredictInput` and `PredictOutput` in the service's app/schemas.py.

With `PredictInput`, predict's input is an object loaded by that marshmallow schema (400
naming each bad field, before any user code runs) and its fields are predict's keyword
arguments. `PredictOutput` documents `prediction`. Field examples (`metadata={"example": ...}`)
make the request example of /docs and of `kiln invoke --example`, and the fields' types the
tensors of the Open Inference Protocol's model metadata. Pure: schemas in, dicts out.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import Any

import marshmallow
from marshmallow import fields

INPUT = "PredictInput"
OUTPUT = "PredictOutput"
COMPONENTS = "#/components/schemas/"


class InputError(ValueError):
    """Raised when a predict input does not fit what the service takes; answered with 400."""


@dataclass(frozen=True)
class Contract:
    """The service's PredictInput and PredictOutput schema classes; None where not declared."""

    input: type[marshmallow.Schema] | None = None
    output: type[marshmallow.Schema] | None = None

    @classmethod
    def of(cls, schemas: ModuleType | None) -> Contract:
        """The contract app/schemas.py declares (none when it has neither class)."""
        return cls(_schema_class(schemas, INPUT), _schema_class(schemas, OUTPUT))

    def load(self, value: Any, where: str = "input") -> dict[str, Any]:
        """VALUE loaded by PredictInput: predict's keyword arguments.

        Raises InputError naming every bad field, e.g. `input.num1: Not a valid number.`
        """
        assert self.input is not None
        if not isinstance(value, Mapping):
            raise InputError(f"{where}: must be an object with the fields of {INPUT} "
                             f"({', '.join(self.input_names())}), got {_json_type(value)}")
        try:
            loaded = self._input_schema.load(value)
        except marshmallow.ValidationError as err:
            problems = list(_problems(err.messages, where))
            raise InputError("; ".join(problems) or f"{where}: {err}") from err
        return dict(loaded)

    # One instance each, made on first use: a marshmallow Schema costs about three loads to
    # make (its fields are copied), and its load keeps no state between calls.
    @cached_property
    def _input_schema(self) -> marshmallow.Schema:
        assert self.input is not None
        return self.input()

    @cached_property
    def _output_schema(self) -> marshmallow.Schema:
        assert self.output is not None
        return self.output()

    def input_names(self) -> list[str]:
        """The names a caller gives PredictInput's fields, in declaration order."""
        return [name for name, _ in _load_fields(self._input_schema)] if self.input else []

    def output_names(self) -> list[str]:
        """The names of PredictOutput's fields as they appear in an answer."""
        if self.output is None:
            return []
        return [field.data_key or name for name, field in self._output_schema.fields.items()
                if not field.load_only]

    def example(self) -> dict[str, Any] | None:
        """PredictInput's field examples as one input; None without PredictInput or examples."""
        return _example(self._input_schema) if self.input is not None else None

    def input_tensors(self) -> list[dict[str, Any]]:
        """PredictInput's fields as Open Inference Protocol tensor metadata."""
        if self.input is None:
            return []
        return [tensor_metadata(name, field) for name, field in _load_fields(self._input_schema)]

    def output_tensors(self) -> list[dict[str, Any]]:
        """PredictOutput's fields as Open Inference Protocol tensor metadata."""
        if self.output is None:
            return []
        return [tensor_metadata(field.data_key or name, field)
                for name, field in self._output_schema.fields.items() if not field.load_only]

    def body_schema(self, base: dict[str, Any]) -> dict[str, Any]:
        """The predict body schema: BASE's `input` replaced by a reference to PredictInput."""
        if self.input is None:
            return base
        schema = copy.deepcopy(base)
        schema.pop("example", None)
        schema["properties"]["input"] = {"$ref": COMPONENTS + INPUT}
        return schema

    def answer_schema(self, base: dict[str, Any]) -> dict[str, Any]:
        """The predict answer schema: BASE's `prediction` as a reference to PredictOutput."""
        if self.output is None:
            return base
        schema = copy.deepcopy(base)
        schema["properties"]["prediction"] = {"$ref": COMPONENTS + OUTPUT}
        return schema


def _schema_class(schemas: ModuleType | None, name: str) -> type[marshmallow.Schema] | None:
    value = getattr(schemas, name, None) if schemas is not None else None
    if isinstance(value, type) and issubclass(value, marshmallow.Schema):
        return value
    return None


def _load_fields(schema: marshmallow.Schema) -> Iterator[tuple[str, fields.Field]]:
    """(name a caller uses, field) of each field a load reads."""
    for name, field in schema.fields.items():
        if not field.dump_only:
            yield field.data_key or name, field


def _example(schema: marshmallow.Schema) -> dict[str, Any] | None:
    found: dict[str, Any] = {}
    for name, field in _load_fields(schema):
        value = _field_example(field)
        if value is not None:
            found[name] = value
    return found or None


def _field_example(field: fields.Field) -> Any:
    if "example" in field.metadata:
        return field.metadata["example"]
    if isinstance(field, fields.Nested) and isinstance(field.schema, marshmallow.Schema):
        nested = _example(field.schema)
        if nested is not None and field.many:
            return [nested]
        return nested
    if isinstance(field, fields.List):
        inner = _field_example(field.inner)
        return [inner] if inner is not None else None
    return None


def datatype(field: fields.Field) -> str:
    """The Open Inference Protocol datatype of a marshmallow field's values."""
    if isinstance(field, fields.List):
        return datatype(field.inner)
    if isinstance(field, fields.Boolean):
        return "BOOL"
    if isinstance(field, fields.Integer):
        return "INT64"
    if isinstance(field, fields.Number):
        return "FP64"
    return "BYTES"


def tensor_metadata(name: str, field: fields.Field) -> dict[str, Any]:
    """`{"name", "datatype", "shape"}` of one field; -1 is a dimension of any size."""
    shape = [-1]
    inner: fields.Field = field
    while isinstance(inner, fields.List):
        shape.append(-1)
        inner = inner.inner
    return {"name": name, "datatype": datatype(field), "shape": shape}


def _problems(messages: Any, where: str) -> Iterator[str]:
    """`input.num1: Not a valid number.` for each message of a marshmallow ValidationError."""
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            yield from _problems(value, where if key == "_schema" else f"{where}.{key}")
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        yield f"{where}: {' '.join(messages)}"
    elif isinstance(messages, list):
        for index, value in enumerate(messages):
            yield from _problems(value, f"{where}.{index}")
    else:
        yield f"{where}: {messages}"


def _json_type(value: Any) -> str:
    for name, kind in (("null", type(None)), ("a boolean", bool), ("a number", (int, float)),
                       ("a string", str), ("an array", list)):
        if isinstance(value, kind):
            return name
    return type(value).__name__

"""Request and response bodies: each Schema class becomes #/components/schemas/<ClassName> in /docs.

These are marshmallow 4 Schemas: put a field's description and example in
`metadata={...}`, and use `load_default=` / `dump_default=` (not `missing=` / `default=`).
"""
from marshmallow import Schema, fields


class AddNumbers(Schema):
    """The body of POST /add-numbers."""

    num1 = fields.Float(required=True, metadata={"description": "The first number.", "example": 2})
    num2 = fields.Float(required=True, metadata={"description": "The second number.", "example": 5})


class AddNumbersResult(Schema):
    """The answer of POST /add-numbers."""

    result = fields.Float(required=True, metadata={"description": "num1 + num2.", "example": 7})

"""Marshmallow schemas: each becomes #/components/schemas/<ClassName>."""
from marshmallow import Schema, fields, validate


class DimensionsSchema(Schema):
    width = fields.Float(required=True, validate=validate.Range(min=0))
    height = fields.Float(required=True, validate=validate.Range(min=0))


class ItemSchema(Schema):
    id = fields.Int(dump_only=True)
    name = fields.Str(required=True, validate=validate.Length(min=1, max=80))
    price = fields.Float(required=True, validate=validate.Range(min=0))
    tags = fields.List(fields.Str(), metadata={"description": "Free-form labels."})
    dimensions = fields.Nested(DimensionsSchema)


class ReviewSchema(Schema):
    stars = fields.Int(required=True, validate=validate.Range(min=1, max=5))
    text = fields.Str(allow_none=True)


class ErrorSchema(Schema):
    error = fields.Str(required=True)
    request_id = fields.Str(required=True)

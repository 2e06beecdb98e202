from marshmallow import Schema, fields


class ThingSchema(Schema):
    name = fields.Str(required=True)

"""PredictInput for the batch tests: columns by name, numbers loaded from CSV text."""
from marshmallow import Schema, fields


class PredictInput(Schema):
    x = fields.Float(required=True)
    weight = fields.Int(load_default=1)

"""The predict contract: PredictInput's fields are predict's keyword arguments."""
from marshmallow import Schema, fields, validate


class PredictInput(Schema):
    features = fields.List(fields.Float(), required=True,
                           metadata={"description": "Measurements.", "example": [1.5, 2.5, 3.0]})
    count = fields.Int(required=True, validate=validate.Range(min=0),
                       metadata={"description": "How many times.", "example": 2})
    label = fields.Str(load_default="none", metadata={"description": "A name.", "example": "cat"})


class PredictOutput(Schema):
    total = fields.Float(metadata={"description": "sum(features) * count.", "example": 14.0})
    label = fields.Str(metadata={"description": "The label, upper-cased.", "example": "CAT"})

"""Contestant (c): the model as rest-model-service's MLModel class (ml_base), per its README.

rest_config.yaml names this class; the service serves it at
POST /api/models/iris_model/prediction with the same body as the other contestants.
"""
from __future__ import annotations

from ml_base import MLModel
from pydantic import BaseModel

from apps.iris import load


class IrisInput(BaseModel):
    """Rows of four iris measurements."""

    input: list[list[float]]


class IrisOutput(BaseModel):
    """One class index per row."""

    prediction: list[int]


class IrisModel(MLModel):
    """The iris LogisticRegression, loaded once per worker."""

    display_name = "Iris model"
    qualified_name = "iris_model"
    description = "Iris LogisticRegression (kiln benchmark)."
    version = "1.0.0"
    input_schema = IrisInput
    output_schema = IrisOutput

    def __init__(self) -> None:
        self._model = load()

    def predict(self, data: IrisInput) -> IrisOutput:
        return IrisOutput(prediction=self._model.predict(data.input).tolist())

"""Tests of {{ cookiecutter.id }}: skipped until the model file exists, then they must pass (`pytest`)."""
import pickle
from pathlib import Path

import pytest

from runtime.config import load_service
from runtime.testing import client as service_client

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = load_service(ROOT).get("model")
MODEL = SETTINGS.get("path") or SETTINGS["class_path"]
MODEL_FILE = ROOT / MODEL
# `module:Class` (or class_path) names a class to import instead of a file.
HAS_MODEL = MODEL_FILE.is_file() or "class_path" in SETTINGS or (
    ":" in MODEL and not MODEL_FILE.exists())

pytestmark = pytest.mark.skipif(
    not HAS_MODEL, reason=f"no model yet: save your model to {MODEL_FILE} (see README.md)")


@pytest.fixture(scope="module")
def client():
    """A test client of this service, with the model loaded."""
    return service_client(ROOT)


def _row_width():
    """How many features one row has, as scikit-learn models say (n_features_in_)."""
    if "class_path" in SETTINGS or not MODEL_FILE.is_file():
        return None
    if MODEL_FILE.suffix in (".pkl", ".pickle"):
        with MODEL_FILE.open("rb") as handle:
            model = pickle.load(handle)
    else:
        import joblib

        model = joblib.load(MODEL_FILE)
    return getattr(model, "n_features_in_", None)


def test_model_loads(client):
    response = client.get("/api/v1.0/health/status")
    assert response.status_code == 200, response.get_json()


def test_predict_answers_one_prediction_per_row(client):
    width = _row_width()
    if width is None:
        pytest.skip("the model does not say how many features a row has (n_features_in_); "
                    "write a test here with real rows")
    rows = [[0.0] * width, [1.0] * width]
    response = client.post("/api/v1.0/predict", json={"input": rows})
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["prediction"]) == 2

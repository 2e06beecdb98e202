"""The typed predict contract (PredictInput, PredictOutput) and the model template's model keys."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from openapi_spec_validator import validate

from runtime import cli as kiln_cli
from runtime.app import create_app, service_of
from runtime.config import parse_service
from runtime.errors import ConfigError
from runtime.testing import make_app
from tests.support import SERVICES, write_service

TYPED = SERVICES / "typed"
EXAMPLE = {"features": [1.5, 2.5, 3.0], "count": 2, "label": "cat"}


def calls(app: Any) -> list[dict[str, Any]]:
    """What the typed service's predict() was called with, in this app."""
    found: list[dict[str, Any]] = service_of(app).code.predict.__globals__["CALLS"]
    return found


def test_predict_input_fields_are_predicts_keyword_arguments() -> None:
    app = make_app(TYPED)
    answer = app.test_client().post("/api/v1.0/predict",
                                    json={"input": {"features": [1, 2], "count": 3,
                                                    "label": " dog "}})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["prediction"] == {"total": 9.0, "label": "DOG"}
    # preprocess(**loaded) answered a dict: spread into predict; label's default filled in.
    app.test_client().post("/api/v1.0/predict", json={"input": {"features": [1], "count": 1}})
    assert calls(app) == [{"features": [1.0, 2.0], "count": 3, "label": "dog"},
                          {"features": [1.0], "count": 1, "label": "none"}]


@pytest.mark.parametrize(("given", "named"), [
    ({"features": [1.0]}, ["input.count: is required"]),
    ({"features": [1.0, "x"], "count": 2}, ["input.features.1: must be number"]),
    ({"features": [1.0], "count": "two"}, ["input.count: must be integer"]),
    ({"features": [1.0], "count": -1}, ["input.count"]),
    ({"features": [1.0], "count": 1, "colour": "red"}, ["input.colour: is not allowed"]),
    ([1, 2], ["input: must be object"]),
])
def test_a_bad_input_answers_400_naming_each_field_and_predict_is_not_called(
        given: Any, named: list[str]) -> None:
    app = make_app(TYPED)
    answer = app.test_client().post("/api/v1.0/predict", json={"input": given})
    assert answer.status_code == 400, answer.get_json()
    for name in named:
        assert name in answer.get_json()["error"]
    assert calls(app) == []


def test_marshmallow_names_each_bad_field_past_the_documented_schema(tmp_path: Path) -> None:
    # A validator the OpenAPI schema cannot say: marshmallow's load, before predict, answers.
    folder = write_service(tmp_path / "even", {"id": "even"}, {
        "app/schemas.py": "from marshmallow import Schema, ValidationError, fields\n\n\n"
                          "def even(n):\n    if n % 2:\n"
                          "        raise ValidationError('must be even')\n\n\n"
                          "def word(text):\n    if not text.strip():\n"
                          "        raise ValidationError('must hold a word')\n\n\n"
                          "class PredictInput(Schema):\n"
                          "    n = fields.Int(required=True, validate=even)\n"
                          "    tags = fields.List(fields.Str(validate=word))\n",
        "app/predict.py": "CALLS = []\n\n\ndef predict(n, tags=()):\n"
                          "    CALLS.append(n)\n    return n // 2\n"})
    app = make_app(folder)
    answer = app.test_client().post("/api/v1.0/predict",
                                    json={"input": {"n": 3, "tags": ["a", " "]}})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "input.n: must be even; input.tags.1: must hold a word"
    assert calls(app) == []
    assert app.test_client().post("/api/v1.0/predict",
                                  json={"input": {"n": 4}}).get_json()["prediction"] == 2


def test_the_docs_show_the_contract_and_its_example() -> None:
    spec = make_app(TYPED).test_client().get("/docs/specs.json").get_json()
    validate(spec)
    assert "x-kiln-warnings" not in spec
    fields = spec["components"]["schemas"]["PredictInput"]["properties"]
    assert {name: f["example"] for name, f in fields.items()} == EXAMPLE
    assert fields["features"]["description"] == "Measurements."
    output = spec["components"]["schemas"]["PredictOutput"]["properties"]
    assert set(output) == {"total", "label"}
    post = spec["paths"]["/api/v1.0/predict"]["post"]
    media = post["requestBody"]["content"]["application/json"]
    assert media["example"] == {"input": EXAMPLE}
    assert media["schema"]["properties"]["input"] == {"$ref": "#/components/schemas/PredictInput"}
    answer = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["prediction"] == {"$ref": "#/components/schemas/PredictOutput"}


def test_the_contract_makes_each_schema_once_however_many_inputs_it_loads() -> None:
    """A marshmallow Schema costs about three loads to make: one per request (or per row of
    kiln batch) was most of what the contract cost."""
    import marshmallow
    from marshmallow import fields

    from runtime.serving.contract import Contract, InputError

    made: list[str] = []

    class PredictInput(marshmallow.Schema):
        num = fields.Float(required=True)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append("in")
            super().__init__(*args, **kwargs)

    class PredictOutput(marshmallow.Schema):
        total = fields.Float()

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append("out")
            super().__init__(*args, **kwargs)

    contract = Contract(PredictInput, PredictOutput)
    assert [contract.load({"num": i}) for i in range(3)] == [{"num": 0.0}, {"num": 1.0},
                                                            {"num": 2.0}]
    with pytest.raises(InputError, match="input.num: Not a valid number"):
        contract.load({"num": "x"})
    assert contract.input_names() == ["num"] and contract.output_names() == ["total"]
    assert contract.output_names() == ["total"]
    assert sorted(made) == ["in", "out"]


def test_a_scaffolded_service_given_the_contract(tmp_path: Path) -> None:
    result = CliRunner().invoke(kiln_cli.cli, ["new-service", "adder", "-o", str(tmp_path),
                                               "--no-input"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "adder"
    with (folder / "app" / "schemas.py").open("a") as schemas:
        schemas.write('''

class PredictInput(Schema):
    num1 = fields.Float(required=True, metadata={"example": 2})
    num2 = fields.Float(required=True, metadata={"example": 5})


class PredictOutput(Schema):
    sum = fields.Float(metadata={"example": 7})
''')
    (folder / "app" / "predict.py").write_text(
        "def predict(num1, num2):\n    return {'sum': num1 + num2}\n")
    client = make_app(folder).test_client()
    spec = client.get("/docs/specs.json").get_json()
    validate(spec)
    example = spec["paths"]["/api/v1.0/predict"]["post"]["requestBody"]["content"][
        "application/json"]["example"]
    assert example == {"input": {"num1": 2, "num2": 5}}
    assert client.post("/api/v1.0/predict", json=example).get_json()["prediction"] == {"sum": 7}
    refused = client.post("/api/v1.0/predict", json={"input": {"num1": "two"}})
    assert refused.status_code == 400
    assert "input.num1" in refused.get_json()["error"]
    assert "input.num2: is required" in refused.get_json()["error"]


def test_a_preprocess_that_answers_one_value_passes_it_as_one_argument(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "one", {"id": "one"}, {
        "app/schemas.py": "from marshmallow import Schema, fields\n\n\n"
                          "class PredictInput(Schema):\n    text = fields.Str(required=True)\n",
        "app/predict.py": "def preprocess(text):\n    return text.split()\n\n\n"
                          "def predict(words):\n    return len(words)\n"})
    client = make_app(folder).test_client()
    answer = client.post("/api/v1.0/predict", json={"input": {"text": "a b c"}})
    assert answer.get_json()["prediction"] == 3


def test_without_the_contract_predict_is_unchanged() -> None:
    client = make_app(SERVICES / "basic").test_client()
    assert client.post("/api/v1.0/predict", json={"input": [1, 2]}).get_json()["prediction"] == {
        "args": [1, 2]}
    spec = client.get("/docs/specs.json").get_json()
    media = spec["paths"]["/api/v1.0/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert "example" not in media and media["schema"]["example"] == {"input": [1, 2]}


# The model template: path | class_path with configuration, method, pandas' split orient.

@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any]:
    """A tiny logistic regression fitted on iris with feature names, and the features."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True, as_frame=True)
    return LogisticRegression(max_iter=1000).fit(features, target), features


def model_service(tmp_path: Path, model: Any, **settings: Any) -> Path:
    """A service from the model template with MODEL saved where service.yaml says."""
    import joblib

    result = CliRunner().invoke(kiln_cli.cli, ["new-service", "iris", "-o", str(tmp_path),
                                               "--template", "model", "--no-input"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "iris"
    joblib.dump(model, folder / "model.joblib")
    if settings:
        data = yaml.safe_load((folder / "service.yaml").read_text())
        data["model"].update(settings)
        (folder / "service.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_a_model_fitted_with_feature_names_takes_pandas_split_orient(
        tmp_path: Path, iris: tuple[Any, Any]) -> None:
    model, features = iris
    client = make_app(model_service(tmp_path, model)).test_client()
    rows = features.iloc[[0, 60, 120]].to_numpy().tolist()
    expected = model.predict(features.iloc[[0, 60, 120]]).tolist()
    columns = list(features.columns)
    assert client.post("/api/v1.0/predict", json={"input": rows}).get_json()[
        "prediction"] == expected
    split = {"columns": columns, "data": rows}
    assert client.post("/api/v1.0/predict", json={"input": split}).get_json()[
        "prediction"] == expected
    # Columns in another order are put in the model's.
    backwards = {"columns": columns[::-1], "data": [row[::-1] for row in rows]}
    assert client.post("/api/v1.0/predict", json={"input": backwards}).get_json()[
        "prediction"] == expected
    missing = client.post("/api/v1.0/predict",
                          json={"input": {"columns": columns[1:], "data": [r[1:] for r in rows]}})
    assert missing.status_code == 400 and columns[0] in missing.get_json()["error"]
    bad = client.post("/api/v1.0/predict", json={"input": {"columns": columns}})
    assert bad.status_code == 400 and "split orient" in bad.get_json()["error"]


def test_model_method_chooses_what_predict_calls(tmp_path: Path, iris: tuple[Any, Any]) -> None:
    model, features = iris
    client = make_app(model_service(tmp_path, model, method="predict_proba")).test_client()
    rows = features.iloc[[0, 100]].to_numpy().tolist()
    answer = client.post("/api/v1.0/predict", json={"input": rows}).get_json()["prediction"]
    assert answer == model.predict_proba(features.iloc[[0, 100]]).tolist()
    assert len(answer) == 2 and len(answer[0]) == 3


def test_a_missing_method_is_a_visible_load_failure(tmp_path: Path,
                                                    iris: tuple[Any, Any]) -> None:
    client = make_app(model_service(tmp_path, iris[0], method="transform")).test_client()
    status = client.get("/api/v1.0/health/status")
    assert status.status_code == 503
    assert "LogisticRegression has no transform method" in status.get_json()["reason"]


SCALER = '''
class Scaler:
    """A model built from service.yaml model.configuration."""

    def __init__(self, factor, offset=0):
        self.factor = factor
        self.offset = offset

    def predict(self, rows):
        return [sum(row) * self.factor + self.offset for row in rows]
'''


@pytest.mark.parametrize("class_path", ["scaler_model:Scaler", "scaler_model.Scaler"])
def test_a_class_path_loads_with_its_configuration(tmp_path: Path, class_path: str) -> None:
    folder = write_service(tmp_path / "scaled", {
        "id": "scaled", "model": {"class_path": class_path,
                                  "configuration": {"factor": 10, "offset": 1}}},
        {"scaler_model.py": SCALER})
    client = make_app(folder).test_client()
    answer = client.post("/api/v1.0/predict", json={"input": [[1, 2], [3, 4]]})
    assert answer.get_json()["prediction"] == [31, 71]
    v1 = client.post("/v1/models/scaled:predict", data=json.dumps({"instances": [[1, 2]]}))
    assert v1.get_json() == {"predictions": [31]}


def test_a_class_path_with_a_wrong_configuration_says_so(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "scaled", {
        "id": "scaled", "model": {"class_path": "scaler_model2:Scaler",
                                  "configuration": {"factr": 10}}},
        {"scaler_model2.py": SCALER})
    status = make_app(folder).test_client().get("/api/v1.0/health/status").get_json()
    assert "model scaler_model2:Scaler: Scaler(**configuration) failed: TypeError" in status[
        "reason"]


@pytest.mark.parametrize(("model", "message"), [
    ({"path": "m.joblib", "class_path": "a:B"},
     "model: needs one of path (a joblib or pickle file, or module:Class) or class_path"),
    ({"method": "predict"}, "model: needs one of path"),
    ({"path": "m.joblib", "bogus": 1},
     "model.bogus: unknown key; allowed in model: path, class_path, configuration, method"),
    ({"path": 3}, "model.path: must be a file name in the service folder, or module:Class"),
    ({"class_path": "nodots"}, "model.class_path: 'nodots' must be module:Class"),
    ({"path": "m.joblib", "configuration": {"a": 1}},
     "model.configuration: needs class_path (the class it is passed to)"),
    ({"class_path": "a:B", "configuration": [1]},
     "model.configuration: must be a mapping of the class's keyword arguments"),
    ({"path": "m.joblib", "method": "predict-proba"},
     "model.method: 'predict-proba' must be a method name, e.g. predict or predict_proba"),
])
def test_model_settings_are_checked_with_one_line(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_service({"id": "svc", "model": model})
    assert str(caught.value).startswith(f"service.yaml: {message}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("model", [
    {"path": "model.joblib"}, {"path": "mymodel:Model", "method": "predict_proba"},
    {"class_path": "pkg.mod:Model", "configuration": {"size": 3}},
    {"class_path": "pkg.mod.Model"},
])
def test_good_model_settings(model: dict[str, Any]) -> None:
    assert parse_service({"id": "svc", "model": model})["model"] == model


def test_an_app_not_loaded_yet_answers_predict_routes_503() -> None:
    client = create_app(TYPED).test_client()  # load() not run
    assert client.post("/api/v1.0/predict", json={"input": EXAMPLE}).status_code == 503

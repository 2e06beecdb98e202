"""Open Inference Protocol v2 and KServe v1 over predict: tensors, routes, and real clients."""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from openapi_spec_validator import validate

from runtime import cli as kiln_cli
from runtime.app import create_app, service_of
from runtime.serving import tensors
from runtime.serving.tensors import TensorError
from runtime.testing import make_app
from tests.support import SERVICES, Server, serving, write_service

TYPED = SERVICES / "typed"
INFER = "/v2/models/typed/infer"
TYPED_INPUTS = [
    {"name": "features", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "count", "shape": [2], "datatype": "INT64", "data": [1, 2]},
    {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
]


def post(client: Any, path: str, body: Any) -> Any:
    """POST BODY as JSON with no Content-Type, as protocol clients send it."""
    return client.post(path, data=json.dumps(body))


# Tensors, pure.

@pytest.mark.parametrize(("tensor", "rows"), [
    ({"shape": [3], "datatype": "INT64", "data": [1, 2, 3]}, [1, 2, 3]),
    ({"shape": [2, 2], "datatype": "FP32", "data": [1, 2.5, 3, 4]}, [[1, 2.5], [3, 4]]),
    ({"shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}, [[1, 2], [3, 4]]),
    ({"shape": [1, 2, 2], "datatype": "BOOL", "data": [True, False, False, True]},
     [[[True, False], [False, True]]]),
    ({"shape": [2], "datatype": "BYTES", "data": ["a", "b"]}, ["a", "b"]),
    ({"shape": [0, 4], "datatype": "FP32", "data": []}, []),
    ({"shape": [2, 0], "datatype": "FP32", "data": []}, [[], []]),
])
def test_tensor_rows(tensor: dict[str, Any], rows: list[Any]) -> None:
    assert tensors.tensor_rows(tensor, "x") == rows


def test_integer_tensors_take_their_whole_range() -> None:
    for kind, least, greatest in [("INT8", -128, 127), ("UINT8", 0, 255),
                                  ("INT64", -(2 ** 63), 2 ** 63 - 1), ("UINT64", 0, 2 ** 64 - 1)]:
        assert tensors.tensor_rows({"shape": [2], "datatype": kind, "data": [least, greatest]},
                                   "x") == [least, greatest]


@pytest.mark.parametrize(("tensor", "problem"), [
    ({"shape": [3], "datatype": "INT64", "data": [1, 2]}, "shape [3] holds 3 values, data has 2"),
    ({"shape": [], "datatype": "INT64", "data": [1]}, "shape must be a list of sizes"),
    ({"shape": [-1], "datatype": "INT64", "data": [1]}, "shape must be a list of sizes"),
    ({"shape": [1], "datatype": "INT128", "data": [1]}, "datatype 'INT128' is not one of"),
    ({"shape": [1], "datatype": "INT64", "data": [1.5]}, "1.5 is not a INT64 value"),
    ({"shape": [1], "datatype": "FP32", "data": [True]}, "true is not a FP32 value"),
    ({"shape": [1], "datatype": "UINT8", "data": [300]}, "300 is not a UINT8 value"),
    ({"shape": [1], "datatype": "UINT32", "data": [-1]}, "-1 is not a UINT32 value"),
    ({"shape": [1], "datatype": "INT64", "data": [2 ** 63]}, f"{2 ** 63} is not a INT64 value"),
    ({"shape": [1], "datatype": "BYTES", "data": [1]}, "1 is not a BYTES value"),
    ({"shape": [1], "datatype": "FP32"}, "has no data"),
    ({"shape": [1] * 40, "datatype": "FP32", "data": [1]}, "at most 32 dimensions"),
])
def test_tensor_problems(tensor: dict[str, Any], problem: str) -> None:
    with pytest.raises(TensorError, match=None) as caught:
        tensors.tensor_rows(tensor, "x")
    assert problem in str(caught.value)


def test_binary_tensor_data_extension() -> None:
    header = json.dumps({"inputs": [
        {"name": "f", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}},
        {"name": "i", "shape": [1], "datatype": "INT64", "data": [7]},
    ]}).encode()
    data = (header + struct.pack("<2f", 1.5, -2) + struct.pack("<I", 3) + b"cat"
            + struct.pack("<I", 0))
    body, binary = tensors.split_binary(data, str(len(header)))
    assert tensors.request_tensors(body, binary) == [("f", [1.5, -2.0]), ("s", ["cat", ""]),
                                                     ("i", [7])]
    with pytest.raises(TensorError, match="goes past the end of the body"):
        tensors.request_tensors(body, binary[:-2])
    with pytest.raises(TensorError, match="not within the body"):
        tensors.split_binary(data, str(len(data) + 1))


def test_rows_of_named_tensors() -> None:
    found = [("a", [1, 2]), ("b", [[1], [2]])]
    assert tensors.rows_of(found, named=True) == [{"a": 1, "b": [1]}, {"a": 2, "b": [2]}]
    with pytest.raises(TensorError, match="expects one input tensor"):
        tensors.rows_of(found, named=False)
    with pytest.raises(TensorError, match="same number of rows"):
        tensors.rows_of([("a", [1]), ("b", [1, 2])], named=True)


@pytest.mark.parametrize(("predictions", "outputs"), [
    ([1, 2], [{"name": "prediction", "datatype": "INT64", "shape": [2], "data": [1, 2]}]),
    ([0.5, 1], [{"name": "prediction", "datatype": "FP64", "shape": [2], "data": [0.5, 1]}]),
    ([True], [{"name": "prediction", "datatype": "BOOL", "shape": [1], "data": [True]}]),
    (["a", "b"], [{"name": "prediction", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]),
    ([[1, 2], [3, 4]],
     [{"name": "prediction", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]}]),
    ([[1], [2, 3]],
     [{"name": "prediction", "datatype": "BYTES", "shape": [2], "data": ["[1]", "[2, 3]"]}]),
    ([{"p": 1, "q": "x"}, {"p": 2, "q": "y"}],
     [{"name": "p", "datatype": "INT64", "shape": [2], "data": [1, 2]},
      {"name": "q", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}]),
    ([], [{"name": "prediction", "datatype": "FP64", "shape": [0], "data": []}]),
])
def test_output_tensors(predictions: list[Any], outputs: list[dict[str, Any]]) -> None:
    assert tensors.output_tensors(predictions) == outputs


def test_output_tensors_keep_numpy_float32() -> None:
    import numpy

    found = tensors.output_tensors(numpy.array([[0.5, 1.0]], dtype=numpy.float32))
    assert found == [{"name": "prediction", "datatype": "FP32", "shape": [1, 2],
                      "data": [0.5, 1.0]}]


# The routes, in process.

@pytest.fixture(scope="module")
def typed() -> Any:
    return make_app(TYPED)


def test_v2_infer_with_predict_input(typed: Any) -> None:
    answer = post(typed.test_client(), INFER, {"id": "call-1", "inputs": TYPED_INPUTS})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {
        "model_name": "typed", "model_version": "1.0.0", "id": "call-1",
        "outputs": [{"name": "total", "datatype": "FP64", "shape": [2], "data": [3.0, 14.0]},
                    {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["A", "B"]}]}
    versioned = post(typed.test_client(), "/v2/models/typed/versions/1.0.0/infer",
                     {"inputs": TYPED_INPUTS, "outputs": [{"name": "label"}]})
    assert versioned.get_json()["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["A", "B"]}]


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v2/models/other/infer", {"inputs": TYPED_INPUTS}, 404, "unknown model 'other'"),
    ("/v2/models/typed/versions/9/infer", {"inputs": TYPED_INPUTS}, 404, "unknown version '9'"),
    (INFER, {"inputs": TYPED_INPUTS[1:]}, 400, "row 0: input.features: Missing data"),
    (INFER, {"inputs": [*TYPED_INPUTS[:2], {**TYPED_INPUTS[2], "data": ["a", "b"],
                                           "name": "colour"}]}, 400, "input.colour: Unknown"),
    (INFER, {"inputs": [{**TYPED_INPUTS[0], "shape": [1, 4]}, *TYPED_INPUTS[1:]]}, 400,
     "same number of rows"),
    (INFER, {"inputs": [{**TYPED_INPUTS[0], "shape": [2, 3]}]}, 400,
     "shape [2, 3] holds 6 values, data has 4"),
    (INFER, {"inputs": TYPED_INPUTS, "outputs": [{"name": "nope"}]}, 400, "unknown output nope"),
    (INFER, {"input": []}, 400, "inputs: is required"),
    (INFER, {"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}, 400,
     "inputs.0.datatype"),
    ("/v1/models/typed:predict", {"instances": [{"features": [1], "count": "x"}]}, 400,
     "row 0: input.count"),
    ("/v1/models/typed:predict", {"inputs": []}, 400, "instances: is required"),
    ("/v1/models/other:predict", {"instances": []}, 404, "unknown model 'other'"),
])
def test_protocol_errors(typed: Any, path: str, body: Any, status: int, message: str) -> None:
    calls = service_of(typed).code.predict.__globals__["CALLS"]
    before = len(calls)
    answer = post(typed.test_client(), path, body)
    assert answer.status_code == status, answer.get_json()
    assert message in answer.get_json()["error"]
    if "unknown output" not in message:  # outputs are known once predict has answered
        assert len(calls) == before  # refused before predict


def test_v1_predict_asked_with_get_is_405_not_an_unknown_model(typed: Any) -> None:
    answer = typed.test_client().get("/v1/models/typed:predict")
    assert answer.status_code == 405, answer.get_json()
    assert answer.headers["Allow"] == "POST"
    assert set(answer.get_json()) == {"error", "request_id"}


def test_protocol_bodies_are_json_whatever_the_content_type(typed: Any) -> None:
    client = typed.test_client()
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/json"}):
        answer = client.post(INFER, data=json.dumps({"inputs": TYPED_INPUTS}), headers=headers)
        assert answer.status_code == 200, (headers, answer.get_json())
    malformed = client.post(INFER, data=b"{nope")
    assert malformed.status_code == 400 and "malformed JSON" in malformed.get_json()["error"]


def test_v1_predict_with_predict_input(typed: Any) -> None:
    answer = post(typed.test_client(), "/v1/models/typed:predict",
                  {"instances": [{"features": [1, 2], "count": 2, "label": "x"}]})
    assert answer.get_json() == {"predictions": [{"total": 6.0, "label": "X"}]}


def test_metadata_and_readiness(typed: Any) -> None:
    client = typed.test_client()
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/models/typed/ready").get_json() == {"name": "typed", "ready": True}
    assert client.get("/v2/models/typed/versions/1.0.0/ready").status_code == 200
    assert client.get("/v1/models/typed").get_json() == {"name": "typed", "ready": True}
    assert client.get("/v2/models/typed").get_json() == {
        "name": "typed", "versions": ["1.0.0"], "platform": "kiln",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, -1]},
                   {"name": "count", "datatype": "INT64", "shape": [-1]},
                   {"name": "label", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "total", "datatype": "FP64", "shape": [-1]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]}]}
    assert client.get("/v2/models/typed/versions/1.0.0").status_code == 200
    for path in ("/v2/models/x", "/v2/models/x/ready", "/v1/models/x",
                 "/v2/models/typed/versions/2/ready"):
        assert client.get(path).status_code == 404, path


def test_not_ready_answers_503() -> None:
    client = create_app(TYPED).test_client()  # load() not run
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.get_json()["ready"] is False
    assert client.get("/v2/models/typed/ready").status_code == 503
    model = client.get("/v1/models/typed")
    assert model.status_code == 503 and model.get_json()["ready"] is False
    assert post(client, INFER, {"inputs": TYPED_INPUTS}).status_code == 503
    assert post(client, "/v1/models/typed:predict", {"instances": []}).status_code == 503


def test_the_docs_document_every_protocol_route(typed: Any) -> None:
    spec = typed.test_client().get("/docs/specs.json").get_json()
    validate(spec)
    for path, method in [("/v2/health/live", "get"), ("/v2/health/ready", "get"),
                         ("/v2/models/{model_name}", "get"),
                         ("/v2/models/{model_name}/ready", "get"),
                         ("/v2/models/{model_name}/infer", "post"),
                         ("/v2/models/{model_name}/versions/{model_version}/infer", "post"),
                         ("/v1/models/{model_name}", "get"),
                         ("/v1/models/{model_name}:predict", "post")]:
        assert method in spec["paths"][path], path
    infer = spec["paths"]["/v2/models/{model_name}/infer"]["post"]
    example = infer["requestBody"]["content"]["application/json"]["example"]
    assert example == {"inputs": [
        {"name": "features", "shape": [1, 3], "datatype": "FP64", "data": [1.5, 2.5, 3.0]},
        {"name": "count", "shape": [1], "datatype": "INT64", "data": [2]},
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["cat"]}]}
    # The documented example is a working request.
    answer = post(typed.test_client(), INFER, example)
    assert answer.get_json()["outputs"][0]["data"] == [14.0]
    v1 = spec["paths"]["/v1/models/{model_name}:predict"]["post"]
    v1_example = v1["requestBody"]["content"]["application/json"]["example"]
    assert post(typed.test_client(), "/v1/models/typed:predict", v1_example).status_code == 200


def test_rows_call_predict_once_each_without_a_contract() -> None:
    client = make_app(SERVICES / "basic").test_client()
    answer = post(client, "/v2/models/basic/infer", {"inputs": [
        {"name": "input", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]})
    assert answer.status_code == 200, answer.get_json()
    # predict([1, 2]) answers {"args": [[1, 2]]}: one row each, of shape [1, 2].
    assert answer.get_json()["outputs"] == [{"name": "args", "datatype": "INT64",
                                             "shape": [2, 1, 2], "data": [1, 2, 3, 4]}]
    v1 = post(client, "/v1/models/basic:predict", {"instances": ["a", [1, 2]]})
    assert v1.get_json() == {"predictions": [{"args": ["a"]}, {"args": [[1, 2]]}]}
    # As through predict: a row is what {"input": [row]} would pass.
    assert client.post("/api/v1.0/predict", json={"input": [[1, 2]]}).get_json()[
        "prediction"] == {"args": [[1, 2]]}


BATCHED = '''
CALLS = []


def predict(*numbers):
    return sum(numbers)


def predict_batch(rows):
    CALLS.append(len(rows))
    return [sum(row) for row in rows]
'''


def test_predict_batch_takes_all_rows_at_once(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "batched", {"id": "batched"},
                           {"app/predict.py": BATCHED})
    app = make_app(folder)
    client = app.test_client()
    answer = post(client, "/v2/models/batched/infer", {"inputs": [
        {"name": "x", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]})
    assert answer.get_json()["outputs"] == [{"name": "prediction", "datatype": "FP64",
                                             "shape": [3], "data": [3.0, 7.0, 11.0]}]
    v1 = post(client, "/v1/models/batched:predict", {"instances": [[2, 5], [1, 1]]})
    assert v1.get_json() == {"predictions": [7, 2]}
    assert service_of(app).code.predict.__globals__["CALLS"] == [3, 2]


SLOW = '''
import time


def predict(*args):
    time.sleep(30)
'''


def test_protocol_predictions_are_bounded_by_predict_timeout(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "slow", {"id": "slow", "predict": {"timeout": 0.2}},
                           {"app/predict.py": SLOW})
    client = make_app(folder).test_client()
    answer = post(client, "/v1/models/slow:predict", {"instances": [1]})
    assert answer.status_code == 504
    assert "predict.timeout (0.2 s)" in answer.get_json()["error"]
    v2 = post(client, "/v2/models/slow/infer", {"inputs": [
        {"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]})
    assert v2.status_code == 504


def test_protocol_calls_are_captured_and_carry_request_ids(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "captured", {"id": "captured", "capture": {"dir": "cap"}},
                           {"app/predict.py": BATCHED})
    client = make_app(folder).test_client()
    answer = client.post("/v1/models/captured:predict", data=json.dumps({"instances": [[1, 2]]}),
                         headers={"X-Request-ID": "v1-call"})
    assert answer.headers["X-Request-ID"] == "v1-call"
    post(client, "/v2/models/captured/infer", {"inputs": [
        {"name": "x", "shape": [1, 1], "datatype": "INT64", "data": [4]}]})
    client.get("/v2/models/captured")  # metadata: not a prediction, not captured
    records = [json.loads(line) for path in sorted((folder / "cap").rglob("requests-*.jsonl"))
               for line in path.read_text().splitlines()]
    assert [r["route"] for r in records] == ["/v1/models/<model_name>:predict",
                                             "/v2/models/<model_name>/infer"]
    assert records[0]["request_id"] == "v1-call"
    assert records[0]["response"]["json"] == {"predictions": [3]}
    assert records[0]["request"]["json"] == {"instances": [[1, 2]]}  # no Content-Type sent


def test_protocol_routes_need_credentials_as_predict_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_AUTH_TOKENS", "alice:s3cret")
    folder = write_service(tmp_path / "locked", {"id": "locked", "auth": {"mode": "token"}},
                           {"app/predict.py": BATCHED})
    client = make_app(folder).test_client()
    body = json.dumps({"instances": [[1]]})
    assert client.post("/v1/models/locked:predict", data=body).status_code == 401
    assert client.get("/v2/models/locked").status_code == 401
    assert client.post("/v2/models/locked/infer", data="{}").status_code == 401
    assert client.get("/v2/health/ready").status_code == 200  # probes stay open
    good = client.post("/v1/models/locked:predict", data=body,
                       headers={"Authorization": "Bearer s3cret"})
    assert good.get_json() == {"predictions": [1]}


# The same saved scikit-learn model through the three routes.

@pytest.fixture(scope="module")
def iris_service(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, list[Any]]:
    """A model-template service around a tiny iris classifier, and rows to predict."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, target = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, target)
    where = tmp_path_factory.mktemp("iris")
    result = CliRunner().invoke(kiln_cli.cli, ["new-service", "iris", "-o", str(where),
                                               "--template", "model", "--no-input"])
    assert result.exit_code == 0, result.output
    joblib.dump(model, where / "iris" / "model.joblib")
    return where / "iris", model, features[::30].tolist()


@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_the_same_model_answers_the_same_through_every_route(
        iris_service: tuple[Path, Any, list[Any]], method: str, tmp_path: Path) -> None:
    folder, model, rows = iris_service
    data = yaml.safe_load((folder / "service.yaml").read_text())
    data["model"]["method"] = method
    (folder / "service.yaml").write_text(yaml.safe_dump(data))
    client = make_app(folder).test_client()
    expected = getattr(model, method)(rows).tolist()

    predict = client.post("/api/v1.0/predict", json={"input": rows}).get_json()["prediction"]
    v1 = post(client, "/v1/models/iris:predict", {"instances": rows}).get_json()["predictions"]
    v2 = post(client, "/v2/models/iris/infer", {"inputs": [
        {"name": "input", "shape": [len(rows), 4], "datatype": "FP64",
         "data": [v for row in rows for v in row]}]}).get_json()["outputs"]
    assert predict == v1 == expected
    assert len(v2) == 1 and v2[0]["name"] == "prediction"
    assert v2[0]["data"] == tensors.flatten(expected)
    if method == "predict":
        assert v2[0]["datatype"] == "INT64" and v2[0]["shape"] == [len(rows)]
    else:
        assert v2[0]["datatype"] == "FP64" and v2[0]["shape"] == [len(rows), 3]


# Real servers and the real tritonclient.

@pytest.fixture(scope="module")
def typed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(tmp_path_factory, "typed", {})


@pytest.fixture
def triton(typed_server: Server) -> Iterator[Any]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{typed_server.port}")
    yield client
    client.close()


def typed_inputs(binary: bool) -> list[Any]:
    import numpy
    import tritonclient.http as httpclient

    features = httpclient.InferInput("features", [2, 3], "FP32")
    features.set_data_from_numpy(numpy.array([[1.5, 2.5, 3], [1, 1, 1]], dtype=numpy.float32),
                                 binary_data=binary)
    count = httpclient.InferInput("count", [2], "INT64")
    count.set_data_from_numpy(numpy.array([2, 3], dtype=numpy.int64), binary_data=binary)
    label = httpclient.InferInput("label", [2], "BYTES")
    label.set_data_from_numpy(numpy.array([b"cat", "dög".encode()], dtype=numpy.object_),
                              binary_data=binary)
    return [features, count, label]


def test_tritonclient_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("typed") and not triton.is_model_ready("other")
    metadata = triton.get_model_metadata("typed")
    assert metadata["name"] == "typed" and metadata["platform"] == "kiln"
    assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
        ("features", "FP64"), ("count", "INT64"), ("label", "BYTES")]


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_infer(triton: Any, binary: bool) -> None:
    import tritonclient.http as httpclient

    outputs = None if binary else [httpclient.InferRequestedOutput(n, binary_data=False)
                                   for n in ("total", "label")]
    result = triton.infer("typed", typed_inputs(binary), outputs=outputs, request_id="tc-1")
    assert result.as_numpy("total").tolist() == [14.0, 9.0]
    assert [v.decode() if isinstance(v, bytes) else v
            for v in result.as_numpy("label").tolist()] == ["CAT", "DÖG"]
    assert result.get_response()["id"] == "tc-1"


def test_tritonclient_errors(triton: Any) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        triton.infer("other", typed_inputs(False))
    with pytest.raises(InferenceServerException, match="input.count: Missing data"):
        triton.infer("typed", typed_inputs(False)[::2])


def test_served_protocol_calls_are_logged_and_counted(typed_server: Server) -> None:
    answer = typed_server.post("/v1/models/typed:predict", headers={"X-Request-ID": "logged-v1"},
                               data=json.dumps({"instances": [{"features": [1], "count": 1}]}))
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "logged-v1"
    lines = [json.loads(line) for line in typed_server.output().splitlines()
             if line.startswith("{") and "logged-v1" in line]
    assert any(r.get("route") == "/v1/models/<model_name>:predict" for r in lines)
    metrics = typed_server.get("/metrics").text
    assert 'route="/v1/models/<model_name>:predict"' in metrics


def test_kiln_invoke_example_sends_predict_input_examples(typed_server: Server) -> None:
    result = CliRunner().invoke(kiln_cli.cli, ["invoke", "typed", "--example",
                                               "--url", typed_server.url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["prediction"] == {"total": 14.0, "label": "CAT"}


def test_kiln_invoke_example_needs_an_example(serve: Any) -> None:
    server = serve("basic")
    result = CliRunner().invoke(kiln_cli.cli, ["invoke", "basic", "--example",
                                               "--url", server.url])
    assert result.exit_code == 1
    assert "documents no request example for POST /api/v1.0/predict" in result.output

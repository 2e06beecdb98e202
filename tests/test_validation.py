"""JSON bodies checked against each route's documented requestBody before user code runs."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from runtime.docs.validation import to_json_schema
from runtime.testing import make_app
from tests.support import SERVICES

ITEM = {"name": "lamp", "price": 12.5}


@pytest.fixture(scope="module")
def catalog() -> FlaskClient:
    return make_app(SERVICES / "catalog").test_client()


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    # missing required fields
    ("/catalog/items", {"name": "lamp"}, 400, "price: is required"),
    ("/catalog/orders", {"note": None}, 400, "item_id: is required; quantity: is required"),
    ("/api/v1.0/predict", {"inputs": [1]}, 400, "input: is required"),
    ("/api/v1.0/predict", {}, 400, "input: is required"),
    # wrong types, at the top and nested
    ("/catalog/items", {"name": "lamp", "price": "cheap"}, 400,
     "price: must be number, got string"),
    ("/catalog/items", {**ITEM, "dimensions": {"width": "wide", "height": 1}}, 400,
     "dimensions.width: must be number, got string"),
    ("/catalog/orders", {"item_id": 1.5, "quantity": 1}, 400,
     "item_id: must be integer, got number"),
    ("/catalog/items/1/reviews", {"stars": 9}, 400, "stars: 9 is greater than the maximum of 5"),
    ("/catalog/events", {"when": "yesterday"}, 400, "when: 'yesterday' is not a 'date-time'"),
    # not an object
    ("/catalog/items", [ITEM], 400, "body: must be object, got array"),
    ("/catalog/orders", "order", 400, "body: must be object, got string"),
    ("/api/v1.0/predict", [1, 2], 400, "body: must be object, got array"),
    ("/api/v1.0/predict", 3, 400, "body: must be object, got integer"),
    # extra fields: allowed unless the schema forbids them
    ("/catalog/orders", {"item_id": 1, "quantity": 2, "gift": True}, 201, None),
    ("/api/v1.0/predict", {"input": [1, 2], "trace": True}, 200, None),
    ("/catalog/strict", {"label": "a", "colour": "red"}, 400, "colour: is not allowed"),
    ("/catalog/items", {**ITEM, "colour": "red"}, 400, "colour: is not allowed"),  # marshmallow
    # what fits passes through to the user's code
    ("/catalog/items", ITEM, 201, None),
    ("/catalog/orders", {"item_id": 1, "quantity": 2, "note": None}, 201, None),
    ("/catalog/events", {"when": "2026-11-23T05:00:00+00:00"}, 201, None),
    ("/catalog/strict", {"label": "a", "weight": 2}, 200, None),
    ("/catalog/admin/reindex", {"anything": 1}, 200, None),  # no documented body
    ("/api/v1.0/predict", {"input": None}, 200, None),
])
def test_body_validation(catalog: FlaskClient, path: str, body: Any, status: int,
                         message: str | None) -> None:
    response = catalog.post(path, json=body)
    assert response.status_code == status, response.get_json()
    if message is not None:
        assert response.get_json()["error"] == (
            f"request body does not match the documented schema: {message}")
        assert response.get_json()["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(("path", "kwargs", "status", "message"), [
    ("/catalog/items", {"data": "name=lamp", "content_type": "text/plain"}, 415,
     "POST /catalog/items expects a JSON body (Content-Type: application/json)"),
    ("/api/v1.0/predict", {"data": "1,2"}, 415,
     "POST /api/v1.0/predict expects a JSON body (Content-Type: application/json)"),
    ("/catalog/items", {"data": "{", "content_type": "application/json"}, 400,
     ("malformed JSON body: Expecting property name enclosed in double quotes: line 1 column 2 "
     "(char 1)")),
])
def test_body_that_is_not_json(catalog: FlaskClient, path: str, kwargs: dict[str, Any],
                               status: int, message: str) -> None:
    response = catalog.post(path, **kwargs)
    assert response.status_code == status
    assert response.get_json()["error"] == message


def test_put_on_a_view_with_several_methods_is_checked(catalog: FlaskClient) -> None:
    assert catalog.put("/catalog/items/1", json={"name": 3}).status_code == 400
    assert catalog.get("/catalog/items/999").status_code == 404


def test_method_view_body_is_checked(catalog: FlaskClient) -> None:
    response = catalog.post("/catalog/carts/3", json={})
    assert response.get_json()["error"].endswith("item_id: is required")
    assert catalog.post("/catalog/carts/3", json={"item_id": 4}).status_code == 201


def test_trailing_slash_predict_is_checked_the_same_way(catalog: FlaskClient) -> None:
    response = catalog.post("/api/v1.0/predict/", json={"x": 1})
    assert response.status_code == 400
    assert response.get_json()["error"].endswith("input: is required")


def test_docs_false_turns_off_docs_but_not_validation(tmp_path: Path) -> None:
    root = tmp_path / "nodocs"
    shutil.copytree(SERVICES / "basic", root)
    with (root / "service.yaml").open("a") as file:
        file.write("docs: false\n")
    client = make_app(root).test_client()
    assert client.get("/docs").status_code == 404
    assert client.get("/docs/").status_code == 404
    assert client.get("/docs/specs.json").status_code == 404
    assert client.get("/docs/static/swagger-ui.css").status_code == 404
    response = client.post("/api/v1.0/predict", json={"x": 1})
    assert response.status_code == 400
    assert response.get_json()["error"].endswith("input: is required")


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "string", "nullable": True}, {"type": ["string", "null"]}),
    ({"enum": ["a"], "type": "string", "nullable": True},
     {"enum": ["a", None], "type": ["string", "null"]}),
    ({"$ref": "#/components/schemas/A"}, {"type": "object", "properties": {"b": {}}}),
    ({"type": "array", "items": {"$ref": "#/components/schemas/Loop"}},
     {"type": "array", "items": {"type": "array", "items": {}}}),
    ({"type": "object", "required": ["id", "x"],
      "properties": {"id": {"readOnly": True}, "x": {}}},
     {"type": "object", "required": ["x"], "properties": {"id": {"readOnly": True}, "x": {}}}),
])
def test_to_json_schema(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    components = {"A": {"type": "object", "properties": {"b": {}}},
                  "Loop": {"type": "array", "items": {"$ref": "#/components/schemas/Loop"}}}
    assert to_json_schema(schema, components) == expected

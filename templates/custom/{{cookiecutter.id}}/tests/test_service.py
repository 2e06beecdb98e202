"""Tests of {{ cookiecutter.id }}: they pass as generated; keep them passing as you edit (`pytest`)."""
from pathlib import Path

import pytest

from runtime.testing import client as service_client

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client():
    """A test client of this service, with load() already run."""
    return service_client(ROOT)


def test_status_is_ok(client):
    response = client.get("/api/v1.0/health/status")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["service"] == "{{ cookiecutter.id }}"


def test_predict_adds_numbers(client):
    response = client.post("/api/v1.0/predict", json={"input": [2, 5]})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["prediction"] == 7


def test_add_numbers_route(client):
    response = client.post("/add-numbers", json={"num1": 2, "num2": 5})
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"result": 7}


@pytest.mark.parametrize("body", [{"num1": 2}, {"num1": "two", "num2": 5}, [2, 5]])
def test_add_numbers_refuses_a_bad_body(client, body):
    response = client.post("/add-numbers", json=body)
    assert response.status_code == 400, response.get_json()
    assert "error" in response.get_json()

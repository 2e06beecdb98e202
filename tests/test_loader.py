"""Loading the user's code: 'not found' told from 'broken inside', with the user's file and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import UserCodeError
from runtime.serving.loader import load_user_code
from runtime.testing import client

GOOD_PREDICT = "def predict(x):\n    return x\n"
GOOD_ROUTES = ("from flask import Blueprint\n"
               "user_services_routes = Blueprint('user_services_routes', __name__)\n")


def write_service(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "service.yaml").write_text("id: loader-case\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CASES = [
    ({}, "app: not found"),
    ({"app/routes.py": GOOD_ROUTES}, "app/predict.py: not found"),
    ({"app/predict.py": "x = 1\n"}, "app/predict.py: has no function predict"),
    ({"app/predict.py": "predict = 3\n"}, "predict is int, not a function"),
    ({"app/predict.py": "def predict(x)\n    return x\n"},
     "app/predict.py:1: SyntaxError: expected ':' (while importing app/predict.py)"),
    ({"app/predict.py": "import numpyy_missing\n"},
     "app/predict.py:1: ModuleNotFoundError: No module named 'numpyy_missing'"),
    ({"app/predict.py": GOOD_PREDICT, "app/routes.py": "\n\nraise RuntimeError('bad config')\n"},
     "app/routes.py:3: RuntimeError: bad config"),
    ({"app/predict.py": GOOD_PREDICT, "app/routes.py": "routes = []\n"},
     "app/routes.py: defines no Blueprint named user_services_routes"),
    ({"app/predict.py": GOOD_PREDICT, "app/schemas.py": "from .helpers import thing\n",
      "app/helpers.py": "thing = 1 / 0\n"},
     "app/helpers.py:1: ZeroDivisionError: division by zero"),
]


@pytest.mark.parametrize(("files", "message"), CASES)
def test_user_code_errors_name_the_file(tmp_path: Path, files: dict[str, str], message: str):
    root = write_service(tmp_path, files)
    with pytest.raises(UserCodeError) as info:
        load_user_code(root)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_syntax_error_names_the_line(tmp_path: Path):
    root = write_service(tmp_path, {"app/predict.py": "\n\ndef predict(x)\n    return x\n"})
    with pytest.raises(UserCodeError, match=r"app/predict.py:3: SyntaxError"):
        load_user_code(root)


def test_broken_code_still_starts_and_status_says_why(tmp_path: Path):
    root = write_service(tmp_path, {"app/predict.py": "raise ImportError('no weights')\n"})
    test_client = client(root)
    status = test_client.get("/api/v1.0/health/status")
    assert status.status_code == 503
    assert "app/predict.py:1: ImportError: no weights" in status.json["reason"]
    assert test_client.post("/api/v1.0/predict", json={"input": 1}).status_code == 503


def test_services_loaded_one_after_another_do_not_mix(tmp_path: Path):
    first = write_service(tmp_path / "one", {"app/predict.py": "def predict(x):\n    return 1\n"})
    second = write_service(tmp_path / "two", {"app/predict.py": "def predict(x):\n    return 2\n"})
    assert client(first).post("/api/v1.0/predict", json={"input": 0}).json["prediction"] == 1
    assert client(second).post("/api/v1.0/predict", json={"input": 0}).json["prediction"] == 2


def test_a_model_class_path_imports_its_module_from_the_service_folder(tmp_path: Path) -> None:
    from runtime.testing import make_app

    root = tmp_path / "classy"
    root.mkdir()
    (root / "service.yaml").write_text("id: classy\nmodel:\n  path: 'kilnmodel_beside:Doubler'\n")
    (root / "kilnmodel_beside.py").write_text(
        "class Doubler:\n    def predict(self, rows):\n        return [2 * sum(r) for r in rows]\n")
    app = make_app(root)
    status = app.test_client().get("/api/v1.0/health/status")
    assert status.status_code == 200, status.json
    answer = app.test_client().post("/api/v1.0/predict", json={"input": [[1, 2], [3, 4]]})
    assert answer.status_code == 200 and answer.json["prediction"] == [6, 14]


def test_a_model_class_path_that_is_nowhere_says_where_it_looked(tmp_path: Path) -> None:
    from runtime.testing import make_app

    root = tmp_path / "lost"
    root.mkdir()
    (root / "service.yaml").write_text("id: lost\nmodel:\n  path: 'kiln_no_such_module:Model'\n")
    status = make_app(root).test_client().get("/api/v1.0/health/status")
    assert status.status_code == 503
    assert "no module 'kiln_no_such_module'" in status.json["reason"]
    assert "beside service.yaml" in status.json["reason"]

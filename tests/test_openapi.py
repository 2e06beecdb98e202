"""The OpenAPI document built from route docstrings: validity, the habits it handles, and
broken docstrings that must never break the document or the service."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from openapi_spec_validator import validate

from runtime.cli import cli
from runtime.docs import openapi
from runtime.docs import ui as docs
from runtime.errors import KilnError
from runtime.specs import service_document
from runtime.testing import make_app
from tests.support import ROOT, SERVICES

#: Extra service folders to validate, e.g. KILN_SPEC_DIRS=demo/add-numbers:../other.
EXTRA_DIRS = "KILN_SPEC_DIRS"


def _service_dirs() -> list[Path]:
    found = sorted(p.parent for p in SERVICES.glob("*/service.yaml"))
    extra = os.environ.get(EXTRA_DIRS, "")
    return found + [Path(p) for p in extra.split(os.pathsep) if p]


def assert_valid_spec(directory: Path) -> dict[str, Any]:
    """Build DIRECTORY's document as `kiln specs` does and validate it as OpenAPI 3.0.3."""
    spec = service_document(directory).spec
    assert spec["openapi"] == "3.0.3"
    validate(spec)
    return spec


@pytest.mark.parametrize("directory", _service_dirs(), ids=lambda p: p.name)
def test_every_test_service_spec_is_valid(directory: Path) -> None:
    try:
        spec = service_document(directory).spec
    except KilnError as err:
        pytest.skip(f"{directory.name} is deliberately not loadable: {err}")
    validate(spec)


def test_scaffold_example_spec_is_valid(tmp_path: Path) -> None:
    template = ROOT / "templates" / "custom"
    if not template.is_dir():
        pytest.skip("templates/custom is not in this checkout yet")
    cookiecutter = pytest.importorskip("cookiecutter.main").cookiecutter
    made = Path(cookiecutter(str(template), no_input=True, output_dir=str(tmp_path),
                             default_config={"replay_dir": str(tmp_path / "replay")}))
    spec = assert_valid_spec(made)
    assert len([p for p in spec["paths"] if not p.startswith("/api/v1.0/")]) >= 1


@pytest.fixture(scope="module")
def catalog() -> dict[str, Any]:
    return assert_valid_spec(SERVICES / "catalog")


def _op(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = spec["paths"][path][method]
    return operation


def _path_param(operation: dict[str, Any], name: str) -> dict[str, Any]:
    [param] = [p for p in operation["parameters"] if p["in"] == "path" and p["name"] == name]
    return param


def test_catalog_has_many_routes_and_the_builtins(catalog: dict[str, Any]) -> None:
    user = [(p, m) for p, item in catalog["paths"].items() for m in item
            if p.startswith("/catalog/")]
    assert len(user) >= 15
    for path in ("/api/v1.0/predict", "/api/v1.0/health/status", "/api/v1.0/health/startup",
                 "/api/v1.0/health/live"):
        assert path in catalog["paths"]
    assert "/api/v1.0/predict/" not in catalog["paths"]
    assert catalog["info"] == {"title": "Catalog test service", "version": "2.0.1",
                               "description": "Over fifteen documented routes, every URL "
                                              "converter, components and old habits."}
    assert "x-kiln-warnings" not in catalog


@pytest.mark.parametrize(("path", "name", "schema"), [
    ("/catalog/items/{item_id}", "item_id", {"type": "integer", "minimum": 0}),
    ("/catalog/prices/{amount}", "amount", {"type": "number", "minimum": 0}),
    ("/catalog/files/{subpath}", "subpath", {"type": "string", "minLength": 1}),
    ("/catalog/orders/{order_id}", "order_id", {"type": "string", "format": "uuid"}),
    ("/catalog/tags/{tag}", "tag", {"type": "string", "pattern": "^[^/]{1,}$"}),
    ("/catalog/sort/{direction}", "direction", {"type": "string", "enum": ["asc", "desc"]}),
    ("/catalog/codes/{code}", "code", {"type": "string", "pattern": "^[^/]{2}$"}),
    ("/catalog/signed/{delta}", "delta", {"type": "integer"}),
    ("/catalog/users/{name}", "name", {"type": "string"}),  # declared by hand: kept
])
def test_path_parameters_come_from_the_url_rule(catalog: dict[str, Any], path: str, name: str,
                                                schema: dict[str, Any]) -> None:
    for operation in catalog["paths"][path].values():
        param = _path_param(operation, name)
        assert param["required"] is True
        assert param["schema"] == schema


def test_one_view_keeps_only_the_methods_its_rule_allows(catalog: dict[str, Any]) -> None:
    assert sorted(catalog["paths"]["/catalog/items"]) == ["get", "post"]
    assert sorted(catalog["paths"]["/catalog/items/{item_id}"]) == ["delete", "get", "put"]
    assert sorted(catalog["paths"]["/catalog/carts/{cart_id}"]) == ["get", "post"]


def test_components_come_from_schemas_module_and_are_referenced(catalog: dict[str, Any]) -> None:
    assert set(catalog["components"]["schemas"]) == {
        "DimensionsSchema", "ItemSchema", "ReviewSchema", "ErrorSchema"}
    post = _op(catalog, "/catalog/items", "post")
    ref = {"$ref": "#/components/schemas/ItemSchema"}
    assert post["requestBody"]["content"]["application/json"]["schema"] == ref
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == ref
    nested = catalog["components"]["schemas"]["ItemSchema"]["properties"]["dimensions"]
    assert nested == {"$ref": "#/components/schemas/DimensionsSchema"}


def test_property_level_required_is_hoisted(catalog: dict[str, Any]) -> None:
    operation = _op(catalog, "/catalog/orders", "post")
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["item_id", "quantity"]
    assert all("required" not in prop for prop in schema["properties"].values())
    response = operation["responses"]["201"]["content"]["application/json"]["schema"]
    assert response["required"] == ["total"]


def test_response_codes_are_strings(catalog: dict[str, Any]) -> None:
    for item in catalog["paths"].values():
        for operation in item.values():
            assert all(isinstance(code, str) for code in operation["responses"])
    assert set(_op(catalog, "/catalog/items", "post")["responses"]) == {"201", "400"}


def test_docstring_without_yaml_gives_summary_and_description(catalog: dict[str, Any]) -> None:
    operation = _op(catalog, "/catalog/admin/reindex", "post")
    assert operation["summary"] == "Rebuild the search index."
    assert operation["description"] == ("Documented without a YAML part: summary and "
                                         "description only.")
    assert operation["responses"] == {"default": {"description": "Response"}}
    assert _op(catalog, "/catalog/admin/stats", "get")["summary"] == "Counts of things."


def test_metrics_and_feedback_are_documented_when_served() -> None:
    app = make_app(SERVICES / "basic")
    spec = docs.build(app).spec
    validate(spec)
    assert list(spec["paths"]["/metrics"]) == ["get"]
    assert list(spec["paths"]["/api/v1.0/feedback"]) == ["post"]


@pytest.mark.parametrize(("doc", "expected"), [
    (None, ("", "", None)),
    ("One line.", ("One line.", "", None)),
    ("Summary.\n\n    More words\n    here.", ("Summary.", "More words\nhere.", None)),
    ("Summary.\n    ---\n    get: {}\n", ("Summary.", "", "---\nget: {}")),
    ("---\nget: {}", ("", "", "---\nget: {}")),
])
def test_split_docstring(doc: str | None, expected: tuple[str, str, str | None]) -> None:
    assert openapi.split_docstring(doc) == expected


@pytest.mark.parametrize(("schema", "expected"), [
    ({"properties": {"a": {"required": True}, "b": {"required": False}}},
     {"properties": {"a": {}, "b": {}}, "required": ["a"]}),
    ({"required": ["x"], "properties": {"a": {"required": True}, "x": {}}},
     {"required": ["x", "a"], "properties": {"a": {}, "x": {}}}),
    ({"properties": {"o": {"properties": {"i": {"required": True}}}}},
     {"properties": {"o": {"properties": {"i": {}}, "required": ["i"]}}}),
    ({"items": {"properties": {"i": {"required": True, "type": "string"}}}},
     {"items": {"properties": {"i": {"type": "string"}}, "required": ["i"]}}),
    ({"properties": {"required": {"type": "boolean"}}},
     {"properties": {"required": {"type": "boolean"}}}),
])
def test_hoist_required(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert openapi.hoist_required(schema) == expected


@pytest.mark.parametrize(("rule", "path"), [
    ("/a/<int:x>/<y>", "/a/{x}/{y}"),
    ("/p/<path:rest>", "/p/{rest}"),
    ("/s/<string(length=2):c>/<any(a, b):k>", "/s/{c}/{k}"),
])
def test_openapi_path(rule: str, path: str) -> None:
    assert openapi.openapi_path(rule) == path


# --- broken docstrings --------------------------------------------------------------------

BROKEN = SERVICES / "broken-docs"
BROKEN_ROUTES = [
    ("/invalid-yaml", "get", "invalid_yaml", "YAML after --- does not parse: while parsing"),
    ("/scalar", "get", "scalar", "is a str, not a mapping of methods"),
    ("/two-documents", "get", "two_documents", "expected a single document"),
    ("/dangling-ref", "get", "dangling_ref", "$ref to nothing: #/components/schemas/NoSuchSchema"),
    ("/unknown-schema-name", "get", "unknown_schema_name",
     "$ref to nothing: #/components/schemas/MissingSchema"),
    ("/flasgger-style", "post", "flasgger_style", ("has no method keys; nest the operation under "
                                                  "the method, e.g. `post:`")),
    ("/wrong-method", "get", "wrong_method", "documents DELETE but the route only allows GET"),
    ("/method-scalar", "get", "method_scalar", "get: is a str, not a mapping"),
    ("/method-view", "get", "BrokenView.get", ("YAML after --- does not parse: while parsing a "
                                              "flow mapping")),
]


@pytest.fixture(scope="module")
def broken() -> tuple[dict[str, Any], list[str]]:
    document = service_document(BROKEN)
    validate(document.spec)
    return document.spec, document.warnings


@pytest.mark.parametrize(("path", "method", "function", "problem"), BROKEN_ROUTES,
                         ids=[r[2] for r in BROKEN_ROUTES])
def test_broken_docstring_is_listed_and_named(broken: tuple[dict[str, Any], list[str]],
                                              path: str, method: str, function: str,
                                              problem: str) -> None:
    spec, warnings = broken
    [warning] = [w for w in warnings if f" {function}()" in w]
    assert warning.startswith("app/routes.py:")
    assert problem in warning
    assert warning in spec["x-kiln-warnings"]
    operation = spec["paths"][path][method]
    assert operation["summary"]
    assert list(spec["paths"][path]) == [method]


def test_broken_docstrings_leave_the_good_route_documented(
        broken: tuple[dict[str, Any], list[str]]) -> None:
    spec, warnings = broken
    assert len(warnings) == len(BROKEN_ROUTES)
    good = spec["paths"]["/good"]["post"]
    assert good["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ThingSchema"}
    assert "/api/v1.0/predict" in spec["paths"]


@pytest.mark.parametrize("path", [r[0] for r in BROKEN_ROUTES] + ["/good"])
def test_routes_with_broken_docstrings_are_served(path: str) -> None:
    client = make_app(BROKEN).test_client()
    method = "post" if path in ("/flasgger-style", "/good") else "get"
    response = client.open(path, method=method.upper(), json={"name": "x"})
    assert response.status_code == 200, response.get_json()
    assert client.get("/docs/specs.json").status_code == 200


def test_kiln_specs_names_file_and_function_on_stderr(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    result = CliRunner().invoke(cli, ["specs", str(BROKEN), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    for _, _, function, problem in BROKEN_ROUTES:
        assert any(f" {function}()" in line and problem in line and
                   line.startswith("warning: app/routes.py:") for line in lines), function
    assert json.loads(out.read_text())["paths"]["/good"]


def test_server_log_names_file_and_function(serve: Any) -> None:
    server = serve("broken-docs")
    assert server.get("/docs/specs.json").status_code == 200
    for _, _, function, problem in BROKEN_ROUTES:
        assert f" {function}(): " in server.output()
    assert "app/routes.py:" in server.output()


# --- kiln specs -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["openapi.json", "openapi.yaml", "openapi.yml"])
def test_kiln_specs_writes_the_served_document(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["specs", str(SERVICES / "catalog"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    written = json.loads(out.read_text()) if name.endswith("json") else yaml.safe_load(
        out.read_text())
    served = make_app(SERVICES / "catalog").test_client().get("/docs/specs.json").get_json()
    assert written == served
    assert {(p, m) for p in written["paths"] for m in written["paths"][p]} == {
        (p, m) for p in served["paths"] for m in served["paths"][p]}


def test_kiln_specs_prints_json_without_output() -> None:
    result = CliRunner().invoke(cli, ["specs", str(SERVICES / "basic")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["info"]["title"] == "Basic test service"


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "openapi.txt"], ("Error: openapi.txt: unknown extension '.txt'; use one of .json, "
                            ".yaml, .yml\n")),
    (["-o", "no/such/dir/openapi.json"], ("Error: no/such/dir/openapi.json: cannot write: "
                                         "No such file or directory\n")),
])
def test_kiln_specs_refuses_bad_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["specs", str(SERVICES / "basic"), *args])
    assert result.exit_code == 1
    assert result.stderr == message


def test_kiln_specs_names_a_broken_import(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "service.yaml").write_text("id: broken-import\n")
    (tmp_path / "app" / "predict.py").write_text("def predict(x):\n    return x\n")
    (tmp_path / "app" / "routes.py").write_text("import nonexistent_module_kiln\n")
    result = CliRunner().invoke(cli, ["specs", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: app/routes.py:1: ModuleNotFoundError")
    assert len(result.stderr.splitlines()) == 1

"""Build the service's OpenAPI 3.0.3 document from its Flask routes' docstrings.

Pure: a Flask app, its ServiceConfig and the service's schemas module in, a dict and a list
of warnings out. Each user route is documented from the YAML after a `---` line of its view's
docstring, keyed by method (`get:`, `post:`, ...). A broken docstring never breaks the
document: the route is listed with its summary only, and a warning names the file, the
function and the problem. A fresh APISpec is built every time, so a rebuild after a reload
never meets the previous build's component names.
"""
from __future__ import annotations

import contextlib
import copy
import http
import inspect
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import marshmallow
import yaml
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from werkzeug.routing import Rule

from runtime.config import ServiceConfig
from runtime.serving.contract import INPUT, OUTPUT
from runtime.serving.lifecycle import lifecycle
from runtime.serving.loader import BLUEPRINT
from runtime.serving.responses import OPERATIONS_ATTR

OPENAPI_VERSION = "3.0.3"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: Methods Flask adds to every rule by itself; documented only when a docstring asks.
IMPLICIT = {"HEAD", "OPTIONS"}
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_REF_PREFIX = "#/components/"
#: Where the app keeps its auth policy (runtime/security/auth.py): its schemes and requirements.
AUTH_KEY = "kiln_auth"
#: Schemas the predict contract names: components even when imported into app/schemas.py.
CONTRACT = (INPUT, OUTPUT)


@dataclass
class Document:
    """The built document and what went wrong with single routes while building it."""

    spec: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def openapi_path(rule: str) -> str:
    """Flask's `/items/<int:item_id>` as OpenAPI's `/items/{item_id}`."""
    return _PARAM.sub(r"{\1}", rule)


def path_parameter(name: str, converter: Any) -> dict[str, Any]:
    """The OpenAPI parameter for one URL rule argument, typed from its Werkzeug converter."""
    kind = type(converter).__name__
    schema: dict[str, Any]
    if kind == "IntegerConverter":
        schema = {"type": "integer"}
    elif kind == "FloatConverter":
        schema = {"type": "number"}
    elif kind == "UUIDConverter":
        schema = {"type": "string", "format": "uuid"}
    elif kind == "AnyConverter":
        schema = {"type": "string", "enum": sorted(converter.items)}
    elif kind == "PathConverter":
        schema = {"type": "string", "minLength": 1}
    else:
        regex = getattr(converter, "regex", "[^/]+")
        schema = {"type": "string", "pattern": f"^{regex}$"}
    if schema["type"] in ("integer", "number"):
        if not getattr(converter, "signed", False):
            schema["minimum"] = 0
        for attr, key in (("min", "minimum"), ("max", "maximum")):
            if getattr(converter, attr, None) is not None:
                schema[key] = getattr(converter, attr)
    return {"in": "path", "name": name, "required": True, "schema": schema}


def split_docstring(doc: str | None) -> tuple[str, str, str | None]:
    """(summary, description, YAML text from the first `---` line on, or None)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    yaml_text = None
    for index, line in enumerate(lines):
        if line.strip().startswith("---"):
            lines, yaml_text = lines[:index], "\n".join(lines[index:])
            break
    text = "\n".join(lines).strip()
    summary, _, description = text.partition("\n")
    return summary.strip(), description.strip(), yaml_text


def hoist_required(node: Any) -> Any:
    """Move property-level `required: true` into the parent schema's `required` list."""
    if isinstance(node, list):
        for item in node:
            hoist_required(item)
    elif isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            required = list(node["required"]) if isinstance(node.get("required"), list) else []
            for name, prop in properties.items():
                flag = prop.get("required") if isinstance(prop, dict) else None
                if isinstance(flag, bool):
                    del prop["required"]
                    if flag and name not in required:
                        required.append(name)
            if required:
                node["required"] = required
            elif isinstance(node.get("required"), bool):
                del node["required"]
        for value in node.values():
            hoist_required(value)
    return node


def _fix_responses(operation: dict[str, Any]) -> None:
    """Response codes as strings, and a description for responses written without one."""
    responses = operation.get("responses")
    if not isinstance(responses, dict) or not responses:
        operation["responses"] = {"default": {"description": "Response"}}
        return
    fixed: dict[str, Any] = {}
    for code, response in responses.items():
        key = str(code)
        if isinstance(response, dict) and "$ref" not in response and "description" not in response:
            try:
                phrase = http.HTTPStatus(int(key)).phrase
            except ValueError:
                phrase = "Response"
            response = {"description": phrase, **response}
        fixed[key] = response
    operation["responses"] = fixed


class _Origin:
    """Where a view lives, for warnings: `app/routes.py:12 create_item()`."""

    def __init__(self, func: Callable[..., Any], root: Path):
        target: Any = getattr(func, "view_class", None) or inspect.unwrap(func)
        name = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
        try:
            path = Path(inspect.getsourcefile(target) or "")
            line = inspect.getsourcelines(target)[1]
        except (TypeError, OSError):
            self.text = f"{name}()"
            return
        try:
            shown = str(path.resolve().relative_to(root.resolve()))
        except (ValueError, OSError):
            shown = str(path)
        self.text = f"{shown}:{line} {name}()"

    def __str__(self) -> str:
        return self.text


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`YAML after --- does not parse: expected a single document (line 5 after ---)`."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" (line {mark.line} after ---)" if mark is not None else ""
        text = f"{err.context}, {err.problem}" if err.context else err.problem
        return f"YAML after --- does not parse: {text}{where}"
    return f"YAML after --- does not parse: {_one_line(err)}"


def _fallback(summary: str, description: str, methods: list[str],
              problem: str | None = None) -> dict[str, dict[str, Any]]:
    """Operations for methods a docstring does not document: its summary and description."""
    if problem:
        description = f"{description}\n\n**Docstring problem:** {problem}".strip()
    operation: dict[str, Any] = {"responses": {"default": {"description": "Response"}}}
    if summary:
        operation["summary"] = summary
    if description:
        operation["description"] = description
    return {method: copy.deepcopy(operation) for method in methods}


class _Builder:
    """One build: a fresh APISpec, filled route by route."""

    def __init__(self, app: Flask, config: ServiceConfig, schemas: ModuleType | None,
                 user_prefix: str | None):
        info: dict[str, Any] = {}
        if config.get("description"):
            info["description"] = config.get("description")
        self.spec = APISpec(title=config.title, version=str(config.version),
                            openapi_version=OPENAPI_VERSION, plugins=[MarshmallowPlugin()],
                            info=info)
        self.app = app
        self.root = config.root
        self.schemas = schemas
        self.user_prefix = user_prefix
        self.warnings: list[str] = []
        #: (path, method) -> where the operation came from, to check its $refs at the end.
        self.origins: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def warn(self, where: object, problem: str) -> None:
        self.warnings.append(f"{where}: {problem}")

    @contextlib.contextmanager
    def reporting(self, where: object) -> Iterator[None]:
        """Turn Python warnings raised inside (apispec's) into warnings naming WHERE."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for warning in caught:
            self.warn(where, " ".join(str(warning.message).split()))

    def components(self) -> None:
        if self.schemas is None:
            return
        where = Path(self.schemas.__file__ or "app/schemas.py").name
        for name, value in vars(self.schemas).items():
            if not (isinstance(value, type) and issubclass(value, marshmallow.Schema)
                    and (value.__module__ == self.schemas.__name__ or name in CONTRACT)):
                continue
            try:
                with self.reporting(f"app/{where} {name}"):
                    self.spec.components.schema(name, schema=value)
            except Exception as err:  # noqa: BLE001 - one bad schema is reported, not fatal
                self.warn(f"app/{where} {name}", f"not added to components: {_one_line(err)}")

    def rules(self) -> Iterator[tuple[Rule, Callable[..., Any] | None, bool]]:
        """(rule, view, is_user_route) for each documented rule, in the app's order."""
        for rule in self.app.url_map.iter_rules():
            if rule.endpoint == "static":
                continue
            view = self.app.view_functions.get(rule.endpoint)
            prefix = self.user_prefix
            if prefix and (rule.endpoint == prefix or rule.endpoint.startswith(prefix + ".")):
                yield rule, view, True
            elif getattr(view, OPERATIONS_ATTR, None) and not rule.rule.endswith("/"):
                # A built-in route documents itself; its trailing-slash twin answers the same.
                yield rule, view, False

    def add_builtin(self, rule: Rule) -> None:
        allowed = {m.lower() for m in rule.methods or ()}
        view = self.app.view_functions[rule.endpoint]
        declared = getattr(view, OPERATIONS_ATTR)
        if callable(declared):  # operations that depend on the service (PredictInput, its id)
            declared = declared(self.app)
        operations = {m: copy.deepcopy(op) for m, op in declared.items() if m in allowed}
        if operations:
            self.spec.path(path=openapi_path(rule.rule), operations=operations)

    def add_user(self, rule: Rule, view: Callable[..., Any]) -> None:
        path = openapi_path(rule.rule)
        methods = sorted(m.lower() for m in (rule.methods or set()) - IMPLICIT)
        view_class = getattr(view, "view_class", None)
        if view_class is not None:
            operations = self._class_operations(view_class, methods)
        else:
            # HEAD and OPTIONS, which Flask adds, are documented only when a docstring asks.
            allowed = {m.lower() for m in rule.methods or ()}
            operations = self._function_operations(view, methods, allowed)
        for operation in operations.values():
            self._add_path_parameters(rule, operation)
        origin = str(_Origin(view, self.root))
        try:
            with self.reporting(origin):
                self.spec.path(path=path, operations=operations)
        except Exception as err:  # noqa: BLE001 - one route's docs never break the others
            self.warn(origin, f"docstring not usable: {_one_line(err)}")
            summary, description, _ = split_docstring(view.__doc__)
            operations = _fallback(summary, description, methods, _one_line(err))
            for operation in operations.values():
                self._add_path_parameters(rule, operation)
            self.spec.path(path=path, operations=operations)
        for method in operations:
            if method in METHODS:
                summary, description, _ = split_docstring(view.__doc__)
                self.origins[(path, method)] = (origin, {"summary": summary,
                                                         "description": description})

    def _function_operations(self, view: Callable[..., Any], methods: list[str],
                             allowed: set[str]) -> dict[str, dict[str, Any]]:
        origin = _Origin(view, self.root)
        summary, description, yaml_text = split_docstring(view.__doc__)
        if yaml_text is None:
            return _fallback(summary, description, methods)
        try:
            loaded = yaml.safe_load(yaml_text)
        except yaml.YAMLError as err:
            problem = _yaml_problem(err)
            self.warn(origin, problem)
            return _fallback(summary, description, methods, problem)
        if loaded is None:
            return _fallback(summary, description, methods)
        if not isinstance(loaded, dict):
            problem = (f"YAML after --- is a {type(loaded).__name__}, not a mapping of methods "
                       f"(get:, post:, ...)")
            self.warn(origin, problem)
            return _fallback(summary, description, methods, problem)
        documented = {str(k).lower(): v for k, v in loaded.items() if str(k).lower() in METHODS}
        if not documented:
            problem = ("YAML after --- has no method keys; nest the operation under the "
                       f"method, e.g. `{methods[0] if methods else 'get'}:` "
                       f"(found {', '.join(map(str, loaded)) or 'nothing'})")
            self.warn(origin, problem)
            return _fallback(summary, description, methods, problem)
        operations: dict[str, dict[str, Any]] = {}
        for method, operation in documented.items():
            if method not in allowed:
                self.warn(origin, f"documents {method.upper()} but the route only allows "
                                  f"{', '.join(m.upper() for m in methods)}; left out")
                continue
            if operation is None:
                operation = {}
            if not isinstance(operation, dict):
                problem = f"{method}: is a {type(operation).__name__}, not a mapping"
                self.warn(origin, problem)
                operation = _fallback(summary, description, [method], problem)[method]
            operations[method] = self._finish(operation, summary, description)
        for method in methods:
            if method not in operations:
                operations[method] = _fallback(summary, description, [method])[method]
        return operations

    def _class_operations(self, view_class: type,
                          methods: list[str]) -> dict[str, dict[str, Any]]:
        operations: dict[str, dict[str, Any]] = {}
        for method in methods:
            func = getattr(view_class, method, None)
            if func is None:
                continue
            summary, description, yaml_text = split_docstring(func.__doc__)
            operation: Any = {}
            if yaml_text is not None:
                try:
                    operation = yaml.safe_load(yaml_text) or {}
                except yaml.YAMLError as err:
                    problem = _yaml_problem(err)
                    self.warn(_Origin(func, self.root), problem)
                    operation = _fallback(summary, description, [method], problem)[method]
                if not isinstance(operation, dict):
                    problem = f"YAML after --- is a {type(operation).__name__}, not an operation"
                    self.warn(_Origin(func, self.root), problem)
                    operation = _fallback(summary, description, [method], problem)[method]
            operations[method] = self._finish(operation, summary, description)
        return operations

    @staticmethod
    def _finish(operation: dict[str, Any], summary: str, description: str) -> dict[str, Any]:
        operation = hoist_required(copy.deepcopy(operation))
        if summary and "summary" not in operation:
            operation["summary"] = summary
        if description and "description" not in operation:
            operation["description"] = description
        _fix_responses(operation)
        return operation

    @staticmethod
    def _add_path_parameters(rule: Rule, operation: dict[str, Any]) -> None:
        parameters = operation.setdefault("parameters", [])
        if not isinstance(parameters, list):
            parameters = operation["parameters"] = []
        declared = {p.get("name") for p in parameters
                    if isinstance(p, dict) and p.get("in") == "path"}
        converters = getattr(rule, "_converters", {})
        for name in sorted(rule.arguments):
            if name not in declared:
                parameters.append(path_parameter(name, converters.get(name)))
        if not parameters:
            del operation["parameters"]

    def check_refs(self, spec: dict[str, Any]) -> None:
        """Replace operations whose `$ref` points at nothing, with a warning for each."""
        for (path, method), (origin, text) in self.origins.items():
            operation = spec["paths"].get(path, {}).get(method)
            if operation is None:
                continue
            missing = sorted({ref for ref in _refs(operation) if not _resolves(spec, ref)})
            if not missing:
                continue
            problem = f"{method}: $ref to nothing: {', '.join(missing)}"
            self.warn(origin, problem)
            fallback = _fallback(text["summary"], text["description"], [method], problem)[method]
            path_params = [p for p in operation.get("parameters", [])
                           if isinstance(p, dict) and p.get("in") == "path" and "$ref" not in p
                           and "$ref" not in p.get("schema", {})]
            if path_params:
                fallback["parameters"] = path_params
            spec["paths"][path][method] = fallback


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolves(spec: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#/"):
        return False
    node: Any = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _secure(spec: dict[str, Any], app: Flask, rules: list[Rule]) -> None:
    """Declare the auth mode's securitySchemes, and `security` on each route that needs it.

    The app's auth policy (runtime/security/auth.py, in app.extensions) says which; an
    operation whose docstring declares its own `security` keeps it.
    """
    policy = app.extensions.get(AUTH_KEY)
    if policy is None or not policy.schemes():
        return
    spec.setdefault("components", {})["securitySchemes"] = copy.deepcopy(policy.schemes())
    kinds = lifecycle(app).kinds
    for rule in rules:
        requirement = policy.requirement(kinds.get(rule.endpoint))
        for method, operation in spec["paths"].get(openapi_path(rule.rule), {}).items():
            if requirement is not None and method in METHODS and isinstance(operation, dict):
                operation.setdefault("security", copy.deepcopy(requirement))


def build(app: Flask, config: ServiceConfig, schemas: ModuleType | None = None,
          user_blueprint: str | None = BLUEPRINT) -> Document:
    """The OpenAPI 3.0.3 document of APP: its user routes, then the runtime's own.

    USER_BLUEPRINT names the blueprint whose endpoints are the user's routes; other routes
    are documented only when the runtime knows them (predict, health, metrics, feedback).
    """
    builder = _Builder(app, config, schemas, user_blueprint)
    builder.components()
    rules = list(builder.rules())
    with app.app_context():
        # The user's routes first: Swagger UI shows tags in the order they first appear.
        for rule, view, is_user in rules:
            if is_user and view is not None:
                builder.add_user(rule, view)
        for rule, _, is_user in rules:
            if not is_user:
                builder.add_builtin(rule)
    built = builder.spec.to_dict()
    # The usual reading order: openapi, info, paths, components.
    spec = {"openapi": built.pop("openapi"), "info": built.pop("info"),
            "paths": built.pop("paths", {}), **built}
    builder.check_refs(spec)
    _secure(spec, app, [rule for rule, _, _ in rules])
    if builder.warnings:
        spec["x-kiln-warnings"] = list(builder.warnings)
    return Document(spec, builder.warnings)

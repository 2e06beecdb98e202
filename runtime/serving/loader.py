"""Import a service folder's own code (app/routes.py, app/predict.py, app/schemas.py).

The service's `app` folder is imported as the package `app`, as its own code and tests expect
(`from app.schemas import ...`). Errors tell "not found" from "broken inside" and name the
user's file and line.
"""
from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from flask import Blueprint

from runtime.errors import UserCodeError

PACKAGE = "app"
BLUEPRINT = "user_services_routes"
_roots: list[str] = []  # the service folder this process put on sys.path


@dataclass
class UserCode:
    """What the runtime takes from a service's code."""

    blueprint: Blueprint | None
    predict: Callable[..., Any] | None
    preprocess: Callable[..., Any] | None
    load: Callable[[], Any] | None
    schemas: ModuleType | None
    routes_file: Path | None
    #: predict_batch(rows) -> one prediction per row, for the inference protocols; optional.
    predict_batch: Callable[[list[Any]], Any] | None = None


def _forget() -> None:
    """Drop a previously imported `app` package (another service, or an older version)."""
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    _forget_schemas()
    importlib.invalidate_caches()


def _forget_schemas() -> None:
    # marshmallow resolves Nested("Name") through a global registry; a class from an older
    # import of the same module would shadow the new one.
    try:
        from marshmallow import class_registry
    except ImportError:  # pragma: no cover - marshmallow is a dependency
        return
    registry: dict[str, list[Any]] = class_registry._registry
    for name in list(registry):
        kept = [c for c in registry[name] if not _is_user_module(c.__module__)]
        if kept:
            registry[name] = kept
        else:
            del registry[name]


def _is_user_module(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def where(err: BaseException, root: Path) -> str:
    """`app/routes.py:12` for the innermost frame of `err` inside the service folder."""
    root = root.resolve()
    if isinstance(err, SyntaxError) and err.filename:
        path = Path(err.filename)
        return f"{_relative(path, root)}:{err.lineno}"
    spot = ""
    for frame in traceback.extract_tb(err.__traceback__):
        path = Path(frame.filename)
        if _inside(path, root):
            spot = f"{_relative(path, root)}:{frame.lineno}"
    return spot


def describe(err: BaseException, root: Path) -> str:
    """One line: where in the user's code, the exception type and its message."""
    spot = where(err, root)
    message = err.msg if isinstance(err, SyntaxError) else str(err)
    text = f"{type(err).__name__}: {message}".rstrip(": ")
    return f"{spot}: {text}" if spot else text


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except (ValueError, OSError):
        return str(path)


def _import(module: str, root: Path) -> ModuleType | None:
    """Import app.<module>; None when its file does not exist."""
    name = f"{PACKAGE}.{module}"
    if not (root / PACKAGE / f"{module}.py").is_file():
        return None
    try:
        return importlib.import_module(name)
    except Exception as err:
        raise UserCodeError(f"{describe(err, root)} (while importing {PACKAGE}/{module}.py)") from err


def load_user_code(root: str | Path, *, needs_predict: bool = True) -> UserCode:
    """Import the service's code from ROOT/app.

    Raises UserCodeError naming the file (and line) when something is missing or broken.
    """
    root = Path(root).resolve()
    package_dir = root / PACKAGE
    if not package_dir.is_dir():
        if needs_predict:
            raise UserCodeError(f"{package_dir}: not found; a service keeps its code in "
                                f"{PACKAGE}/predict.py and {PACKAGE}/routes.py")
        return UserCode(None, None, None, None, None, None)
    _forget()
    # Only this service's folder may provide `app`: a regular package in an earlier service's
    # folder would win over this one's namespace package.
    for path in _roots:
        while path in sys.path:
            sys.path.remove(path)
    _roots[:] = [str(root)]
    sys.path.insert(0, str(root))

    schemas = _import("schemas", root)
    predict_mod = _import("predict", root)
    routes = _import("routes", root)

    blueprint = None
    if routes is not None:
        blueprint = getattr(routes, BLUEPRINT, None)
        if not isinstance(blueprint, Blueprint):
            raise UserCodeError(f"{PACKAGE}/routes.py: defines no Blueprint named {BLUEPRINT} "
                                f"(write `{BLUEPRINT} = Blueprint(\"{BLUEPRINT}\", __name__)`)")
    predict = preprocess = load = predict_batch = None
    if predict_mod is not None:
        predict = _callable(predict_mod, "predict")
        preprocess = _callable(predict_mod, "preprocess")
        load = _callable(predict_mod, "load")
        predict_batch = _callable(predict_mod, "predict_batch")
    if predict is None and needs_predict:
        found = "has no function predict(*input)" if predict_mod else "not found"
        raise UserCodeError(f"{PACKAGE}/predict.py: {found}; define predict(*input) there")
    return UserCode(blueprint, predict, preprocess, load, schemas,
                    Path(routes.__file__) if routes is not None and routes.__file__ else None,
                    predict_batch)


def _callable(module: ModuleType, name: str) -> Callable[..., Any] | None:
    value = getattr(module, name, None)
    if value is not None and not callable(value):
        raise UserCodeError(f"{PACKAGE}/{module.__name__.split('.')[-1]}.py: {name} is "
                            f"{type(value).__name__}, not a function")
    return value

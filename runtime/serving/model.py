"""Serve a saved model with no code: service.yaml `model: {path: ... | class_path: ...}`.

`path` is a joblib or pickle file inside the service folder, or `module:Class` (a class built
without arguments); `class_path: "module:Class"` with `configuration: {...}` builds the class
with those keyword arguments (rest-model-service's form). `method` (default `predict`) is what
predict calls, once on all the rows it is sent. A model fitted with feature names
(`feature_names_in_`) also takes pandas' split orient, `{"columns": [...], "data": [[...]]}`,
and objects by feature name; both need pandas, which is imported only for them.
"""
from __future__ import annotations

import functools
import importlib
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.errors import UserCodeError
from runtime.serving.contract import InputError


def import_class(root: Path, path: str) -> Any:
    """The class `module:Class` (or `package.module.Class`) names, its module looked up in the
    service folder ROOT first."""
    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    folder = str(root.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)  # mymodel.py beside service.yaml, as `python -m` would see it
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module.split(".")[0] and err.name != module:
            raise UserCodeError(f"model {path}: {module} imports a missing module: {err}") from err
        raise UserCodeError(f"model {path}: no module {module!r} in {root} or installed; "
                            f"put {module.replace('.', '/')}.py beside service.yaml") from err
    except Exception as err:
        raise UserCodeError(f"model {path}: importing {module} failed: "
                            f"{type(err).__name__}: {err}") from err
    try:
        return getattr(found, name)
    except AttributeError as err:
        raise UserCodeError(f"model {path}: {module} has no {name!r}") from err


class ModelPredictor:
    """Loads the model in load() (after fork, in each worker) and predicts on input rows."""

    def __init__(self, root: Path, settings: Mapping[str, Any] | str):
        self.root = root
        settings = {"path": settings} if isinstance(settings, str) else dict(settings)
        self.path: str = settings.get("path") or settings.get("class_path") or ""
        self.class_path: str | None = settings.get("class_path")
        self.configuration: dict[str, Any] = dict(settings.get("configuration") or {})
        self.method: str = settings.get("method") or "predict"
        self.model: Any = None
        self._call: Any = None

    def load(self) -> None:
        if self.class_path is not None:
            self.model = self._build(self.class_path, self.configuration)
        elif ":" in self.path and not (self.root / self.path).exists():
            self.model = self._build(self.path, {})
        else:
            self.model = self._read(self.root / self.path)
        call = getattr(self.model, self.method, None)
        if not callable(call):
            raise UserCodeError(f"model {self.path}: {type(self.model).__name__} has no "
                                f"{self.method} method (service.yaml model.method)")
        self._call = call

    def _build(self, path: str, configuration: dict[str, Any]) -> Any:
        cls = import_class(self.root, path)
        try:
            return cls(**configuration)
        except Exception as err:
            raise UserCodeError(f"model {path}: {getattr(cls, '__name__', path)}"
                                f"(**configuration) failed: {type(err).__name__}: {err}") from err

    def _read(self, file: Path) -> Any:
        if not file.is_file():
            raise UserCodeError(f"model file {file} not found; save your model there "
                                f"(joblib.dump(model, {self.path!r}))")
        try:
            if file.suffix in (".pkl", ".pickle"):
                with file.open("rb") as handle:
                    return pickle.load(handle)
            import joblib

            return joblib.load(file)
        except Exception as err:
            raise UserCodeError(f"model file {file} could not be loaded: "
                                f"{type(err).__name__}: {err}") from err

    def predict(self, *rows: Any) -> Any:
        """The model's method over rows; plain numbers (one row spread by predict) are one
        row; one object is pandas' split orient."""
        if len(rows) == 1 and isinstance(rows[0], Mapping):
            return self._call(self._split(rows[0]))
        if all(isinstance(row, (list, tuple)) for row in rows):
            return self.predict_batch(list(rows))
        return self.predict_batch([list(rows)])

    def predict_batch(self, rows: list[Any]) -> Any:
        """The model's method called once on all ROWS (lists of values, or objects by feature)."""
        names = self._feature_names()
        if rows and all(isinstance(row, Mapping) for row in rows):
            if names is None:
                raise InputError("rows as objects need a model fitted with feature names "
                                 "(feature_names_in_); send lists of values")
            missing = sorted({str(n) for n in names} - set().union(*(set(r) for r in rows)))
            if missing:
                raise InputError(f"rows lack the model's features: {', '.join(missing)}")
            return self._call(_pandas("rows as objects").DataFrame(
                [{n: row.get(n) for n in names} for row in rows], columns=names))
        if names is not None and _has_pandas():
            wrong = next((i for i, row in enumerate(rows)
                          if not isinstance(row, (list, tuple)) or len(row) != len(names)), None)
            if wrong is not None:
                raise InputError(f"row {wrong}: must be a list of {len(names)} values, the "
                                 f"model's features {', '.join(map(str, names))}")
            # Named columns, as the model was fitted: no "X does not have valid feature names".
            return self._call(_pandas("").DataFrame(rows, columns=names))
        return self._call(rows)

    def _split(self, value: Mapping[str, Any]) -> Any:
        """pandas' split orient `{"columns": [...], "data": [[...]]}` as the model's input."""
        columns, data = value.get("columns"), value.get("data")
        if (not isinstance(columns, list) or not isinstance(data, list)
                or set(value) - {"columns", "data", "index"}
                or not all(isinstance(row, list) and len(row) == len(columns) for row in data)):
            raise InputError('input must be rows (a list of lists) or pandas\' split orient: '
                             '{"columns": [...], "data": [[...], ...]}, each row as long as '
                             'columns')
        names = self._feature_names()
        if names is None:
            return data
        unknown = [str(c) for c in columns if c not in names]
        missing = [str(n) for n in names if n not in columns]
        if unknown or missing:
            raise InputError("columns do not match the model's features: "
                             + "; ".join(filter(None, [
                                 f"missing {', '.join(missing)}" if missing else "",
                                 f"unknown {', '.join(unknown)}" if unknown else ""])))
        frame = _pandas('{"columns", "data"} input').DataFrame(data, columns=columns)
        return frame[list(names)]

    def _feature_names(self) -> list[Any] | None:
        names = getattr(self.model, "feature_names_in_", None)
        return [n.item() if hasattr(n, "item") else n for n in names] if names is not None else None


@functools.cache
def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def _pandas(what: str) -> Any:
    try:
        import pandas
    except ImportError as err:
        raise InputError(f"{what} needs pandas, which this service does not have: add pandas "
                         f"to service.yaml packages, or send rows (lists of values)") from err
    return pandas

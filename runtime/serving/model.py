"""Serve a saved model with no code: service.yaml `model: {path: ...}`.

The path is a joblib or pickle file inside the service folder, or `module:Class` (a class with
a `predict` method, built without arguments). predict() calls the model's predict on the rows.
"""
from __future__ import annotations

import importlib
import pickle
import sys
from pathlib import Path
from typing import Any

from runtime.errors import UserCodeError


def import_class(root: Path, path: str) -> Any:
    """The class `module:Class` names, its module looked up in the service folder ROOT first."""
    module, _, name = path.partition(":")
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

    def __init__(self, root: Path, path: str):
        self.root = root
        self.path = path
        self.model: Any = None

    def load(self) -> None:
        if ":" in self.path and not (self.root / self.path).exists():
            self.model = import_class(self.root, self.path)()
        else:
            file = self.root / self.path
            if not file.is_file():
                raise UserCodeError(f"model file {file} not found; save your model there "
                                    f"(joblib.dump(model, {self.path!r}))")
            try:
                if file.suffix in (".pkl", ".pickle"):
                    with file.open("rb") as handle:
                        self.model = pickle.load(handle)
                else:
                    import joblib

                    self.model = joblib.load(file)
            except Exception as err:
                raise UserCodeError(f"model file {file} could not be loaded: "
                                    f"{type(err).__name__}: {err}") from err
        if not callable(getattr(self.model, "predict", None)):
            raise UserCodeError(f"model {self.path}: {type(self.model).__name__} has no predict method")

    def predict(self, *rows: Any) -> Any:
        """The model's predict over rows; plain numbers (one row spread by predict) are one row."""
        if all(isinstance(row, (list, tuple)) for row in rows):
            return self.model.predict(list(rows))
        return self.model.predict([list(rows)])

"""The benchmark's model: an iris LogisticRegression, trained once and saved with joblib."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Where every contestant loads the model from (bench/run sets BENCH_MODEL to the same file).
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "iris-service" / "model.joblib"


def train(path: Path = DEFAULT_PATH) -> Path:
    """Fit LogisticRegression on the iris data set and save it to `path` with joblib."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return path


def load() -> Any:
    """The saved model, from $BENCH_MODEL or the default path."""
    import joblib

    return joblib.load(os.environ.get("BENCH_MODEL", str(DEFAULT_PATH)))

"""predict(*features) on the bench's iris model; no predict_batch, so batches go row by row."""
import os
from pathlib import Path

MODEL = {}


def load():
    import joblib

    default = Path(__file__).resolve().parents[2] / "iris-service" / "model.joblib"
    MODEL["iris"] = joblib.load(os.environ.get("BENCH_MODEL", str(default)))


def predict(*row):
    features = row[0] if len(row) == 1 else row  # {"input": [[...]]} or {"input": [...]}
    return MODEL["iris"].predict([features]).tolist()

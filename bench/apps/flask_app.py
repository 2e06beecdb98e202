"""Contestant (a): the model behind a bare Flask route, as one would write it by hand.

Served by gunicorn with kiln's workers and worker class: `gunicorn apps.flask_app:app`.
Same request and answer shape as kiln's predict route, no request ids, logs or metrics.
"""
from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from apps.iris import load

app = Flask(__name__)
model = load()


@app.get("/health")
def health() -> Any:
    return {"status": "ok"}


@app.post("/api/v1.0/predict")
def predict() -> Any:
    rows = request.get_json()["input"]
    return jsonify(prediction=model.predict(rows).tolist())

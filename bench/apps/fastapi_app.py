"""Contestant (f): the model behind a bare FastAPI route, as one would write it by hand.

Served by gunicorn with uvicorn-worker's UvicornWorker (FastAPI's production set-up), from
bench/.venvs/fastapi: `gunicorn -k uvicorn_worker.UvicornWorker apps.fastapi_app:app`.
An async route that reads the body itself: for a model call of a fraction of a millisecond
the fastest bare way (a `def` route would hand every call to FastAPI's thread pool).
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from apps.iris import load

app = FastAPI()
model = load()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/v1.0/predict")
async def predict(request: Request) -> dict[str, Any]:
    rows = (await request.json())["input"]
    return {"prediction": model.predict(rows).tolist()}

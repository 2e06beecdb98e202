"""One `kiln batch` worker process: the service loaded once, then chunk after chunk predicted.

A worker is started (spawn or forkserver, never fork) by runtime/jobs/batch.py; it imports the
service's code, runs `load()` once, then takes `(index, first row number, rows)` tasks off a
queue and answers each with the chunk's output bytes, ready to append. A row is an input as
`{"input": ...}` would carry it: PredictInput's fields by column name (loaded by the schema),
else the row's values in column order, spread into predict. `predict_batch` (or the model
template's vectorised method) gets the whole chunk; a chunk it fails on is tried row by row, so
only the bad rows fail.
"""
from __future__ import annotations

import json
import logging
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.jobs.files import Result, encode

#: The variable that tells the forkserver which service to preload (runtime/jobs/preload.py).
SERVICE_VAR = "KILN_BATCH_SERVICE"
#: How many failed rows of a chunk are named back to the parent (the rest are only counted).
NAMED_FAILURES = 3


@dataclass(frozen=True)
class Job:
    """What every worker of one run is told (picklable)."""

    root: str
    in_kind: str
    out_kind: str
    #: The input's columns (CSV, Parquet); None for JSON Lines.
    columns: list[str] | None
    #: The columns a CSV or Parquet output writes before the added ones.
    out_columns: list[str] | None
    batch_id: str


def scalar(text: str) -> Any:
    """A CSV cell as `{"input": [...]}` would carry it: a number when it reads as one, "" as null."""
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    stripped = text.strip().lstrip("+-")
    return int(text) if stripped.isdigit() else number


def plain(value: Any) -> Any:
    """A prediction as JSON would carry it: numpy scalars and arrays as numbers and lists."""
    if isinstance(value, Iterator):
        return [plain(item) for item in value]
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


class Runner:
    """The loaded service of this worker, predicting chunks."""

    def __init__(self, job: Job):
        from runtime.app import create_app, service_of
        from runtime.errors import UserCodeError
        from runtime.observability import capture
        from runtime.serving.model import ModelPredictor

        self.job = job
        # No HTTP caller reaches a batch: auth's warning about missing secrets is not for it.
        logging.getLogger("kiln.auth").setLevel(logging.ERROR)
        service = service_of(create_app(job.root))
        if service.predictor is None or service.code is None:
            raise UserCodeError(service.health.reason() or "the service has no predict")
        service.health.start(background=False)
        if service.health.error:
            raise UserCodeError(service.health.error)
        self.root = Path(job.root)
        self.config = service.config
        self.predictor = service.predictor
        self.contract = self.predictor.contract
        self.names = set(self.contract.input_names()) if self.contract.input else None
        self.vectorised = self.predictor.predict_batch is not None
        # The model template's predict answers a list of one prediction for one row (what
        # /api/v1.0/predict answers); its vectorised method answers the bare prediction.
        self.wraps = isinstance(getattr(service.code.predict, "__self__", None), ModelPredictor)
        settings = capture.capture_settings(service.config)
        self.capture = None if settings is None else (
            capture.writer(settings.root, "requests", settings.max_bytes), settings.bodies)
        self._capture_module = capture

    # -- one row's input ------------------------------------------------------------------

    def decode(self, raw: Any) -> tuple[Any, Any]:
        """(record for the output, input as {"input": ...} carries it) of one raw row."""
        job = self.job
        if job.in_kind == "jsonl":
            record = json.loads(raw)
            if isinstance(record, dict):
                given: Any = ({k: v for k, v in record.items() if k in self.names}
                              if self.names is not None else list(record.values()))
            else:
                given = record
            return record, given
        columns = job.columns or []
        if self.names is not None:
            return raw, {name: value for name, value in zip(columns, raw)
                         if name in self.names and value not in ("", None)}
        return raw, [scalar(v) for v in raw] if job.in_kind == "csv" else list(raw)

    def arguments(self, given: Any) -> Any:
        """PredictInput's loaded fields, or predict's arguments; raises InputError."""
        if self.names is not None:
            return self.contract.load(given)
        return given if isinstance(given, list) else [given]

    # -- predicting -------------------------------------------------------------------------

    def one(self, args: Any) -> Any:
        """One row's prediction, through predict (or predict_batch over that row alone)."""
        if self.vectorised:
            answer = self.predictor.run_rows([self.item(args)])
            return [plain(answer[0])] if self.wraps else plain(answer[0])
        if self.names is not None:
            return plain(self.predictor.run_loaded(args))
        return plain(self.predictor.run(args))

    def item(self, args: Any) -> Any:
        """What predict_batch gets for one row: the loaded fields, the one argument, or the
        tuple of the arguments."""
        if isinstance(args, dict):
            return args
        return args[0] if len(args) == 1 else tuple(args)

    def failure(self, err: BaseException) -> tuple[str, int]:
        """(one-line message, the HTTP status predict would answer) for a row's error."""
        message, status = self._failure(err)
        return " ".join(message.split()), status

    def _failure(self, err: BaseException) -> tuple[str, int]:
        from runtime.serving.contract import InputError
        from runtime.serving.loader import describe
        from runtime.serving.timeouts import FutureTimeout

        if isinstance(err, FutureTimeout):
            return f"prediction took longer than predict.timeout ({self.predictor.timeout:g} s)", 504
        if isinstance(err, InputError):
            return str(err), 400
        return describe(err, self.root), 500

    def chunk(self, first: int, rows: list[Any]) -> tuple[bytes, int, list[tuple[int, str]]]:
        """The output bytes of ROWS (row numbers from FIRST), the failures' count, the first few."""
        began = time.monotonic()
        count = len(rows)
        records: list[Any] = [None] * count
        givens: list[Any] = [None] * count
        args: list[Any] = [None] * count
        predictions: list[Any] = [None] * count
        errors: list[tuple[str, int] | None] = [None] * count
        width = len(self.job.columns or ()) if self.job.in_kind == "csv" else None
        for i, raw in enumerate(rows):
            if width is not None and len(raw) != width:
                # Its cells would sit under the wrong columns of the output: keep the header's.
                records[i] = [*raw, *[""] * width][:width]
                plural = "" if len(raw) == 1 else "s"
                errors[i] = (f"{len(raw)} value{plural}, the header has {width} columns", 400)
                continue
            try:
                records[i], givens[i] = self.decode(raw)
            except ValueError as err:  # a JSON Lines line that is not JSON
                records[i] = raw.decode("utf-8", "replace").rstrip("\r\n")
                errors[i] = (f"line is not JSON: {err}", 400)
                continue
            try:
                args[i] = self.arguments(givens[i])
            except Exception as err:  # noqa: BLE001 - the row's error
                errors[i] = self.failure(err)
        ready = [i for i in range(count) if errors[i] is None]
        if self.vectorised and len(ready) > 1:
            try:
                answers = self.predictor.run_rows([self.item(args[i]) for i in ready])
            except Exception:  # noqa: BLE001, S110 - tried again row by row below
                pass
            else:
                for i, answer in zip(ready, answers):
                    predictions[i] = [plain(answer)] if self.wraps else plain(answer)
                ready = []
        for i in ready:
            try:
                predictions[i] = self.one(args[i])
            except Exception as err:  # noqa: BLE001 - the row's error
                errors[i] = self.failure(err)
        ids = [f"{self.job.batch_id}-{first + i}" for i in range(count)]
        results: list[Result] = [(prediction, error[0] if error else None, rid)
                                 for prediction, error, rid in zip(predictions, errors, ids)]
        if self.capture is not None:
            self._capture(givens, results, errors, time.monotonic() - began)
        failed = [(first + i, error[0]) for i, error in enumerate(errors) if error is not None]
        # Parquet to Parquet keeps the input's own column types (the output's schema is the
        # input's); any other pair writes the values as cells.
        payload = encode(self.job.out_kind, self.job.out_columns, records, results,
                         native=self.job.in_kind == "parquet")
        return payload, len(failed), failed[:NAMED_FAILURES]

    def _capture(self, givens: list[Any], results: list[Result],
                 errors: list[tuple[str, int] | None], seconds: float) -> None:
        capture = self._capture_module
        writer, bodies = self.capture  # type: ignore[misc]
        each = seconds / max(1, len(results))
        lines = []
        for given, (prediction, error, rid), problem in zip(givens, results, errors):
            answer = ({"error": error, "request_id": rid} if error is not None
                      else {"prediction": prediction, "request_id": rid})
            lines.append(capture.dumps(capture.batch_record(
                rid, self.job.batch_id, self.config.id, self.config.version, given, answer,
                problem[1] if problem else 200, each, bodies)))
        writer.write(b"".join(lines), capture.now())


def main(job: Job, tasks: Any, results: Any) -> None:
    """A worker process's life: load, then answer tasks until a None arrives."""
    # Ctrl-C reaches the whole process group: the parent stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = Runner(job)
    except Exception as err:  # noqa: BLE001 - reported by the parent as one line
        results.put(("failed", -1, f"{err}"))
        return
    results.put(("ready", -1, None))
    while True:
        task = tasks.get()
        if task is None:
            return
        index, first, rows = task
        try:
            payload, failed, named = runner.chunk(first, rows)
        except Exception:  # noqa: BLE001 - our own bug: the parent stops with its traceback
            results.put(("crashed", index, traceback.format_exc()))
            return
        results.put(("done", index, (payload, len(rows), failed, named)))

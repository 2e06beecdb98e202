"""Batch files by extension: CSV and JSON Lines (standard library) and Parquet (pyarrow).

Readers hand out chunks of raw rows, so that the workers do the decoding; encoders turn a
chunk of rows with their results into the bytes the output gets, in the workers too; `Output`
appends those bytes in the parent and can cut a file back to a byte count on resume. A
Parquet output cannot be appended to after a crash, so its chunks go to a spool file of
pickled rows beside it (resumable the same way) and become the Parquet file at the end.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
from collections.abc import Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any

from runtime.errors import KilnError

KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
         ".pq": "parquet"}
#: The columns every output adds after the input's.
ADDED = ("prediction", "error", "request_id")
SPOOL_SUFFIX = ".kiln-batch.spool"


class FilesError(KilnError):
    """Raised when a batch file has an unknown kind, cannot be read, or cannot be written."""


def kind_of(path: Path) -> str:
    """csv, jsonl or parquet, from PATH's extension."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise FilesError(f"{path}: unknown file kind {path.suffix or '(no extension)'!r}; "
                         f"use {', '.join(sorted(KINDS))}")
    return kind


def pyarrow_parquet() -> Any:
    """pyarrow.parquet, or a one-line error saying how to get it."""
    try:
        import pyarrow.parquet
    except ImportError as err:
        raise FilesError("Parquet files need pyarrow: pip install 'kiln[parquet]' (or add "
                         "pyarrow to service.yaml packages for an image)") from err
    return pyarrow.parquet


class Reader:
    """The rows of an input file, chunk by chunk; `columns` is None for JSON Lines."""

    columns: list[str] | None = None
    #: Rows in the file when known up front (Parquet), for the progress bar.
    total_rows: int | None = None

    def chunks(self, size: int) -> Iterator[list[Any]]:
        raise NotImplementedError

    def fraction(self) -> float | None:
        """How far through the file reading is, 0 to 1, when the file tells."""
        return None

    def close(self) -> None:
        """Close the file."""


class CsvReader(Reader):
    """A CSV file with a header row; rows are lists of strings, decoded in the workers."""

    def __init__(self, path: Path):
        self.size = path.stat().st_size
        self.raw = path.open("rb")
        self.file = io.TextIOWrapper(self.raw, encoding="utf-8-sig", newline="")
        self.rows = csv.reader(self.file)
        try:
            self.columns = next(self.rows)
        except StopIteration:
            self.file.close()
            raise FilesError(f"{path}: empty; a CSV input starts with a header row") from None
        except (csv.Error, UnicodeDecodeError) as err:
            self.file.close()
            raise FilesError(f"{path}: not a readable CSV header: {err}") from err

    def chunks(self, size: int) -> Iterator[list[Any]]:
        while True:
            try:
                chunk = list(islice(self.rows, size))
            except (csv.Error, UnicodeDecodeError) as err:
                raise FilesError(f"{self.file.name}: line {self.rows.line_num}: {err}") from err
            if not chunk:
                return
            yield chunk

    def fraction(self) -> float | None:
        # The bytes the text layer has taken from the file: a little ahead of the rows.
        return self.raw.tell() / self.size if self.size else None

    def close(self) -> None:
        self.file.close()


class JsonlReader(Reader):
    """JSON Lines; rows are the raw lines (bytes), blank lines skipped, parsed in the workers."""

    def __init__(self, path: Path):
        self.size = path.stat().st_size
        self.file = path.open("rb")
        self._lines = (line for line in self.file if line.strip())
        self._first = next(self._lines, None)

    def first_keys(self) -> list[str] | None:
        """The keys of the first line's object: the columns of a CSV or Parquet output."""
        try:
            value = json.loads(self._first) if self._first is not None else None
        except ValueError:
            return None
        return [str(key) for key in value] if isinstance(value, dict) else None

    def chunks(self, size: int) -> Iterator[list[Any]]:
        lines = self._lines if self._first is None else chain([self._first], self._lines)
        self._first = None
        while True:
            chunk = list(islice(lines, size))
            if not chunk:
                return
            yield chunk

    def fraction(self) -> float | None:
        return self.file.tell() / self.size if self.size else None

    def close(self) -> None:
        self.file.close()


class ParquetReader(Reader):
    """A Parquet file, read batch by batch; rows are lists of values in column order."""

    def __init__(self, path: Path):
        pq = pyarrow_parquet()
        try:
            self.file = pq.ParquetFile(path)
        except Exception as err:
            raise FilesError(f"{path}: not a readable Parquet file: {err}") from err
        self.schema = self.file.schema_arrow
        self.columns = list(self.schema.names)
        self.total_rows = int(self.file.metadata.num_rows)

    def chunks(self, size: int) -> Iterator[list[Any]]:
        for batch in self.file.iter_batches(batch_size=size):
            columns = [column.to_pylist() for column in batch.columns]
            yield [list(row) for row in zip(*columns)]

    def close(self) -> None:
        self.file.close()


def open_reader(path: Path) -> Reader:
    """The reader for PATH's kind."""
    kind = kind_of(path)
    if not path.is_file():
        raise FilesError(f"{path}: no such file")
    try:
        if kind == "csv":
            return CsvReader(path)
        if kind == "jsonl":
            return JsonlReader(path)
    except OSError as err:
        raise FilesError(f"{path}: cannot read: {err.strerror or err}") from err
    return ParquetReader(path)


def cell(value: Any) -> str:
    """A prediction as one CSV or Parquet cell: strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return dumps(value)


def dumps(value: Any) -> str:
    """Compact JSON, numpy values as plain numbers and lists."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


#: One row's result: (prediction, error message or None, request id).
Result = tuple[Any, "str | None", str]


def encode(kind: str, columns: Sequence[str] | None, records: Sequence[Any],
           results: Sequence[Result], *, native: bool = False) -> bytes:
    """The output bytes of one chunk: each input record with its prediction, error and id.

    A record is a list of values in COLUMNS' order (CSV, Parquet), or a JSON Lines line's
    value (an object, else anything: kept under "input"). NATIVE: the Parquet output keeps the
    values' own types (the input was Parquet); otherwise they become cells (text).
    """
    if kind == "jsonl":
        lines = []
        for record, (prediction, error, rid) in zip(records, results):
            if isinstance(record, list) and columns is not None:
                out = dict(zip(columns, record))
            elif isinstance(record, dict):
                out = dict(record)
            else:
                out = {"input": record}
            out.update(prediction=prediction, error=error, request_id=rid)
            lines.append(dumps(out))
        return ("\n".join(lines) + "\n").encode("utf-8")
    rows = []
    for record, (prediction, error, rid) in zip(records, results):
        values = _values(record, columns or [], native)
        rows.append((*values, cell(prediction) if error is None else None, error, rid))
    if kind == "parquet":
        return pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode("utf-8")


def _values(record: Any, columns: Sequence[str], native: bool) -> list[Any]:
    if isinstance(record, list):
        return record if native else [cell(value) for value in record]
    if isinstance(record, dict):
        return [cell(record.get(name)) for name in columns]
    return [cell(record), *([""] * (len(columns) - 1))] if columns else []


def csv_header(columns: Sequence[str]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow([*columns, *ADDED])
    return text.getvalue().encode("utf-8")


class Output:
    """The output file (or a Parquet output's spool), appended chunk by chunk.

    `size` is the number of bytes written; `sync()` makes them durable before the progress
    file records them; `open(..., keep=N)` cuts what a crashed run wrote after byte N.
    """

    def __init__(self, path: Path, kind: str, columns: list[str] | None, keep: int | None):
        self.path = path
        self.kind = kind
        self.columns = columns
        self.target = path.with_name(path.name + SPOOL_SUFFIX) if kind == "parquet" else path
        if kind == "parquet":
            pyarrow_parquet()
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | (0 if keep is not None else os.O_TRUNC)
            self.fd = os.open(self.target, flags, 0o644)
            if keep is not None:
                if os.fstat(self.fd).st_size < keep:
                    os.close(self.fd)
                    raise FilesError(f"{self.target}: shorter ({os.path.getsize(self.target)} "
                                     f"bytes) than its progress file says ({keep}); run "
                                     f"without --resume to start over")
                os.ftruncate(self.fd, keep)
            self.size = keep or 0
            os.lseek(self.fd, self.size, os.SEEK_SET)
        except OSError as err:
            raise FilesError(f"{self.target}: cannot write: {err.strerror or err}") from err
        if keep is None and kind == "csv" and columns is not None:
            self.write(csv_header(columns))

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as err:
            raise FilesError(f"{self.target}: cannot write: {err.strerror or err}") from err
        self.size += len(data)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def finish(self, schema: Any) -> None:
        """Turn a Parquet output's spool into the Parquet file (nothing to do for the others)."""
        self.sync()
        if self.kind != "parquet":
            return
        import pyarrow as pa

        pq = pyarrow_parquet()
        full = pa.schema([*schema, *(pa.field(name, pa.string()) for name in ADDED)])
        partial = self.path.with_name(self.path.name + ".partial")
        with self.target.open("rb") as spool, pq.ParquetWriter(partial, full) as writer:
            while True:
                try:
                    rows = pickle.load(spool)
                except EOFError:
                    break
                columns: list[Sequence[Any]] = list(zip(*rows)) if rows else [[] for _ in full]
                writer.write_batch(pa.RecordBatch.from_arrays(
                    [pa.array(list(values), type=field.type)
                     for values, field in zip(columns, full)], schema=full))
        os.replace(partial, self.path)
        self.target.unlink()

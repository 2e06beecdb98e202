"""`kiln batch`: files in, predictions out, in parallel, resumable, bounded in memory.

Runs go through the real command in a child process (its workers are real processes too);
the iris tests train a tiny model into a service folder of their own.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runtime.cli import cli
from runtime.jobs.batch import BatchError, parse_shard
from runtime.jobs.files import FilesError, kind_of
from runtime.jobs.preload import pickled_modules
from runtime.jobs.worker import scalar
from runtime.testing import client
from tests.support import ROOT, SERVICES, wait_for

ROWS = SERVICES / "batch-rows"
TYPED = SERVICES / "batch-typed"
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def kiln_batch(*args: Any, env: dict[str, str] | None = None, timeout: float = 300,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli", "batch", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize(("text", "expected"), [
    (None, (0, 1)), ("0/1", (0, 1)), ("2/4", (2, 4)),
])
def test_shard_reads_index_over_count(text: str | None, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "0/0"])
def test_shard_refuses_what_is_not_i_of_n(text: str) -> None:
    with pytest.raises(BatchError, match="give I/N with 0 <= I < N"):
        parse_shard(text)


@pytest.mark.parametrize(("cell", "value"), [
    ("", None), ("7", 7), ("-3", -3), ("5.1", 5.1), ("1e3", 1000.0), ("abc", "abc"),
    (" 2 ", 2), ("0x10", "0x10"),
])
def test_csv_cells_become_what_json_would_carry(cell: str, value: Any) -> None:
    assert scalar(cell) == value and type(scalar(cell)) is type(value)


@pytest.mark.parametrize(("name", "kind"), [
    ("a.csv", "csv"), ("a.JSONL", "jsonl"), ("a.ndjson", "jsonl"), ("a.parquet", "parquet"),
])
def test_file_kind_comes_from_the_extension(name: str, kind: str) -> None:
    assert kind_of(Path(name)) == kind


def test_unknown_extension_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FilesError, match=r"unknown file kind '\.xlsx'; use \.csv, \.jsonl"):
        kind_of(tmp_path / "in.xlsx")


def test_preload_finds_the_modules_a_pickle_names(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [Fraction(1, 3)]}, protocol=4))
    assert pickled_modules(path) == {"fractions"}
    (tmp_path / "junk.pkl").write_bytes(b"\x00not a pickle")
    assert pickled_modules(tmp_path / "junk.pkl") == set()


def test_rows_spread_into_predict_and_bad_rows_fail_alone(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["a", "b"],
                       [[i, i * 10] for i in range(1, 4)] + [["x", 1]] + [[i, 1] for i in range(5, 11)])
    out = tmp_path / "out.csv"
    done = kiln_batch(ROWS, "--input", source, "--output", out, "--workers", "2", "--chunk", "3")
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("Error: 1 of 10 rows failed (first: row 4: app/predict.py:15: TypeError: "
                    f"not a number: 'x' + 1); see the error column of {out}")
    assert "kiln batch: 10 rows, 1 failed, " in done.stderr and " rows/s -> " in done.stderr
    rows = read_csv(out)
    assert list(rows[0]) == ["a", "b", "prediction", "error", "request_id"]
    assert [r["a"] for r in rows] == ["1", "2", "3", "x", *map(str, range(5, 11))]
    assert [r["prediction"] for r in rows[:3]] == ["11", "22", "33"]
    assert rows[3]["prediction"] == "" and "TypeError: not a number" in rows[3]["error"]
    assert all(r["error"] == "" for r in rows if r["a"] != "x")
    batch_id = rows[0]["request_id"].rsplit("-", 1)[0]
    assert [r["request_id"] for r in rows] == [f"{batch_id}-{n}" for n in range(1, 11)]


def test_a_csv_row_not_as_wide_as_the_header_fails_alone_and_keeps_the_columns(
        tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n1,2,3\n4\n5,6\n")
    out = tmp_path / "out.csv"
    done = kiln_batch(ROWS, "--input", source, "--output", out)
    assert done.returncode == 1, done.stderr
    with out.open(newline="") as file:
        lines = list(csv.reader(file))
    assert lines[0] == ["a", "b", "prediction", "error", "request_id"]
    assert all(len(line) == 5 for line in lines), lines
    assert [line[:4] for line in lines[1:]] == [
        ["1", "2", "3", ""], ["1", "2", "", "3 values, the header has 2 columns"],
        ["4", "", "", "1 value, the header has 2 columns"], ["5", "6", "11", ""]]


def test_predict_input_columns_predict_batch_chunks_and_capture(tmp_path: Path) -> None:
    lines = [{"id": n, "x": float(n), "weight": 2} for n in range(1, 10)]
    lines[5]["x"] = -1.0  # fails predict_batch for its chunk (rows 5-8): retried row by row
    lines[7]["x"] = "nope"  # fails PredictInput: never reaches predict
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    out = tmp_path / "out.jsonl"
    captures = tmp_path / "captures"
    done = kiln_batch(TYPED, "--input", source, "--output", out, "--chunk", "4",
                      env={"KILN_CAPTURE_DIR": str(captures)})
    assert done.returncode == 1 and "2 of 9 rows failed" in done.stderr, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(1, 10))
    assert rows[0]["prediction"] == {"score": 2.0, "batched": 4}
    assert rows[4]["prediction"] == {"score": 10.0, "batched": 1}  # its chunk, row by row
    assert rows[5]["error"] == "app/predict.py:10: ValueError: x must not be negative"
    assert rows[7]["error"] == "input.x: Not a valid number."
    assert rows[8]["prediction"] == {"score": 18.0, "batched": 1}
    batch_id = rows[0]["request_id"].rsplit("-", 1)[0]
    captured = [json.loads(line) for path in sorted(captures.rglob("requests-*.jsonl"))
                for line in path.read_text().splitlines()]
    assert len(captured) == 9 and {c["batch_id"] for c in captured} == {batch_id}
    by_id = {c["request_id"]: c for c in captured}
    first = by_id[f"{batch_id}-1"]
    assert first["request"]["json"] == {"input": {"x": 1.0, "weight": 2}}
    assert first["response"]["json"]["prediction"] == {"score": 2.0, "batched": 4}
    assert by_id[f"{batch_id}-6"]["status"] == 500 and by_id[f"{batch_id}-8"]["status"] == 400
    exported = CliRunner().invoke(cli, ["export", str(captures), "--since", "2000-01-01",
                                        "-o", str(tmp_path / "export.csv")])
    assert exported.exit_code == 0, exported.output
    assert len(read_csv(tmp_path / "export.csv")) == 9


def test_csv_in_parquet_out(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    source = write_csv(tmp_path / "in.csv", ["x", "note"], [[n, f"row {n}"] for n in range(25)])
    out = tmp_path / "out.parquet"
    done = kiln_batch(TYPED, "--input", source, "--output", out, "--chunk", "10")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out).to_pylist()
    assert [r["note"] for r in table] == [f"row {n}" for n in range(25)]
    assert json.loads(table[3]["prediction"]) == {"score": 3.0, "batched": 10}
    assert table[3]["error"] is None
    assert not (tmp_path / "out.parquet.kiln-batch.spool").exists()


def test_parquet_in_parquet_out_keeps_the_columns_types(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x": list(range(25)), "note": [f"row {n}" for n in range(25)]}),
                   source)
    out = tmp_path / "out.parquet"
    done = kiln_batch(TYPED, "--input", source, "--output", out, "--chunk", "10")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.schema.field("x").type == pa.int64()  # the input's own type, not text
    rows = table.to_pylist()
    assert [r["x"] for r in rows] == list(range(25))
    assert json.loads(rows[3]["prediction"]) == {"score": 3.0, "batched": 10}


def test_fail_fast_stops_at_the_first_failed_row(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["a", "b"],
                       [[1, 1], ["x", 1]] + [[n, n] for n in range(200)])
    out = tmp_path / "out.csv"
    done = kiln_batch(ROWS, "--input", source, "--output", out, "--chunk", "2", "--fail-fast")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "Error: stopped at a failed row (--fail-fast) after 2 rows (first: row 2: ")
    assert [r["a"] for r in read_csv(out)] == ["1", "x"]


def test_shards_split_the_chunks_between_them(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["a", "b"], [[n, 0] for n in range(23)])
    seen: list[str] = []
    for index in range(2):
        out = tmp_path / f"out-{index}.csv"
        done = kiln_batch(ROWS, "--input", source, "--output", out, "--chunk", "5",
                          "--shard", f"{index}/2", "--workers", "1")
        assert done.returncode == 0, done.stderr
        part = [r["a"] for r in read_csv(out)]
        chunks = range(index, 5, 2)
        assert part == [str(n) for c in chunks for n in range(c * 5, min(23, c * 5 + 5))]
        seen += part
    assert sorted(seen, key=int) == [str(n) for n in range(23)]


def test_refusals_are_one_line(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["a", "b"], [[1, 2]])
    runner = CliRunner()
    wrong = runner.invoke(cli, ["batch", str(ROWS), "-i", str(source), "-o",
                                str(tmp_path / "out.xlsx")])
    assert wrong.exit_code == 1
    assert wrong.output.strip() == (f"Error: {tmp_path / 'out.xlsx'}: unknown file kind "
                                    "'.xlsx'; use .csv, .jsonl, .ndjson, .parquet, .pq")
    shard = runner.invoke(cli, ["batch", str(ROWS), "-i", str(source), "-o",
                                str(tmp_path / "out.csv"), "--shard", "3/2"])
    assert shard.exit_code == 1 and shard.output.count("\n") == 1
    assert "--shard '3/2': give I/N with 0 <= I < N" in shard.output


def test_resume_with_other_chunking_is_refused(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["a", "b"], [[1, 2], [3, 4]])
    out = tmp_path / "out.csv"
    assert kiln_batch(ROWS, "-i", source, "-o", out, "--workers", "1").returncode == 0
    again = kiln_batch(ROWS, "-i", source, "-o", out, "--resume", "--workers", "1")
    assert again.returncode == 0 and "is already complete" in again.stderr
    other = kiln_batch(ROWS, "-i", source, "-o", out, "--resume", "--chunk", "7")
    assert other.returncode == 1
    assert "made for another input, --chunk or --shard" in other.stderr
    assert "Traceback" not in other.stderr


def test_killed_run_resumes_with_each_row_once_in_order(tmp_path: Path) -> None:
    count = 300_000
    rows = [[n, "x" if n % 100_000 == 7 else 1] for n in range(count)]
    source = write_csv(tmp_path / "in.csv", ["a", "b"], rows)
    out = tmp_path / "out.csv"
    state = tmp_path / "out.csv.kiln-batch.json"
    args = [sys.executable, "-m", "runtime.cli", "batch", str(ROWS), "--input", str(source),
            "--output", str(out), "--chunk", "500"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def some_rows_recorded() -> bool:
            return json.loads(state.read_text())["rows"] >= 2000
        assert wait_for(some_rows_recorded, timeout=120, interval=0.05), "no progress recorded"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command, its forkserver and its workers
        proc.wait(timeout=30)
    recorded = json.loads(state.read_text())
    if recorded["finished"]:
        pytest.skip("the run finished before it could be killed")
    done = kiln_batch(ROWS, "--input", source, "--output", out, "--chunk", "500", "--resume")
    assert done.returncode == 1, done.stderr
    assert "resuming after" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"Error: 3 of {count:,} rows failed")
    written = read_csv(out)
    assert [int(r["a"]) for r in written] == list(range(count))
    assert [r["request_id"].rsplit("-", 1)[1] for r in written[:3]] == ["1", "2", "3"]
    assert len({r["request_id"] for r in written}) == count
    failed = [int(r["a"]) for r in written if r["error"]]
    assert failed == [7, 100_007, 200_007]
    assert written[8]["prediction"] == "9"


# -- the iris model, against /api/v1.0/predict ----------------------------------------------

@pytest.fixture(scope="module")
def iris_service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model-template service with an iris LogisticRegression trained here."""
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from apps.iris import train
    finally:
        sys.path.remove(str(ROOT / "bench"))
    folder = tmp_path_factory.mktemp("iris")
    train(folder / "model.joblib")
    (folder / "service.yaml").write_text("id: iris\nversion: 1.0.0\nmodel:\n  path: model.joblib\n")
    return folder


def iris_rows(count: int) -> Iterator[list[float]]:
    """COUNT rows of iris-like measurements (a fixed cycle, so no randomness)."""
    for n in range(count):
        yield [4.3 + (n % 37) / 10, 2.0 + (n % 23) / 10, 1.0 + (n % 59) / 10, 0.1 + (n % 25) / 10]


def write_iris(path: Path, count: int) -> Path:
    with path.open("w") as file:
        file.write(",".join(IRIS_COLUMNS) + "\n")
        block = [",".join(map(str, row)) + "\n" for row in iris_rows(min(count, 10_000))]
        for start in range(0, count, len(block)):
            file.writelines(block[:count - start])
    return path


def check_against_http(service: Path, output: Path, sample: range) -> None:
    """Rows of OUTPUT in SAMPLE carry what /api/v1.0/predict answers for their values."""
    http = client(service)
    wanted = set(sample)
    with output.open(newline="") as file:
        for n, row in enumerate(csv.DictReader(file)):
            if n not in wanted:
                continue
            values = [scalar(row[c]) for c in IRIS_COLUMNS]
            answer = http.post("/api/v1.0/predict", json={"input": values}).get_json()
            assert json.loads(row["prediction"]) == answer["prediction"], (n, row, answer)
            assert row["error"] == ""


def test_model_template_output_equals_http_predict(iris_service: Path, tmp_path: Path) -> None:
    source = write_iris(tmp_path / "in.csv", 3000)
    out = tmp_path / "out.csv"
    done = kiln_batch(iris_service, "--input", source, "--output", out, "--chunk", "256")
    assert done.returncode == 0, done.stderr
    check_against_http(iris_service, out, range(0, 3000, 97))


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            return next(int(line.split()[1]) for line in file if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def family(pid: int) -> list[int]:
    """PID and all its descendants (the forkserver's workers are grandchildren)."""
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found += family(int(child))
    return found


@pytest.mark.slow
def test_a_million_rows_in_bounded_memory(iris_service: Path, tmp_path: Path) -> None:
    """Peak PSS summed over the command and every process under it, sampled every 0.1 s."""
    count = 1_000_000
    source = write_iris(tmp_path / "in.csv", count)
    out = tmp_path / "out.csv"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "batch", str(iris_service),
                             "--input", str(source), "--output", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pids = family(proc.pid)
            total = sum(pss_kib(pid) for pid in pids)
            if total > peak[0]:
                peak[:] = [total, len(pids)]
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, stderr = proc.communicate(timeout=600)
    finally:
        stop.set()
        sampler.join(timeout=10)
    assert proc.returncode == 0, stderr
    print(f"\npeak PSS {peak[0] / 1024:.1f} MiB over {peak[1]} processes; "
          f"{stderr.strip().splitlines()[-1]}")
    assert peak[0] < 300 * 1024, f"peak PSS {peak[0] / 1024:.1f} MiB"
    with out.open() as file:
        assert sum(1 for _ in file) == count + 1
    check_against_http(iris_service, out, range(0, count, 49_999))


def test_help_names_every_option() -> None:
    result = CliRunner().invoke(cli, ["batch", "--help"])
    assert result.exit_code == 0
    for option in ("--input", "--output", "--workers", "--chunk", "--resume", "--fail-fast",
                   "--shard"):
        assert option in result.output

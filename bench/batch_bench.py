"""The batch part of bench/run: rows/s of `kiln batch` against req/s of `kiln serve`'s predict.

For two services on the same model: bench/iris-service (the model template, whose vectorised
method gets each chunk: the predict_batch path) and bench/iris-rows-service (a custom predict
and no predict_batch: one predict per row). Each is served by `kiln serve` and loaded with
wrk -t2 -c16 (req/s), then given a CSV of iris rows through `kiln batch` with its defaults
(rows/s from its summary line, worker start and load() included).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import contestants as cs
import load
import procs as ps

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVICES = {"predict_batch": BENCH / "iris-service", "row by row": BENCH / "iris-rows-service"}
SUMMARY = re.compile(r"kiln batch: ([\d,]+) rows, ([\d,]+) failed, ([\d.]+) s, ([\d,]+) rows/s")


def write_rows(path: Path, count: int) -> Path:
    """COUNT iris rows (a fixed cycle) as CSV."""
    block = [f"{4.3 + (n % 37) / 10:.1f},{2.0 + (n % 23) / 10:.1f},{1.0 + (n % 59) / 10:.1f},"
             f"{0.1 + (n % 25) / 10:.1f}\n" for n in range(1000)]
    with path.open("w") as file:
        file.write("sepal_length,sepal_width,petal_length,petal_width\n")
        for start in range(0, count, len(block)):
            file.writelines(block[:count - start])
    return path


def http_rps(service: Path, shape: load.Shape, logs: Path, key: str) -> float:
    """req/s of /api/v1.0/predict under `kiln serve SERVICE`, as contestant (b) is served."""
    port = ps.free_port()
    contestant = cs.kiln(port, key, f"kiln serve {service.name}", service=service)
    proc = contestant.process(logs).start()
    try:
        proc.wait_ready(contestant.url + contestant.ready_path)
        load.run(contestant.url, contestant.predict_path,
                 load.Shape("warmup", shape.threads, shape.connections, 2), contestant.auth)
        return float(load.run(contestant.url, contestant.predict_path, shape,
                              contestant.auth)["rps"])
    finally:
        proc.stop()


def batch_rps(service: Path, source: Path, output: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "runtime.cli", "batch", str(service), "--input",
               str(source), "--output", str(output)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    match = SUMMARY.search(done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"kiln batch failed ({done.returncode}): {done.stderr[-2000:]}")
    rows, _, seconds, _ = match.groups()
    return {"rows": int(rows.replace(",", "")), "seconds": float(seconds),
            "rows_per_s": int(rows.replace(",", "")) / float(seconds),
            "command": " ".join(command[1:]).replace(str(ROOT) + "/", "")}


def run(logs: Path, data: dict[str, Any], duration: int, quick: bool,
        say: Callable[[str], None]) -> str:
    logs.mkdir(parents=True, exist_ok=True)
    counts = {"predict_batch": 200_000 if quick else 1_000_000,
              "row by row": 20_000 if quick else 100_000}
    shape = load.Shape("multi", 2, 16, duration)
    results: dict[str, Any] = {}
    for label, service in SERVICES.items():
        rps = http_rps(service, shape, logs, "batch-http")
        say(f"  {label}: kiln serve {service.name}: {rps:,.0f} req/s")
        source = write_rows(logs / f"batch-{service.name}.csv", counts[label])
        batch = batch_rps(service, source, logs / f"batch-{service.name}-out.csv")
        batch["http_rps"] = rps
        batch["ratio"] = batch["rows_per_s"] / rps if rps else 0.0
        say(f"  {label}: kiln batch {batch['rows']:,} rows: {batch['rows_per_s']:,.0f} rows/s "
            f"({batch['ratio']:.1f}x the HTTP req/s)")
        results[label] = batch
        for path in (source, logs / f"batch-{service.name}-out.csv"):
            path.unlink(missing_ok=True)
    data["batch"] = results
    lines = ["## Batch predictions: kiln batch rows/s against kiln serve req/s", "",
             (f"HTTP: `kiln serve`, wrk -t2 -c16 -d{duration}s after a 2 s warm-up, body "
              f"`{load.BODY}`. Batch: `kiln batch` with its defaults (workers = CPUs, chunks "
              "of 1000), rows/s from its summary line, worker start and load() included."), "",
             "| path | service | HTTP req/s | batch rows | batch s | batch rows/s | ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in results.items():
        lines.append(f"| {label} | {SERVICES[label].name} | {r['http_rps']:,.0f} | "
                     f"{r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
                     f"{r['ratio']:.1f}x |")
    return "\n".join(lines) + "\n"

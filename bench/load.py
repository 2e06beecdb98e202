"""Load with wrk: one timed run against one URL, its numbers read from post.lua's summary line."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "post.lua"
BODY = '{"input": [[5.1, 3.5, 1.4, 0.2]]}'


@dataclass(frozen=True)
class Shape:
    """A load shape: wrk threads, connections and seconds."""

    label: str
    threads: int
    connections: int
    seconds: int


def wrk_command(url: str, shape: Shape, wrk: str = "wrk") -> list[str]:
    return [wrk, f"-t{shape.threads}", f"-c{shape.connections}", f"-d{shape.seconds}s",
            "--timeout", "10s", "-s", str(LUA), url]


def run(base_url: str, path: str, shape: Shape, auth: str | None = None,
        body: str = BODY, wrk: str = "wrk") -> dict[str, Any]:
    """Run wrk once; return requests/s, latency percentiles in ms and error counts."""
    command = wrk_command(base_url, shape, wrk)
    env = {**os.environ, "BENCH_PATH": path, "BENCH_BODY": body, "BENCH_AUTH": auth or ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=shape.seconds + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    errors = sum(raw["errors"].values())
    return {
        "rps": raw["requests"] / seconds if seconds else 0.0,
        "requests": raw["requests"],
        "errors": errors,
        "error_detail": raw["errors"],
        "p50_ms": lat["p50"] / 1000, "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000, "max_ms": lat["max"] / 1000, "mean_ms": lat["mean"] / 1000,
    }


def describe(base_url: str, path: str, shape: Shape, auth: str | None) -> str:
    """The exact wrk command line, with its environment, for the results file."""
    env = f"BENCH_PATH={path} BENCH_BODY={shlex.quote(BODY)}"
    if auth:
        env += " BENCH_AUTH='Bearer ***'"
    return f"{env} {shlex.join(wrk_command(base_url, shape))}"

"""What a run measured, summarised: the machine, the versions, the table, the results files."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model, kernel and the load average right now."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "memory_gib": round(mem_gib, 1), "cpu": cpu,
            "kernel": platform.release(), "loadavg": loadavg()}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Python, the packages in the serving environment, wrk and the kiln commit."""
    out = {"python": platform.python_version()}
    for name in ("flask", "werkzeug", "gunicorn", "scikit-learn", "numpy", "joblib",
                 "prometheus_client"):
        out[name] = _version(name)
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    out["wrk"] = (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "?"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "runtime"],
                           capture_output=True, text=True, check=False).stdout.strip()
    out["kiln commit"] = commit + (" (runtime/ modified)" if dirty else "")
    return out


def summarise(rounds: list[dict[str, dict[str, Any]]], baseline: str = "a") -> dict[str, Any]:
    """Medians over rounds per contestant; ratios to the baseline are taken within each round."""
    keys = list(rounds[0]) if rounds else []
    out: dict[str, Any] = {}
    for key in keys:
        runs = [r[key] for r in rounds if key in r]
        row = {f: statistics.median(run[f] for run in runs)
               for f in ("rps", "p50_ms", "p90_ms", "p99_ms")}
        row["errors"] = sum(run["errors"] for run in runs)
        row["rps_rounds"] = [round(run["rps"], 1) for run in runs]
        if baseline in rounds[0]:
            row["rps_ratio"] = statistics.median(r[key]["rps"] / r[baseline]["rps"]
                                                 for r in rounds if r[baseline]["rps"])
            row["p99_ratio"] = statistics.median(r[key]["p99_ms"] / r[baseline]["p99_ms"]
                                                 for r in rounds if r[baseline]["p99_ms"])
        out[key] = row
    return out


def versus(rounds: list[dict[str, dict[str, Any]]], key: str, other: str,
           field: str = "rps") -> str:
    """`0.93, 1.02, ... (median 1.01)`: KEY's FIELD over OTHER's, round by round."""
    ratios = [r[key][field] / r[other][field] for r in rounds
              if key in r and other in r and r[other][field]]
    if not ratios:
        return "n/a"
    return f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})"


def table(names: dict[str, str], summary: dict[str, Any], title: str) -> str:
    """A markdown table: req/s, p50, p99 and the ratios to (a)."""
    lines = [f"### {title}", "",
             "| contestant | req/s | p50 ms | p99 ms | req/s vs (a) | p99 vs (a) | errors | req/s per round |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for key, row in summary.items():
        lines.append(
            f"| ({key}) {names.get(key, key)} | {row['rps']:.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row.get('rps_ratio', 0):.2f}x | {row.get('p99_ratio', 0):.2f}x | "
            f"{row['errors']} | {', '.join(f'{v:.0f}' for v in row['rps_rounds'])} |")
    return "\n".join(lines) + "\n"


def write(results_dir: Path, stem: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Save `<stem>.json` and `<stem>.md` under results_dir."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{stem}.json", results_dir / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def header(data: dict[str, Any]) -> str:
    """The results file's opening: when, where, with what."""
    m, v = data["machine"], data["versions"]
    lines = [f"# kiln benchmark, {data['started']}", "",
             (f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
             f"load average at start {m['loadavg']}, at end {data.get('loadavg_end', '?')}; "
              f"servers and wrk ran at niceness {data.get('niceness', 0)}."), "",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", "",
             f"Settings: {data['settings']}", ""]
    return "\n".join(lines)

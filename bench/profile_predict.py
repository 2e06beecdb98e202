"""Profile kiln's predict path: py-spy samples the gunicorn workers of `kiln serve` under wrk.

py-spy lives in bench/.venvs/tools (made on first use). It samples only the thread holding the
GIL (`--gil`): a worker's Python work is serial, so that is where its time goes, and threads
parked on a lock or a queue do not count as busy. The collapsed stacks are folded into two top
lists: own time and total time (a frame and its callees), as shares of all samples.
"""
from __future__ import annotations

import collections
import re
import subprocess
import sys
import threading
import venv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import contestants as cs
import load
from procs import free_port

TOOLS = cs.VENVS / "tools"
#: Outer frames every sample shares (process, CLI, gunicorn's loop): left out of the totals.
_OUTER = ("process ", "<module>", "_run_module_as_main", "_run_code", "Command.", "Group.",
          "Context.", "main (runtime/cli.py)", "serve (runtime/", "user_errors", "BaseApplication.",
          "Arbiter.", "Worker.init_process", "SyncWorker.run", "ThreadWorker.run", "Thread.run ",
          "Thread._bootstrap", "_worker (concurrent")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def ensure_py_spy(log: Path) -> Path:
    """bench/.venvs/tools/bin/py-spy, installed on first use."""
    exe = TOOLS / "bin" / "py-spy"
    if not exe.exists():
        venv.create(TOOLS, with_pip=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            subprocess.run([str(TOOLS / "bin" / "python"), "-m", "pip", "install", "-q", "py-spy"],
                           stdout=out, stderr=subprocess.STDOUT, check=True, timeout=600)
    return exe


def short(frame: str) -> str:
    """`func (path:line)` with the path cut to the package: flask/app.py, runtime/serving/predict.py."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/wt-bench/", str(cs.ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def fold(collapsed: str) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Total samples, own samples per frame and inclusive samples per frame."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith(_OUTER):
                total[frame] += count
    return samples, own, total


def top(counter: collections.Counter[str], samples: int, n: int) -> list[dict[str, Any]]:
    return [{"frame": frame, "samples": count, "percent": round(100 * count / samples, 1)}
            for frame, count in counter.most_common(n)] if samples else []


def run(logs: Path, data: dict[str, Any], seconds: int = 10, label: str = "profile",
        say: Callable[[str], None] = print) -> str:
    """Sample kiln's workers for `seconds` under wrk -t2 -c16; return the markdown section."""
    try:
        py_spy = ensure_py_spy(logs / "py-spy-pip.log")
    except (subprocess.SubprocessError, OSError) as err:
        say(f"skipping profile: py-spy could not be installed ({err})")
        data[label] = {"skipped": str(err)}
        return f"## Predict-path profile\n\nSkipped: py-spy could not be installed ({err}).\n"
    contestant = cs.kiln(free_port())
    proc = contestant.process(logs).start()
    raw = logs / f"{label}.collapsed.txt"
    try:
        proc.wait_ready(contestant.url + contestant.ready_path)
        shape = load.Shape("profile", 2, 16, seconds + 4)
        load.run(contestant.url, contestant.predict_path, load.Shape("warmup", 2, 16, 2),
                 contestant.auth)
        result: dict[str, Any] = {}
        loader = threading.Thread(target=lambda: result.update(
            load.run(contestant.url, contestant.predict_path, shape, contestant.auth)))
        loader.start()
        command = [str(py_spy), "record", "--pid", str(proc.pid), "--subprocesses",
                   "--duration", str(seconds), "--rate", "200", "--function", "--gil",
                   "--format", "raw", "--output", str(raw)]
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=seconds + 60)
        loader.join()
    finally:
        proc.stop()
    if done.returncode != 0 or not raw.is_file():
        message = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        say(f"profile failed: py-spy exit {done.returncode}: {message[0]}")
        data[label] = {"failed": message[0], "command": command}
        return f"## Predict-path profile\n\nFailed: py-spy exit {done.returncode}: {message[0]}\n"
    samples, own, total = fold(raw.read_text())
    entry = {"command": " ".join(command[:1] + ["record", "--pid", "<kiln master>"] + command[4:]),
             "samples": samples, "rps_while_sampled": round(result.get("rps", 0), 1),
             "own": top(own, samples, 15), "total": top(total, samples, 25)}
    data[label] = entry
    lines = [f"## Predict-path profile ({label})", "",
             (f"`{entry['command']}` over both workers of `kiln serve` while "
             f"wrk -t2 -c16 ran ({samples} GIL-holding samples, {entry['rps_while_sampled']} req/s while sampled)."),
             "", "Own time (top 15):", "", "| % | frame |", "| ---: | --- |",
             *[f"| {e['percent']} | `{e['frame']}` |" for e in entry["own"]], "",
             "Total time, callees included (top 25):", "", "| % | frame |", "| ---: | --- |",
             *[f"| {e['percent']} | `{e['frame']}` |" for e in entry["total"]], ""]
    text = "\n".join(lines)
    say(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, str(cs.BENCH))
    print(run(cs.BENCH / "results" / "tmp" / "profile", {}, seconds=10))

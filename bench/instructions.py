"""Instructions per predict, counted by valgrind: a figure this shared machine cannot blur.

wrk's requests per second move by 2x between rounds when other work shares the CPUs; the
number of instructions one predict executes moves by about 1% (random request ids, the
time in log lines, an occasional collection). Each variant runs in its own Python
under `valgrind --tool=callgrind --instr-atstart=no`: the apps are built and warmed with
counting off, `callgrind_control -i on` counts exactly N calls of the WSGI app (no server,
no sockets: the framework, kiln's features and the model), then counting goes off before
the interpreter exits.

Variants: (a) bare Flask, (b) kiln with every feature, (d) plain WSGI, (m) the model's
predict alone, and kiln without one feature at a time, which gives what each one costs.
System calls (the log line's write, the timer) run in the kernel and are not counted.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BODY = b'{"input": [[5.1, 3.5, 1.4, 0.2]]}'
TOKEN = "bench-instructions-token"
#: kiln without one feature: the lifecycle lists and the module whose functions are removed.
WITHOUT = {"logs": ("runtime.observability.logs",), "metrics": ("runtime.observability.metrics",),
           "validation": ("runtime.docs.validation",), "auth": ("runtime.security.auth",)}
VARIANTS = ("a", "b", "d", "m", *(f"b-{name}" for name in WITHOUT))
NAMES = {"a": "(a) bare Flask", "b": "(b) kiln, every feature", "d": "(d) plain WSGI",
         "m": "the model's predict alone",
         **{f"b-{name}": f"(b) without {name}" for name in WITHOUT}}


def available() -> str | None:
    """Why this part cannot run here, or None."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    return f"needs {' and '.join(missing)} (Debian: apt-get install valgrind)" if missing else None


# -- Inside valgrind: one variant -------------------------------------------------------------

def _call(app: Callable[..., Any], environ: dict[str, Any]) -> Callable[[], None]:
    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"{status} from the app under test")

    def call() -> None:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(BODY)
        answer = app(env, start_response)
        b"".join(answer)
        if hasattr(answer, "close"):
            answer.close()
    return call


def _variant(name: str) -> Callable[[], None]:
    """The call to count for variant NAME, its app built and logging set up as kiln serve does."""
    import logging.config

    import contestants as cs
    from werkzeug.test import EnvironBuilder

    from runtime.observability import logs

    cs.ensure_model()
    os.environ["BENCH_MODEL"] = str(cs.SERVICE / "model.joblib")
    config = logs.logconfig("json")
    config["handlers"]["kiln"]["stream"] = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    logging.config.dictConfig(config)

    def environ(path: str, auth: bool = False) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {TOKEN}"
        built = EnvironBuilder(path=path, method="POST", data=BODY, headers=headers).get_environ()
        # As gunicorn's environ has them: werkzeug reads a terminated input differently.
        return {**built, "wsgi.input_terminated": True, "REMOTE_ADDR": "127.0.0.1"}

    if name == "m":
        from apps.iris import load

        model, rows = load(), [[5.1, 3.5, 1.4, 0.2]]
        return lambda: model.predict(rows)
    if name == "a":
        from apps.flask_app import app as flask_app
        return _call(flask_app, environ("/api/v1.0/predict"))
    if name == "d":
        from apps.wsgi_app import app as wsgi_app
        return _call(wsgi_app, environ("/"))
    from runtime.serving.lifecycle import lifecycle
    from runtime.testing import make_app

    app = make_app(cs.SERVICE)
    app.testing = False
    if name.startswith("b-"):
        modules = WITHOUT[name[2:]]
        hooks = lifecycle(app)
        for field in ("started", "gates", "finished", "aborted"):
            kept = [f for f in getattr(hooks, field)
                    if getattr(f, "func", f).__module__ not in modules]
            setattr(hooks, field, kept)
    return _call(app, environ("/api/v1.0/predict", auth=True))


def worker(name: str, calls: int, signals: Path) -> None:
    """Build variant NAME, warm it, then count CALLS calls between the driver's two signals."""
    import gc

    call = _variant(name)
    for _ in range(200):
        call()
    gc.collect()
    gc.freeze()  # as a kiln worker does after load(); no collection of the app mid-count
    (signals / "ready").touch()
    _wait_for(signals / "go")
    for _ in range(calls):
        call()
    (signals / "done").touch()
    _wait_for(signals / "off")


def _wait_for(path: Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} signal within {timeout:.0f} s")
        time.sleep(0.02)


# -- The driver -------------------------------------------------------------------------------

def count(name: str, calls: int, python: str, log: Path) -> int:
    """Instructions executed by CALLS calls of variant NAME (callgrind's Ir)."""
    with tempfile.TemporaryDirectory(prefix="kiln-instr-") as folder:
        signals = Path(folder)
        report = signals / "valgrind.log"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={signals / 'callgrind.out'}", f"--log-file={report}",
                   python, __file__, "--worker", name, "--calls", str(calls),
                   "--signals", str(signals)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH)]),
               "KILN_AUTH_TOKENS": f"bench:{TOKEN}", "PROMETHEUS_MULTIPROC_DIR": folder}
        with log.open("ab") as sink:
            proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
            try:
                for signal_name, then in (("ready", "on"), ("done", "off")):
                    while not (signals / signal_name).exists():
                        if proc.poll() is not None:
                            raise RuntimeError(f"variant {name} exited {proc.returncode}; see {log}")
                        time.sleep(0.1)
                    subprocess.run(["callgrind_control", "-i", then, str(proc.pid)], check=True,
                                   stdout=subprocess.DEVNULL, stderr=sink, timeout=60)
                    (signals / ("go" if then == "on" else "off")).touch()
                proc.wait(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            text = report.read_text()
            sink.write(text.encode())
        # callgrind's own total of the events it collected while instrumentation was on.
        found = re.search(r"Collected\s*:\s*(\d+)", text)
        if not found:
            raise RuntimeError(f"no 'Collected' line in callgrind's report for {name}; see {log}")
        return int(found.group(1))


def run(logs: Path, data: dict[str, Any], calls: int = 300,
        say: Callable[[str], None] = print) -> str:
    """Count every variant; the markdown section for the results file."""
    why = available()
    if why:
        say(f"skipping instructions: {why}")
        data["instructions"] = {"skipped": why}
        return f"## Instructions per predict\n\nSkipped: {why}.\n"
    logs.mkdir(parents=True, exist_ok=True)
    per_call: dict[str, float] = {}
    for name in VARIANTS:
        per_call[name] = count(name, calls, sys.executable, logs / "instructions.log") / calls
        say(f"  {NAMES[name]:32s} {per_call[name] / 1000:8.1f} k instructions per predict")
    data["instructions"] = {"calls": calls, "per_call": per_call}
    rows = [f"| {NAMES[n]} | {per_call[n] / 1000:.1f} k | {per_call[n] / per_call['a']:.2f}x |"
            for n in ("a", "b", "d", "m")]
    costs = [f"| {name} | {(per_call['b'] - per_call[f'b-{name}']) / 1000:.1f} k | "
             f"{(per_call['b'] - per_call[f'b-{name}']) / per_call['a']:.1%} |"
             for name in WITHOUT]
    return "\n".join([
        "## Instructions per predict (callgrind, in process)", "",
        (f"{calls} calls of each app's WSGI callable with the bench request, counted by "
         "`valgrind --tool=callgrind`; no server or sockets, so the framework, kiln's features "
         "and the model only. Within about 1% from run to run, unlike wall time on a shared machine."), "",
        "| variant | instructions per predict | vs (a) |", "| --- | ---: | ---: |", *rows, "",
        ("What each of kiln's features costs (kiln minus kiln without it), as a share of bare "
         "Flask's whole count:"), "",
        "| feature | instructions per predict | of (a)'s count |", "| --- | ---: | ---: |",
        *costs, ""])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--signals", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=300, help="calls counted per variant")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.calls, args.signals)
        return 0
    sys.path[:0] = [str(ROOT), str(BENCH)]
    print(run(BENCH / "results" / "tmp" / "instructions", {}, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

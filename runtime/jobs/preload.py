"""Imports for the forkserver of `kiln batch`, so that its workers share them.

The forkserver imports this module once, before it forks any worker. With KILN_BATCH_SERVICE
set to the service folder, it also imports (never loads: `load()` runs in each worker) the
service's code and the modules that its saved models' pickles name (a joblib or pickle file
beside service.yaml, or `model.path`), found by reading the pickle's opcodes without running
it. Pages a fork shares count once, split between the workers: a model library imported here
is in memory once rather than once per worker. Whatever fails to import here is imported
again by the worker, which reports it.
"""
from __future__ import annotations

import gc
import importlib
import os
import pickletools
from pathlib import Path

PICKLES = (".joblib", ".pkl", ".pickle")
#: Opcodes read from one pickle at most: the model's classes come first.
MAX_OPS = 100_000
STRINGS = frozenset(("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"))


def pickled_modules(path: Path) -> set[str]:
    """The modules whose classes or functions the pickle at PATH names.

    Reading stops at the first byte that is not an opcode (joblib writes arrays' raw bytes
    into the stream) or after MAX_OPS opcodes; a compressed file names none.
    """
    found: set[str] = set()
    strings: list[str] = []
    try:
        with path.open("rb") as file:
            for count, (op, arg, _) in enumerate(pickletools.genops(file)):
                if count > MAX_OPS:
                    break
                if op.name == "GLOBAL" and isinstance(arg, str):
                    found.add(arg.split(" ")[0])
                elif op.name in STRINGS and isinstance(arg, str):
                    strings = [*strings[-1:], arg]
                elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                    found.add(strings[0])
    except Exception:  # noqa: BLE001, S110 - not a pickle, or arrays' bytes: stop reading
        pass
    return {name for name in found if name and name.replace(".", "").replace("_", "").isalnum()}


def service_modules(root: Path) -> set[str]:
    """The modules the saved models in the service folder ROOT name."""
    files = [path for path in sorted(root.iterdir()) if path.suffix in PICKLES]
    try:
        from runtime.config import load_service

        model = load_service(root).get("model")
        path = model.get("path") if isinstance(model, dict) else model
        if isinstance(path, str) and (root / path).is_file():
            files.append(root / path)
    except Exception:  # noqa: BLE001, S110 - the worker reports a bad service.yaml
        pass
    modules: set[str] = set()
    for path in files:
        modules |= pickled_modules(path)
    return modules


def preload(root: Path) -> None:
    """Import the service's code and its models' modules (not load())."""
    for name in sorted(service_modules(root)):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001, S112 - the worker imports it again and reports
            continue
    try:
        from runtime.serving.loader import load_user_code

        load_user_code(root, needs_predict=False)
    except Exception:  # noqa: BLE001, S110 - the worker imports it again and reports
        pass


import runtime.app  # noqa: F401 - Flask, marshmallow and the runtime, for every worker
from runtime.jobs.worker import SERVICE_VAR

if os.environ.get(SERVICE_VAR):
    preload(Path(os.environ[SERVICE_VAR]))
# Objects imported so far stay put: the collector of a worker does not touch (and so copy)
# the pages it shares with this process.
gc.freeze()

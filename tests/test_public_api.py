"""kiln builds on its dependencies' public API: no private name of theirs is imported or read.

A private name (one starting with `_`) of Flask, werkzeug, gunicorn, CPython or
prometheus_client can change in any release, and users' images install the next release.
This reads every module of the project (runtime, builder, scaffold, bench, tests) with `ast`:

- `from flask.globals import _cv_request`, `import json._private`, `from _signal import x`:
  refused outright;
- `anything._name` (one leading underscore) on something other than `self` or `cls`: refused
  unless the base is one of kiln's own modules or listed in ALLOWED with the reason.
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

LIBRARIES = ("flask", "werkzeug", "gunicorn", "json", "prometheus_client", "signal", "logging",
             "threading", "http", "email", "urllib")
#: `base._name` uses that are not a dependency's private API, each with its reason.
ALLOWED = {
    ("os", "_exit"): "os._exit is CPython's documented way to end a forked child",
    ("class_registry", "_registry"): "marshmallow (not one of the libraries above) has no public "
                                     "way to forget a reloaded schema class",
}
#: kiln's own modules: tests may reach into them.
OWN = ("runtime", "builder", "scaffold", "tests", "bench")


def modules() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                             "*.py", "bench/run"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    return [ROOT / name for name in listed if not name.startswith("templates/")]


def own_names(tree: ast.AST) -> set[str]:
    """Names a module binds to kiln's own modules (`from runtime.observability import metrics`)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OWN:
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names
                         if a.name.split(".")[0] in OWN)
    return names


def private_uses(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    if not source.startswith(("#!", '"""', "from", "import", "#")) and path.suffix != ".py":
        return []
    tree = ast.parse(source)
    own = own_names(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            private = [a.name for a in node.names if a.name.startswith("_")
                       and not a.name.startswith("__")]
            if parts[0].lstrip("_") in LIBRARIES and (
                    any(p.startswith("_") for p in parts) or private):
                found.append(f"{where}: from {node.module} import {', '.join(private) or '...'}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0].lstrip("_") in LIBRARIES and any(p.startswith("_") for p in parts):
                    found.append(f"{where}: import {alias.name}")
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
              and not node.attr.startswith("__")):
            base = node.value
            name = base.id if isinstance(base, ast.Name) else None
            if name in ("self", "cls") or name in own or (name, node.attr) in ALLOWED:
                continue
            found.append(f"{where}: {ast.unparse(base)}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_a_dependency() -> None:
    found = [use for path in modules() for use in private_uses(path)]
    assert not found, "private names of dependencies:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "from flask.globals import _cv_request",
    "from flask.ctx import _sentinel as S",
    "from _signal import getsignal",
    "import json._private",
    "items = headers._list",
    "child._sum.inc(1)",
    "response._status = '200 OK'",
])
def test_the_scan_finds_what_it_is_for(tmp_path: Path, source: str) -> None:
    probe = ROOT / "tests" / f"_probe_{tmp_path.name}.py"
    probe.write_text(source + "\n")
    try:
        assert private_uses(probe), source
    finally:
        probe.unlink()

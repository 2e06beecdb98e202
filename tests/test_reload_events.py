"""The reloader's parts without a server: which events count, no-op saves, checks, settings."""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from watchdog.events import (
    DirModifiedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
)

from runtime.cli import cli
from runtime.config import load_service
from runtime.dev.reload import Reloader, changed, read_error, watched
from runtime.dev.reload_check import Checker
from runtime.server import ServiceApplication
from runtime.serving.settings import options
from tests.support import SERVICES

ROOT = Path("/srv/svc")


@pytest.mark.parametrize(("path", "expected"), [
    ("service.yaml", True),
    ("app/routes.py", True),
    ("app/sub/helpers.py", True),
    ("app/data.yml", True),
    ("helpers.py", True),
    ("app/.routes.py.swp", False),
    ("app/.routes.py.swx", False),
    ("app/routes.py~", False),
    ("app/4913", False),
    ("app/.#routes.py", False),
    ("app/__pycache__/routes.cpython-311.pyc", False),
    ("app/model.joblib", False),
    ("README.md", False),
    ("tests/test_service.py", False),
    (".venv/lib/site.py", False),
    ("captures/2026.yaml", False),
    ("/elsewhere/app/routes.py", False),
])
def test_watched(path: str, expected: bool) -> None:
    assert watched(ROOT / path, ROOT) is expected


class Counted(Reloader):
    """A Reloader whose reload only counts (no gunicorn master to signal)."""

    def __init__(self, root: Path, state: Path):
        super().__init__(root, state, timeout=10, reload=self.count)
        self.reloads = 0

    def count(self) -> None:
        self.reloads += 1


@pytest.fixture
def reloader(tmp_path: Path) -> Iterator[Counted]:
    root = tmp_path / "service"
    shutil.copytree(SERVICES / "reload", root)
    made = Counted(root, tmp_path / "state.json")
    yield made
    made.checker.close()


def at(reloader: Counted, relative: str) -> str:
    return str(reloader.root / relative)


EVENTS: dict[str, tuple[Callable[..., FileSystemEvent], tuple[str, ...], bool]] = {
    "in-place write": (FileModifiedEvent, ("app/routes.py",), True),
    "close after write": (FileClosedEvent, ("app/routes.py",), True),
    "created": (FileCreatedEvent, ("app/routes.py",), True),
    "deleted": (FileDeletedEvent, ("app/routes.py",), True),
    "rename over": (FileMovedEvent, ("app/.routes.py.tmp", "app/routes.py"), True),
    "rename away": (FileMovedEvent, ("app/routes.py", "app/routes.py~"), True),
    "a read": (FileOpenedEvent, ("app/routes.py",), False),
    "a read ends": (FileClosedNoWriteEvent, ("app/routes.py",), False),
    "swap file": (FileModifiedEvent, ("app/.routes.py.swp",), False),
    "vim probe": (FileCreatedEvent, ("app/4913",), False),
    "folder listing": (DirModifiedEvent, ("app/sub",), False),
    "bytecode written": (FileCreatedEvent, ("app/__pycache__/routes.pyc",), False),
}


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_which_events_start_a_check(reloader: Counted, name: str) -> None:
    kind, paths, expected = EVENTS[name]
    reloader.notify(kind(*[at(reloader, p) for p in paths]))
    assert reloader.pending is expected


def test_apply_reloads_only_on_new_content(reloader: Counted) -> None:
    routes = reloader.root / "app" / "routes.py"
    good = routes.read_text()
    reloader.mark_served()

    routes.write_text(good)  # a save that changes nothing
    reloader.apply()
    assert reloader.reloads == 0

    routes.write_text(good.replace('"version": 1', '"version": 2'))
    reloader.apply()
    reloader.apply()  # the same content again: no second reload
    assert reloader.reloads == 1
    assert reloader.error is None and read_error(reloader.state) is None

    routes.write_text(good + "\nraise RuntimeError('nope')\n")
    reloader.apply()
    assert reloader.reloads == 1
    error = read_error(reloader.state)
    assert error is not None and "app/routes.py:" in error and "RuntimeError: nope" in error

    routes.write_text(good.replace('"version": 1', '"version": 2'))  # back to what serves
    reloader.apply()
    assert reloader.reloads == 1
    assert read_error(reloader.state) is None


def test_a_deleted_file_gets_a_moment_to_come_back(reloader: Counted) -> None:
    routes = reloader.root / "app" / "routes.py"
    reloader.mark_served()
    routes.unlink()
    reloader.apply()  # maybe a slow delete-then-create save: wait once more
    assert reloader.reloads == 0 and reloader.pending
    reloader.apply()  # still gone: it was deleted; serve the folder without it
    assert reloader.reloads == 1


def test_a_check_that_hangs_times_out(tmp_path: Path) -> None:
    root = tmp_path / "service"
    shutil.copytree(SERVICES / "reload", root)
    routes = root / "app" / "routes.py"
    routes.write_text("import time\ntime.sleep(60)\n" + routes.read_text())
    checker = Checker(timeout=1)
    try:
        error = checker.check(root)
        assert error is not None and "longer than 1 s" in error
        routes.write_text(routes.read_text().replace("time.sleep(60)", "pass"))
        assert checker.check(root) is None  # the checker itself survived
    finally:
        checker.close()


def test_changed_lists_added_removed_and_edited() -> None:
    assert changed({"a": "1", "b": "2"}, {"b": "3", "c": "4"}) == ["a", "b", "c"]


def test_hup_rereads_gunicorn_settings_and_keeps_them_when_broken(tmp_path: Path) -> None:
    root = tmp_path / "service"
    shutil.copytree(SERVICES / "reload", root)
    yaml_file = root / "service.yaml"
    good = yaml_file.read_text()
    settings = {**options(load_service(root), "127.0.0.1", 8123), "proc_name": "kiln-test"}
    application = ServiceApplication(root, settings)
    assert application.cfg.workers == 1

    yaml_file.write_text(good.replace("workers: 1", "workers: 3"))
    application.reload()  # what gunicorn runs on SIGHUP
    assert application.cfg.workers == 3
    assert application.cfg.bind == ["127.0.0.1:8123"]
    assert application.cfg.proc_name == "kiln-test"  # set by the runtime, not service.yaml

    yaml_file.write_text(good.replace("workers: 1", "workers: many"))
    application.reload()  # gunicorn would exit on an error here
    assert application.cfg.workers == 3


def test_serve_reload_with_a_bad_service_yaml_stops_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "service"
    shutil.copytree(SERVICES / "reload", root)
    (root / "service.yaml").write_text("id: Not_an_id\n")
    result = CliRunner().invoke(cli, ["serve", str(root), "--reload"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "service.yaml" in result.output
    assert "Traceback" not in result.output

"""Hot reload: `kiln serve --reload` swaps in saved code, and keeps serving through broken saves."""
from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.editors import SAVES, in_place
from tests.support import SERVICES, Server, wait_for
from tests.test_metrics import total

MARKER = '{"version": 1}'
NEW_ROUTE = '''

@user_services_routes.get("/added")
def added():
    """A route added while the service runs.
    ---
    get:
      responses:
        200:
          description: it is there
    """
    return {"added": True}
'''


@pytest.fixture
def service(tmp_path: Path) -> Path:
    """A copy of tests/services/reload that a test may edit."""
    folder = tmp_path / "service"
    shutil.copytree(SERVICES / "reload", folder)
    return folder


def routes_file(service: Path) -> Path:
    return service / "app" / "routes.py"


def version_source(service: Path, version: int, extra: str = "") -> str:
    source = (SERVICES / "reload" / "app" / "routes.py").read_text()
    return source.replace(MARKER, f'{{"version": {version}}}') + extra


def served_version(server: Server) -> int | None:
    response = server.get("/hello", timeout=5)
    return int(response.json()["version"]) if response.status_code == 200 else None


def wait_served(server: Server, version: int, timeout: float = 20.0) -> None:
    if not wait_for(lambda: served_version(server) == version, timeout):
        pytest.fail(f"version {version} never served:\n{server.output()}")


def reload_error(server: Server) -> str | None:
    response = server.get("/api/v1.0/health/status")
    assert response.status_code == 200, response.text  # the previous code still serves
    error: str | None = response.json()["reload_error"]
    return error


def reloads(server: Server) -> int:
    return server.output().count("reloading workers")


def reloaded(server: Server, count: int) -> Callable[[], bool]:
    return lambda: reloads(server) >= count


@pytest.mark.parametrize("save", sorted(SAVES))
def test_a_save_is_served(serve: Callable[..., Server], service: Path, save: str) -> None:
    server = serve(service, "--reload")
    assert reload_error(server) is None
    SAVES[save](routes_file(service), version_source(service, 2, NEW_ROUTE))
    wait_served(server, 2)
    # An old worker may still answer a request it accepted just before its SIGTERM.
    assert wait_for(lambda: server.get("/added").json() == {"added": True}), server.output()
    specs = server.get("/docs/specs.json")
    if specs.status_code == 200:  # documented once the docs routes are part of the runtime
        assert "/added" in specs.json()["paths"]


BROKEN = {
    "syntax_error": ("\n\ndef broken(:\n    pass\n", "def broken(:", "SyntaxError"),
    "import_error": ("\nimport kiln_no_such_module\n", "import kiln_no_such_module",
                     "ModuleNotFoundError"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_save_keeps_the_previous_code(serve: Callable[..., Server], service: Path,
                                               kind: str) -> None:
    extra, bad_line, error_type = BROKEN[kind]
    server = serve(service, "--reload")
    text = version_source(service, 2, extra)
    line = text.splitlines().index(bad_line) + 1
    in_place(routes_file(service), text)

    error = wait_for(lambda: reload_error(server))
    assert error is not None, server.output()
    assert f"app/routes.py:{line}" in error and error_type in error
    assert served_version(server) == 1
    assert f"app/routes.py:{line}" in server.output()

    in_place(routes_file(service), version_source(service, 3))
    wait_served(server, 3)
    assert reload_error(server) is None
    # Counted by the master, served by whichever worker answers /metrics.
    metrics = server.get("/metrics").text
    assert total(metrics, "kiln_reloads_total", result="failed") == 1
    assert total(metrics, "kiln_reloads_total", result="ok") == 1


def test_service_yaml_edits_reload(serve: Callable[..., Server], service: Path) -> None:
    server = serve(service, "--reload")
    yaml_file = service / "service.yaml"
    good = yaml_file.read_text()

    in_place(yaml_file, good.replace("version: 0.1.0", "version: 0.1.0\nbogus_key: 1"))
    error = wait_for(lambda: reload_error(server))
    assert error is not None and "service.yaml" in error and "bogus_key" in error
    assert served_version(server) == 1

    before = server.output().count("Booting worker")
    in_place(yaml_file, good.replace("version: 0.1.0", "version: 0.2.0")
             .replace("workers: 1", "workers: 2"))
    assert wait_for(lambda: server.get("/api/v1.0/health/status").json()["version"] == "0.2.0")
    assert reload_error(server) is None
    # gunicorn re-reads service.yaml's gunicorn: settings on the HUP: two new workers.
    assert wait_for(lambda: server.output().count("Booting worker") - before == 2), \
        server.output()


def test_no_request_fails_across_reloads(serve: Callable[..., Server], service: Path) -> None:
    server = serve(service, "--reload")
    statuses: list[int | str] = []
    stop = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 60
        with requests.Session() as session:  # keep-alive, as most clients do
            while not stop.is_set() and time.monotonic() < deadline and len(statuses) < 20000:
                try:
                    statuses.append(session.get(server.url + "/hello", timeout=10).status_code)
                except requests.RequestException as err:
                    statuses.append(repr(err))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for version in range(2, 7):
            SAVES[sorted(SAVES)[version % 3]](routes_file(service), version_source(service, version))
            wait_served(server, version)
    finally:
        stop.set()
        thread.join()
    assert reloads(server) == 5
    assert len(statuses) > 50
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]


SLOW_BOOT = """
import sys
import time

if not sys.argv[0].endswith("reload_check.py"):  # slow in the workers only, not in the check
    time.sleep(1.5)
"""


def test_a_save_while_new_workers_boot(serve: Callable[..., Server], service: Path) -> None:
    """Each save's HUP lands while the previous reload's workers are still importing."""
    server = serve(service, "--reload")
    for version in range(2, 5):
        in_place(routes_file(service), version_source(service, version, SLOW_BOOT))
        assert wait_for(reloaded(server, version - 1), interval=0.005), server.output()
    wait_served(server, 4)
    assert server.proc.poll() is None

    def settled() -> bool:  # a worker of an earlier reload may still answer 503 while it stops
        response = server.get("/api/v1.0/health/status")
        return response.status_code == 200 and response.json()["reload_error"] is None
    assert wait_for(settled), server.output()


def test_poll_serves_a_save(serve: Callable[..., Server], service: Path) -> None:
    server = serve(service, "--poll")
    assert "polling" in server.output()
    SAVES["rename_over"](routes_file(service), version_source(service, 2))
    wait_served(server, 2)


def test_without_reload_the_status_has_no_reload_error(serve: Callable[..., Server]) -> None:
    server = serve("reload")
    assert "reload_error" not in server.get("/api/v1.0/health/status").json()

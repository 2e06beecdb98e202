"""/docs for real: the page and its assets, Swagger UI rendering every route in headless
Chromium with the network cut off, and schemathesis fuzzing a served test service."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime.docs.ui import UI_STATIC
from runtime.testing import make_app
from tests.support import SERVICES

OPERATION = re.compile(r'<span class="opblock-summary-method">([A-Z]+)</span>'
                       r'<span class="opblock-summary-path" data-path="([^"]+)"')


def tool(name: str, *candidates: Path) -> str:
    """The path of an external program; skip when it is missing, except in CI."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed, and CI must run this test")
    pytest.skip(f"{name} is not installed")


def test_docs_redirects_relatively_and_serves_the_page() -> None:
    client = make_app(SERVICES / "catalog").test_client()
    response = client.get("/docs")
    assert response.status_code == 308
    assert response.headers["Location"] == "docs/"
    page = client.get("/docs/").get_data(as_text=True)
    assert "<title>Catalog test service - API docs</title>" in page
    assert 'url: "specs.json"' in page and "validatorUrl: null" in page
    # Relative URLs only: nothing on the page points at another host or the site root.
    for url in re.findall(r'(?:href|src)="([^"]+)"', page):
        assert url.startswith("static/"), url
    assert "//" not in "".join(re.findall(r'(?:href|src)="([^"]+)"', page))


@pytest.mark.parametrize("asset", ["swagger-ui.css", "swagger-ui-bundle.js",
                                   "swagger-ui-standalone-preset.js", "favicon-32x32.png"])
def test_docs_assets_are_served_from_the_bundle(asset: str) -> None:
    client = make_app(SERVICES / "catalog").test_client()
    with client.get(f"/docs/static/{asset}") as response:
        assert response.status_code == 200
        assert response.data == (Path(UI_STATIC) / asset).read_bytes()


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    binary = tool("chromium", Path("/usr/bin/chromium"))
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               # Every host but ours fails to resolve: the page must render offline.
               "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
               "--virtual-time-budget=15000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_swagger_ui_renders_every_operation_offline(serve: Any, tmp_path: Path) -> None:
    server = serve("catalog")
    spec = server.get("/docs/specs.json").json()
    expected = {(method.upper(), path) for path, item in spec["paths"].items()
                for method in item}
    url = f"{server.url}/docs/"

    result = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    (tmp_path / "docs.html").write_text(result.stdout)
    rendered = set(OPERATION.findall(result.stdout))
    assert rendered == expected, (f"missing: {sorted(expected - rendered)}\n"
                                  f"chromium stderr:\n{result.stderr[-2000:]}")
    assert "Unable to render this definition" not in result.stdout

    shot = tmp_path / "docs.png"
    result = _chromium([f"--screenshot={shot}", "--window-size=1280,2400", url],
                       tmp_path / "profile-shot")
    assert shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-2000:]


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(serve: Any, tmp_path: Path) -> None:
    st = tool("st", Path(sys.executable).parent / "st")
    server = serve("catalog")
    report = tmp_path / "cases.har"
    command = [st, "run", f"{server.url}/docs/specs.json",
               "--checks", "not_a_server_error",
               "--phases", "examples,coverage,fuzzing",
               "--max-examples", "5",
               # One worker: hypothesis parses lambda sources with ast, which is not
               # thread-safe on CPython 3.11 ("AST constructor recursion depth mismatch").
               "--workers", "1",
               "--request-timeout", "10",
               "--seed", "20261123",
               "--no-color",
               "--report", "har", "--report-har-path", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:] + "\n--- server ---\n" + server.output()[-3000:]
    entries = json.loads(report.read_text())["log"]["entries"]
    assert len(entries) >= 200, output[-3000:]
    assert all(e["response"]["status"] < 500 for e in entries)
    tested = {e["request"]["url"].split("?")[0] for e in entries}
    assert any("/catalog/items/" in url for url in tested)
    assert any(url.endswith("/api/v1.0/predict") for url in tested)

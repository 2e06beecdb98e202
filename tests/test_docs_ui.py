"""/docs for real: the page and its assets, Swagger UI rendering every route in headless
Chromium with the network cut off, and schemathesis fuzzing a served test service."""
from __future__ import annotations

import html
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


EXAMPLE_BLOCK = re.compile(r'<pre class="body-param__example[^"]*">(.*?)</pre>', re.DOTALL)


@pytest.mark.slow
def test_swagger_ui_shows_the_predict_input_example(serve: Any, tmp_path: Path) -> None:
    server = serve("typed")
    # deepLinking opens the predict operation: its request body shows the example value that
    # "Try it out" starts from, built from PredictInput's field examples.
    result = _chromium(["--dump-dom", f"{server.url}/docs/#/kiln/kiln_predict"],
                       tmp_path / "profile-example")
    found = EXAMPLE_BLOCK.search(result.stdout)
    assert found, f"no request body example rendered\n{result.stderr[-2000:]}"
    shown = json.loads(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))))
    assert shown == {"input": {"features": [1.5, 2.5, 3.0], "count": 2, "label": "cat"}}


# Authorize, then "Try it out" on predict, in Swagger UI. The page under test is /docs itself,
# unchanged; a driver page beside it (same origin, through a small proxy in front of the server)
# clicks through it in an iframe and writes what it saw into its own DOM for --dump-dom.

DRIVER = """<!DOCTYPE html>
<html><body>
<pre id="result">pending</pre>
<iframe id="docs" src="/docs/" style="width: 1280px; height: 2400px"></iframe>
<script>
const SCHEME = %(scheme)s, TOKEN = %(token)s, PREDICT = "/api/v1.0/predict";
const result = document.getElementById("result");
const frame = document.getElementById("docs");
function doc() { return frame.contentDocument; }
function until(step, find, then, left) {
  left = left === undefined ? 400 : left;
  let found = null;
  try { found = find(); } catch (e) { found = null; }
  if (found) { result.textContent = "after " + step; return then(found); }
  if (left <= 0) { result.textContent = "gave up waiting for " + step; return; }
  setTimeout(function () { until(step, find, then, left - 1); }, 50);
}
function type(input, value) {
  const view = input.ownerDocument.defaultView;
  Object.getOwnPropertyDescriptor(view.HTMLInputElement.prototype, "value").set.call(input, value);
  input.dispatchEvent(new view.Event("input", {bubbles: true}));
  input.dispatchEvent(new view.Event("change", {bubbles: true}));
}
function schemeBox() {
  return Array.from(doc().querySelectorAll(".auth-container")).find(function (box) {
    const title = box.querySelector("h4");
    return title && title.textContent.trim().split(/\\s/)[0] === SCHEME;
  });
}
function predictBlock() {
  return Array.from(doc().querySelectorAll(".opblock")).find(function (block) {
    const path = block.querySelector(".opblock-summary-path");
    return path && path.getAttribute("data-path") === PREDICT;
  });
}
until("the Authorize button", function () { return doc().querySelector(".btn.authorize"); },
  function (button) {
    button.click();
    until("the " + SCHEME + " scheme", function () { return schemeBox(); }, function (box) {
      type(box.querySelector("input"), TOKEN);
      box.querySelector("button.authorize").click();
      until("authorized", function () {
        return Array.from(schemeBox().querySelectorAll("button")).find(function (b) {
          return b.textContent.trim() === "Logout"; });
      }, function () {
        doc().querySelector(".btn-done, .close-modal").click();
        until("predict", predictBlock, function (block) {
          block.querySelector(".opblock-summary").click();
          until("Try it out", function () { return block.querySelector(".try-out__btn"); },
            function (tryOut) {
              tryOut.click();
              until("Execute", function () { return block.querySelector(".btn.execute"); },
                function (execute) {
                  execute.click();
                  until("the answer", function () {
                    return block.querySelector(".live-responses-table tr.response .response-col_status");
                  }, function (status) {
                    const curl = block.querySelector(".curl");
                    result.textContent = "status " + status.textContent.trim() + "\\n" +
                                         (curl ? curl.textContent : "no curl");
                  });
                });
            });
        });
      });
    });
  });
</script>
</body></html>
"""


class _Front:
    """An HTTP proxy on 127.0.0.1 in front of a kiln server that also serves the driver page."""

    def __init__(self, upstream: str, driver: str):
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        page = driver.encode()

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if self.path == "/driver.html":
                    self._answer(200, [("Content-Type", "text/html")], page)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "accept-encoding")}
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    answer = connection.getresponse()
                    data = answer.read()
                    kept = [(k, v) for k, v in answer.getheaders()
                            if k.lower() not in ("connection", "transfer-encoding",
                                                 "content-length")]
                    self._answer(answer.status, kept, data)
                finally:
                    connection.close()

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_OPTIONS = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _authorize_and_predict(server_url: str, scheme: str, token: str, profile: Path) -> str:
    """What Swagger UI answered after Authorize with TOKEN under SCHEME and Execute on predict."""
    driver = DRIVER % {"scheme": json.dumps(scheme), "token": json.dumps(token)}
    front = _Front(server_url, driver)
    try:
        result = _chromium(["--dump-dom", f"{front.url}/driver.html"], profile)
    finally:
        front.close()
    found = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"no result in the page:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return html.unescape(found.group(1))


@pytest.mark.slow
def test_authorize_then_try_predict_in_token_mode(serve: Any, tmp_path: Path) -> None:
    import yaml

    from tests.idp import service

    tool("chromium", Path("/usr/bin/chromium"))
    root = service(tmp_path)  # predict(a, b), whose documented example is {"input": [1, 2]}
    data = yaml.safe_load((root / "service.yaml").read_text())
    data["auth"] = {"mode": "token"}
    (root / "service.yaml").write_text(yaml.safe_dump(data))
    server = serve(root, env={"KILN_AUTH_TOKENS": "alice:tok-alice-1"})
    seen = _authorize_and_predict(server.url, "bearer", "tok-alice-1", tmp_path / "profile")
    assert seen.startswith("status 200"), seen
    assert "Authorization: Bearer tok-alice-1" in seen
    wrong = _authorize_and_predict(server.url, "bearer", "tok-wrong", tmp_path / "profile-2")
    assert wrong.startswith("status 401"), wrong


@pytest.mark.slow
def test_authorize_then_try_predict_in_jwt_mode(serve: Any, tmp_path: Path) -> None:
    from tests.idp import Provider, service

    tool("chromium", Path("/usr/bin/chromium"))
    provider = Provider()
    try:
        kid = provider.add_key("RSA")
        server = serve(service(tmp_path, provider))
        token = provider.token(kid)
        seen = _authorize_and_predict(server.url, "jwt", token, tmp_path / "profile")
        assert seen.startswith("status 200"), seen
        assert f"Authorization: Bearer {token}" in seen
        no_scope = provider.token(kid, scope="other")
        refused = _authorize_and_predict(server.url, "jwt", no_scope, tmp_path / "profile-2")
        assert refused.startswith("status 403"), refused
    finally:
        provider.close()

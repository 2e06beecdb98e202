"""/docs (Swagger UI) and /docs/specs.json, and the per-app cache of the OpenAPI document.

The UI is the Swagger UI bundled in flasgger (ui3/static), served by this blueprint: only its
static files are used, none of flasgger's view code (see PITFALLS.md section 1). The page uses
relative URLs only, so it works offline and behind a path-prefix proxy.

The document is built on first use (the first request, usually a health probe) and kept for
the app's life: Flask refuses new routes once a request has been served, so it cannot go
stale. Its warnings go to the log once.
"""
from __future__ import annotations

import html
import importlib.util
import logging
import os
import threading
from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect

from runtime.docs import openapi, validation
from runtime.serving.lifecycle import lifecycle

log = logging.getLogger("kiln.docs")
KEY = "kiln_docs"


def _flasgger_dir() -> str:
    # Only flasgger's files are used: importing it would run its apispec glue for nothing.
    spec = importlib.util.find_spec("flasgger")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("flasgger is not installed; kiln serves its bundled Swagger UI")
    return str(next(iter(spec.submodule_search_locations)))


UI_STATIC = os.path.join(_flasgger_dir(), "ui3", "static")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" type="text/css" href="static/swagger-ui.css">
  <link rel="icon" type="image/png" href="static/favicon-32x32.png" sizes="32x32">
  <style>html {{ box-sizing: border-box; overflow-y: scroll; }} body {{ margin: 0; }}</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="static/swagger-ui-bundle.js"></script>
  <script src="static/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: "specs.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        plugins: [SwaggerUIBundle.plugins.DownloadUrl],
        layout: "BaseLayout"
      }});
    }};
  </script>
</body>
</html>
"""


class _Cache:
    """The built document of one app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.document: openapi.Document | None = None


def build(app: Flask) -> openapi.Document:
    """Build APP's document now, from its service's config, schemas and routes."""
    service = app.extensions["kiln"]
    code = service.code
    schemas = code.schemas if code is not None else None
    blueprint = code.blueprint.name if code is not None and code.blueprint is not None else None
    return openapi.build(app, service.config, schemas, blueprint)


def document(app: Flask) -> openapi.Document:
    """APP's OpenAPI document, built once and cached; its warnings are logged once."""
    cache: _Cache = app.extensions.setdefault(KEY, _Cache())
    if cache.document is None:
        with cache.lock:
            if cache.document is None:
                built = build(app)
                for warning in built.warnings:
                    log.warning("docs: %s", warning)
                cache.document = built
    return cache.document


DOCS = "/docs"

docs = Blueprint("kiln_docs", __name__, url_prefix=DOCS, static_folder=UI_STATIC,
                 static_url_path="/static")


@docs.get("")
def to_ui() -> Any:
    # A relative Location keeps working behind a path-prefix proxy (Werkzeug's own
    # trailing-slash redirect is absolute).
    return redirect("docs/", 308)


@docs.get("/")
def ui() -> Response:
    title = html.escape(f"{current_app.extensions['kiln'].config.title} - API docs")
    return Response(PAGE.format(title=title), mimetype="text/html")


@docs.get("/specs.json")
def specs() -> Any:
    return current_app.json.response(document(current_app).spec)


def init_app(app: Flask, service: Any) -> None:
    """Serve /docs unless service.yaml says `docs: false`; check request bodies always."""
    app.extensions.setdefault(KEY, _Cache())
    if service.config.get("docs"):
        app.register_blueprint(docs)
        for endpoint in ("to_ui", "ui", "specs", "static"):
            lifecycle(app).mark(f"{docs.name}.{endpoint}", "docs")
    validation.init_app(app, lambda: document(app).spec)

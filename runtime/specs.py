"""`kiln specs`: the document /docs/specs.json serves, written to a file without a server."""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from runtime.app import create_app, service_of
from runtime.config import load_service
from runtime.docs import ui as docs
from runtime.docs.openapi import Document
from runtime.errors import KilnError, UserCodeError

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


class SpecsError(KilnError):
    """Raised when the OpenAPI document cannot be written where asked."""


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    # create_app logs an import error that we raise ourselves; without a configured handler
    # Python would print it too, and the user would read the same line twice.
    logger = logging.getLogger(name)
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def service_document(directory: str | Path) -> Document:
    """The OpenAPI document of the service in DIRECTORY, exactly as its server would serve it."""
    config = load_service(directory)
    with _quiet("kiln"):
        app = create_app(config.root, config)
    service = service_of(app)
    if service.code is None:
        raise UserCodeError(service.health.error or "the service's code did not import")
    return docs.build(app)


def dump(spec: dict[str, Any], fmt: str) -> str:
    """SPEC as JSON or YAML text."""
    if fmt == "yaml":
        return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def format_of(output: Path) -> str:
    """`json` or `yaml`, from OUTPUT's extension."""
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise SpecsError(f"{output}: unknown extension {output.suffix or '(none)'!r}; "
                         f"use one of {', '.join(FORMATS)}")
    return fmt


def write_specs(directory: str | Path, output: Path | None) -> tuple[str | None, list[str]]:
    """Write the document to OUTPUT, or return its JSON text when OUTPUT is None.

    Returns (the text or None, the warnings about single routes).
    """
    fmt = format_of(output) if output is not None else "json"
    document = service_document(directory)
    text = dump(document.spec, fmt)
    if output is None:
        return text, document.warnings
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise SpecsError(f"{output}: cannot write: {err.strerror or err}") from err
    return None, document.warnings

"""How editors save a file, for the hot reload tests and bench: each writes TEXT to PATH."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def in_place(path: Path, text: str) -> None:
    """Truncate and write the file itself (nano, VS Code's default)."""
    with path.open("w") as file:
        file.write(text)


def rename_over(path: Path, text: str) -> None:
    """Write a temporary file beside it, then rename it over the original (vim, JetBrains)."""
    tmp = path.with_name(f".{path.name}.kiln-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def delete_then_create(path: Path, text: str) -> None:
    """Remove the file, then write a new one (some editors' backup-and-write schemes)."""
    path.unlink()
    path.write_text(text)


SAVES: dict[str, Callable[[Path, str], None]] = {
    "in_place": in_place,
    "rename_over": rename_over,
    "delete_then_create": delete_then_create,
}

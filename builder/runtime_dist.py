"""The kiln runtime as an image installs it: a wheel of the `runtime` package and its requirements.

The wheel is written here, from the files of the `runtime` package this process imports, so
`kiln build` works the same from a checkout, an editable install or a plain `pip install`,
with no build backend at hand. It is byte-for-byte reproducible (fixed timestamps, sorted
entries): an unchanged runtime gives the same wheel, and the image's runtime layer comes from
the build cache.
"""
from __future__ import annotations

import base64
import configparser
import hashlib
import importlib.metadata
import re
import zipfile
from pathlib import Path

import runtime

DIST = "kiln"
PACKAGE_DIR = Path(runtime.__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent
#: Requirements of the kiln distribution that only the user's machine needs, never an image.
HOST_ONLY = frozenset({"docker", "cookiecutter"})
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _setup_cfg() -> configparser.ConfigParser | None:
    path = SOURCE_ROOT / "setup.cfg"
    if not path.is_file():
        return None
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    return parser


def version() -> str:
    """kiln's version, as the runtime package states it (setup.cfg reads it from there too)."""
    return runtime.__version__


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1).lower().replace("_", "-") if match else ""


def requirements() -> list[str]:
    """What the runtime needs installed next to it: kiln's install_requires, minus host-only ones."""
    cfg = _setup_cfg()
    if cfg is not None and cfg.has_option("options", "install_requires"):
        raw = cfg.get("options", "install_requires").splitlines()
    else:
        raw = [r for r in importlib.metadata.requires(DIST) or [] if "extra ==" not in r]
    return [r.strip() for r in raw if r.strip() and _name(r) not in HOST_ONLY]


def _files() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            out.append((f"runtime/{path.relative_to(PACKAGE_DIR).as_posix()}", path))
    return out


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def wheel_name() -> str:
    return f"{DIST}-{version()}-py3-none-any.whl"


def write_wheel(folder: Path) -> Path:
    """Write the runtime wheel into FOLDER and return its path."""
    ver = version()
    info = f"{DIST}-{ver}.dist-info"
    metadata = "".join([
        "Metadata-Version: 2.1\n", f"Name: {DIST}\n", f"Version: {ver}\n",
        "Summary: kiln runtime (the package that runs inside every kiln service image)\n",
        *(f"Requires-Dist: {r}\n" for r in requirements()),
    ])
    extra = {
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: kiln\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
        f"{info}/entry_points.txt": b"[console_scripts]\nkiln = runtime.cli:main\n",
        f"{info}/top_level.txt": b"runtime\n",
    }
    entries = [(name, path.read_bytes()) for name, path in _files()] + sorted(extra.items())
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in entries]
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / wheel_name()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            item = zipfile.ZipInfo(name, date_time=_EPOCH)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(item, data)
    return target

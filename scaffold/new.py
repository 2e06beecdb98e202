"""`new_service`: write a service folder from one of the cookiecutter templates in templates/.

Everything that can be checked is checked before a file is written: the NAME (the `id` rules
of service.yaml), the template, the variables given as key=value and the destination. The
folder is rendered into a hidden staging folder beside its destination, cleaned of install
debris, validated as a service.yaml, and only then moved into place, so a failure leaves
nothing behind and `--force` replaces an old folder only once the new one is complete.

cookiecutter runs isolated from the user's ~/.cookiecutterrc, $COOKIECUTTER_CONFIG and replay
files (`default_config` as a dict; replay written to a temporary folder), without hooks.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from runtime.config import BY_KEY, check_id, load_service
from runtime.errors import ConfigError
from scaffold.errors import ScaffoldError
from scaffold.schema import IN_SERVICE, write_schema

TEMPLATES = ("custom", "model")
#: What the interactive mode asks, in this order.
QUESTIONS = ("title", "description", "target", "size")
#: Left in a template by pip's byte-compilation or a test run; never part of a new service.
DEBRIS_DIRS = ("__pycache__", ".pytest_cache")
DEBRIS_SUFFIXES = (".pyc", ".pyo")

#: ask(variable, default, choices) -> answer; the CLI passes a click prompt.
Ask = Callable[[str, str, "tuple[str, ...] | None"], str]


def template_variables(template_dir: Path) -> dict[str, Any]:
    """The variables a user may set for a template: its cookiecutter.json without id and _keys."""
    data = json.loads((template_dir / "cookiecutter.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k != "id" and not k.startswith("_")}


def parse_variables(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`key=value` strings from the command line as a dict."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ScaffoldError(f"{pair!r}: template variables are given as key=value, "
                                f"e.g. title='Add numbers'")
        out[key.strip()] = value
    return out


def check_name(name: str, output_dir: Path, force: bool) -> Path:
    """The folder NAME would be written to; ScaffoldError when NAME or the place is wrong."""
    problem = check_id(name)
    if problem:
        raise ScaffoldError(f"NAME: {problem}")
    if output_dir.exists() and not output_dir.is_dir():
        raise ScaffoldError(f"{output_dir}: is not a folder (-o names the folder to write into)")
    dest = output_dir / name
    if (dest.exists() or dest.is_symlink()) and not force:
        raise ScaffoldError(f"{dest}: already exists; choose another NAME or -o DIR, "
                            f"or pass --force to replace it")
    return dest


def check_variables(template: str, variables: Mapping[str, Any], given: Mapping[str, str]) -> None:
    """Refuse unknown template variables and values a choice or service.yaml would not allow."""
    for key, value in given.items():
        if key == "id":
            raise ScaffoldError("id: the service id is the NAME argument, not a key=value pair")
        if key not in variables:
            raise ScaffoldError(f"{key}: unknown variable of the {template} template; "
                                f"allowed: {', '.join(variables)}")
        choices = variables[key]
        if isinstance(choices, list) and value not in choices:
            raise ScaffoldError(f"{key}: {value!r} is not allowed; allowed: {', '.join(choices)}")
        setting = BY_KEY.get(key)
        problem = setting.check(value) if setting is not None else None
        if problem:
            raise ScaffoldError(f"{key}: {problem}")


def _defaults(template_dir: Path, context: dict[str, Any]) -> dict[str, Any]:
    """The template's variables with cookiecutter's rendering of the defaults (title from id)."""
    from cookiecutter.generate import generate_context
    from cookiecutter.prompt import prompt_for_config

    full = generate_context(str(template_dir / "cookiecutter.json"), extra_context=context)
    return dict(prompt_for_config(full, no_input=True))


def ask_questions(template_dir: Path, context: dict[str, Any], ask: Ask) -> dict[str, str]:
    """Ask for title, description, target and size (those not given already), with defaults."""
    variables = template_variables(template_dir)
    defaults = _defaults(template_dir, context)
    answers: dict[str, str] = {}
    for key in QUESTIONS:
        if key in context or key not in variables:
            continue
        choices = variables[key]
        default = str(defaults[key])
        if key == "size" and answers.get("target", context.get("target")) == "gpu":
            default = "gpu"
        answers[key] = ask(key, default, tuple(choices) if isinstance(choices, list) else None)
    check_variables(template_dir.name, variables, answers)
    return answers


def new_service(name: str, output_dir: str | Path = ".", template: str = "custom",
                target: str | None = None, no_input: bool = True, force: bool = False,
                extra: Mapping[str, str] | None = None, ask: Ask | None = None) -> Path:
    """Write OUTPUT_DIR/NAME from TEMPLATE and return its path.

    extra: template variables (key=value on the command line); unknown keys are refused.
    no_input=False asks for title, description, target and size through `ask`.
    force: replace an existing folder (only once the new one is complete).
    """
    if template not in TEMPLATES:
        raise ScaffoldError(f"--template: {template!r} is unknown; allowed: {', '.join(TEMPLATES)}")
    output_dir = Path(output_dir)
    dest = check_name(name, output_dir, force)
    given = dict(extra or {})
    if target is not None:
        given["target"] = target
    with as_file(files("templates") / template) as template_dir:
        variables = template_variables(template_dir)
        check_variables(template, variables, given)
        # A gpu target wants a size that has a GPU, unless the user chose otherwise.
        if given.get("target") == "gpu" and "size" not in given and "size" in variables:
            given["size"] = "gpu"
        context: dict[str, Any] = {"id": name, **given}
        if not no_input:
            if ask is None:
                raise ScaffoldError("interactive mode needs a way to ask; pass --no-input")
            context.update(ask_questions(template_dir, context, ask))
        return render_template(template_dir, context, dest)


def render_template(template_dir: Path, context: dict[str, Any], dest: Path) -> Path:
    """Render into a staging folder beside DEST, check it, then move it to DEST."""
    from cookiecutter.exceptions import CookiecutterException, UndefinedVariableInTemplate
    from cookiecutter.main import cookiecutter

    parent = dest.parent
    created = _missing_ancestor(parent)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=parent))
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-cookiecutter-") as home:
            isolated = {"replay_dir": str(Path(home) / "replay"),
                        "cookiecutters_dir": str(Path(home) / "templates"),
                        "default_context": {}, "abbreviations": {}}
            try:
                rendered = Path(cookiecutter(str(template_dir), no_input=True,
                                             extra_context=context, output_dir=str(staging),
                                             default_config=isolated, accept_hooks=False))
            except UndefinedVariableInTemplate as err:
                # str(err) carries the whole context; the two messages say what is wrong.
                raise ScaffoldError(f"template {template_dir.name}: {err.message}: "
                                    f"{err.error.message}") from err
            except (CookiecutterException, ValueError) as err:
                raise ScaffoldError(f"template {template_dir.name}: {err}") from err
        remove_debris(rendered)
        write_schema(rendered / IN_SERVICE)
        try:
            load_service(rendered)
        except ConfigError as err:
            message = str(err).replace(str(rendered), str(dest))
            raise ScaffoldError(f"the new service.yaml would not load: {message}") from err
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest)
        rendered.rename(dest)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _missing_ancestor(path: Path) -> Path | None:
    """The topmost folder of PATH that does not exist yet (removed again on failure)."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def remove_debris(root: Path) -> None:
    """Delete __pycache__, .pyc and test caches that an installed template may carry."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in DEBRIS_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in DEBRIS_SUFFIXES:
            path.unlink()

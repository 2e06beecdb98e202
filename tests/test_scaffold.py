"""`scaffold new-service` / `kiln new-service`: names, folders, variables, prompts, and services that work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from runtime import cli as kiln_cli
from runtime.testing import client as service_client
from scaffold import cli as scaffold_cli
from scaffold.errors import ScaffoldError
from scaffold.new import render_template
from scaffold.schema import IN_SERVICE, PACKAGED, schema_text
from tests.support import ROOT, Server

CLIS = {"kiln": kiln_cli.cli, "scaffold": scaffold_cli.cli}


def new(*args: str, input: str | None = None, program: str = "kiln") -> Result:
    """Run `<program> new-service ARGS` in-process."""
    return CliRunner().invoke(CLIS[program], ["new-service", *args], input=input)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ROOT with its bytes, to prove a refused command changed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(result: Result) -> str:
    """The command failed with exactly one line on stderr; return it."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def run_service_tests(folder: Path, python: str = sys.executable,
                      env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m pytest` inside a generated service, as its user would run it."""
    return subprocess.run([python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def checkout_env() -> dict[str, str]:
    """The environment for a subprocess that imports kiln from this checkout."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("program", ["kiln", "scaffold"])
def test_both_commands_write_the_custom_service(tmp_path: Path, program: str) -> None:
    result = new("add-numbers", "-o", str(tmp_path), "--no-input", program=program)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "add-numbers"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == [".gitignore", ".kiln/service.schema.json", "README.md", "app/__init__.py",
                     "app/predict.py", "app/routes.py", "app/schemas.py", "service.yaml",
                     "tests/test_service.py"]
    assert f"Created {folder}" in result.stdout


@pytest.mark.parametrize("name", [
    "Add-numbers",      # upper case
    "1svc",             # leading digit
    "svc-",             # trailing '-'
    "my_svc",           # underscore
    "a" * 64,           # 64 characters
    "",                 # empty
    "a/b",              # path separator
    "../x",             # escapes the output folder
    "svc.v2",           # dot
])
def test_a_bad_name_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    line = one_error_line(new(name, "-o", str(out), "--no-input"))
    assert line.startswith("Error: NAME: ") and "not a valid id" in line
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_63_character_name_is_fine(tmp_path: Path) -> None:
    name = "a" * 62 + "1"
    assert new(name, "-o", str(tmp_path), "--no-input").exit_code == 0
    assert yaml.safe_load((tmp_path / name / "service.yaml").read_text())["id"] == name


def test_an_existing_folder_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    folder = tmp_path / "add-numbers"
    folder.mkdir()
    (folder / "service.yaml").write_text("id: add-numbers\ntitle: mine\n")
    (folder / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    line = one_error_line(new("add-numbers", "-o", str(tmp_path), "--no-input"))
    assert line == f"Error: {folder}: already exists; choose another NAME or -o DIR, or pass --force to replace it"
    assert snapshot(tmp_path) == before


def test_force_replaces_an_existing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "add-numbers"
    folder.mkdir()
    (folder / "notes.txt").write_text("old")
    result = new("add-numbers", "-o", str(tmp_path), "--no-input", "--force")
    assert result.exit_code == 0, result.output
    assert not (folder / "notes.txt").exists()
    assert (folder / "app" / "predict.py").is_file()
    # Nothing else is left beside it (no staging folder).
    assert [p.name for p in tmp_path.iterdir()] == ["add-numbers"]


@pytest.mark.parametrize(("pair", "named"), [
    ("colour=blue", "colour"),
    ("titel=Typo", "titel"),
    ("model_path=m.joblib", "model_path"),   # a variable of the model template only
    ("id=other", "id"),
    ("size=huge", "size"),
    ("python=3.9", "python"),
    ("novalue", "novalue"),
])
def test_a_bad_variable_is_refused_naming_the_key(tmp_path: Path, pair: str, named: str) -> None:
    line = one_error_line(new("add-numbers", "-o", str(tmp_path / "out"), "--no-input", pair))
    assert f"Error: {named}" in line or f"'{named}'" in line, line
    assert not (tmp_path / "out").exists()


def test_variables_and_target_reach_service_yaml(tmp_path: Path) -> None:
    result = new("gpu-svc", "-o", str(tmp_path), "--no-input", "--target", "gpu",
                 "title=GPU: the service", "description=It's \"quoted\"", "version=1.0")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((tmp_path / "gpu-svc" / "service.yaml").read_text())
    assert data["title"] == "GPU: the service"
    assert data["description"] == "It's \"quoted\""
    assert data["version"] == "1.0"
    assert (data["target"], data["size"], data["cuda"]) == ("gpu", "gpu", "12.4")


def test_interactive_mode_asks_with_defaults(tmp_path: Path) -> None:
    result = new("add-numbers", "-o", str(tmp_path), input="\n\n\n\n")
    assert result.exit_code == 0, result.output
    for prompt in ("Title [Add numbers]:", "Description [Adds two numbers.]:",
                   "Target (cpu, gpu) [cpu]:", "Size (small, large, gpu) [small]:"):
        assert prompt in result.output
    data = yaml.safe_load((tmp_path / "add-numbers" / "service.yaml").read_text())
    assert (data["title"], data["description"], data["target"], data["size"]) == (
        "Add numbers", "Adds two numbers.", "cpu", "small")


def test_interactive_mode_without_a_terminal_says_to_pass_no_input(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "new-service", "add-numbers",
                           "-o", str(tmp_path)], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=checkout_env(), timeout=60, check=False)
    assert done.returncode == 1, done
    assert done.stderr.strip().splitlines() == [
        ("Error: no answer for title: standard input ended (it is not a terminal); pass "
         "--no-input to take the defaults, with KEY=VALUE pairs to set values")], done.stderr
    assert not (tmp_path / "add-numbers").exists()


def test_interactive_mode_takes_the_answers(tmp_path: Path) -> None:
    # A wrong choice is asked again; a gpu target proposes the gpu size.
    result = new("pricer", "-o", str(tmp_path), "--template", "model",
                 input="Price model\nPrices things.\ntpu\ngpu\n\n")
    assert result.exit_code == 0, result.output
    assert "Size (small, large, gpu) [gpu]:" in result.output
    data = yaml.safe_load((tmp_path / "pricer" / "service.yaml").read_text())
    assert (data["title"], data["description"], data["target"], data["size"]) == (
        "Price model", "Prices things.", "gpu", "gpu")


def test_interactive_mode_skips_what_was_given(tmp_path: Path) -> None:
    result = new("add-numbers", "-o", str(tmp_path), "--target", "cpu", "size=large",
                 "title=Sum", input="\n")
    assert result.exit_code == 0, result.output
    assert "Title" not in result.output and "Target" not in result.output
    assert "Description [Adds two numbers.]:" in result.output


def test_interactive_mode_stopped_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "new" / "place"
    result = new("add-numbers", "-o", str(out), input="")   # end of input at the first question
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []


def test_the_users_cookiecutter_config_and_replay_are_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    rc = home / ".cookiecutterrc"
    rc.write_text("default_context:\n  description: from the user's rc\n  size: large\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(rc))
    result = new("add-numbers", "-o", str(tmp_path / "out"), "--no-input")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((tmp_path / "out" / "add-numbers" / "service.yaml").read_text())
    assert (data["description"], data["size"]) == ("Adds two numbers.", "small")
    assert sorted(p.name for p in home.iterdir()) == [".cookiecutterrc"]


def test_the_committed_schema_is_the_generated_one() -> None:
    assert PACKAGED.read_text(encoding="utf-8") == schema_text(), (
        "runtime/service.schema.json is stale: run `python -m scaffold.schema`")


@pytest.mark.parametrize("template", ["custom", "model"])
def test_service_yaml_names_its_schema_and_loads(tmp_path: Path, template: str) -> None:
    assert new("svc", "-o", str(tmp_path), "--template", template, "--no-input").exit_code == 0
    folder = tmp_path / "svc"
    first = (folder / "service.yaml").read_text().splitlines()[0]
    assert first == f"# yaml-language-server: $schema=./{IN_SERVICE.as_posix()}"
    assert (folder / IN_SERVICE).read_text() == schema_text()
    validator = pytest.importorskip("jsonschema")
    validator.validate(yaml.safe_load((folder / "service.yaml").read_text()),
                       json.loads(schema_text()))


def test_the_custom_service_answers_through_the_test_client(tmp_path: Path) -> None:
    assert new("add-numbers", "-o", str(tmp_path), "--no-input").exit_code == 0
    client = service_client(tmp_path / "add-numbers")
    assert client.post("/api/v1.0/predict", json={"input": [2, 5]}).get_json()["prediction"] == 7
    assert client.post("/add-numbers", json={"num1": 2, "num2": 5}).get_json() == {"result": 7}
    bad = client.post("/add-numbers", json={"num1": 2})
    assert bad.status_code == 400 and "num2" in bad.get_json()["error"]


@pytest.mark.slow
def test_the_custom_service_passes_its_tests_and_serves(
        tmp_path: Path, serve: Callable[..., Server]) -> None:
    assert new("add-numbers", "-o", str(tmp_path), "--no-input").exit_code == 0
    folder = tmp_path / "add-numbers"
    run = run_service_tests(folder, env=checkout_env())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6 passed" in run.stdout
    server = serve(folder)
    assert server.post("/api/v1.0/predict", json={"input": [2, 5]}).json()["prediction"] == 7
    assert server.post("/add-numbers", json={"num1": 2, "num2": 5}).json() == {"result": 7}
    assert server.get("/api/v1.0/health/status").json()["service"] == "add-numbers"


@pytest.mark.slow
def test_the_model_service_skips_until_a_model_is_saved(tmp_path: Path) -> None:
    assert new("iris", "-o", str(tmp_path), "--template", "model", "--no-input").exit_code == 0
    folder = tmp_path / "iris"
    assert not (folder / "app").exists()
    run = run_service_tests(folder, env=checkout_env())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 skipped" in run.stdout
    assert f"no model yet: save your model to {folder / 'model.joblib'}" in run.stdout
    status = service_client(folder).get("/api/v1.0/health/status")
    assert status.status_code == 503
    assert "model.joblib" in status.get_json()["reason"]


@pytest.mark.parametrize(("files", "problem"), [
    ({"service.yaml": "id: {{ cookiecutter.id }}\ncolour: blue\n"}, "colour: unknown key"),
    ({"service.yaml": "id: {{ cookiecutter.nothing }}\n"}, "service.yaml'.*has no attribute 'nothing'"),
])
def test_a_failed_render_leaves_nothing_behind(tmp_path: Path, files: dict[str, str],
                                               problem: str) -> None:
    template = tmp_path / "broken"
    (template / "{{cookiecutter.id}}").mkdir(parents=True)
    (template / "cookiecutter.json").write_text('{"id": "x"}')
    for name, text in files.items():
        (template / "{{cookiecutter.id}}" / name).write_text(text)
    old = tmp_path / "out" / "svc"
    old.mkdir(parents=True)
    (old / "mine.txt").write_text("kept")
    for dest in (tmp_path / "new" / "deeper" / "svc", old):
        with pytest.raises(ScaffoldError, match=problem):
            render_template(template, {"id": "svc"}, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "out"]
    assert snapshot(tmp_path / "out") == {"svc/mine.txt": b"kept"}


def test_the_model_template_takes_its_model_path(tmp_path: Path) -> None:
    result = new("iris", "-o", str(tmp_path), "--template", "model", "--no-input",
                 "model_path=models/iris.pkl")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((tmp_path / "iris" / "service.yaml").read_text())
    assert data["model"] == {"path": "models/iris.pkl"}
    assert "scikit-learn" in data["packages"]


def test_kiln_help_lists_new_service() -> None:
    result = CliRunner().invoke(kiln_cli.cli, ["--help"])
    assert result.exit_code == 0 and "new-service" in result.output

"""service.yaml and gunicorn settings: tables of good and bad inputs, and the CLI's one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import cli
from runtime.config import SETTINGS, json_schema, load_service, parse_service
from runtime.errors import ConfigError
from runtime.serving.settings import available_cpus, options
from tests.support import SERVICES

BAD_YAML = [
    ("id: Add_Numbers", "id: 'Add_Numbers' is not a valid id"),
    ("id: 9lives", "id: '9lives' is not a valid id"),
    ("id: trailing-", "id: 'trailing-' is not a valid id"),
    ("id: " + "a" * 64, "is not a valid id"),
    ("title: no id", "id: is required"),
    ("id: ok\ncolour: blue", "colour: unknown key; allowed:"),
    ("id: ok\ntarget: tpu", "target: 'tpu' is not allowed; allowed: cpu, gpu"),
    ("id: ok\nsize: huge", "size: 'huge' is not allowed; allowed: small, large, gpu"),
    ("id: ok\ncuda: '9.0'", "cuda: '9.0' is not allowed; allowed: 11.8"),
    ("id: ok\npython: 3.10", "python: 3.1 must be quoted"),
    ("id: ok\npython: '2.7'", "python: '2.7' is not supported"),
    ("id: ok\npredict:\n  timeout: soon", "predict.timeout: must be an integer or a number"),
    ("id: ok\npredict:\n  timeout: 0", "predict.timeout: must be greater than 0"),
    ("id: ok\npredict:\n  retries: 3", "predict.retries: unknown key; allowed in predict"),
    ("id: ok\npredict: fast", "predict: must be a mapping"),
    ("id: ok\npackages: numpy", "packages: must be a list"),
    ("id: ok\npackages: [1, 2]", "packages: must be a list of strings"),
    ("id: ok\nauth:\n  mode: magic", "auth.mode: 'magic' is not allowed; allowed: none, token, sigv4"),
    ("id: ok\ndocs: sometimes", "docs: must be true or false"),
    ("id: ok\nflask:\n  debug: true", "flask: Flask reads upper-case keys only"),
    ("id: ok\ngunicorn:\n  bind: 0.0.0.0:9000", "gunicorn.bind: may not be set here"),
    ("id: ok\ngunicorn:\n  on_starting: os.system", "gunicorn.on_starting"),
    ("id: ok\ngunicorn:\n  reload: true", "gunicorn.reload: may not be set here"),
    ("id: ok\ngunicorn:\n  worker_class: mypkg.Worker", "worker_class: 'mypkg.Worker' is not allowed"),
    ("id: ok\ngunicorn:\n  workers: many", "gunicorn.workers"),
    ("id: ok\ngunicorn:\n  wrokers: 2", "gunicorn.wrokers: not a gunicorn setting"),
    ("id: ok\ngunicorn:\n  control_socket: /tmp/x", "gunicorn.control_socket"),
    ("- just\n- a list", "must be a mapping of settings"),
    ("id: [unclosed", "invalid YAML"),
]


@pytest.mark.parametrize("command", [["serve"], ["specs"], ["build", "--dockerfile-only", "-"]],
                         ids=["serve", "specs", "build"])
@pytest.mark.parametrize(("text", "message"), BAD_YAML)
def test_bad_service_yaml_stops_every_command_with_one_line(tmp_path: Path, text: str,
                                                            message: str, command: list[str]):
    (tmp_path / "service.yaml").write_text(text + "\n")
    args = [command[0], str(tmp_path), *command[1:]]
    if command[0] == "build":
        args[-1] = str(tmp_path / "context")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert str(tmp_path / "service.yaml") in lines[0]
    assert message in lines[0]


@pytest.mark.parametrize("command", [["serve"], ["specs"], ["lock"], ["build", "--dockerfile-only"]])
def test_a_service_yaml_not_in_utf8_stops_with_one_line(tmp_path: Path, command: list[str]):
    (tmp_path / "service.yaml").write_bytes("id: caf\u00e9\n".encode("latin-1"))
    args = [command[0], str(tmp_path), *command[1:]]
    if command[0] == "build":
        args.append(str(tmp_path / "context"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        (f"Error: {tmp_path / 'service.yaml'}: not UTF-8 text (byte 0xe9 at offset 7); "
         "save it as UTF-8")], result.output


def test_missing_service_yaml(tmp_path: Path):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 1
    assert "service.yaml: not found" in result.output


def test_defaults_fill_every_setting():
    values = parse_service({"id": "svc"})
    assert set(values) == {s.key for s in SETTINGS}
    assert values["title"] == "svc"
    assert values["predict.timeout"] == 60
    assert values["auth.mode"] == "none"


def test_spec_example_is_valid(tmp_path: Path):
    example = """
id: add-numbers
title: Add numbers
version: 0.1.0
description: Adds two numbers.
target: cpu
size: small
python: "3.11"
packages:
  - numpy>=1.26
system_packages: []
cuda: "12.4"
predict:
  timeout: 60
  accepts_file: false
flask:
  MAX_CONTENT_LENGTH: 10485760
gunicorn:
  threads: 4
auth:
  mode: none
  docs_public: true
docs: true
metrics:
  public: false
capture:
  dir: captures
  bodies: true
"""
    (tmp_path / "service.yaml").write_text(example)
    config = load_service(tmp_path)
    assert config.id == "add-numbers"
    assert config.get("packages") == ["numpy>=1.26"]
    assert config.enabled("capture")


def test_shipped_json_schema_matches_the_table():
    schema = json_schema()
    assert schema["required"] == ["id"]
    assert schema["properties"]["target"]["enum"] == ["cpu", "gpu"]
    assert schema["properties"]["predict"]["properties"]["timeout"]["default"] == 60
    assert schema["additionalProperties"] is False
    json.dumps(schema)


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_workers_follow_the_cgroup_cpu_quota(tmp_path: Path, files: dict[str, str], expected):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    import os

    affinity = len(os.sched_getaffinity(0))
    cpus = available_cpus(tmp_path)
    assert cpus == (min(affinity, expected) if expected else affinity)
    (tmp_path / "service.yaml").write_text("id: quota\n")
    config = load_service(tmp_path)
    assert options(config, "127.0.0.1", 8080, env={}, cpus=cpus)["workers"] == cpus


def test_gunicorn_layers(tmp_path: Path):
    (tmp_path / "service.yaml").write_text("id: layers\ngunicorn:\n  threads: 4\n  timeout: 99\n")
    config = load_service(tmp_path)
    settings = options(config, "127.0.0.1", 8080, env={}, cpus=3)
    assert (settings["threads"], settings["timeout"], settings["workers"]) == (4, 99, 3)
    assert settings["control_socket_disable"] is True
    assert settings["bind"] == "127.0.0.1:8080"
    env = {"GUNICORN_CMD_ARGS": "--threads 2 --workers 5 --bind 0.0.0.0:9000"}
    settings = options(config, "127.0.0.1", 8080, env=env, cpus=3)
    assert (settings["threads"], settings["workers"], settings["timeout"]) == (2, 5, 99)
    assert settings["bind"] == ["0.0.0.0:9000"]
    with pytest.raises(ConfigError, match="GUNICORN_CMD_ARGS: gunicorn.reload"):
        options(config, "127.0.0.1", 8080, env={"GUNICORN_CMD_ARGS": "--reload"}, cpus=1)


@pytest.mark.parametrize(("env", "message"), [
    ({"FLASK_MAX_CONTENT_LENGTH": "abc"}, ("MAX_CONTENT_LENGTH (service.yaml flask: or "
                                          "FLASK_MAX_CONTENT_LENGTH): must be a whole number")),
    ({"GUNICORN_CMD_ARGS": "--workers"}, "GUNICORN_CMD_ARGS: argument -w/--workers: expected one"),
    ({"GUNICORN_CMD_ARGS": "--no-such-flag"}, "GUNICORN_CMD_ARGS: unrecognized arguments"),
    ({"GUNICORN_CMD_ARGS": "--name 'open"}, "GUNICORN_CMD_ARGS: cannot parse"),
])
def test_bad_environment_stops_serve_with_one_line(tmp_path: Path, monkeypatch, env, message):
    (tmp_path / "service.yaml").write_text("id: env-check\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["serve", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert message in lines[0]


def test_empty_flask_and_gunicorn_sections_are_empty_mappings():
    values = parse_service({"id": "svc", "flask": None, "gunicorn": None})
    assert values["flask"] == {} and values["gunicorn"] == {}


def test_version_without_an_installed_distribution():
    import subprocess
    import sys

    from runtime import __version__

    out = subprocess.run([sys.executable, "-m", "runtime.cli", "--version"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == f"kiln, version {__version__}"


def test_specs_needs_no_run_time_secrets(tmp_path: Path):
    # auth.mode: token without KILN_AUTH_TOKENS: serving refuses, documenting does not.
    out = tmp_path / "openapi.json"
    result = CliRunner().invoke(cli, ["specs", str(SERVICES / "token"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "/api/v1.0/predict" in out.read_text()
    served = CliRunner().invoke(cli, ["serve", str(SERVICES / "token")])
    assert served.exit_code == 1
    assert "auth.mode: token needs tokens: set KILN_AUTH_TOKENS" in served.output

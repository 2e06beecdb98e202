"""`kiln` and `scaffold` usage errors: one line on stderr, exit 2; user errors: one line, exit 1."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from runtime import cli as kiln_cli
from scaffold import cli as scaffold_cli

CLIS: dict[str, click.Group] = {"kiln": kiln_cli.cli, "scaffold": scaffold_cli.cli}


@pytest.mark.parametrize(("program", "args", "message"), [
    ("kiln", ["build", "--bogus"], "No such option '--bogus' (see kiln build --help)"),
    ("kiln", ["--bogus"], "No such option '--bogus' (see kiln --help)"),
    ("kiln", ["bogus"], "No such command 'bogus' (see kiln --help)"),
    ("kiln", ["new-service"], "Missing argument 'NAME' (see kiln new-service --help)"),
    ("kiln", ["export", "."], "Missing option '--since' (see kiln export --help)"),
    ("kiln", ["new-service", "x", "--template", "nope"],
     ("Invalid value for '--template': 'nope' is not one of 'custom', 'model' "
     "(see kiln new-service --help)")),
    ("kiln", ["build", "--target", "tpu"],
     "Invalid value for '--target': 'tpu' is not one of 'cpu', 'gpu' (see kiln build --help)"),
    ("kiln", ["serve", "--port", "0"],
     "Invalid value for '--port': 0 is not in the range 1<=x<=65535 (see kiln serve --help)"),
    ("scaffold", ["new-service", "--bogus"],
     "No such option '--bogus' (see scaffold new-service --help)"),
    ("scaffold", ["new-service"], "Missing argument 'NAME' (see scaffold new-service --help)"),
    ("scaffold", ["new-service", "x", "--target", "tpu"],
     ("Invalid value for '--target': 'tpu' is not one of 'cpu', 'gpu' "
     "(see scaffold new-service --help)")),
])
def test_a_usage_error_is_one_line_exit_2(program: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(CLIS[program], args, prog_name=program)
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"Error: {message}\n", "")


def test_a_user_error_stays_one_line_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(kiln_cli.cli, ["serve", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {tmp_path / 'service.yaml'}: not found; a service folder "
                             f"holds a service.yaml (create one with `kiln new-service NAME`)\n")


@pytest.mark.parametrize("program", ["kiln", "scaffold"])
def test_a_bare_command_still_shows_its_help(program: str) -> None:
    result = CliRunner().invoke(CLIS[program], [], prog_name=program)
    assert result.output.startswith(f"Usage: {program} [OPTIONS] COMMAND [ARGS]...")


@pytest.mark.parametrize("module", ["scaffold.cli", "runtime.cli"])
def test_either_cli_imports_first(module: str) -> None:
    # scaffold.cli imports runtime.cli, whose group adds new-service when first asked.
    code = (f"import {module}; from runtime.cli import cli; "
            f"print(cli.get_command(None, 'new-service').name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "new-service\n", "")

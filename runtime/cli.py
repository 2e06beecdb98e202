"""The `kiln` command: parses arguments, calls the library, and maps kiln errors to one line."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click

from runtime import __version__
from runtime.errors import KilnError

F = TypeVar("F", bound=Callable[..., Any])


class UsageLineError(click.ClickException):
    """Raised in place of click's usage errors: one line, `Error: <what> (see <command> --help)`."""

    exit_code = 2

    def __init__(self, err: click.UsageError):
        message = err.format_message().rstrip(".")
        ctx = err.ctx
        if ctx is not None and ctx.command.get_help_option(ctx) is not None:
            names = ctx.command.get_help_option_names(ctx)
            message = f"{message} (see {ctx.command_path} {max(names, key=len)})"
        super().__init__(message)


#: click 8.2+ raises this for a bare group to show its help (8.1 shows it without raising).
_SHOWS_HELP: tuple[type[Exception], ...] = tuple(
    kind for kind in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if kind is not None)


class OneLineUsageGroup(click.Group):
    """A click group whose usage errors (an unknown option or command, a missing argument, a bad
    value) print one line on stderr and exit 2, instead of click's usage, hint and error lines.

    Errors raised while parsing the group's own arguments pass through make_context; those of
    its subcommands, and ctx.fail() in them, through invoke.
    """

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _SHOWS_HELP:
            raise
        except click.UsageError as err:
            raise UsageLineError(err) from err

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _SHOWS_HELP:
            raise
        except click.UsageError as err:
            raise UsageLineError(err) from err


def user_errors(func: F) -> F:
    """Turn a KilnError into `Error: <message>` on stderr and exit 1, with no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KilnError as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


service_dir = click.argument(
    "directory", required=False, default=".",
    type=click.Path(file_okay=False, path_type=Path))


class KilnGroup(OneLineUsageGroup):
    """The `kiln` group. On the user's machine `new-service` (from the scaffold package) and
    `build`, `run`... (from the builder package) join it when a command is first looked up,
    not at import, so that scaffold.cli may import this module."""

    _host_commands_added = False

    def _add_host_commands(self) -> None:
        if self._host_commands_added:
            return
        self._host_commands_added = True
        scaffold_cli = _host_commands("scaffold")
        if scaffold_cli is not None:
            self.add_command(scaffold_cli.new_service_command)
        builder_cli = _host_commands("builder")
        if builder_cli is not None:
            builder_cli.add_commands(self, user_errors)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_host_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_host_commands()
        return super().list_commands(ctx)


@click.group(cls=KilnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="kiln")
def cli() -> None:
    """kiln turns a few Python functions into a documented, secured HTTP service in a container.

    \b
    Start with:   kiln new-service my-service
    Then:         kiln serve my-service --reload
    Ship it:      kiln build my-service && kiln run my-service
    """


def _host_commands(package: str) -> ModuleType | None:
    """PACKAGE.cli, or None inside an image, where only the runtime package is installed."""
    try:
        return importlib.import_module(f"{package}.cli")
    except ModuleNotFoundError as err:
        if err.name != package:
            raise
        return None


@cli.command()
@service_dir
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--reload", "reload_", is_flag=True,
              help="Reload the workers when a file of the service is saved; a broken edit "
                   "keeps the previous code serving.")
@click.option("--poll", is_flag=True,
              help="With --reload: poll the files instead of waiting for file events "
                   "(for mounts that deliver none); implies --reload.")
@user_errors
def serve(directory: Path, host: str, port: int, reload_: bool, poll: bool) -> None:
    """Serve the service in DIRECTORY under gunicorn (default: the current folder)."""
    from runtime.server import serve as run_server

    hooks = None
    if reload_ or poll:
        from runtime.dev.reload import hooks as reload_hooks

        hooks = reload_hooks(directory, poll=poll)
    run_server(directory, host=host, port=port, hooks=hooks)


@cli.command()
@click.argument("service_id")
@click.argument("path", required=False)
@click.option("--method", default="post", show_default=True, help="HTTP method.",
              type=click.Choice(["get", "post", "put", "patch", "delete", "head", "options"],
                                case_sensitive=False))
@click.option("--data", help="JSON body, e.g. '{\"num1\": 2}'.")
@click.option("--file", "file", type=click.File("r"), help="File with the JSON body ('-': stdin).")
@click.option("--url", help="The service's root URL (default: KILN_SERVICE_URL_<ID> or "
                            "KILN_GATEWAY_URL).")
@click.option("--example", is_flag=True,
              help="POST the example its docs build from PredictInput's field examples to PATH "
                   "[/api/v1.0/predict]; --method, --data and --file do not apply.")
@user_errors
def invoke(service_id: str, path: str | None, method: str, data: str | None, file: Any,
           url: str | None, example: bool) -> None:
    """Call SERVICE_ID at PATH through the SDK helper and print its JSON answer.

    PATH is needed unless --example is given.
    """
    from runtime.sdk import invoke_command, invoke_example

    if example:
        if data is not None or file is not None:
            raise click.UsageError("--example sends the documented example: give no --data "
                                   "or --file")
        click.echo(invoke_example(service_id, path, url))
        return
    if path is None:
        raise click.UsageError("Missing argument 'PATH'")
    click.echo(invoke_command(service_id, path, method, data, file, url))


@cli.command()
@service_dir
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file: .json, or .yaml/.yml (default: JSON on stdout).")
@user_errors
def specs(directory: Path, output: Path | None) -> None:
    """Write the OpenAPI document that /docs/specs.json serves for the service in DIRECTORY."""
    from runtime.specs import write_specs

    text, warnings = write_specs(directory, output)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if text is not None:
        click.echo(text, nl=False)


@cli.group(cls=OneLineUsageGroup)
def token() -> None:
    """Client tokens of auth.mode token, kept as hashes in the tokens file."""


@token.command("new")
@click.argument("client")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="The tokens file (default: KILN_AUTH_TOKENS_FILE).")
@user_errors
def token_new(client: str, file: Path | None) -> None:
    """Print a new token for CLIENT once, and append its hash to the tokens file.

    A running service accepts it within seconds; delete the line to revoke it.
    """
    import os

    from runtime.security.tokens import TOKENS_FILE_VAR, TokenFileError, new_token

    path = file or os.environ.get(TOKENS_FILE_VAR, "").strip()
    if not path:
        raise TokenFileError(f"no tokens file: pass --file FILE or set {TOKENS_FILE_VAR}")
    click.echo(new_token(client, path))
    click.echo(f"added a token of {client} to {path}; it is not shown again", err=True)


@cli.command("export")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="First day (UTC) of captured requests to export.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="Last day (UTC, included); default: up to now.")
@click.option("-o", "--output", default="predictions.csv", show_default=True,
              type=click.Path(dir_okay=False, allow_dash=True), help="CSV file, or - for stdout.")
@user_errors
def export_captures(directory: Path, since: Any, until: Any, output: str) -> None:
    """Join captured requests, responses and feedback by request id into CSV.

    DIRECTORY is a service folder (its capture settings say where to read) or a capture folder.
    """
    from runtime.observability.export import export

    count = export(directory, since.date(), until.date() if until else None, output)
    click.echo(f"exported {count} request(s) to {output}", err=True)


@cli.command()
@click.argument("what", metavar="DIR|IMAGE")
@click.option("--input", "-i", "input_", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inputs, one row each: .csv, .jsonl or .parquet.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where the rows go with prediction, error and request_id: .csv, .jsonl "
                   "or .parquet.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes [the CPUs this process may use].")
@click.option("--chunk", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Rows per chunk: what predict_batch gets at once, and the unit of --resume "
                   "and --shard.")
@click.option("--resume", is_flag=True,
              help="Go on with an interrupted run of the same command, from its progress file.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first row that fails.")
@click.option("--shard", metavar="I/N", help="Only every N-th chunk, from chunk I (0-based).")
@user_errors
def batch(what: str, input_: Path, output: Path, workers: int | None, chunk: int, resume: bool,
          fail_fast: bool, shard: str | None) -> None:
    """Predict every row of a file with the service in DIR, or inside the built IMAGE.

    Exits 1 when any row failed (its error is in the output's error column).
    """
    from runtime.config import SERVICE_FILE
    from runtime.jobs.batch import BatchError, BatchOptions, run_batch

    options = BatchOptions(input_, output, workers=workers, chunk=chunk, resume=resume,
                           fail_fast=fail_fast, shard=shard)
    if not (Path(what) / SERVICE_FILE).is_file():
        try:
            from builder.batch import run_in_image
        except ModuleNotFoundError as err:
            raise BatchError(f"{what}: no {SERVICE_FILE} there, and images need kiln's "
                             f"builder, which is not installed here") from err
        code = run_in_image(what, options, echo=click.echo)
        if code:  # the container said why on its stderr, passed on above
            raise click.exceptions.Exit(code)
        return
    summary = run_batch(Path(what), options)
    if summary.failed:
        row, why = summary.first_failures[0] if summary.first_failures else (0, "")
        first = f" (first: row {row}: {why})" if why else ""
        if summary.stopped_early:
            raise BatchError(f"stopped at a failed row (--fail-fast) after {summary.rows:,} "
                             f"rows{first}")
        raise BatchError(f"{summary.failed:,} of {summary.rows:,} rows failed{first}; see the "
                         f"error column of {output}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point of `kiln`."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="kiln")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

"""The `kiln` command: parses arguments, calls the library, and maps kiln errors to one line."""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from runtime.errors import KilnError

F = TypeVar("F", bound=Callable[..., Any])


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kiln", prog_name="kiln")
def cli() -> None:
    """kiln turns a few Python functions into a documented, secured HTTP service in a container.

    \b
    Start with:   kiln new-service my-service
    Then:         kiln serve my-service --reload
    Ship it:      kiln build my-service && kiln run my-service
    """


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
        from runtime.reload import hooks as reload_hooks

        hooks = reload_hooks(directory, poll=poll)
    run_server(directory, host=host, port=port, hooks=hooks)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point of `kiln`."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="kiln")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

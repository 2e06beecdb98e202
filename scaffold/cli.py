"""The `scaffold` command: `scaffold new-service NAME`, the same as `kiln new-service NAME`."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from runtime.cli import OneLineUsageGroup
from runtime.errors import KilnError
from scaffold.new import TEMPLATES, new_service, parse_variables


def _ask(key: str, default: str, choices: tuple[str, ...] | None) -> str:
    """One interactive question on the terminal (or on standard input)."""
    kind = click.Choice(choices) if choices else click.STRING
    try:
        return str(click.prompt(key.capitalize(), default=default, type=kind,
                                show_choices=bool(choices)))
    except click.Abort:
        if sys.stdin.isatty():
            raise  # Ctrl-C at the terminal
        click.echo()  # end the question's line
        raise click.ClickException(f"no answer for {key}: standard input ended (it is not a "
                                   f"terminal); pass --no-input to take the defaults, with "
                                   f"KEY=VALUE pairs to set values") from None


@click.command("new-service", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.argument("variables", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("-o", "--output-dir", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the service folder NAME into.")
@click.option("--template", default="custom", show_default=True, type=click.Choice(TEMPLATES),
              help="custom: Flask routes and predict() to edit; model: serve a saved model.")
@click.option("--target", default=None, type=click.Choice(["cpu", "gpu"]),
              help="Image target (default: cpu).")
@click.option("--no-input", is_flag=True, help="Ask nothing; use the defaults and KEY=VALUE pairs.")
@click.option("--force", is_flag=True, help="Replace DIR/NAME if it exists.")
def new_service_command(name: str, variables: tuple[str, ...], output_dir: Path, template: str,
                        target: str | None, no_input: bool, force: bool) -> None:
    """Write DIR/NAME, a new service folder that serves, documents and tests itself.

    NAME is the service id: at most 63 characters of a-z, 0-9 and '-', starting with a letter
    and ending with a letter or digit. KEY=VALUE pairs set template variables, e.g.
    title='Add numbers' size=large. Without --no-input it asks for title, description,
    target and size.
    """
    try:
        path = new_service(name, output_dir, template=template, target=target,
                           no_input=no_input, force=force, extra=parse_variables(variables),
                           ask=_ask)
    except KilnError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"Created {path}")
    click.echo(f"Next: kiln serve {path} --reload   (then open http://127.0.0.1:8080/docs/)")


@click.group(cls=OneLineUsageGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Write a new kiln service folder from a template."""


cli.add_command(new_service_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point of `scaffold`."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="scaffold")


if __name__ == "__main__":  # pragma: no cover
    main()

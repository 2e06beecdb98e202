"""The `scaffold` command: `scaffold new-service NAME`, the same as `kiln new-service NAME`."""
from __future__ import annotations

from collections.abc import Sequence

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Write a new kiln service folder from a template."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point of `scaffold`."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="scaffold")

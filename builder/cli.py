"""The `kiln build`, `kiln lock` and `kiln run` commands: parse options, call the builder.

`add_commands` is called by runtime/cli.py; nothing here imports runtime.cli, so the `kiln`
group inside an image (where only the runtime is installed) simply goes without them.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from builder.dockerfile import PORT, TARGETS, BuildOptions

DEFAULT_OUT = "kiln-context"


def add_commands(group: click.Group, user_errors: Callable[[Any], Any]) -> None:
    """Add `build`, `lock` and `run` to the kiln group; user_errors maps KilnError to one line."""

    @group.command()
    @click.argument("directory", required=False, default=".",
                    type=click.Path(file_okay=False, path_type=Path))
    @click.option("--target", type=click.Choice(TARGETS), help="Image target [service.yaml target].")
    @click.option("--tag", "-t", help="Image tag [<id>:<version>, -gpu appended for gpu].")
    @click.option("--base-image", metavar="IMG",
                  help="FROM image [python:<python>-slim for cpu, the CUDA image for gpu].")
    @click.option("--index-url", metavar="URL",
                  help="pip index for the packages; used in the builder stage only.")
    @click.option("--ca-bundle", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
                  help="CA bundle pip trusts (private index, TLS-intercepting proxy); builder "
                       "stage only, never in the image.")
    @click.option("--network", metavar="MODE",
                  help="Network of the build's RUN steps, e.g. host when the default bridge "
                       "has no way out.")
    @click.option("--no-cache", is_flag=True, help="Build every layer again.")
    @click.option("--dockerfile-only", "dockerfile_only", is_flag=False, flag_value=DEFAULT_OUT,
                  default=None, metavar="[OUT]",
                  help=f"Write the Dockerfile and context to OUT [{DEFAULT_OUT}]; build nothing.")
    @click.option("--quiet", "-q", is_flag=True, help="Print only the steps and the result.")
    @user_errors
    def build(directory: Path, target: str | None, tag: str | None, base_image: str | None,
              index_url: str | None, ca_bundle: Path | None, network: str | None,
              no_cache: bool, dockerfile_only: str | None, quiet: bool) -> None:
        """Bake the service in DIRECTORY into a Docker image (default: the current folder)."""
        from builder import build as builder

        options = BuildOptions(target=target, tag=tag, base_image=base_image,
                               index_url=index_url, ca_bundle=ca_bundle, network=network,
                               no_cache=no_cache, quiet=quiet)
        if dockerfile_only is not None:
            builder.write_dockerfile(directory, options, Path(dockerfile_only), echo=click.echo)
        else:
            builder.build(directory, options, echo=click.echo)

    @group.command()
    @click.argument("directory", required=False, default=".",
                    type=click.Path(file_okay=False, path_type=Path))
    @click.option("--python", "python", metavar="PATH",
                  help="Interpreter to resolve with, of service.yaml's python: version "
                       "[this one, pythonX.Y on PATH, or pyenv's].")
    @click.option("--index-url", metavar="URL", help="pip index for the packages, as for build.")
    @click.option("--ca-bundle", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
                  help="CA bundle pip trusts (private index, TLS-intercepting proxy).")
    @click.option("--quiet", "-q", is_flag=True, help="Print only the result.")
    @user_errors
    def lock(directory: Path, python: str | None, index_url: str | None,
             ca_bundle: Path | None, quiet: bool) -> None:
        """Pin the packages of the service in DIRECTORY into requirements.lock.

        Resolves service.yaml packages: with the runtime's own requirements, against the
        versions kiln's CI tested, for service.yaml's python:. `kiln build` installs exactly
        these versions while the file is there. Like build, it ignores this machine's pip
        configuration: give --index-url and --ca-bundle as you give them to build.
        """
        from builder.lock import LockOptions
        from builder.lock import lock as make_lock

        options = LockOptions(python=python, index_url=index_url, ca_bundle=ca_bundle,
                              quiet=quiet)
        result = make_lock(directory, options, echo=click.echo)
        changed = result.changes
        what = ("new" if changed is None else
                f"{len(changed)} changed" if changed else "nothing changed")
        click.echo(f"Wrote {result.path}: {len(result.lock.pins)} packages pinned ({what})")
        for line in changed or []:
            click.echo(f"  {line}")

    @group.command()
    @click.argument("what", required=False, default=".", metavar="[DIR|IMAGE]")
    @click.option("--port", default=PORT, show_default=True, type=click.IntRange(1, 65535),
                  help="Port on 127.0.0.1.")
    @click.option("--detach", "-d", is_flag=True, help="Leave it running in the background.")
    @click.option("--dev", is_flag=True,
                  help="Mount the service folder DIR into the image and reload on every edit, "
                       "against the image's own packages.")
    @click.option("--poll", is_flag=True,
                  help="With --dev: poll for edits (mounts that deliver no file events).")
    @user_errors
    def run(what: str, port: int, detach: bool, dev: bool, poll: bool) -> None:
        """Run a built image (of the service in DIR, or IMAGE) with the limits of its size."""
        from builder import run as runner

        runner.run(what, port=port, detach=detach, dev=dev, poll=poll, echo=click.echo)

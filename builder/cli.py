"""The `kiln build`, `lock`, `run`, `push` and `deploy` commands: parse options, call the builder.

`add_commands` is called by runtime/cli.py; nothing here imports runtime.cli, so the `kiln`
group inside an image (where only the runtime is installed) simply goes without them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from builder.dockerfile import PORT, TARGETS, BuildOptions

DEFAULT_OUT = "kiln-context"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
#: An image reference as Docker and Kubernetes read it: [host[:port]/]path[:tag][@digest].
REFERENCE = re.compile(rf"(?:{_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                       r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z]"
                       r"[A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")


def image_reference(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse an option value that is not an image reference, before anything is written."""
    if value is not None and not REFERENCE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not an image reference, e.g. python:3.11-slim "
                                 f"or registry.example:5000/team/name:1.0")
    return value


def add_commands(group: click.Group, user_errors: Callable[[Any], Any]) -> None:
    """Add the builder's commands to the kiln group; user_errors maps KilnError to one line."""

    @group.command()
    @click.argument("directory", required=False, default=".",
                    type=click.Path(file_okay=False, path_type=Path))
    @click.option("--target", type=click.Choice(TARGETS), help="Image target [service.yaml target].")
    @click.option("--tag", "-t", callback=image_reference,
                  help="Image tag [<id>:<version>, -gpu appended for gpu].")
    @click.option("--base-image", metavar="IMG", callback=image_reference,
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

    add_deploy_commands(group, user_errors)


def add_deploy_commands(group: click.Group, user_errors: Callable[[Any], Any]) -> None:
    """Add `push` and `deploy` to the kiln group."""

    @group.command()
    @click.argument("what", required=False, default=".", metavar="[DIR|IMAGE]")
    @click.option("--registry", metavar="HOST/NAMESPACE",
                  help="Registry to push to [service.yaml deploy.registry].")
    @user_errors
    def push(what: str, registry: str | None) -> None:
        """Tag and push the image of the service in DIR (or IMAGE); print it with its digest."""
        from builder.push import push as push_image

        push_image(what, registry, echo=click.echo)

    @group.command()
    @click.argument("directory", required=False, default=".",
                    type=click.Path(file_okay=False, path_type=Path))
    @click.option("--out", "-o", default="kiln-deploy", show_default=True,
                  type=click.Path(file_okay=False, path_type=Path),
                  help="Folder of the manifests; the next run reads them back (canary).")
    @click.option("--format", "format_", default="kubernetes", show_default=True,
                  type=click.Choice(["kubernetes", "knative"]),
                  help="kubernetes: Deployment, Service, HPA and PDB; knative: a "
                       "serving.knative.dev/v1 Service.")
    @click.option("--image", metavar="REF", callback=image_reference,
                  help="Image to run [deploy.registry/<id>:<version>], e.g. kiln push's "
                       "reference with its digest.")
    @click.option("--canary", type=int, metavar="PERCENT",
                  help="Send PERCENT of requests to this version, the rest to the deployed one.")
    @click.option("--promote", is_flag=True, help="Make the canary the only version.")
    @click.option("--rollback", is_flag=True, help="Remove the canary; the previous version "
                                                   "takes all requests.")
    @click.option("--batch", is_flag=True,
                  help="Write an Indexed Job running `kiln batch --shard I/N` instead.")
    @click.option("--shards", type=click.IntRange(min=1), metavar="N",
                  help="With --batch: pods of the Job [deploy.replicas.max].")
    @click.option("--input", "input_", default="input.csv", show_default=True, metavar="PATH",
                  help="With --batch: the input file, inside the claim.")
    @click.option("--claim", metavar="PVC",
                  help="With --batch: the PersistentVolumeClaim holding the input "
                       "[<id>-data]; the outputs go beside it.")
    @click.option("--rehearse", is_flag=True,
                  help="Then run the written pod spec on the local Docker engine and perform "
                       "its probes (a batch Job: each index to completion).")
    @click.option("--data", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
                  help="With --batch --rehearse: a local folder standing in for the claim.")
    @user_errors
    def deploy(directory: Path, out: Path, format_: str, image: str | None,
               canary: int | None, promote: bool, rollback: bool, batch: bool,
               shards: int | None, input_: str, claim: str | None, rehearse: bool,
               data: Path | None) -> None:
        """Write Kubernetes or Knative manifests of the service in DIRECTORY from service.yaml."""
        import yaml

        from builder.deploy import DeployOptions
        from builder.deploy import deploy as write
        from builder.errors import DeployError

        options = DeployOptions(out=out, format=format_, image=image, canary=canary,
                                promote=promote, rollback=rollback, batch=batch, shards=shards,
                                input=input_, claim=claim)
        result = write(directory, options, echo=click.echo)
        if rehearse:
            from builder.rehearse import rehearse as run_pod

            if result.pod_file is None:
                raise DeployError("--rehearse: nothing with a pod spec to rehearse")
            click.echo(f"Rehearsing {result.pod_file} on the local Docker engine")
            run_pod(yaml.safe_load(result.pod_file.read_text(encoding="utf-8")),
                    echo=click.echo, data=data)

"""`kiln push`: tag a built image for a registry, push it, and print it by digest.

The registry is --registry, else service.yaml's deploy.registry. The pushed reference,
`HOST/NAMESPACE/NAME@sha256:...`, names exactly these bytes: give it to `kiln deploy --image`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from builder.build import docker_client, inspect_local, local_image
from builder.errors import PushError

Echo = Callable[[str], None]


def split_reference(image: str) -> tuple[str, str]:
    """(repository, tag) of IMAGE, `NAME[:TAG][@DIGEST]`; the tag is `latest` when none is given.

    An image ID (`sha256:...`) names no repository to push under: a PushError says so.
    """
    name = image.split("@", 1)[0]
    if not name or name.startswith("sha256:"):
        raise PushError(f"{image!r} is an image ID or a bare digest: give the image's name, "
                        f"NAME[:TAG], to push it")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, "latest"


def target_reference(image: str, registry: str) -> tuple[str, str]:
    """(repository, tag) in REGISTRY for IMAGE: its last path part, under the registry."""
    repository, tag = split_reference(image)
    return f"{registry.rstrip('/')}/{repository.rsplit('/', 1)[-1]}", tag


def progress_lines(chunks: Iterator[dict[str, Any]]) -> Iterator[tuple[str | None, str | None]]:
    """(line to print or None, digest or None) per chunk of the push stream; raises on an error.

    A layer's line is printed when its status changes (not each progress-bar tick).
    """
    last: dict[str, str] = {}
    for chunk in chunks:
        if "error" in chunk:
            detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
            raise PushError(f"the registry refused the push: {detail}")
        aux = chunk.get("aux") or {}
        if aux.get("Digest"):
            yield None, str(aux["Digest"])
            continue
        status, layer = chunk.get("status"), chunk.get("id")
        if not status:
            continue
        if layer:
            if last.get(layer) == status:
                continue
            last[layer] = status
            yield f"  {layer}: {status}", None
        else:
            yield f"  {status}", None


def resolve(what: str, registry: str | None) -> tuple[str, str]:
    """(local image, registry) of WHAT: a service folder (its default tag) or an image name."""
    image, config = local_image(what)
    if config is not None:
        registry = registry or config.get("deploy.registry")
        where = f"--registry or deploy.registry in {config.path}"
    else:
        where = "--registry (an image name has no service.yaml)"
    if not registry:
        raise PushError(f"no registry to push {image} to: give {where}, "
                        f"e.g. registry.example.com/team")
    return image, registry


def push(what: str, registry: str | None = None, echo: Echo = print) -> str:
    """Push the image of WHAT; return the pushed reference with its digest."""
    image, registry = resolve(what, registry)
    repository, tag = target_reference(image, registry)
    client = docker_client()
    try:
        import docker.errors

        inspect_local(client, image, what, PushError)
        client.api.tag(image, repository, tag)
        echo(f"Pushing {repository}:{tag}")
        digest = None
        try:
            stream = client.images.push(repository, tag=tag, stream=True, decode=True)
            for line, found in progress_lines(stream):
                if line:
                    echo(line)
                digest = found or digest
        except docker.errors.APIError as err:
            raise PushError(f"cannot push {repository}:{tag}: "
                            f"{err.explanation or err}") from err
    finally:
        client.close()
    if not digest:
        raise PushError(f"the registry took {repository}:{tag} but sent back no digest")
    reference = f"{repository}@{digest}"
    echo(f"Pushed {reference}")
    return reference

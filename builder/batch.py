"""`kiln batch IMAGE`: the batch run inside a built image, with the CPU and memory of its size.

The container runs `kiln batch /srv/service ...` as the image's non-root user, with the
input's folder mounted read-only and a staging folder beside the output mounted read-write:
the output's own folder may not be writable for that user, so the run writes into
`.OUTPUT.kiln-batch/` (made writable for it) and its files are moved next to the output when
the container ends, however it ends. `--resume` moves them back in first.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from builder.build import docker_client
from builder.run import SERVICE_MOUNT, Echo, Limits, follow, resolve_image, start
from runtime.jobs.batch import STATE_SUFFIX, BatchOptions

INPUT_MOUNT = "/kiln/input"
OUTPUT_MOUNT = "/kiln/output"
#: The image's user when its config names none (images/*.Dockerfile: USER 10001).
DEFAULT_UID = 10001


def command(options: BatchOptions) -> list[str]:
    """The container's command: `kiln batch` on the service inside, files in the mounts."""
    args = ["kiln", "batch", SERVICE_MOUNT,
            "--input", f"{INPUT_MOUNT}/{options.input.name}",
            "--output", f"{OUTPUT_MOUNT}/{options.output.name}",
            "--chunk", str(options.chunk)]
    if options.workers:
        args += ["--workers", str(options.workers)]
    if options.shard:
        args += ["--shard", options.shard]
    args += [flag for flag, on in (("--resume", options.resume),
                                   ("--fail-fast", options.fail_fast)) if on]
    return args


def stage_of(output: Path) -> Path:
    return output.parent / f".{output.name}.kiln-batch"


def _ours(folder: Path, output: Path) -> list[Path]:
    """The files of this run in FOLDER: the output, its progress file, spool and partials."""
    return [path for path in folder.iterdir() if path.name.startswith(output.name)
            and path.is_file()] if folder.is_dir() else []


def prepare_stage(output: Path, resume: bool, uid: int) -> Path:
    """The staging folder, writable for the container's user, holding a resumed run's files."""
    stage = stage_of(output)
    if stage.exists() and not resume:
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    if resume:
        for path in _ours(output.parent, output):
            if path.name == output.name or path.name == output.name + STATE_SUFFIX:
                os.replace(path, stage / path.name)
    if os.geteuid() == 0:
        for path in [stage, *stage.iterdir()]:
            os.chown(path, uid, 0)
        stage.chmod(0o770)
    else:  # no chown without root: the folder is opened to the container's user
        stage.chmod(0o777)
        for path in stage.iterdir():
            path.chmod(0o666)
    return stage


def collect_stage(stage: Path, output: Path) -> None:
    """Move the run's files beside the output and remove the staging folder."""
    for path in _ours(stage, output):
        os.replace(path, output.parent / path.name)
    shutil.rmtree(stage, ignore_errors=True)


def image_uid(client: Any, image: str) -> int:
    user = str((client.api.inspect_image(image).get("Config") or {}).get("User") or "")
    name = user.split(":")[0]
    return int(name) if name.isdigit() else DEFAULT_UID


def run_in_image(what: str, options: BatchOptions, echo: Echo = print) -> int:
    """Run the batch inside the image of WHAT (a service folder or an image); its exit code."""
    output = options.output.resolve()
    source = options.input.resolve()
    client = docker_client()
    try:
        image, size = resolve_image(client, what)
        limits = Limits.of(size)
        host_cpus = int(client.info().get("NCPU") or limits.cpus)
        limits = limits.within(host_cpus)
        stage = prepare_stage(output, options.resume, image_uid(client, image))
        volumes = {str(source.parent): {"bind": INPUT_MOUNT, "mode": "ro"},
                   str(stage): {"bind": OUTPUT_MOUNT, "mode": "rw"}}
        try:
            # Ctrl-C or SIGTERM stops the container (the run inside records its progress on
            # SIGTERM, for --resume); it is removed either way, and the stage collected.
            container = start(client, image, limits, None, label="kiln.batch",
                              extra={"command": command(options), "volumes": volumes})
            echo(f"Batch in {image}, container {container.short_id} (size {size}: "
                 f"{limits.cpus:g} CPU, {limits.memory_gb} GB)")
            return follow(container, echo, out=sys.stderr, interrupted=130)
        finally:
            collect_stage(stage, output)
    finally:
        client.close()

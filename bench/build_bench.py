"""Image figures for the bench service: cold build, code-only rebuild, size, start to ready.

Runs `kiln build` and `kiln run`-like `docker run` on a copy of bench/iris-service, on the
local Docker engine, and removes the images and containers it made. Skipped with a message
when there is no engine or no `kiln build` yet.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import contestants as cs
from procs import free_port, http_status


def _kiln(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], cwd=cs.ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env={**__import__("os").environ, "PYTHONPATH": str(cs.ROOT)})


def _docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def missing(base_image: str) -> str | None:
    """Why the build part cannot run here, or None."""
    if shutil.which("docker") is None or _docker("version", "--format", "{{.Server.Version}}",
                                                 timeout=30).returncode != 0:
        return "no Docker engine answers here"
    if _kiln("build", "--help", timeout=60).returncode != 0:
        return "`kiln build` is not there yet (the builder feature adds it)"
    if _docker("image", "inspect", base_image, timeout=30).returncode != 0:
        return f"the base image {base_image} is not on this engine"
    return None


def image_size(image: str) -> int:
    done = _docker("image", "inspect", "--format", "{{.Size}}", image)
    return int(done.stdout.strip() or 0)


def layers(image: str) -> list[dict[str, Any]]:
    """The image's layers, newest first: size in bytes and the step that made it."""
    done = _docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", image)
    out = []
    for line in done.stdout.splitlines():
        row = json.loads(line)
        out.append({"size": int(row.get("Size") or 0), "step": row.get("CreatedBy", "")[:160]})
    return out


def _timed_build(service: Path, tag: str, base_image: str, ca_bundle: str, *extra: str
                 ) -> tuple[float, subprocess.CompletedProcess[str], list[str]]:
    args = ["build", str(service), "--target", "cpu", "--tag", tag, "--base-image", base_image,
            "--ca-bundle", ca_bundle, *extra]
    start = time.monotonic()
    done = _kiln(*args)
    return time.monotonic() - start, done, ["kiln", *args]


def start_to_ready(tag: str, timeout: float = 180) -> tuple[float | None, str]:
    """Seconds from `docker run -d` to the status route answering 200; the container's log."""
    port = free_port()
    start = time.monotonic()
    # The bench service has auth.mode token: the container refuses to start without tokens.
    run = _docker("run", "-d", "-p", f"127.0.0.1:{port}:8080",
                  "-e", f"KILN_AUTH_TOKENS=bench:{cs.AUTH_TOKEN}", tag)
    container = run.stdout.strip()
    if run.returncode != 0 or not container:
        return None, run.stderr
    try:
        deadline = start + timeout
        while time.monotonic() < deadline:
            if http_status(f"http://127.0.0.1:{port}/api/v1.0/health/status", timeout=1) == 200:
                return time.monotonic() - start, ""
            state = _docker("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
            if state == "false":
                break  # it exited: no point waiting out the timeout
            time.sleep(0.1)
        return None, _docker("logs", "--tail", "30", container).stdout
    finally:
        _docker("rm", "-f", container)


def run(logs: Path, data: dict[str, Any], base_image: str, ca_bundle: str,
        say: Callable[[str], None] = print) -> str:
    """Measure and return the markdown section; data['build'] gets the figures."""
    why = missing(base_image)
    if why:
        say(f"skipping build: {why}")
        data["build"] = {"skipped": why}
        return f"## Image build\n\nSkipped: {why}.\n"
    service = logs / "build" / "iris-service"
    if service.exists():
        shutil.rmtree(service)
    shutil.copytree(cs.SERVICE, service)
    tag = f"kiln-bench/iris:{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"tag": tag, "base_image": base_image}
    try:
        cold, done, command = _timed_build(service, tag, base_image, ca_bundle, "--no-cache")
        (logs / "build-cold.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"cold build failed: {(done.stderr or done.stdout).strip()[-400:]}")
        result.update(cold_s=round(cold, 1), cold_command=" ".join(command))
        say(f"  cold build {cold:.1f} s")
        (service / "model_note.py").write_text("# a code-only change for the rebuild figure\n")
        rebuild, done, command = _timed_build(service, tag, base_image, ca_bundle)
        (logs / "build-rebuild.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"rebuild failed: {(done.stderr or done.stdout).strip()[-400:]}")
        result.update(rebuild_s=round(rebuild, 1), rebuild_command=" ".join(command),
                      rebuild_share=round(rebuild / cold, 3))
        say(f"  code-only rebuild {rebuild:.1f} s ({rebuild / cold:.1%} of cold)")
        size, base = image_size(tag), image_size(base_image)
        history = layers(tag)
        base_layers = len(layers(base_image))
        own = history[:max(0, len(history) - base_layers)]
        biggest = max(own, key=lambda layer: layer["size"]) if own else {"size": 0, "step": ""}
        result.update(image_mb=round(size / 1e6, 1), base_mb=round(base / 1e6, 1),
                      delta_mb=round((size - base) / 1e6, 1),
                      packages_layer_mb=round(biggest["size"] / 1e6, 1),
                      overhead_mb=round((size - base - biggest["size"]) / 1e6, 1),
                      layers=[{"mb": round(layer["size"] / 1e6, 2), "step": layer["step"]}
                              for layer in own])
        say(f"  image {size / 1e6:.1f} MB, base {base / 1e6:.1f} MB, "
            f"packages layer {biggest['size'] / 1e6:.1f} MB, rest {result['overhead_mb']} MB")
        ready, log = start_to_ready(tag)
        result["start_to_ready_s"] = round(ready, 2) if ready is not None else None
        if ready is None:
            result["start_log"] = log[-2000:]
        say(f"  container start to ready: {ready if ready is None else round(ready, 2)} s")
    finally:
        _docker("rmi", "-f", tag)
        data["build"] = result
    rows = "\n".join(f"| {layer['mb']} | `{layer['step'][:100]}` |"
                     for layer in result.get("layers", []) if layer["mb"] > 0)
    return "\n".join([
        "## Image build (cpu target)", "",
        f"- cold build (`--no-cache`): {result.get('cold_s')} s — `{result.get('cold_command')}`",
        f"- code-only rebuild: {result.get('rebuild_s')} s ({result.get('rebuild_share', 0):.1%} of cold)",
        (f"- image {result.get('image_mb')} MB = base {result.get('base_mb')} MB + "
        f"{result.get('delta_mb')} MB, of which the packages layer (/opt/venv) is "
        f"{result.get('packages_layer_mb')} MB and the rest {result.get('overhead_mb')} MB"),
        f"- container start to ready (`docker run` to status 200): {result.get('start_to_ready_s')} s",
        *([f"- the container did not become ready; its log:\n\n```\n{result['start_log']}\n```"]
          if result.get("start_log") else []),
        "", "Layers above the base with a size (the others are metadata):", "",
        "| MB | step |", "| ---: | --- |", rows, ""])

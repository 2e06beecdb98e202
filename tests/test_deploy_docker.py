"""`kiln push` to a real registry on 127.0.0.1, and `kiln deploy --rehearse` on the real engine.

The images are the session cpu image of tests/test_docker_image.py, and one thin layer over
it whose load() raises; the registry is Debian's docker-registry, started and stopped by PID.
"""
from __future__ import annotations

import contextlib
import csv
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from runtime.cli import cli
from tests.support import SERVICES, free_port, wait_for
from tests.test_docker_image import Images, cpu_image, images, unique_tag  # noqa: F401

pytestmark = pytest.mark.docker
REGISTRY = "/usr/bin/docker-registry"


class Registry:
    """A docker-registry serving on 127.0.0.1:PORT with its storage under a temporary folder."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = folder / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {folder / 'storage'}\n"
                          f"http:\n  addr: {self.host}\n")
        self.log_path = folder / "registry.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("exited")
        return requests.get(f"http://{self.host}/v2/", timeout=2).status_code == 200

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if shutil.which(REGISTRY) is None:
        pytest.skip("docker-registry is not installed (tests/infra/system-deps.sh installs it)")
    started = Registry(tmp_path_factory.mktemp("registry"))
    try:
        if not wait_for(started.answers, timeout=30, interval=0.1):
            pytest.fail(f"docker-registry did not answer:\n{started.log_path.read_text()}")
        yield started
    finally:
        started.stop()


def test_push_prints_a_digest_that_pulls_the_same_image(
        docker_engine: Any, cpu_image: tuple[str, str], registry: Registry) -> None:  # noqa: F811
    tag = cpu_image[0]
    result = CliRunner().invoke(cli, ["push", tag, "--registry", f"{registry.host}/team"])
    assert result.exit_code == 0, result.output
    repository = f"{registry.host}/team/imaged"
    lines = result.output.splitlines()
    assert lines[0] == f"Pushing {repository}:{tag.rsplit(':', 1)[1]}"
    assert any(line.endswith(": Pushed") for line in lines)
    reference = lines[-1].removeprefix("Pushed ")
    assert reference.startswith(f"{repository}@sha256:") and len(reference.split("@")[1]) == 71
    try:
        pulled = docker_engine.images.pull(reference)
        assert pulled.id == docker_engine.api.inspect_image(tag)["Id"]
    finally:
        for name in (f"{repository}:{tag.rsplit(':', 1)[1]}", reference):
            with contextlib.suppress(Exception):  # untag only: the session image stays
                docker_engine.api.remove_image(name)


def test_push_a_missing_image_says_so(docker_engine: Any, registry: Registry) -> None:
    result = CliRunner().invoke(cli, ["push", "kiln-test/none:missing",
                                      "--registry", f"{registry.host}/team"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "Error: image 'kiln-test/none:missing' not found"


def leftovers(client: Any) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": "kiln.rehearse"}))


def test_rehearse_the_scaffolded_service(tmp_path: Path, docker_engine: Any,
                                         cpu_image: tuple[str, str]) -> None:  # noqa: F811
    made = CliRunner().invoke(cli, ["new-service", "x", "-o", str(tmp_path), "--no-input"])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(cli, ["deploy", str(tmp_path / "x"), "-o", str(tmp_path / "out"),
                                      "--image", cpu_image[0], "--rehearse"])
    assert result.exit_code == 0, result.output
    output = result.output
    assert "as user 10001:0, read-only root: True, tmpfs /tmp, /dev/shm" in output
    assert "  startup probe GET /api/v1.0/health/startup: 200" in output
    assert "  readiness probe GET /api/v1.0/health/status: 200" in output
    assert "  liveness probe GET /api/v1.0/health/live: 200 (try 1 of 1)" in output
    assert "  SIGTERM: exited with code 0 within the 45 s grace period" in output
    assert output.splitlines()[-1] == "Rehearsal passed"
    assert leftovers(docker_engine) == []


@pytest.fixture(scope="module")
def failing_image(docker_engine: Any, images: Images,  # noqa: F811
                  cpu_image: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    """The session image with tests/services/failing-load's predict.py (load() raises)."""
    context = tmp_path_factory.mktemp("failing")
    shutil.copy(SERVICES / "failing-load" / "app" / "predict.py", context / "predict.py")
    (context / "Dockerfile").write_text(
        f"FROM {cpu_image[0]}\nCOPY --chown=10001:0 predict.py /srv/service/app/predict.py\n")
    tag = unique_tag("failing-load")
    image, _ = docker_engine.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    images.ids.append(image.id)
    return tag


def test_rehearse_fails_naming_the_probe_and_the_load_error(
        tmp_path: Path, docker_engine: Any, failing_image: str) -> None:
    result = CliRunner().invoke(cli, ["deploy", str(SERVICES / "failing-load"),
                                      "-o", str(tmp_path / "out"), "--image", failing_image,
                                      "--rehearse"])
    assert result.exit_code == 1, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: readiness probe GET /api/v1.0/health/status failed 3 times")
    assert last.endswith("last answer 503: load() failed: app/predict.py:2: RuntimeError: "
                         "weights file is corrupt")
    assert "The container's log ends:" in result.output
    assert leftovers(docker_engine) == []


def test_a_rehearsed_batch_job_of_three_shards_writes_each_row_once(
        tmp_path: Path, docker_engine: Any, cpu_image: tuple[str, str]) -> None:  # noqa: F811
    data = tmp_path / "claim"
    data.mkdir()
    data.chmod(0o777)  # the pods' user (10001) writes its shard's output beside the input
    rows = 4500  # 5 chunks of 1000 rows: shards 0 and 1 take two each, shard 2 one
    with (data / "input.csv").open("w") as file:
        file.write("a,b\n")
        for n in range(rows):
            file.write(f"{n},{2 * n}\n")
    (data / "input.csv").chmod(0o644)
    result = CliRunner().invoke(cli, [
        "deploy", str(SERVICES / "imaged"), "-o", str(tmp_path / "out"), "--image", cpu_image[0],
        "--batch", "--shards", "3", "--input", "input.csv", "--rehearse", "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "Rehearsal passed: 3 of 3 indexes completed" in result.output
    seen: list[tuple[int, int, float]] = []
    for index in range(3):
        with (data / f"input.predictions.part-{index}.csv").open() as file:
            for row in csv.DictReader(file):
                assert row["error"] == "", row
                seen.append((int(row["a"]), int(row["b"]), float(row["prediction"])))
    assert sorted(seen) == [(n, 2 * n, float(3 * n)) for n in range(rows)]
    assert leftovers(docker_engine) == []

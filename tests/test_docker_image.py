"""Real images on a real engine: build on the local stand-in bases, run, call, inspect.

One cpu image is built per session and shared; every image and container a test makes has a
unique name and is removed, by id, at the end. The build cache is kept, so a second session
is warm.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import shutil
import signal
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from builder.build import build_image
from builder.dockerfile import BuildOptions
from runtime.cli import cli
from runtime.config import load_service
from tests.docker_fixtures import CA_BUNDLE
from tests.support import ROOT, SERVICES, Server, free_port, wait_for

pytestmark = pytest.mark.docker
RUN_ID = uuid.uuid4().hex[:8]


def unique_tag(name: str) -> str:
    return f"kiln-test/{name}:{RUN_ID}"


def service_copy(tmp_path: Path, **settings: Any) -> Path:
    """A copy of tests/services/imaged with service.yaml settings replaced."""
    folder = tmp_path / f"imaged-{uuid.uuid4().hex[:6]}"
    shutil.copytree(SERVICES / "imaged", folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
    data = yaml.safe_load((folder / "service.yaml").read_text())
    data.update(settings)
    (folder / "service.yaml").write_text(yaml.safe_dump(data))
    return folder


class Images:
    """Builds images for tests, remembers them, and removes them by id at the end."""

    def __init__(self, client: Any, bases: tuple[str, str]):
        self.client = client
        self.python_base, self.bare_base = bases
        self.ids: list[str] = []

    def build(self, folder: Path, tag: str, *args: str) -> str:
        """`kiln build` through the CLI; returns its output after checking it succeeded."""
        result = CliRunner().invoke(cli, ["build", str(folder), "--tag", tag,
                                          "--ca-bundle", str(CA_BUNDLE), *args])
        if result.exit_code != 0:
            pytest.fail(f"kiln build failed:\n{result.output}")
        self.ids.append(self.client.api.inspect_image(tag)["Id"])
        return result.output

    def remove_all(self) -> None:
        for image_id in reversed(self.ids):
            with contextlib.suppress(Exception):  # removed already: two tags, one id
                self.client.api.remove_image(image_id, force=True)


@pytest.fixture(scope="session")
def images(docker_engine: Any, standin_images: tuple[str, str]) -> Iterator[Images]:
    made = Images(docker_engine, standin_images)
    yield made
    made.remove_all()


@pytest.fixture(scope="session")
def cpu_image(images: Images) -> tuple[str, str]:
    """(tag, kiln build output) of the imaged service on the stand-in python base."""
    tag = unique_tag("imaged")
    output = images.build(SERVICES / "imaged", tag, "--base-image", images.python_base)
    return tag, output


class Containers:
    """Containers started by a test, each removed (by id) at the end."""

    def __init__(self, client: Any):
        self.client = client
        self.started: list[Any] = []

    def run(self, image: str, **kwargs: Any) -> tuple[Any, str]:
        """Start IMAGE with port 8080 on a free 127.0.0.1 port; wait until status says ok."""
        port = free_port()
        container = self.client.containers.run(
            image, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}, **kwargs)
        self.started.append(container)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            container.reload()
            if container.status == "exited":
                raise AssertionError("exited")
            return requests.get(f"{url}/api/v1.0/health/status", timeout=2).status_code == 200

        if not wait_for(ready, timeout=90, interval=0.25):
            pytest.fail(f"container of {image} never became ready:\n"
                        f"{container.logs().decode(errors='replace')}")
        return container, url

    def remove_all(self) -> None:
        for container in self.started:
            container.remove(force=True)


@pytest.fixture(scope="module")
def containers(docker_engine: Any) -> Iterator[Containers]:
    made = Containers(docker_engine)
    yield made
    made.remove_all()


@pytest.fixture(scope="module")
def served(cpu_image: tuple[str, str], containers: Containers) -> tuple[Any, str]:
    """The cpu image running with GUNICORN_CMD_ARGS and a FLASK_ setting given at docker run."""
    return containers.run(cpu_image[0], environment={"GUNICORN_CMD_ARGS": "--threads 3",
                                                     "FLASK_GREETING": '"hello"'})


def test_build_prints_tag_size_and_run_line(cpu_image: tuple[str, str]) -> None:
    tag, output = cpu_image
    assert f"Built {tag} (" in output and " MB; base kiln-standin/python:3.11-slim " in output
    assert f"Run it: docker run --rm -p 127.0.0.1:8080:8080 --cpus 1 --memory 4g {tag}" in output
    assert "Step 1/" in output


def test_the_image_serves_predict_user_route_and_status(served: tuple[Any, str]) -> None:
    url = served[1]
    answer = requests.post(f"{url}/api/v1.0/predict", json={"input": [2, 5]}, timeout=10)
    assert answer.status_code == 200 and answer.json()["prediction"] == 7
    inside = requests.get(f"{url}/inside", timeout=10).json()
    # six came from service.yaml packages; FLASK_GREETING from docker run -e
    assert inside["six"] and inside["flask_greeting"] == "hello"
    assert inside["uid"] == 10001 and inside["gid"] == 0 and inside["cwd"] == "/srv/service"
    status = requests.get(f"{url}/api/v1.0/health/status", timeout=10).json()
    assert status["status"] == "ok" and status["service"] == "imaged"
    assert status["version"] == "0.3.0" and status["gpu"]["visible"] is False


def test_tritonclient_against_the_image(served: tuple[Any, str]) -> None:
    """The Open Inference Protocol v2 from the real client, no Content-Type, into the image."""
    import numpy
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=served[1].removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_model_ready("imaged")
        assert client.get_model_metadata("imaged")["versions"] == ["0.3.0"]
        rows = httpclient.InferInput("input", [2, 2], "FP32")
        rows.set_data_from_numpy(numpy.array([[2, 5], [1.5, 1]], dtype=numpy.float32))
        ints = httpclient.InferInput("input", [3], "INT64")
        ints.set_data_from_numpy(numpy.array([4, 5, 6], dtype=numpy.int64), binary_data=False)
        assert client.infer("imaged", [rows]).as_numpy("prediction").tolist() == [7.0, 2.5]
        assert client.infer("imaged", [ints]).as_numpy("prediction").tolist() == [4, 5, 6]
    finally:
        client.close()


def test_the_image_serves_its_openapi_document(served: tuple[Any, str]) -> None:
    if importlib.util.find_spec("runtime.docs.ui") is None:
        pytest.skip("/docs/specs.json comes with runtime/docs/ui.py (the docs helper's work), "
                    "not on this branch yet")
    specs = requests.get(f"{served[1]}/docs/specs.json", timeout=10)
    assert specs.status_code == 200 and "/inside" in specs.json()["paths"]


def test_gunicorn_cmd_args_at_docker_run(served: tuple[Any, str]) -> None:
    logs = served[0].logs().decode(errors="replace")
    assert "GUNICORN_CMD_ARGS='--threads 3' applied: threads=3" in logs
    assert "Using worker: gthread" in logs  # threads > 1 switches gunicorn's worker class
    assert "Listening at: http://0.0.0.0:8080" in logs


def test_user_labels_and_healthcheck(docker_engine: Any, cpu_image: tuple[str, str],
                                     served: tuple[Any, str]) -> None:
    config = docker_engine.api.inspect_image(cpu_image[0])["Config"]
    assert config["User"] == "10001"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "Image test service"
    assert labels["org.opencontainers.image.version"] == "0.3.0"
    assert {labels[k] for k in ("kiln.id", "kiln.version", "kiln.target", "kiln.size")} == {
        "imaged", "0.3.0", "cpu", "small"}
    assert labels["kiln.packages.digest"].startswith("sha256:")
    test = config["Healthcheck"]["Test"]
    assert test[:2] == ["CMD", "python"] and "/api/v1.0/health/status" in test[-1]
    container = served[0]

    def health() -> str:
        container.reload()
        return str(container.attrs["State"]["Health"]["Status"])

    # The first check runs one interval (10 s) after the start.
    assert wait_for(lambda: health() == "healthy", timeout=40, interval=0.5), health()


def test_an_arbitrary_uid_in_group_0_serves(cpu_image: tuple[str, str],
                                             containers: Containers) -> None:
    _, url = containers.run(cpu_image[0], user="12345:0")
    inside = requests.get(f"{url}/inside", timeout=10).json()
    assert inside["uid"] == 12345 and inside["gid"] == 0


def _files(client: Any, image: str) -> Iterator[tuple[str, bytes]]:
    """(path, content) of every regular file of IMAGE, through `docker export`."""
    container = client.containers.create(image)
    chunks = container.export()
    try:
        with tarfile.open(fileobj=_Reader(chunks), mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    yield member.name, handle.read() if handle else b""
    finally:
        for _ in chunks:  # the tar ends before the stream does; read it out to free the socket
            pass
        container.remove(force=True)


class _Reader:
    """A file-like object over the chunks the docker SDK streams."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buffer += chunk
        size = len(self.buffer) if size < 0 else size
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


def test_the_ca_bundle_is_nowhere_in_the_image(docker_engine: Any,
                                              cpu_image: tuple[str, str]) -> None:
    bundle = CA_BUNDLE.read_bytes()
    digest = hashlib.sha256(bundle).hexdigest()
    found = [name for name, data in _files(docker_engine, cpu_image[0])
             if name.endswith("ca.crt") or (len(data) == len(bundle)
                                            and hashlib.sha256(data).hexdigest() == digest)]
    assert found == []
    history = " ".join(str(h.get("CreatedBy")) for h in docker_engine.api.history(cpu_image[0]))
    for word in ("ca.crt", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "PIP_INDEX_URL"):
        assert word not in history


def _layer(client: Any, image: str, marker: str) -> str:
    """The id of the step of IMAGE whose history line contains MARKER."""
    steps = [h for h in client.api.history(image) if marker in str(h.get("CreatedBy"))]
    assert len(steps) == 1, [h.get("CreatedBy") for h in client.api.history(image)]
    return str(steps[0]["Id"])


def test_a_code_change_rebuilds_from_cache(tmp_path: Path, images: Images,
                                          cpu_image: tuple[str, str]) -> None:
    folder = service_copy(tmp_path)
    images.build(folder, unique_tag("imaged-v1"), "--base-image", images.python_base)
    (folder / "app" / "predict.py").write_text("def predict(*numbers):\n    return -sum(numbers)\n")
    config = load_service(folder)
    options = BuildOptions(tag=unique_tag("imaged-v2"), base_image=images.python_base,
                           ca_bundle=CA_BUNDLE, quiet=True)
    lines: list[str] = []
    second = build_image(config, options, echo=lines.append, client=images.client)
    images.ids.append(second.image_id)
    packages = " in /opt/venv "
    code = " in /srv/service/ "
    v1, v2 = unique_tag("imaged-v1"), second.tag
    assert _layer(images.client, v1, packages) == _layer(images.client, v2, packages)
    assert _layer(images.client, v1, code) != _layer(images.client, v2, code)
    print(f"\ncode-only rebuild: {second.seconds:.1f} s; image {second.size / 1e6:.1f} MB, "
          f"base {(second.base_size or 0) / 1e6:.1f} MB")
    assert second.seconds < 60


@pytest.fixture(scope="session")
def gpu_image(images: Images, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The imaged service (size gpu) built with the gpu template on the bare stand-in base."""
    folder = service_copy(tmp_path_factory.mktemp("gpu"), target="gpu", size="gpu")
    tag = unique_tag("imaged-gpu")
    output = images.build(folder, tag, "--base-image", images.bare_base)
    assert "--gpus all" in output
    return tag


def test_the_gpu_image_builds_on_a_base_without_python_and_serves(
        docker_engine: Any, gpu_image: str, containers: Containers) -> None:
    labels = docker_engine.api.inspect_image(gpu_image)["Config"]["Labels"]
    assert labels["kiln.target"] == "gpu"
    _, url = containers.run(gpu_image)
    status = requests.get(f"{url}/api/v1.0/health/status", timeout=10).json()
    assert status["status"] == "ok" and status["gpu"] == {"visible": False}
    answer = requests.post(f"{url}/api/v1.0/predict", json={"input": [1, 2]}, timeout=10)
    assert answer.json()["prediction"] == 3


def _kiln_containers(client: Any) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": "kiln.run"}))


def test_kiln_run_of_a_gpu_size_without_a_gpu_runtime_says_so(docker_engine: Any,
                                                              gpu_image: str) -> None:
    if "nvidia" in (docker_engine.info().get("Runtimes") or {}):
        pytest.skip("this engine has an NVIDIA runtime")
    before = {c.id for c in docker_engine.containers.list(all=True)}
    result = CliRunner().invoke(cli, ["run", gpu_image, "--port", str(free_port())])
    assert result.exit_code == 1
    assert "needs a GPU, but this Docker engine has no GPU runtime" in result.output
    assert {c.id for c in docker_engine.containers.list(all=True)} == before


def test_a_missing_package_fails_the_build_naming_it(tmp_path: Path, images: Images) -> None:
    missing = "kiln-no-such-package-for-tests"
    folder = service_copy(tmp_path, packages=[missing])
    tag = unique_tag("imaged-broken")
    before = {c.id for c in images.client.containers.list(all=True)}
    result = CliRunner().invoke(cli, ["build", str(folder), "--tag", tag, "--quiet",
                                      "--base-image", images.python_base,
                                      "--ca-bundle", str(CA_BUNDLE)])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: build failed at step ") and missing in last, result.output
    assert "pip install -r /tmp/kiln/requirements.txt" in last
    import docker.errors

    with pytest.raises(docker.errors.ImageNotFound):
        images.client.api.inspect_image(tag)
    assert {c.id for c in images.client.containers.list(all=True)} == before


def test_kiln_run_serves_with_the_size_limits_and_stops_on_ctrl_c(
        tmp_path: Path, docker_engine: Any, cpu_image: tuple[str, str]) -> None:
    # As a script's background job (`kiln run IMG &`) starts it: SIGINT ignored, inherited.
    ignoring = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "os.execv(sys.executable, [sys.executable, '-m', 'runtime.cli', *sys.argv[1:]])")
    server = Server(["run", cpu_image[0]], tmp_path / "kiln-run.log",
                    program=[sys.executable, "-c", ignoring], cwd=ROOT)
    try:
        server.wait_ready(timeout=90)
        running = [c for c in _kiln_containers(docker_engine)
                   if c.attrs["Config"]["Labels"]["kiln.run"] == cpu_image[0]]
        assert len(running) == 1
        host = running[0].attrs["HostConfig"]
        assert host["NanoCpus"] == 1_000_000_000 and host["Memory"] == 4 * 1024 ** 3
        assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1",
                                                      "HostPort": str(server.port)}]}
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(60) == 0, server.output()
        assert "Stopping container" in server.output()
        assert not [c for c in _kiln_containers(docker_engine) if c.id == running[0].id]
    finally:
        server.stop()



def test_the_container_checks_service_yaml_at_start(tmp_path: Path, docker_engine: Any,
                                                    cpu_image: tuple[str, str]) -> None:
    bad = tmp_path / "service.yaml"
    bad.write_text("id: imaged\nsize: huge\n")
    bad.chmod(0o644)
    container = docker_engine.containers.run(
        cpu_image[0], detach=True, volumes={str(bad): {"bind": "/srv/service/service.yaml",
                                                       "mode": "ro"}})
    try:
        assert container.wait(timeout=60)["StatusCode"] == 1
        logs = container.logs().decode(errors="replace").strip()
        assert logs == ("Error: /srv/service/service.yaml: size: 'huge' is not allowed; "
                        "allowed: small, large, gpu")
    finally:
        container.remove(force=True)


def test_kiln_run_of_a_service_not_built_yet(tmp_path: Path, docker_engine: Any) -> None:
    folder = service_copy(tmp_path, version="9.9.9-never-built")
    result = CliRunner().invoke(cli, ["run", str(folder)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: image 'imaged:9.9.9-never-built' not found; "
                                     f"build it first: kiln build {folder}")


def test_kiln_run_detach_leaves_it_serving(docker_engine: Any, cpu_image: tuple[str, str]) -> None:
    port = free_port()
    result = CliRunner().invoke(cli, ["run", cpu_image[0], "--port", str(port), "--detach"])
    assert result.exit_code == 0, result.output
    short_id = result.output.strip().splitlines()[-1].split()[-1]
    container = docker_engine.containers.get(short_id)
    try:
        url = f"http://127.0.0.1:{port}/api/v1.0/health/status"
        assert wait_for(lambda: requests.get(url, timeout=2).status_code == 200, timeout=60)
        assert container.attrs["Config"]["Labels"]["kiln.run"] == cpu_image[0]
    finally:
        container.remove(force=True)


def test_kiln_run_dev_serves_edits_against_the_image(tmp_path: Path, images: Images,
                                                      docker_engine: Any) -> None:
    folder = service_copy(tmp_path, version=f"dev-{RUN_ID}")
    for path in [folder, *folder.rglob("*")]:  # the container's user (10001) reads the mount
        path.chmod(0o755 if path.is_dir() else 0o644)
    images.build(folder, f"imaged:dev-{RUN_ID}", "--base-image", images.python_base, "--quiet")
    port = free_port()
    result = CliRunner().invoke(cli, ["run", str(folder), "--dev", "--port", str(port),
                                      "--detach"])
    assert result.exit_code == 0, result.output
    container = docker_engine.containers.get(result.output.strip().splitlines()[-1].split()[-1])
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: requests.get(f"{url}/inside", timeout=2).status_code == 200,
                        timeout=90), container.logs().decode(errors="replace")
        routes = folder / "app" / "routes.py"
        routes.write_text(routes.read_text() + '''

@user_services_routes.get("/edited")
def edited():
    return {"edited": True, "six": six.__version__}
''')
        answer = wait_for(lambda: requests.get(f"{url}/edited", timeout=2).json().get("edited"),
                          timeout=60)
        assert answer is True, container.logs().decode(errors="replace")
        mounts = container.attrs["Mounts"]
        assert [m["Destination"] for m in mounts] == ["/srv/service"]
    finally:
        container.remove(force=True)


def test_kiln_run_dev_needs_a_service_folder(docker_engine: Any, cpu_image: tuple[str, str]) -> None:
    result = CliRunner().invoke(cli, ["run", cpu_image[0], "--dev"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: --dev needs a service folder (with service.yaml), "
                                     f"got {cpu_image[0]!r}")


def test_the_image_batches_concurrent_requests(tmp_path: Path, containers: Containers,
                                               cpu_image: tuple[str, str]) -> None:
    """predict.batch from a mounted service.yaml: one worker, so concurrent requests meet."""
    data = yaml.safe_load((SERVICES / "imaged" / "service.yaml").read_text())
    data.update(predict={"batch": {"max_size": 16, "max_latency_ms": 200}},
                gunicorn={"workers": 1})
    mounted = tmp_path / "service.yaml"
    mounted.write_text(yaml.safe_dump(data))
    mounted.chmod(0o644)
    container, url = containers.run(cpu_image[0], volumes={
        str(mounted): {"bind": "/srv/service/service.yaml", "mode": "ro"}})

    def batch_sizes() -> tuple[float, float]:
        text = requests.get(f"{url}/metrics", timeout=10).text
        found = {s.name: s.value for f in text_string_to_metric_families(text)
                 for s in f.samples if s.name.startswith("kiln_batch_size_")}
        return found.get("kiln_batch_size_count", 0.0), found.get("kiln_batch_size_sum", 0.0)

    def post(marker: int) -> int:
        answer = requests.post(f"{url}/api/v1.0/predict", json={"input": [marker, 1000]},
                               timeout=30)
        assert answer.status_code == 200
        return int(answer.json()["prediction"])

    shared = False
    for _ in range(5):  # bounded: 200 ms of gathering almost always brings 8 together at once
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(post, range(8))) == [m + 1000 for m in range(8)]
        calls, items = batch_sizes()
        if items > calls:
            shared = True
            break
    assert shared, container.logs().decode(errors="replace")[-3000:]
    assert "Using worker: gthread" in container.logs().decode(errors="replace")  # no gevent here


def test_docker_stop_answers_every_request_already_accepted(
        tmp_path: Path, cpu_image: tuple[str, str], containers: Containers) -> None:
    from tests.test_graceful import slow_service

    folder = slow_service(tmp_path)
    for path in [folder, *folder.rglob("*")]:  # the container's user (10001) reads the mount
        path.chmod(0o755 if path.is_dir() else 0o644)
    workers = 2
    container, url = containers.run(
        cpu_image[0], environment={"GUNICORN_CMD_ARGS": f"--workers {workers}"},
        volumes={str(folder): {"bind": "/srv/service", "mode": "ro"}})
    answers: list[int | str] = []

    def call() -> None:
        try:
            answers.append(requests.post(f"{url}/api/v1.0/predict", json={"input": 1.5},
                                         timeout=60).status_code)
        except requests.RequestException as err:
            answers.append(type(err).__name__)

    def queued() -> int:
        # The accept queue of gunicorn's listener, read inside the container's network.
        table = container.exec_run(["cat", "/proc/net/tcp"]).output.decode()
        for line in table.splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":1F90") and fields[3] == "0A":  # port 8080, LISTEN
                return int(fields[4].split(":")[1], 16)
        return 0

    callers = [threading.Thread(target=call) for _ in range(3 * workers)]
    for caller in callers:
        caller.start()
    assert wait_for(lambda: queued() >= 2 * workers, timeout=30), container.logs().decode()
    container.stop(timeout=30)  # SIGTERM to kiln serve, PID 1 of the image
    for caller in callers:
        caller.join(60)
    assert answers == [200] * (3 * workers), container.logs().decode(errors="replace")
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0

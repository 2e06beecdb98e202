"""The Dockerfile renderer and the build context, without an engine."""
from __future__ import annotations

import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from builder import runtime_dist
from builder.build import Progress
from builder.context import write_context
from builder.dockerfile import BuildOptions, base_image, default_tag, render_dockerfile, run_line
from builder.errors import BuildError
from runtime.cli import cli
from runtime.config import CUDA_IMAGES, load_service
from tests.support import SERVICES

IMAGED = SERVICES / "imaged"


def service(tmp_path: Path, **settings: Any) -> Path:
    """A copy of the imaged test service with service.yaml settings replaced."""
    folder = tmp_path / "svc"
    data = yaml.safe_load((IMAGED / "service.yaml").read_text())
    data.update(settings)
    (folder / "app").mkdir(parents=True)
    for name in ("__init__.py", "predict.py", "routes.py"):
        (folder / "app" / name).write_text((IMAGED / "app" / name).read_text())
    (folder / "service.yaml").write_text(yaml.safe_dump(data))
    return folder


def stages(dockerfile: str) -> list[str]:
    """The Dockerfile's stages, each from its FROM line on."""
    parts = dockerfile.split("\nFROM ")
    return ["FROM " + p if i else p for i, p in enumerate(parts)][1:]


def render(tmp_path: Path, options: BuildOptions | None = None, **settings: Any) -> str:
    return render_dockerfile(load_service(service(tmp_path, **settings)), options or BuildOptions())


@pytest.mark.parametrize(("settings", "options", "base"), [
    ({}, BuildOptions(), "python:3.11-slim"),
    ({"python": "3.12"}, BuildOptions(), "python:3.12-slim"),
    ({"target": "gpu"}, BuildOptions(), CUDA_IMAGES["12.4"]),
    ({"target": "gpu", "cuda": "11.8"}, BuildOptions(), CUDA_IMAGES["11.8"]),
    ({}, BuildOptions(target="gpu"), CUDA_IMAGES["12.4"]),
    ({"target": "gpu"}, BuildOptions(base_image="kiln-standin/bare:bookworm"),
     "kiln-standin/bare:bookworm"),
    ({}, BuildOptions(base_image="example/base:1"), "example/base:1"),
])
def test_base_image(tmp_path: Path, settings: dict[str, Any], options: BuildOptions,
                    base: str) -> None:
    config = load_service(service(tmp_path, **settings))
    assert base_image(config, options) == base
    assert render_dockerfile(config, options).count(f"FROM {base} AS system") == 1


@pytest.mark.parametrize("options", [
    BuildOptions(),
    BuildOptions(ca_bundle=Path("/x/ca.crt")),
    BuildOptions(index_url="https://user:secret@index.example/simple", ca_bundle=Path("/x")),
    BuildOptions(target="gpu", ca_bundle=Path("/x/ca.crt")),
])
def test_only_the_builder_stage_sees_the_index_and_the_bundle(tmp_path: Path,
                                                              options: BuildOptions) -> None:
    text = render(tmp_path, options)
    system, builder, final = stages(text)
    assert "AS builder" in builder
    for secret in ("ca.crt", "PIP_CERT", "PIP_INDEX_URL", "secret", "index.example"):
        assert secret not in system and secret not in final
    # the index URL is a build argument: its value is never written into the Dockerfile
    assert "secret" not in text
    assert ("ARG PIP_INDEX_URL" in builder) == bool(options.index_url)
    assert ("COPY kiln-build/ca.crt" in builder) == bool(options.ca_bundle)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_no_buildkit_syntax_and_layers_in_order(tmp_path: Path, target: str) -> None:
    text = render(tmp_path, BuildOptions(target=target, ca_bundle=Path("/x")),
                  system_packages=["libgomp1", "curl=7.88.1-10"])
    for buildkit in ("--chmod", "--mount", "<<", "# syntax", "--link"):
        assert buildkit not in text
    final = stages(text)[-1]
    order = ["COPY --from=builder /opt/venv", "COPY --from=builder /opt/kiln-root/",
             "COPY --chown=10001:0 service/", "USER 10001", "EXPOSE 8080", "HEALTHCHECK",
             "LABEL", 'CMD ["kiln", "serve", "/srv/service", "--host", "0.0.0.0"']
    positions = [final.index(item) for item in order]
    assert positions == sorted(positions)
    assert "RUN sh /tmp/kiln-system.sh 3.11 libgomp1 curl=7.88.1-10" in stages(text)[0]
    assert "urllib.request" in final and "/api/v1.0/health/status" in final


def test_labels(tmp_path: Path) -> None:
    text = render(tmp_path, BuildOptions(target="gpu"))
    for label in ('org.opencontainers.image.title="Image test service"',
                  'org.opencontainers.image.version="0.3.0"', 'kiln.id="imaged"',
                  'kiln.version="0.3.0"', 'kiln.target="gpu"', 'kiln.size="small"',
                  'kiln.packages.digest="sha256:'):
        assert label in text


@pytest.mark.parametrize(("settings", "message"), [
    ({"system_packages": ["ok", "rm -rf /"]}, "system_packages: 'rm -rf /' is not an apt package"),
    ({"packages": ["six\nflask"]}, "packages: 'six\\nflask' is not one requirement"),
])
def test_bad_package_names(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    config = load_service(service(tmp_path, **settings))
    with pytest.raises(BuildError, match="service.yaml: "):
        write_context(config, BuildOptions(), tmp_path / "ctx")
    with pytest.raises(BuildError) as err:
        write_context(config, BuildOptions(), tmp_path / "ctx2")
    assert message in str(err.value)


@pytest.mark.parametrize(("settings", "options", "tag"), [
    ({}, BuildOptions(), "imaged:0.3.0"),
    ({"target": "gpu"}, BuildOptions(), "imaged:0.3.0-gpu"),
    ({"version": "1.0+local"}, BuildOptions(), "imaged:1.0-local"),
])
def test_default_tag(tmp_path: Path, settings: dict[str, Any], options: BuildOptions,
                     tag: str) -> None:
    assert default_tag(load_service(service(tmp_path, **settings)), options) == tag


@pytest.mark.parametrize(("size", "line"), [
    ("small", "docker run --rm -p 127.0.0.1:8080:8080 --cpus 1 --memory 4g T"),
    ("large", "docker run --rm -p 127.0.0.1:8080:8080 --cpus 4 --memory 16g T"),
    ("gpu", "docker run --rm -p 127.0.0.1:8080:8080 --cpus 8 --memory 40g --gpus all T"),
])
def test_run_line(size: str, line: str) -> None:
    assert run_line("T", size) == line


def test_context(tmp_path: Path) -> None:
    folder = service(tmp_path, capture={"dir": "captures"})
    for junk in ("app/__pycache__/x.pyc", "tests/test_x.py", "captures/a.json", ".git/HEAD"):
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("junk")
    (folder / "app" / "predict.py").chmod(0o600)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    context = write_context(load_service(folder), BuildOptions(ca_bundle=ca), tmp_path / "ctx")
    names = sorted(p.relative_to(context.folder).as_posix()
                   for p in context.folder.rglob("*") if p.is_file())
    assert names == [".dockerignore", "Dockerfile", "kiln-build/ca.crt",
                     "kiln-build/constraints.txt", "kiln-build/requirements.txt",
                     f"kiln-build/runtime/{runtime_dist.wheel_name()}", "kiln-build/system.sh",
                     "service/app/__init__.py", "service/app/predict.py",
                     "service/app/routes.py", "service/service.yaml"]
    mode = stat.S_IMODE((context.folder / "service/app/predict.py").stat().st_mode)
    assert mode & 0o060 == 0o060  # group 0 gets what the owner has
    requirements = (context.folder / "kiln-build/requirements.txt").read_text().splitlines()
    assert requirements[1] == "six>=1.16"
    assert any(r.startswith("gunicorn") for r in requirements)
    assert not any(r.startswith(("docker", "cookiecutter")) for r in requirements)


def test_runtime_wheel_is_reproducible_and_complete(tmp_path: Path) -> None:
    first = runtime_dist.write_wheel(tmp_path / "a").read_bytes()
    second = runtime_dist.write_wheel(tmp_path / "b")
    assert second.read_bytes() == first
    with zipfile.ZipFile(second) as wheel:
        names = wheel.namelist()
        assert "runtime/server.py" in names and "runtime/cli.py" in names
        assert not any("__pycache__" in n for n in names)
        info = f"kiln-{runtime_dist.version()}.dist-info"
        assert "kiln = runtime.cli:main" in wheel.read(f"{info}/entry_points.txt").decode()
        record = wheel.read(f"{info}/RECORD").decode()
        assert all(n in record for n in names)


def test_dockerfile_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build", str(IMAGED), "--dockerfile-only", str(out),
                                      "--index-url", "https://index.example/simple"])
    assert result.exit_code == 0, result.output
    assert "docker build --build-arg PIP_INDEX_URL=... -t imaged:0.3.0" in result.output
    assert (out / "Dockerfile").read_text().startswith("# kiln cpu image of imaged 0.3.0")
    again = CliRunner().invoke(cli, ["build", str(IMAGED), "--dockerfile-only", str(out)])
    assert again.exit_code == 1
    assert "not empty" in again.output
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    onto_a_file = CliRunner().invoke(cli, ["build", str(IMAGED), "--dockerfile-only", str(a_file)])
    assert onto_a_file.exit_code == 1
    assert onto_a_file.output.strip().splitlines() == [
        f"Error: {a_file}: not a folder; --dockerfile-only writes into a new or empty folder"]


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "arm"], "'arm' is not one of 'cpu', 'gpu'"),
    (["--ca-bundle", "/no/such/ca.pem", "--dockerfile-only", "{out}"],
     "--ca-bundle: /no/such/ca.pem: not a file"),
    (["--tag", "BAD TAG::", "--dockerfile-only", "{out}"],
     "'BAD TAG::' is not an image reference"),
    (["--base-image", "bad image!!", "--dockerfile-only", "{out}"],
     "'bad image!!' is not an image reference"),
])
def test_build_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.format(out=tmp_path / "out") for a in args]
    result = CliRunner().invoke(cli, ["build", str(IMAGED), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists()


def test_deploy_refuses_an_image_that_is_not_a_reference(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["deploy", str(IMAGED), "--image", "BAD IMAGE::",
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "'BAD IMAGE::' is not an image reference" in result.output
    assert not (tmp_path / "out").exists()
    good = CliRunner().invoke(cli, ["deploy", str(IMAGED), "-o", str(tmp_path / "out"),
                                    "--image", "127.0.0.1:5000/team/imaged@sha256:" + "0" * 64])
    assert good.exit_code == 0, good.output


def test_build_refuses_a_bad_service_yaml_before_building(tmp_path: Path) -> None:
    folder = service(tmp_path, size="huge")
    result = CliRunner().invoke(cli, ["build", str(folder)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {folder}/service.yaml: size: 'huge' is not "
                                     f"allowed; allowed: small, large, gpu")


PIP_STEP = "Step 10/23 : RUN /opt/venv/bin/pip install -r /tmp/kiln/requirements.txt"
FAILED = "The command '/bin/sh -c /opt/venv/bin/pip ...' returned a non-zero code: 1"


@pytest.mark.parametrize(("lines", "message"), [
    (["\x1b[91mERROR: Could not find a version that satisfies the requirement nopkg\n",
      "\x1b[91mERROR: No matching distribution found for nopkg\n\x1b[0m"],
     ("build failed at step 10/23 (RUN /opt/venv/bin/pip install -r /tmp/kiln/requirements.txt):"
     " ERROR: No matching distribution found for nopkg")),
    ([("WARNING: Retrying ... SSLError(SSLCertVerificationError(1, '[SSL: "
      "CERTIFICATE_VERIFY_FAILED] certificate verify failed'))\n"),
      "ERROR: No matching distribution found for six\n"],
     ("found for six; TLS certificates were not trusted: pass the CA bundle of your network "
     "(proxy) with --ca-bundle FILE")),
    (["Collecting six\n"], ": Collecting six"),
    ([], f": {FAILED}"),
])
def test_a_failed_step_names_its_cause(lines: list[str], message: str) -> None:
    """The chunks are shaped as the legacy builder streams them (stderr in ANSI red)."""
    shown: list[str] = []
    progress = Progress(shown.append, quiet=True)
    for chunk in [{"stream": PIP_STEP + "\n"}, {"stream": " ---> Running in 865e87f23b7d\n"},
                  *({"stream": line} for line in lines)]:
        progress.feed(chunk)
    error = progress.failure({"error": FAILED, "errorDetail": {"code": 1, "message": FAILED}})
    assert str(error).endswith(message)
    assert shown[0] == PIP_STEP and shown[-1] == f"  {FAILED}"  # quiet still shows the step's log
    assert "Running in" not in "".join(shown)

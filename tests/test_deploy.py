"""`kiln deploy`: manifests from service.yaml, checked against the official Kubernetes schemas
(kubernetes-validate, one pinned version) and the typed Knative models; canary steps; Job."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from builder import manifests as m
from runtime.cli import cli
from runtime.config import parse_service
from runtime.errors import ConfigError
from runtime.serving.lifecycle import VERSION_HEADER
from runtime.testing import make_app
from tests.support import SERVICES

#: The Kubernetes release whose schemas the manifests must satisfy.
KUBERNETES = "1.33"
IMAGE_A = "registry.example.com/team/x@sha256:" + "a" * 64
IMAGE_B = "registry.example.com/team/x@sha256:" + "b" * 64


def scaffold(tmp_path: Path, *extra: str, deploy: dict[str, Any] | None = None) -> Path:
    result = CliRunner().invoke(cli, ["new-service", "x", "-o", str(tmp_path), "--no-input",
                                      *extra])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "x"
    if deploy is not None:
        with (folder / "service.yaml").open("a") as file:
            file.write(yaml.safe_dump({"deploy": deploy}))
    return folder


def set_version(folder: Path, version: str) -> None:
    text = (folder / "service.yaml").read_text()
    data = yaml.safe_load(text)
    (folder / "service.yaml").write_text(text.replace(f"version: \"{data['version']}\"",
                                                      f"version: \"{version}\""))
    assert yaml.safe_load((folder / "service.yaml").read_text())["version"] == version


def kiln_deploy(folder: Path, out: Path, *args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(cli, ["deploy", str(folder), "-o", str(out), *args])
    if ok:
        assert result.exit_code == 0, result.output
    return result.output


def manifests(out: Path) -> dict[str, dict[str, Any]]:
    """Every manifest in OUT by file name, each checked for what its kind needs."""
    found = {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))}
    for name, doc in found.items():
        assert (out / name).read_text().startswith("# Written by `kiln deploy`")
        if doc["kind"] == "Service" and doc["apiVersion"] == "serving.knative.dev/v1":
            check_knative(doc)
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            check_selectors(doc)
    return found


def check_selectors(doc: dict[str, Any]) -> None:
    """kubernetes-validate lets `selector: null` through: selectors must match the pods."""
    spec = doc["spec"]
    if doc["kind"] == "Deployment":
        selector = spec["selector"]["matchLabels"]
        assert selector and selector.items() <= spec["template"]["metadata"]["labels"].items()
    if doc["kind"] in ("Service", "PodDisruptionBudget"):
        selector = spec["selector"] if doc["kind"] == "Service" else spec["selector"]["matchLabels"]
        assert selector == {m.NAME_LABEL: doc["metadata"]["name"]}


def check_knative(doc: dict[str, Any]) -> None:
    """Valid for the typed Knative models, and every key of ours known to them."""
    from cloudcoil.models.knative_serving.serving.v1 import Service

    # strict: pydantic's lax mode turns the quantity "1" into an int its pattern cannot check.
    model = Service.model_validate(doc, strict=True)
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert_within(doc, dumped)


def assert_within(given: Any, dumped: Any, path: str = "") -> None:
    """Every key and value of GIVEN is in DUMPED (pydantic drops unknown keys silently)."""
    if isinstance(given, dict):
        for key, value in given.items():
            assert key in dumped, f"{path}.{key} is unknown to the Knative models"
            assert_within(value, dumped[key], f"{path}.{key}")
    elif isinstance(given, list):
        assert len(given) == len(dumped), path
        for i, (a, b) in enumerate(zip(given, dumped)):
            assert_within(a, b, f"{path}[{i}]")
    else:
        assert given == dumped, path


def pod(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"])


def test_the_scaffolded_service_gets_valid_kubernetes_manifests(tmp_path: Path) -> None:
    folder = scaffold(tmp_path)
    output = kiln_deploy(folder, tmp_path / "out")
    found = manifests(tmp_path / "out")
    assert set(found) == {"x.deployment.yaml", "x.service.yaml", "x.hpa.yaml", "x.pdb.yaml"}
    assert "Note: no deploy.registry in service.yaml and no --image" in output
    assert f"Apply: kubectl apply -f {tmp_path / 'out'}" in output
    spec = pod(found["x.deployment.yaml"])
    main = spec["containers"][0]
    assert main["image"] == "x:0.1.0"
    assert main["startupProbe"]["httpGet"] == {"path": "/api/v1.0/health/startup", "port": "http"}
    assert main["startupProbe"]["periodSeconds"] * main["startupProbe"]["failureThreshold"] >= 300
    assert main["readinessProbe"]["httpGet"]["path"] == "/api/v1.0/health/status"
    assert main["livenessProbe"]["httpGet"]["path"] == "/api/v1.0/health/live"
    assert main["resources"]["limits"] == {"cpu": "1", "memory": "4Gi"}
    assert main["resources"]["requests"] == main["resources"]["limits"]
    security = main["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    mounts = {v["mountPath"] for v in main["volumeMounts"]}
    assert mounts == {"/tmp", "/dev/shm"}
    assert {v["name"]: v["emptyDir"].get("medium") for v in spec["volumes"]} == {
        "tmp": None, "shm": "Memory"}
    assert spec["terminationGracePeriodSeconds"] > 30  # gunicorn's graceful_timeout
    annotations = found["x.deployment.yaml"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                           "prometheus.io/path": "/metrics"}
    hpa = found["x.hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "envFrom" not in main and "imagePullSecrets" not in spec


def test_deploy_settings_reach_the_manifests(tmp_path: Path) -> None:
    folder = scaffold(tmp_path, deploy={
        "registry": "registry.example.com/team", "namespace": "models",
        "replicas": {"min": 2, "max": 6}, "target": {"cpu_percent": 55},
        "secrets": ["x-auth"], "image_pull_secrets": ["regcred"]})
    with (folder / "service.yaml").open("a") as file:
        file.write("capture:\n  dir: captures\n")
    kiln_deploy(folder, tmp_path / "out")
    found = manifests(tmp_path / "out")
    assert {d["metadata"]["namespace"] for d in found.values()} == {"models"}
    spec = pod(found["x.deployment.yaml"])
    main = spec["containers"][0]
    assert main["image"] == "registry.example.com/team/x:0.1.0"
    assert main["envFrom"] == [{"secretRef": {"name": "x-auth"}}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert {"name": "KILN_CAPTURE_DIR", "value": m.CAPTURES} in main["env"]
    assert not any(e["name"].startswith("KILN_AUTH") for e in main["env"])
    hpa = found["x.hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 55


def test_replicas_with_min_alone_keep_the_default_max(tmp_path: Path) -> None:
    folder = scaffold(tmp_path, deploy={"replicas": {"min": 2}})  # max stays 3, not 1
    kiln_deploy(folder, tmp_path / "out")
    hpa = manifests(tmp_path / "out")["x.hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 3)


def test_a_gpu_service_asks_for_a_gpu_and_tolerates_gpu_nodes(tmp_path: Path) -> None:
    folder = scaffold(tmp_path, "--target", "gpu", "size=gpu")
    kiln_deploy(folder, tmp_path / "out", "--image", IMAGE_A)
    spec = pod(manifests(tmp_path / "out")["x.deployment.yaml"])
    assert spec["containers"][0]["resources"]["limits"] == {
        "cpu": "8", "memory": "40Gi", "nvidia.com/gpu": "1"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    kiln_deploy(folder, tmp_path / "kn", "--format", "knative", "--image", IMAGE_A)
    knative = manifests(tmp_path / "kn")["x.knative.yaml"]
    assert pod(knative)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_knative_service_scales_to_zero_with_a_named_revision(tmp_path: Path) -> None:
    folder = scaffold(tmp_path, deploy={"replicas": {"min": 0, "max": 5},
                                        "target": {"concurrency": 4}})
    kiln_deploy(folder, tmp_path / "out", "--format", "knative", "--image", IMAGE_A)
    doc = manifests(tmp_path / "out")["x.knative.yaml"]
    template = doc["spec"]["template"]
    assert template["metadata"]["name"] == "x-0-1-0"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "5"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "4"
    assert doc["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    output = kiln_deploy(folder, tmp_path / "k8s", ok=False)
    assert "deploy.replicas.min: 0 (scale to zero) needs --format knative" in output


def test_knative_canary_promote_and_rollback(tmp_path: Path) -> None:
    folder, out = scaffold(tmp_path), tmp_path / "out"
    kiln_deploy(folder, out, "--format", "knative", "--image", IMAGE_A)
    set_version(folder, "0.2.0")
    output = kiln_deploy(folder, out, "--format", "knative", "--image", IMAGE_B, "--canary", "10")
    assert "canary revision x-0-2-0: 10% of requests, 90% stay on x-0-1-0" in output
    doc = manifests(out)["x.knative.yaml"]
    assert doc["spec"]["traffic"] == [
        {"revisionName": "x-0-1-0", "percent": 90, "tag": "stable"},
        {"revisionName": "x-0-2-0", "percent": 10, "tag": "canary"}]
    assert doc["spec"]["template"]["metadata"]["name"] == "x-0-2-0"

    kiln_deploy(folder, out, "--format", "knative", "--image", IMAGE_B, "--rollback")
    doc = manifests(out)["x.knative.yaml"]
    assert doc["spec"]["traffic"] == [{"revisionName": "x-0-1-0", "percent": 100}]
    assert "annotations" not in doc["metadata"]

    kiln_deploy(folder, out, "--format", "knative", "--image", IMAGE_B, "--canary", "25")
    kiln_deploy(folder, out, "--format", "knative", "--image", IMAGE_B, "--promote")
    doc = manifests(out)["x.knative.yaml"]
    assert doc["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    assert doc["spec"]["template"]["metadata"]["name"] == "x-0-2-0"


def test_knative_refuses_a_changed_revision_under_the_same_version(tmp_path: Path) -> None:
    folder, out = scaffold(tmp_path), tmp_path / "out"
    kiln_deploy(folder, out, "--format", "knative", "--image", IMAGE_A)
    output = kiln_deploy(folder, out, "--format", "knative", "--image", IMAGE_B, ok=False)
    assert output.splitlines()[-1] == (
        "Error: revision x-0-1-0 exists with another pod spec (image or settings), and Knative "
        "revisions cannot change: raise version in service.yaml")


def test_kubernetes_canary_promote_and_rollback(tmp_path: Path) -> None:
    folder, out = scaffold(tmp_path, deploy={"replicas": {"min": 3, "max": 6}}), tmp_path / "out"
    kiln_deploy(folder, out, "--image", IMAGE_A)
    output = kiln_deploy(folder, out, "--image", IMAGE_B, "--canary", "25")
    found = manifests(out)
    stable, canary = found["x.deployment.yaml"], found["x-canary.deployment.yaml"]
    assert pod(stable)["containers"][0]["image"] == IMAGE_A
    assert pod(canary)["containers"][0]["image"] == IMAGE_B
    assert canary["spec"]["replicas"] == 1 and stable["spec"]["replicas"] == 3
    assert canary["metadata"]["annotations"]["kiln.dev/canary-percent"] == "25"
    assert "1 of 4 (about 25%" in canary["metadata"]["annotations"]["kiln.dev/canary-note"]
    assert "the Service splits by pods, 1 of 4" in output
    service = found["x.service.yaml"]["spec"]["selector"]
    for deployment in (stable, canary):  # one Service in front of both tracks
        assert service.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert stable["spec"]["selector"] != canary["spec"]["selector"]

    output = kiln_deploy(folder, out, "--rollback")
    found = manifests(out)
    assert "x-canary.deployment.yaml" not in found
    assert pod(found["x.deployment.yaml"])["containers"][0]["image"] == IMAGE_A
    assert "kubectl delete deployment x-canary" in output

    kiln_deploy(folder, out, "--image", IMAGE_B, "--canary", "10")
    kiln_deploy(folder, out, "--promote")
    found = manifests(out)
    assert "x-canary.deployment.yaml" not in found
    assert pod(found["x.deployment.yaml"])["containers"][0]["image"] == IMAGE_B


@pytest.mark.parametrize(("args", "message"), [
    (["--canary", "10"], ("Error: --canary needs the version deployed now: no {out}/x.deployment"
                         ".yaml; run kiln deploy without --canary first (or give the -o folder "
                         "of the last run)")),
    (["--promote"], "Error: --promote: there is no canary in {out} (no x-canary.deployment.yaml)"),
    (["--canary", "100"], "Error: --canary: 100 must be a percentage from 1 to 99"),
    (["--canary", "5", "--rollback"], ("Error: --canary and --rollback: give one of --canary, "
                                      "--promote, --rollback")),
])
def test_canary_steps_that_cannot_work(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    output = kiln_deploy(scaffold(tmp_path), out, *args, ok=False)
    assert output.splitlines()[-1] == message.format(out=out)


def test_batch_writes_an_indexed_job_over_kiln_batch_shards(tmp_path: Path) -> None:
    folder = scaffold(tmp_path)
    kiln_deploy(folder, tmp_path / "out", "--batch", "--shards", "4", "--input",
                "rows/in.parquet", "--image", IMAGE_A)
    job = manifests(tmp_path / "out")["x.job.yaml"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 3)
    main = pod(job)["containers"][0]
    assert main["command"] == [
        "kiln", "batch", "/srv/service", "--input", "/data/rows/in.parquet",
        "--output", "/data/rows/in.predictions.part-$(JOB_COMPLETION_INDEX).parquet",
        "--shard", "$(JOB_COMPLETION_INDEX)/4"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "x-data"}} in pod(job)["volumes"]
    # The runtime's group may write to a new (root-owned) claim.
    assert pod(job)["securityContext"]["fsGroup"] == main["securityContext"]["runAsGroup"] == 0


@pytest.mark.parametrize(("deploy", "message"), [
    ({"replicas": {"min": 3, "max": 2}}, "deploy.replicas.max: must be at least min (3), got 2"),
    ({"replicas": {"min": -1}}, ("deploy.replicas.min: must be a whole number of at least 0, "
                                "got -1")),
    ({"replicas": {"least": 1}}, ("deploy.replicas.least: unknown key; allowed in replicas: "
                                 "min, max")),
    ({"target": {"cpu_percent": 120}}, "deploy.target.cpu_percent: must be 1 to 100, got 120"),
    ({"target": {"concurrency": 0}}, ("deploy.target.concurrency: must be a whole number of at "
                                     "least 1, got 0")),
    ({"registry": "https://r.example.com"}, ("deploy.registry: 'https://r.example.com' is not "
     "HOST[:PORT][/NAMESPACE], e.g. registry.example.com/team (no scheme, no tag)")),
    ({"namespace": "Models"}, ("deploy.namespace: 'Models' is not a Kubernetes namespace: at "
                              "most 63 characters of a-z, 0-9 and '-'")),
    ({"secrets": ["KILN_AUTH"]}, ("deploy.secrets: 'KILN_AUTH' is not a Kubernetes object name: "
     "a-z, 0-9, '-' and '.', starting and ending with a letter or digit")),
    ({"image_pull_secrets": "regcred"}, "deploy.image_pull_secrets: must be a list, got 'regcred'"),
    ({"cluster": "x"}, ("deploy.cluster: unknown key; allowed in deploy: registry, namespace, "
                       "replicas, target, secrets, image_pull_secrets")),
])
def test_bad_deploy_settings_are_one_line(deploy: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_service({"id": "x", "deploy": deploy})
    assert str(caught.value) == f"service.yaml: {message}"


@pytest.mark.parametrize(("version", "revision"), [
    ("0.1.0", "x-0-1-0"), ("1.0.0+Build.7", "x-1-0-0-build-7"), ("2024.10.1rc1", "x-2024-10-1rc1"),
])
def test_revision_names(version: str, revision: str) -> None:
    assert m.revision_name("x", version) == revision


def test_every_response_carries_the_service_version() -> None:
    client = make_app(SERVICES / "imaged").test_client()
    assert client.get("/api/v1.0/health/live").headers[VERSION_HEADER] == "0.3.0"
    assert client.get("/nowhere").headers[VERSION_HEADER] == "0.3.0"


@pytest.mark.parametrize(("image", "registry", "pushed"), [
    ("x:0.1.0", "127.0.0.1:5000/team", ("127.0.0.1:5000/team/x", "0.1.0")),
    ("kiln-test/imaged:abc", "r.example.com/ml/", ("r.example.com/ml/imaged", "abc")),
    ("localhost:5000/a/b", "r.example.com", ("r.example.com/b", "latest")),
    ("localhost:5000/a/b@sha256:" + "0" * 64, "r.example.com", ("r.example.com/b", "latest")),
    ("a/b:1.0@sha256:" + "0" * 64, "r.example.com", ("r.example.com/b", "1.0")),
])
def test_push_reference(image: str, registry: str, pushed: tuple[str, str]) -> None:
    from builder.push import target_reference

    assert target_reference(image, registry) == pushed


@pytest.mark.parametrize("image", ["sha256:" + "0" * 64, "@sha256:" + "0" * 64])
def test_push_of_an_image_id_asks_for_a_name(image: str) -> None:
    from builder.errors import PushError
    from builder.push import target_reference

    with pytest.raises(PushError, match="give the image's name"):
        target_reference(image, "r.example.com")


def test_push_without_a_registry_says_where_to_give_one(tmp_path: Path) -> None:
    folder = scaffold(tmp_path)
    result = CliRunner().invoke(cli, ["push", str(folder)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: no registry to push x:0.1.0 to: give --registry or deploy.registry in "
        f"{folder / 'service.yaml'}, e.g. registry.example.com/team")

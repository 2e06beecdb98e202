"""Kubernetes and Knative manifests of a service, as plain dicts built from its service.yaml.

Nothing here reads or writes files: builder/deploy.py decides what to write (canary state
included) and writes these dicts as YAML; builder/rehearse.py runs their pod spec locally.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from builder.dockerfile import PORT
from runtime.config import REPLICAS_DEFAULT, SIZES, ServiceConfig

HEALTH = "/api/v1.0/health"
#: Where the runtime writes in a container (images/cpu.Dockerfile: HOME=/tmp; gunicorn's
#: worker_tmp_dir and the Prometheus multiprocess folder live on /dev/shm): writable
#: emptyDirs over a read-only root filesystem.
SCRATCH = {"tmp": "/tmp", "shm": "/dev/shm"}
CAPTURES = "/var/lib/kiln/captures"
#: The image's user (images/cpu.Dockerfile USER 10001, files owned by group 0).
USER_ID, GROUP_ID = 10001, 0
#: gunicorn waits graceful_timeout (30 s, runtime/serving/settings.py) for busy workers after
#: SIGTERM; the pod gets longer before the kubelet sends SIGKILL.
GRACE_SECONDS = 45
#: The startup probe allows load() STARTUP_PERIOD * STARTUP_FAILURES seconds (10 minutes).
STARTUP_PERIOD, STARTUP_FAILURES = 2, 300
CONTAINER = "service"
NAME_LABEL = "app.kubernetes.io/name"
TRACK_LABEL = "kiln.dev/track"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Workload:
    """What the manifests of one service are made from: service.yaml and the image to run."""

    id: str
    version: str
    size: str
    image: str
    namespace: str | None
    replicas_min: int
    replicas_max: int
    cpu_percent: int
    concurrency: int | None
    secrets: tuple[str, ...]
    pull_secrets: tuple[str, ...]
    predict_timeout: float
    capture: bool

    @classmethod
    def of(cls, config: ServiceConfig, image: str) -> Workload:
        replicas = {**REPLICAS_DEFAULT, **config.get("deploy.replicas")}
        target = {"cpu_percent": 70, **config.get("deploy.target")}
        return cls(id=config.id, version=config.version, size=config.get("size"), image=image,
                   namespace=config.get("deploy.namespace"),
                   replicas_min=replicas["min"], replicas_max=replicas["max"],
                   cpu_percent=target["cpu_percent"], concurrency=target.get("concurrency"),
                   secrets=tuple(config.get("deploy.secrets")),
                   pull_secrets=tuple(config.get("deploy.image_pull_secrets")),
                   predict_timeout=float(config.get("predict.timeout")),
                   capture=config.enabled("capture"))


def label_value(text: str) -> str:
    """TEXT as a Kubernetes label value: 63 characters of [A-Za-z0-9._-], alphanumeric ends."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("._-") or "unknown"


def revision_name(service_id: str, version: str) -> str:
    """The Knative revision of VERSION: `<id>-<version>`, a DNS label (0.1.0 -> <id>-0-1-0)."""
    suffix = re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-") or "0"
    return f"{service_id}-{suffix}"[:63].rstrip("-")


def labels(w: Workload, track: str | None = None) -> dict[str, str]:
    out = {NAME_LABEL: w.id, "app.kubernetes.io/version": label_value(w.version),
           "app.kubernetes.io/managed-by": "kiln"}
    if track:
        out[TRACK_LABEL] = track
    return out


def metadata(w: Workload, name: str, track: str | None = None,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "labels": labels(w, track)}
    if w.namespace:
        out["namespace"] = w.namespace
    if annotations:
        out["annotations"] = annotations
    return out


def resources(size: str) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS): the CPUs, memory and GPU of SIZE.

    Quantities are strings ("1", "4Gi"), as Kubernetes prints them back.
    """
    cpus, memory_gb, gpus = SIZES[size]
    amounts = {"cpu": f"{cpus:g}", "memory": f"{memory_gb}Gi"}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _probe(route: str, period: int, failures: int, port: int | str) -> dict[str, Any]:
    return {"httpGet": {"path": f"{HEALTH}/{route}", "port": port}, "periodSeconds": period,
            "timeoutSeconds": min(period, 5), "failureThreshold": failures}


def probes(w: Workload, port: int | str = "http") -> dict[str, dict[str, Any]]:
    """startup until load() finished (up to 10 minutes), then readiness and liveness.

    Liveness allows longer than one prediction: a sync worker busy with a long predict() does
    not answer /live until it is done, and must not be restarted for it.
    """
    live_failures = max(3, math.ceil((w.predict_timeout + 10) / 10))
    return {"startupProbe": _probe("startup", STARTUP_PERIOD, STARTUP_FAILURES, port),
            "readinessProbe": _probe("status", 5, 3, port),
            "livenessProbe": _probe("live", 10, live_failures, port)}


def container(w: Workload, knative: bool = False, image: str | None = None) -> dict[str, Any]:
    """The service's container: probes, resources, secrets as env, read-only root."""
    mounts = [{"name": name, "mountPath": path} for name, path in SCRATCH.items()]
    env: list[dict[str, Any]] = []
    if w.capture:
        mounts.append({"name": "captures", "mountPath": CAPTURES})
        env.append({"name": "KILN_CAPTURE_DIR", "value": CAPTURES})
    # Knative allows one port, named http1 or h2c or not at all, and probes on it by number.
    port: dict[str, Any] = {"containerPort": PORT, "protocol": "TCP"}
    if not knative:
        port["name"] = "http"
    out: dict[str, Any] = {
        "name": CONTAINER,
        "image": image or w.image,
        "ports": [port],
        "resources": resources(w.size),
        **probes(w, PORT if knative else "http"),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": GROUP_ID,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if env:
        out["env"] = env
    if w.secrets:
        out["envFrom"] = [{"secretRef": {"name": name}} for name in w.secrets]
    return out


def volumes(w: Workload) -> list[dict[str, Any]]:
    """emptyDirs for the scratch folders; /dev/shm in memory, as the runtime expects tmpfs."""
    out: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
    ]
    if w.capture:
        out.append({"name": "captures", "emptyDir": {}})
    return out


def pod_spec(w: Workload, knative: bool = False, image: str | None = None) -> dict[str, Any]:
    """The pod: one container, non-root, scratch volumes, pull secrets, the GPU toleration."""
    out: dict[str, Any] = {
        "containers": [container(w, knative, image)],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": volumes(w),
    }
    if not knative:  # Knative sets the grace period from the revision's timeoutSeconds
        out["terminationGracePeriodSeconds"] = GRACE_SECONDS
    if w.pull_secrets:
        out["imagePullSecrets"] = [{"name": name} for name in w.pull_secrets]
    if SIZES[w.size][2]:
        out["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists",
                               "effect": "NoSchedule"}]
    return out


def scrape_annotations() -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
            "prometheus.io/path": "/metrics"}


# -- Kubernetes -------------------------------------------------------------------------------

def deployment(w: Workload, track: str = "stable", replicas: int | None = None,
               image: str | None = None, annotations: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """The Deployment of one track: `<id>` (stable) or `<id>-canary`, both behind one Service.

    Each track selects its own pods (overlapping Deployment selectors fight over pods); the
    Service selects both.
    """
    name = w.id if track == "stable" else f"{w.id}-{track}"
    spec: dict[str, Any] = {
        "replicas": max(1, w.replicas_min) if replicas is None else replicas,
        "selector": {"matchLabels": {NAME_LABEL: w.id, TRACK_LABEL: track}},
        "strategy": {"type": "RollingUpdate",
                     "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": labels(w, track),
                                  "annotations": scrape_annotations()},
                     "spec": pod_spec(w, image=image)},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata(w, name, track, annotations), "spec": spec}


def service(w: Workload) -> dict[str, Any]:
    """A ClusterIP Service on port 80 in front of every track's pods."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(w, w.id),
            "spec": {"type": "ClusterIP", "selector": {NAME_LABEL: w.id},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http",
                                "protocol": "TCP"}]}}


def autoscaler(w: Workload) -> dict[str, Any]:
    """autoscaling/v2 HorizontalPodAutoscaler of the stable Deployment on CPU use."""
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(w, w.id),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": w.id},
                     "minReplicas": max(1, w.replicas_min), "maxReplicas": w.replicas_max,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": w.cpu_percent}}}]}}


def disruption_budget(w: Workload) -> dict[str, Any]:
    """At most one pod down at a time on a node drain (minAvailable would block a lone pod)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(w, w.id),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {NAME_LABEL: w.id}}}}


def canary_replicas(stable: int, percent: int) -> int:
    """Pods of the canary so that its share of all pods comes closest to PERCENT (at least 1)."""
    return max(1, round(stable * percent / (100 - percent)))


def canary_note(stable: int, canary: int, percent: int) -> str:
    share = 100 * canary / (stable + canary)
    return (f"asked {percent}%: the Service splits by pods, {canary} of {stable + canary} "
            f"(about {share:.0f}%, more while the stable track scales up); "
            f"--format knative splits by percent")


# -- Knative ----------------------------------------------------------------------------------

def knative_service(w: Workload, traffic: list[dict[str, Any]],
                    annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A serving.knative.dev/v1 Service whose template is the named revision of this version."""
    scale = {"autoscaling.knative.dev/min-scale": str(w.replicas_min),
             "autoscaling.knative.dev/max-scale": str(w.replicas_max)}
    if w.concurrency:
        scale["autoscaling.knative.dev/target"] = str(w.concurrency)
    # Knative's request timeout: one prediction plus the time to queue for a worker.
    timeout = min(600, math.ceil(w.predict_timeout) + 30)
    template = {
        "metadata": {"name": revision_name(w.id, w.version), "labels": labels(w),
                     "annotations": {**scale, **scrape_annotations()}},
        "spec": {**pod_spec(w, knative=True), "timeoutSeconds": timeout},
    }
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": metadata(w, w.id, annotations=annotations),
            "spec": {"template": template, "traffic": traffic}}


def all_traffic_to_latest() -> list[dict[str, Any]]:
    return [{"latestRevision": True, "percent": 100}]


def canary_traffic(previous: str, new: str, percent: int) -> list[dict[str, Any]]:
    """PERCENT to the new revision (tagged canary), the rest to the previous one."""
    return [{"revisionName": previous, "percent": 100 - percent, "tag": "stable"},
            {"revisionName": new, "percent": percent, "tag": "canary"}]


# -- Batch ------------------------------------------------------------------------------------

DATA = "/data"


def batch_job(w: Workload, shards: int, parallelism: int, input_path: str,
              claim: str) -> dict[str, Any]:
    """An Indexed Job: pod I runs `kiln batch --shard I/N` over INPUT on the claim at /data.

    Each shard writes its own file beside the input: <name>.predictions.part-<I><ext>.
    """
    folder, _, file_name = input_path.strip("/").rpartition("/")
    name, dot, ext = file_name.rpartition(".")
    stem, ext = (name, f".{ext}") if dot else (ext, "")
    where = f"{DATA}/{folder}/" if folder else f"{DATA}/"
    index = "$(JOB_COMPLETION_INDEX)"
    spec = pod_spec(w)
    spec["restartPolicy"] = "Never"
    main = spec["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        del main[probe]
    del main["ports"]
    main["command"] = ["kiln", "batch", "/srv/service",
                       "--input", f"{where}{file_name}",
                       "--output", f"{where}{stem}.predictions.part-{index}{ext}",
                       "--shard", f"{index}/{shards}"]
    # Set by the Job controller too; declared here so that $(...) in command always expands.
    main["env"] = [*main.get("env", []), {"name": "JOB_COMPLETION_INDEX", "valueFrom": {
        "fieldRef": {"fieldPath":
                     "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    main["volumeMounts"].append({"name": "data", "mountPath": DATA})
    spec["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
    # A new claim is root's: the kubelet gives its group (the runtime's, 0) write access.
    spec["securityContext"] = {**spec["securityContext"], "fsGroup": GROUP_ID,
                               "fsGroupChangePolicy": "OnRootMismatch"}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": metadata(w, f"{w.id}-batch"),
            "spec": {"completionMode": "Indexed", "completions": shards,
                     "parallelism": min(parallelism, shards), "backoffLimitPerIndex": 2,
                     "maxFailedIndexes": 0,
                     "template": {"metadata": {"labels": labels(w, "batch")}, "spec": spec}}}

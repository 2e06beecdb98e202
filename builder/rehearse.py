"""`kiln deploy --rehearse`: run a written pod spec on the local Docker engine, as a kubelet would.

Each container runs with the spec's image, command, env (placeholders for secret values),
user, read-only root (tmpfs for its emptyDirs), CPU and memory limits, and its ports on
127.0.0.1. The startup probe is tried until it passes or reaches its failureThreshold, then
readiness and liveness; then SIGTERM, and the container must exit within the grace period.
The first step that fails stops the rehearsal with its reason; the container is removed
in every case.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from builder.build import docker_client
from builder.errors import DeployError

Echo = Callable[[str], None]
PLACEHOLDER = "kiln-rehearsal-placeholder"
#: Kubernetes' default when a pod spec names no grace period.
DEFAULT_GRACE = 30
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def cpus(quantity: str | float) -> float:
    """A Kubernetes CPU quantity ("1", "500m", 2) in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity ("4Gi", "512M", 1024) in bytes."""
    found = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    if not found or found.group(2) not in _UNITS:
        raise DeployError(f"memory {quantity!r} is not a quantity this rehearsal understands")
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def pod_spec_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment, Job or Knative Service manifest."""
    try:
        return dict(manifest["spec"]["template"]["spec"])
    except (KeyError, TypeError) as err:
        raise DeployError(f"{manifest.get('kind')} has no spec.template.spec to rehearse") from err


def run_kwargs(pod: dict[str, Any], spec: dict[str, Any], host_cpus: int) -> dict[str, Any]:
    """docker SDK `containers.create` arguments for container SPEC of POD."""
    pod_security = pod.get("securityContext") or {}
    security = {**pod_security, **(spec.get("securityContext") or {})}
    env = {}
    for item in spec.get("env") or []:
        env[item["name"]] = item.get("value", PLACEHOLDER)
    kwargs: dict[str, Any] = {"environment": env, "detach": True,
                              "labels": {"kiln.rehearse": spec.get("image", "")}}
    if spec.get("command"):
        kwargs["entrypoint"] = spec["command"]
    if spec.get("args"):
        kwargs["command"] = spec["args"]
    if security.get("runAsUser") is not None:
        group = security.get("runAsGroup")
        kwargs["user"] = f"{security['runAsUser']}" + (f":{group}" if group is not None else "")
    if pod_security.get("fsGroup") is not None:  # the pod's supplemental group, as on a node
        kwargs["group_add"] = [str(pod_security["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        kwargs["read_only"] = True
    if security.get("allowPrivilegeEscalation") is False:
        kwargs["security_opt"] = ["no-new-privileges"]
    drop = (security.get("capabilities") or {}).get("drop")
    if drop:
        kwargs["cap_drop"] = drop
    empty = {v["name"]: v["emptyDir"] for v in pod.get("volumes") or [] if "emptyDir" in v}
    tmpfs = {}
    for mount in spec.get("volumeMounts") or []:
        if mount["name"] in empty:
            size = empty[mount["name"]].get("sizeLimit")
            options = "rw,mode=1777" + (f",size={memory_bytes(size)}" if size else "")
            tmpfs[mount["mountPath"]] = options
    if tmpfs:
        kwargs["tmpfs"] = tmpfs
    limits = (spec.get("resources") or {}).get("limits") or {}
    if "cpu" in limits:
        kwargs["nano_cpus"] = int(min(cpus(limits["cpu"]), host_cpus) * 1e9)
    if "memory" in limits:
        kwargs["mem_limit"] = memory_bytes(limits["memory"])
    if limits.get("nvidia.com/gpu"):
        from docker.types import DeviceRequest

        kwargs["device_requests"] = [DeviceRequest(count=int(limits["nvidia.com/gpu"]),
                                                   capabilities=[["gpu"]])]
    kwargs["ports"] = {f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}":
                       ("127.0.0.1", None) for p in spec.get("ports") or []}
    return kwargs


@dataclass
class Probe:
    """One probe of a container: what it asks, how often, how many failures it takes."""

    kind: str
    path: str
    port: int
    period: int
    timeout: int
    failures: int
    delay: int

    @classmethod
    def of(cls, kind: str, probe: dict[str, Any], spec: dict[str, Any]) -> Probe:
        get = probe.get("httpGet")
        if not get:
            raise DeployError(f"{kind} probe: only httpGet probes can be rehearsed")
        port = get.get("port", (spec.get("ports") or [{}])[0].get("containerPort"))
        if isinstance(port, str):  # a named port
            port = next(p["containerPort"] for p in spec.get("ports") or []
                        if p.get("name") == port)
        return cls(kind, get.get("path", "/"), int(port), int(probe.get("periodSeconds", 10)),
                   int(probe.get("timeoutSeconds", 1)), int(probe.get("failureThreshold", 3)),
                   int(probe.get("initialDelaySeconds", 0)))


class Rehearsal:
    """One container of a pod spec running on the engine, with its probes."""

    def __init__(self, client: Any, container: Any, echo: Echo):
        self.client, self.container, self.echo = client, container, echo

    def host_port(self, port: int) -> int:
        """The host port PORT is published on, as of the last `alive()`."""
        bound = (self.container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
        if not bound:
            raise DeployError(f"port {port} is not published: the pod spec does not declare it")
        return int(bound[0]["HostPort"])

    def ask(self, probe: Probe) -> tuple[bool, str]:
        """One try of PROBE, after `alive()`: (passed, what it answered)."""
        url = f"http://127.0.0.1:{self.host_port(probe.port)}{probe.path}"
        try:
            answer = requests.get(url, timeout=probe.timeout)
        except requests.RequestException as err:
            return False, f"no answer ({type(err).__name__})"
        said = answer.status_code
        try:
            body = answer.json()
            reason = body.get("reason") if isinstance(body, dict) else None
        except ValueError:
            reason = None
        return 200 <= said < 400, f"{said}" + (f": {reason}" if reason else "")

    def alive(self) -> None:
        """Raise when the container has exited; else refresh what the engine says of it."""
        self.container.reload()
        if self.container.status not in ("created", "running"):
            code = self.container.attrs["State"].get("ExitCode")
            raise DeployError(f"the container exited by itself with code {code}")

    def logs(self, lines: int = 20) -> str:
        return str(self.container.logs(tail=lines).decode("utf-8", errors="replace")).rstrip()

    def probe(self, probe: Probe, tries: int) -> None:
        """Try PROBE up to TRIES times, PERIOD seconds apart; raise on the last failure."""
        if probe.delay:
            time.sleep(probe.delay)
        said = ""
        for attempt in range(1, tries + 1):
            self.alive()
            passed, said = self.ask(probe)
            if passed:
                self.echo(f"  {probe.kind} probe GET {probe.path}: {said} "
                          f"(try {attempt} of {tries})")
                return
            if attempt < tries:
                time.sleep(probe.period)
        raise DeployError(f"{probe.kind} probe GET {probe.path} failed {tries} times, "
                          f"{probe.period} s apart; last answer {said}")

    def stop(self, grace: int) -> None:
        """SIGTERM, then the container must exit within GRACE seconds."""
        self.container.kill(signal="SIGTERM")
        try:
            code = self.container.wait(timeout=grace).get("StatusCode")
        except requests.RequestException as err:
            raise DeployError(f"SIGTERM: the container did not exit within "
                              f"terminationGracePeriodSeconds ({grace} s)") from err
        self.echo(f"  SIGTERM: exited with code {code} within the {grace} s grace period")


def rehearse(manifest: dict[str, Any], echo: Echo = print, data: Path | None = None) -> None:
    """Run every container of MANIFEST's pod spec and perform its probes; raise on a failure.

    An Indexed Job runs each of its pods to completion instead (`rehearse_job`), with DATA,
    a local folder, standing in for its PersistentVolumeClaims.
    """
    if manifest.get("kind") == "Job":
        rehearse_job(manifest, data, echo)
        return
    pod = pod_spec_of(manifest)
    grace = int(pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE))
    client = docker_client()
    try:
        host_cpus = int(client.info().get("NCPU") or 1)
        for spec in pod.get("containers") or []:
            _one(client, pod, spec, grace, host_cpus, echo)
    finally:
        client.close()
    echo("Rehearsal passed")


def _one(client: Any, pod: dict[str, Any], spec: dict[str, Any], grace: int, host_cpus: int,
         echo: Echo) -> None:
    kwargs = run_kwargs(pod, spec, host_cpus)
    probes = [Probe.of(kind, spec[key], spec) for kind, key in
              (("startup", "startupProbe"), ("readiness", "readinessProbe"),
               ("liveness", "livenessProbe")) if spec.get(key)]
    for source in spec.get("envFrom") or []:
        ref = (source.get("secretRef") or source.get("configMapRef") or {}).get("name")
        echo(f"  envFrom {ref}: its keys live in the cluster; none are set here")
    container = _started(client, spec, kwargs)
    run = Rehearsal(client, container, echo)
    try:
        limits = (spec.get("resources") or {}).get("limits") or {}
        echo(f"Rehearsing container {spec.get('name')} of {spec['image']} as user "
             f"{kwargs.get('user', 'of the image')}, read-only root: "
             f"{bool(kwargs.get('read_only'))}, tmpfs {', '.join(kwargs.get('tmpfs', {}))}, "
             f"limits {limits}")
        for probe in probes:
            # A kubelet repeats startup up to its threshold, and readiness until it passes;
            # liveness must pass at once.
            tries = 1 if probe.kind == "liveness" else probe.failures
            try:
                run.probe(probe, tries)
            except DeployError:
                echo(f"The container's log ends:\n{run.logs()}")
                raise
        run.stop(grace)
    finally:
        container.remove(force=True)


#: Longest a rehearsed Job pod may run.
JOB_TIMEOUT = 600
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(words: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' `$(NAME)` in command and args, from the container's env (others kept)."""
    return [_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), word) for word in words]


def rehearse_job(manifest: dict[str, Any], data: Path | None, echo: Echo = print) -> None:
    """Run each index of an Indexed Job's pod to completion, one after the other.

    JOB_COMPLETION_INDEX is set as the Job controller sets it, `$(...)` in command and args
    expanded as the kubelet expands it, and every PersistentVolumeClaim mounted from DATA.
    """
    if data is None:
        raise DeployError("--rehearse of a batch Job needs --data DIR: a local folder standing "
                          "in for its volume claim, holding the input")
    pod = pod_spec_of(manifest)
    completions = int(manifest["spec"].get("completions") or 1)
    claims = {v["name"] for v in pod.get("volumes") or [] if "persistentVolumeClaim" in v}
    client = docker_client()
    try:
        host_cpus = int(client.info().get("NCPU") or 1)
        for index in range(completions):
            for spec in pod.get("containers") or []:
                _one_job_pod(client, pod, spec, index, completions, claims, data.resolve(),
                             host_cpus, echo)
    finally:
        client.close()
    echo(f"Rehearsal passed: {completions} of {completions} indexes completed")


def _one_job_pod(client: Any, pod: dict[str, Any], spec: dict[str, Any], index: int,
                 completions: int, claims: set[str], data: Path, host_cpus: int,
                 echo: Echo) -> None:

    kwargs = run_kwargs(pod, spec, host_cpus)
    env = {**kwargs["environment"], "JOB_COMPLETION_INDEX": str(index)}
    kwargs["environment"] = env
    for key in ("entrypoint", "command"):
        if key in kwargs:
            kwargs[key] = expand(kwargs[key], env)
    kwargs["volumes"] = {str(data): {"bind": m["mountPath"], "mode": "rw"}
                         for m in spec.get("volumeMounts") or [] if m["name"] in claims}
    kwargs.pop("ports", None)
    echo(f"Rehearsing index {index} of {completions}: "
         f"{' '.join(kwargs.get('entrypoint', []) + kwargs.get('command', []))}")
    import requests

    container = _started(client, spec, kwargs)
    try:
        try:
            status = container.wait(timeout=JOB_TIMEOUT).get("StatusCode")
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as err:
            raise DeployError(f"index {index} did not finish within {JOB_TIMEOUT} s") from err
        logs = container.logs(tail=20).decode(errors="replace").rstrip()
        if status != 0:
            raise DeployError(f"index {index} exited with {status}; its log ends:\n{logs}")
        echo(f"  index {index} completed: {logs.splitlines()[-1] if logs else 'no output'}")
    finally:
        container.remove(force=True)


def _started(client: Any, spec: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """The container of SPEC, created and started, or a DeployError saying why not (a
    container that would not start is removed)."""
    import docker.errors

    try:
        container = client.containers.create(spec["image"], **kwargs)
    except docker.errors.ImageNotFound as err:
        raise DeployError(f"image {spec['image']!r} is not on this engine; pull or build "
                          f"it first") from err
    except docker.errors.APIError as err:
        raise DeployError(f"cannot create the container: {err.explanation or err}") from err
    try:
        container.start()
    except docker.errors.APIError as err:
        container.remove(force=True)
        raise DeployError(f"cannot start {spec['image']}: {err.explanation or err}") from err
    return container

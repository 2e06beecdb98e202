"""`kiln deploy`: write a service's Kubernetes or Knative manifests, and move a canary along.

The objects are builder/manifests.py's dicts. `plan` decides, from service.yaml and the
manifests the output folder holds from the last run (the version deployed now, a canary in
progress), which files to write and which to remove; `deploy` reads and writes them, one YAML
file per object, for `kubectl apply -f OUT`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder import manifests as m
from builder.dockerfile import BuildOptions, default_tag
from builder.errors import DeployError
from runtime.config import ServiceConfig, load_service

Echo = Callable[[str], None]
FORMATS = ("kubernetes", "knative")
DEFAULT_OUT = "kiln-deploy"
HEADER = ("# Written by `kiln deploy` from {source}: change service.yaml and run kiln deploy "
          "again\n# rather than editing this file; the next run reads it back.\n")
CANARY_PERCENT = "kiln.dev/canary-percent"
CANARY_NOTE = "kiln.dev/canary-note"


@dataclass(frozen=True)
class DeployOptions:
    """What `kiln deploy` was asked: the format, the image, one canary step, or a batch Job."""

    out: Path = Path(DEFAULT_OUT)
    format: str = "kubernetes"
    image: str | None = None
    canary: int | None = None
    promote: bool = False
    rollback: bool = False
    batch: bool = False
    shards: int | None = None
    input: str = "input.csv"
    claim: str | None = None


@dataclass
class Plan:
    """Files to write (name -> object) and to remove, and what to tell the user."""

    write: dict[str, dict[str, Any]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The file whose pod spec runs this version (what --rehearse runs).
    pod_file: str | None = None


def file_names(service_id: str) -> dict[str, str]:
    """The file of each object in the output folder."""
    return {"deployment": f"{service_id}.deployment.yaml",
            "canary": f"{service_id}-canary.deployment.yaml",
            "service": f"{service_id}.service.yaml", "hpa": f"{service_id}.hpa.yaml",
            "pdb": f"{service_id}.pdb.yaml", "knative": f"{service_id}.knative.yaml",
            "job": f"{service_id}.job.yaml"}


def image_of(config: ServiceConfig, image: str | None) -> tuple[str, str | None]:
    """(image, a warning or None): --image, else deploy.registry/<id>:<version>, else local."""
    if image:
        return image, None
    tag = default_tag(config, BuildOptions())
    registry = config.get("deploy.registry")
    if registry:
        return f"{registry.rstrip('/')}/{tag}", None
    return tag, (f"no deploy.registry in service.yaml and no --image: the manifests name the "
                 f"local image {tag}, which a cluster cannot pull; push it with "
                 f"`kiln push --registry HOST/NAMESPACE` and pass the printed reference "
                 f"as --image")


def check_options(w: m.Workload, options: DeployOptions) -> None:
    """One line on a combination that cannot work."""
    if options.format not in FORMATS:
        raise DeployError(f"--format: {options.format!r} is not allowed; "
                          f"allowed: {', '.join(FORMATS)}")
    steps = [name for name, given in (("--canary", options.canary is not None),
                                      ("--promote", options.promote),
                                      ("--rollback", options.rollback)) if given]
    if len(steps) > 1:
        raise DeployError(f"{' and '.join(steps)}: give one of --canary, --promote, --rollback")
    if options.batch and steps:
        raise DeployError(f"--batch writes a Job; it does not go with {steps[0]}")
    if options.canary is not None and not 1 <= options.canary <= 99:
        raise DeployError(f"--canary: {options.canary} must be a percentage from 1 to 99")
    if w.replicas_min == 0 and options.format == "kubernetes" and not options.batch:
        raise DeployError("service.yaml: deploy.replicas.min: 0 (scale to zero) needs "
                          "--format knative; a Kubernetes Deployment keeps at least 1 pod")


def plan(w: m.Workload, options: DeployOptions, existing: dict[str, dict[str, Any]]) -> Plan:
    """What to write for W, given EXISTING (file name -> manifest) from the last run."""
    check_options(w, options)
    names = file_names(w.id)
    if options.batch:
        shards = options.shards or w.replicas_max
        job = m.batch_job(w, shards, w.replicas_max, options.input,
                          options.claim or f"{w.id}-data")
        note = (f"the Job reads {m.DATA}/{options.input.strip('/')} from the claim "
                f"{options.claim or w.id + '-data'} in {shards} shards")
        return Plan(write={names["job"]: job}, notes=[note], pod_file=names["job"])
    if options.format == "knative":
        return _plan_knative(w, options, existing.get(names["knative"]), names["knative"])
    return _plan_kubernetes(w, options, existing, names)


def _image(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _plan_kubernetes(w: m.Workload, options: DeployOptions,
                     existing: dict[str, dict[str, Any]], names: dict[str, str]) -> Plan:
    stable, canary = existing.get(names["deployment"]), existing.get(names["canary"])
    out = Plan(write={names["service"]: m.service(w), names["hpa"]: m.autoscaler(w),
                      names["pdb"]: m.disruption_budget(w)}, pod_file=names["deployment"])
    if options.canary is not None:
        if stable is None:
            raise DeployError(f"--canary needs the version deployed now: no "
                              f"{options.out / names['deployment']}; run kiln deploy without "
                              f"--canary first (or give the -o folder of the last run)")
        if _image(stable) == w.image:
            raise DeployError(f"--canary: the deployed version already runs {w.image}; build "
                              f"and push the new version (or pass its --image) first")
        stable_pods = max(1, w.replicas_min)
        pods = m.canary_replicas(stable_pods, options.canary)
        note = m.canary_note(stable_pods, pods, options.canary)
        out.write[names["deployment"]] = stable  # untouched: it keeps serving the rest
        out.write[names["canary"]] = m.deployment(
            w, "canary", replicas=pods,
            annotations={CANARY_PERCENT: str(options.canary), CANARY_NOTE: note})
        out.pod_file = names["canary"]
        out.notes.append(f"canary {w.image}: {note}")
        return out
    if options.promote or options.rollback:
        if canary is None:
            raise DeployError(f"{'--promote' if options.promote else '--rollback'}: there is "
                              f"no canary in {options.out} (no {names['canary']})")
        if options.rollback:
            if stable is None:
                raise DeployError(f"--rollback: no {names['deployment']} in {options.out}")
            out.write[names["deployment"]] = stable
            out.notes.append(f"rolled back to {_image(stable)}")
        else:
            out.write[names["deployment"]] = m.deployment(w, image=_image(canary))
            out.notes.append(f"promoted {_image(canary)} to every pod")
        out.remove.append(names["canary"])
        return out
    out.write[names["deployment"]] = m.deployment(w)
    if canary is not None:
        out.remove.append(names["canary"])
    return out


def _traffic(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(manifest.get("spec", {}).get("traffic") or [])


def _tagged(manifest: dict[str, Any], tag: str) -> str | None:
    return next((t.get("revisionName") for t in _traffic(manifest) if t.get("tag") == tag), None)


def _serving(manifest: dict[str, Any]) -> str | None:
    """The revision that takes the requests now (not a canary's): stable, pinned or latest."""
    pinned = [t.get("revisionName") for t in _traffic(manifest)
              if t.get("revisionName") and t.get("percent") == 100]
    template = manifest.get("spec", {}).get("template", {}).get("metadata", {}).get("name")
    return _tagged(manifest, "stable") or (pinned[0] if pinned else template)


def _plan_knative(w: m.Workload, options: DeployOptions, previous: dict[str, Any] | None,
                  name: str) -> Plan:
    revision = m.revision_name(w.id, w.version)
    fresh = m.knative_service(w, m.all_traffic_to_latest())
    prev_revision = (previous or {}).get("spec", {}).get("template", {}).get(
        "metadata", {}).get("name")
    in_canary = previous is not None and _tagged(previous, "canary") is not None
    out = Plan(pod_file=name)
    if options.rollback or options.promote:
        flag = "--promote" if options.promote else "--rollback"
        if previous is None or not in_canary:
            raise DeployError(f"{flag}: there is no canary in {options.out / name}")
        if options.rollback:
            stable = _tagged(previous, "stable")
            rolled = {**previous, "metadata": _without_canary(previous["metadata"]),
                      "spec": {**previous["spec"],
                               "traffic": [{"revisionName": stable, "percent": 100}]}}
            out.write[name] = rolled
            out.notes.append(f"all traffic back to revision {stable}; the canary revision "
                             f"{prev_revision} stays without traffic until the next version")
            return out
        if revision != prev_revision:
            raise DeployError(f"--promote: the canary is revision {prev_revision}, but "
                              f"service.yaml is at version {w.version} ({revision})")
        out.write[name] = fresh
        out.notes.append(f"promoted revision {revision} to all traffic")
        return out
    if previous is not None and prev_revision == revision and (
            previous["spec"]["template"] != fresh["spec"]["template"]):
        raise DeployError(f"revision {revision} exists with another pod spec (image or "
                          f"settings), and Knative revisions cannot change: raise version in "
                          f"service.yaml")
    if options.canary is None:
        out.write[name] = fresh
        return out
    if previous is None:
        raise DeployError(f"--canary needs the version deployed now: no {options.out / name}; "
                          f"run kiln deploy --format knative without --canary first")
    stable = _serving(previous)
    if stable == revision or not stable:
        raise DeployError(f"--canary: revision {revision} is the one deployed now; raise "
                          f"version in service.yaml for the new one")
    out.write[name] = m.knative_service(
        w, m.canary_traffic(stable, revision, options.canary),
        annotations={CANARY_PERCENT: str(options.canary)})
    out.notes.append(f"canary revision {revision}: {options.canary}% of requests, "
                     f"{100 - options.canary}% stay on {stable}")
    return out


def _without_canary(meta: dict[str, Any]) -> dict[str, Any]:
    notes = {k: v for k, v in (meta.get("annotations") or {}).items()
             if k not in (CANARY_PERCENT, CANARY_NOTE)}
    out = {k: v for k, v in meta.items() if k != "annotations"}
    if notes:
        out["annotations"] = notes
    return out


# -- IO ---------------------------------------------------------------------------------------

def read_existing(out: Path, service_id: str) -> dict[str, dict[str, Any]]:
    """The manifests of the last run in OUT, by file name."""
    found: dict[str, dict[str, Any]] = {}
    for name in file_names(service_id).values():
        path = out / name
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                raise DeployError(f"{path}: not readable YAML ({err}); remove it or "
                                  f"give another -o folder") from err
            if isinstance(data, dict):
                found[name] = data
    return found


def dump(manifest: dict[str, Any], source: str) -> str:
    return HEADER.format(source=source) + yaml.safe_dump(manifest, sort_keys=False)


@dataclass
class Result:
    """What `deploy` did: the files written and removed, and notes for the user."""

    written: list[Path]
    removed: list[Path]
    notes: list[str]
    workload: m.Workload
    pod_file: Path | None


def deploy(directory: str | Path, options: DeployOptions, echo: Echo = print) -> Result:
    """Write the manifests of the service in DIRECTORY into options.out."""
    config = load_service(directory)
    image, warning = image_of(config, options.image)
    w = m.Workload.of(config, image)
    steps = plan(w, options, read_existing(options.out, w.id))
    options.out.mkdir(parents=True, exist_ok=True)
    written, removed = [], []
    for name, manifest in steps.write.items():
        path = options.out / name
        path.write_text(dump(manifest, str(config.path)), encoding="utf-8")
        written.append(path)
    for name in steps.remove:
        path = options.out / name
        if path.exists():
            path.unlink()
            removed.append(path)
    notes = ([warning] if warning else []) + steps.notes
    for path in written:
        echo(f"Wrote {path}")
    for path in removed:
        echo(f"Removed {path}")
    for note in notes:
        echo(f"Note: {note}")
    namespace = f" -n {w.namespace}" if w.namespace else ""
    echo(f"Apply: kubectl apply -f {options.out}")
    if any(name == file_names(w.id)["canary"] for name in steps.remove) and removed:
        echo(f"and delete the canary: kubectl delete deployment {w.id}-canary{namespace}")
    pod_file = options.out / steps.pod_file if steps.pod_file else None
    return Result(written, removed, notes, w, pod_file)

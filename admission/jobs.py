"""What the operator sends to a batch/v1 Job: the admission patch, the suspension patch, and how to read it.

Pure functions over plain dicts (the Job as the API server returns it); every patch is a
JSON merge patch (`application/merge-patch+json`).

Admission injects, into the pod template, the admitted flavors' `nodeLabels` and the
topology domain's labels as `nodeSelector`, and the flavors' `tolerations`; with partial
admission it lowers `parallelism`. What it changes is first saved, as JSON, in the Job's
`tessera.dev/original-pod-template` annotation (the template's `nodeSelector` and
`tolerations`, and the Job's `parallelism`), so that suspending the Job again restores the
template exactly, and an admission repeated after a crash starts from the original, not
from its own earlier injection. An admission with a per-pod plan (`admission.placement`) also
adds the scheduling gate `tessera.dev/placement` to the template; suspending takes it off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from admission.placement import has_gate, template_gates
from quotas.api import ResourceFlavor, Topology
from scheduler.snapshot import PodSetPlacement

ORIGINAL_TEMPLATE_ANNOTATION = "tessera.dev/original-pod-template"


def _spec(job: Mapping[str, Any]) -> dict[str, Any]:
    return dict(job.get("spec") or {})


def _pod_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    return dict(((_spec(job).get("template") or {}).get("spec")) or {})


def annotations(job: Mapping[str, Any]) -> dict[str, str]:
    return dict((job.get("metadata") or {}).get("annotations") or {})


def is_suspended(job: Mapping[str, Any]) -> bool:
    return bool(_spec(job).get("suspend"))


def saved_original(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The template fields saved before admission, or None when the Job carries no admission."""
    raw = annotations(job).get(ORIGINAL_TEMPLATE_ANNOTATION)
    if raw is None:
        return None
    try:
        saved = json.loads(raw)
    except ValueError:
        return None
    return saved if isinstance(saved, dict) else None


def original_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """What admission may change, as it was before any admission."""
    saved = saved_original(job)
    if saved is not None:
        return saved
    pod = _pod_spec(job)
    return {
        "nodeSelector": dict(pod.get("nodeSelector") or {}),
        "tolerations": list(pod.get("tolerations") or []),
        "parallelism": _spec(job).get("parallelism"),
    }


_UNCHANGED = object()


def _selector_patch(current: Mapping[str, str], wanted: Mapping[str, str]) -> Any:
    """A merge patch turning `current` into `wanted` (null removes a key; null for the whole map when
    `wanted` is empty), or `_UNCHANGED`."""
    if dict(current) == dict(wanted):
        return _UNCHANGED
    if not wanted:
        return None
    patch: dict[str, Any] = {k: None for k in current if k not in wanted}
    patch.update({k: v for k, v in wanted.items() if current.get(k) != v})
    return patch


def _toleration(t: Any) -> dict[str, Any]:
    return t.model_dump(by_alias=True, exclude_none=True, mode="json")


def admission_selector(placement: PodSetPlacement, flavors: Mapping[str, ResourceFlavor],
                       topology: Topology | None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Node labels and tolerations an admitted podset must carry: its flavors' and its topology domain's."""
    labels: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    for name in sorted(set(placement.flavors.values())):
        flavor = flavors.get(name)
        if flavor is None:
            continue
        labels.update(flavor.spec.node_labels)
        for toleration in flavor.spec.tolerations:
            entry = _toleration(toleration)
            if entry not in tolerations:
                tolerations.append(entry)
    if placement.domain and topology is not None:
        for level, value in zip(topology.level_labels, placement.domain):
            labels[level] = value
    return labels, tolerations


def admission_patch(job: Mapping[str, Any], placement: PodSetPlacement, flavors: Mapping[str, ResourceFlavor],
                    topology: Topology | None, gate: bool = False) -> dict[str, Any]:
    """The merge patch that starts an admitted Job on its flavor (see the module docstring); `gate`: its
    pods are created behind the placement gate (the admission carries a per-pod plan)."""
    original = original_fields(job)
    labels, tolerations = admission_selector(placement, flavors, topology)
    selector = {**original.get("nodeSelector", {}), **labels}
    wanted_tolerations = list(original.get("tolerations") or [])
    for toleration in tolerations:
        if toleration not in wanted_tolerations:
            wanted_tolerations.append(toleration)
    pod = _pod_spec(job)
    pod_patch: dict[str, Any] = {}
    selector_patch = _selector_patch(pod.get("nodeSelector") or {}, selector)
    if selector_patch is not _UNCHANGED:
        pod_patch["nodeSelector"] = selector_patch
    if list(pod.get("tolerations") or []) != wanted_tolerations:
        pod_patch["tolerations"] = wanted_tolerations or None
    if has_gate(pod) != gate:
        pod_patch["schedulingGates"] = template_gates(pod, gate) or None
    spec_patch: dict[str, Any] = {"suspend": False}
    if pod_patch:
        spec_patch["template"] = {"spec": pod_patch}
    count = job_pod_count(job)
    if placement.count < count:  # partial admission
        spec_patch["parallelism"] = placement.count
    return {
        "metadata": {"annotations": {ORIGINAL_TEMPLATE_ANNOTATION: json.dumps(original, sort_keys=True)}},
        "spec": spec_patch,
    }


def suspend_patch(job: Mapping[str, Any]) -> dict[str, Any]:
    """Suspend the Job and restore what admission changed (from the saved annotation; the placement
    gate is taken off the template whatever the annotation says)."""
    spec_patch: dict[str, Any] = {"suspend": True}
    saved = saved_original(job)
    patch: dict[str, Any] = {"spec": spec_patch}
    if has_gate(_pod_spec(job)):
        spec_patch["template"] = {"spec": {"schedulingGates": template_gates(_pod_spec(job), False) or None}}
    if saved is not None:
        pod = _pod_spec(job)
        pod_patch: dict[str, Any] = {}
        selector_patch = _selector_patch(pod.get("nodeSelector") or {}, saved.get("nodeSelector") or {})
        if selector_patch is not _UNCHANGED:
            pod_patch["nodeSelector"] = selector_patch
        if list(pod.get("tolerations") or []) != list(saved.get("tolerations") or []):
            pod_patch["tolerations"] = list(saved.get("tolerations") or []) or None
        if pod_patch:
            spec_patch.setdefault("template", {"spec": {}})["spec"].update(pod_patch)
        if saved.get("parallelism") != _spec(job).get("parallelism"):
            spec_patch["parallelism"] = saved.get("parallelism")
        patch["metadata"] = {"annotations": {ORIGINAL_TEMPLATE_ANNOTATION: None}}
    return patch


def job_pod_count(job: Mapping[str, Any]) -> int:
    """Pods that run at once (the original parallelism, at most completions), as `quotas.jobs` counts."""
    original = original_fields(job)
    spec = _spec(job)
    parallelism = original.get("parallelism", spec.get("parallelism"))
    count = 1 if parallelism is None else int(parallelism)
    if spec.get("completions") is not None:
        count = min(count, int(spec["completions"]))
    return count


def finished(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """("Succeeded" | "Failed", message) once the Job controller marked the Job Complete or Failed."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "Succeeded", str(cond.get("message") or "Job finished successfully")
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or "Failed"
            return "Failed", str(cond.get("message") or f"Job failed: {reason}")
    return None


def active_pods(job: Mapping[str, Any]) -> int:
    """Pods the Job controller still counts as running or terminating."""
    status = job.get("status") or {}
    return int(status.get("active") or 0) + int(status.get("terminating") or 0)


def ready_pods(job: Mapping[str, Any]) -> int:
    return int((job.get("status") or {}).get("ready") or 0)


def uid(job: Mapping[str, Any]) -> str | None:
    return (job.get("metadata") or {}).get("uid")

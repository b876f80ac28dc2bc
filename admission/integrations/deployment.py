"""Deployments for inference serving (`apps/v1`): one Workload per Deployment, pods held by a scheduling gate.

A Deployment is Tessera's when it carries `tessera.dev/queue-name` and
`tessera.dev/workload-type: inference`. A Deployment has no suspend flag, so its *pods* are held:

* **Gated at creation.** The `/mutate-deployment` webhook (CREATE and UPDATE) copies both
  labels into the pod template, so every pod of the Deployment carries them; the `/mutate-pod`
  webhook (Pod CREATE, objectSelector on the queue label) adds the scheduling gate
  `tessera.dev/admission` to each such pod owned by a ReplicaSet. kube-scheduler leaves a gated
  pod alone. Pods of Jobs are never gated (their Job is suspended instead).
* **Podsets.** One podset `main` of `spec.replicas` pods (default 1), from the pod template.
* **Admitted.** The controller patches each gated pod, oldest first, at most as many as were
  admitted: it removes the gate, adds the podset's node selector (flavor labels, topology
  domain) and tolerations, and marks the pod `tessera.dev/admitted-by: <Workload name>`. This is
  allowed on a gated pod (Kubernetes >= 1.27: while a pod has scheduling gates, `nodeSelector`
  keys may be added and tolerations appended; gates can only be removed). The Deployment's own
  pod template is *not* changed: that would be a rollout, a new ReplicaSet replacing every pod.
  Pods created later (a replaced pod, a rollout) are gated too and ungated the same way while
  the Workload is admitted, never more than its admitted count at once.
* **Evicted / preempted.** A gate cannot be put back, so the controller deletes the Deployment's
  ungated pods (graceful deletion, no PodDisruptionBudget check: this is not the eviction API);
  the ReplicaSet replaces them, gated. The quota is released once the deleted pods are gone,
  and the Workload queues again.
* **Never finished.** A Deployment runs until it is deleted; then its Workload is deleted too.
* A pod that runs ungated without the mark (the webhook was down or bypassed) is deleted, its
  replacement comes gated: use `failurePolicy: Fail` for the pod webhook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from admission.integrations.base import (
    Change,
    Integration,
    Obj,
    Pods,
    admitted_fields,
    as_count,
    podset,
    true_condition,
)
from admission.kube import DEPLOYMENTS
from quotas.api import PodSet, ResourceFlavor, Topology
from quotas.base import QUEUE_NAME_LABEL, WORKLOAD_TYPE_LABEL
from quotas.jobs import workload_name
from scheduler.snapshot import PodSetPlacement

GATE = "tessera.dev/admission"
ADMITTED_ANNOTATION = "tessera.dev/admitted-by"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
PROPAGATED_LABELS = (QUEUE_NAME_LABEL, WORKLOAD_TYPE_LABEL)


def _meta(obj: Obj) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def _labels(obj: Obj) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def gated(pod: Obj) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(isinstance(g, dict) and g.get("name") == GATE for g in gates)


def terminating(pod: Obj) -> bool:
    return bool(_meta(pod).get("deletionTimestamp"))


def admitted(pod: Obj) -> bool:
    return bool((_meta(pod).get("annotations") or {}).get(ADMITTED_ANNOTATION))


def _age(pod: Obj) -> tuple[str, str]:
    meta = _meta(pod)
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def _is_inference(obj: Obj) -> bool:
    labels = _labels(obj)
    return bool(labels.get(QUEUE_NAME_LABEL)) and labels.get(WORKLOAD_TYPE_LABEL) == "inference"


def replica_set_deployment(pod: Obj) -> str | None:
    """The Deployment a pod belongs to: its controlling ReplicaSet is named `<deployment>-<pod-template-hash>`."""
    meta = _meta(pod)
    digest = (meta.get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL)
    if not digest:
        return None
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") != "ReplicaSet" or not str(owner.get("apiVersion", "")).startswith("apps/"):
            continue
        name = str(owner.get("name") or "")
        if name.endswith(f"-{digest}") and len(name) > len(digest) + 1:
            return name[: -len(digest) - 1]
    return None


def pod_mutation(pod: Obj) -> dict[str, Any] | None:
    """The merge patch the Pod webhook applies: the gate, on a new pod of a queued inference Deployment."""
    if not _is_inference(pod) or replica_set_deployment(pod) is None or gated(pod):
        return None
    gates = list((pod.get("spec") or {}).get("schedulingGates") or [])
    return {"spec": {"schedulingGates": [*gates, {"name": GATE}]}}


def ungate_patch(pod: Obj, wanted: Mapping[str, Any], marker: str) -> dict[str, Any]:
    """Remove the gate, add the admission's node selector keys and tolerations, mark the pod admitted."""
    spec = pod.get("spec") or {}
    gates = [g for g in spec.get("schedulingGates") or [] if not (isinstance(g, dict) and g.get("name") == GATE)]
    selector = dict(spec.get("nodeSelector") or {})
    additions = {k: v for k, v in (wanted.get("nodeSelector") or {}).items() if selector.get(k) != v}
    current = list(spec.get("tolerations") or [])
    tolerations = current + [t for t in wanted.get("tolerations") or [] if t not in current]
    spec_patch: dict[str, Any] = {"schedulingGates": gates or None}
    if additions:
        spec_patch["nodeSelector"] = additions
    if tolerations != current:
        spec_patch["tolerations"] = tolerations
    return {"metadata": {"annotations": {ADMITTED_ANNOTATION: marker}}, "spec": spec_patch}


class DeploymentIntegration(Integration):
    framework = "deployment"
    resource = DEPLOYMENTS
    prefix = "deployment"
    webhook_id = "mutate-deployment"
    webhook_operations = ("CREATE", "UPDATE")
    pod_webhook_id = "mutate-pod"
    hold_event = "Stopped"
    uses_pods = True
    honours_plans = False  # its pods are ungated at admission by the admission gate, placed by kube-scheduler

    @property
    def list_selector(self) -> str:
        return f"{QUEUE_NAME_LABEL},{WORKLOAD_TYPE_LABEL}=inference"

    def is_managed(self, obj: Obj) -> bool:
        return _is_inference(obj)

    def podsets(self, obj: Obj) -> list[PodSet]:
        spec = obj.get("spec") or {}
        count = as_count(spec.get("replicas"), "spec.replicas")
        return [podset("main", count, spec.get("template"), "spec.template", "spec.template")]

    def mutation(self, obj: Obj) -> dict[str, Any] | None:
        """Copy the queue and workload-type labels into the pod template (so the Pod webhook sees them)."""
        if not self.is_managed(obj):
            return None
        labels = _labels(obj)
        template_labels = (((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        missing = {k: labels[k] for k in PROPAGATED_LABELS if template_labels.get(k) != labels[k]}
        if not missing:
            return None
        return {"spec": {"template": {"metadata": {"labels": missing}}}}

    def marker(self, obj: Obj) -> str:
        return workload_name(str(_meta(obj).get("name") or ""), self.prefix)

    def is_held(self, obj: Obj, pods: Pods) -> bool:
        return not any(not gated(p) and not terminating(p) for p in pods)

    def hold(self, obj: Obj, pods: Pods) -> Change:
        running = sorted(str(_meta(p).get("name")) for p in pods if not gated(p) and not terminating(p))
        return Change(pod_deletions=running)

    def is_started(self, obj: Obj, pods: Pods) -> bool:
        return any(not gated(p) and admitted(p) for p in pods)

    def release(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement],
                flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology]) -> Change:
        placement = placements[0]  # one podset
        wanted = admitted_fields({}, placement, flavors, topologies)
        ungated = [p for p in pods if not gated(p)]
        strangers = sorted(str(_meta(p).get("name")) for p in ungated if not admitted(p) and not terminating(p))
        room = max(placement.count - len(ungated), 0)  # strangers count until they are gone
        waiting = sorted((p for p in pods if gated(p) and not terminating(p)), key=_age)[:room]
        marker = self.marker(obj)
        patches = [(str(_meta(p).get("name")), ungate_patch(p, wanted, marker)) for p in waiting]
        return Change(pod_patches=patches, pod_deletions=strangers, starts=bool(patches))

    def admitted_change(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement],
                        flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology]) -> Change | None:
        """Delete pods running without the admission, ungate waiting ones up to the admitted count."""
        change = self.release(obj, pods, placements, flavors, topologies)
        return change or None

    def finished(self, obj: Obj) -> tuple[str, str] | None:
        return None  # serving runs until the Deployment is deleted

    def active_pods(self, obj: Obj, pods: Pods) -> int:
        return sum(1 for p in pods if not gated(p))

    def pods_ready(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement]) -> bool:
        expected = placements[0].count if placements else 0
        ready = sum(1 for p in pods if admitted(p) and not gated(p) and not terminating(p)
                    and true_condition(p, "Ready") is not None)
        return ready >= expected

    def pod_owner(self, pod: Obj) -> tuple[str, str] | None:
        name = replica_set_deployment(pod)
        return (name, "main") if name else None

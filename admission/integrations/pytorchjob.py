"""Kubeflow PyTorchJob (`kubeflow.org/v1`): one podset per replica type, held by `spec.runPolicy.suspend`.

* Podsets: `master` then `worker` (then any other replica type, by name), lower-cased as
  Kueue names them, each of `replicas` pods (default 1), from `spec.pytorchReplicaSpecs.<Type>.template`.
* Held: `spec.runPolicy.suspend: true` (the `/mutate-pytorchjob` webhook, else the controller);
  the training operator deletes the pods of a suspended job.
* Released: each replica type's pod template gets its podset's node selector and tolerations
  and `runPolicy.suspend` turns false, in one merge patch (`pytorchReplicaSpecs` is a map, so
  the patch touches only those fields).
* Finished: the `Succeeded` / `Failed` conditions. Evicted pods are gone when no replica type
  counts `active` pods; `waitForPodsReady` reads the `Running` condition (as Kueue does).
* Pods: labelled `training.kubeflow.org/job-name` and `training.kubeflow.org/replica-type`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from admission.integrations.base import (
    Obj,
    Pods,
    SuspendableIntegration,
    as_count,
    check_podset_count,
    pod_spec_merge_patch,
    podset,
    true_condition,
)
from admission.kube import PYTORCHJOBS
from quotas.api import PodSet
from scheduler.snapshot import PodSetPlacement

REPLICA_ORDER = ("Master", "Worker")
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
OPERATOR_NAME_LABEL = "training.kubeflow.org/operator-name"
OPERATOR_NAME = "pytorchjob-controller"


def _replica_specs(obj: Obj) -> dict[str, dict[str, Any]]:
    specs = (obj.get("spec") or {}).get("pytorchReplicaSpecs") or {}
    known = [t for t in REPLICA_ORDER if isinstance(specs.get(t), dict)]
    others = sorted(t for t in specs if t not in REPLICA_ORDER and isinstance(specs.get(t), dict))
    return {t: specs[t] for t in (*known, *others)}


class PyTorchJobIntegration(SuspendableIntegration):
    framework = "kubeflow.org/pytorchjob"
    resource = PYTORCHJOBS
    prefix = "pytorchjob"
    webhook_id = "mutate-pytorchjob"

    def podsets(self, obj: Obj) -> list[PodSet]:
        specs = _replica_specs(obj)
        check_podset_count(list(specs), "spec.pytorchReplicaSpecs")
        out = []
        for kind, spec in specs.items():
            path = f"spec.pytorchReplicaSpecs.{kind}"
            count = as_count(spec.get("replicas"), f"{path}.replicas")
            out.append(podset(kind.lower(), count, spec.get("template"), f"{path}.template", path))
        return out

    def pod_specs(self, obj: Obj) -> dict[str, dict[str, Any]]:
        return {kind.lower(): dict((spec.get("template") or {}).get("spec") or {})
                for kind, spec in _replica_specs(obj).items()}

    def is_suspended(self, obj: Obj) -> bool:
        return bool(((obj.get("spec") or {}).get("runPolicy") or {}).get("suspend"))

    def suspend_patch(self, value: bool) -> dict[str, Any]:
        return {"spec": {"runPolicy": {"suspend": value}}}

    def templates_patch(self, obj: Obj, wanted: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        patches: dict[str, Any] = {}
        for kind, spec in _replica_specs(obj).items():
            fields = wanted.get(kind.lower())
            if fields is None:
                continue
            pod_patch = pod_spec_merge_patch((spec.get("template") or {}).get("spec") or {}, fields)
            if pod_patch:
                patches[kind] = {"template": {"spec": pod_patch}}
        return {"spec": {"pytorchReplicaSpecs": patches}} if patches else {}

    def finished(self, obj: Obj) -> tuple[str, str] | None:
        failed = true_condition(obj, "Failed")
        if failed is not None:
            return "Failed", str(failed.get("message") or f"PyTorchJob failed: {failed.get('reason') or 'Failed'}")
        succeeded = true_condition(obj, "Succeeded")
        if succeeded is not None:
            return "Succeeded", str(succeeded.get("message") or "PyTorchJob finished successfully")
        return None

    def active_pods(self, obj: Obj, pods: Pods) -> int:
        statuses = (obj.get("status") or {}).get("replicaStatuses") or {}
        return sum(int(s.get("active") or 0) for s in statuses.values() if isinstance(s, dict))

    def pods_ready(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement]) -> bool:
        return true_condition(obj, "Running") is not None or self.finished(obj) is not None

    def pod_owner(self, pod: Obj) -> tuple[str, str] | None:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        name, kind = labels.get(JOB_NAME_LABEL), labels.get(REPLICA_TYPE_LABEL)
        if not name or not kind or labels.get(OPERATOR_NAME_LABEL, OPERATOR_NAME) != OPERATOR_NAME:
            return None
        return str(name), str(kind).lower()

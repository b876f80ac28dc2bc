"""Integrations: the kinds of objects Tessera queues, each behind one small adapter (`Integration`).

The controller (`admission.scheduling`) and the snapshot (`admission.snapshot`) never look
inside a Job, a JobSet or a Deployment; they ask its integration:

| question | method |
| --- | --- |
| which resource is watched, what is the Workload called | `resource`, `prefix` (`<prefix>-<name>`) |
| is this object queued | `is_managed` (`tessera.dev/queue-name`; Deployments also `workload-type: inference`) |
| its podsets: name, count, minCount, pod template (requests, node selector, tolerations, topology) | `podsets` |
| the Workload, owned by the object | `workload_manifest` |
| hold it at creation | `mutation` (the mutating webhook `/<webhook_id>`) |
| is it held / hold it again (restoring its templates) | `is_held`, `hold` |
| release it on an admission, per podset (node selector, tolerations; the placement gate with a per-pod plan) | `release`, `is_started`, `admitted_change` |
| ungate its pods onto the plan's nodes (`admission.placement`) | `placement_change`, `honours_plans` |
| is it finished, are its pods gone, are its pods ready | `finished`, `active_pods`, `pods_ready` |
| which object (and podset) a pod belongs to | `pod_owner` |

Writes are returned as a `Change` (a merge patch of the object, pod patches, pod deletions)
and applied by the controller. The adapters:

| framework (`Configuration.integrations.frameworks`) | kind | held by |
| --- | --- | --- |
| `batch/job` | `batch/v1` Job | `spec.suspend` |
| `jobset.x-k8s.io/jobset` | `jobset.x-k8s.io/v1alpha2` JobSet | `spec.suspend` |
| `kubeflow.org/pytorchjob` | `kubeflow.org/v1` PyTorchJob | `spec.runPolicy.suspend` |
| `deployment` | `apps/v1` Deployment (inference) | the pods' scheduling gate `tessera.dev/admission` |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from admission.integrations.base import Change, Integration, SuspendableIntegration
from admission.integrations.batchjob import BatchJob
from admission.integrations.deployment import DeploymentIntegration
from admission.integrations.jobset import JobSetIntegration
from admission.integrations.pytorchjob import PyTorchJobIntegration

__all__ = ["ALL", "BATCH_JOB", "DEPLOYMENT", "JOBSET", "PYTORCHJOB", "Change", "Integration",
           "SuspendableIntegration", "by_plural", "enabled", "owner_of"]

BATCH_JOB = BatchJob()
JOBSET = JobSetIntegration()
PYTORCHJOB = PyTorchJobIntegration()
DEPLOYMENT = DeploymentIntegration()
ALL: tuple[Integration, ...] = (BATCH_JOB, JOBSET, PYTORCHJOB, DEPLOYMENT)
BY_FRAMEWORK: dict[str, Integration] = {i.framework: i for i in ALL}


def enabled(frameworks: Iterable[str]) -> list[Integration]:
    """The integrations named (Kueue's framework names), in a fixed order; ValueError for an unknown name."""
    names = set(frameworks)
    unknown = sorted(names - set(BY_FRAMEWORK))
    if unknown:
        raise ValueError(f"unknown integrations.frameworks {unknown}; supported: {sorted(BY_FRAMEWORK)}")
    return [i for i in ALL if i.framework in names]


def by_plural(plural: str) -> Integration | None:
    for integration in ALL:
        if integration.plural == plural:
            return integration
    return None


def owner_of(workload: Mapping[str, Any]) -> tuple[Integration, str, str | None] | None:
    """(integration, object name, object uid) of the object owning a Workload, or None for an unknown owner."""
    for owner in (workload.get("metadata") or {}).get("ownerReferences") or []:
        for integration in ALL:
            if integration.owns(owner) and owner.get("name"):
                return integration, str(owner["name"]), owner.get("uid")
    return None

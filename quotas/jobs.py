"""From a user's batch/v1 Job to the Workload the scheduler queues.

The operator and the simulator both go through here, so a Job means the same thing
in both: one podset of `parallelism` pods (at most `completions`), each requesting
what Kubernetes would account for it.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from quotas.api import PodSet, PodSetTopologyRequest, TessMeta, Workload, WorkloadSpec
from quotas.base import (
    GROUP_VERSION,
    MIN_PARALLELISM_ANNOTATION,
    PREFERRED_TOPOLOGY_ANNOTATION,
    PRIORITY_CLASS_LABEL,
    QUEUE_NAME_LABEL,
    REQUIRED_TOPOLOGY_ANNOTATION,
    WORKLOAD_TYPE_LABEL,
)
from quotas.kube import Job, ObjectMeta, PodTemplateSpec, pod_requests


class JobConversionError(ValueError):
    """A Job that cannot become a Workload; `field` is the path inside the Job that is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def workload_name(job_name: str, prefix: str = "job") -> str:
    """A stable, valid Workload name for a Job (`job-<name>`; other kinds use their own prefix),
    shortened with a hash when too long."""
    name = f"{prefix}-{job_name}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


def topology_request(template: PodTemplateSpec, path: str = "spec.template") -> PodSetTopologyRequest | None:
    """The podset's topology request from its pod template's annotations (`path` names the template in errors)."""
    annotations = template.metadata.annotations
    required = annotations.get(REQUIRED_TOPOLOGY_ANNOTATION)
    preferred = annotations.get(PREFERRED_TOPOLOGY_ANNOTATION)
    if not required and not preferred:
        return None
    if required and preferred:
        raise JobConversionError(
            f"{path}.metadata.annotations",
            f"set {REQUIRED_TOPOLOGY_ANNOTATION} or {PREFERRED_TOPOLOGY_ANNOTATION}, not both",
        )
    return PodSetTopologyRequest(required=required, preferred=preferred)


def min_count(job: Job, count: int) -> int | None:
    """Partial admission: the Job may start with fewer pods, down to this many."""
    raw = job.metadata.annotations.get(MIN_PARALLELISM_ANNOTATION)
    if raw is None:
        return None
    field = f'metadata.annotations["{MIN_PARALLELISM_ANNOTATION}"]'
    try:
        value = int(raw)
    except ValueError:
        raise JobConversionError(field, f'must be an integer, got "{raw}"') from None
    if not 1 <= value <= count:
        raise JobConversionError(field, f'must be between 1 and the pod count {count}, got "{raw}"')
    return value


def workload_from_job(job: Job) -> Workload:
    """The Workload for a Job carrying the queue label; raises JobConversionError naming the bad field."""
    _queue_and_type(job.metadata, "Job")  # the label errors first, as before the podset is read
    count = job.spec.pod_count()
    podset = PodSet(
        name="main",
        count=count,
        min_count=min_count(job, count),
        template=job.spec.template,
        topology_request=topology_request(job.spec.template),
    )
    return build_workload(job.metadata, "batch/v1", "Job", [podset], prefix="job")


def _queue_and_type(meta: ObjectMeta, kind: str) -> tuple[str, str]:
    labels = meta.labels
    queue = labels.get(QUEUE_NAME_LABEL)
    if not queue:
        raise JobConversionError(f'metadata.labels["{QUEUE_NAME_LABEL}"]', f"required for a {kind} managed by Tessera")
    workload_type = labels.get(WORKLOAD_TYPE_LABEL, "training")
    if workload_type not in ("training", "inference"):
        raise JobConversionError(
            f'metadata.labels["{WORKLOAD_TYPE_LABEL}"]', f'must be training or inference, got "{workload_type}"'
        )
    return queue, workload_type


def build_workload(meta: ObjectMeta, api_version: str, kind: str, podsets: list[PodSet], *,
                   prefix: str) -> Workload:
    """The Workload of any queued object (a Job, a JobSet, ...): queue, priority class and workload type
    from its labels, the given podsets, and an owner reference to it (with its uid, when known)."""
    queue, workload_type = _queue_and_type(meta, kind)
    owner: dict[str, object] = {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta.name,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    if meta.uid:
        owner["uid"] = meta.uid
    return Workload(
        api_version=GROUP_VERSION,
        metadata=TessMeta(
            name=workload_name(meta.name or "", prefix),
            namespace=meta.namespace or "default",
            labels={WORKLOAD_TYPE_LABEL: workload_type},
            creation_timestamp=meta.creation_timestamp,
            owner_references=[owner],
        ),
        spec=WorkloadSpec(
            queue_name=queue,
            priority_class_name=meta.labels.get(PRIORITY_CLASS_LABEL),
            pod_sets=podsets,
        ),
    )


def podset_requests(podset: PodSet) -> dict[str, Decimal]:
    """Per-pod requests of a podset (see `pod_requests`)."""
    return pod_requests(podset.template.spec)


def workload_requests(workload: Workload) -> dict[str, Decimal]:
    """Total requests of a whole workload at full count: what admission charges against quota."""
    total: dict[str, Decimal] = {}
    for podset in workload.spec.pod_sets:
        for name, amount in podset_requests(podset).items():
            total[name] = total.get(name, Decimal(0)) + amount * podset.count
    return total

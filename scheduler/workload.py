"""Workloads as the scheduler sees them: plain, typed data with amounts in milli-units.

The policies and the CP-SAT model read the same few facts thousands of times per cycle
(per-pod requests, counts, where pods may run, priority, age), so they are extracted once
from the pydantic `quotas.api.Workload` here instead of re-reading manifests (and
re-parsing Decimal quantities) in the hot paths.
"""

from __future__ import annotations

import functools

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Literal

from quotas.api import PodSet, Workload, WorkloadPriorityClass
from quotas.base import WORKLOAD_TYPE_LABEL
from quotas.jobs import podset_requests, workload_from_job
from quotas.kube import Job
from scheduler.affinity import NodeConstraints
from scheduler.cluster import DEFAULT_ACCELERATORS, PodRequest

__all__ = ["PodSetInfo", "TopologyRequest", "WorkloadInfo", "WorkloadType", "parse_timestamp", "resolve_priority"]

WorkloadType = Literal["training", "inference"]


@dataclass(frozen=True)
class TopologyRequest:
    """All pods of the podset in one domain of ``level`` (required), or in as few as possible (preferred)."""

    mode: Literal["required", "preferred"]
    level: str

    @property
    def required(self) -> bool:
        return self.mode == "required"


@dataclass(frozen=True, eq=False)
class PodSetInfo:
    """A group of identical pods: how many, how few are acceptable, what each needs, where it may run."""

    name: str
    count: int
    requests: PodRequest
    min_count: int | None = None
    constraints: NodeConstraints = field(default_factory=NodeConstraints)
    topology: TopologyRequest | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"podset {self.name}: count must not be negative")
        if self.min_count is not None and not 1 <= self.min_count <= self.count:
            raise ValueError(f"podset {self.name}: minCount {self.min_count} must be between 1 and count {self.count}")

    @classmethod
    def from_podset(cls, podset: PodSet, path: str = "spec.podSets[0]") -> PodSetInfo:
        """From a Workload's podset; raises ValueError naming the field for a malformed affinity."""
        spec = podset.template.spec
        topology = None
        if podset.topology_request is not None:
            req = podset.topology_request
            topology = TopologyRequest("required", req.required) if req.required else TopologyRequest("preferred", req.preferred or "")
        return cls(
            name=podset.name,
            count=podset.count,
            min_count=podset.min_count,
            requests=PodRequest.from_quantities(podset_requests(podset)),
            constraints=NodeConstraints.build(spec.node_selector, spec.affinity, spec.tolerations, f"{path}.template.spec"),
            topology=topology,
        )

    @property
    def node_selector(self) -> dict[str, str]:
        return dict(self.constraints.node_selector)

    @property
    def tolerations(self) -> tuple[object, ...]:
        return self.constraints.tolerations

    @property
    def lowest_count(self) -> int:
        """The fewest pods this podset may run with (partial admission)."""
        return self.min_count if self.min_count is not None else self.count

    def total(self, count: int | None = None) -> dict[str, int]:
        """Requests of ``count`` pods (default: all)."""
        return self.requests.times(self.count if count is None else count)

    def with_count(self, count: int) -> PodSetInfo:
        """The podset shrunk (or grown) to ``count`` pods, keeping minCount valid."""
        min_count = None if self.min_count is None else min(self.min_count, count)
        return replace(self, count=count, min_count=min_count if count else None)


def parse_timestamp(value: str | None) -> float:
    """RFC 3339 (``2024-05-01T12:00:00Z``) to epoch seconds; 0.0 when absent."""
    if not value:
        return 0.0
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def resolve_priority(
    priority: int | None, class_name: str | None, classes: Mapping[str, WorkloadPriorityClass | int]
) -> int:
    """Kueue's rule: an explicit ``spec.priority`` wins, else the WorkloadPriorityClass value, else 0.

    An unknown class counts as 0 (`quotas.validation` reports it when classes are defined).
    """
    if priority is not None:
        return priority
    if class_name and class_name in classes:
        found = classes[class_name]
        return found if isinstance(found, int) else found.value
    return 0


@dataclass(eq=False)
class WorkloadInfo:
    """One queued job: identity, queue, priority, age and podsets. ``cluster_queue`` is filled by the caller."""

    namespace: str
    name: str
    local_queue: str
    podsets: tuple[PodSetInfo, ...]
    priority: int = 0
    creation_time: float = 0.0
    workload_type: WorkloadType = "training"
    cluster_queue: str | None = None
    priority_class: str | None = None

    @functools.cached_property
    def key(self) -> str:
        """``namespace/name``, unique among workloads (read in every cycle's hot loops: kept)."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_workload(
        cls,
        workload: Workload,
        priority_classes: Mapping[str, WorkloadPriorityClass | int] | None = None,
        cluster_queue: str | None = None,
        creation_time: float | None = None,
    ) -> WorkloadInfo:
        """From a `quotas.api.Workload`; creation time from metadata unless given (the simulator passes its clock)."""
        labels = workload.metadata.labels
        wl_type = labels.get(WORKLOAD_TYPE_LABEL, "training")
        if wl_type not in ("training", "inference"):
            raise ValueError(f'metadata.labels["{WORKLOAD_TYPE_LABEL}"]: must be training or inference, got "{wl_type}"')
        spec = workload.spec
        return cls(
            namespace=workload.namespace,
            name=workload.metadata.name,
            local_queue=spec.queue_name,
            podsets=tuple(PodSetInfo.from_podset(ps, f"spec.podSets[{i}]") for i, ps in enumerate(spec.pod_sets)),
            priority=resolve_priority(spec.priority, spec.priority_class_name, priority_classes or {}),
            creation_time=parse_timestamp(workload.metadata.creation_timestamp) if creation_time is None else creation_time,
            workload_type=wl_type,  # type: ignore[arg-type]
            cluster_queue=cluster_queue,
            priority_class=spec.priority_class_name,
        )

    @classmethod
    def from_job(
        cls,
        job: Job,
        priority_classes: Mapping[str, WorkloadPriorityClass | int] | None = None,
        cluster_queue: str | None = None,
        creation_time: float | None = None,
    ) -> WorkloadInfo:
        """From a batch/v1 Job through `quotas.jobs.workload_from_job` (raises JobConversionError)."""
        return cls.from_workload(workload_from_job(job), priority_classes, cluster_queue, creation_time)

    def total_requests(self) -> dict[str, int]:
        """Requests of all pods at full count, in milli: what admission charges against quota."""
        total: dict[str, int] = {}
        for podset in self.podsets:
            for resource, amount in podset.requests.items:
                total[resource] = total.get(resource, 0) + amount * podset.count
        return total

    def total_gpus(self, accelerators: Iterable[str] = DEFAULT_ACCELERATORS) -> int:
        """GPU milli of all pods at full count (1000 per GPU), over the accelerator resources."""
        total = self.total_requests()
        return sum(total.get(name, 0) for name in accelerators)

    @property
    def pod_count(self) -> int:
        return sum(ps.count for ps in self.podsets)

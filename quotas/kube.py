"""The parts of built-in Kubernetes kinds that scheduling reads: Node, batch/v1 Job, pod templates.

These models are lenient (unknown fields are kept, not refused) because they come from
real clusters and `kubectl get -o yaml`, which carry far more than we need.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from quotas.base import KubeModel, Labels
from quotas.quantity import Quantity

ResourceList = dict[str, Quantity]


class ObjectMeta(KubeModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    owner_references: list[dict[str, Any]] = Field(default_factory=list)


TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Taint(KubeModel):
    key: str
    value: str | None = None
    effect: TaintEffect


class Toleration(KubeModel):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: TaintEffect | None = None
    toleration_seconds: int | None = None

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' ToleratesTaint: empty key with Exists matches every taint."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return (self.value or "") == (taint.value or "")


def tolerates_all(tolerations: list[Toleration], taints: list[Taint]) -> bool:
    """Whether a pod may run where these taints are, as the scheduler's TaintToleration filter decides.

    PreferNoSchedule taints never block placement.
    """
    return all(
        taint.effect == "PreferNoSchedule" or any(t.tolerates(taint) for t in tolerations) for taint in taints
    )


class ResourceRequirements(KubeModel):
    requests: ResourceList = Field(default_factory=dict)
    limits: ResourceList = Field(default_factory=dict)


class Container(KubeModel):
    name: str = ""
    image: str | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    restart_policy: str | None = None

    def effective_requests(self) -> dict[str, Decimal]:
        """Requests after API defaulting: a limit stands in for a missing request of the same resource."""
        merged = dict(self.resources.limits)
        merged.update(self.resources.requests)
        return merged


class PodSpec(KubeModel):
    containers: list[Container] = Field(default_factory=list)
    init_containers: list[Container] = Field(default_factory=list)
    overhead: ResourceList = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    scheduler_name: str | None = None
    restart_policy: str | None = None


class PodTemplateSpec(KubeModel):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec = Field(default_factory=PodSpec)


def _add(total: dict[str, Decimal], more: dict[str, Decimal]) -> dict[str, Decimal]:
    out = dict(total)
    for name, amount in more.items():
        out[name] = out.get(name, Decimal(0)) + amount
    return out


def _max(a: dict[str, Decimal], b: dict[str, Decimal]) -> dict[str, Decimal]:
    out = dict(a)
    for name, amount in b.items():
        out[name] = max(out.get(name, Decimal(0)), amount)
    return out


def pod_requests(spec: PodSpec) -> dict[str, Decimal]:
    """A pod's effective requests, as the kube-scheduler and the kubelet compute them.

    Regular containers and restartable init containers (sidecars, restartPolicy Always)
    run together, so they add up; each ordinary init container runs alone beside the
    sidecars started before it, so the pod needs the larger of the two phases; the
    RuntimeClass overhead comes on top.
    """
    regular: dict[str, Decimal] = {}
    for container in spec.containers:
        regular = _add(regular, container.effective_requests())
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for container in spec.init_containers:
        requests = container.effective_requests()
        if container.restart_policy == "Always":
            regular = _add(regular, requests)
            sidecars = _add(sidecars, requests)
            phase = sidecars
        else:
            phase = _add(requests, sidecars)
        init_peak = _max(init_peak, phase)
    return _add(_max(regular, init_peak), spec.overhead)


class JobSpec(KubeModel):
    parallelism: int | None = Field(default=None, ge=0)
    completions: int | None = Field(default=None, ge=0)
    suspend: bool | None = None
    backoff_limit: int | None = None
    active_deadline_seconds: int | None = None
    template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)

    def pod_count(self) -> int:
        """Pods that run at once: parallelism (default 1), never more than completions."""
        count = 1 if self.parallelism is None else self.parallelism
        if self.completions is not None:
            count = min(count, self.completions)
        return count


class Job(KubeModel):
    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta
    spec: JobSpec = Field(default_factory=JobSpec)
    status: dict[str, Any] | None = None


class NodeSpec(KubeModel):
    taints: list[Taint] = Field(default_factory=list)
    unschedulable: bool = False
    provider_id: str | None = Field(default=None, alias="providerID")


class NodeStatus(KubeModel):
    allocatable: ResourceList = Field(default_factory=dict)
    capacity: ResourceList = Field(default_factory=dict)
    conditions: list[dict[str, Any]] = Field(default_factory=list)


class Namespace(KubeModel):
    """A namespace: only its labels matter, for ClusterQueues' `namespaceSelector`."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta


class Node(KubeModel):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)

    def allocatable(self) -> dict[str, Decimal]:
        """What pods may use: allocatable, falling back to capacity where a node reports only that."""
        return {**self.status.capacity, **self.status.allocatable}

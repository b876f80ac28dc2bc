"""The `tessera.dev/v1alpha1` kinds, shaped like Kueue's v1beta1 so a Kueue admin reads them at once.

Field names, enum values and defaults follow Kueue wherever the concept is the same;
DESIGN.md lists the contract. Cross-object rules (unknown flavor, cohort cycles, ...)
live in `quotas.validation`, because a single object cannot see the others.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from quotas.base import (
    GROUP_VERSION,
    ApiModel,
    Int32,
    LabelName,
    Labels,
    ObjectName,
    QualifiedName,
    ResourceName,
)
from quotas.duration import Duration
from quotas.kube import ObjectMeta, PodTemplateSpec, Taint, Toleration
from quotas.quantity import NonNegativeQuantity, Quantity

MAX_RESOURCE_GROUPS = 16
# Kueue's own limits (v1beta1 CRD validation), so every valid Kueue object converts.
MAX_FLAVORS_PER_GROUP = 64
MAX_RESOURCES_PER_FLAVOR = 64
MAX_TOPOLOGY_LEVELS = 16
MAX_PODSETS = 8


class TessMeta(ApiModel):
    """Object metadata of Tessera's kinds; server-set fields are accepted so `kubectl get -o yaml` output loads."""

    name: ObjectName
    namespace: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)
    generate_name: str | None = None
    managed_fields: list[dict[str, Any]] = Field(default_factory=list)
    self_link: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None


class TessObject(ApiModel):
    api_version: Literal["tessera.dev/v1alpha1"] = GROUP_VERSION
    metadata: TessMeta

    @property
    def name(self) -> str:
        return self.metadata.name


# --- ResourceFlavor -------------------------------------------------------------------------


class ResourceFlavorSpec(ApiModel):
    node_labels: Labels = Field(default_factory=dict, max_length=8)
    node_taints: list[Taint] = Field(default_factory=list, max_length=8)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=8)
    topology_name: ObjectName | None = None


class ResourceFlavor(TessObject):
    """A class of nodes (GPU model, spot or on-demand, ...) that quota is counted in."""

    kind: Literal["ResourceFlavor"] = "ResourceFlavor"
    spec: ResourceFlavorSpec = Field(default_factory=ResourceFlavorSpec)


# --- ClusterQueue and Cohort quota ----------------------------------------------------------


class ResourceQuota(ApiModel):
    name: ResourceName
    nominal_quota: NonNegativeQuantity
    borrowing_limit: NonNegativeQuantity | None = None
    lending_limit: NonNegativeQuantity | None = None


class FlavorQuotas(ApiModel):
    name: ObjectName
    resources: list[ResourceQuota] = Field(min_length=1, max_length=MAX_RESOURCES_PER_FLAVOR)


class ResourceGroup(ApiModel):
    covered_resources: list[ResourceName] = Field(min_length=1, max_length=MAX_RESOURCES_PER_FLAVOR)
    flavors: list[FlavorQuotas] = Field(min_length=1, max_length=MAX_FLAVORS_PER_GROUP)


class FairSharing(ApiModel):
    """Share weight: a higher weight earns a larger part of what the cohort lends; 0 borrows last."""

    weight: NonNegativeQuantity = Decimal(1)


class LabelSelectorRequirement(ApiModel):
    key: QualifiedName
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise PydanticCustomError("selector", "values must be non-empty for operator {op}", {"op": self.operator})
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise PydanticCustomError("selector", "values must be empty for operator {op}", {"op": self.operator})
        return self


class LabelSelector(ApiModel):
    match_labels: Labels = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label-selector semantics; an empty selector matches everything."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class BorrowWithinCohort(ApiModel):
    policy: Literal["Never", "LowerPriority"] = "Never"
    max_priority_threshold: Int32 | None = None


class ClusterQueuePreemption(ApiModel):
    reclaim_within_cohort: Literal["Never", "LowerPriority", "Any"] = "Never"
    borrow_within_cohort: BorrowWithinCohort | None = None
    within_cluster_queue: Literal["Never", "LowerPriority", "LowerOrNewerEqualPriority"] = "Never"


class FlavorFungibility(ApiModel):
    """When to stop trying further flavors (Kueue v1beta1 names and defaults)."""

    when_can_borrow: Literal["Borrow", "TryNextFlavor"] = "Borrow"
    when_can_preempt: Literal["Preempt", "TryNextFlavor"] = "TryNextFlavor"


class ClusterQueueSpec(ApiModel):
    cohort: ObjectName | None = None
    # Kueue semantics: no selector admits from no namespace; `{}` admits from all.
    namespace_selector: LabelSelector | None = None
    queueing_strategy: Literal["BestEffortFIFO", "StrictFIFO"] = "BestEffortFIFO"
    resource_groups: list[ResourceGroup] = Field(default_factory=list, max_length=MAX_RESOURCE_GROUPS)
    preemption: ClusterQueuePreemption = Field(default_factory=ClusterQueuePreemption)
    fair_sharing: FairSharing | None = None
    flavor_fungibility: FlavorFungibility = Field(default_factory=FlavorFungibility)
    stop_policy: Literal["None", "Hold", "HoldAndDrain"] = "None"


class QueueStatus(ApiModel):
    """What the operator reports; read by printer columns and `kubectl get`."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    pending_workloads: int = 0
    reserving_workloads: int = 0
    admitted_workloads: int = 0
    conditions: list[dict[str, Any]] = Field(default_factory=list)


class ResourceUsage(ApiModel):
    """Quota of one resource in use: `total`, and the part above the nominal quota (`borrowed`)."""

    name: ResourceName
    total: Quantity = Decimal(0)
    borrowed: Quantity = Decimal(0)


class FlavorUsage(ApiModel):
    name: ObjectName
    resources: list[ResourceUsage] = Field(default_factory=list)


class ClusterQueueStatus(QueueStatus):
    """Kueue's ClusterQueueStatus: quota reserved (`flavorsReservation`) and used by admitted workloads (`flavorsUsage`)."""

    flavors_reservation: list[FlavorUsage] = Field(default_factory=list)
    flavors_usage: list[FlavorUsage] = Field(default_factory=list)


class LocalQueueResourceUsage(ApiModel):
    name: ResourceName
    total: Quantity = Decimal(0)


class LocalQueueFlavorUsage(ApiModel):
    name: ObjectName
    resources: list[LocalQueueResourceUsage] = Field(default_factory=list)


class LocalQueueStatus(QueueStatus):
    """Kueue's LocalQueueStatus: what the queue's own workloads reserve (`flavorsReservation`) and use (`flavorUsage`)."""

    flavors_reservation: list[LocalQueueFlavorUsage] = Field(default_factory=list)
    flavor_usage: list[LocalQueueFlavorUsage] = Field(default_factory=list)


class ClusterQueue(TessObject):
    """Quota for a set of namespaces, per flavor and resource, optionally shared through a cohort."""

    kind: Literal["ClusterQueue"] = "ClusterQueue"
    spec: ClusterQueueSpec = Field(default_factory=ClusterQueueSpec)
    status: ClusterQueueStatus | None = None


class CohortSpec(ApiModel):
    parent_name: ObjectName | None = None
    resource_groups: list[ResourceGroup] = Field(default_factory=list, max_length=MAX_RESOURCE_GROUPS)
    fair_sharing: FairSharing | None = None


class Cohort(TessObject):
    """An inner node of the sharing tree: ClusterQueues and child Cohorts borrow from each other through it."""

    kind: Literal["Cohort"] = "Cohort"
    spec: CohortSpec = Field(default_factory=CohortSpec)
    status: dict[str, Any] | None = None


# --- LocalQueue, priorities, topology --------------------------------------------------------


class LocalQueueSpec(ApiModel):
    cluster_queue: ObjectName
    stop_policy: Literal["None", "Hold", "HoldAndDrain"] = "None"


class LocalQueue(TessObject):
    """The namespaced queue users name in `tessera.dev/queue-name`."""

    kind: Literal["LocalQueue"] = "LocalQueue"
    spec: LocalQueueSpec
    status: LocalQueueStatus | None = None

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


class WorkloadPriorityClass(TessObject):
    kind: Literal["WorkloadPriorityClass"] = "WorkloadPriorityClass"
    value: Int32
    description: str = ""


class TopologyLevel(ApiModel):
    node_label: QualifiedName


class TopologySpec(ApiModel):
    levels: list[TopologyLevel] = Field(min_length=1, max_length=MAX_TOPOLOGY_LEVELS)


class Topology(TessObject):
    """Levels of the data-centre hierarchy (outermost first) read from node labels."""

    kind: Literal["Topology"] = "Topology"
    spec: TopologySpec

    @property
    def level_labels(self) -> list[str]:
        return [level.node_label for level in self.spec.levels]


# --- Workload --------------------------------------------------------------------------------


class PodSetTopologyRequest(ApiModel):
    required: QualifiedName | None = None
    preferred: QualifiedName | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PodSetTopologyRequest:
        if self.required and self.preferred:
            raise PydanticCustomError("topology_request", "set required or preferred, not both", {})
        if not self.required and not self.preferred:
            raise PydanticCustomError("topology_request", "set required or preferred", {})
        return self


class PodSet(ApiModel):
    name: LabelName = "main"
    count: int = Field(ge=0)
    min_count: int | None = Field(default=None, ge=1)
    template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)
    topology_request: PodSetTopologyRequest | None = None

    @model_validator(mode="after")
    def _min_le_count(self) -> PodSet:
        if self.min_count is not None and self.min_count > self.count:
            raise PydanticCustomError(
                "min_count", "minCount ({min}) must not exceed count ({count})", {"min": self.min_count, "count": self.count}
            )
        return self


class WorkloadSpec(ApiModel):
    queue_name: ObjectName
    priority_class_name: ObjectName | None = None
    priority: Int32 | None = None
    active: bool = True
    pod_sets: list[PodSet] = Field(min_length=1, max_length=MAX_PODSETS)


WorkloadConditionType = Literal["QuotaReserved", "Admitted", "Evicted", "Preempted", "Finished", "Requeued", "PodsReady"]


class Condition(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class TopologyDomainAssignment(ApiModel):
    values: list[str]
    count: int = Field(ge=1)


class TopologyAssignment(ApiModel):
    levels: list[QualifiedName]
    domains: list[TopologyDomainAssignment]


class NodeAssignment(ApiModel):
    """Pods of a podset planned on one node (by a policy that places pods: `tessera`)."""

    name: ObjectName
    count: int = Field(ge=1)


class PodSetAssignment(ApiModel):
    name: LabelName
    flavors: dict[str, ObjectName] = Field(default_factory=dict)
    resource_usage: dict[str, Quantity] = Field(default_factory=dict)
    count: int | None = Field(default=None, ge=0)
    topology_assignment: TopologyAssignment | None = None
    nodes: list[NodeAssignment] | None = None
    """The per-pod placement plan as pods per node; the operator ungates each pod onto one of them."""


class Admission(ApiModel):
    cluster_queue: ObjectName
    pod_set_assignments: list[PodSetAssignment] = Field(default_factory=list)


class RequeueState(ApiModel):
    count: int | None = None
    requeue_at: str | None = None


class WorkloadStatus(ApiModel):
    conditions: list[Condition] = Field(default_factory=list)
    admission: Admission | None = None
    requeue_state: RequeueState | None = None


class Workload(TessObject):
    """One queued job as the scheduler sees it: podsets with per-pod requests, queue and priority."""

    kind: Literal["Workload"] = "Workload"
    spec: WorkloadSpec
    status: WorkloadStatus | None = None

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


# --- Configuration ---------------------------------------------------------------------------

PreemptionStrategy = Literal["LessThanOrEqualToFinalShare", "LessThanInitialShare"]


class FairSharingConfig(ApiModel):
    enable: bool = False
    preemption_strategies: list[PreemptionStrategy] = Field(
        default_factory=lambda: ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
    )


class AdmissionFairSharingConfig(ApiModel):
    usage_half_life_time: Duration
    usage_sampling_interval: Duration = 300.0
    resource_weights: dict[ResourceName, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class RequeuingStrategy(ApiModel):
    timestamp: Literal["Eviction", "Creation"] = "Eviction"
    backoff_limit_count: int | None = Field(default=None, ge=0)
    backoff_base_seconds: int = Field(default=60, ge=0)
    backoff_max_seconds: int = Field(default=3600, ge=0)


class WaitForPodsReadyConfig(ApiModel):
    enable: bool = False
    # DESIGN.md fixes 30 minutes as Tessera's default (Kueue v1beta1's is 5 minutes).
    timeout: Duration = 1800.0
    block_admission: bool = False
    requeuing_strategy: RequeuingStrategy = Field(default_factory=RequeuingStrategy)


class SolverConfig(ApiModel):
    time_limit: Duration = 1.0
    workers: int = Field(default=2, ge=1, le=64)
    max_candidates: int | None = Field(default=None, ge=1, le=100_000)
    """Pending workloads one cycle's model decides (`tessera`): the greedy pass's last admissions
    and the first workloads it left out; the rest keep the greedy's decisions. Larger is more
    global and slower. None: a quarter of the cluster's nodes, at least 40 and at most 300
    (docs/solver.md, *Scaling*)."""


Framework = Literal["batch/job", "jobset.x-k8s.io/jobset", "kubeflow.org/pytorchjob", "deployment"]
DEFAULT_FRAMEWORKS: tuple[Framework, ...] = ("batch/job", "jobset.x-k8s.io/jobset", "kubeflow.org/pytorchjob")


class IntegrationsConfig(ApiModel):
    """Which kinds the operator queues (Kueue's `integrations.frameworks`, same names)."""

    frameworks: list[Framework] = Field(default_factory=lambda: list(DEFAULT_FRAMEWORKS))


class Configuration(ApiModel):
    """Scheduler-wide settings, read by the operator from a file and by the simulator from the queues file."""

    api_version: Literal["tessera.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["Configuration"] = "Configuration"
    metadata: TessMeta | None = None
    fair_sharing: FairSharingConfig = Field(default_factory=FairSharingConfig)
    admission_fair_sharing: AdmissionFairSharingConfig | None = None
    wait_for_pods_ready: WaitForPodsReadyConfig = Field(default_factory=WaitForPodsReadyConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    integrations: IntegrationsConfig = Field(default_factory=IntegrationsConfig)

    @property
    def name(self) -> str:
        return self.metadata.name if self.metadata else "config"


TESSERA_KINDS: dict[str, type[ApiModel]] = {
    "ResourceFlavor": ResourceFlavor,
    "ClusterQueue": ClusterQueue,
    "LocalQueue": LocalQueue,
    "Cohort": Cohort,
    "WorkloadPriorityClass": WorkloadPriorityClass,
    "Topology": Topology,
    "Workload": Workload,
    "Configuration": Configuration,
}
NAMESPACED_KINDS = frozenset({"LocalQueue", "Workload"})

"""What a scheduling cycle sees: cluster, quotas, admitted and pending workloads, settings.

Both the simulator and the operator build a `Snapshot` and hand it to a policy's
`schedule()`; nothing in here reads Kubernetes, SQL or files. A snapshot is the state
at one instant; policies must not mutate it (they work on copies: `Cluster.copy()`,
and `Usage` is immutable).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from quotas.admission_fair_sharing import AdmissionFairSharing
from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor, Topology
from quotas.preemption import AdmittedWorkload
from quotas.tree import QuotaTree
from quotas.units import FlavorResource
from quotas.usage import Usage
from scheduler.cluster import Binding, Cluster
from scheduler.workload import WorkloadInfo


@dataclass(frozen=True)
class PodSetPlacement:
    """Where one podset went: its flavor per resource, pod count, node of each bound pod, topology domain."""

    name: str
    count: int
    flavors: Mapping[str, str]
    nodes: tuple[str, ...] = ()
    """One node name per pod bound so far; shorter than `count` while pods wait for kube-scheduler."""
    domain: tuple[str, ...] | None = None
    """Topology domain (label values from the top level down) the podset was confined to, if any."""


@dataclass(frozen=True)
class Admitted:
    """A workload holding quota: admitted at `admitted_at`, in `cluster_queue`, charging `usage`."""

    workload: WorkloadInfo
    cluster_queue: str
    admitted_at: float
    usage: Mapping[FlavorResource, int]
    podsets: tuple[PodSetPlacement, ...]
    bindings: tuple[Binding, ...] = ()
    """Pods bound to nodes (the cluster in the snapshot already counts them)."""
    evicted: bool = False

    @functools.cached_property
    def key(self) -> str:
        """(Cached: every cycle reads it for every admitted workload, several times.)"""
        return self.workload.key

    @property
    def placed(self) -> bool:
        """Every pod of every podset is bound to a node (the workload has started)."""
        return all(len(p.nodes) >= p.count for p in self.podsets)

    def as_candidate(self) -> AdmittedWorkload:
        """The quota engine's view of this workload, for preemption (one per object: every cycle
        that looks for victims asks it of every admitted workload)."""
        return self._candidate

    @functools.cached_property
    def _candidate(self) -> AdmittedWorkload:
        return AdmittedWorkload(
            key=self.key,
            cluster_queue=self.cluster_queue,
            priority=self.workload.priority,
            admitted_at=self.admitted_at,
            usage=dict(self.usage),
            evicted=self.evicted,
            queued_at=self.workload.creation_time,
        )


def fair_sharing_charge(admitted: Admitted) -> tuple[str, dict[str, float]]:
    """What admission fair sharing charges for an admitted workload: its LocalQueue key
    (``namespace/name``) and what it holds per resource, in units (not milli)."""
    totals: dict[str, float] = {}
    for (_, resource), amount in admitted.usage.items():
        totals[resource] = totals.get(resource, 0.0) + amount / 1000
    w = admitted.workload
    return f"{w.namespace}/{w.local_queue}", totals


@dataclass(frozen=True)
class Pending:
    """A workload waiting for quota: queued since `queued_at` (eviction requeues reset it)."""

    workload: WorkloadInfo
    queued_at: float
    requeue_count: int = 0
    not_before: float = 0.0
    """Requeue backoff: not to be considered before this time."""
    nominated_nodes: frozenset[str] = frozenset()
    """Nodes that the preemptions this workload caused are freeing for it (kube-scheduler's
    nominated node): a policy keeps them from work that does not outrank it, so that the
    capacity the victims give up goes to the preemptor and is not taken, then preempted again."""

    @functools.cached_property
    def key(self) -> str:
        return self.workload.key


_KEY = attrgetter("key")
_last_admitted_keys: tuple[list[Admitted], frozenset[str]] | None = None
"""`Snapshot.admitted_keys` of the last list asked about."""


@dataclass
class Snapshot:
    """The whole input of one cycle; see the module docstring."""

    now: float
    cluster: Cluster
    tree: QuotaTree
    usage: Usage
    flavors: Mapping[str, ResourceFlavor]
    cluster_queues: Mapping[str, ClusterQueue]
    local_queues: Mapping[tuple[str, str], LocalQueue]
    admitted: list[Admitted]
    pending: list[Pending]
    topologies: Mapping[str, Topology] = field(default_factory=dict)
    config: Configuration = field(default_factory=Configuration)
    admission_fair_sharing: AdmissionFairSharing | None = None
    seed: int = 0
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Labels per namespace, for ClusterQueues' `namespaceSelector` (every namespace also
    carries `kubernetes.io/metadata.name`, as Kubernetes sets it)."""
    known_admitted_keys: frozenset[str] | None = None
    """The keys of `admitted`, when the builder already has them (the simulator keeps them until
    a workload is admitted or leaves, while the list itself is replaced at every pod bind);
    `admitted_keys` computes them from the list otherwise. A snapshot copied with another
    `admitted` list must not keep them."""

    @property
    def admitted_keys(self) -> frozenset[str]:
        """The keys of the admitted workloads, cached for the list object (a list is replaced,
        never changed in place): a cycle asks several times. A builder that keeps the keys itself
        hands them over in `known_admitted_keys` (the simulator does)."""
        known = self.known_admitted_keys
        if known is not None and len(known) == len(self.admitted):  # (a copy with another list: recomputed)
            return known
        global _last_admitted_keys
        got = _last_admitted_keys
        if got is None or got[0] is not self.admitted:
            got = _last_admitted_keys = (self.admitted, frozenset(map(_KEY, self.admitted)))
        return got[1]

    def cluster_queue_of(self, workload: WorkloadInfo) -> str | None:
        """The ClusterQueue behind a workload's LocalQueue, or None when the LocalQueue is unknown."""
        if workload.cluster_queue:
            return workload.cluster_queue
        queue = self.local_queues.get((workload.namespace, workload.local_queue))
        return queue.spec.cluster_queue if queue else None


def build_snapshot(
    *,
    now: float,
    cluster: Cluster,
    cluster_queues: Iterable[ClusterQueue],
    cohorts: Iterable[Cohort],
    flavors: Iterable[ResourceFlavor],
    local_queues: Iterable[LocalQueue],
    admitted: Iterable[Admitted] = (),
    pending: Iterable[Pending] = (),
    topologies: Iterable[Topology] = (),
    config: Configuration | None = None,
    admission_fair_sharing: AdmissionFairSharing | None = None,
    seed: int = 0,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> Snapshot:
    """A snapshot from the objects, with the quota tree built and usage charged for `admitted`."""
    queues = list(cluster_queues)
    tree = QuotaTree(queues, list(cohorts))
    admitted = list(admitted)
    usage = Usage.of_admitted(tree, [(a.cluster_queue, dict(a.usage)) for a in admitted])
    return Snapshot(
        now=now,
        cluster=cluster,
        tree=tree,
        usage=usage,
        flavors={f.name: f for f in flavors},
        cluster_queues={q.name: q for q in queues},
        local_queues={(q.namespace, q.name): q for q in local_queues},
        admitted=admitted,
        pending=list(pending),
        topologies={t.name: t for t in topologies},
        config=config or Configuration(),
        admission_fair_sharing=admission_fair_sharing,
        seed=seed,
        namespace_labels=dict(namespace_labels or {}),
    )

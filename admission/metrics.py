"""The operator's Prometheus metrics (issue 6, item 7), on their own registry so tests can run several operators.

Counters and histograms are updated where things happen (admission, eviction, preemption,
each cycle); gauges are recomputed from the cycle's snapshot after every cycle
(`Metrics.observe_cycle`), so they are never out of step with what the scheduler saw.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from quotas.fair_sharing import dominant_resource_share
from quotas.units import MILLI
from scheduler.cluster import GPU_RESOURCE
from scheduler.decisions import Decisions
from scheduler.snapshot import Snapshot

WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
CYCLE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """All metrics of one operator; `render()` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pending = Gauge("tessera_pending_workloads", "Workloads waiting for quota, by ClusterQueue and status "
                             "(active: may be admitted now; inadmissible: in requeue backoff or unknown queue)",
                             ["cluster_queue", "status"], registry=r)
        self.admitted = Counter("tessera_admitted_workloads_total", "Workloads admitted (quota reserved)",
                                ["cluster_queue"], registry=r)
        self.wait = Histogram("tessera_admission_wait_time_seconds", "Time from queueing to admission",
                              ["cluster_queue"], buckets=WAIT_BUCKETS, registry=r)
        self.evicted = Counter("tessera_evicted_workloads_total", "Workloads evicted, by reason",
                               ["cluster_queue", "reason"], registry=r)
        self.preempted = Counter("tessera_preempted_workloads_total", "Workloads preempted, by preemption reason",
                                 ["cluster_queue", "reason"], registry=r)
        self.usage = Gauge("tessera_cluster_queue_resource_usage", "Quota in use (units, not milli)",
                           ["cluster_queue", "flavor", "resource"], registry=r)
        self.nominal = Gauge("tessera_cluster_queue_nominal_quota", "Nominal quota (units)",
                             ["cluster_queue", "flavor", "resource"], registry=r)
        self.weighted_share = Gauge("tessera_cluster_queue_weighted_share",
                                    "Kueue's weightedShare: per-mille of the cohort's lendable quota borrowed, for "
                                    "the dominant resource, over the fair-sharing weight (0 when not borrowing)",
                                    ["cluster_queue"], registry=r)
        self.cycle = Histogram("tessera_scheduling_cycle_seconds", "Duration of the policy's schedule() call",
                               ["policy"], buckets=CYCLE_BUCKETS, registry=r)
        self.solver = Counter("tessera_solver_outcomes_total", "Cycle outcomes by solver status "
                              "(OPTIMAL, FEASIBLE, ... for the CP-SAT policy; the policy name otherwise)",
                              ["status"], registry=r)
        self.gpu_allocation = Gauge("tessera_gpu_allocation_ratio",
                                    "GPUs requested by running pods over allocatable GPUs", registry=r)
        self.leader = Gauge("tessera_leader", "1 while this replica holds the leader Lease", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- events ----------------------------------------------------------------------------------

    def observe_decisions(self, decisions: Decisions) -> None:
        self.cycle.labels(decisions.stats.policy or "unknown").observe(decisions.stats.seconds)
        self.solver.labels(decisions.stats.solver_status or decisions.stats.policy or "unknown").inc()

    def observe_admission(self, cluster_queue: str, waited: float) -> None:
        self.admitted.labels(cluster_queue).inc()
        self.wait.labels(cluster_queue).observe(max(waited, 0.0))

    def observe_eviction(self, cluster_queue: str, reason: str, preemption_reason: str | None = None) -> None:
        self.evicted.labels(cluster_queue, reason).inc()
        if preemption_reason is not None:
            self.preempted.labels(cluster_queue, preemption_reason).inc()

    # --- state --------------------------------------------------------------------------------

    def observe_cycle(self, snapshot: Snapshot) -> None:
        """Gauges from one snapshot: pending per queue, usage and quota per flavor/resource, GPU allocation."""
        self.pending.clear()
        counts: dict[tuple[str, str], int] = {}
        for queue in snapshot.cluster_queues:
            counts[(queue, "active")] = 0
            counts[(queue, "inadmissible")] = 0
        for pending in snapshot.pending:
            queue = snapshot.cluster_queue_of(pending.workload)
            status = "inadmissible" if queue is None or pending.not_before > snapshot.now else "active"
            k = (queue or "", status)
            counts[k] = counts.get(k, 0) + 1
        for (queue, status), n in counts.items():
            self.pending.labels(queue, status).set(n)

        self.usage.clear()
        self.nominal.clear()
        self.weighted_share.clear()
        used: dict[tuple[str, str, str], int] = {}
        for admitted in snapshot.admitted:
            for (flavor, resource), amount in admitted.usage.items():
                k = (admitted.cluster_queue, flavor, resource)
                used[k] = used.get(k, 0) + amount
        for name, queue in snapshot.cluster_queues.items():
            for group in queue.spec.resource_groups:
                for flavor in group.flavors:
                    for quota in flavor.resources:
                        amount = used.get((name, flavor.name, quota.name), 0)
                        self.nominal.labels(name, flavor.name, quota.name).set(float(quota.nominal_quota))
                        self.usage.labels(name, flavor.name, quota.name).set(amount / MILLI)
            try:
                share = dominant_resource_share(snapshot.tree, snapshot.usage, name).rounded
            except (KeyError, ValueError):
                continue
            self.weighted_share.labels(name).set(share)

        capacity = snapshot.cluster.capacity(GPU_RESOURCE)
        self.gpu_allocation.set(snapshot.cluster.allocated(GPU_RESOURCE) / capacity if capacity else 0.0)

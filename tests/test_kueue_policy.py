"""The `kueue` policy and its placement variants on small crafted cases, through `schedule()`.

Quota and preemption examples are Kueue's documented ones (see docs/quotas.md); placement
cases show what admission by quota plus kube-scheduler placement does to a cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor, Topology, Workload
from quotas.units import MILLI
from scheduler.cluster import Binding, Cluster, NodeInfo, PodRequest
from scheduler.decisions import Decisions, make_policy
from scheduler.kueue import (
    KueuePolicy,
    admitted_from_admission,
    apply_pod_bindings,
    bind_pending_pods,
    greedy_cycle,
)
from scheduler.placement import default_profile
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot, build_snapshot
from scheduler.workload import WorkloadInfo

GPU = "nvidia.com/gpu"
G = MILLI
GI = 1024**3 * MILLI
BLOCK, RACK, HOST = "cloud.example.com/block", "cloud.example.com/rack", "kubernetes.io/hostname"


# --- builders -----------------------------------------------------------------------------------


def flavor(name: str, labels: dict[str, str] | None = None, topology: str | None = None, **spec: Any) -> ResourceFlavor:
    body: dict[str, Any] = {"nodeLabels": labels or {}, **spec}
    if topology:
        body["topologyName"] = topology
    return ResourceFlavor.model_validate({"metadata": {"name": name}, "spec": body})


def cluster_queue(
    name: str,
    gpus: float | dict[str, float],
    *,
    cohort: str | None = None,
    borrowing_limit: float | None = None,
    lending_limit: float | None = None,
    **spec: Any,
) -> ClusterQueue:
    per_flavor = gpus if isinstance(gpus, dict) else {"a100": gpus}
    flavors = []
    for fname, amount in per_flavor.items():
        rq: dict[str, Any] = {"name": GPU, "nominalQuota": amount}
        if borrowing_limit is not None:
            rq["borrowingLimit"] = borrowing_limit
        if lending_limit is not None:
            rq["lendingLimit"] = lending_limit
        # cpu and memory are covered generously: Kueue admits nothing that requests an uncovered resource
        flavors.append({"name": fname, "resources": [rq, {"name": "cpu", "nominalQuota": 10000}, {"name": "memory", "nominalQuota": "100Ti"}]})
    groups = [{"coveredResources": [GPU, "cpu", "memory"], "flavors": flavors}]
    body: dict[str, Any] = {"namespaceSelector": {}, "resourceGroups": groups, **spec}
    if cohort:
        body["cohort"] = cohort
    return ClusterQueue.model_validate({"metadata": {"name": name}, "spec": body})


def local_queue(namespace: str, name: str, cq: str, **spec: Any) -> LocalQueue:
    return LocalQueue.model_validate({"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": cq, **spec}})


def topology(name: str = "dc") -> Topology:
    return Topology.model_validate(
        {"metadata": {"name": name}, "spec": {"levels": [{"nodeLabel": BLOCK}, {"nodeLabel": RACK}, {"nodeLabel": HOST}]}}
    )


def workload(
    name: str,
    gpus: float,
    count: int = 1,
    *,
    ns: str = "ns",
    queue: str = "lq",
    priority: int = 0,
    created: float = 0.0,
    min_count: int | None = None,
    cpu: float = 1,
    memory: str = "1Gi",
    required: str | None = None,
    preferred: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> WorkloadInfo:
    requests: dict[str, Any] = {"cpu": str(cpu), "memory": memory}
    if gpus:
        requests[GPU] = str(gpus)
    podset: dict[str, Any] = {
        "name": "main",
        "count": count,
        "template": {"spec": {"containers": [{"name": "c", "resources": {"requests": requests}}], "nodeSelector": node_selector or {}}},
    }
    if min_count is not None:
        podset["minCount"] = min_count
    if required or preferred:
        podset["topologyRequest"] = {"required": required} if required else {"preferred": preferred}
    wl = Workload.model_validate(
        {"metadata": {"name": name, "namespace": ns}, "spec": {"queueName": queue, "priority": priority, "podSets": [podset]}}
    )
    return WorkloadInfo.from_workload(wl, creation_time=created)


def node(name: str, gpus: int = 8, labels: dict[str, str] | None = None, cpu: int = 64, memory_gi: int = 512) -> NodeInfo:
    return Cluster.make_node(
        name, {GPU: gpus * G, "cpu": cpu * G, "memory": memory_gi * GI, "pods": 110 * G}, {HOST: name, **(labels or {})}
    )


def admitted(w: WorkloadInfo, cq: str, at: float, flavor_name: str = "a100", count: int | None = None) -> Admitted:
    n = w.podsets[0].count if count is None else count
    gpus = w.podsets[0].requests.get(GPU) * n
    return Admitted(w, cq, at, {(flavor_name, GPU): gpus}, (PodSetPlacement("main", n, {GPU: flavor_name}),))


@dataclass
class World:
    """A tiny simulator: applies decisions, binds pods as kube-scheduler, rebuilds snapshots."""

    cluster: Cluster
    queues: list[ClusterQueue]
    flavors: list[ResourceFlavor] = field(default_factory=lambda: [flavor("a100")])
    local_queues: list[LocalQueue] = field(default_factory=list)
    cohorts: list[Cohort] = field(default_factory=list)
    topologies: list[Topology] = field(default_factory=list)
    admitted: list[Admitted] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    config: Configuration | None = None
    now: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.local_queues:
            self.local_queues = [local_queue("ns", "lq", self.queues[0].name)]

    def submit(self, *workloads: WorkloadInfo) -> None:
        for w in workloads:
            self.pending.append(Pending(w, w.creation_time))

    def snapshot(self) -> Snapshot:
        return build_snapshot(
            now=self.now, cluster=self.cluster, cluster_queues=self.queues, cohorts=self.cohorts, flavors=self.flavors,
            local_queues=self.local_queues, admitted=self.admitted, pending=self.pending, topologies=self.topologies,
            config=self.config, seed=self.seed,
        )

    def step(self, policy: Any, bind: bool = True) -> Decisions:
        snap = self.snapshot()
        decisions = policy.schedule(snap)
        by_key = {p.key: p for p in self.pending}
        for pre in decisions.preemptions:
            self.finish(pre.key)
        for adm in decisions.admissions:
            self.admitted.append(admitted_from_admission(self.cluster, adm, by_key[adm.key].workload, self.now))
            self.pending = [p for p in self.pending if p.key != adm.key]
        if bind:
            made = policy.bind_pending(self.cluster, self.admitted, snap)
            self.admitted = apply_pod_bindings(self.admitted, made)
        self.now += 1
        return decisions

    def finish(self, key: str) -> None:
        for a in self.admitted:
            if a.key == key:
                for b in a.bindings:
                    self.cluster.unbind(b)
        self.admitted = [a for a in self.admitted if a.key != key]

    def record(self, key: str) -> Admitted:
        return next(a for a in self.admitted if a.key == key)


def gpu_cluster(n: int = 3, gpus: int = 8) -> Cluster:
    return Cluster([node(f"n{i}", gpus) for i in range(n)])


def keys(decisions: Decisions) -> list[str]:
    return [a.key for a in decisions.admissions]


# --- Kueue's quota examples through schedule() ----------------------------------------------------


@pytest.mark.parametrize(
    ("a_limits", "b_limits", "gpus", "fits"),
    [
        pytest.param({}, {}, 21, True, id="team-a uses 21 while team-b is idle"),
        pytest.param({}, {}, 22, False, id="22 never fits"),
        pytest.param({"borrowing_limit": 1}, {}, 10, True, id="borrowingLimit 1: 10 fits"),
        pytest.param({"borrowing_limit": 1}, {}, 11, False, id="borrowingLimit 1: 11 does not"),
        pytest.param({}, {"lending_limit": 1}, 10, True, id="team-b lendingLimit 1: 10 fits"),
        pytest.param({}, {"lending_limit": 1}, 11, False, id="team-b lendingLimit 1: 11 does not"),
    ],
)
def test_cohort_borrowing_9_plus_12(a_limits: dict[str, float], b_limits: dict[str, float], gpus: int, fits: bool) -> None:
    world = World(
        gpu_cluster(4),
        [cluster_queue("team-a", 9, cohort="team-ab", **a_limits), cluster_queue("team-b", 12, cohort="team-ab", **b_limits)],
        local_queues=[local_queue("ns-a", "lq", "team-a"), local_queue("ns-b", "lq", "team-b")],
    )
    world.submit(workload("big", 1, count=gpus, ns="ns-a"))
    decisions = world.step(KueuePolicy(), bind=False)
    if fits:
        assert keys(decisions) == ["ns-a/big"]
        adm = decisions.admissions[0]
        assert adm.usage[("a100", GPU)] == gpus * G
        assert adm.borrows
        assert adm.podsets[0].nodes == ()
    else:
        assert decisions.admissions == []
        reason = decisions.pending["ns-a/big"]
        assert reason.startswith(f"insufficient quota in ClusterQueue team-a for {GPU} in flavor a100: needs {gpus}, ")
        if "borrowing_limit" in a_limits:
            assert "borrowing limit 1" in reason
        assert "cohort team-ab" in reason


def test_within_cluster_queue_preemption_takes_only_the_lowest_of_three() -> None:
    world = World(gpu_cluster(1), [cluster_queue("q", 3, preemption={"withinClusterQueue": "LowerPriority"})])
    low, mid, high = (workload(n, 1, priority=p, created=t) for n, p, t in (("low", 0, 1), ("mid", 50, 2), ("high", 100, 3)))
    world.admitted = [admitted(low, "q", 1), admitted(mid, "q", 2), admitted(high, "q", 3)]
    world.submit(workload("new", 1, priority=100, created=10))
    policy = KueuePolicy()
    first = world.step(policy, bind=False)
    assert [(p.key, str(p.reason), p.preemptor) for p in first.preemptions] == [("ns/low", "InClusterQueue", "ns/new")]
    assert first.admissions == []  # Kueue waits for the victim to be gone
    assert first.pending["ns/new"].startswith("waiting for preemption of 1 workload (ns/low)")
    second = world.step(policy, bind=False)  # the World removed the victim
    assert keys(second) == ["ns/new"]
    assert {a.key for a in world.admitted} == {"ns/mid", "ns/high", "ns/new"}


def test_cohort_reclaim_takes_the_borrowers_job_and_leaves_the_reclaimers_own() -> None:
    preemption = {"reclaimWithinCohort": "LowerPriority", "withinClusterQueue": "LowerPriority"}
    world = World(
        gpu_cluster(1),
        [cluster_queue("team-a", 3, cohort="c", preemption=preemption), cluster_queue("team-b", 3, cohort="c", preemption=preemption)],
        local_queues=[local_queue("ns-a", "lq", "team-a"), local_queue("ns-b", "lq", "team-b")],
    )
    a1 = workload("a1", 1, count=3, ns="ns-a", created=1)
    a2 = workload("a2", 1, count=2, ns="ns-a", created=2)  # borrowed from team-b
    b_own = workload("b-own", 1, ns="ns-b", created=3)
    world.admitted = [admitted(a1, "team-a", 1), admitted(a2, "team-a", 2), admitted(b_own, "team-b", 3)]
    world.submit(workload("b-new", 1, count=2, ns="ns-b", priority=10, created=10))
    decisions = world.step(KueuePolicy(), bind=False)
    assert [(p.key, str(p.reason)) for p in decisions.preemptions] == [("ns-a/a2", "InCohortReclamation")]
    assert decisions.pending["ns-b/b-new"].startswith("waiting for preemption of 1 workload")


def test_no_candidates_reason_names_quota_and_policy() -> None:
    world = World(gpu_cluster(1), [cluster_queue("q", 4)])
    world.admitted = [admitted(workload("run", 1, count=2, created=1), "q", 1)]
    world.submit(workload("big", 1, count=4, priority=10, created=2))
    decisions = world.step(KueuePolicy(), bind=False)
    reason = decisions.pending["ns/big"]
    assert reason.startswith(f"insufficient quota in ClusterQueue q for {GPU} in flavor a100: needs 4, 2 available (nominal quota 4, not in a cohort)")
    assert "no workload can be preempted (withinClusterQueue: Never, reclaimWithinCohort: Never)" in reason


# --- queueing strategies, heads, partial admission -------------------------------------------------


def _fifo_world(strategy: str) -> World:
    world = World(gpu_cluster(1), [cluster_queue("q", 5, queueingStrategy=strategy)])
    world.admitted = [admitted(workload("run", 1, count=2, created=1), "q", 1)]
    world.submit(workload("big", 1, count=4, priority=10, created=2), workload("small", 1, created=3))
    return world


def test_strict_fifo_head_blocks_the_queue() -> None:
    world = _fifo_world("StrictFIFO")
    policy = KueuePolicy()
    for _ in range(3):
        decisions = world.step(policy, bind=False)
        assert decisions.admissions == []
        assert decisions.pending["ns/small"].startswith("blocked by ns/big, the head of StrictFIFO ClusterQueue q: insufficient quota")
        assert decisions.stats.solver_status == "SlowDown"


def test_best_effort_fifo_moves_on_next_cycle_and_requeues_on_release() -> None:
    world = _fifo_world("BestEffortFIFO")
    policy = KueuePolicy()
    first = world.step(policy, bind=False)
    assert first.admissions == []
    assert "set aside" in first.pending["ns/small"]
    assert first.again and first.stats.solver_status == "KeepGoing"  # another cycle at this instant can do more
    second = world.step(policy, bind=False)
    assert keys(second) == ["ns/small"]
    assert second.pending["ns/big"].startswith("insufficient quota in ClusterQueue q")  # still set aside
    world.finish("ns/run")  # quota released in the tree: the set-aside head is requeued
    third = world.step(policy, bind=False)
    assert keys(third) == ["ns/big"]


def test_drain_runs_back_to_back_cycles_at_one_instant() -> None:
    world = _fifo_world("BestEffortFIFO")
    decisions = greedy_cycle(world.snapshot(), drain=True)
    assert keys(decisions) == ["ns/small"]
    assert decisions.stats.solver_status == "SlowDown"


def test_partial_admission_down_to_min_count() -> None:
    world = World(gpu_cluster(1), [cluster_queue("q", 5)])
    world.submit(workload("elastic", 1, count=8, min_count=2))
    decisions = world.step(KueuePolicy(), bind=False)
    assert keys(decisions) == ["ns/elastic"]
    assert decisions.admissions[0].podsets[0].count == 5
    assert decisions.admissions[0].usage[("a100", GPU)] == 5 * G


def test_partial_admission_not_below_min_count() -> None:
    world = World(gpu_cluster(1), [cluster_queue("q", 5)])
    world.submit(workload("elastic", 1, count=8, min_count=6))
    decisions = world.step(KueuePolicy(), bind=False)
    assert decisions.admissions == []
    assert "needs 8" in decisions.pending["ns/elastic"]


def test_one_head_per_cluster_queue_per_cycle() -> None:
    world = World(
        gpu_cluster(2),
        [cluster_queue("q", 8), cluster_queue("r", 8)],
        local_queues=[local_queue("ns", "lq", "q"), local_queue("ns", "lr", "r")],
    )
    world.submit(
        workload("q1", 1, created=1), workload("q2", 1, created=2), workload("q3", 1, priority=5, created=3),
        workload("r1", 1, queue="lr", created=4),
    )
    policy = KueuePolicy()
    first = world.step(policy, bind=False)
    assert sorted(keys(first)) == ["ns/q3", "ns/r1"]  # priority first within q; one head each
    assert first.pending["ns/q1"].startswith("another workload was admitted first in this cycle (ns/q3")
    assert first.stats.solver_status == "KeepGoing"
    assert keys(world.step(policy, bind=False)) == ["ns/q1"]
    assert keys(world.step(policy, bind=False)) == ["ns/q2"]


def test_fair_sharing_admits_the_lower_share_first() -> None:
    queues = [cluster_queue("a", 2, cohort="c"), cluster_queue("b", 2, cohort="c"), cluster_queue("lender", 4, cohort="c")]
    lqs = [local_queue("ns-a", "lq", "a"), local_queue("ns-b", "lq", "b")]

    def run(enable: bool) -> list[str]:
        world = World(gpu_cluster(1), queues, local_queues=lqs, config=Configuration.model_validate({"fairSharing": {"enable": enable}}))
        world.admitted = [admitted(workload("a-run", 1, count=4, ns="ns-a"), "a", 1), admitted(workload("b-run", 1, count=2, ns="ns-b"), "b", 1)]
        world.submit(workload("a-new", 1, count=2, ns="ns-a", priority=10, created=5), workload("b-new", 1, count=2, ns="ns-b", created=6))
        return keys(world.step(KueuePolicy(), bind=False))

    assert run(False) == ["ns-a/a-new"]  # classical: both borrow, higher priority first
    assert run(True) == ["ns-b/b-new"]  # tournament: b would borrow less


# --- reasons for workloads in no queue -----------------------------------------------------------


def test_reasons_for_workloads_outside_any_queue() -> None:
    queues = [
        cluster_queue("sel", 8, namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "team"}}),
        cluster_queue("none", 8, namespaceSelector=None),
        cluster_queue("held", 8, stopPolicy="Hold"),
    ]
    lqs = [
        local_queue("other", "lq", "sel"), local_queue("team", "lq", "sel"), local_queue("ns", "lq-none", "none"),
        local_queue("ns", "lq-held", "held"), local_queue("ns", "lq-stopped", "sel", stopPolicy="HoldAndDrain"),
        local_queue("ns", "lq-ghost", "ghost"),
    ]
    world = World(gpu_cluster(1), queues, local_queues=lqs)
    world.submit(
        workload("nolq", 1, queue="missing"), workload("mismatch", 1, ns="other"), workload("ok", 1, ns="team"),
        workload("nosel", 1, queue="lq-none"), workload("held", 1, queue="lq-held"),
        workload("lqstop", 1, queue="lq-stopped"), workload("ghost", 1, queue="lq-ghost"),
    )
    world.pending.append(Pending(workload("later", 1), 0.0, requeue_count=1, not_before=world.now + 60))
    decisions = world.step(KueuePolicy(), bind=False)
    assert keys(decisions) == ["team/ok"]
    reasons = decisions.pending
    assert reasons["ns/nolq"] == "LocalQueue ns/missing not found"
    assert reasons["other/mismatch"].startswith("namespace not selected by ClusterQueue sel")
    assert reasons["ns/nosel"].startswith("namespace not selected by ClusterQueue none")
    assert reasons["ns/held"] == "ClusterQueue held is stopped (stopPolicy: Hold)"
    assert reasons["ns/lqstop"] == "LocalQueue ns/lq-stopped is stopped (stopPolicy: HoldAndDrain)"
    assert reasons["ns/ghost"] == "ClusterQueue ghost not found"
    assert reasons["ns/later"].startswith("requeued with backoff")
    assert set(reasons) == {f"{p.key}" for p in world.pending}


def test_untolerated_flavor_taint_reason() -> None:
    tainted = flavor("spot", nodeTaints=[{"key": "spot", "value": "true", "effect": "NoSchedule"}])
    world = World(gpu_cluster(1), [cluster_queue("q", {"spot": 8})], flavors=[tainted])
    world.submit(workload("w", 1))
    decisions = world.step(KueuePolicy(), bind=False)
    assert "untolerated taint spot=true:NoSchedule in flavor spot" in decisions.pending["ns/w"]


# --- admission by quota, placement by kube-scheduler ----------------------------------------------


def test_admitted_by_quota_while_pods_stay_unbound_on_a_full_cluster() -> None:
    cluster = gpu_cluster(1)
    foreign = cluster.bind("n0", PodRequest.of({GPU: 8 * G}))
    world = World(cluster, [cluster_queue("q", 16)])
    world.submit(workload("w", 8))
    policy = KueuePolicy()
    decisions = world.step(policy)
    assert keys(decisions) == ["ns/w"]
    rec = world.record("ns/w")
    assert not rec.placed and rec.bindings == ()
    cluster.unbind(foreign)  # the other pod finished: kube-scheduler binds the Pending pod
    world.step(policy)
    rec = world.record("ns/w")
    assert rec.placed and rec.podsets[0].nodes == ("n0",)


def test_gang_pods_bind_one_at_a_time_and_hold_what_they_got() -> None:
    world = World(gpu_cluster(2), [cluster_queue("q", 32)])
    world.submit(workload("gang", 8, count=3))
    world.step(KueuePolicy())
    rec = world.record("ns/gang")
    assert len(rec.podsets[0].nodes) == 2 and not rec.placed  # the third pod stays Pending
    assert world.cluster.free(GPU) == 0


def _fragmentation(policy_name: str) -> tuple[bool, list[str]]:
    world = World(gpu_cluster(2), [cluster_queue("q", 16)], seed=7)
    policy = make_policy(policy_name)
    world.submit(workload("j1", 4, cpu=16, memory="64Gi", created=1), workload("j2", 4, cpu=16, memory="64Gi", created=2))
    world.step(policy)
    world.step(policy)
    world.submit(workload("big", 8, cpu=16, memory="64Gi", created=3))
    world.step(policy)
    nodes = [world.record(k).podsets[0].nodes[0] for k in ("ns/j1", "ns/j2")]
    return world.record("ns/big").placed, nodes


def test_spreading_fragments_gpus_so_a_later_8_gpu_pod_cannot_bind() -> None:
    placed, nodes = _fragmentation("kueue")
    assert nodes[0] != nodes[1]  # LeastAllocated spreads
    assert not placed


def test_packing_keeps_a_whole_node_for_the_8_gpu_pod() -> None:
    placed, nodes = _fragmentation("bestfit")
    assert nodes[0] == nodes[1]  # MostAllocated packs
    assert placed


def test_fgd_and_random_place_pods_too() -> None:
    for name in ("fgd", "random"):
        world = World(gpu_cluster(2), [cluster_queue("q", 16)], seed=3)
        policy = make_policy(name)
        world.submit(workload("j1", 4, created=1))
        world.step(policy)
        assert world.record("ns/j1").placed
        assert policy.places_pods is False


def test_bind_pending_pods_respects_flavor_node_labels_and_tolerations() -> None:
    h100 = flavor("h100", {"gpu": "h100"}, tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])
    nodes = [
        node("plain", labels={"gpu": "a100"}),
        Cluster.make_node("tainted", {GPU: 8 * G, "cpu": 64 * G, "memory": 64 * GI}, {"gpu": "h100"}, taints=[_taint("dedicated", "NoSchedule")]),
    ]
    world = World(Cluster(nodes), [cluster_queue("q", {"h100": 8})], flavors=[h100])
    world.submit(workload("w", 2, count=2))
    world.step(KueuePolicy())
    assert world.record("ns/w").podsets[0].nodes == ("tainted", "tainted")


def _taint(key: str, effect: str) -> Any:
    from quotas.kube import Taint

    return Taint(key=key, effect=effect)


# --- topology-aware admission ----------------------------------------------------------------------


def _tas_world(busy: dict[str, int], strategy: str = "BestEffortFIFO") -> World:
    nodes = []
    for rack in ("r1", "r2"):
        for i in range(4):
            nodes.append(node(f"{rack}-n{i}", labels={BLOCK: "b1", RACK: rack, "gpu": "h100"}))
    cluster = Cluster(nodes)
    for name, gpus in busy.items():
        cluster.bind(name, PodRequest.of({GPU: gpus * G}))
    return World(
        cluster,
        [cluster_queue("q", {"h100": 64}, queueingStrategy=strategy)],
        flavors=[flavor("h100", {"gpu": "h100"}, topology="dc")],
        topologies=[topology()],
    )


def test_required_rack_gang_on_a_partly_busy_cluster() -> None:
    world = _tas_world({"r1-n0": 8, "r1-n1": 4, "r2-n0": 1})
    world.submit(workload("gang", 8, count=3, required=RACK))
    decisions = world.step(KueuePolicy())
    assert keys(decisions) == ["ns/gang"]
    ps = decisions.admissions[0].podsets[0]
    assert ps.domain == ("b1", "r2")
    assert sorted(ps.nodes) == ["r2-n1", "r2-n2", "r2-n3"]
    rec = world.record("ns/gang")
    assert rec.placed and sorted(rec.podsets[0].nodes) == ["r2-n1", "r2-n2", "r2-n3"]


def test_required_rack_best_fit_prefers_the_tightest_rack() -> None:
    world = _tas_world({"r1-n0": 8, "r1-n1": 8})
    world.submit(workload("gang", 8, count=2, required=RACK))
    decisions = world.step(KueuePolicy())
    assert decisions.admissions[0].podsets[0].domain == ("b1", "r1")


def test_required_rack_explains_the_largest_free_block() -> None:
    world = _tas_world({"r1-n0": 8, "r1-n1": 4, "r2-n0": 1})
    world.submit(workload("gang", 8, count=4, required=RACK))
    decisions = world.step(KueuePolicy())
    assert decisions.admissions == []
    reason = decisions.pending["ns/gang"]
    assert "no rack has 4 nodes with 8 free GPUs; largest free block is 3 nodes in rack r2" in reason


def test_preferred_topology_spans_racks_when_one_is_too_small() -> None:
    world = _tas_world({"r1-n0": 8, "r2-n0": 8})
    world.submit(workload("gang", 8, count=5, preferred=RACK))
    decisions = world.step(KueuePolicy())
    ps = decisions.admissions[0].podsets[0]
    assert len(ps.nodes) == 5 and ps.domain == ("b1",)


def test_two_tas_heads_in_one_cycle_do_not_collide() -> None:
    world = _tas_world({})
    world.queues.append(cluster_queue("r", {"h100": 64}))
    world.local_queues.append(local_queue("ns", "lr", "r"))
    world.submit(workload("g1", 8, count=4, required=RACK, created=1), workload("g2", 8, count=4, required=RACK, queue="lr", created=2))
    decisions = world.step(KueuePolicy())
    assert sorted(keys(decisions)) == ["ns/g1", "ns/g2"]
    domains = {a.podsets[0].domain for a in decisions.admissions}
    assert domains == {("b1", "r1"), ("b1", "r2")}


def test_infeasible_gang_does_not_block_smaller_jobs_under_best_effort_fifo() -> None:
    world = _tas_world({})
    world.submit(workload("huge", 8, count=5, required=RACK, priority=10, created=1), workload("small", 1, created=2))
    policy = KueuePolicy()
    first = world.step(policy)
    assert first.admissions == []
    assert "no rack has 5 nodes" in first.pending["ns/huge"]
    second = world.step(policy)
    assert keys(second) == ["ns/small"]
    assert world.record("ns/small").placed


def test_infeasible_gang_blocks_under_strict_fifo() -> None:
    world = _tas_world({}, strategy="StrictFIFO")
    world.submit(workload("huge", 8, count=5, required=RACK, priority=10, created=1), workload("small", 1, created=2))
    policy = KueuePolicy()
    for _ in range(2):
        decisions = world.step(policy)
        assert decisions.admissions == []
        assert decisions.pending["ns/small"].startswith("blocked by ns/huge")


def test_topology_request_skips_flavors_without_topology() -> None:
    world = World(gpu_cluster(1), [cluster_queue("q", 8)])
    world.submit(workload("w", 1, required=RACK))
    decisions = world.step(KueuePolicy())
    assert 'Flavor "a100" does not support TopologyAwareScheduling' in decisions.pending["ns/w"]


# --- determinism and speed ---------------------------------------------------------------------------


def _busy_world(pending: int = 200, nodes: int = 128) -> World:
    cluster = Cluster([node(f"n{i:03d}", labels={"gpu": "a100"}) for i in range(nodes)])
    queues = [cluster_queue(f"team-{t}", 128, cohort="all", preemption={"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any"}) for t in range(8)]
    lqs = [local_queue("ns", f"lq-{t}", f"team-{t}") for t in range(8)]
    world = World(cluster, queues, flavors=[flavor("a100", {"gpu": "a100"})], local_queues=lqs)
    for i in range(pending):
        world.submit(workload(f"w{i:03d}", (1, 2, 4, 8)[i % 4], count=1 + i % 3, queue=f"lq-{i % 8}", priority=i % 5, created=float(i)))
    return world


def test_same_seed_same_decisions() -> None:
    def run() -> list[tuple[str, ...]]:
        world, policy, log = _busy_world(60, 16), make_policy("random"), []
        for _ in range(6):
            d = world.step(policy)
            log.append(tuple(keys(d)))
        log.append(tuple(sorted((a.key, a.podsets[0].nodes) for a in world.admitted)))  # type: ignore[arg-type]
        return log

    assert run() == run()


def test_cycle_with_200_pending_on_128_nodes_is_fast() -> None:
    world = _busy_world()
    policy = KueuePolicy()
    world.step(policy)  # warm caches
    durations = []
    for _ in range(5):
        snap = world.snapshot()
        started = time.perf_counter()
        policy.schedule(snap)
        durations.append(time.perf_counter() - started)
    assert sorted(durations)[len(durations) // 2] < 0.1


def test_bind_pending_pods_function_directly() -> None:
    cluster = gpu_cluster(2)
    w = workload("w", 2, count=3)
    rec = admitted(w, "q", 1.0)
    import random

    made = bind_pending_pods(cluster, [rec], default_profile(), random.Random(0), flavors={"a100": flavor("a100")})
    assert [m.podset for m in made] == [0, 0, 0] and all(isinstance(m.binding, Binding) for m in made)
    (updated,) = apply_pod_bindings([rec], made)
    assert updated.placed and len(updated.bindings) == 3


def test_place_admissions_gives_every_pod_a_node_or_drops_the_gang() -> None:
    from scheduler.kueue import place_admissions

    world = World(gpu_cluster(2), [cluster_queue("q", 32), cluster_queue("r", 32)],
                  local_queues=[local_queue("ns", "lq", "q"), local_queue("ns", "lr", "r")])
    world.submit(workload("fits", 8, count=2, created=1), workload("toobig", 8, count=2, queue="lr", created=2))
    snap = world.snapshot()
    greedy = greedy_cycle(snap)
    assert sorted(keys(greedy)) == ["ns/fits", "ns/toobig"]  # both by quota
    placed = place_admissions(snap, greedy)
    assert keys(placed) == ["ns/fits"]
    assert sorted(placed.admissions[0].podsets[0].nodes) == ["n0", "n1"]
    assert placed.pending["ns/toobig"].startswith("admissible by quota, but its pods do not fit the cluster now")
    assert world.cluster.free(GPU) == 16 * G  # the snapshot's cluster is untouched


def test_preemptor_stays_head_while_its_victims_terminate() -> None:
    from dataclasses import replace as dc_replace

    world = World(gpu_cluster(1), [cluster_queue("q", 3, preemption={"withinClusterQueue": "LowerPriority"})])
    world.admitted = [admitted(workload("low", 1, count=3, created=1), "q", 1)]
    world.submit(workload("high", 1, count=2, priority=10, created=2))
    policy = KueuePolicy()
    first = policy.schedule(world.snapshot())
    assert [p.key for p in first.preemptions] == ["ns/low"]
    world.admitted = [dc_replace(a, evicted=True) for a in world.admitted]  # terminating, still holding quota
    world.submit(workload("urgent", 1, count=3, priority=20, created=3))
    world.now += 1
    second = policy.schedule(world.snapshot())
    assert second.preemptions == []  # the victim is already being evicted
    assert second.pending["ns/high"].startswith("waiting for preemption of 1 workload")
    assert second.pending["ns/urgent"] == "waiting behind ns/high, which is preempting workloads in ClusterQueue q"
    world.finish("ns/low")
    world.now += 1
    assert keys(policy.schedule(world.snapshot())) == ["ns/high"]


def test_admission_fair_sharing_orders_local_queues_by_usage() -> None:
    from quotas.admission_fair_sharing import AdmissionFairSharing

    world = World(gpu_cluster(1), [cluster_queue("q", 8)], local_queues=[local_queue("ns", "lq-a", "q"), local_queue("ns", "lq-b", "q")])
    world.submit(workload("a1", 1, queue="lq-a", priority=5, created=1), workload("b1", 1, queue="lq-b", created=2))
    snap = world.snapshot()
    assert keys(greedy_cycle(snap)) == ["ns/a1"]  # priority first without admission fair sharing
    afs = AdmissionFairSharing(3600)
    afs.admit("ns/lq-a", {GPU: 8.0}, at=0.0)
    snap.admission_fair_sharing = afs
    assert keys(greedy_cycle(snap)) == ["ns/b1"]  # the LocalQueue that used less goes first


def test_place_admissions_keeps_strict_fifo_blocking() -> None:
    from scheduler.kueue import place_admissions

    world = World(gpu_cluster(1), [cluster_queue("q", 32, queueingStrategy="StrictFIFO")])
    world.submit(workload("head", 8, count=2, created=1), workload("next", 1, created=2))
    snap = world.snapshot()
    greedy = greedy_cycle(snap, drain=True)
    assert keys(greedy) == ["ns/head", "ns/next"]  # by quota, in two back-to-back cycles
    placed = place_admissions(snap, greedy)
    assert placed.admissions == []
    assert placed.pending["ns/next"].startswith("blocked by ns/head, the head of StrictFIFO ClusterQueue q")

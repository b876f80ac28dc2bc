"""The `tessera` policy (CP-SAT global packer) on small crafted cases.

Every decision is checked by `verify`, independently of the policy: each admitted pod is
bound again on a copy of the snapshot's cluster (node capacity, per-GPU devices), its node
must carry the admitted flavors' labels and pass selectors and taints, each gang has every
pod placed (at least minCount), a required topology puts all pods in one domain, and the
quota each admission charges is recomputed from the workload and checked against the
cohort tree with `QuotaTree.fits` in decision order. Every pending workload not admitted
has a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor, Topology
from quotas.kube import Taint, Toleration
from scheduler.affinity import NodeConstraints
from scheduler.cluster import Cluster, NodeInfo, PodRequest
from scheduler.decisions import Decisions, make_policy
from scheduler.flavors import admitted_constraints, node_in_flavor, node_infeasible_reason
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot, build_snapshot
from scheduler.solver import NOT_ADMITTED, TesseraPolicy, decisions_value
from scheduler.solver_common import prepare
from scheduler.solver_place import Placer, greedy_cycle
from scheduler.workload import PodSetInfo, TopologyRequest, WorkloadInfo

GPU = "nvidia.com/gpu"
G = 1000
GI = 2**30 * G
HOST = "kubernetes.io/hostname"


# --- builders ------------------------------------------------------------------------------------


def node(name: str, gpus: int = 8, cpu: int = 64, labels: dict[str, str] | None = None, taints: Iterable[Taint] = ()) -> NodeInfo:
    return Cluster.make_node(
        name,
        {"cpu": cpu * G, "memory": 512 * GI, GPU: gpus * G, "pods": 110 * G},
        {HOST: name, **(labels or {})},
        taints,
    )


def rack_nodes(racks: int, per_rack: int, gpus: int = 8, labels: dict[str, str] | None = None) -> list[NodeInfo]:
    return [
        node(f"r{r}n{i}", gpus, labels={"block": "b0", "rack": f"r{r}", **(labels or {})})
        for r in range(racks)
        for i in range(per_rack)
    ]


def flavor(name: str = "gpu", labels: dict[str, str] | None = None, topology: str | None = None, **spec: Any) -> ResourceFlavor:
    body: dict[str, Any] = {"nodeLabels": labels or {}, **spec}
    if topology:
        body["topologyName"] = topology
    return ResourceFlavor.model_validate({"metadata": {"name": name}, "spec": body})


def gpu_quota(flavor_name: str, gpus: float, **limits: Any) -> dict[str, Any]:
    return {
        "name": flavor_name,
        "resources": [
            {"name": "cpu", "nominalQuota": 1000},
            {"name": "memory", "nominalQuota": "64Ti"},
            {"name": GPU, "nominalQuota": gpus, **limits},
        ],
    }


def cq(name: str, gpus: float = 1000, *, flavors: Sequence[str] = ("gpu",), cohort: str | None = None, limits: dict[str, Any] | None = None, **spec: Any) -> ClusterQueue:
    body: dict[str, Any] = {
        "namespaceSelector": {},
        "resourceGroups": [
            {"coveredResources": ["cpu", "memory", GPU], "flavors": [gpu_quota(f, gpus, **(limits or {})) for f in flavors]}
        ],
        **spec,
    }
    if cohort:
        body["cohort"] = cohort
    return ClusterQueue.model_validate({"metadata": {"name": name}, "spec": body})


def lq(name: str, cluster_queue: str, namespace: str = "default") -> LocalQueue:
    return LocalQueue.model_validate({"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": cluster_queue}})


def topology(levels: Sequence[str] = ("block", "rack", HOST), name: str = "dc") -> Topology:
    return Topology.model_validate({"metadata": {"name": name}, "spec": {"levels": [{"nodeLabel": lb} for lb in levels]}})


def pod(gpu_milli: int, cpu: int = 1) -> PodRequest:
    return PodRequest.of({"cpu": cpu * G, "memory": 4 * GI, **({GPU: gpu_milli} if gpu_milli else {})})


def workload(
    name: str,
    gpus: float,
    pods: int = 1,
    *,
    priority: int = 0,
    queue: str = "q",
    created: float = 0.0,
    min_count: int | None = None,
    topo: tuple[str, str] | None = None,
    constraints: NodeConstraints | None = None,
    cpu: int = 1,
) -> WorkloadInfo:
    ps = PodSetInfo(
        "main",
        pods,
        pod(int(round(gpus * G)), cpu),
        min_count=min_count,
        constraints=constraints or NodeConstraints(),
        topology=TopologyRequest(topo[0], topo[1]) if topo else None,  # type: ignore[arg-type]
    )
    return WorkloadInfo("default", name, queue, (ps,), priority=priority, creation_time=created)


def pending(*workloads: WorkloadInfo) -> list[Pending]:
    return [Pending(w, w.creation_time) for w in workloads]


def config(time_limit: float = 2.0, workers: int = 1, **more: Any) -> Configuration:
    return Configuration.model_validate({"solver": {"timeLimit": time_limit, "workers": workers}, **more})


def snapshot(
    nodes: Iterable[NodeInfo] | Cluster,
    queues: Sequence[ClusterQueue],
    pend: Sequence[Pending],
    *,
    flavors: Sequence[ResourceFlavor] = (),
    local_queues: Sequence[LocalQueue] = (),
    cohorts: Sequence[Cohort] = (),
    admitted: Sequence[Admitted] = (),
    topologies: Sequence[Topology] = (),
    now: float = 100.0,
    cfg: Configuration | None = None,
    seed: int = 0,
) -> Snapshot:
    cluster = nodes if isinstance(nodes, Cluster) else Cluster(nodes)
    return build_snapshot(
        now=now,
        cluster=cluster,
        cluster_queues=queues,
        cohorts=cohorts,
        flavors=flavors or [flavor()],
        local_queues=local_queues or [lq("q", queues[0].name)],
        admitted=admitted,
        pending=pend,
        topologies=topologies,
        config=cfg or config(),
        seed=seed,
    )


def running(cluster: Cluster, name: str, node_name: str, gpus: int, *, priority: int = 0, queue: str = "cq",
            admitted_at: float = 10.0, flavor_name: str = "gpu") -> Admitted:
    """A workload already running one pod on ``node_name`` (bound on ``cluster``)."""
    p = pod(gpus * G)
    binding = cluster.bind(node_name, p)
    wl = WorkloadInfo("default", name, "q", (PodSetInfo("main", 1, p),), priority=priority, cluster_queue=queue)
    usage = {(flavor_name, r): v for r, v in p.items}
    return Admitted(wl, queue, admitted_at, usage, (PodSetPlacement("main", 1, {r: flavor_name for r in p}, (node_name,)),), (binding,))


def run(snap: Snapshot, **kw: Any) -> Decisions:
    decisions = TesseraPolicy(**kw).schedule(snap)
    verify(snap, decisions)
    return decisions


# --- the independent check ---------------------------------------------------------------------


def podset_requests(ps: PodSetInfo, flavors: dict[str, str], count: int, covers_pods: bool) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for r, v in ps.requests.items:
        out[(flavors[r], r)] = out.get((flavors[r], r), 0) + v * count
    if covers_pods:
        out[(flavors["pods"], "pods")] = out.get((flavors["pods"], "pods"), 0) + 1000 * count
    return out


def verify(snap: Snapshot, decisions: Decisions) -> None:
    """Every decision is physically bindable, within quota, all-or-nothing and topology-true."""
    cluster = snap.cluster.copy()
    usage = snap.usage
    by_key = {p.key: p for p in snap.pending}
    seen: set[str] = set()
    for adm in decisions.admissions:
        assert adm.key in by_key, f"{adm.key} was not pending"
        assert adm.key not in seen, f"{adm.key} admitted twice"
        seen.add(adm.key)
        p = by_key[adm.key]
        assert p.not_before <= snap.now
        wl = p.workload
        cq_name = snap.cluster_queue_of(wl)
        assert adm.cluster_queue == cq_name
        tree_node = snap.tree.cluster_queue(adm.cluster_queue)
        covers_pods = any("pods" in g.covered_resources for g in tree_node.resource_groups)
        podsets = {ps.name: ps for ps in wl.podsets}
        request: dict[tuple[str, str], int] = {}
        for psp in adm.podsets:
            ps = podsets[psp.name]
            assert ps.lowest_count <= psp.count <= ps.count, f"{adm.key}/{psp.name}: count {psp.count}"
            assert len(psp.nodes) == psp.count, f"{adm.key}/{psp.name}: {len(psp.nodes)} nodes for {psp.count} pods"
            flavors = [snap.flavors[f] for f in set(psp.flavors.values())]
            constraints = ps.constraints
            for f in flavors:
                constraints = admitted_constraints(constraints, f)
            for name in psp.nodes:
                n = cluster.nodes[name]
                assert all(node_in_flavor(n, f) for f in flavors), f"{name} is not in flavor(s) {psp.flavors}"
                assert node_infeasible_reason(constraints, n) is None, f"{adm.key}: {node_infeasible_reason(constraints, n)} on {name}"
                cluster.bind(name, ps.requests)  # raises when node or device capacity is exceeded
            if ps.topology is not None and ps.topology.required:
                level = ps.topology.level
                values = {cluster.nodes[n].labels.get(level) for n in psp.nodes}
                topo_names = {f.spec.topology_name for f in flavors if f.spec.topology_name}
                levels = snap.topologies[next(iter(topo_names))].level_labels
                upper = levels[: levels.index(level) + 1]
                domains = {tuple(cluster.nodes[n].labels.get(lb) for lb in upper) for n in psp.nodes}
                assert len(values) == 1 and len(domains) == 1, f"{adm.key}: pods in {domains}"
                assert psp.domain == next(iter(domains))
            for fr, v in podset_requests(ps, dict(psp.flavors), psp.count, covers_pods).items():
                request[fr] = request.get(fr, 0) + v
        assert {k: v for k, v in adm.usage.items() if v} == {k: v for k, v in request.items() if v}, f"{adm.key} charges {adm.usage}, expected {request}"
        fit = snap.tree.fits(adm.cluster_queue, request, usage)
        assert fit.fits, f"{adm.key} breaks quota: {fit.reasons}"
        usage = usage.admit(adm.cluster_queue, request)
    for p in snap.pending:
        if p.key not in seen:
            assert decisions.pending.get(p.key), f"{p.key} has no pending reason"
    for pre in decisions.preemptions:
        assert any(a.key == pre.key for a in snap.admitted), f"preempting {pre.key}, which is not admitted"


def admitted_keys(decisions: Decisions) -> list[str]:
    return sorted(a.key.split("/", 1)[1] for a in decisions.admissions)


def nodes_of(decisions: Decisions, name: str) -> tuple[str, ...]:
    adm = next(a for a in decisions.admissions if a.key == f"default/{name}")
    return tuple(n for p in adm.podsets for n in p.nodes)


# --- registration ----------------------------------------------------------------------------------


def test_registered_as_tessera_and_places_pods() -> None:
    policy = make_policy("tessera")
    assert isinstance(policy, TesseraPolicy)
    assert policy.name == "tessera" and policy.places_pods is True


@pytest.mark.parametrize("name", ["tessera", "kueue", "fgd"])
@pytest.mark.parametrize("enabled", [True, False])
def test_cycle_runs_with_the_cyclic_collector_paused_and_restores_it(name: str, enabled: bool) -> None:
    import gc

    snap = snapshot([node("n0"), node("n1")], [cq("cq", 16)], pending(workload("a", 4, created=1), workload("b", 8, created=2)))
    policy = make_policy(name)
    runs: list[str] = []
    inside = [False]

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and inside[0]:
            runs.append(name)

    threshold = gc.get_threshold()
    was = gc.isenabled()
    gc.callbacks.append(seen)
    gc.set_threshold(1)  # a collection on nearly every allocation, were the collector running
    try:
        if enabled:
            gc.enable()
        else:
            gc.disable()
        inside[0] = True
        decisions = policy.schedule(snap)
        inside[0] = False
        assert gc.isenabled() is enabled
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*threshold)
        if was:
            gc.enable()
        else:
            gc.disable()
    # an unpaused cycle runs thousands here; paused, only entering the `with` allocates before
    # the pause (the pause object, its bound __exit__), and leaving it allocates nothing after
    # re-enabling: the collection the cycle put off runs at the caller's next allocation
    assert len(runs) <= 2
    assert sorted(decisions.admissions, key=lambda a: a.key)[0].key == "default/a"


# --- packing -------------------------------------------------------------------------------------


def test_packing_admits_the_whole_node_gang_that_kueue_spreading_cannot_bind() -> None:
    snap = snapshot([node("n0"), node("n1")], [cq("cq", 16)], pending(
        workload("a", 4, created=1), workload("b", 4, created=2), workload("big", 8, created=3)))
    d = run(snap)
    assert admitted_keys(d) == ["a", "b", "big"]
    assert len(set(nodes_of(d, "a") + nodes_of(d, "b"))) == 1  # the two halves share a node
    assert set(nodes_of(d, "big")).isdisjoint(nodes_of(d, "a"))
    assert d.stats.solver_status.startswith("OPTIMAL")

    # Kueue admits all three by quota, then kube-scheduler's LeastAllocated spreads the halves
    from scheduler.kueue import greedy_cycle, place_admissions
    from scheduler.placement import default_profile

    kueue = place_admissions(snap, greedy_cycle(snap, drain=True), default_profile(), gang=True)
    assert sorted(a.key for a in kueue.admissions) == ["default/a", "default/b"]
    assert "default/big" in kueue.pending


def test_solver_beats_its_greedy_warm_start_on_an_order_trap() -> None:
    # queue order 4, 2, 6, 4 on two 8-GPU nodes: best-fit in order strands the last 4
    snap = snapshot([node("n0"), node("n1")], [cq("cq", 16)], pending(
        workload("a", 4, created=1), workload("b", 2, created=2), workload("c", 6, created=3), workload("d", 4, created=4)))
    placer = Placer(snap)
    greedy, _ = greedy_cycle(prepare(snap), placer)
    assert sorted(p.key for p in greedy) == ["default/a", "default/b", "default/c"]
    d = run(snap)
    assert admitted_keys(d) == ["a", "b", "c", "d"]
    assert {frozenset(("a", "d")), frozenset(("b", "c"))} == {
        frozenset(k for k in "abcd" if nodes_of(d, k) == (n,)) for n in ("n0", "n1")
    }


def test_required_rack_gang_on_a_partly_busy_cluster() -> None:
    cluster = Cluster(rack_nodes(2, 4))
    busy = [running(cluster, "x0", "r0n0", 8), running(cluster, "x1", "r0n1", 8), running(cluster, "x2", "r1n1", 8)]
    snap = snapshot(
        cluster,
        [cq("cq", 64)],
        pending(workload("small", 1, 2, created=1), workload("gang", 8, 3, topo=("required", "rack"), created=2)),
        flavors=[flavor(topology="dc")],
        topologies=[topology()],
        admitted=busy,
    )
    d = run(snap)
    assert admitted_keys(d) == ["gang", "small"]
    gang = next(a for a in d.admissions if a.key == "default/gang").podsets[0]
    assert gang.domain == ("b0", "r1") and sorted(gang.nodes) == ["r1n0", "r1n2", "r1n3"]


def test_required_rack_gang_that_fits_no_rack_says_why() -> None:
    cluster = Cluster(rack_nodes(2, 2))
    busy = [running(cluster, "x0", "r0n0", 8)]
    snap = snapshot(cluster, [cq("cq", 64)], pending(workload("gang", 8, 3, topo=("required", "rack"))),
                    flavors=[flavor(topology="dc")], topologies=[topology()], admitted=busy)
    d = run(snap)
    assert d.admissions == []
    assert "rack" in d.pending["default/gang"]


def test_finalize_drops_an_admission_whose_shares_do_not_bind_in_decision_order() -> None:
    from scheduler.solver import _finalize
    from scheduler.solver_place import Placed

    # 500m+250m+250m and 400m+300m+300m fill two devices exactly, but largest first with best-fit
    # devices (how the decisions are applied) puts 400m beside 500m and leaves no room for the last 250m
    shares = [("s500", 0.5), ("s400", 0.4), ("s300a", 0.3), ("s300b", 0.3), ("s250a", 0.25), ("s250b", 0.25)]
    whole = [("w4", 4.0), ("w2", 2.0), ("w2b", 2.0)]
    snap = snapshot([node("n0", gpus=2), node("n1", gpus=8)], [cq("cq", 100)],
                    pending(*(workload(n, g, created=i) for i, (n, g) in enumerate(shares + whole))))
    prepared = prepare(snap)
    by_key = {c.key: c for c in prepared.candidates}
    placed = [
        Placed(by_key[f"default/{n}"], [(0, 1)], [("n0" if n.startswith("s") else "n1",)], [None], [], {})
        for n, _ in shares + whole
    ]
    kept, dropped = _finalize(snap, placed)
    assert [p.key for p in kept] == [f"default/{n}" for n in ("w4", "w2", "w2b", "s500", "s400", "s300a", "s300b", "s250a")]
    assert list(dropped) == ["default/s250b"]
    assert "would not bind on n0" in dropped["default/s250b"]


def test_placer_shortfall_is_quota_shortfall_at_the_current_usage() -> None:
    from scheduler.solver_place import quota_shortfall

    snap = snapshot([node("n0"), node("n1")], [cq("cq", 8)], pending(workload("a", 4, created=1), workload("b", 6, created=2)))
    placer = Placer(snap)
    six = {("gpu", GPU): 6 * G}
    assert placer.shortfall("cq", six) is None
    first = placer.try_admit(prepare(snap).candidates[0])
    assert not isinstance(first, str)
    placer.commit(first)  # a new usage object: what was memoised no longer holds
    why = placer.shortfall("cq", six)
    assert why == quota_shortfall(snap, placer.usage, "cq", six)
    assert why is not None and "needs 6, 4 available" in why
    assert placer.shortfall("cq", {("gpu", GPU): 4 * G}) is None


def test_a_failed_multi_podset_workload_leaves_no_stale_failure_for_the_next_one() -> None:
    # one free node: "pair" places its first podset there, not its second, and is rolled back;
    # what its second podset saw (the node taken by the first) must not be remembered as the
    # state the next workload of that shape meets
    two = (PodSetInfo("first", 1, pod(8 * G)), PodSetInfo("second", 1, pod(8 * G)))
    pair = WorkloadInfo("default", "pair", "q", two, creation_time=1)
    snap = snapshot([node("n0")], [cq("cq", 16)], pending(pair, workload("single", 8, created=2)))
    admitted, reasons = greedy_cycle(prepare(snap), Placer(snap))
    assert [p.key for p in admitted] == ["default/single"]
    assert "default/pair" in reasons
    assert admitted_keys(run(snap)) == ["single"]


def test_placer_quota_fits_says_what_the_quota_tree_says() -> None:
    queues = [cq("a", 8, cohort="c", limits={"borrowingLimit": 4}), cq("b", 8, cohort="c", flavors=("gpu", "other"))]
    snap = snapshot([node("n0")], queues, pending(workload("w", 1)), flavors=[flavor("gpu"), flavor("other")])
    placer = Placer(snap)
    requests = [{("gpu", GPU): g * G} for g in range(0, 20)] + [
        {("other", GPU): G},  # a flavor "a" has no quota in
        {("gpu", GPU): 2 * G, ("gpu", "cpu"): 2000 * G},  # within GPUs, above every CPU quota
        {("gpu", GPU): 0, ("gpu", "cpu"): 4 * G},
    ]
    checked = set()
    for used_a, used_b in ((0, 0), (6, 0), (0, 6), (10, 3), (12, 4)):
        usage = snap.usage
        if used_a:
            usage = usage.admit("a", {("gpu", GPU): used_a * G})
        if used_b:
            usage = usage.admit("b", {("gpu", GPU): used_b * G})
        placer.usage = usage
        for queue in ("a", "b"):
            for request in requests:
                fit = snap.tree.fits(queue, {fr: v for fr, v in request.items() if v > 0}, usage)
                assert placer.quota_fits(queue, request) == (fit.fits, fit.borrows), (queue, used_a, used_b, request)
                checked.add((fit.fits, fit.borrows))
    assert checked == {(True, False), (True, True), (False, False)}


def test_model_window_comes_from_the_configuration_or_the_cluster_size() -> None:
    from scheduler.solver import window_for

    assert [window_for(n) for n in (1, 128, 200, 1024, 5000)] == [40, 40, 50, 256, 300]
    assert config().solver.max_candidates is None
    with pytest.raises(ValueError, match="max_candidates|maxCandidates"):
        Configuration.model_validate({"solver": {"maxCandidates": 0}})
    # six 1-GPU workloads on two nodes with room for four: the greedy admits four
    work = pending(*(workload(f"w{i}", 1, created=i) for i in range(6)))
    nodes = [node("n0", gpus=2), node("n1", gpus=2)]
    whole = run(snapshot(nodes, [cq("cq", 16)], work))
    assert whole.stats.considered == 6  # the default window (40 on two nodes) takes them all
    cfg = Configuration.model_validate({"solver": {"timeLimit": 2.0, "workers": 1, "maxCandidates": 2}})
    narrow = run(snapshot([node("n0", gpus=2), node("n1", gpus=2)], [cq("cq", 16)], work, cfg=cfg))
    assert narrow.stats.considered == 2  # the greedy's last admission and the first it left out
    assert len(narrow.admissions) == len(whole.admissions) == 4
    assert TesseraPolicy(max_candidates=3).schedule(snapshot(nodes, [cq("cq", 16)], work, cfg=cfg)).stats.considered == 3


def test_infeasible_gang_does_not_block_smaller_jobs() -> None:
    snap = snapshot([node("n0"), node("n1")], [cq("cq", 100)], pending(
        workload("huge", 8, 3, priority=10), workload("s1", 2, created=1), workload("s2", 8, created=2)))
    d = run(snap)
    assert admitted_keys(d) == ["s1", "s2"]
    assert "3 pods" in d.pending["default/huge"]


def test_fractional_gpus_share_devices() -> None:
    snap = snapshot([node("n0", gpus=2)], [cq("cq", 16)], pending(
        workload("h1", 0.5, created=1), workload("s6", 0.6, created=2), workload("q4", 0.4, created=3), workload("h2", 0.5, created=4),
        workload("one", 1, created=5)))
    d = run(snap)
    # 500+500 on one device, 600+400 on the other: the whole GPU does not fit any more
    assert admitted_keys(d) == ["h1", "h2", "q4", "s6"]
    assert "default/one" in d.pending


def test_fractional_pods_never_straddle_devices() -> None:
    # 3 x 600m on 2 GPUs: 1800m fit in total, but only two devices have 600m free
    snap = snapshot([node("n0", gpus=2)], [cq("cq", 16)], pending(*(workload(f"f{i}", 0.6, created=i) for i in range(3))))
    d = run(snap)
    assert admitted_keys(d) == ["f0", "f1"]


# --- quota -------------------------------------------------------------------------------------------


def test_borrowing_limit_is_respected() -> None:
    queues = [cq("team-a", 4, cohort="co", limits={"borrowingLimit": 2}), cq("team-b", 8, cohort="co")]
    snap = snapshot([node(f"n{i}") for i in range(4)], queues, pending(
        workload("a1", 4, queue="qa", created=1), workload("a2", 2, queue="qa", created=2), workload("a3", 1, queue="qa", created=3)),
        local_queues=[lq("qa", "team-a"), lq("qb", "team-b")])
    d = run(snap)
    assert admitted_keys(d) == ["a1", "a2"]
    assert "borrowing limit 2" in d.pending["default/a3"]
    assert next(a for a in d.admissions if a.key == "default/a2").borrows


def test_lending_limit_is_respected() -> None:
    queues = [cq("team-a", 4, cohort="co"), cq("team-b", 8, cohort="co", limits={"lendingLimit": 1})]
    snap = snapshot([node(f"n{i}") for i in range(4)], queues, pending(
        workload("a1", 4, queue="qa", created=1), workload("a2", 1, queue="qa", created=2), workload("a3", 1, queue="qa", created=3)),
        local_queues=[lq("qa", "team-a"), lq("qb", "team-b")])
    d = run(snap)
    assert admitted_keys(d) == ["a1", "a2"]


def test_quota_without_cohort_is_nominal() -> None:
    snap = snapshot([node("n0"), node("n1")], [cq("cq", 9)], pending(
        workload("a", 8, created=1), workload("b", 2, created=2), workload("c", 1, created=3)))
    d = run(snap)
    assert admitted_keys(d) == ["a", "c"]
    assert "insufficient quota in ClusterQueue cq" in d.pending["default/b"]


def test_cohort_quota_is_shared_and_borrowing_flag_set() -> None:
    queues = [cq("team-a", 2, cohort="co"), cq("team-b", 6, cohort="co")]
    snap = snapshot([node("n0")], queues, pending(workload("big", 8, queue="qa")),
                    local_queues=[lq("qa", "team-a"), lq("qb", "team-b")])
    d = run(snap)
    assert admitted_keys(d) == ["big"] and d.admissions[0].borrows


# --- priority, fairness, aging ----------------------------------------------------------------------------


def test_priority_wins_over_size() -> None:
    snap = snapshot([node("n0")], [cq("cq", 8)], pending(
        workload("big-low", 8, priority=0, created=1), workload("small-high", 1, priority=100, created=5)))
    d = run(snap)
    assert admitted_keys(d) == ["small-high"]
    assert "default/big-low" in d.pending


def test_more_gpus_win_among_equals() -> None:
    snap = snapshot([node("n0")], [cq("cq", 8)], pending(
        workload("two", 2, created=1), workload("seven", 7, created=2)))
    d = run(snap)
    assert admitted_keys(d) == ["seven"]


def test_fifo_breaks_ties() -> None:
    snap = snapshot([node("n0", gpus=2)], [cq("cq", 16)], pending(*(workload(f"f{i}", 0.5, created=i) for i in range(5))))
    d = run(snap)
    assert admitted_keys(d) == ["f0", "f1", "f2", "f3"]


def test_aged_gang_gets_nodes_reserved() -> None:
    cluster = Cluster([node("n0"), node("n1")])
    busy = [running(cluster, "x", "n0", 4)]
    wl = [workload("gang", 8, 2, created=0.0), workload("s1", 2, created=4000.0), workload("s2", 2, created=4001.0)]
    # with a 1 h aging threshold the gang (queued at 0, now 4100 s) is aged: its nodes are held
    aged = run(snapshot(cluster, [cq("cq", 100)], pending(*wl), admitted=busy, now=4100.0), aging_threshold=3600.0)
    young = run(snapshot(cluster, [cq("cq", 100)], pending(*wl), admitted=busy, now=4100.0), aging_threshold=10_000.0)
    assert admitted_keys(aged) == []
    assert "reserved" in aged.pending["default/s1"]
    assert "node(s) reserved for it" in aged.pending["default/gang"]
    assert admitted_keys(young) == ["s1", "s2"]


def test_reservation_does_not_block_higher_priority_work() -> None:
    cluster = Cluster([node("n0"), node("n1")])
    busy = [running(cluster, "x", "n0", 4)]
    wl = [workload("gang", 8, 2, created=0.0), workload("urgent", 2, priority=100, created=4000.0)]
    d = run(snapshot(cluster, [cq("cq", 100)], pending(*wl), admitted=busy, now=4100.0), aging_threshold=3600.0)
    assert admitted_keys(d) == ["urgent"]


def test_fairness_prefers_the_queue_that_borrows_less() -> None:
    # team-a (4 GPUs) already borrows 2 from team-b (6 GPUs); room for one more 2-GPU job
    cluster = Cluster([node("n0", gpus=8), node("n1", gpus=2)])
    busy = [running(cluster, "a-run", "n0", 6, queue="team-a"), running(cluster, "b-run", "n1", 2, queue="team-b")]
    queues = [cq("team-a", 4, cohort="co"), cq("team-b", 6, cohort="co")]
    snap = snapshot(cluster, queues, pending(workload("a", 2, queue="qa", created=1), workload("b", 2, queue="qb", created=2)),
                    local_queues=[lq("qa", "team-a"), lq("qb", "team-b")], admitted=busy)
    d = run(snap)
    assert admitted_keys(d) == ["b"]


# --- flavors, selectors, taints, partial admission, StrictFIFO ----------------------------------------------------


def test_second_flavor_used_when_the_first_is_full() -> None:
    cluster = Cluster([node("a0", labels={"gpu": "a100"}), node("h0", labels={"gpu": "h100"})])
    busy = [running(cluster, "x", "a0", 8, flavor_name="a100")]
    snap = snapshot(cluster, [cq("cq", 8, flavors=("a100", "h100"))], pending(workload("w", 4)),
                    flavors=[flavor("a100", {"gpu": "a100"}), flavor("h100", {"gpu": "h100"})], admitted=busy)
    d = run(snap)
    assert nodes_of(d, "w") == ("h0",)
    assert d.admissions[0].podsets[0].flavors[GPU] == "h100"


def test_node_selector_and_taints_are_respected() -> None:
    taint = Taint(key="dedicated", value="infer", effect="NoSchedule")
    cluster = Cluster([node("plain"), node("tainted", taints=[taint]), node("other", labels={"zone": "b"})])
    sel = NodeConstraints.build({"zone": "b"})
    tol = NodeConstraints.build(None, None, [Toleration(key="dedicated", operator="Equal", value="infer", effect="NoSchedule")])
    snap = snapshot(cluster, [cq("cq", 100)], pending(
        workload("sel", 8, constraints=sel, created=1), workload("tol", 8, constraints=tol, created=2), workload("any", 8, created=3),
        workload("none", 8, created=4)))
    d = run(snap)
    assert nodes_of(d, "sel") == ("other",)
    assert nodes_of(d, "tol") == ("tainted",)
    assert nodes_of(d, "any") == ("plain",)
    assert "default/none" in d.pending


def test_partial_admission_down_to_min_count() -> None:
    snap = snapshot([node("n0"), node("n1")], [cq("cq", 100)], pending(workload("p", 8, 4, min_count=2)))
    d = run(snap)
    assert d.admissions[0].podsets[0].count == 2


def test_strict_fifo_head_blocks_its_queue() -> None:
    snap = snapshot([node("n0")], [cq("cq", 100, queueingStrategy="StrictFIFO")], pending(
        workload("head", 8, 2, created=1), workload("next", 1, created=2)))
    d = run(snap)
    assert d.admissions == []
    assert "StrictFIFO" in d.pending["default/next"]


def test_backoff_and_unknown_queue_get_reasons() -> None:
    w1 = workload("later", 1)
    w2 = workload("lost", 1, queue="nowhere")
    snap = snapshot([node("n0")], [cq("cq", 100)], [Pending(w1, 0.0, not_before=500.0), Pending(w2, 0.0)])
    d = run(snap)
    assert d.admissions == []
    assert "backoff" in d.pending["default/later"]
    assert "does not exist" in d.pending["default/lost"]


def test_namespace_selector_and_stopped_queues_get_reasons() -> None:
    unselected = ClusterQueue.model_validate({"metadata": {"name": "closed"}, "spec": {"resourceGroups": cq("x").model_dump(by_alias=True)["spec"]["resourceGroups"]}})
    stopped = cq("stopped", stopPolicy="Hold")
    snap = snapshot([node("n0")], [cq("cq"), unselected, stopped], pending(
        workload("a", 1, queue="qc"), workload("b", 1, queue="qs"), workload("ok", 1, queue="q")),
        local_queues=[lq("q", "cq"), lq("qc", "closed"), lq("qs", "stopped")])
    d = run(snap)
    assert admitted_keys(d) == ["ok"]
    assert "namespaceSelector" in d.pending["default/a"]
    assert "stopped" in d.pending["default/b"]


# --- preemption ------------------------------------------------------------------------------------------


def _preemption_case(policy: str) -> Snapshot:
    cluster = Cluster([node("n0")])
    low = running(cluster, "low", "n0", 8, priority=0)
    return snapshot(cluster, [cq("cq", 8, preemption={"withinClusterQueue": policy})], pending(workload("high", 8, priority=100, created=50)),
                    admitted=[low])


def test_preemption_within_cluster_queue() -> None:
    d = run(_preemption_case("LowerPriority"))
    assert d.admissions == []
    assert [(p.key, p.preemptor, str(p.reason)) for p in d.preemptions] == [("default/low", "default/high", "InClusterQueue")]
    assert "waiting for 1 preempted workload" in d.pending["default/high"]


def test_no_preemption_when_the_policy_says_never() -> None:
    d = run(_preemption_case("Never"))
    assert d.preemptions == []


def test_identical_preemptors_each_get_a_victim_and_identical_losers_each_a_reason() -> None:
    """Preemptors alike in queue, priority and shape: a search that found nothing is not repeated
    for the next one alike, but one that preempted changes the state, so the next is searched."""
    cluster = Cluster([node("n0"), node("n1")])
    lows = [running(cluster, f"low{i}", f"n{i}", 8, priority=0, admitted_at=10.0 + i) for i in range(2)]
    highs = [workload(f"high{i}", 8, priority=100, created=50 + i) for i in range(3)]
    snap = snapshot(cluster, [cq("cq", 16, preemption={"withinClusterQueue": "LowerPriority"})], pending(*highs), admitted=lows)
    d = run(snap)
    assert sorted((p.key, p.preemptor) for p in d.preemptions) == [("default/low0", "default/high1"), ("default/low1", "default/high0")]
    assert "waiting for 1 preempted workload" in d.pending["default/high0"]
    assert "waiting for 1 preempted workload" in d.pending["default/high1"]
    assert "default/high2" in d.pending and "waiting for" not in d.pending["default/high2"]
    assert set(d.nominations) == {"default/high0", "default/high1"}


def test_the_preemption_oracle_ranks_flavors_only_when_there_is_a_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one flavor option the assignment is the same without the oracle's searches, so they
    do not run; with two, they do (they pick the flavor whose victims Kueue would prefer)."""
    import scheduler.solver as solver

    calls: list[str] = []
    real = solver.preemption_oracle

    def counted(tree, usage, preemptor, pool, **kw):  # type: ignore[no-untyped-def]
        calls.append(preemptor.key)
        return real(tree, usage, preemptor, pool, **kw)

    monkeypatch.setattr(solver, "preemption_oracle", counted)
    d = run(_preemption_case("LowerPriority"))
    assert [p.key for p in d.preemptions] == ["default/low"] and calls == []
    cluster = Cluster([node("a0", labels={"gpu": "a100"}), node("h0", labels={"gpu": "h100"})])
    lows = [running(cluster, "xa", "a0", 8, flavor_name="a100"), running(cluster, "xh", "h0", 8, flavor_name="h100")]
    snap = snapshot(cluster, [cq("cq", 8, flavors=("a100", "h100"), preemption={"withinClusterQueue": "LowerPriority"})],
                    pending(workload("high", 8, priority=100, created=50)),
                    flavors=[flavor("a100", {"gpu": "a100"}), flavor("h100", {"gpu": "h100"})], admitted=lows)
    d = run(snap)
    assert [p.key for p in d.preemptions] == ["default/xa"] and calls == ["default/high"]


def test_reclaim_within_cohort() -> None:
    cluster = Cluster([node("n0")])
    lender_use = running(cluster, "borrower", "n0", 8, priority=0, queue="team-b")
    queues = [cq("team-a", 4, cohort="co", preemption={"reclaimWithinCohort": "Any"}), cq("team-b", 4, cohort="co")]
    snap = snapshot(cluster, queues, pending(workload("mine", 4, queue="qa")), admitted=[lender_use],
                    local_queues=[lq("qa", "team-a"), lq("qb", "team-b")])
    d = run(snap)
    assert [(p.key, str(p.reason)) for p in d.preemptions] == [("default/borrower", "InCohortReclamation")]


# --- determinism, fallback, stats --------------------------------------------------------------------------


def _medium(seed: int, cfg: Configuration) -> Snapshot:
    import random

    rng = random.Random(seed)
    nodes = rack_nodes(2, 4)
    wls = []
    for i in range(24):
        shape = rng.choice([(0.5, 1), (1, 1), (2, 1), (4, 1), (8, 1), (8, 2)])
        wls.append(workload(f"w{i}", shape[0], shape[1], priority=rng.choice([0, 0, 5]), created=float(i)))
    return snapshot(nodes, [cq("cq", 48)], pending(*wls), cfg=cfg, seed=seed)


@pytest.mark.parametrize("workers", [1, 2])
def test_same_seed_same_decisions(workers: int) -> None:
    cfg = config(time_limit=1.0, workers=workers)
    first = run(_medium(3, cfg))
    second = run(_medium(3, cfg))
    assert [(a.key, a.podsets) for a in first.admissions] == [(a.key, a.podsets) for a in second.admissions]
    assert first.pending == second.pending


def test_independent_components_solved_side_by_side_are_deterministic() -> None:
    def world() -> Snapshot:
        nodes = [node(f"a{i}", labels={"gpu": "a"}) for i in range(3)] + [node(f"b{i}", labels={"gpu": "b"}) for i in range(3)]
        wls = [workload(f"x{i}", g, queue="qa", created=float(i)) for i, g in enumerate([4, 2, 6, 4, 3, 5])]
        wls += [workload(f"y{i}", g, queue="qb", created=float(i)) for i, g in enumerate([1, 8, 3, 5, 2, 6, 0.5])]
        return snapshot(nodes, [cq("team-a", 100, flavors=("fa",)), cq("team-b", 100, flavors=("fb",))], pending(*wls),
                        flavors=[flavor("fa", {"gpu": "a"}), flavor("fb", {"gpu": "b"})],
                        local_queues=[lq("qa", "team-a"), lq("qb", "team-b")], cfg=config(time_limit=1.0, workers=2))

    policy = TesseraPolicy()
    first = policy.schedule(world())
    assert policy.last is not None and policy.last.components == 2
    verify(world(), first)
    second = TesseraPolicy().schedule(world())
    assert [(a.key, a.podsets) for a in first.admissions] == [(a.key, a.podsets) for a in second.admissions]


def test_zero_time_falls_back_to_the_greedy_cycle() -> None:
    snap = _medium(5, config(time_limit=0.0))
    d = run(snap)
    assert "greedy fallback" in d.stats.solver_status
    greedy = TesseraPolicy()._greedy(snap, prepare(snap), [])
    assert sorted(a.key for a in d.admissions) == sorted(p.key for p in greedy.admitted)
    assert {a.key: a.podsets[0].nodes for a in d.admissions} == {p.key: p.nodes[0] for p in greedy.admitted}


def test_never_less_priority_weighted_gpu_than_greedy() -> None:
    from scheduler.kueue import greedy_cycle as kueue_cycle
    from scheduler.kueue import place_admissions
    from scheduler.solver import _compare, _placed_value

    for seed in (7, 8, 9):
        snap = _medium(seed, config(time_limit=1.0))
        d = run(snap)
        placer = Placer(snap)
        greedy, _ = greedy_cycle(prepare(snap), placer)
        assert _compare(decisions_value(d, snap), _placed_value(greedy, snap.cluster.accelerators)) >= 0
        kueue = place_admissions(snap, kueue_cycle(snap, drain=True), gang=True)
        assert _compare(decisions_value(d, snap), decisions_value(kueue, snap)) >= 0


def test_stats_report_status_objective_and_bound() -> None:
    d = run(snapshot([node("n0"), node("n1")], [cq("cq", 16)], pending(workload("a", 4), workload("b", 8, created=1))))
    assert d.stats.policy == "tessera"
    assert d.stats.solver_status == "OPTIMAL"
    assert d.stats.objective is not None and d.stats.bound is not None and d.stats.objective == d.stats.bound
    assert d.stats.considered == 2 and d.stats.seconds > 0


def test_reason_for_capacity_taken_by_better_packing() -> None:
    # the greedy would admit "first" (8 GPUs of one node), the solver prefers two higher-value jobs
    snap = snapshot([node("n0", gpus=4)], [cq("cq", 100)], pending(workload("x", 3, created=1), workload("y", 2, created=2),
                                                                   workload("z", 2, created=3)))
    d = run(snap)
    assert admitted_keys(d) == ["y", "z"]
    assert d.pending["default/x"].startswith(NOT_ADMITTED)


def test_podset_options_are_kept_across_cycles_with_this_cycles_group_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Options depend on the configuration and node labels only: a later cycle on the same
    objects reuses them, and numbers the placement groups in its own order of first use, as a
    cycle computing everything afresh does."""
    import scheduler.solver_common as common

    computed: list[str] = []
    real = common._podset_options

    def counted(snapshot, tree, cq, ps, node_sets):  # type: ignore[no-untyped-def]
        computed.append(ps.name if ps.constraints.node_selector == () else "pinned")
        return real(snapshot, tree, cq, ps, node_sets)

    monkeypatch.setattr(common, "_podset_options", counted)
    cluster = Cluster([node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"})])
    pinned = workload("pinned", 1, created=1.0, constraints=NodeConstraints(node_selector=(("zone", "b"),)))
    first = snapshot(cluster, [cq("cq")], pending(workload("plain", 1, created=2.0)))
    common.prepare(first)
    assert computed == ["main"]
    later = replace(first, pending=pending(pinned, workload("plain", 1, created=2.0)))
    got = common.prepare(later)
    assert computed == ["main", "pinned"]  # the plain shape's options were kept
    cluster.shared.pop("solver_options")
    fresh = common.prepare(later)
    assert got.groups == fresh.groups and got.group_nodes == fresh.group_nodes
    assert [[o.group for ps in c.podsets for o in ps.options] for c in got.candidates] == [[0], [1]]
    assert [[o.group for ps in c.podsets for o in ps.options] for c in fresh.candidates] == [[0], [1]]


# --- the lexicographic fallback ------------------------------------------------------------------


def test_a_model_not_proven_at_once_is_solved_lexicographically(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler import solver_model

    cfg = config(time_limit=1.0)
    plain = TesseraPolicy()
    expected = plain.schedule(_medium(5, cfg))
    assert plain.last is not None and plain.last.status == "OPTIMAL" and plain.last.primary_proven
    calls: list[str] = []
    once = solver_model._Builder._solve_once

    def spy(self: Any, wall: float, deterministic: float, extract: bool = True) -> Any:
        result = once(self, wall, deterministic, extract)
        calls.append(result[0].status)
        return result

    monkeypatch.setattr(solver_model._Builder, "_solve_once", spy)
    monkeypatch.setattr(solver_model, "FIRST_SHARE", 0.0)  # the whole objective at once gets no time
    policy = TesseraPolicy()
    d = policy.schedule(_medium(5, cfg))
    verify(_medium(5, cfg), d)
    assert calls[0] != "OPTIMAL" and len(calls) == 3  # whole, GPU-time alone, whole with it held
    assert policy.last is not None and policy.last.primary_proven and policy.last.status == "OPTIMAL"
    assert policy.last.objective == plain.last.objective == policy.last.bound
    assert decisions_value(d, _medium(5, cfg)) == decisions_value(expected, _medium(5, cfg))

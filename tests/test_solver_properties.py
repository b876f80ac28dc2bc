"""Properties of the `tessera` policy on small random worlds (hypothesis).

For every generated snapshot (nodes of two GPU models in two racks, some tainted, some already
running pods; one to three ClusterQueues, optionally sharing a cohort with borrowing and lending
limits; pending workloads of mixed shapes: GPU shares, whole GPUs, gangs, minCount, required or
preferred rack, node selectors, tolerations, priorities):

* every decision passes `test_solver.verify`: node capacity and per-GPU devices (each pod bound
  again), node selectors, taints and flavor labels, gang all-or-nothing (at least minCount),
  required topology, and quota recomputed from the workloads and checked in decision order;
* a tessera cycle admits at least the priority-weighted GPU (lexicographic by priority) of the
  greedy cycle from the same state: tessera's own greedy and Kueue's (`scheduler.kueue`, drain
  mode, pods placed all-or-nothing);
* the same seed gives the same decisions.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotas.api import ClusterQueue, Cohort
from quotas.kube import Taint, Toleration
from scheduler.affinity import NodeConstraints
from scheduler.cluster import Cluster
from scheduler.kueue import greedy_cycle as kueue_cycle
from scheduler.kueue import place_admissions
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot
from scheduler.solver import TesseraPolicy, _compare, _placed_value, decisions_value
from scheduler.solver_common import prepare
from scheduler.solver_place import Placer, greedy_cycle
from scheduler.workload import PodSetInfo, TopologyRequest, WorkloadInfo
from test_solver import GPU, HOST, config, flavor, lq, node, pod, snapshot, topology, verify

TAINT = Taint(key="dedicated", value="x", effect="NoSchedule")
TOLERATE = Toleration(key="dedicated", operator="Equal", value="x", effect="NoSchedule")

node_st = st.fixed_dictionaries(
    {
        "gpus": st.sampled_from([1, 2, 4, 8]),
        "cpu": st.sampled_from([4, 16, 64]),
        "model": st.sampled_from(["a", "b"]),
        "rack": st.sampled_from(["r0", "r1"]),
        "tainted": st.booleans(),
        "busy": st.sampled_from([0, 0, 1, 2, 500]),
    }
)
queue_st = st.fixed_dictionaries(
    {
        "gpus": st.integers(0, 12),
        "borrow": st.sampled_from([None, None, 0, 2]),
        "lend": st.sampled_from([None, None, 1]),
        "strict": st.booleans(),
    }
)
workload_st = st.fixed_dictionaries(
    {
        "gpu": st.sampled_from([0, 250, 500, 700, 1000, 1000, 2000, 4000, 8000]),
        "pods": st.integers(1, 4),
        "min": st.sampled_from([None, None, 1]),
        "topo": st.sampled_from([None, None, ("required", "rack"), ("preferred", "rack")]),
        "prio": st.sampled_from([0, 0, 10]),
        "queue": st.integers(0, 2),
        "select": st.sampled_from([None, None, "a", "b"]),
        "tolerate": st.booleans(),
        "cpu": st.sampled_from([1, 2, 8]),
        "age": st.sampled_from([0.0, 10.0, 100.0]),
    }
)
world_st = st.fixed_dictionaries(
    {
        "nodes": st.lists(node_st, min_size=1, max_size=6),
        "queues": st.lists(queue_st, min_size=1, max_size=3),
        "cohort": st.booleans(),
        "workloads": st.lists(workload_st, min_size=1, max_size=9),
        "seed": st.integers(0, 3),
    }
)


def build(world: dict[str, Any]) -> Snapshot:
    nodes = []
    for i, spec in enumerate(world["nodes"]):
        nodes.append(
            node(
                f"n{i}",
                gpus=spec["gpus"],
                cpu=spec["cpu"],
                labels={"gpu": spec["model"], "block": "b0", "rack": spec["rack"]},
                taints=[TAINT] if spec["tainted"] else [],
            )
        )
    cluster = Cluster(nodes)
    queues = []
    for i, q in enumerate(world["queues"]):
        limits: dict[str, Any] = {}
        if world["cohort"] and q["borrow"] is not None:
            limits["borrowingLimit"] = q["borrow"]
        if world["cohort"] and q["lend"] is not None:
            limits["lendingLimit"] = min(q["lend"], q["gpus"])
        body: dict[str, Any] = {
            "namespaceSelector": {},
            "queueingStrategy": "StrictFIFO" if q["strict"] else "BestEffortFIFO",
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", GPU],
                    "flavors": [
                        {"name": f, "resources": [
                            {"name": "cpu", "nominalQuota": 64},
                            {"name": "memory", "nominalQuota": "1Ti"},
                            {"name": GPU, "nominalQuota": q["gpus"], **limits},
                        ]}
                        for f in ("model-a", "model-b")
                    ],
                }
            ],
            "preemption": {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any"},
        }
        if world["cohort"]:
            body["cohort"] = "all"
        queues.append(ClusterQueue.model_validate({"metadata": {"name": f"cq{i}"}, "spec": body}))
    flavors = [flavor("model-a", {"gpu": "a"}, topology="dc", tolerations=[TOLERATE.model_dump(by_alias=True, exclude_none=True)]),
               flavor("model-b", {"gpu": "b"}, topology="dc")]
    # running pods: bound where they fit, charged to cq0 in the node's flavor
    admitted = []
    for i, spec in enumerate(world["nodes"]):
        if not spec["busy"]:
            continue
        p = pod(500 if spec["busy"] == 500 else spec["busy"] * 1000)
        if not cluster.nodes[f"n{i}"].fits(p):
            continue
        b = cluster.bind(f"n{i}", p)
        fname = f"model-{spec['model']}"
        wl = WorkloadInfo("default", f"run{i}", "q0", (PodSetInfo("main", 1, p),), priority=0, cluster_queue="cq0")
        admitted.append(Admitted(wl, "cq0", 1.0, {(fname, r): v for r, v in p.items},
                                 (PodSetPlacement("main", 1, {r: fname for r in p}, (f"n{i}",)),), (b,)))
    pend = []
    for j, w in enumerate(world["workloads"]):
        q = w["queue"] % len(queues)
        constraints = NodeConstraints.build(
            {"gpu": w["select"]} if w["select"] else None, None, [TOLERATE] if w["tolerate"] else []
        )
        ps = PodSetInfo(
            "main",
            w["pods"],
            pod(w["gpu"], w["cpu"]),
            min_count=w["min"],
            constraints=constraints,
            topology=TopologyRequest(*w["topo"]) if w["topo"] else None,
        )
        wl = WorkloadInfo("default", f"w{j}", f"q{q}", (ps,), priority=w["prio"], creation_time=100.0 - w["age"] - j * 0.01)
        pend.append(Pending(wl, wl.creation_time))
    return snapshot(
        cluster,
        queues,
        pend,
        flavors=flavors,
        local_queues=[lq(f"q{i}", f"cq{i}") for i in range(len(queues))],
        cohorts=[Cohort.model_validate({"metadata": {"name": "all"}})] if world["cohort"] else [],
        admitted=admitted,
        topologies=[topology(("block", "rack", HOST))],
        cfg=config(time_limit=0.5, workers=1),
        seed=world["seed"],
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_st)
def test_decisions_are_sound_and_never_worse_than_greedy(world: dict[str, Any]) -> None:
    snap = build(world)
    decisions = TesseraPolicy().schedule(snap)
    verify(snap, decisions)

    value = decisions_value(decisions, snap)
    mine, _ = greedy_cycle(prepare(snap), Placer(snap))
    assert _compare(value, _placed_value(mine, snap.cluster.accelerators)) >= 0
    kueue = place_admissions(snap, kueue_cycle(snap, drain=True), gang=True)
    assert _compare(value, decisions_value(kueue, snap)) >= 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_st)
def test_same_seed_same_decisions(world: dict[str, Any]) -> None:
    first = TesseraPolicy().schedule(build(world))
    second = TesseraPolicy().schedule(build(world))
    assert [(a.key, a.podsets, a.usage) for a in first.admissions] == [(a.key, a.podsets, a.usage) for a in second.admissions]
    assert [(p.key, p.preemptor) for p in first.preemptions] == [(p.key, p.preemptor) for p in second.preemptions]
    assert first.pending == second.pending

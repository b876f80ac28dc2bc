"""Per-pod placement (admission/placement.py): the `tessera` policy's node for every pod, honoured
through the scheduling gate `tessera.dev/placement`.

The first half tests the pure parts: matching pods to a plan (idempotent, within the counts,
restart-safe, falling back when a planned node is gone), the plan in the admission record, the
gate on the templates of each kind and its removal, and the snapshot's reservations. The
second half runs the real operator against kmock's emulator (as tests/test_operator_e2e.py
does), playing the Job controller and the kubelet by creating the Job's pods from its template.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import kopf
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from admission import integrations as ig
from admission import placement as pl
from admission import workloads as wl
from admission.kube import API_CALLS, JOBS, PODS, USER_AGENT, WATCHED, WORKLOADS, Resource
from admission.snapshot import SnapshotMemo, build_cycle
from admission.state import ClusterState
from admission.testing import (
    condition,
    until,
    GPU,
    EmulatedCluster,
    cluster_queue,
    flavor,
    job,
    jobset,
    local_queue,
    merge_patch,
    running_operator,
    node,
    priority_class,
    pytorchjob,
)
from quotas.api import ResourceFlavor, Workload
from scheduler.decisions import Admission
from scheduler.snapshot import PodSetPlacement
from scheduler.workload import WorkloadInfo, parse_timestamp

T = TypeVar("T")
NOW = "2025-01-02T03:04:05Z"
LATER = "2025-01-02T03:10:00Z"
HOST = pl.HOSTNAME_LABEL
TOL = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
A100 = ResourceFlavor.model_validate(flavor("a100", {"gpu.product": "A100"}, tolerations=[TOL]))
FLAVORS = {"a100": A100}
SELECTOR = {"gpu.product": "A100"}


def with_meta(obj: dict[str, Any], rv: str = "1", uid: str = "uid-1") -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].update({"resourceVersion": rv, "uid": uid, "creationTimestamp": NOW})
    return obj


def job_pod(job_obj: dict[str, Any], index: int, created: str | None = None) -> dict[str, Any]:
    """A pod as the Job controller creates it from the Job's pod template (no node yet)."""
    meta = job_obj["metadata"]
    template = job_obj["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{meta['name']}-{index}", "namespace": meta["namespace"],
                         "creationTimestamp": created or f"2025-01-02T03:05:{index:02d}Z",
                         "labels": {"batch.kubernetes.io/job-name": meta["name"]},
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                              "uid": meta.get("uid", "x"), "controller": True}]},
            "spec": copy.deepcopy(template["spec"]), "status": {"phase": "Pending"}}


def gated_pod(name: str, created: str, selector: dict[str, str] | None = None,
              gates: list[str] | None = None) -> dict[str, Any]:
    names = gates if gates is not None else [pl.PLACEMENT_GATE]
    spec: dict[str, Any] = {"schedulingGates": [{"name": g} for g in names], "containers": [{"name": "main"}]}
    if selector:
        spec["nodeSelector"] = dict(selector)
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created}, "spec": spec,
            "status": {"phase": "Pending"}}


def ungate_all(pods: list[dict[str, Any]], matches: list[pl.PodPlacement]) -> list[dict[str, Any]]:
    patches = {m.pod: m.patch for m in matches}
    return [merge_patch(p, patches[p["metadata"]["name"]]) if p["metadata"]["name"] in patches else p for p in pods]


def nodes_of(pods: list[dict[str, Any]]) -> Counter[str]:
    return Counter(pl.pinned_node(p) for p in pods if not pl.is_gated(p))


# --- matching pods to the plan ------------------------------------------------------------------------


def test_pods_go_to_the_planned_nodes_oldest_first_within_each_nodes_count() -> None:
    plan = {"n1": 2, "n2": 1}
    pods = [gated_pod("p-c", "2025-01-02T03:04:07Z"), gated_pod("p-a", "2025-01-02T03:04:05Z"),
            gated_pod("p-b", "2025-01-02T03:04:06Z")]
    matches = pl.match_pods(pods, plan, 3, SELECTOR)
    assert [(m.pod, m.node) for m in matches] == [("p-a", "n1"), ("p-b", "n1"), ("p-c", "n2")]
    assert matches[0].patch == {"spec": {"schedulingGates": None,
                                         "nodeSelector": {"gpu.product": "A100", HOST: "n1"}}}
    placed = ungate_all(pods, matches)
    assert nodes_of(placed) == Counter(plan)
    assert pl.match_pods(placed, plan, 3, SELECTOR) == []  # idempotent: nothing left to do


def test_matching_is_restart_safe_and_never_overflows_a_node_or_the_admitted_count() -> None:
    plan = {"n1": 2, "n2": 1}
    pods = [gated_pod(f"p-{i}", f"2025-01-02T03:04:0{i}Z") for i in range(5)]  # two more than admitted
    first = pl.match_pods(pods, plan, 3, SELECTOR)
    # The process dies after the first pod's patch: the next pass derives everything from the pods.
    after_crash = ungate_all(pods, first[:1])
    rest = pl.match_pods(after_crash, plan, 3, SELECTOR)
    assert [(m.pod, m.node) for m in rest] == [("p-1", "n1"), ("p-2", "n2")]
    placed = ungate_all(after_crash, rest)
    assert nodes_of(placed) == Counter(plan)
    assert sum(pl.is_gated(p) for p in placed) == 2  # beyond the admitted count: still held
    assert pl.match_pods(placed, plan, 3, SELECTOR) == []

    # A pod fails: its slot is free again and the Job's replacement goes to the same node.
    failed = next(p for p in placed if pl.pinned_node(p) == "n2")
    failed["status"]["phase"] = "Failed"
    again = pl.match_pods(placed, plan, 3, SELECTOR)
    assert [(m.pod, m.node) for m in again] == [("p-3", "n2")]
    # A terminating pod still holds its slot (and a terminating gated pod is never ungated).
    placed = ungate_all(placed, again)
    placed[0]["metadata"]["deletionTimestamp"] = LATER
    placed[4]["metadata"]["deletionTimestamp"] = LATER
    assert pl.match_pods(placed, plan, 3, SELECTOR) == []


def test_a_pod_bound_without_a_hostname_selector_counts_on_its_node_and_existing_keys_are_never_changed() -> None:
    plan = {"n1": 1, "n2": 1}
    bound = gated_pod("p-0", "2025-01-02T03:04:00Z", gates=[])
    bound["spec"]["nodeName"] = "n1"  # ungated before, placed by kube-scheduler
    waiting = gated_pod("p-1", "2025-01-02T03:04:01Z", selector={"gpu.product": "A100", "zone": "z1"},
                        gates=["example.com/other", pl.PLACEMENT_GATE])
    (match,) = pl.match_pods([bound, waiting], plan, 2, SELECTOR)
    assert match.node == "n2"
    assert match.patch == {"spec": {"schedulingGates": [{"name": "example.com/other"}], "nodeSelector": {HOST: "n2"}}}
    # A pod already tied to a node by its own selector is counted there, or let go without a planned node.
    own = gated_pod("p-2", "2025-01-02T03:04:02Z", selector={HOST: "n3"})
    (match,) = pl.match_pods([own], {"n1": 1}, 1, SELECTOR)
    assert match.node is None and match.patch["spec"]["nodeSelector"] == SELECTOR


def test_a_gone_node_falls_back_to_the_flavor_selector_only() -> None:
    pods = [gated_pod(f"p-{i}", f"2025-01-02T03:04:0{i}Z") for i in range(3)]
    matches = pl.match_pods(pods, {"n1": 2, "gone": 1}, 3, SELECTOR, available={"n1", "n2"})
    assert [(m.pod, m.node) for m in matches] == [("p-0", "n1"), ("p-1", "n1"), ("p-2", None)]
    assert matches[2].patch == {"spec": {"schedulingGates": None, "nodeSelector": SELECTOR}}
    # No plan at all (a gated pod of an admission without one): the flavor selector, within the count.
    assert [(m.pod, m.node) for m in pl.match_pods(pods, {}, 2, SELECTOR)] == [("p-0", None), ("p-1", None)]


def test_assign_is_pure_arithmetic_over_what_is_placed() -> None:
    waiting = [("a", None), ("b", None), ("c", None)]
    assert pl.assign({"x": 1, "y": 2}, 3, [], waiting) == [("a", "x"), ("b", "y"), ("c", "y")]
    assert pl.assign({"x": 1, "y": 2}, 3, ["y", None], waiting) == [("a", "x")]  # room for one
    assert pl.assign({"x": 1, "y": 2}, 3, ["y", "y", "x"], waiting) == []
    assert pl.assign({"x": 1, "y": 2}, 3, ["x"], waiting, available={"x"}) == [("a", None), ("b", None)]
    assert pl.plan_counts(["b", "a", "b"]) == {"b": 2, "a": 1} and pl.expand({"b": 2, "a": 1}) == ("b", "b", "a")


# --- the plan in the admission record -----------------------------------------------------------------


def _info() -> WorkloadInfo:
    raw = with_meta(ig.BATCH_JOB.workload_manifest(with_meta(job("ns", "j", "lq", gpus=4, parallelism=3))))
    return WorkloadInfo.from_workload(Workload.model_validate(raw), {})


def test_the_plan_is_recorded_only_for_a_policy_that_places_pods_and_read_back() -> None:
    info = _info()
    solved = Admission("ns/job-j", "cq", (PodSetPlacement("main", 3, {GPU: "a100"}, nodes=("n2", "n1", "n2")),),
                       {("a100", GPU): 12000})
    record = wl.admission_record(Admission(solved.key, "cq", pl.planned(solved.podsets, True), solved.usage),
                                 info, FLAVORS, {})
    assert record["podSetAssignments"][0]["nodes"] == [{"name": "n2", "count": 2}, {"name": "n1", "count": 1}]
    status = wl.admitted_status(with_meta(ig.BATCH_JOB.workload_manifest(with_meta(job("ns", "j", "lq")))),
                                record, NOW)
    Workload.model_validate({**ig.BATCH_JOB.workload_manifest(with_meta(job("ns", "j", "lq"))), "status": status})
    (placement,) = wl.placements_of(record)
    assert placement.nodes == ("n2", "n2", "n1") and pl.node_plans(record) == {"main": {"n2": 2, "n1": 1}}

    # Kueue-style policies (TAS nodes included) and incomplete node lists record no plan.
    for podsets in (pl.planned(solved.podsets, False),
                    pl.planned((PodSetPlacement("main", 3, {GPU: "a100"}, nodes=("n1",)),), True)):
        kueue = wl.admission_record(Admission(solved.key, "cq", podsets, solved.usage), info, FLAVORS, {})
        assert "nodes" not in kueue["podSetAssignments"][0]
        assert wl.placements_of(kueue)[0].nodes == ()


# --- the gate on the templates ----------------------------------------------------------------------


def planned_placement(name: str, nodes: tuple[str, ...]) -> PodSetPlacement:
    return PodSetPlacement(name, len(nodes), {GPU: "a100"}, nodes=nodes)


def test_a_job_admitted_with_a_plan_is_gated_and_holding_it_again_takes_the_gate_off() -> None:
    raw = with_meta(job("ns", "j", "lq", gpus=4, parallelism=3))
    raw["spec"]["template"]["spec"]["schedulingGates"] = [{"name": "example.com/mine"}]
    change = ig.BATCH_JOB.release(raw, [], [planned_placement("main", ("n1", "n1", "n2"))], FLAVORS, {})
    started = merge_patch(raw, change.patch)
    spec = started["spec"]["template"]["spec"]
    assert spec["schedulingGates"] == [{"name": "example.com/mine"}, {"name": pl.PLACEMENT_GATE}]
    assert spec["nodeSelector"] == SELECTOR and started["spec"]["suspend"] is False
    # Released again (a repair after a crash): the same template, one gate.
    assert merge_patch(started, ig.BATCH_JOB.release(started, [], [planned_placement("main", ("n1",) * 3)],
                                                     FLAVORS, {}).patch) == started
    held = merge_patch(started, ig.BATCH_JOB.hold(started, []).patch)
    assert held["spec"]["template"] == raw["spec"]["template"] and held["spec"]["suspend"] is True

    # Without a plan (the Kueue-style policies) the template carries no gate, as before.
    plain = merge_patch(raw, ig.BATCH_JOB.release(raw, [], [PodSetPlacement("main", 3, {GPU: "a100"})],
                                                  FLAVORS, {}).patch)
    assert plain["spec"]["template"]["spec"]["schedulingGates"] == [{"name": "example.com/mine"}]

    # The repair path reads the plan back from the record.
    record = {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "main", "flavors": {GPU: "a100"}, "count": 3, "resourceUsage": {GPU: "12"},
         "nodes": [{"name": "n1", "count": 3}]}]}
    repaired = ig.BATCH_JOB.admitted_change(raw, [], wl.placements_of(record), FLAVORS, {})
    assert pl.has_gate(merge_patch(raw, repaired.patch)["spec"]["template"]["spec"])


def test_jobset_and_pytorchjob_templates_are_gated_per_planned_podset_and_restored() -> None:
    js = with_meta(jobset("ns", "js", "lq", {"leader": (1, 1, 1), "workers": (2, 2, 2)}))
    change = ig.JOBSET.release(js, [], [PodSetPlacement("leader", 1, {GPU: "a100"}),
                                        planned_placement("workers", ("n1", "n1", "n2", "n2"))], FLAVORS, {})
    started = merge_patch(js, change.patch)
    leader, workers = (rj["template"]["spec"]["template"]["spec"] for rj in started["spec"]["replicatedJobs"])
    assert "schedulingGates" not in leader and leader["nodeSelector"] == SELECTOR
    assert workers["schedulingGates"] == [{"name": pl.PLACEMENT_GATE}] and workers["nodeSelector"] == SELECTOR
    held = merge_patch(started, ig.JOBSET.hold(started, []).patch)
    assert held["spec"]["replicatedJobs"] == js["spec"]["replicatedJobs"]

    pt = with_meta(pytorchjob("ns", "pt", "lq", {"Master": (1, 1), "Worker": (2, 4)}))
    started = merge_patch(pt, ig.PYTORCHJOB.release(pt, [], [planned_placement("master", ("n1",)),
                                                             planned_placement("worker", ("n1", "n2"))],
                                                    FLAVORS, {}).patch)
    for spec in started["spec"]["pytorchReplicaSpecs"].values():
        assert spec["template"]["spec"]["schedulingGates"] == [{"name": pl.PLACEMENT_GATE}]
    held = merge_patch(started, ig.PYTORCHJOB.hold(started, []).patch)
    assert held["spec"]["pytorchReplicaSpecs"] == pt["spec"]["pytorchReplicaSpecs"]


def test_placement_change_ungates_each_podsets_pods_onto_its_own_plan() -> None:
    pt = with_meta(pytorchjob("ns", "pt", "lq", {"Master": (1, 1), "Worker": (2, 4)}, suspend=False))
    pods = []
    for kind, index, created in (("master", 0, "2025-01-02T03:04:00Z"), ("worker", 0, "2025-01-02T03:04:01Z"),
                                 ("worker", 1, "2025-01-02T03:04:02Z")):
        p = gated_pod(f"pt-{kind}-{index}", created)
        p["metadata"]["labels"] = {"training.kubeflow.org/job-name": "pt",
                                   "training.kubeflow.org/replica-type": kind}
        pods.append(p)
    placements = [planned_placement("master", ("n2",)), planned_placement("worker", ("n1", "n3"))]
    change = ig.PYTORCHJOB.placement_change(pt, pods, placements, FLAVORS, {}, available={"n1", "n2"})
    assert change is not None and change.patch is None
    assert {name: patch["spec"]["nodeSelector"].get(HOST) for name, patch in change.pod_patches} == {
        "pt-master-0": "n2", "pt-worker-0": "n1", "pt-worker-1": None}
    assert change.unplaced == ["pt-worker-1"]  # its planned node n3 is gone
    placed = [merge_patch(p, dict(change.pod_patches)[p["metadata"]["name"]]) for p in pods]
    assert ig.PYTORCHJOB.placement_change(pt, placed, placements, FLAVORS, {}, available={"n1", "n2"}) is None


# --- the plan in the snapshot ------------------------------------------------------------------------


def test_planned_pods_not_bound_yet_hold_their_nodes_in_the_snapshot() -> None:
    raw = with_meta(job("ns", "j", "lq", gpus=4, parallelism=3, suspend=False), uid="job-uid")
    workload = with_meta(ig.BATCH_JOB.workload_manifest(raw), rv="7")
    record = {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "main", "flavors": {GPU: "a100"}, "count": 3, "resourceUsage": {GPU: "12"},
         "nodes": [{"name": "n1", "count": 2}, {"name": "n2", "count": 1}]}]}
    workload["status"] = wl.admitted_status(workload, record, NOW)
    bound = job_pod(raw, 0)
    bound["spec"].update({"nodeName": "n1", "nodeSelector": {HOST: "n1"}})
    bound["status"]["phase"] = "Running"
    state = ClusterState([r.plural for r in WATCHED])
    for plural, obj in (("resourceflavors", flavor("a100", {"gpu.product": "A100"})),
                        ("clusterqueues", cluster_queue("cq", {"a100": 16})),
                        ("localqueues", local_queue("ns", "lq", "cq")),
                        ("nodes", node("n1", 8, {"gpu.product": "A100"})),
                        ("nodes", node("n2", 8, {"gpu.product": "A100"})),
                        ("jobs", raw), ("workloads", workload), ("pods", bound)):
        state.apply(plural, None, obj)
    state.synced.update(r.plural for r in WATCHED)
    cycle = build_cycle(state, parse_timestamp(LATER))
    before = cycle.snapshot.cluster
    assert before.nodes["n1"].free(GPU) == 4000 and before.nodes["n2"].free(GPU) == 8000

    assert pl.reserve_plans(cycle) == 2
    cluster = cycle.snapshot.cluster
    assert cluster is not before and before.nodes["n1"].free(GPU) == 4000  # the snapshot's own is not touched
    assert cluster.nodes["n1"].free(GPU) == 0 and cluster.nodes["n2"].free(GPU) == 4000
    (admitted,) = cycle.snapshot.admitted
    assert sorted(admitted.podsets[0].nodes) == ["n1", "n1", "n2"] and len(admitted.bindings) == 3

    # An evicted workload (its pods are going) holds nothing beyond its bound pods.
    workload["status"] = wl.evicting_status(workload, wl.EVICTED_BY_PREEMPTION, "preempted", LATER, "InClusterQueue")
    workload["metadata"]["resourceVersion"] = "8"
    state.apply("workloads", "MODIFIED", workload)
    evicting = build_cycle(state, parse_timestamp(LATER))
    assert pl.reserve_plans(evicting) == 0 and evicting.snapshot.cluster.nodes["n2"].free(GPU) == 8000


def reference_reserve_plans(cycle: Any) -> int:
    """`reserve_plans` without anything kept between cycles: every admitted workload's planned pods bound anew,
    in snapshot order, on a fresh copy of the cluster (one workload's binding is `_reserve`, tested above)."""
    snapshot = cycle.snapshot
    cluster = snapshot.cluster.copy()
    reserved = 0
    admitted = []
    for a in snapshot.admitted:
        entry = cycle.entries.get(a.key)
        record = ((entry.workload.get("status") or {}).get("admission") or {}) if entry is not None else {}
        plans = pl.node_plans(record) if not a.evicted else {}
        added, bindings = pl._reserve(cluster, a, plans) if plans else ((), ())
        reserved += len(bindings)
        admitted.append(pl._with_reservation(a, added, bindings))
    snapshot.cluster = cluster
    snapshot.admitted = admitted
    return reserved


def physical(cluster: Any) -> tuple[Any, ...]:
    """What a cluster holds, node by node (devices included), and which nodes are in the same state; not the
    numbering of the states, which depends on the order they were first seen in (any numbering that gives equal
    states equal ids serves the policies)."""
    nodes = tuple((n.name, n.unschedulable, {r: v for r, v in n.used.items() if v}, {r: list(d) for r, d in
                   n.devices.items()}, n.pod_count, n.nonzero_cpu, n.nonzero_memory) for n in cluster)
    classes: dict[int, list[str]] = {}
    for n in cluster:
        assert cluster.state_array[n.index] == n.state_id
        classes.setdefault(n.state_id, []).append(n.name)
    return nodes, sorted(classes.values())


class PlanWorld:
    """Jobs admitted with per-pod plans onto four nodes (n3 missing at first), their pods binding and going."""

    NODES = ("n0", "n1", "n2", "n3")
    JOBS = ("j0", "j1", "j2", "j3", "j4")
    GPUS = ("1", "2", "500m", "250m")

    def __init__(self) -> None:
        self.state = ClusterState([r.plural for r in WATCHED])
        self.state.synced.update(r.plural for r in WATCHED)
        self.rv = 10
        self.memo = pl.PlanMemo()
        self.put("resourceflavors", flavor("a100", {"gpu.product": "A100"}))
        self.put("clusterqueues", cluster_queue("cq", {"a100": 64}))
        self.put("localqueues", local_queue("ns", "lq", "cq"))
        for name in self.NODES[:3]:
            self.put("nodes", node(name, 8, {"gpu.product": "A100"}))

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj["metadata"].setdefault("creationTimestamp", NOW)
        self.state.apply(plural, "MODIFIED", obj)
        return obj

    def delete(self, plural: str, namespace: str, name: str) -> None:
        current = self.state.get(plural, namespace, name)
        if current is not None:
            self.state.apply(plural, "DELETED", current)

    def workload(self, name: str) -> dict[str, Any] | None:
        return self.state.get("workloads", "ns", f"job-{name}")

    def admit(self, name: str, gpus: str, nodes: list[str]) -> None:
        """(Re)admit a Job of len(nodes) pods of `gpus` GPUs each, planned one pod per listed node."""
        raw = job("ns", name, "lq", gpus=1, parallelism=len(nodes), suspend=False)
        resources = raw["spec"]["template"]["spec"]["containers"][0]["resources"]
        resources["requests"][GPU] = resources["limits"][GPU] = gpus
        raw["metadata"]["uid"] = f"uid-{name}"
        raw = self.put("jobs", raw)
        workload = ig.BATCH_JOB.workload_manifest(raw)
        record = {"clusterQueue": "cq", "podSetAssignments": [
            {"name": "main", "flavors": {GPU: "a100"}, "count": len(nodes), "resourceUsage": {GPU: str(len(nodes))},
             "nodes": pl.record_nodes(nodes)}]}
        workload["status"] = wl.admitted_status(workload, record, NOW)
        self.put("workloads", workload)

    def evict(self, name: str) -> None:
        w = self.workload(name)
        if w is not None and wl.holds_quota(w) and not wl.is_evicting(w):
            self.put("workloads", {**w, "status": wl.evicting_status(w, wl.EVICTED_BY_PREEMPTION, "x", NOW,
                                                                     "InClusterQueue")})

    def finish(self, name: str) -> None:
        w = self.workload(name)
        if w is not None and not wl.is_finished(w):
            self.put("workloads", {**w, "status": wl.finished_status(w, "Succeeded", "done", NOW)})

    def bind_pod(self, name: str, index: int, node_name: str) -> None:
        raw = self.state.get("jobs", "ns", name)
        if raw is None:
            return
        pod = job_pod(raw, index)
        pod["spec"].update({"nodeName": node_name, "nodeSelector": {HOST: node_name}})
        pod["status"]["phase"] = "Running"
        self.put("pods", pod)

    def check(self) -> Any:
        """Reserve on a snapshot of the state, incrementally and from scratch; both must agree."""
        now = parse_timestamp(LATER)
        cycle = build_cycle(self.state, now)
        got = pl.reserve_plans(cycle, self.memo)
        scratch = build_cycle(self.state, now, memo=SnapshotMemo())
        assert got == reference_reserve_plans(scratch)
        want = scratch.snapshot
        assert [(a.key, a.podsets, a.bindings, a.evicted) for a in cycle.snapshot.admitted] == \
            [(a.key, a.podsets, a.bindings, a.evicted) for a in want.admitted]
        assert physical(cycle.snapshot.cluster) == physical(want.cluster)
        return cycle


def apply_plan_op(world: PlanWorld, op: tuple[str, int, int, int]) -> None:
    kind, a, b, c = op
    name = world.JOBS[a % len(world.JOBS)]
    if kind == "admit":
        nodes = [world.NODES[(b + i * (c % 3)) % len(world.NODES)] for i in range(1 + c % 3)]
        world.admit(name, world.GPUS[b % len(world.GPUS)], nodes)
    elif kind == "evict":
        world.evict(name)
    elif kind == "finish":
        world.finish(name)
    elif kind == "delete_workload":
        world.delete("workloads", "ns", f"job-{name}")
    elif kind == "bind_pod":
        world.bind_pod(name, b % 3, world.NODES[c % len(world.NODES)])
    elif kind in ("finish_pod", "delete_pod"):
        pods = [key for key, _ in world.state.items("pods")]
        if pods:
            key = pods[a % len(pods)]
            if kind == "delete_pod":
                world.delete("pods", *key)
            else:
                done = copy.deepcopy(world.state.get("pods", *key))
                done["status"]["phase"] = "Succeeded"
                world.put("pods", done)
    elif kind == "node":
        n = node(world.NODES[a % len(world.NODES)], (b % 3) * 4, {"gpu.product": "A100"})
        if c % 3 == 2:
            n["spec"] = {"unschedulable": True}
        world.put("nodes", n)
    elif kind == "delete_node":
        world.delete("nodes", "", world.NODES[a % len(world.NODES)])
    elif kind == "nothing":
        pass
    else:  # pragma: no cover - the strategy draws from PLAN_OPS
        raise AssertionError(kind)


PLAN_OPS = ["admit", "admit", "admit", "admit", "evict", "finish", "delete_workload", "bind_pod", "bind_pod",
            "finish_pod", "delete_pod", "node", "delete_node", "nothing", "nothing"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PLAN_OPS), st.integers(0, 11), st.integers(0, 11), st.integers(0, 11)),
                min_size=1, max_size=30),
       st.lists(st.booleans(), min_size=30, max_size=30))
def test_incremental_reservations_are_the_ones_binding_every_plan_from_scratch_gives(
        ops: list[tuple[str, int, int, int]], touches: list[bool]) -> None:
    world = PlanWorld()
    world.check()
    for op, touch in zip(ops, touches):
        apply_plan_op(world, op)
        cycle = world.check()
        if touch:  # a policy binds and cordons on the snapshot's cluster: the next cycle must not see it
            cluster = cycle.snapshot.cluster
            for n in cluster:
                if n.schedulable and n.free_devices(GPU):
                    cluster.bind(n.name, cluster_request())
                    cluster.cordon(n.name)
                    break
            world.check()


def cluster_request() -> Any:
    from scheduler.cluster import PodRequest

    return PodRequest.of({GPU: 1000})


def test_a_cycle_rebinds_only_what_changed_since_the_last() -> None:
    world = PlanWorld()
    for i, name in enumerate(world.JOBS[:3]):
        world.admit(name, "1", ["n0", "n1"][: 1 + i % 2])
    first = world.check()
    assert world.memo.rebound == 3 and sum(len(a.bindings) for a in first.snapshot.admitted) == 4
    world.check()
    assert world.memo.rebound == 0  # nothing changed: every reservation kept, none bound again
    world.admit("j3", "2", ["n2", "n2"])  # a new admission comes last: only it is bound
    world.check()
    assert world.memo.rebound == 1
    world.admit("j1", "1", ["n2"])  # j1 readmitted with another plan: it and those after it
    world.check()
    assert world.memo.rebound == 3
    world.bind_pod("j0", 0, "n0")  # a pod bound: another base, everything again
    cycle = world.check()
    assert world.memo.rebound == 4
    assert cycle.snapshot.cluster is not world.memo.cluster  # the snapshot's own copy


# --- end to end, against kmock's emulator ---------------------------------------------------------------


class User:
    """Plays kubectl, the Job controller and the kubelet."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def create(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"].get("namespace") if resource.namespaced else None
        async with self.session.post(self.url + resource.path(namespace), json=obj) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        async with self.session.get(self.url + resource.path(namespace, name)) as r:
            return None if r.status == 404 else await r.json()

    async def patch(self, resource: Resource, namespace: str, name: str, body: dict[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        async with self.session.patch(self.url + resource.path(namespace, name, subresource), json=body,
                                      headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> None:
        async with self.session.delete(self.url + resource.path(namespace, name)) as r:
            assert r.status < 300, await r.text()


FLAVORS_R = Resource("tessera.dev", "v1alpha1", "resourceflavors", False)
CQ_R = Resource("tessera.dev", "v1alpha1", "clusterqueues", False)
LQ_R = Resource("tessera.dev", "v1alpha1", "localqueues", True)
WPC_R = Resource("tessera.dev", "v1alpha1", "workloadpriorityclasses", False)
NODES_R = Resource("", "v1", "nodes", False)






@pytest.fixture
def cluster() -> Any:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest_asyncio.fixture
async def user(cluster: EmulatedCluster) -> AsyncIterator[User]:
    async with aiohttp.ClientSession() as session:
        yield User(cluster.url, session)


async def setup(user: User, nodes: tuple[str, ...] = ("gpu-1", "gpu-2")) -> None:
    await user.create(FLAVORS_R, flavor("a100", {"gpu.product": "A100"}, tolerations=[TOL]))
    await user.create(CQ_R, cluster_queue("cq", {"a100": 16}, preemption={"withinClusterQueue": "LowerPriority"}))
    await user.create(LQ_R, local_queue("ns", "lq", "cq"))
    await user.create(WPC_R, priority_class("low", 1))
    await user.create(WPC_R, priority_class("high", 1000))
    for name in nodes:
        await user.create(NODES_R, node(name, 8, {"gpu.product": "A100"}))


def assert_calls_declared(cluster: EmulatedCluster) -> None:
    declared = {(group, resource, verb) for group, resource, verbs in API_CALLS for verb in verbs}
    seen = set()
    for call in cluster.calls():
        if call.plural is None or call.group is None:
            continue
        if call.agent.startswith("kopf/") or call.agent.startswith(USER_AGENT):
            seen.add((call.group, call.plural + (f"/{call.subresource}" if call.subresource else ""), call.verb))
    assert not seen - declared, f"API calls missing from API_CALLS: {sorted(seen - declared)}"


async def started_job(user: User, name: str) -> dict[str, Any] | None:
    j = await user.get(JOBS, "ns", name)
    return j if j is not None and j["spec"].get("suspend") is False else None


def pods_of(cluster: EmulatedCluster, job_name: str) -> list[dict[str, Any]]:
    return sorted((p for p in cluster.objects("v1/pods")
                   if (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == job_name),
                  key=lambda p: p["metadata"]["name"])


async def all_ungated(cluster: EmulatedCluster, job_name: str, n: int) -> list[dict[str, Any]] | None:
    pods = [p for p in pods_of(cluster, job_name) if not p["spec"].get("schedulingGates")]
    return pods if len(pods) == n else None


@pytest.mark.asyncio
async def test_tessera_gates_the_job_and_ungates_each_pod_onto_its_planned_node(
        cluster: EmulatedCluster, user: User) -> None:
    await setup(user)
    async with running_operator(cluster, policy="tessera"):
        await user.create(JOBS, job("ns", "train", "lq", gpus=4, parallelism=3, priority="low"))
        train = await until(lambda: started_job(user, "train"), what="train started")
        template = train["spec"]["template"]["spec"]
        assert template["schedulingGates"] == [{"name": pl.PLACEMENT_GATE}]
        assert template["nodeSelector"] == SELECTOR and template["tolerations"] == [TOL]
        workload = await user.get(WORKLOADS, "ns", "job-train")
        (assignment,) = workload["status"]["admission"]["podSetAssignments"]
        plan = {n["name"]: n["count"] for n in assignment["nodes"]}
        assert sum(plan.values()) == 3 and set(plan) == {"gpu-1", "gpu-2"}  # 3 pods x 4 GPUs on two 8-GPU nodes
        assert sorted(plan.values()) == [1, 2]

        # The Job controller creates the pods from the template: gated from birth.
        for i in range(3):
            await user.create(PODS, job_pod(train, i))
        placed = await until(lambda: all_ungated(cluster, "train", 3), what="pods ungated")
        assert Counter(p["spec"]["nodeSelector"][HOST] for p in placed) == Counter(plan)
        for p in placed:
            assert p["spec"]["nodeSelector"]["gpu.product"] == "A100" and p["spec"]["tolerations"] == [TOL]
        for p in placed:  # kube-scheduler binds them where they are pinned; the kubelet runs them
            await user.patch(PODS, "ns", p["metadata"]["name"], {"spec": {"nodeName": p["spec"]["nodeSelector"][HOST]}})
            await user.patch(PODS, "ns", p["metadata"]["name"], {"status": {"phase": "Running"}}, "status")

        # A pod fails; the Job controller's replacement (gated) takes the freed slot on the same node.
        lost = placed[0]
        await user.patch(PODS, "ns", lost["metadata"]["name"], {"status": {"phase": "Failed"}}, "status")
        await user.create(PODS, job_pod(train, 3))
        replaced = await until(lambda: all_ungated(cluster, "train", 4), what="replacement ungated")
        by_name = {p["metadata"]["name"]: p for p in replaced}
        assert by_name["train-3"]["spec"]["nodeSelector"][HOST] == lost["spec"]["nodeSelector"][HOST]

        # Preempted: the template is restored (no gate), the Job suspended; its pods go with the suspension.
        await user.patch(JOBS, "ns", "train", {"status": {"active": 3}}, "status")
        await user.create(JOBS, job("ns", "urgent", "lq", gpus=8, parallelism=2, priority="high"))

        async def suspended() -> dict[str, Any] | None:
            j = await user.get(JOBS, "ns", "train")
            return j if j["spec"].get("suspend") is True else None
        victim = await until(suspended, what="train suspended")
        assert "schedulingGates" not in victim["spec"]["template"]["spec"]
        assert victim["spec"]["template"] == job("ns", "train", "lq", gpus=4, parallelism=3, priority="low")["spec"][
            "template"]
        for p in pods_of(cluster, "train"):  # the Job controller deletes the suspended Job's pods
            await user.delete(PODS, "ns", p["metadata"]["name"])
        await user.patch(JOBS, "ns", "train", {"status": {"active": 0}}, "status")
        urgent = await until(lambda: started_job(user, "urgent"), what="urgent started")
        assert urgent["spec"]["template"]["spec"]["schedulingGates"] == [{"name": pl.PLACEMENT_GATE}]
        record = (await user.get(WORKLOADS, "ns", "job-urgent"))["status"]["admission"]["podSetAssignments"][0]
        assert sorted(n["count"] for n in record["nodes"]) == [1, 1]  # 2 x 8 GPUs: one whole node each
    assert_calls_declared(cluster)


@pytest.mark.asyncio
async def test_a_pod_whose_planned_node_is_gone_is_ungated_with_the_flavor_selector_and_an_event(
        cluster: EmulatedCluster, user: User) -> None:
    await setup(user)
    async with running_operator(cluster, policy="tessera"):
        await user.create(JOBS, job("ns", "train", "lq", gpus=8, parallelism=2))
        train = await until(lambda: started_job(user, "train"), what="train started")
        workload = await user.get(WORKLOADS, "ns", "job-train")
        plan = {n["name"]: n["count"] for n in workload["status"]["admission"]["podSetAssignments"][0]["nodes"]}
        assert plan == {"gpu-1": 1, "gpu-2": 1}
        await user.delete(NODES_R, None, "gpu-2")  # the node vanishes before the pods are created
        await asyncio.sleep(0.3)
        for i in range(2):
            await user.create(PODS, job_pod(train, i))
        placed = await until(lambda: all_ungated(cluster, "train", 2), what="pods ungated")
        selectors = sorted((p["spec"]["nodeSelector"] for p in placed), key=lambda s: s.get(HOST, ""))
        assert selectors == [SELECTOR, {**SELECTOR, HOST: "gpu-1"}]

        def fallback_event() -> Any:
            return [e for e in cluster.objects("v1/events") if e["reason"] == "PlacementFallback"]
        (event,) = await until(lambda: _value(fallback_event()), what="PlacementFallback event")
        assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Job"
        assert "gpu-2" in event["message"]
    assert_calls_declared(cluster)


@pytest.mark.asyncio
async def test_a_later_admission_is_not_planned_onto_room_promised_to_pods_not_created_yet(
        cluster: EmulatedCluster, user: User) -> None:
    await setup(user)
    async with running_operator(cluster, policy="tessera"):
        planned_nodes = []
        for name in ("first", "second"):
            await user.create(JOBS, job("ns", name, "lq", gpus=8))
            await until(lambda: started_job(user, name), what=f"{name} started")
            record = (await user.get(WORKLOADS, "ns", f"job-{name}"))["status"]["admission"]["podSetAssignments"][0]
            planned_nodes.append(record["nodes"][0]["name"])
        assert sorted(planned_nodes) == ["gpu-1", "gpu-2"]  # no pod exists yet: the plans alone keep them apart


@pytest.mark.asyncio
async def test_kueue_records_no_plan_and_gates_nothing(cluster: EmulatedCluster, user: User) -> None:
    await setup(user)
    async with running_operator(cluster, policy="kueue"):
        await user.create(JOBS, job("ns", "train", "lq", gpus=4, parallelism=3))
        train = await until(lambda: started_job(user, "train"), what="train started")
        assert "schedulingGates" not in train["spec"]["template"]["spec"]
        workload = await user.get(WORKLOADS, "ns", "job-train")
        assert "nodes" not in workload["status"]["admission"]["podSetAssignments"][0]
        for i in range(3):
            await user.create(PODS, job_pod(train, i))
        await asyncio.sleep(0.5)
        for p in pods_of(cluster, "train"):  # left to kube-scheduler within the flavor
            assert "schedulingGates" not in p["spec"] and p["spec"]["nodeSelector"] == SELECTOR
    pod_writes = [c for c in cluster.calls() if c.plural == "pods" and c.verb == "patch"
                  and c.agent.startswith(USER_AGENT)]
    assert pod_writes == []


async def _value(value: T) -> T:
    return value

"""Property tests of the Kueue-admission policies (kueue, bestfit, fgd, random) on random small worlds.

Each example runs a few cycles of a tiny simulator (admissions applied, TAS pods pinned,
kube-scheduler binding the rest, victims evicted and requeued, some workloads finishing) and
checks after every cycle, with arithmetic independent of the quota engine and the cluster
model: quota limits, node and per-GPU capacity, node selectors and taints, required topology,
all-or-nothing TAS podsets; and that the same seed gives the same run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotas.api import ClusterQueue, Configuration, LocalQueue, ResourceFlavor, Topology, Workload
from quotas.kube import Taint
from quotas.units import MILLI, milli
from scheduler.cluster import Cluster, NodeInfo
from scheduler.decisions import make_policy
from scheduler.kueue import admitted_from_admission, apply_pod_bindings
from scheduler.snapshot import Admitted, Pending, build_snapshot
from scheduler.workload import WorkloadInfo

GPU = "nvidia.com/gpu"
G = MILLI
GI = 1024**3 * MILLI
BLOCK, RACK, HOST = "example.com/block", "example.com/rack", "kubernetes.io/hostname"
DEDICATED = Taint(key="dedicated", value="x", effect="NoSchedule")

# --- random worlds ----------------------------------------------------------------------------------


@dataclass
class Spec:
    nodes: list[dict[str, Any]]
    queues: list[dict[str, Any]]
    cohort: bool
    tolerate: bool
    workloads: list[dict[str, Any]]
    fair: bool


node_st = st.fixed_dictionaries(
    {
        "gpus": st.sampled_from([2, 4, 8]),
        "cpu": st.sampled_from([8, 32]),
        "kind": st.sampled_from(["a", "b"]),
        "rack": st.sampled_from(["r1", "r2"]),
        "tainted": st.booleans(),
    }
)
queue_st = st.fixed_dictionaries(
    {
        "gpus": st.integers(1, 10),
        "gpus_b": st.sampled_from([0, 0, 2, 4]),
        "borrowing": st.one_of(st.none(), st.integers(0, 6)),
        "lending": st.one_of(st.none(), st.integers(0, 12)),
        "order": st.booleans(),
        "strict": st.booleans(),
        "within": st.sampled_from(["LowerPriority", "LowerOrNewerEqualPriority", "Never"]),
        "reclaim": st.sampled_from(["Any", "LowerPriority", "Never"]),
    }
)
workload_st = st.fixed_dictionaries(
    {
        "queue": st.integers(0, 2),
        "gpus": st.sampled_from(["500m", "1", "1", "2", "2", "4", "8", "0"]),
        "count": st.sampled_from([1, 1, 2, 3, 4]),
        "partial": st.booleans(),
        "priority": st.integers(0, 5),
        "topology": st.sampled_from([None, None, "required", "preferred"]),
        "level": st.sampled_from([RACK, HOST]),
        "selector": st.sampled_from([None, None, "a", "b"]),
        "arrive": st.integers(0, 3),  # later arrivals get higher priority: preemption happens
        "duration": st.integers(2, 6),
    }
)
spec_st = st.builds(
    Spec,
    nodes=st.lists(node_st, min_size=1, max_size=5),
    queues=st.lists(queue_st, min_size=1, max_size=3),
    cohort=st.booleans(),
    tolerate=st.booleans(),
    workloads=st.lists(workload_st, min_size=1, max_size=10),
    fair=st.booleans(),
)


def _flavors(spec: Spec) -> list[ResourceFlavor]:
    fb: dict[str, Any] = {"nodeLabels": {"gpu": "b"}}
    if spec.tolerate:
        fb["tolerations"] = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    return [
        ResourceFlavor.model_validate({"metadata": {"name": "fa"}, "spec": {"nodeLabels": {"gpu": "a"}, "topologyName": "dc"}}),
        ResourceFlavor.model_validate({"metadata": {"name": "fb"}, "spec": fb}),
    ]


def _queues(spec: Spec) -> list[ClusterQueue]:
    out = []
    for i, q in enumerate(spec.queues):
        names = ["fa", "fb"] if q["order"] else ["fb", "fa"]
        flavors = []
        for n in names:
            nominal = q["gpus"] if n == "fa" else q["gpus_b"]
            gpu: dict[str, Any] = {"name": GPU, "nominalQuota": nominal}
            if q["borrowing"] is not None and spec.cohort:
                gpu["borrowingLimit"] = q["borrowing"]
            if q["lending"] is not None and spec.cohort:
                gpu["lendingLimit"] = min(q["lending"], nominal)
            resources = [gpu, {"name": "cpu", "nominalQuota": 1000}, {"name": "memory", "nominalQuota": "10Ti"}]
            flavors.append({"name": n, "resources": resources})
        body: dict[str, Any] = {
            "namespaceSelector": {},
            "queueingStrategy": "StrictFIFO" if q["strict"] else "BestEffortFIFO",
            "resourceGroups": [{"coveredResources": [GPU, "cpu", "memory"], "flavors": flavors}],
            "preemption": {"withinClusterQueue": q["within"], "reclaimWithinCohort": q["reclaim"]},
        }
        if spec.cohort:
            body["cohort"] = "all"
        out.append(ClusterQueue.model_validate({"metadata": {"name": f"q{i}"}, "spec": body}))
    return out


def _cluster(spec: Spec) -> Cluster:
    nodes = []
    for i, n in enumerate(spec.nodes):
        labels = {"gpu": n["kind"], BLOCK: "b1", RACK: n["rack"], HOST: f"n{i}"}
        alloc = {GPU: n["gpus"] * G, "cpu": n["cpu"] * G, "memory": 256 * GI, "pods": 20 * G}
        nodes.append(Cluster.make_node(f"n{i}", alloc, labels, taints=[DEDICATED] if n["tainted"] else []))
    return Cluster(nodes)


def _workload(i: int, w: dict[str, Any], queues: int) -> WorkloadInfo:
    requests: dict[str, Any] = {"cpu": "1", "memory": "1Gi"}
    if w["gpus"] != "0":
        requests[GPU] = w["gpus"]
    template: dict[str, Any] = {"spec": {"containers": [{"name": "c", "resources": {"requests": requests}}]}}
    if w["selector"]:
        template["spec"]["nodeSelector"] = {"gpu": w["selector"]}
    podset: dict[str, Any] = {"name": "main", "count": w["count"], "template": template}
    if w["partial"] and w["count"] > 1:
        podset["minCount"] = 1
    if w["topology"]:
        podset["topologyRequest"] = {w["topology"]: w["level"]}
    body = {
        "metadata": {"name": f"w{i}", "namespace": "ns"},
        "spec": {"queueName": f"lq{w['queue'] % queues}", "priority": w["priority"] + 4 * w["arrive"], "podSets": [podset]},
    }
    return WorkloadInfo.from_workload(Workload.model_validate(body), creation_time=float(i))


TOPOLOGY = Topology.model_validate(
    {"metadata": {"name": "dc"}, "spec": {"levels": [{"nodeLabel": BLOCK}, {"nodeLabel": RACK}, {"nodeLabel": HOST}]}}
)


# --- the run ---------------------------------------------------------------------------------------


def run(spec: Spec, policy_name: str, seed: int, steps: int = 6) -> list[Any]:
    """Simulate ``steps`` cycles; check the invariants after each; return a log of everything decided."""
    flavors = _flavors(spec)
    flavor_by_name = {f.name: f for f in flavors}
    queues = _queues(spec)
    lqs = [LocalQueue.model_validate({"metadata": {"name": f"lq{i}", "namespace": "ns"}, "spec": {"clusterQueue": q.name}}) for i, q in enumerate(queues)]
    cluster = _cluster(spec)
    config = Configuration.model_validate({"fairSharing": {"enable": spec.fair}})
    workloads = [(_workload(i, w, len(queues)), w) for i, w in enumerate(spec.workloads)]
    policy = make_policy(policy_name)
    admitted: list[Admitted] = []
    pending: list[Pending] = []
    finish_at: dict[str, float] = {}
    log: list[Any] = []
    for now in range(steps):
        for info, w in workloads:
            if w["arrive"] == now:
                pending.append(Pending(info, float(now)))
        for a in [a for a in admitted if finish_at.get(a.key, 1e9) <= now]:
            for b in a.bindings:
                cluster.unbind(b)
            admitted.remove(a)
        snap = build_snapshot(
            now=float(now), cluster=cluster, cluster_queues=queues, cohorts=[], flavors=flavors, local_queues=lqs,
            admitted=admitted, pending=pending, topologies=[TOPOLOGY], config=config, seed=seed,
        )
        decisions = policy.schedule(snap)
        assert set(decisions.pending) == {p.key for p in pending} - {a.key for a in decisions.admissions}
        by_key = {p.key: p for p in pending}
        for pre in decisions.preemptions:
            victim = next(a for a in admitted if a.key == pre.key)
            for b in victim.bindings:
                cluster.unbind(b)
            admitted.remove(victim)
            pending.append(Pending(victim.workload, float(now), requeue_count=1))
        for adm in decisions.admissions:
            info = by_key[adm.key].workload
            for ps, placement in zip(info.podsets, adm.podsets):
                tas = ps.topology is not None and any(flavor_by_name[f].spec.topology_name for f in placement.flavors.values())
                if tas:
                    assert len(placement.nodes) == placement.count, "a TAS podset is placed all-or-nothing"
                else:
                    assert placement.nodes == (), "admission by quota only: kube-scheduler places the pods"
                assert ps.lowest_count <= placement.count <= ps.count
            rec = admitted_from_admission(cluster, adm, info, float(now))
            admitted.append(rec)
            pending = [p for p in pending if p.key != adm.key]
            duration = next(w["duration"] for i2, w in workloads if i2.key == adm.key)
            finish_at[adm.key] = now + duration
        made = policy.bind_pending(cluster, admitted, snap)
        admitted = apply_pod_bindings(admitted, made)
        check(cluster, queues, flavor_by_name, admitted, spec.cohort)
        log.append(
            (
                [(a.key, a.cluster_queue, tuple((p.count, tuple(sorted(p.flavors.items())), p.nodes, p.domain) for p in a.podsets)) for a in decisions.admissions],
                [(p.key, p.preemptor, str(p.reason)) for p in decisions.preemptions],
                sorted(decisions.pending.items()),
                [(m.key, m.podset, m.binding.node, m.binding.devices) for m in made],
            )
        )
    return log


# --- independent checks -------------------------------------------------------------------------------


def check(cluster: Cluster, queues: list[ClusterQueue], flavors: dict[str, ResourceFlavor], admitted: list[Admitted], cohort: bool) -> None:
    _check_quota(queues, admitted, cohort)
    _check_nodes(cluster, admitted)
    _check_placement(cluster, flavors, admitted)


def _limits(queues: list[ClusterQueue]) -> dict[str, dict[tuple[str, str], tuple[int, int | None, int | None]]]:
    out: dict[str, dict[tuple[str, str], tuple[int, int | None, int | None]]] = {}
    for q in queues:
        lim = out.setdefault(q.name, {})
        for group in q.spec.resource_groups:
            for f in group.flavors:
                for r in f.resources:
                    bl = None if r.borrowing_limit is None else milli(r.borrowing_limit)
                    ll = None if r.lending_limit is None else milli(r.lending_limit)
                    lim[(f.name, r.name)] = (milli(r.nominal_quota), bl, ll)
    return out


def _check_quota(queues: list[ClusterQueue], admitted: list[Admitted], cohort: bool) -> None:
    limits = _limits(queues)
    used: dict[str, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for a in admitted:
        for fr, v in a.usage.items():
            assert fr in limits[a.cluster_queue], f"{a.key} uses {fr}, which {a.cluster_queue} does not list"
            used[a.cluster_queue][fr] += v
    frs = {fr for lim in limits.values() for fr in lim}
    for fr in frs:
        lent_pool = borrowed = 0
        for q, lim in limits.items():
            nominal, bl, ll = lim.get(fr, (0, None, None))
            u = used[q][fr]
            if not cohort:
                assert u <= nominal, f"{q} uses {u} of {fr} over its nominal quota {nominal}"
                continue
            if bl is not None:
                assert u <= nominal + bl, f"{q} uses {u} of {fr} over nominal {nominal} + borrowing limit {bl}"
            guaranteed = max(0, nominal - ll) if ll is not None else 0
            lent_pool += nominal - guaranteed
            borrowed += max(0, u - guaranteed)
        if cohort:
            assert borrowed <= lent_pool, f"the cohort uses {borrowed} of {fr} above guarantees, only {lent_pool} shared"


def _check_nodes(cluster: Cluster, admitted: list[Admitted]) -> None:
    requested: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    devices: dict[tuple[str, str, int], int] = defaultdict(int)
    for a in admitted:
        for b in a.bindings:
            for r, v in b.pod.items:
                requested[b.node][r] += v
            for r, idx, v in b.devices:
                devices[(b.node, r, idx)] += v
    for node in cluster:
        for r, v in requested[node.name].items():
            assert v <= node.allocatable.get(r, 0), f"{node.name} over capacity in {r}"
            assert node.used.get(r, 0) == v
    for (name, r, idx), v in devices.items():
        assert v <= 1000, f"device {r}[{idx}] on {name} holds {v}m"
        assert idx < cluster.nodes[name].allocatable[r] // 1000


def _tolerated(taint: Taint, tolerations: list[Any]) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def _check_placement(cluster: Cluster, flavors: dict[str, ResourceFlavor], admitted: list[Admitted]) -> None:
    for a in admitted:
        assert len(a.bindings) == sum(len(p.nodes) for p in a.podsets)
        for index, placement in enumerate(a.podsets):
            ps = a.workload.podsets[index]
            assigned = [flavors[f] for f in set(placement.flavors.values())]
            tolerations = list(ps.constraints.tolerations) + [t for f in assigned for t in f.spec.tolerations]
            for name in placement.nodes:
                node: NodeInfo = cluster.nodes[name]
                for f in assigned:
                    assert all(node.labels.get(k) == v for k, v in f.spec.node_labels.items()), f"{a.key} on {name} outside flavor {f.name}"
                assert all(node.labels.get(k) == v for k, v in ps.node_selector.items())
                for taint in node.taints:
                    assert _tolerated(taint, tolerations), f"{a.key} on {name} despite taint {taint.key}"
            tas = any(f.spec.topology_name for f in assigned) and ps.topology is not None
            if tas:
                assert placement.domain is not None
                levels = [BLOCK, RACK, HOST]
                for name in placement.nodes:
                    labels = cluster.nodes[name].labels
                    assert tuple(labels[lv] for lv in levels[: len(placement.domain)]) == placement.domain
                if ps.topology is not None and ps.topology.required:
                    depth = levels.index(ps.topology.level) + 1
                    assert len(placement.domain) == depth
                    assert len({tuple(cluster.nodes[n].labels[lv] for lv in levels[:depth]) for n in placement.nodes}) <= 1


# --- the properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("policy_name", ["kueue", "bestfit", "fgd", "random"])
@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec_st, seed=st.integers(0, 3))
def test_invariants_and_determinism(policy_name: str, spec: Spec, seed: int) -> None:
    first = run(spec, policy_name, seed)
    assert run(spec, policy_name, seed) == first, "same seed, same decisions"


def _preemption_heavy(spec: Spec) -> Spec:
    """Every queue preempts within itself and reclaims from the cohort, and has no second flavor to fall back to."""
    queues = [dict(q, within="LowerPriority", reclaim="Any", gpus_b=0, order=True) for q in spec.queues]
    return Spec(spec.nodes, queues, spec.cohort, spec.tolerate, spec.workloads, spec.fair)


@pytest.mark.parametrize("policy_name", ["kueue", "random"])
@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec_st.map(_preemption_heavy), seed=st.integers(0, 3))
def test_invariants_with_frequent_preemption(policy_name: str, spec: Spec, seed: int) -> None:
    first = run(spec, policy_name, seed)
    assert run(spec, policy_name, seed) == first

"""The incremental snapshot (`admission.snapshot.build_cycle`) against a build from scratch.

The reference below is `build_cycle` as it was before it kept anything between builds (every
object parsed, every pod bound, the quota tree and usage made anew), run on a fresh
`ClusterState` holding the same objects. After every change of a random history (Workloads
queued, admitted, evicted, requeued, finished and deleted, Jobs deleted, pods bound, finished
and deleted, Nodes changed, priority classes and ClusterQueues edited, objects without a
resourceVersion, Namespaces labelled, relabelled and deleted, time passing), the incremental
snapshot must be the one the reference builds: admitted and pending workloads, usage, quota tree,
every node's free capacity and devices, namespace labels, entries, skipped workloads.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from admission import integrations
from admission import workloads as wl
from admission.kube import WATCHED
from admission.snapshot import (
    Cycle,
    Entry,
    SnapshotMemo,
    _parse_node,
    _parse_pod_request,
    _parse_workload,
    _Unparsable,
    build_cycle,
    memo_of,
    parse_tessera,
)
from admission.state import ClusterState, key_of, pod_is_live
from admission.testing import GPU, cluster_queue, flavor, job, local_queue, merge_patch, namespace, node, pod, priority_class
from scheduler.cluster import Binding, Cluster, PodRequest
from scheduler.snapshot import Admitted, Pending, build_snapshot
from scheduler.workload import parse_timestamp, resolve_priority

logger = logging.getLogger("test")

NOW = "2025-01-02T03:04:05Z"
T0 = parse_timestamp(NOW)
NS = "ns"


# --- the reference: a build from scratch ---------------------------------------------------------


def _ref_objects(state: ClusterState, plural: str) -> list[Any]:
    out = []
    for key, _ in state.items(plural):
        obj = state.parsed(plural, key, parse_tessera)
        if not isinstance(obj, _Unparsable):
            out.append(obj)
    return out


def reference_cycle(state: ClusterState, now: float) -> Cycle:
    """`build_cycle` before it became incremental, on a fresh state holding the same objects in the same order."""
    fresh = ClusterState(list(state.objects), managed=state.managed)
    fresh.objects = {plural: dict(store) for plural, store in state.objects.items()}
    fresh.synced = set(state.synced)
    state = fresh

    flavors = {f.name: f for f in _ref_objects(state, "resourceflavors")}
    topologies = {t.name: t for t in _ref_objects(state, "topologies")}
    classes = {c.name: c for c in _ref_objects(state, "workloadpriorityclasses")}

    nodes = []
    for key, _ in state.items("nodes"):
        parsed_node = state.parsed("nodes", key, _parse_node)
        if not isinstance(parsed_node, _Unparsable):
            nodes.append(parsed_node)
    cluster = Cluster.from_nodes(nodes)

    entries: dict[str, Entry] = {}
    skipped: dict[str, str] = {}
    admitted_raw: dict[str, tuple[Entry, dict[str, Any]]] = {}
    by_owner: dict[tuple[str, str, str], str] = {}
    pending: list[Pending] = []
    for (namespace, name), raw in state.items("workloads"):
        key = f"{namespace}/{name}"
        found = integrations.owner_of(raw)
        integration, owner = (found[0], found[1]) if found else (None, None)
        job_obj = state.get(integration.plural, namespace, owner) if integration and owner else None
        entry = Entry(key=key, workload=raw, job=job_obj, integration=integration, owner=owner)
        entries[key] = entry
        if integration and owner:
            by_owner[(integration.plural, namespace, owner)] = key
        unwatched = integration is not None and integration.plural not in state.synced
        if wl.is_finished(raw) or (job_obj is None and not (unwatched and wl.holds_quota(raw))):
            continue
        info = state.parsed("workloads", (namespace, name), _parse_workload)
        if isinstance(info, _Unparsable):
            skipped[key] = info.reason
            continue
        info = replace(info, priority=resolve_priority((raw.get("spec") or {}).get("priority"),
                                                       info.priority_class, classes))
        entry.info = info
        if wl.holds_quota(raw):
            admitted_raw[key] = (entry, raw["status"]["admission"])
        elif wl.is_active(raw):
            count, not_before = wl.requeue_state(raw)
            pending.append(Pending(workload=info, queued_at=wl.queued_at(raw) or now, requeue_count=count,
                                   not_before=not_before))

    bound: dict[str, list[tuple[str, Binding]]] = {}
    for (namespace, pod_name), live_pod in state.items("pods"):
        if not pod_is_live(live_pod):
            continue
        node_name = live_pod["spec"]["nodeName"]
        if node_name not in cluster:
            continue
        request = state.parsed("pods", (namespace, pod_name), _parse_pod_request)
        if isinstance(request, _Unparsable):
            continue
        try:
            binding = cluster.bind(node_name, request)
        except ValueError:
            continue
        for integration in integrations.ALL:
            found_pod = integration.pod_owner(live_pod)
            owner_key = by_owner.get((integration.plural, namespace, found_pod[0])) if found_pod else None
            if found_pod is not None and owner_key is not None and owner_key in admitted_raw:
                bound.setdefault(owner_key, []).append((found_pod[1], binding))
                break

    admitted: list[Admitted] = []
    for key, (entry, admission) in admitted_raw.items():
        assert entry.info is not None
        owned = bound.get(key, [])
        bindings = [b for _, b in owned]
        placements = wl.placements_of(admission)
        if len(placements) == 1:
            placements[0] = replace(placements[0], nodes=tuple(b.node for b in bindings))
        else:
            placements = [replace(p, nodes=tuple(b.node for podset, b in owned if podset == p.name))
                          for p in placements]
        admitted.append(Admitted(
            workload=replace(entry.info, cluster_queue=str(admission.get("clusterQueue") or "")),
            cluster_queue=str(admission.get("clusterQueue") or ""),
            admitted_at=wl.reserved_at(entry.workload) or now,
            usage=wl.usage_of(admission),
            podsets=tuple(placements),
            bindings=tuple(bindings),
            evicted=wl.is_evicting(entry.workload),
        ))

    labels = {name: dict((ns.get("metadata") or {}).get("labels") or {}) for (_, name), ns in state.items("namespaces")}
    snapshot = build_snapshot(
        now=now, cluster=cluster, cluster_queues=_ref_objects(state, "clusterqueues"),
        cohorts=_ref_objects(state, "cohorts"), flavors=flavors.values(),
        local_queues=_ref_objects(state, "localqueues"), admitted=admitted, pending=pending,
        topologies=topologies.values(), namespace_labels=labels)
    return Cycle(snapshot=snapshot, entries=entries, flavors=flavors, topologies=topologies, skipped=skipped,
                 queued={p.key: p.queued_at for p in pending})


# --- comparing -----------------------------------------------------------------------------------


def cluster_view(cluster: Cluster) -> list[tuple[Any, ...]]:
    """Every node's description and what is in use on it, device by device, and its interned state."""
    return [(n.name, n.index, dict(n.labels), n.taints, dict(n.allocatable), n.unschedulable, n.ready,
             {r: v for r, v in n.used.items() if v}, {r: list(d) for r, d in n.devices.items()}, n.pod_count,
             n.nonzero_cpu, n.nonzero_memory, n.state_id, cluster.state_array[n.index])
            for n in cluster]


def cycle_view(cycle: Cycle) -> dict[str, Any]:
    snap = cycle.snapshot
    return {
        "now": snap.now,
        "admitted": [(a.key, a.cluster_queue, a.admitted_at, dict(a.usage), a.podsets, a.bindings, a.evicted,
                      repr(a.workload)) for a in snap.admitted],
        "pending": [(p.key, p.queued_at, p.requeue_count, p.not_before, p.nominated_nodes, repr(p.workload))
                    for p in snap.pending],
        "usage": [(n.kind, n.name, dict(u)) for n, u in snap.usage.items()],
        "tree": [(n.id, n.name, n.kind, n.parent, n.children, dict(n.quotas), dict(n.subtree_quota),
                  dict(n.guaranteed), n.weight, n.depth, n.height, n.implicit, n.resource_groups,
                  n.cluster_queue.spec if n.cluster_queue is not None else None) for n in snap.tree.nodes],
        "cluster": cluster_view(snap.cluster),
        "free": {n.name: n.free(GPU) for n in snap.cluster},
        "allocated": snap.cluster.allocated(GPU),
        "cluster_version": snap.cluster.version,
        "flavors": snap.flavors,
        "cluster_queues": snap.cluster_queues,
        "local_queues": snap.local_queues,
        "topologies": snap.topologies,
        "config": snap.config,
        "seed": snap.seed,
        "namespace_labels": snap.namespace_labels,
        "admission_fair_sharing": snap.admission_fair_sharing,
        "entries": {k: (e.key, id(e.workload), id(e.job) if e.job is not None else None,
                        repr(e.info) if e.info is not None else None, e.integration, e.owner)
                    for k, e in cycle.entries.items()},
        "cycle_flavors": cycle.flavors,
        "cycle_topologies": cycle.topologies,
        "skipped": cycle.skipped,
        "queued": cycle.queued,
    }


def assert_same_as_from_scratch(state: ClusterState, now: float) -> Cycle:
    cycle = build_cycle(state, now)
    got, want = cycle_view(cycle), cycle_view(reference_cycle(state, now))
    for field in want:
        assert got[field] == want[field], field
    assert got == want
    return cycle


# --- a small cluster to change -------------------------------------------------------------------


def with_meta(obj: dict[str, Any], rv: str | None, uid: str = "", created: str | None = NOW) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    if rv is not None:
        meta["resourceVersion"] = rv
    if uid:
        meta["uid"] = uid
    if created is not None:
        meta["creationTimestamp"] = created
    return obj


class World:
    """A ClusterState fed as the watches feed it, with a resourceVersion counter."""

    def __init__(self) -> None:
        self.state = ClusterState(r.plural for r in WATCHED)
        self.state.synced.update(r.plural for r in WATCHED)  # pytorchjobs: not watched here
        self.rv = 100
        self.now = T0 + 60
        self.put("resourceflavors", flavor("a100", {"gpu": "a100"}))
        self.put("clusterqueues", cluster_queue("cq", {"a100": 16}, cohort="co"))
        self.put("clusterqueues", cluster_queue("cq2", {"a100": 8}, cohort="co"))
        self.put("localqueues", local_queue(NS, "lq", "cq"))
        self.put("localqueues", local_queue(NS, "lq2", "cq2"))
        self.put("workloadpriorityclasses", priority_class("high", 100))
        for i in range(3):
            self.put("nodes", node(f"n{i}", 8, {"gpu": "a100"}))
        self.put("namespaces", namespace(NS, {"kubernetes.io/metadata.name": NS}))

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, plural: str, obj: dict[str, Any], rv: bool = True, created: str | None = NOW) -> dict[str, Any]:
        obj = with_meta(obj, self.next_rv() if rv else None, created=created)
        self.state.apply(plural, "MODIFIED", obj)
        return obj

    def delete(self, plural: str, namespace: str, name: str) -> None:
        current = self.state.get(plural, namespace, name)
        if current is not None:
            self.state.apply(plural, "DELETED", current)

    def workload(self, name: str) -> dict[str, Any] | None:
        return self.state.get("workloads", NS, f"job-{name}")

    # --- changes ------------------------------------------------------------------------------

    def submit(self, name: str, gpus: int, parallelism: int, queue: str, priority: str | None,
               created: str | None = NOW, bad: bool = False) -> None:
        j = self.put("jobs", with_meta(job(NS, name, queue, gpus=gpus, parallelism=parallelism, priority=priority),
                                       None, uid=f"u-{name}"))
        current = self.workload(name)
        if current is not None and wl.holds_quota(current):
            return
        manifest = wl.workload_manifest(j)
        if current is not None:
            manifest = {**current, "metadata": dict(current["metadata"]), "spec": manifest["spec"]}
            if created is None:
                manifest["metadata"].pop("creationTimestamp", None)
        if bad:
            manifest["spec"]["podSets"][0]["count"] = 0
            manifest["spec"]["podSets"][0]["minCount"] = 5
        self.put("workloads", manifest, created=created)

    def admit(self, name: str, stamp: str | None = NOW) -> None:
        w = self.workload(name)
        if w is None or wl.holds_quota(w) or wl.is_finished(w):
            return
        podset = w["spec"]["podSets"][0]
        gpus = int(podset["template"]["spec"]["containers"][0]["resources"]["requests"][GPU])
        cq = "cq" if w["spec"]["queueName"] == "lq" else "cq2"
        record = {"clusterQueue": cq, "podSetAssignments": [{"name": "main", "flavors": {GPU: "a100"},
                                                             "count": podset["count"],
                                                             "resourceUsage": {GPU: str(gpus * podset["count"])}}]}
        status = wl.admitted_status(w, record, stamp or NOW)
        if stamp is None:  # no transition time: admitted "now"
            for cond in status["conditions"]:
                cond.pop("lastTransitionTime", None)
        self.put("workloads", {**w, "status": status})

    def evict(self, name: str) -> None:
        w = self.workload(name)
        if w is not None and wl.holds_quota(w) and not wl.is_evicting(w):
            self.put("workloads", {**w, "status": wl.evicting_status(w, wl.EVICTED_BY_PREEMPTION, "x", NOW,
                                                                     "InClusterQueue")})

    def release(self, name: str, backoff: bool) -> None:
        w = self.workload(name)
        if w is not None and wl.is_evicting(w):
            later = "2025-01-02T03:30:00Z"
            self.put("workloads", {**w, "status": wl.released_status(
                w, later, parse_timestamp(later) + 60 if backoff else None, 1 if backoff else None)})

    def finish(self, name: str) -> None:
        w = self.workload(name)
        if w is not None and not wl.is_finished(w):
            self.put("workloads", {**w, "status": wl.finished_status(w, "Succeeded", "done", NOW)})

    def deactivate(self, name: str) -> None:
        w = self.workload(name)
        if w is not None:
            self.put("workloads", {**w, "spec": {**w["spec"], "active": False}})

    def pod(self, name: str, job_name: str | None, node_name: str | None, gpus: str, rv: bool = True,
            phase: str = "Running") -> None:
        p = pod(NS, name, node_name, job_name=job_name, phase=phase)
        p["spec"]["containers"][0]["resources"]["requests"][GPU] = gpus
        self.put("pods", p, rv=rv)

    def finish_pod(self, name: str) -> None:
        p = self.state.get("pods", NS, name)
        if p is not None:
            self.put("pods", {**p, "status": {"phase": "Succeeded"}})

    def node(self, name: str, gpus: int, unschedulable: bool, zone: str) -> None:
        n = node(name, gpus, {"gpu": "a100", "zone": zone})
        if unschedulable:
            n["spec"] = {"unschedulable": True}
        self.put("nodes", n)

    def unwatched_admitted(self, name: str, gpus: int) -> None:
        """A Workload of a PyTorchJob (not watched here) holding quota: never pending, still charging."""
        w = {"apiVersion": "tessera.dev/v1alpha1", "kind": "Workload",
             "metadata": {"name": f"pytorchjob-{name}", "namespace": NS, "ownerReferences": [
                 {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": name, "uid": f"u-{name}",
                  "controller": True}]},
             "spec": {"queueName": "lq", "podSets": [{"name": "master", "count": 1, "template": {"spec": {
                 "containers": [{"name": "c", "resources": {"requests": {GPU: str(gpus)}}}]}}}]}}
        record = {"clusterQueue": "cq", "podSetAssignments": [
            {"name": "master", "flavors": {GPU: "a100"}, "count": 1, "resourceUsage": {GPU: str(gpus)}}]}
        w["status"] = wl.admitted_status(w, record, NOW)
        self.put("workloads", w)


JOBS = [f"j{i}" for i in range(4)]
PODS = [f"p{i}" for i in range(4)]
NODES = [f"n{i}" for i in range(4)]  # n3 does not exist at first: pods on it are not bound
GPU_AMOUNTS = ["1", "2", "500m", "250m", "8"]


def _pick(world: World, a: int, wanted: Any) -> str:
    """The name of the a-th Job (cyclically) whose Workload is in the wanted state, else of the a-th Job."""
    names = [n for n in JOBS if (w := world.workload(n)) is not None and wanted(w)]
    return names[a % len(names)] if names else JOBS[a % len(JOBS)]


def apply_op(world: World, op: tuple[str, int, int, int]) -> None:
    name, a, b, c = op
    jobname = JOBS[a % len(JOBS)]
    if name == "submit":
        world.submit(jobname, gpus=b % 3 + 1, parallelism=c % 2 + 1, queue="lq" if b % 2 else "lq2",
                     priority="high" if c % 3 == 0 else None, created=None if c % 5 == 4 else NOW,
                     bad=c % 7 == 6)
    elif name == "admit":
        world.admit(_pick(world, a, lambda w: not wl.holds_quota(w) and not wl.is_finished(w)),
                    stamp=None if b % 5 == 4 else NOW)
    elif name == "evict":
        world.evict(_pick(world, a, wl.holds_quota))
    elif name == "release":
        world.release(_pick(world, a, wl.is_evicting), backoff=bool(b % 2))
    elif name == "finish":
        world.finish(_pick(world, a, lambda w: True))
    elif name == "deactivate":
        world.deactivate(_pick(world, a, lambda w: True))
    elif name == "delete_workload":
        world.delete("workloads", NS, f"job-{_pick(world, a, lambda w: True)}")
    elif name == "delete_job":
        world.delete("jobs", NS, jobname)
    elif name == "pod":
        node_name = None if c % 6 == 5 else NODES[c % len(NODES)]
        owner = None if b % 4 == 3 else _pick(world, b, wl.holds_quota)
        world.pod(PODS[a % len(PODS)], owner, node_name, GPU_AMOUNTS[(b + c) % len(GPU_AMOUNTS)], rv=c % 4 != 3)
    elif name in ("finish_pod", "delete_pod"):
        names = [key[1] for key, _ in world.state.items("pods")] or PODS
        if name == "finish_pod":
            world.finish_pod(names[a % len(names)])
        else:
            world.delete("pods", NS, names[a % len(names)])
    elif name == "node":
        world.node(NODES[a % len(NODES)], gpus=(b % 3) * 4, unschedulable=c % 4 == 3, zone=f"z{c % 2}")
    elif name == "delete_node":
        world.delete("nodes", "", NODES[a % len(NODES)])
    elif name == "priority":
        if b % 4 == 3:
            world.delete("workloadpriorityclasses", "", "high")
        else:
            world.put("workloadpriorityclasses", priority_class("high", b * 10))
    elif name == "cluster_queue":
        world.put("clusterqueues", cluster_queue("cq2", {"a100": 4 + b % 8}, cohort="co" if c % 2 else None))
    elif name == "local_queue":
        world.put("localqueues", local_queue(NS, "lq2", "cq2" if b % 2 else "cq"))
    elif name == "unwatched":
        if b % 3 == 2:
            world.delete("workloads", NS, f"pytorchjob-{jobname}")
        else:
            world.unwatched_admitted(jobname, gpus=b % 4 + 1)
    elif name == "namespace":
        which = (NS, "other")[a % 2]
        if b % 4 == 3:
            world.delete("namespaces", "", which)
        else:
            world.put("namespaces", namespace(which, {"team": f"t{c % 3}"} if b % 4 else {}))
    elif name == "time":
        world.now += 1 + b
    elif name == "policy_touches_cluster":
        pass  # done on the built snapshot, see run_history
    else:  # pragma: no cover - the strategy draws from OPS
        raise AssertionError(name)


OPS = ["submit", "submit", "submit", "admit", "admit", "admit", "evict", "evict", "release", "finish", "deactivate", "delete_workload",
       "delete_job", "pod", "pod", "pod", "finish_pod", "delete_pod", "node", "delete_node", "priority",
       "cluster_queue", "local_queue", "unwatched", "namespace", "time", "time", "policy_touches_cluster"]

op_strategy = st.tuples(st.sampled_from(OPS), st.integers(0, 11), st.integers(0, 11), st.integers(0, 11))


PRELUDE = [("submit", 0, 1, 1), ("submit", 1, 0, 2), ("submit", 2, 1, 0), ("admit", 0, 0, 0), ("admit", 0, 0, 0),
           ("pod", 0, 0, 0), ("pod", 1, 1, 1)]
"""Where random histories start: three Workloads, two of them admitted, with pods."""


def run_history(ops: list[tuple[str, int, int, int]], prelude: bool = False) -> World:
    world = World()
    assert_same_as_from_scratch(world.state, world.now)
    for op in (PRELUDE if prelude else []) + ops:
        apply_op(world, op)
        cycle = assert_same_as_from_scratch(world.state, world.now)
        if op[0] == "policy_touches_cluster":
            # A policy binds and cordons on the snapshot's cluster (or a copy): the next build must not see it.
            cluster = cycle.snapshot.cluster
            for n in cluster:
                if not n.unschedulable and n.free_devices(GPU):
                    cluster.bind(n.name, PodRequest.of({GPU: 1000}))
                    cluster.copy().cordon(n.name)
                    break
            assert_same_as_from_scratch(world.state, world.now)
    return world


# --- tests ---------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_strategy, min_size=1, max_size=40))
def test_random_histories_build_the_snapshot_a_build_from_scratch_builds(ops: list[tuple[str, int, int, int]]) -> None:
    run_history(ops, prelude=True)


def test_a_scripted_history_covers_every_kind_of_change() -> None:
    world = run_history([
        ("submit", 0, 1, 1), ("submit", 1, 0, 0), ("submit", 2, 1, 4), ("submit", 3, 1, 6),
        ("admit", 0, 0, 0), ("admit", 1, 4, 0),  # j1: admitted without a transition time
        ("pod", 0, 0, 0), ("pod", 1, 0, 1), ("pod", 2, 1, 2), ("pod", 3, 3, 0),  # j0's, j1's, a foreign pod
        ("pod", 4, 2, 5),  # not bound to a node
        ("pod", 5, 0, 3),  # on n3, which does not exist yet
        ("node", 3, 2, 0),  # now it does
        ("finish_pod", 1, 0, 0), ("delete_pod", 0, 0, 0),
        ("pod", 0, 0, 0), ("finish_pod", 0, 0, 0),  # the last pod bound finishes: the others stay as bound
        ("submit", 0, 1, 1),  # a new version of an admitted Workload's Job (the Workload stays)
        ("evict", 0, 0, 0), ("release", 0, 1, 0), ("admit", 0, 0, 0),
        ("priority", 0, 5, 0), ("cluster_queue", 0, 3, 1), ("local_queue", 0, 0, 0),
        ("namespace", 0, 1, 0), ("namespace", 1, 2, 1), ("namespace", 0, 3, 0),  # labelled, another, deleted
        ("unwatched", 2, 1, 0), ("finish", 2, 0, 0), ("delete_job", 1, 0, 0),
        ("deactivate", 3, 0, 0), ("delete_node", 2, 0, 0), ("time", 0, 5, 0),
        ("policy_touches_cluster", 0, 0, 0), ("delete_workload", 0, 0, 0),
    ])
    cycle = build_cycle(world.state, world.now)
    assert cycle.skipped  # j3's Workload does not parse
    assert any(a.key == "ns/pytorchjob-j2" for a in cycle.snapshot.admitted)


def test_unchanged_workloads_reuse_their_pieces_and_changed_ones_do_not() -> None:
    world = World()
    for name in JOBS[:4]:
        world.submit(name, gpus=1, parallelism=1, queue="lq", priority=None)
    world.admit("j0")
    world.admit("j1")
    world.pod("p0", "j0", "n0", "1")
    first = build_cycle(world.state, world.now)
    second = build_cycle(world.state, world.now + 1)
    assert [a is b for a, b in zip(first.snapshot.admitted, second.snapshot.admitted)] == [True, True]
    assert [a is b for a, b in zip(first.snapshot.pending, second.snapshot.pending)] == [True, True]
    assert all(first.entries[k] is second.entries[k] for k in first.entries)
    assert second.snapshot.usage is first.snapshot.usage and second.snapshot.tree is first.snapshot.tree
    assert second.snapshot.cluster is not first.snapshot.cluster  # each snapshot its own cluster

    world.admit("j2")  # a new version of j2's Workload, and one more pod of j1
    world.pod("p1", "j1", "n1", "1")
    third = build_cycle(world.state, world.now + 2)
    by_key = {a.key: a for a in third.snapshot.admitted}
    before = {a.key: a for a in second.snapshot.admitted}
    assert by_key["ns/job-j0"] is before["ns/job-j0"]
    assert by_key["ns/job-j1"] is not before["ns/job-j1"] and by_key["ns/job-j1"].podsets[0].nodes == ("n1",)
    assert "ns/job-j2" in by_key and third.entries["ns/job-j2"] is not second.entries["ns/job-j2"]
    assert third.snapshot.pending[0] is second.snapshot.pending[1]  # j3, unchanged
    assert third.snapshot.usage.of("cq") == {("a100", GPU): 3000}
    assert_same_as_from_scratch(world.state, world.now + 2)


def test_pods_appended_are_bound_on_top_and_a_removed_pod_rebinds_from_the_nodes() -> None:
    world = World()
    world.pod("p0", None, "n0", "500m")
    world.pod("p1", None, "n0", "250m")
    memo = memo_of(world.state)
    build_cycle(world.state, world.now)
    bound = memo.bound
    world.pod("p2", None, "n0", "500m")  # appended: bound on top of the kept cluster
    assert_same_as_from_scratch(world.state, world.now)
    assert memo.bound is not bound and len(memo.sequence) == 3
    world.put("pods", {**world.state.get("pods", NS, "p2"), "status": {"phase": "Running", "podIP": "10.0.0.1"}})
    kept = memo.bound
    assert_same_as_from_scratch(world.state, world.now)  # a new version, same binding: nothing rebound
    assert memo.bound is kept
    # Device shares depend on the order of binding: unbinding p0 would leave 750m and 500m free on two
    # devices, where binding p1 and p2 from the nodes packs both onto one.
    world.delete("pods", NS, "p0")
    cycle = assert_same_as_from_scratch(world.state, world.now)
    assert len(memo.sequence) == 2
    assert sorted(cycle.snapshot.cluster.node("n0").devices[GPU]) == [250] + [1000] * 7


def test_a_node_change_rebuilds_the_cluster_and_a_memo_of_its_own_starts_from_scratch() -> None:
    world = World()
    world.submit("j0", gpus=2, parallelism=1, queue="lq", priority=None)
    world.admit("j0")
    world.pod("p0", "j0", "n2", "2")
    assert_same_as_from_scratch(world.state, world.now)
    world.node("n2", 4, unschedulable=True, zone="z1")
    cycle = assert_same_as_from_scratch(world.state, world.now)
    assert cycle.snapshot.cluster.node("n2").free(GPU) == 2000 and cycle.snapshot.cluster.node("n2").unschedulable
    fresh = build_cycle(world.state, world.now, memo=SnapshotMemo())
    assert cluster_view(fresh.snapshot.cluster) == cluster_view(cycle.snapshot.cluster)


def test_a_workload_without_timestamps_is_queued_and_admitted_now_on_every_build() -> None:
    world = World()
    world.submit("j0", gpus=1, parallelism=1, queue="lq", priority=None, created=None)
    world.submit("j1", gpus=1, parallelism=1, queue="lq", priority=None, created=None)
    world.admit("j1", stamp=None)
    for now in (T0 + 10, T0 + 20):
        cycle = assert_same_as_from_scratch(world.state, now)
        assert [p.queued_at for p in cycle.snapshot.pending] == [now]
        assert [a.admitted_at for a in cycle.snapshot.admitted] == [now]
        assert cycle.queued_at("ns/job-j0", 0.0) == now and cycle.queued_at("ns/job-j1", -1.0) == -1.0


def test_a_priority_class_change_reaches_unchanged_workloads() -> None:
    world = World()
    world.submit("j0", gpus=1, parallelism=1, queue="lq", priority="high")
    assert build_cycle(world.state, world.now).snapshot.pending[0].workload.priority == 100
    world.put("workloadpriorityclasses", priority_class("high", 7))
    cycle = assert_same_as_from_scratch(world.state, world.now)
    assert cycle.snapshot.pending[0].workload.priority == 7


def test_a_relabelled_namespace_changes_what_the_next_snapshot_admits() -> None:
    from scheduler.kueue import KueuePolicy

    world = World()
    world.put("clusterqueues", cluster_queue("cq2", {"a100": 8}, cohort="co",
                                             namespaceSelector={"matchLabels": {"team": "a"}}))
    world.submit("j0", gpus=1, parallelism=1, queue="lq2", priority=None)
    first = assert_same_as_from_scratch(world.state, world.now)
    assert first.snapshot.namespace_labels == {NS: {"kubernetes.io/metadata.name": NS}}
    decisions = KueuePolicy().schedule(first.snapshot)
    assert not decisions.admissions and "namespaceSelector" in decisions.pending["ns/job-j0"]
    again = build_cycle(world.state, world.now)
    assert again.snapshot.namespace_labels is first.snapshot.namespace_labels  # no Namespace changed: kept

    world.put("namespaces", namespace(NS, {"kubernetes.io/metadata.name": NS, "team": "a"}))
    relabelled = assert_same_as_from_scratch(world.state, world.now)
    assert relabelled.snapshot.namespace_labels[NS]["team"] == "a"
    assert first.snapshot.namespace_labels[NS] == {"kubernetes.io/metadata.name": NS}  # never changed in place
    assert [a.key for a in KueuePolicy().schedule(relabelled.snapshot).admissions] == ["ns/job-j0"]

    world.delete("namespaces", "", NS)  # gone (or not watched): only its name is left to match
    assert assert_same_as_from_scratch(world.state, world.now).snapshot.namespace_labels == {}


def test_a_relabelling_requeues_the_namespaces_pending_workloads_the_policy_set_aside() -> None:
    from admission import scheduling
    from scheduler.kueue import KueuePolicy

    world = World()
    world.put("namespaces", namespace("other", {"team": "b"}))
    world.submit("j0", gpus=8, parallelism=4, queue="lq", priority=None)  # 32 GPUs: more than the cohort has
    world.submit("j1", gpus=1, parallelism=1, queue="lq", priority=None)
    world.admit("j1")
    controller = scheduling.Controller(None, world.state, lambda: KueuePolicy())  # type: ignore[arg-type]
    assert controller.requeue_relabelled() == []  # the first pass only looks
    decisions = controller.policy.schedule(build_cycle(world.state, world.now).snapshot)
    assert "ns/job-j0" in decisions.pending and "ns/job-j0" in controller.policy.state.inadmissible

    world.put("namespaces", namespace("other", {"team": "c"}))  # another namespace: nothing of ns forgotten
    assert controller.requeue_relabelled() == []
    assert controller.requeue_relabelled() == [] and "ns/job-j0" in controller.policy.state.inadmissible
    world.put("namespaces", namespace(NS, {"kubernetes.io/metadata.name": NS}))  # a new version, same labels
    assert controller.requeue_relabelled() == [] and "ns/job-j0" in controller.policy.state.inadmissible

    world.put("namespaces", namespace(NS, {"kubernetes.io/metadata.name": NS, "team": "a"}))
    assert controller.requeue_relabelled() == ["ns/job-j0"]  # pending only: j1 holds quota
    assert "ns/job-j0" not in controller.policy.state.inadmissible
    assert controller.requeue_relabelled() == []  # once
    world.delete("namespaces", "", NS)
    assert controller.requeue_relabelled() == ["ns/job-j0"]
    assert scheduling.forget_set_aside(object(), ["ns/job-j0"]) == 0  # a policy without such memory


@pytest.mark.parametrize("count", [0, 3])
def test_usage_follows_admissions_and_releases(count: int) -> None:
    world = World()
    for i in range(count + 2):
        world.submit(f"j{i}", gpus=2, parallelism=1, queue="lq2", priority=None)
        world.admit(f"j{i}")
    assert build_cycle(world.state, world.now).snapshot.usage.of("cq2") == {("a100", GPU): 2000 * (count + 2)}
    world.finish("j0")
    world.delete("workloads", NS, "job-j1")
    cycle = assert_same_as_from_scratch(world.state, world.now)
    assert cycle.snapshot.usage.of("cq2") == ({("a100", GPU): 2000 * count} if count else {})
    tree = build_cycle(world.state, world.now).snapshot.tree
    cq2 = world.state.get("clusterqueues", "", "cq2")
    world.put("clusterqueues", {**cq2, "status": {"pendingWorkloads": 3}})  # a status write: same tree
    assert assert_same_as_from_scratch(world.state, world.now).snapshot.tree is tree
    world.put("clusterqueues", cluster_queue("cq2", {"a100": 2}, cohort=None))  # a new tree: usage made anew
    assert assert_same_as_from_scratch(world.state, world.now).snapshot.tree is not tree


# --- sync_jobs skips the Workloads it found nothing to do for, until something about them changes ----


class JobApi:
    """Answers the controller's Job patches as the API server would (JSON merge patch, new resourceVersion)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch(self, resource: Any, namespace: str | None, name: str, body: Any, **_: Any) -> dict[str, Any]:
        assert resource.plural == "jobs", resource
        self.patches.append((name, body))
        current = copy.deepcopy(self.world.state.get("jobs", namespace or "", name))
        merged = merge_patch(current, body)
        merged["metadata"]["resourceVersion"] = self.world.next_rv()
        return merged


@pytest.mark.asyncio
async def test_sync_jobs_skips_settled_workloads_and_repairs_one_whose_job_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from admission import scheduling

    world = World()
    for name in ("j0", "j1", "j2"):
        world.submit(name, gpus=1, parallelism=1, queue="lq", priority=None)
    world.admit("j0")
    world.admit("j1")
    api = JobApi(world)
    controller = scheduling.Controller(api, world.state, lambda: None)  # type: ignore[arg-type, return-value]
    judged: list[str] = []
    owner_of = integrations.owner_of

    def counting_owner_of(workload: Any) -> Any:
        judged.append(workload["metadata"]["name"])
        return owner_of(workload)

    monkeypatch.setattr(scheduling.ig, "owner_of", counting_owner_of)
    await controller.sync_jobs(world.now)  # starts j0 and j1; j2 is held already: settled
    assert sorted(name for name, _ in api.patches) == ["j0", "j1"]
    assert all(world.state.get("jobs", NS, n)["spec"]["suspend"] is False for n in ("j0", "j1"))
    assert sorted(judged) == ["job-j0", "job-j1", "job-j2"]
    judged.clear()
    await controller.sync_jobs(world.now)  # j0 and j1 (new Job versions) run as admitted now: settled
    assert sorted(judged) == ["job-j0", "job-j1"] and len(api.patches) == 2
    judged.clear()
    await controller.sync_jobs(world.now)
    assert judged == [] and len(api.patches) == 2  # nothing looked at again

    # Someone suspends j0 and un-suspends j2 behind Tessera's back: both are judged again and repaired.
    j0 = world.state.get("jobs", NS, "j0")
    world.put("jobs", {**j0, "spec": {**j0["spec"], "suspend": True}}, created=None)
    j2 = world.state.get("jobs", NS, "j2")
    world.put("jobs", {**j2, "spec": {**j2["spec"], "suspend": False}}, created=None)
    await controller.sync_jobs(world.now)
    assert sorted(judged) == ["job-j0", "job-j2"]
    assert world.state.get("jobs", NS, "j0")["spec"]["suspend"] is False
    assert world.state.get("jobs", NS, "j2")["spec"]["suspend"] is True

    # A flavor change (its node labels go into the Job's node selector) makes every Workload be judged again.
    judged.clear()
    world.put("resourceflavors", flavor("a100", {"gpu": "a100", "pool": "x"}))
    await controller.sync_jobs(world.now)
    assert sorted(judged) == ["job-j0", "job-j1", "job-j2"]


def test_a_detached_copy_numbers_new_states_apart_and_memoises_fits_apart() -> None:
    """Copies of one cluster share the state-id table and the fit memo keyed on it; a detached copy has a
    table of its own, so the same new id may stand for different states in the two: its fit memo must
    not be the other's."""
    from scheduler.cluster import Cluster, PodRequest
    from admission.snapshot import detached_copy

    base = Cluster([Cluster.make_node("n", {GPU: 8000, "cpu": 64000})])
    other = detached_copy(base)
    assert other._fit_memo is not base._fit_memo  # noqa: SLF001
    one = PodRequest.of({GPU: 1000})
    base.bind("n", PodRequest.of({GPU: 2000}))
    other.bind("n", PodRequest.of({GPU: 6000}))
    assert base.node("n").state_id == other.node("n").state_id  # the same new id, two different states
    assert base.fit_count(base.node("n"), one) == 6
    assert other.fit_count(other.node("n"), one) == 2

"""From the operator's caches to the scheduling core's `Snapshot`: the same input the simulator builds.

* the tessera.dev kinds are parsed with the foundation's `quotas.bundle.parse_object` (an
  object that does not parse is left out and reported once in the log);
* the cluster is `Cluster.from_nodes` over the Nodes, with every live pod (bound, not
  finished) bound to its node, Tessera's and everyone else's: their requests occupy
  capacity;
* a Workload holding quota (`QuotaReserved` with `status.admission`) is `Admitted`, charging
  what its admission record says, with its pods' nodes per podset (`Integration.pod_owner`);
  one that is being evicted stays admitted with ``evicted=True`` until its Job's pods are gone
  (as in Kueue);
* every other active, unfinished Workload whose owner (a Job, a JobSet, ... see
  `admission.integrations`) exists is `Pending`, queued since its creation or its last
  requeue, not before its requeue backoff;
* a Workload whose owner's kind this operator does not watch (its integration is disabled, or
  its CRD not installed) is never pending, but keeps charging the quota it holds: its pods run;
* every Namespace's labels go into `Snapshot.namespace_labels`, which the policies match the
  ClusterQueues' `namespaceSelector` against (a relabelled namespace changes what is admissible
  in the next snapshot).

Pure with respect to the API: reads only the `ClusterState`.

Incremental: a pass builds one or two snapshots, and most objects have not changed since the
last one, so `build_cycle` keeps what it derived (a `SnapshotMemo`, in `ClusterState.derived`)
and redoes only what changed:

* per object version (`ClusterState.parsed`, keyed by resource, key and resourceVersion): a
  Workload's facts (owner, conditions), its `WorkloadInfo`, `Entry`, `Pending` and `Admitted`
  (the last also keyed by its pods' bindings); a pod's liveness, node, request and owners;
* per resource revision (`ClusterState.revisions`): the parsed tessera.dev objects, the
  node-only `Cluster` and the namespaces' labels;
* the live pods are bound, in cache order, onto a copy of the node-only cluster; the bound
  cluster is kept with the sequence of (node, request) it bound, and reused, or extended by the
  pods appended since, while that sequence only grows (a pod gone from the middle means binding
  them all again: device shares depend on the order);
* the quota tree is kept while the ClusterQueues' and Cohorts' names and specs stay (their
  status writes do not count); the usage is moved by releasing and admitting only the workloads
  whose charge changed.

Each snapshot gets its own `Cluster` (a copy, with its own state-id table), so policies may
copy and try it as before. What comes out is the snapshot a build from scratch makes
(tests/test_operator_snapshot.py compares them on random histories); values that depend on
`now` (a workload without timestamps) are never kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from admission import integrations
from admission import workloads as wl
from admission.integrations import Integration
from admission.state import ClusterState, Key, pod_is_live
from quotas.api import (
    ClusterQueue,
    Cohort,
    Configuration,
    LocalQueue,
    ResourceFlavor,
    Topology,
    Workload,
    WorkloadPriorityClass,
)
from quotas.bundle import parse_object, without_nulls
from quotas.kube import Node, PodSpec, pod_requests
from quotas.loader import RawObject, Source
from quotas.tree import QuotaTree
from quotas.units import FlavorResource
from quotas.usage import Usage
from scheduler.cluster import Binding, Cluster, PodRequest
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot
from scheduler.workload import WorkloadInfo, resolve_priority

logger = logging.getLogger("tessera.snapshot")

KIND_OF_PLURAL = {
    "resourceflavors": ResourceFlavor,
    "clusterqueues": ClusterQueue,
    "localqueues": LocalQueue,
    "cohorts": Cohort,
    "workloadpriorityclasses": WorkloadPriorityClass,
    "topologies": Topology,
}


@dataclass
class Entry:
    """One Workload of the cycle with the object it queues, its Job (None once it is gone or not watched)."""

    key: str
    workload: dict[str, Any]
    job: dict[str, Any] | None
    info: WorkloadInfo | None = None
    integration: Integration | None = None
    owner: str | None = None
    """The name of the owning object (in the Workload's namespace)."""


@dataclass
class Cycle:
    """A snapshot and what it was built from: entries by workload key (`namespace/name`)."""

    snapshot: Snapshot
    entries: dict[str, Entry]
    flavors: dict[str, ResourceFlavor]
    topologies: dict[str, Topology]
    skipped: dict[str, str] = field(default_factory=dict)
    """Workload key -> why it could not be read (bad podset template, ...)."""
    queued: dict[str, float] = field(default_factory=dict)
    """Pending workload key -> when it was queued (its `Pending.queued_at`)."""
    base: object | None = None
    """The pod-bound cluster the snapshot's cluster is a copy of: the same object from one build to the next
    while no Node changed and no pod was bound or went away (`admission.placement.reserve_plans` keeps its
    reservations on top of it while it holds). None: unknown (every build is then a new base)."""

    def queued_at(self, key: str, default: float) -> float:
        """When a workload pending in this cycle was queued; `default` for any other."""
        return self.queued.get(key, default)


class _Unparsable:
    def __init__(self, reason: str) -> None:
        self.reason = reason


_reported: set[tuple[str, Key, str]] = set()


def _report(plural: str, key: Key, rv: str, message: str) -> None:
    if (plural, key, rv) not in _reported:
        if len(_reported) > 10_000:
            _reported.clear()
        _reported.add((plural, key, rv))
        logger.warning("ignoring %s %s: %s", plural, "/".join(k for k in key if k), message)


def parse_tessera(raw: Mapping[str, Any]) -> BaseModel | _Unparsable:
    obj, problems = parse_object(RawObject(Source("api", 0), without_nulls(dict(raw))))
    if obj is None:
        return _Unparsable("; ".join(str(p) for p in problems) or "cannot be parsed")
    return obj


def objects_of(state: ClusterState, plural: str) -> list[Any]:
    """Parsed objects of one tessera.dev resource, leaving out (and logging) those that do not parse.

    Kept until the resource changes (`ClusterState.revisions`); a new list each call."""
    memo = memo_of(state)
    revision = state.revisions.get(plural, 0)
    cached = memo.objects.get(plural)
    if cached is not None and cached[0] == revision:
        return list(cached[1])
    out = []
    for key, raw in state.items(plural):
        obj = state.parsed(plural, key, parse_tessera)
        if isinstance(obj, _Unparsable):
            _report(plural, key, str((raw.get("metadata") or {}).get("resourceVersion")), obj.reason)
            continue
        out.append(obj)
    memo.objects[plural] = (revision, out)
    return list(out)


def _parse_node(raw: Mapping[str, Any]) -> Node | _Unparsable:
    try:
        return Node.model_validate(without_nulls(dict(raw)))
    except ValidationError as exc:
        return _Unparsable(str(exc).splitlines()[0])


def _parse_pod_request(raw: Mapping[str, Any]) -> PodRequest | _Unparsable:
    try:
        spec = PodSpec.model_validate(without_nulls(dict(raw.get("spec") or {})))
        return PodRequest.from_quantities(pod_requests(spec))
    except (ValidationError, ValueError) as exc:
        return _Unparsable(str(exc).splitlines()[0])


def _parse_workload(raw: Mapping[str, Any]) -> WorkloadInfo | _Unparsable:
    try:
        workload = Workload.model_validate(without_nulls(dict(raw)))
        return WorkloadInfo.from_workload(workload, {})
    except (ValidationError, ValueError) as exc:
        return _Unparsable(str(exc).splitlines()[0])


SLOT = "snapshot"
"""The `ClusterState.parsed` slot of the facts this module derives from Workloads and pods."""


class SnapshotMemo:
    """What `build_cycle` keeps from one build to the next (see the module docstring)."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[int, list[Any]]] = {}
        """tessera.dev plural -> (its revision, its parsed objects)."""
        self.nodes_revision = -1
        self.base: Cluster | None = None
        """The Nodes' cluster, no pod bound (never handed out: snapshots get copies)."""
        self.bound: Cluster | None = None
        """`base` with the pods of `sequence` bound, in that order (never handed out)."""
        self.sequence: list[tuple[str, PodRequest]] = []
        """(node, request) of every pod bound into `bound`, in binding order."""
        self.bindings: list[Binding | None] = []
        """What each pod of `sequence` got (None: it did not fit its node in the model)."""
        self.tree_key: tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]] | None = None
        """(name, spec) of every ClusterQueue and Cohort `tree` was built from."""
        self.tree: QuotaTree | None = None
        self.usage: Usage | None = None
        """Usage of `tree` charged with `charges`."""
        self.charges: dict[str, tuple[str, Mapping[FlavorResource, int]]] = {}
        """Admitted workload key -> (ClusterQueue, usage) charged into `usage`."""
        self.namespaces_revision = -1
        self.namespace_labels: dict[str, dict[str, str]] = {}
        """Namespace name -> its labels, as of `namespaces_revision` (shared by the snapshots: never changed in
        place, replaced when a Namespace changes)."""


def memo_of(state: ClusterState) -> SnapshotMemo:
    memo = state.derived.get("snapshot")
    if memo is None:
        memo = state.derived["snapshot"] = SnapshotMemo()
    return memo  # type: ignore[no-any-return]


class _WorkloadFacts:
    """What one version of a Workload says, and what the last snapshots built from it (reused while it holds)."""

    __slots__ = ("admission", "admitted", "entry", "finished", "holds", "info", "integration", "owner", "parsed",
                 "pending", "spec_priority", "active")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        found = integrations.owner_of(raw)
        self.integration: Integration | None = found[0] if found else None
        self.owner: str | None = found[1] if found else None
        self.finished = wl.is_finished(raw)
        self.holds = wl.holds_quota(raw)
        self.active = wl.is_active(raw)
        self.spec_priority = (raw.get("spec") or {}).get("priority")
        self.parsed: WorkloadInfo | _Unparsable | None = None
        """This version parsed (once it was needed)."""
        self.info: WorkloadInfo | None = None
        """With its priority resolved against the WorkloadPriorityClasses of the last build."""
        self.entry: Entry | None = None
        self.pending: Pending | None = None
        self.admission: tuple[str, list[PodSetPlacement], dict[FlavorResource, int], float, bool] | None = None
        """(ClusterQueue, placements without nodes, usage, reserved at, evicting) of its admission record."""
        self.admitted: tuple[WorkloadInfo, tuple[tuple[str, Binding], ...], Admitted] | None = None
        """(info, its pods' (podset, binding), the Admitted built from them)."""


class _PodFacts:
    """What one version of a pod means for the cluster: live on a node, its request, its possible owners."""

    __slots__ = ("live", "node", "owners", "request")

    def __init__(self, pod: dict[str, Any]) -> None:
        self.live = pod_is_live(pod)
        self.node: str = str(pod["spec"]["nodeName"]) if self.live else ""
        self.request = _parse_pod_request(pod) if self.live else None
        owners = []
        if self.live:
            for integration in integrations.ALL:
                found = integration.pod_owner(pod)
                if found is not None:
                    owners.append((integration.plural, found[0], found[1]))
        self.owners: tuple[tuple[str, str, str], ...] = tuple(owners)
        """(integration plural, owning object's name, podset) per integration that claims the pod, in
        `integrations.ALL` order."""


def detached_copy(cluster: Cluster) -> Cluster:
    """A copy in the same state with a state-id table of its own, as a fresh build would give it (copies of
    one cluster share the table, and placement memoises on it: the memo's cluster must not grow with them)."""
    other = cluster.copy(own_ids=True)
    other.version = cluster.version
    return other


def namespace_labels(state: ClusterState, memo: SnapshotMemo | None = None) -> dict[str, dict[str, str]]:
    """Every watched Namespace's labels by name, rebuilt when a Namespace changed (kept otherwise: a pass reads
    them once or twice, a relabelling is rare). Do not change the mapping: snapshots share it."""
    if memo is None:
        memo = memo_of(state)
    revision = state.revisions.get("namespaces", 0)
    if memo.namespaces_revision != revision:
        labels: dict[str, dict[str, str]] = {}
        for (_, name), raw in state.items("namespaces"):
            found = (raw.get("metadata") or {}).get("labels")
            labels[name] = {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}
        memo.namespace_labels, memo.namespaces_revision = labels, revision
    return memo.namespace_labels


def _base_cluster(state: ClusterState, memo: SnapshotMemo) -> Cluster:
    """The Nodes' cluster without pods, rebuilt when a Node changed."""
    revision = state.revisions.get("nodes", 0)
    if memo.base is None or memo.nodes_revision != revision:
        nodes = []
        for key, _ in state.items("nodes"):
            node = state.parsed("nodes", key, _parse_node)
            if isinstance(node, _Unparsable):
                _report("nodes", key, "", node.reason)
                continue
            nodes.append(node)
        memo.base = Cluster.from_nodes(nodes)
        memo.nodes_revision = revision
        memo.bound, memo.sequence, memo.bindings = None, [], []
    return memo.base


def _bind(cluster: Cluster, sequence: list[tuple[str, PodRequest]], names: list[Key]) -> list[Binding | None]:
    out: list[Binding | None] = []
    for (node, request), (namespace, pod_name) in zip(sequence, names):
        try:
            out.append(cluster.bind(node, request))
        except ValueError as exc:
            logger.debug("pod %s/%s does not fit its node in the model: %s", namespace, pod_name, exc)
            out.append(None)
    return out


def _cluster_with_pods(state: ClusterState, memo: SnapshotMemo) -> tuple[Cluster, list[tuple[Key, Binding | None,
                                                                                         tuple[tuple[str, str, str], ...]]]]:
    """A fresh cluster with every live pod bound to its node (in cache order), and per such pod its key, binding
    and owners."""
    base = _base_cluster(state, memo)
    sequence: list[tuple[str, PodRequest]] = []
    pods: list[tuple[Key, tuple[tuple[str, str, str], ...]]] = []
    for key, _ in state.items("pods"):
        facts = state.parsed("pods", key, _PodFacts, slot=SLOT)
        if not facts.live or facts.node not in base or not isinstance(facts.request, PodRequest):
            continue
        sequence.append((facts.node, facts.request))
        pods.append((key, facts.owners))
    known = len(memo.sequence)
    if memo.bound is not None and len(sequence) >= known and sequence[:known] == memo.sequence:
        if len(sequence) > known:  # pods appended since: bound on top, as a build from scratch binds them
            bound = detached_copy(memo.bound)
            added = _bind(bound, sequence[known:], [key for key, _ in pods[known:]])
            memo.bound, memo.sequence, memo.bindings = bound, sequence, memo.bindings + added
    else:
        bound = detached_copy(base)
        bindings = _bind(bound, sequence, [key for key, _ in pods])
        memo.bound, memo.sequence, memo.bindings = bound, sequence, bindings
    assert memo.bound is not None
    return detached_copy(memo.bound), [(key, binding, owners)
                                       for (key, owners), binding in zip(pods, memo.bindings)]


def _pending(facts: _WorkloadFacts, info: WorkloadInfo, raw: Mapping[str, Any], now: float) -> Pending:
    cached = facts.pending
    if cached is not None and cached.workload is info:
        return cached
    count, not_before = wl.requeue_state(raw)
    queued = wl.queued_at(raw)
    pending = Pending(workload=info, queued_at=queued or now, requeue_count=count, not_before=not_before)
    if queued:  # (without a timestamp it is queued since `now`: not kept)
        facts.pending = pending
    return pending


def _admitted(facts: _WorkloadFacts, entry: Entry, owned: list[tuple[str, Binding]], now: float) -> Admitted:
    info = entry.info
    assert info is not None
    owned_key = tuple(owned)
    cached = facts.admitted
    if cached is not None and cached[0] is info and cached[1] == owned_key:
        return cached[2]
    if facts.admission is None:
        admission = entry.workload["status"]["admission"]
        facts.admission = (str(admission.get("clusterQueue") or ""), wl.placements_of(admission),
                           wl.usage_of(admission), wl.reserved_at(entry.workload), wl.is_evicting(entry.workload))
    cluster_queue, base_placements, usage, reserved, evicting = facts.admission
    bindings = [b for _, b in owned]
    placements = list(base_placements)
    if len(placements) == 1:  # one podset (a Job): every pod of the object belongs to it
        placements[0] = replace(placements[0], nodes=tuple(b.node for b in bindings))
    else:
        placements = [replace(p, nodes=tuple(b.node for podset, b in owned if podset == p.name))
                      for p in placements]
    admitted = Admitted(
        workload=replace(info, cluster_queue=cluster_queue),
        cluster_queue=cluster_queue,
        admitted_at=reserved or now,
        usage=usage,
        podsets=tuple(placements),
        bindings=tuple(bindings),
        evicted=evicting,
    )
    if reserved:  # (without a timestamp it is admitted at `now`: not kept)
        facts.admitted = (info, owned_key, admitted)
    return admitted


def _tree_and_usage(state: ClusterState, memo: SnapshotMemo, cluster_queues: list[ClusterQueue],
                    cohorts: list[Cohort], admitted: list[Admitted]) -> tuple[QuotaTree, Usage]:
    """The quota tree (rebuilt when a ClusterQueue's or Cohort's name or spec changed: status writes do not
    count) and its usage by `admitted`: moved from the last build's by the charges that changed (a
    ClusterQueue's usage and its cohorts' depend only on what it holds in total, not on the order of
    admissions)."""
    key = (tuple(sorted(((q.name, q.spec) for q in cluster_queues), key=lambda pair: pair[0])),
           tuple(sorted(((c.name, c.spec) for c in cohorts), key=lambda pair: pair[0])))
    tree = memo.tree
    if tree is None or memo.tree_key != key:
        tree = QuotaTree(cluster_queues, cohorts)
        memo.tree, memo.tree_key, memo.usage, memo.charges = tree, key, None, {}
    charges = {a.key: (a.cluster_queue, a.usage) for a in admitted}
    if memo.usage is None:
        usage = Usage.of_admitted(tree, [(a.cluster_queue, dict(a.usage)) for a in admitted])
    else:
        before = memo.charges
        released = [old for k, old in before.items() if not _same_charge(charges.get(k), old)]
        added = [new for k, new in charges.items() if not _same_charge(before.get(k), new)]
        usage = memo.usage.release_many(released).admit_many(added) if released or added else memo.usage
    memo.usage, memo.charges = usage, charges
    return tree, usage


def _same_charge(a: tuple[str, Mapping[FlavorResource, int]] | None,
                 b: tuple[str, Mapping[FlavorResource, int]] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and (a[1] is b[1] or a[1] == b[1])


def build_cycle(state: ClusterState, now: float, config: Configuration | None = None, seed: int = 0,
                memo: SnapshotMemo | None = None) -> Cycle:
    """The snapshot of `state` at `now` (see the module docstring); `memo` defaults to the state's own."""
    if memo is None:
        memo = memo_of(state)
    flavors = {f.name: f for f in objects_of(state, "resourceflavors")}
    topologies = {t.name: t for t in objects_of(state, "topologies")}
    classes = {c.name: c for c in objects_of(state, "workloadpriorityclasses")}

    entries: dict[str, Entry] = {}
    skipped: dict[str, str] = {}
    holding: dict[str, tuple[_WorkloadFacts, Entry]] = {}
    by_owner: dict[tuple[str, str, str], str] = {}
    pending: list[Pending] = []
    queued: dict[str, float] = {}
    synced = state.synced
    for (namespace, name), raw in state.items("workloads"):
        key = f"{namespace}/{name}"
        facts = state.parsed("workloads", (namespace, name), _WorkloadFacts, slot=SLOT)
        integration, owner = facts.integration, facts.owner
        job = state.get(integration.plural, namespace, owner) if integration and owner else None
        if integration and owner:
            by_owner[(integration.plural, namespace, owner)] = key
        unwatched = integration is not None and integration.plural not in synced
        info: WorkloadInfo | None = None
        if not (facts.finished or (job is None and not (unwatched and facts.holds))):
            parsed = facts.parsed
            if parsed is None:
                parsed = facts.parsed = state.parsed("workloads", (namespace, name), _parse_workload)
            if isinstance(parsed, _Unparsable):
                skipped[key] = parsed.reason
                _report("workloads", (namespace, name), str((raw.get("metadata") or {}).get("resourceVersion")),
                        parsed.reason)
            else:
                priority = resolve_priority(facts.spec_priority, parsed.priority_class, classes)
                info = facts.info
                if info is None or info.priority != priority:
                    info = facts.info = replace(parsed, priority=priority)
        entry = facts.entry
        if entry is None or entry.workload is not raw or entry.job is not job or entry.info is not info:
            entry = facts.entry = Entry(key=key, workload=raw, job=job, info=info, integration=integration,
                                        owner=owner)
        entries[key] = entry
        if info is None:
            continue
        if facts.holds:
            holding[key] = (facts, entry)
        elif facts.active:
            waiting = _pending(facts, info, raw, now)
            pending.append(waiting)
            queued[key] = waiting.queued_at

    # Live pods occupy their nodes; those of admitted workloads are remembered as their bindings.
    cluster, pods = _cluster_with_pods(state, memo)
    bound: dict[str, list[tuple[str, Binding]]] = {}
    for (namespace, _), binding, owners in pods:
        if binding is None:
            continue
        for plural, owner_name, podset in owners:
            owner_key = by_owner.get((plural, namespace, owner_name))
            if owner_key is not None and owner_key in holding:
                bound.setdefault(owner_key, []).append((podset, binding))
                break

    admitted = [_admitted(facts, entry, bound.get(key, []), now) for key, (facts, entry) in holding.items()]

    cluster_queues = objects_of(state, "clusterqueues")
    tree, usage = _tree_and_usage(state, memo, cluster_queues, objects_of(state, "cohorts"), admitted)
    snapshot = Snapshot(  # as scheduler.snapshot.build_snapshot makes it, with the tree and usage kept
        now=now,
        cluster=cluster,
        tree=tree,
        usage=usage,
        flavors=dict(flavors),
        cluster_queues={q.name: q for q in cluster_queues},
        local_queues={(q.namespace, q.name): q for q in objects_of(state, "localqueues")},
        admitted=admitted,
        pending=pending,
        topologies=dict(topologies),
        config=config or Configuration(),
        seed=seed,
        namespace_labels=namespace_labels(state, memo),
    )
    return Cycle(snapshot=snapshot, entries=entries, flavors=flavors, topologies=topologies, skipped=skipped,
                 queued=queued, base=memo.bound)


def placement_for(cycle: Cycle, key: str) -> PodSetPlacement | None:
    """The first podset placement of an admitted workload (Jobs have one podset)."""
    for admitted in cycle.snapshot.admitted:
        if admitted.key == key and admitted.podsets:
            return admitted.podsets[0]
    return None

"""What the `tessera` policy knows about each pending workload before it builds a model.

One pass over the pending set turns every workload that may be scheduled this cycle into a
`Candidate`: its ClusterQueue, and per podset the *options* it may run with — one flavor per
resource group among the ClusterQueue's flavors that the podset may use (taints, node
affinity, quota entries, topology), with the per-pod quota each option charges, the nodes it
may land on (flavor nodeLabels injected, flavor tolerations added, as Kueue does at
admission) and, when the podset asks for a topology, the topology level it asked for.

Workloads that cannot be considered at all (backoff, unknown queue, stopped ClusterQueue,
no flavor at all) get their reason here. Everything is pure data: the cluster is only read.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from quotas.api import ResourceFlavor, Topology
from quotas.tree import QuotaTree
from quotas.units import FlavorResource, format_amount
from scheduler.affinity import NodeConstraints
from scheduler.cluster import Cluster, PodRequest
from scheduler.flavors import admitted_constraints, node_in_flavor, node_infeasible_reason, podset_fits_flavor
from scheduler.snapshot import Pending, Snapshot
from scheduler.workload import PodSetInfo, WorkloadInfo

__all__ = [
    "MAX_OPTIONS",
    "Candidate",
    "PodSetCandidate",
    "PodSetOption",
    "Prepared",
    "aging_fraction",
    "gpu_milli",
    "prepare",
    "queue_order",
    "queue_order_key",
    "workload_usage",
]

MAX_OPTIONS = 8
"""At most this many flavor combinations per podset (in ClusterQueue flavor order)."""

NODE_SETS_LIMIT = 4096
"""Node sets kept from one cycle to the next before they are computed afresh."""


def gpu_milli(pod: PodRequest, accelerators: Iterable[str]) -> int:
    """Accelerator milli one pod requests (over every per-device resource)."""
    return sum(pod.get(r) for r in accelerators)


@dataclass(eq=False)
class PodSetOption:
    """One way to run a podset: a flavor per resource group, and what follows from it."""

    index: int
    flavors: dict[str, str]
    """resource -> flavor, as `PodSetPlacement.flavors` (``pods`` included when a group covers it)."""
    per_pod_quota: dict[FlavorResource, int]
    """Quota one pod charges per FlavorResource."""
    group: int
    """Placement group: podsets with equal constraints and flavors share one id (and one node set)."""
    nodes: tuple[str, ...]
    """Nodes the pods may use (labels, taints, schedulability; free capacity not considered)."""
    constraints: NodeConstraints = field(default_factory=NodeConstraints)
    """The podset's constraints with the flavors' nodeLabels and tolerations injected."""
    topology: Topology | None = None
    level: int | None = None
    """Depth of the requested topology level in ``topology`` (None: no topology request here)."""
    required: bool = False
    rank: int = 0
    """Position in ClusterQueue flavor order (0 = first choice, as Kueue would try it)."""


@dataclass(eq=False)
class PodSetCandidate:
    index: int
    info: PodSetInfo
    pod: PodRequest
    options: list[PodSetOption]
    gpu_per_pod: int

    @property
    def count(self) -> int:
        return self.info.count

    @property
    def lowest(self) -> int:
        return self.info.lowest_count

    @property
    def partial(self) -> bool:
        return self.info.lowest_count < self.info.count


@dataclass(eq=False)
class Candidate:
    """A pending workload that may be admitted this cycle, with its podsets' options."""

    pending: Pending
    cluster_queue: str
    podsets: list[PodSetCandidate]
    order: int = 0
    """Position in queue order (priority, then queue time)."""
    key: str = field(init=False)
    """The pending workload's key, read tens of thousands of times a cycle (an attribute, not a property)."""

    def __post_init__(self) -> None:
        self.key = self.pending.key

    @property
    def workload(self) -> WorkloadInfo:
        return self.pending.workload

    @property
    def priority(self) -> int:
        return self.pending.workload.priority

    @property
    def queued_at(self) -> float:
        return self.pending.queued_at

    def gpu_total(self) -> int:
        return sum(ps.gpu_per_pod * ps.count for ps in self.podsets)


@dataclass
class Prepared:
    """The pending set sorted out: candidates in queue order, and reasons for the rest."""

    candidates: list[Candidate]
    reasons: dict[str, str]
    """Workloads that cannot be admitted this cycle whatever happens, with the reason."""
    blocked_strict: dict[str, str] = field(default_factory=dict)
    groups: dict[tuple[object, ...], int] = field(default_factory=dict)
    group_nodes: dict[int, tuple[str, ...]] = field(default_factory=dict)
    level_requests: dict[str, int] = field(default_factory=dict)
    """Per topology name, the deepest level any candidate podset asks for."""


def queue_order_key(pending: Pending) -> tuple[int, float, str]:
    """Kueue's order across queues: higher priority first, then earlier queue time, then key."""
    return (-pending.workload.priority, pending.queued_at, pending.key)


def queue_order(snapshot: Snapshot) -> list[Pending]:
    """The pending set in queue order (`queue_order_key`), with admission fair sharing applied
    inside each ClusterQueue when the snapshot carries it.

    Kueue orders a ClusterQueue's workloads by their LocalQueue's decayed usage first, then
    priority and time. Each ClusterQueue's workloads keep the positions they have in the global
    order, refilled in that ClusterQueue's own fair-sharing order: fair sharing reorders
    LocalQueues within a ClusterQueue, never one ClusterQueue against another.
    """
    order = sorted(snapshot.pending, key=queue_order_key)
    afs = snapshot.admission_fair_sharing
    if afs is None:
        return order
    usage: dict[str, float] = {}

    def share(p: Pending) -> float:
        lq = f"{p.workload.namespace}/{p.workload.local_queue}"
        got = usage.get(lq)
        if got is None:
            got = usage[lq] = afs.usage(lq, at=snapshot.now)
        return got

    slots: dict[str | None, list[int]] = {}
    for i, p in enumerate(order):
        slots.setdefault(snapshot.cluster_queue_of(p.workload), []).append(i)
    out = list(order)
    for positions in slots.values():
        members = sorted((order[i] for i in positions), key=lambda p: (share(p), *queue_order_key(p)))
        for i, p in zip(positions, members):
            out[i] = p
    return out


def workload_usage(candidate: Candidate, choice: Sequence[tuple[int, int]]) -> dict[FlavorResource, int]:
    """Quota a candidate charges with ``choice[i] = (option index, pods)`` for podset i."""
    out: dict[FlavorResource, int] = {}
    for ps, (opt, pods) in zip(candidate.podsets, choice):
        if pods <= 0:
            continue
        for fr, v in ps.options[opt].per_pod_quota.items():
            out[fr] = out.get(fr, 0) + v * pods
    return out


def _groups_of(resource_groups: Sequence[object], resources: Iterable[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for r in resources:
        out[r] = next((i for i, g in enumerate(resource_groups) if r in g.covered_resources), None)  # type: ignore[attr-defined]
    return out


class _NodeSets:
    """Feasible node sets per (constraints, flavors).

    They depend only on labels, taints and schedulability, so they are kept in the cluster's
    `Cluster.shared` cache from one cycle to the next (keyed by the flavors' specs too). The
    node tuples keep their identity there, and the per-cycle caches downstream key on it."""

    def __init__(self, cluster: Cluster, flavors: Mapping[str, ResourceFlavor]) -> None:
        self.cluster = cluster
        self.flavors = flavors
        self._specs: dict[str, tuple[str, str]] = {}
        if len(cluster.shared.get("solver_node_sets", ())) > NODE_SETS_LIMIT:
            cluster.shared.pop("solver_node_sets")
            cluster.shared.pop("solver_topology_nodes", None)
        self._cache: dict[tuple[object, ...], tuple[tuple[str, ...], NodeConstraints]] = cluster.shared.setdefault(
            "solver_node_sets", {}
        )
        self._topo: dict[tuple[int, str], tuple[tuple[str, ...], tuple[str, ...]]] = cluster.shared.setdefault(
            "solver_topology_nodes", {}
        )

    def _spec(self, name: str) -> tuple[str, str]:
        got = self._specs.get(name)
        if got is None:
            got = self._specs[name] = (name, repr(self.flavors[name].spec))
        return got

    def in_flavor(self, name: str) -> frozenset[str]:
        key = ("flavor", self._spec(name))
        got = self._cache.get(key)
        if got is None:
            flavor = self.flavors[name]
            got = self._cache[key] = frozenset(n.name for n in self.cluster if node_in_flavor(n, flavor))  # type: ignore[assignment]
        return got  # type: ignore[return-value]

    def in_topology(self, nodes: tuple[str, ...], topology: Topology) -> tuple[str, ...]:
        """The nodes carrying every level label of ``topology`` (the others are outside it)."""
        key = (id(nodes), topology.name, tuple(topology.level_labels))
        got = self._topo.get(key)
        if got is None or got[0] is not nodes:  # the entry keeps ``nodes`` alive, so its id is not reused
            labels = topology.level_labels
            inside = tuple(n for n in nodes if all(k in self.cluster.nodes[n].labels for k in labels))
            got = self._topo[key] = (nodes, inside)
        return got[1]

    def nodes(self, constraints: NodeConstraints, flavor_names: tuple[str, ...]) -> tuple[tuple[str, ...], NodeConstraints]:
        """(feasible nodes, constraints with the flavors injected) for a podset in these flavors."""
        key = (constraints, tuple(self._spec(n) for n in flavor_names))
        got = self._cache.get(key)
        if got is None:
            admitted = constraints
            members: frozenset[str] | None = None
            for name in flavor_names:
                admitted = admitted_constraints(admitted, self.flavors[name])
                members = self.in_flavor(name) if members is None else members & self.in_flavor(name)
            names = tuple(
                n.name
                for n in self.cluster
                if (members is None or n.name in members) and node_infeasible_reason(admitted, n) is None
            )
            got = self._cache[key] = (names, admitted)
        return got


def _topology_of(flavor_names: Iterable[str], snapshot: Snapshot) -> tuple[str | None, Topology | None]:
    for name in flavor_names:
        flavor = snapshot.flavors.get(name)
        if flavor is not None and flavor.spec.topology_name:
            return name, snapshot.topologies.get(flavor.spec.topology_name)
    return None, None


_Options = tuple[list[tuple[PodSetOption, tuple[object, ...]]], list[str]]
"""A podset's options, each with its placement group's key, and the reasons for the rest."""


def _podset_options(
    snapshot: Snapshot, tree: QuotaTree, cq: str, ps: PodSetInfo, node_sets: _NodeSets
) -> _Options:
    """Every admissible flavor combination of one podset, with the reasons for those left out.

    It reads the configuration (quota tree, flavors, topologies) and the nodes' labels, taints
    and schedulability, never free capacity or usage: `_lasting_options` keeps it across cycles.
    The options' group ids are those of the last cycle that used them (`_grouped` sets this
    cycle's)."""
    node = tree.cluster_queue(cq)
    rgs = node.resource_groups
    resources = [r for r, _ in ps.requests.items]
    covers_pods = any("pods" in g.covered_resources for g in rgs)
    if covers_pods:
        resources.append("pods")
    group_of = _groups_of(rgs, resources)
    missing = sorted(r for r, g in group_of.items() if g is None)
    if missing:
        return [], [f"resource {r} unavailable in ClusterQueue {cq}" for r in missing]
    per_group: dict[int, list[str]] = {}
    for r, g in group_of.items():
        per_group.setdefault(g, []).append(r)  # type: ignore[arg-type]
    reasons: list[str] = []
    choices: list[list[str]] = []
    group_ids = sorted(per_group)
    for gi in group_ids:
        group = rgs[gi]
        label_keys = {k for f in group.flavors if f.name in snapshot.flavors for k in snapshot.flavors[f.name].spec.node_labels}
        eligible = []
        for fq in group.flavors:
            flavor = snapshot.flavors.get(fq.name)
            if flavor is None:
                reasons.append(f"flavor {fq.name} not found")
                continue
            why = podset_fits_flavor(ps, flavor, label_keys)
            if why:
                reasons.append(why)
                continue
            lacking = [r for r in per_group[gi] if (fq.name, r) not in node.quotas]
            if lacking:
                reasons.append(f"resource {lacking[0]} unavailable in flavor {fq.name} of ClusterQueue {cq}")
                continue
            eligible.append(fq.name)
        if not eligible:
            return [], reasons or [f"no flavor of ClusterQueue {cq} for {', '.join(per_group[gi])}"]
        choices.append(eligible)
    options: list[tuple[PodSetOption, tuple[object, ...]]] = []
    for rank, combo in enumerate(itertools.islice(itertools.product(*choices), MAX_OPTIONS)):
        flavors = {r: combo[group_ids.index(group_of[r])] for r in resources}  # type: ignore[arg-type]
        per_pod: dict[FlavorResource, int] = {}
        for r, amount in ps.requests.items:
            per_pod[(flavors[r], r)] = per_pod.get((flavors[r], r), 0) + amount
        if covers_pods:
            per_pod[(flavors["pods"], "pods")] = per_pod.get((flavors["pods"], "pods"), 0) + 1000
        too_big = next(
            (fr for fr, v in per_pod.items() if v * ps.lowest_count > tree.potential_available(node, fr)), None
        )
        if too_big is not None:
            fr = too_big
            reasons.append(
                f"insufficient quota for {fr[1]} in flavor {fr[0]}: {ps.lowest_count} pods need "
                f"{format_amount(per_pod[fr] * ps.lowest_count, fr[1])}, ClusterQueue {cq} can get at most "
                f"{format_amount(tree.potential_available(node, fr), fr[1])}"
            )
            continue
        names = tuple(sorted(set(combo)))
        topo_flavor, topology = _topology_of(combo, snapshot)
        level: int | None = None
        required = False
        if ps.topology is not None:
            required = ps.topology.required
            if topology is None:
                if required:
                    reasons.append(
                        f"podset {ps.name} requires topology level {ps.topology.level} but flavor "
                        f"{'/'.join(names)} has no topology"
                    )
                    continue
            elif ps.topology.level in topology.level_labels:
                level = topology.level_labels.index(ps.topology.level)
            elif required:
                reasons.append(f"topology {topology.name} of flavor {topo_flavor} has no level {ps.topology.level}")
                continue
        nodes, admitted = node_sets.nodes(ps.constraints, names)
        if level is not None and topology is not None:
            nodes = node_sets.in_topology(nodes, topology)
        if not nodes:
            reasons.append(f"no node of flavor {'/'.join(names)} matches podset {ps.name}'s node selector, affinity and tolerations")
            continue
        gkey = (ps.constraints, names, topology.name if topology is not None and level is not None else None)
        options.append((
            PodSetOption(
                index=len(options),
                flavors=flavors,
                per_pod_quota=per_pod,
                group=-1,  # set by `_grouped`
                nodes=nodes,
                constraints=admitted,
                topology=topology if level is not None else None,
                level=level,
                required=required and level is not None,
                rank=rank,
            ),
            gkey,
        ))
    return options, reasons


def _lasting_options(snapshot: Snapshot, cluster: Cluster) -> dict[tuple[object, ...], _Options]:
    """`_podset_options` results per ClusterQueue and podset shape, kept in `Cluster.shared`
    (dropped with the node sets when labels, taints or schedulability change) while the
    snapshot's quota tree, flavors and topologies are the same objects."""
    world = (snapshot.tree, snapshot.flavors, snapshot.topologies)
    kept = cluster.shared.get("solver_options")
    if kept is None or len(kept[1]) > NODE_SETS_LIMIT or any(a is not b for a, b in zip(kept[0], world)):
        kept = cluster.shared["solver_options"] = (world, {})
    return kept[1]


def _grouped(options: _Options, groups: dict[tuple[object, ...], int], group_nodes: dict[int, tuple[str, ...]]) -> _Options:
    """The options with this cycle's placement group ids, numbered in order of first use (the
    same objects when the ids are those they carry: consecutive cycles mostly number alike)."""
    out: list[tuple[PodSetOption, tuple[object, ...]]] = []
    changed = False
    for opt, gkey in options[0]:
        gid = groups.get(gkey)
        if gid is None:
            gid = groups[gkey] = len(groups)
            group_nodes[gid] = opt.nodes
        if opt.group != gid:
            opt = replace(opt, group=gid)
            changed = True
        out.append((opt, gkey))
    return (out, options[1]) if changed else options


def prepare(snapshot: Snapshot, cluster: Cluster | None = None) -> Prepared:
    """Sort the pending set into candidates (queue order) and workloads that cannot be admitted now."""
    cluster = cluster or snapshot.cluster
    tree = snapshot.tree
    node_sets = _NodeSets(cluster, snapshot.flavors)
    prepared = Prepared([], {})
    strict_blocked: dict[str, str] = {}
    running = snapshot.admitted_keys
    namespace_labels = snapshot.namespace_labels
    # Pending sets repeat a few podset shapes many times (replicas of one Job template, a team's
    # usual sizes): their options are computed once per ClusterQueue and shape, and shared.
    option_memo: dict[tuple[object, ...], tuple[list[PodSetOption], list[str], int]] = {}
    lasting = _lasting_options(snapshot, cluster)
    namespaces: dict[tuple[str, str], str] = {}  # (ClusterQueue, namespace): why not selected ("": selected)
    for pending in queue_order(snapshot):
        wl = pending.workload
        key = pending.key
        if key in running:
            prepared.reasons[key] = "waiting for its previous admission to be released"
            continue
        if pending.not_before > snapshot.now:
            prepared.reasons[key] = f"requeued with backoff: not considered before t={pending.not_before:g}s"
            continue
        cq = snapshot.cluster_queue_of(wl)
        if cq is None:
            prepared.reasons[key] = f"LocalQueue {wl.namespace}/{wl.local_queue} does not exist"
            continue
        if cq not in snapshot.cluster_queues or not tree.has_cluster_queue(cq):
            prepared.reasons[key] = f"ClusterQueue {cq} does not exist"
            continue
        lq = snapshot.local_queues.get((wl.namespace, wl.local_queue))
        if lq is not None and lq.spec.stop_policy != "None":
            prepared.reasons[key] = f"LocalQueue {wl.namespace}/{wl.local_queue} is stopped (stopPolicy {lq.spec.stop_policy})"
            continue
        spec = snapshot.cluster_queues[cq].spec
        if spec.stop_policy != "None":
            prepared.reasons[key] = f"ClusterQueue {cq} is stopped (stopPolicy {spec.stop_policy})"
            continue
        selected = namespaces.get((cq, wl.namespace))
        if selected is None:
            selector = spec.namespace_selector
            labels = {**namespace_labels.get(wl.namespace, {}), "kubernetes.io/metadata.name": wl.namespace}
            selected = namespaces[(cq, wl.namespace)] = (
                "it has no namespaceSelector, which selects no namespace" if selector is None
                else "" if selector.matches(labels) else f"namespace {wl.namespace} does not match its namespaceSelector"
            )
        if selected:
            prepared.reasons[key] = f"namespace not selected by ClusterQueue {cq}: {selected}"
            continue
        if cq in strict_blocked:
            prepared.blocked_strict[key] = strict_blocked[cq]
            continue
        podsets: list[PodSetCandidate] = []
        why: str | None = None
        for i, ps in enumerate(wl.podsets):
            if ps.count <= 0:
                continue
            shape = (cq, ps.name, ps.count, ps.min_count, ps.requests, ps.constraints, ps.topology)
            memo = option_memo.get(shape)
            if memo is None:
                found = lasting.get(shape)
                if found is None:
                    found = _podset_options(snapshot, tree, cq, ps, node_sets)
                found = lasting[shape] = _grouped(found, prepared.groups, prepared.group_nodes)
                memo = option_memo[shape] = ([o for o, _ in found[0]], found[1], gpu_milli(ps.requests, cluster.accelerators))
            options, reasons, gpu = memo
            if not options:
                why = f"couldn't assign flavors to pod set {ps.name}: {'; '.join(sorted(set(reasons))) or 'no flavor'}"
                break
            podsets.append(PodSetCandidate(i, ps, ps.requests, options, gpu))
            for opt in options:
                if opt.topology is not None and opt.level is not None:
                    name = opt.topology.name
                    prepared.level_requests[name] = max(prepared.level_requests.get(name, -1), opt.level)
        if why is not None or not podsets:
            prepared.reasons[key] = why or "workload has no pods"
            if spec.queueing_strategy == "StrictFIFO":
                strict_blocked[cq] = f"StrictFIFO: waiting behind {key} at the head of ClusterQueue {cq}"
            continue
        prepared.candidates.append(Candidate(pending, cq, podsets, order=len(prepared.candidates)))
    return prepared


def aging_fraction(waited: float, threshold: float) -> float:
    """How far a workload is into its aging period (0 fresh, 1 at or past the threshold)."""
    if threshold <= 0:
        return 1.0
    return max(0.0, min(1.0, waited / threshold))

"""Topology-aware admission for the `kueue` policy: Kueue's TAS step at admission time.

When a podset asks for a topology (``required`` or ``preferred`` level) and its admitted
flavor names a ``topologyName``, Kueue does not leave placement to kube-scheduler: it
computes a topology assignment from the *free capacity* of the flavor's nodes (what bound
pods leave, pods of other TAS workloads admitted in the same cycle included), pins the pods
to the chosen domains, and only then reserves quota (pkg/cache tas_flavor_snapshot.go). The
domain search itself (BestFit at the required level, fewest domains for preferred) lives in
`scheduler.topology.TopologyGraph.assign`; this module wires it into a scheduling cycle:

* one working copy of the cluster per cycle, created when the first TAS placement is
  committed, on which committed placements are bound so later heads of the same cycle see
  them (before that, what-if trials run on the snapshot's cluster and are rolled back);
* fit counts per domain computed from a per-node-state memo (nodes in the same state fit
  the same number of pods), cached per pod shape until the next commit;
* what-if placement for nomination (rolled back), optionally with preemption victims' pods
  removed first (Kueue's ``SimulateWorkloadRemoval`` before a TAS check in Preempt mode);
* a cache of topology graphs across cycles (their shape depends on node labels only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from quotas.api import ResourceFlavor, Topology
from scheduler.affinity import NodeConstraints
from scheduler.cluster import Binding, Cluster, PodRequest
from scheduler.flavors import admitted_constraints, feasible_nodes, flavor_nodes
from scheduler.snapshot import Admitted, Snapshot
from scheduler.topology import DomainKey, TopologyGraph, level_name
from scheduler.workload import PodSetInfo, WorkloadInfo

__all__ = ["TASPlacement", "TASPlanner", "constraints_with_flavors", "domain_nodes", "tas_flavor_of"]

_GRAPH_CACHE: dict[tuple[object, ...], TopologyGraph] = {}
_GRAPH_CACHE_LIMIT = 256


@dataclass(frozen=True)
class TASPlacement:
    """Where TAS put one podset: the flavor, one node per pod, and the domain it is confined to."""

    podset: int
    flavor: str
    nodes: tuple[str, ...]
    domain: tuple[str, ...]
    levels: tuple[str, ...]


def constraints_with_flavors(
    constraints: NodeConstraints, flavor_names: Iterable[str], flavors: Mapping[str, ResourceFlavor], skip: str | None = None
) -> NodeConstraints:
    """The pod's constraints after Kueue injected the nodeLabels and tolerations of its admitted flavors."""
    out = constraints
    for name in sorted(set(flavor_names)):
        if name == skip:
            continue
        flavor = flavors.get(name)
        if flavor is not None:
            out = admitted_constraints(out, flavor)
    return out


def tas_flavor_of(flavor_names: Iterable[str], flavors: Mapping[str, ResourceFlavor]) -> list[str]:
    """The assigned flavors that carry a topologyName (Kueue allows exactly one per TAS podset)."""
    return sorted({n for n in flavor_names if n in flavors and flavors[n].spec.topology_name})


def _graph(cluster: Cluster, topology: Topology, flavor: ResourceFlavor) -> TopologyGraph:
    """The flavor's topology tree, shared across cycles while the nodes and their level labels stay the same."""
    nodes = tuple(flavor_nodes(cluster, flavor))
    levels = tuple(topology.level_labels)
    shape = tuple((n, tuple(cluster.nodes[n].labels.get(label) for label in levels)) for n in nodes)
    key = (topology.name, levels, flavor.name, tuple(sorted(flavor.spec.node_labels.items())), shape)
    graph = _GRAPH_CACHE.get(key)
    if graph is None:
        if len(_GRAPH_CACHE) >= _GRAPH_CACHE_LIMIT:
            _GRAPH_CACHE.clear()
        graph = _GRAPH_CACHE[key] = TopologyGraph(cluster, topology, nodes)
    graph.cluster = cluster  # the tree depends on labels only; capacity is read from this cluster
    return graph


def domain_nodes(cluster: Cluster, levels: Sequence[str], domain: Sequence[str], candidates: Iterable[str] | None = None) -> list[str]:
    """Nodes (of ``candidates``, default all) whose level labels equal ``domain`` from the top level down."""
    pairs = list(zip(levels, domain))
    names = cluster.nodes if candidates is None else candidates
    return [n for n in names if all(cluster.nodes[n].labels.get(k) == v for k, v in pairs)]


def _common_prefix(keys: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    if not keys:
        return ()
    first = keys[0]
    n = len(first)
    for k in keys[1:]:
        n = min(n, len(k))
        for i in range(n):
            if k[i] != first[i]:
                n = i
                break
    return tuple(first[:n])


class TASPlanner:
    """TAS for one scheduling cycle (or one drained sequence of cycles at the same instant)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.flavors = snapshot.flavors
        self.topologies = snapshot.topologies
        self._cluster: Cluster | None = None
        self._graphs: dict[tuple[str, str], TopologyGraph] = {}
        self._fits: dict[PodRequest, dict[int, int]] = {}
        self._counts: dict[tuple[object, ...], dict[DomainKey | str, int]] = {}
        self._dirty = False
        """True while a what-if trial has changed the cluster (fit counts then are not cached)."""
        self.commits = 0
        """Bumped whenever a placement is bound on the working cluster (nominations made before are stale)."""

    @property
    def cluster(self) -> Cluster:
        """The cluster as this cycle left it: the snapshot's until a TAS placement is committed."""
        return self._cluster if self._cluster is not None else self.snapshot.cluster

    def _own(self) -> Cluster:
        if self._cluster is None:
            self._cluster = self.snapshot.cluster.copy()
        return self._cluster

    def fit_counts(
        self, graph: TopologyGraph, pod: PodRequest, constraints: NodeConstraints, flavor: ResourceFlavor
    ) -> dict[DomainKey | str, int]:
        """`TopologyGraph.fit_counts` with memoised per-node fits (same result, much cheaper per cycle)."""
        cacheable = not self._dirty
        key = (id(graph), pod, constraints, flavor.name, self.commits)
        if cacheable:
            found = self._counts.get(key)
            if found is not None:
                return found
        nodes = self.cluster.nodes
        names = graph.node_names
        allowed = set(feasible_nodes(self.snapshot.cluster, constraints, flavor, names))  # labels/taints only
        memo = self._fits.setdefault(pod, {})
        per_node: dict[str, int] = {}
        for name in names:
            n = 0
            if name in allowed:
                sid = nodes[name].state_id
                n = memo.get(sid, -1)
                if n < 0:
                    n = memo[sid] = nodes[name].fit_count(pod)
            per_node[name] = n
        counts = graph.domain_counts(per_node)
        if cacheable:
            self._counts[key] = counts
        return counts

    @staticmethod
    def wants_tas(podset: PodSetInfo) -> bool:
        return podset.topology is not None

    def place(
        self,
        workload: WorkloadInfo,
        podset_flavors: Sequence[Mapping[str, str]],
        counts: Sequence[int],
        removed: Sequence[Admitted] = (),
    ) -> tuple[dict[int, TASPlacement], str | None]:
        """What-if TAS placement of every TAS podset (in order, each seeing the previous ones),
        with the pods of ``removed`` unbound first. Returns (placements, None) or ({}, reason)."""
        todo = [i for i, ps in enumerate(workload.podsets) if ps.topology is not None and counts[i] > 0]
        if not todo:
            return {}, None
        cluster = self.cluster
        placements: dict[int, TASPlacement] = {}
        with cluster.what_if():  # rolled back on exit: nomination never changes the cluster
            try:
                for admitted in removed:
                    for binding in admitted.bindings:
                        cluster.unbind(binding)
                        self._dirty = True
                for i in todo:
                    placement, why = self._place_one(cluster, workload.podsets[i], i, podset_flavors[i], counts[i])
                    if placement is None:
                        return {}, why
                    placements[i] = placement
                    pod = workload.podsets[i].requests
                    for node in placement.nodes:
                        cluster.bind(node, pod)
                        self._dirty = True
            finally:
                self._dirty = False
        return placements, None

    def _place_one(
        self, cluster: Cluster, podset: PodSetInfo, index: int, flavors_by_resource: Mapping[str, str], count: int
    ) -> tuple[TASPlacement | None, str]:
        assert podset.topology is not None
        names = tas_flavor_of(flavors_by_resource.values(), self.flavors)
        if not names:
            return None, f"podset {podset.name} requests topology-aware scheduling but no assigned flavor has a topologyName"
        if len(names) > 1:
            return None, f"podset {podset.name}: multiple TAS flavors assigned ({', '.join(names)})"
        flavor = self.flavors[names[0]]
        topo_name = flavor.spec.topology_name
        topology = self.topologies.get(topo_name or "")
        if topology is None:
            return None, f'flavor {flavor.name}: Topology "{topo_name}" not found'
        graph = self._graphs.get((topology.name, flavor.name))
        if graph is None:
            graph = self._graphs[(topology.name, flavor.name)] = _graph(cluster, topology, flavor)
        request = podset.topology
        if request.level not in graph.levels:
            return None, f'flavor {flavor.name} does not contain the requested level "{request.level}"'
        constraints = constraints_with_flavors(podset.constraints, flavors_by_resource.values(), self.flavors, skip=flavor.name)
        fits = self.fit_counts(graph, podset.requests, constraints, flavor)
        result = graph.assign(count, request.level, request.required, podset.requests, constraints, flavor, counts=fits)
        if not result:
            mode = "required" if request.required else "preferred"
            return None, (
                f"topology-aware placement of podset {podset.name} ({count} pods, {mode} {level_name(request.level)}) "
                f"in flavor {flavor.name} failed: {result.reason}"
            )
        nodes = tuple(n for n, c in result.nodes for _ in range(c))
        depth = graph.level_index(request.level)
        leaves = [key for key, _ in result.domains]
        if request.required:
            domain = tuple(leaves[0][: depth + 1]) if leaves else ()
        else:
            domain = _common_prefix(leaves)
        return TASPlacement(index, flavor.name, nodes, domain, graph.levels), ""

    def commit(self, workload: WorkloadInfo, placements: Mapping[int, TASPlacement]) -> bool:
        """Bind the placed pods on the working cluster; False (and nothing bound) if one no longer fits."""
        if not placements:
            return True
        cluster = self._own()
        done: list[Binding] = []
        for i, placement in sorted(placements.items()):
            pod = workload.podsets[i].requests
            for node in placement.nodes:
                if not cluster.nodes[node].fits(pod):
                    for binding in reversed(done):
                        cluster.unbind(binding)
                    return False
                done.append(cluster.bind(node, pod))
        self.commits += 1
        return True

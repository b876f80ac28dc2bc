"""The data-centre hierarchy of a `Topology` as a tree, with free capacity per domain.

Kueue's topology-aware scheduling (TAS) identifies a domain by the label values of its
levels from the top (``("b1", "r3")`` is rack r3 of block b1), so two racks called r3 in
different blocks stay apart. The tree is a networkx DiGraph: the root ``()`` -> one vertex
per domain per level (tuple keys) -> the nodes themselves (string keys) under the lowest
level's domains. Nodes lacking any level label are outside the topology (`outside`).

Capacity is not stored in the graph: it changes with every bind, so it is read from the
`Cluster` when asked, in one pass over the nodes (`fit_counts`) and summed up the tree.
The placement algorithms mirror Kueue's TAS (``tas_flavor_snapshot.go``): the per-node
count of pods that fit, summed per domain ("state"); for a required level the domain with
enough room and the least room (BestFit); for a preferred level one domain if any fits, else
one domain a level up, else the fewest domains at the top greedily largest-first; then down
level by level, children sorted by room (largest first) and the last one best-fit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from quotas.api import ResourceFlavor, Topology
from scheduler.affinity import NodeConstraints
from scheduler.cluster import DEVICE_MILLI, GPU_RESOURCE, UNLIMITED, Cluster, PodRequest, device_shape
from scheduler.flavors import feasible_nodes
from scheduler.workload import PodSetInfo

__all__ = ["DomainCapacity", "DomainKey", "TopologyAssignmentResult", "TopologyGraph", "level_name"]

DomainKey = tuple[str, ...]
"""Label values from the outermost level down; ``()`` is the root."""

ROOT: DomainKey = ()


def level_name(label: str) -> str:
    """A short word for a level label in messages: ``example.com/topology-rack`` -> ``rack``."""
    word = label.rsplit("/", 1)[-1]
    for prefix in ("topology-", "topology."):
        if word.startswith(prefix):
            word = word[len(prefix):]
    return "host" if word == "hostname" else word


@dataclass(frozen=True)
class DomainCapacity:
    """What is free in a domain now (schedulable nodes only)."""

    nodes: int
    schedulable_nodes: int
    free_gpu: int
    """Free milli of the GPU resource, partial devices included."""
    free_devices: int
    """Completely free devices."""
    whole_free_nodes: int
    """Schedulable GPU nodes with every device free."""


@dataclass(frozen=True)
class TopologyAssignmentResult:
    """Where a podset's pods go: per lowest-level domain (and per node when asked), or why not."""

    levels: tuple[str, ...]
    domains: tuple[tuple[DomainKey, int], ...] = ()
    nodes: tuple[tuple[str, int], ...] = ()
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is None

    def to_api(self) -> object:
        """As `quotas.api.TopologyAssignment` (for Workload status)."""
        from quotas.api import TopologyAssignment, TopologyDomainAssignment

        return TopologyAssignment(
            levels=list(self.levels),
            domains=[TopologyDomainAssignment(values=list(key), count=count) for key, count in self.domains],
        )


TREES_LIMIT = 64
"""Topology trees a cluster keeps (see `TopologyGraph`)."""


class _Tree:
    """The domains of a topology over some nodes, as a networkx tree (shared, never changed)."""

    def __init__(self, cluster: Cluster, levels: tuple[str, ...], names: Iterable[str]) -> None:
        self.graph: nx.DiGraph = nx.DiGraph()
        self.graph.add_node(ROOT, level=-1)
        self.outside: list[str] = []
        self.leaf_nodes: dict[DomainKey, list[str]] = {}
        self.node_domain: dict[str, DomainKey] = {}
        for node_name in names:
            node = cluster.nodes[node_name]
            values = [node.labels.get(label) for label in levels]
            if any(v is None for v in values):
                self.outside.append(node_name)
                continue
            parent: DomainKey = ROOT
            for depth in range(len(levels)):
                key: DomainKey = tuple(values[: depth + 1])  # type: ignore[arg-type]
                if key not in self.graph:
                    self.graph.add_node(key, level=depth)
                    self.graph.add_edge(parent, key)
                parent = key
            self.graph.add_node(node_name, level=len(levels))
            self.graph.add_edge(parent, node_name)
            self.leaf_nodes.setdefault(parent, []).append(node_name)
            self.node_domain[node_name] = parent
        self.by_level: list[list[DomainKey]] = [[] for _ in levels]
        for vertex, depth in self.graph.nodes(data="level"):
            if isinstance(vertex, tuple) and depth >= 0:
                self.by_level[depth].append(vertex)
        for keys in self.by_level:
            keys.sort()
        self.child_domains: list[list[tuple[DomainKey, list[DomainKey]]]] = [
            [(key, list(self.graph.successors(key))) for key in keys] for keys in self.by_level[:-1]
        ]
        """Per level above the lowest: each domain with its child domains (sums go up the tree)."""


class TopologyGraph:
    """A `Topology`'s tree over the nodes of a cluster (optionally only some, e.g. one flavor's)."""

    def __init__(
        self,
        cluster: Cluster,
        levels: Topology | Sequence[str],
        nodes: Iterable[str] | None = None,
        name: str | None = None,
        gpu_resource: str = GPU_RESOURCE,
    ) -> None:
        self.cluster = cluster
        self.levels: tuple[str, ...] = tuple(levels.level_labels if isinstance(levels, Topology) else levels)
        if not self.levels:
            raise ValueError("a topology needs at least one level")
        self.name = name or (levels.name if isinstance(levels, Topology) else "topology")
        self.gpu_resource = gpu_resource
        # The tree depends only on node names and labels: built once per node set and kept in the
        # cluster's shared cache (copies and later cycles reuse it; nothing here changes it).
        names = tuple(cluster.nodes) if nodes is None else tuple(nodes)
        trees: dict[tuple[object, ...], _Tree] = cluster.shared.setdefault("topology_trees", {})
        tree = trees.get((self.levels, names))
        if tree is None:
            if len(trees) >= TREES_LIMIT:  # node sets that vary (reservations): start over
                trees.clear()
            tree = trees[(self.levels, names)] = _Tree(cluster, self.levels, names)
        self.graph: nx.DiGraph = tree.graph
        self.outside: list[str] = tree.outside
        """Nodes without every level label: not part of this topology."""
        self._leaf_nodes: dict[DomainKey, list[str]] = tree.leaf_nodes
        self._node_domain: dict[str, DomainKey] = tree.node_domain
        self._by_level: list[list[DomainKey]] = tree.by_level
        self._child_domains = tree.child_domains

    @classmethod
    def for_flavor(cls, cluster: Cluster, topology: Topology, flavor: ResourceFlavor, gpu_resource: str = GPU_RESOURCE) -> TopologyGraph:
        """The topology over one flavor's nodes, as Kueue's TAS snapshot per flavor."""
        from scheduler.flavors import flavor_nodes

        return cls(cluster, topology, flavor_nodes(cluster, flavor), gpu_resource=gpu_resource)

    # --- structure ----------------------------------------------------------------------------

    def level_index(self, level: str | int) -> int:
        if isinstance(level, int):
            if not 0 <= level < len(self.levels):
                raise ValueError(f"level {level} out of range for topology {self.name}")
            return level
        try:
            return self.levels.index(level)
        except ValueError:
            raise ValueError(f"topology {self.name} has no level {level!r} (levels: {', '.join(self.levels)})") from None

    def domains_at(self, level: str | int) -> list[DomainKey]:
        """Domains of a level, sorted by key."""
        return list(self._by_level[self.level_index(level)])

    def children(self, domain: DomainKey) -> list[DomainKey | str]:
        return sorted(self.graph.successors(domain), key=str)

    def parent(self, domain: DomainKey | str) -> DomainKey | None:
        preds = list(self.graph.predecessors(domain))
        return preds[0] if preds else None

    def domain_of(self, node: str, level: str | int | None = None) -> DomainKey | None:
        """The domain holding ``node`` at ``level`` (default: the lowest level); None if outside."""
        leaf = self._node_domain.get(node)
        if leaf is None:
            return None
        return leaf if level is None else leaf[: self.level_index(level) + 1]

    def nodes_in(self, domain: DomainKey) -> list[str]:
        """Nodes under a domain, in cluster order of insertion."""
        if domain not in self.graph:
            raise KeyError(f"no domain {domain} in topology {self.name}")
        depth = len(domain)
        if depth == len(self.levels):
            return list(self._leaf_nodes.get(domain, []))
        return [n for leaf, names in self._leaf_nodes.items() if leaf[:depth] == domain for n in names]

    @property
    def node_names(self) -> list[str]:
        return list(self._node_domain)

    # --- capacity -------------------------------------------------------------------------------

    def node_fits(
        self, pod: PodRequest, constraints: PodSetInfo | NodeConstraints | None = None, flavor: ResourceFlavor | None = None
    ) -> dict[str, int]:
        """Per node of the topology: how many more pods like ``pod`` fit now (0 where infeasible)."""
        allowed: set[str] | None = None
        if constraints is not None or flavor is not None:
            allowed = set(feasible_nodes(self.cluster, constraints or NodeConstraints(), flavor, self._node_domain))
        out: dict[str, int] = {}
        for name in self._node_domain:
            node = self.cluster.nodes[name]
            if allowed is not None:
                ok = name in allowed
            else:
                ok = node.schedulable
            out[name] = self.cluster.fit_count(node, pod) if ok else 0
        return out

    def fit_counts(
        self, pod: PodRequest, constraints: PodSetInfo | NodeConstraints | None = None, flavor: ResourceFlavor | None = None
    ) -> dict[DomainKey | str, int]:
        """Pods like ``pod`` that fit per domain (sum over its nodes of per-node fit) and per node.

        Without ``constraints``/``flavor`` only schedulability filters nodes.
        """
        return self.domain_counts(self.node_fits(pod, constraints, flavor))

    def domain_counts(self, per_node: Mapping[str, int]) -> dict[DomainKey | str, int]:
        """Per-node pod counts (every node of the topology) with their sums per domain added.

        Summed bottom-up, each domain from its children: a cycle on a large cluster asks for
        these counts often, and one pass per level is far cheaper than one per leaf and ancestor."""
        counts: dict[DomainKey | str, int] = dict(per_node)
        get = counts.__getitem__
        for leaf, names in self._leaf_nodes.items():
            counts[leaf] = min(sum(map(get, names)), UNLIMITED)
        for level in reversed(self._child_domains):
            for key, children in level:
                counts[key] = min(sum(map(get, children)), UNLIMITED)
        counts[ROOT] = min(sum(counts[key] for key in self._by_level[0]), UNLIMITED)
        return counts

    def pods_that_fit(
        self, domain: DomainKey, pod: PodRequest, constraints: PodSetInfo | NodeConstraints | None = None
    ) -> int:
        """Pods like ``pod`` that fit in one domain now."""
        fits = self.node_fits(pod, constraints)
        return sum(fits[n] for n in self.nodes_in(domain))

    def capacity(self, domain: DomainKey) -> DomainCapacity:
        """Free GPU capacity of a domain (schedulable nodes only)."""
        names = self.nodes_in(domain)
        sched = [self.cluster.nodes[n] for n in names if self.cluster.nodes[n].schedulable]
        res = self.gpu_resource
        free_gpu = sum(sum(n.devices.get(res, ())) for n in sched)
        free_devices = sum(n.free_devices(res) for n in sched)
        whole = sum(1 for n in sched if n.devices.get(res) and all(d == DEVICE_MILLI for d in n.devices[res]))
        return DomainCapacity(len(names), len(sched), free_gpu, free_devices, whole)

    # --- choosing domains (Kueue TAS) ---------------------------------------------------------

    @staticmethod
    def _sorted(domains: Iterable[DomainKey | str], counts: Mapping[DomainKey | str, int]) -> list[DomainKey | str]:
        """Most room first; ties by key (Kueue's sortedDomains)."""
        return sorted(domains, key=lambda d: (-counts.get(d, 0), d if isinstance(d, tuple) else (d,)))

    @staticmethod
    def _best_fit(sorted_domains: Sequence[DomainKey | str], count: int, counts: Mapping[DomainKey | str, int]) -> DomainKey | str:
        """Among domains sorted by room (largest first), the first one with the least room that still fits ``count``."""
        best = sorted_domains[0]
        for d in sorted_domains:
            if count <= counts[d] < counts[best]:
                best = d
        return best

    def best_fit_domain(self, level: str | int, count: int, counts: Mapping[DomainKey | str, int]) -> DomainKey | None:
        """The domain at ``level`` with room for ``count`` pods and the least room (None if none has room)."""
        domains = self._sorted(self.domains_at(level), counts)
        if not domains or counts[domains[0]] < count:
            return None
        best = self._best_fit(domains, count, counts)
        return best  # type: ignore[return-value]

    def smallest_fitting(self, count: int, counts: Mapping[DomainKey | str, int], from_level: str | int | None = None) -> DomainKey | None:
        """The most compact single domain with room for ``count`` pods: the lowest level (starting at
        ``from_level``, default the lowest of the topology) that has a fitting domain, best fit there;
        the root if only the whole topology fits; None if not even that."""
        lowest = len(self.levels) - 1 if from_level is None else self.level_index(from_level)
        for depth in range(lowest, -1, -1):
            found = self.best_fit_domain(depth, count, counts)
            if found is not None:
                return found
        return ROOT if counts.get(ROOT, 0) >= count else None

    def _take(self, candidates: list[DomainKey | str], count: int, counts: Mapping[DomainKey | str, int]) -> list[tuple[DomainKey | str, int]] | None:
        """Kueue's updateCountsToMinimum: largest first, and the domain that completes the count best-fit."""
        ordered = self._sorted(candidates, counts)
        result: list[tuple[DomainKey | str, int]] = []
        remaining = count
        for i, d in enumerate(ordered):
            if counts[d] >= remaining:
                result.append((self._best_fit(ordered[i:], remaining, counts), remaining))
                return result
            if counts[d] <= 0:
                break
            result.append((d, counts[d]))
            remaining -= counts[d]
        return None

    def assign(
        self,
        count: int,
        level: str | int,
        required: bool,
        pod: PodRequest,
        constraints: PodSetInfo | NodeConstraints | None = None,
        flavor: ResourceFlavor | None = None,
        counts: Mapping[DomainKey | str, int] | None = None,
    ) -> TopologyAssignmentResult:
        """Kueue TAS placement of ``count`` pods at ``level`` (required or preferred), down to nodes.

        Returns counts per lowest-level domain and per node, or a `reason` explaining the
        binding constraint.
        """
        if counts is None:
            counts = self.fit_counts(pod, constraints, flavor)
        depth = self.level_index(level)
        if count <= 0:
            return TopologyAssignmentResult(self.levels)
        chosen: list[tuple[DomainKey | str, int]] | None = None
        best = self.best_fit_domain(depth, count, counts)
        if best is not None:
            chosen = [(best, count)]
        elif required:
            return TopologyAssignmentResult(self.levels, reason=self.explain_no_fit(depth, count, pod, counts))
        else:
            for up in range(depth - 1, -1, -1):
                found = self.best_fit_domain(up, count, counts)
                if found is not None:
                    chosen, depth = [(found, count)], up
                    break
            else:
                depth = 0
                chosen = self._take(self.domains_at(0), count, counts)  # type: ignore[arg-type]
                if chosen is None:
                    total = counts.get(ROOT, 0)
                    return TopologyAssignmentResult(
                        self.levels,
                        reason=f"topology {self.name} has room for only {total} of {count} pods of {describe_pod(pod, self.gpu_resource)}",
                    )
        # descend level by level, pooling the children of the chosen domains (as Kueue does)
        while depth < len(self.levels) - 1:
            pool = [c for d, _ in chosen for c in self.graph.successors(d)]
            taken = self._take(pool, count, counts)
            assert taken is not None, "children of fitting domains must fit"
            chosen, depth = taken, depth + 1
        leaves = tuple((d, n) for d, n in chosen)  # type: ignore[misc]
        per_node: list[tuple[DomainKey | str, int]] = []
        for leaf, n in chosen:  # each leaf's count over its own nodes, the same way
            taken = self._take(list(self.graph.successors(leaf)), n, counts)
            assert taken is not None
            per_node.extend(taken)
        return TopologyAssignmentResult(
            self.levels,
            domains=tuple(sorted(leaves)),  # type: ignore[arg-type]
            nodes=tuple((str(n), c) for n, c in per_node),
        )

    # --- explanations -------------------------------------------------------------------------

    def explain_no_fit(self, level: str | int, count: int, pod: PodRequest, counts: Mapping[DomainKey | str, int]) -> str:
        """Why no domain at ``level`` takes ``count`` pods, naming the largest free block.

        E.g. ``no rack has 4 nodes with 8 free GPUs; largest free block is 3 nodes in rack r07``.
        """
        depth = self.level_index(level)
        word = level_name(self.levels[depth])
        domains = self._sorted(self.domains_at(depth), counts)
        if not domains:
            return f"topology {self.name} has no {word} (no node carries label {self.levels[depth]})"
        top = domains[0]
        room = counts.get(top, 0)
        where = f"{word} {top[-1]}"  # type: ignore[index]
        node_pods = self._one_pod_per_node(top, pod, counts)
        shape = device_shape(pod.get(self.gpu_resource))
        if node_pods and shape is not None and shape[1] == DEVICE_MILLI:
            gpus = shape[0]
            noun = "GPU" if gpus == 1 else "GPUs"
            head = f"no {word} has {count} node{'s' if count != 1 else ''} with {gpus} free {noun}"
            tail = f"largest free block is {room} node{'s' if room != 1 else ''} in {where}" if room else f"no {word} has any"
            return f"{head}; {tail}"
        head = f"no {word} has room for {count} pods of {describe_pod(pod, self.gpu_resource)}"
        tail = f"largest free block fits {room} in {where}" if room else f"no {word} fits any"
        return f"{head}; {tail}"

    def _one_pod_per_node(self, domain: DomainKey | str, pod: PodRequest, counts: Mapping[DomainKey | str, int]) -> bool:
        """True when pods of this shape take a node each (each node fits at most one)."""
        names = self.nodes_in(domain) if isinstance(domain, tuple) else [domain]
        return all(counts.get(n, 0) <= 1 for n in names) and pod.get(self.gpu_resource) > 0


def describe_pod(pod: PodRequest, gpu_resource: str = GPU_RESOURCE) -> str:
    """``8 GPUs, cpu 32, memory 256Gi`` for messages."""
    from quotas.units import format_amount

    parts = []
    gpu = pod.get(gpu_resource)
    if gpu:
        shape = device_shape(gpu)
        if shape is not None and shape[1] < DEVICE_MILLI:
            parts.append(f"{gpu}m of one GPU")
        else:
            parts.append(f"{format_amount(gpu)} GPU{'s' if gpu != DEVICE_MILLI else ''}")
    for name, amount in pod.items:
        if name != gpu_resource:
            parts.append(f"{name} {format_amount(amount, name)}")
    return ", ".join(parts) or "no resources"

"""ResourceFlavors as node sets, and whether a podset may use a flavor or a node.

Two different questions with two different answers, as in Kueue + kube-scheduler:

* `podset_fits_flavor` is Kueue's flavor check at admission: it sees only the flavor
  (its ``nodeLabels``, ``nodeTaints`` and ``tolerations``), never the nodes. The podset's
  nodeSelector and required affinity must not contradict the flavor's labels (only keys the
  flavors define are compared, as Kueue restricts the selector to the resource group's label
  keys), and its tolerations plus the flavor's own tolerations (which Kueue adds to admitted
  pods) must tolerate the flavor's taints.
* `node_feasible` is kube-scheduler's filter for one pod on one node after admission: the
  node's labels against nodeSelector + affinity (with the admitted flavor's nodeLabels
  injected, as Kueue does), the node's real taints against the pod's tolerations (+ the
  flavor's), and the NodeUnschedulable rule.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from quotas.api import ResourceFlavor
from quotas.kube import Taint, Toleration
from scheduler.affinity import NodeConstraints, NodeSelectorTerm
from scheduler.cluster import Cluster, NodeInfo
from scheduler.workload import PodSetInfo

__all__ = [
    "NOT_READY_TAINT",
    "UNSCHEDULABLE_TAINT",
    "admitted_constraints",
    "feasible_nodes",
    "flavor_nodes",
    "format_taint",
    "node_feasible",
    "node_in_flavor",
    "node_infeasible_reason",
    "podset_fits_flavor",
]

UNSCHEDULABLE_TAINT = Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")
NOT_READY_TAINT = Taint(key="node.kubernetes.io/not-ready", effect="NoSchedule")


def format_taint(taint: Taint) -> str:
    """``key=value:Effect`` as kubectl prints it."""
    value = f"={taint.value}" if taint.value else ""
    return f"{taint.key}{value}:{taint.effect}"


def node_in_flavor(node: NodeInfo, flavor: ResourceFlavor) -> bool:
    """A node belongs to a flavor when it carries every one of the flavor's nodeLabels."""
    labels = node.labels
    return all(labels.get(k) == v for k, v in flavor.spec.node_labels.items())


def flavor_nodes(cluster: Cluster, flavor: ResourceFlavor) -> list[str]:
    """Names of the nodes of a flavor, in cluster order (cordoned ones included: they still belong)."""
    key = ("flavor_nodes", flavor.name, tuple(sorted(flavor.spec.node_labels.items())))
    cached = cluster.shared.get(key)
    if cached is None:
        cached = cluster.shared[key] = [n.name for n in cluster if node_in_flavor(n, flavor)]
    return list(cached)


def podset_fits_flavor(
    podset: PodSetInfo | NodeConstraints, flavor: ResourceFlavor, label_keys: Collection[str] | None = None
) -> str | None:
    """None if a podset may use ``flavor``, else the reason (Kueue's flavorassigner wording).

    ``label_keys`` are the label keys compared against the flavor: Kueue uses the union of
    the nodeLabels keys of all flavors in the podset's resource group; by default the
    flavor's own keys. Selector entries on other keys are left to kube-scheduler.
    """
    constraints = podset.constraints if isinstance(podset, PodSetInfo) else podset
    spec = flavor.spec
    tolerations = list(constraints.tolerations) + list(spec.tolerations)
    for taint in spec.node_taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not any(t.tolerates(taint) for t in tolerations):
            return f"untolerated taint {format_taint(taint)} in flavor {flavor.name}"
    keys = set(spec.node_labels) if label_keys is None else set(label_keys)
    labels = spec.node_labels
    for key, value in constraints.node_selector:
        if key in keys and labels.get(key) != value:
            return f"flavor {flavor.name} doesn't match node affinity: nodeSelector {key}={value}"
    terms = constraints.required_terms
    if terms is not None:
        restricted: list[NodeSelectorTerm] = []
        for term in terms:
            cut = term.restricted_to(keys)
            if not cut.match_expressions:
                # an ORed term with no relevant key matches any flavor: only nodeSelector decides
                restricted = []
                break
            restricted.append(cut)
        else:
            if not any(term.matches(labels) for term in restricted):
                text = " or ".join("; ".join(r.describe() for r in t.match_expressions) for t in restricted)
                return f"flavor {flavor.name} doesn't match node affinity: {text or 'no nodeSelectorTerms'}"
    return None


def admitted_constraints(constraints: NodeConstraints, flavor: ResourceFlavor | None) -> NodeConstraints:
    """A pod's constraints after Kueue admitted it in ``flavor``: nodeLabels injected, flavor tolerations added."""
    if flavor is None:
        return constraints
    return constraints.with_selector(flavor.spec.node_labels).with_tolerations(flavor.spec.tolerations)


def _tolerates(tolerations: Iterable[Toleration], taint: Taint) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


def node_infeasible_reason(
    podset: PodSetInfo | NodeConstraints, node: NodeInfo, flavor: ResourceFlavor | None = None
) -> str | None:
    """Why kube-scheduler's filters (apart from resources) reject this node for the podset's pods, or None."""
    constraints = admitted_constraints(podset.constraints if isinstance(podset, PodSetInfo) else podset, flavor)
    if node.unschedulable and not _tolerates(constraints.tolerations, UNSCHEDULABLE_TAINT):
        return "node(s) were unschedulable"
    if not node.ready and not _tolerates(constraints.tolerations, NOT_READY_TAINT):
        return "node(s) were not ready"
    if not constraints.matches_labels(node.labels, node.name):
        return "node(s) didn't match Pod's node affinity/selector"
    taint = constraints.untolerated(node.taints)
    if taint is not None:
        return f"node(s) had untolerated taint {{{format_taint(taint)}}}"
    return None


def node_feasible(podset: PodSetInfo | NodeConstraints, node: NodeInfo, flavor: ResourceFlavor | None = None) -> bool:
    """Whether the podset's pods may run on ``node`` by selector, affinity, taints and schedulability."""
    return node_infeasible_reason(podset, node, flavor) is None


def feasible_nodes(
    cluster: Cluster,
    podset: PodSetInfo | NodeConstraints,
    flavor: ResourceFlavor | None = None,
    nodes: Iterable[str] | None = None,
) -> list[str]:
    """Names of the nodes (of ``nodes``, default all) that pass `node_feasible`, cached on the cluster."""
    constraints = podset.constraints if isinstance(podset, PodSetInfo) else podset
    flavor_key = None if flavor is None else (flavor.name, repr(flavor.spec))
    key = ("feasible", constraints, flavor_key)
    cached: set[str] | None = cluster.shared.get(key)
    if cached is None:
        admitted = admitted_constraints(constraints, flavor)
        cached = cluster.shared[key] = {n.name for n in cluster if node_infeasible_reason(admitted, n) is None}
    if nodes is None:
        return [n for n in cluster.nodes if n in cached]
    return [n for n in nodes if n in cached]


def reasons_by_count(reasons: Mapping[str, int]) -> str:
    """``0/5 nodes are available: 3 Insufficient nvidia.com/gpu, 2 node(s) were unschedulable`` tail."""
    return ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))

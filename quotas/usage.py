"""Usage (quota reservations) per node of the cohort tree, with admit and release as pure transitions.

Kueue rule followed (pkg/cache resource_node.go, addUsage/removeUsage): a ClusterQueue's
usage is what its admitted workloads reserved. Usage climbs to the parent only above
the node's *guaranteed* quota (the part its lending limit keeps home): admitting
``v`` first fills the node's unused guaranteed quota and passes the rest up, and the
same holds at every cohort on the way to the root. Hence a Cohort's usage is always
``sum(max(0, usage(child) - guaranteed(child)))`` over its children, and release is
the exact inverse of admit.

A :class:`Usage` is immutable. ``admit``/``release`` copy only the per-node dicts on
the path from the ClusterQueue to its root and share everything else, so the
scheduler and the simulator can try what-ifs by keeping the old snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from quotas.units import FlavorResource

if TYPE_CHECKING:
    from quotas.tree import Node, NodeRef, QuotaTree

__all__ = ["Usage"]

_EMPTY: Mapping[FlavorResource, int] = MappingProxyType({})


class Usage:
    """Usage of every node of one :class:`~quotas.tree.QuotaTree`, in milli-units per FlavorResource.

    The mapping for a ClusterQueue is what it has admitted; for a Cohort it is the usage
    counted against the cohort's subtree quota (its children's usage above their
    guaranteed quota). Entries that drop to zero are removed.
    """

    __slots__ = ("tree", "_by_node")

    def __init__(self, tree: QuotaTree, by_node: tuple[Mapping[FlavorResource, int], ...]) -> None:
        self.tree = tree
        self._by_node = by_node

    @property
    def by_node(self) -> tuple[Mapping[FlavorResource, int], ...]:
        """The usage of every node by node id (read only: hot quota arithmetic indexes it directly)."""
        return self._by_node

    @classmethod
    def empty(cls, tree: QuotaTree) -> Usage:
        return cls(tree, tuple(_EMPTY for _ in tree.nodes))

    @classmethod
    def of_admitted(cls, tree: QuotaTree, admitted: Iterable[tuple[str, Mapping[FlavorResource, int]]]) -> Usage:
        """Usage after admitting each ``(cluster queue, amounts)`` pair, without any fit check."""
        usage = cls.empty(tree)
        for cq, amounts in admitted:
            usage = usage.admit(cq, amounts)
        return usage

    # --- reading ----------------------------------------------------------------------------------

    def node(self, ref: NodeRef | int) -> Mapping[FlavorResource, int]:
        """The usage counted at a node (read-only view; do not mutate)."""
        idx = ref if isinstance(ref, int) else self.tree.node(ref).id
        return self._by_node[idx]

    def of(self, cluster_queue: str) -> Mapping[FlavorResource, int]:
        """What ClusterQueue ``cluster_queue`` has admitted."""
        return self._by_node[self.tree.cluster_queue(cluster_queue).id]

    def get(self, ref: NodeRef | int, fr: FlavorResource) -> int:
        return self.node(ref).get(fr, 0)

    def borrowed(self, ref: NodeRef | int, fr: FlavorResource) -> int:
        """How much of ``fr`` the node uses above its (subtree) quota, i.e. borrows from its parent."""
        node = self.tree.node(ref)
        return max(0, self._by_node[node.id].get(fr, 0) - node.subtree_quota.get(fr, 0))

    def borrowing(self, ref: NodeRef | int, frs: Iterable[FlavorResource] | None = None) -> bool:
        """Whether the node borrows any of ``frs`` (default: any FlavorResource it uses)."""
        node = self.tree.node(ref)
        if node.parent is None:
            return False
        u = self._by_node[node.id]
        keys = u.keys() if frs is None else frs
        return any(u.get(fr, 0) > node.subtree_quota.get(fr, 0) for fr in keys)

    def subtree_total(self, ref: NodeRef | int) -> dict[FlavorResource, int]:
        """Everything the ClusterQueues below the node have admitted, summed (for reports and
        metrics; admission decisions use :meth:`node`, which discounts guaranteed quota)."""
        total: dict[FlavorResource, int] = {}
        for cq in self.tree.subtree_cluster_queues(ref):
            for fr, v in self._by_node[cq.id].items():
                total[fr] = total.get(fr, 0) + v
        return total

    def items(self) -> Iterator[tuple[Node, Mapping[FlavorResource, int]]]:
        """Every node with non-zero usage."""
        for node, u in zip(self.tree.nodes, self._by_node):
            if u:
                yield node, u

    @property
    def is_empty(self) -> bool:
        return not any(self._by_node)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Usage):
            return NotImplemented
        return self.tree is other.tree and all(a == b for a, b in zip(self._by_node, other._by_node))

    def __hash__(self) -> int:  # snapshots are values, but large; identity hash is enough
        return id(self)

    def __repr__(self) -> str:
        parts = [f"{n.kind}/{n.name}: {dict(u)}" for n, u in self.items()]
        return f"Usage({'; '.join(parts)})"

    # --- transitions ------------------------------------------------------------------------------

    def admit(self, cluster_queue: NodeRef, amounts: Mapping[FlavorResource, int]) -> Usage:
        """The usage after ClusterQueue ``cluster_queue`` reserves ``amounts`` (no fit check:
        ask :meth:`QuotaTree.fits` first; Kueue also accounts overadmission this way)."""
        path, new, copied = self._start(cluster_queue)
        for fr, val in amounts.items():
            if val < 0:
                raise ValueError(f"negative amount {val} for {fr}")
            for n in path:  # what the node's guarantee cannot hold moves up
                if val <= 0:
                    break
                i = n.id
                cur = new[i]
                if i not in copied:
                    cur = new[i] = dict(cur)
                    copied.add(i)
                used = cur.get(fr, 0)
                local = n.guaranteed.get(fr, 0) - used
                cur[fr] = used + val
                val = 0 if val <= local else val - max(0, local)
        return Usage(self.tree, tuple(new))

    def release(self, cluster_queue: NodeRef, amounts: Mapping[FlavorResource, int]) -> Usage:
        """The usage after ClusterQueue ``cluster_queue`` frees ``amounts`` (the inverse of :meth:`admit`)."""
        path, new, copied = self._start(cluster_queue)
        for fr, val in amounts.items():
            if val < 0:
                raise ValueError(f"negative amount {val} for {fr}")
            for n in path:  # what the node stored in its parent comes back down
                if val <= 0:
                    break
                i = n.id
                cur = new[i]
                if i not in copied:
                    cur = new[i] = dict(cur)
                    copied.add(i)
                used = cur.get(fr, 0)
                if used < val:
                    raise ValueError(f"{n!r} releases {val} of {fr} but uses only {used}")
                stored_in_parent = used - n.guaranteed.get(fr, 0)
                if used == val:
                    del cur[fr]
                else:
                    cur[fr] = used - val
                val = 0 if stored_in_parent <= 0 else min(val, stored_in_parent)
        return Usage(self.tree, tuple(new))

    def _start(self, cluster_queue: NodeRef) -> tuple[tuple[Node, ...], list[Mapping[FlavorResource, int]], set[int]]:
        """(the ClusterQueue's path to the root, the per-node mappings to change, ids copied so
        far): a transition copies only the nodes it changes and shares everything else."""
        node = self.tree.node(cluster_queue)
        if not node.is_cluster_queue:
            raise ValueError(f"{node!r} is not a ClusterQueue")
        return self.tree.path_to_root(node), list(self._by_node), set()

    def admit_many(self, admitted: Iterable[tuple[str, Mapping[FlavorResource, int]]]) -> Usage:
        usage = self
        for cq, amounts in admitted:
            usage = usage.admit(cq, amounts)
        return usage

    def release_many(self, released: Iterable[tuple[str, Mapping[FlavorResource, int]]]) -> Usage:
        usage = self
        for cq, amounts in released:
            usage = usage.release(cq, amounts)
        return usage

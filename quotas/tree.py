"""The cohort tree: who may use whose quota, per flavor and resource (Kueue's resource nodes).

Kueue rules followed here (pkg/cache resource_node.go and the ClusterQueue/Cohort concept pages):

* ClusterQueues are leaves; Cohorts are inner nodes (``spec.parentName``) and may hold
  quota of their own, which is *additional* to their children's. A ``spec.cohort`` that
  names no Cohort object is an implicit cohort: a root with no quota of its own.
* Per node and FlavorResource: ``nominalQuota``, optional ``borrowingLimit`` (how much
  the node may take from its parent beyond what its subtree provides) and optional
  ``lendingLimit`` (how much of its subtree quota its parent may hand to others). The
  part above the lending limit is *guaranteed*: ``max(0, subtreeQuota - lendingLimit)``
  stays usable only inside the node.
* ``subtreeQuota(node) = own nominal + sum(subtreeQuota(child) - guaranteed(child))``:
  what the node offers upward. A node's *usage* (see :mod:`quotas.usage`) is, for a
  ClusterQueue, its admitted usage; for a Cohort, the sum of its children's usage above
  their guaranteed parts.
* ``available(node)`` is computed recursively up to the root: the node's unused
  guaranteed quota plus what its parent has available, capped by the borrowing limit
  (``subtreeQuota - guaranteed - usedInParent + borrowingLimit``); at the root it is
  ``subtreeQuota - usage``. ``potentialAvailable`` is the same with no usage at all:
  the largest request that could ever fit.
* A request fits if it is at most ``available``; it borrows if the ClusterQueue's usage
  with it exceeds its nominal quota; the borrowing *level* is Kueue's height of the
  lowest cohort subtree whose quota covers the request (1 for a flat cohort).

Everything is pure: a :class:`QuotaTree` is immutable, usage is passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from quotas.api import ClusterQueue, Cohort, ResourceGroup
from quotas.units import FlavorResource, format_amount, milli

if TYPE_CHECKING:
    from quotas.usage import Usage

__all__ = [
    "FitMode",
    "FitResult",
    "Headroom",
    "Node",
    "NodeKind",
    "NodeRef",
    "Quota",
    "QuotaTree",
    "ResourceFit",
]

NodeKind = Literal["ClusterQueue", "Cohort"]


@dataclass(frozen=True, slots=True)
class Quota:
    """One node's quota for one FlavorResource, in milli-units (None = no limit)."""

    nominal: int
    borrowing_limit: int | None = None
    lending_limit: int | None = None


@dataclass(frozen=True, eq=False)
class Node:
    """A ClusterQueue or Cohort of the tree. Mappings are read-only by convention.

    ``children`` lists child Cohorts then child ClusterQueues, each sorted by name,
    so every traversal (tournament, preemption ordering) is deterministic.
    """

    id: int
    name: str
    kind: NodeKind
    parent: int | None
    children: tuple[int, ...]
    quotas: Mapping[FlavorResource, Quota]
    subtree_quota: Mapping[FlavorResource, int]
    guaranteed: Mapping[FlavorResource, int]
    weight: Decimal
    depth: int
    height: int
    implicit: bool = False
    cluster_queue: ClusterQueue | None = field(default=None, repr=False)
    resource_groups: tuple[ResourceGroup, ...] = field(default=(), repr=False)

    @property
    def is_cluster_queue(self) -> bool:
        return self.kind == "ClusterQueue"

    @property
    def has_parent(self) -> bool:
        return self.parent is not None

    def nominal(self, fr: FlavorResource) -> int:
        quota = self.quotas.get(fr)
        return quota.nominal if quota else 0

    def __repr__(self) -> str:
        return f"Node({self.kind}/{self.name})"


NodeRef = Node | str
"""A node, or a ClusterQueue by name (cohorts are looked up with :meth:`QuotaTree.cohort`)."""


class FitMode(enum.IntEnum):
    """How a request fits a ClusterQueue now, from best to worst (compare with ``<``)."""

    FITS_NOMINAL = 0
    """Fits in unused quota and the ClusterQueue stays within its nominal quota."""
    FITS_BORROWING = 1
    """Fits in unused quota, but only by borrowing from the cohort."""
    NEEDS_PREEMPTION = 2
    """Could fit (within every limit) once other workloads release quota."""
    NEVER_FITS = 3
    """Larger than the ClusterQueue could ever get, even with an idle cohort."""

    @property
    def fits(self) -> bool:
        return self <= FitMode.FITS_BORROWING

    def __str__(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))


@dataclass(frozen=True, slots=True)
class Headroom:
    """Free quota seen at one level of the path from a ClusterQueue to its root.

    ``available`` is what that node could still admit (borrowing included, limits
    respected); ``unused`` is its subtree quota minus the usage counted against it
    (negative when the subtree borrows from above).
    """

    node: str
    kind: NodeKind
    available: int
    unused: int


@dataclass(frozen=True)
class ResourceFit:
    """The fit of one FlavorResource of a request.

    ``headroom`` (free quota at each level up to the root) is computed on first access,
    so plain fit checks in the simulator's hot loop do not pay for it.
    """

    fr: FlavorResource
    request: int
    mode: FitMode
    available: int
    potential: int
    borrow_level: int
    borrow_from: str | None
    reason: str = ""
    _source: tuple[QuotaTree, Node, Usage] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def headroom(self) -> tuple[Headroom, ...]:
        if self._source is None:
            return ()
        tree, node, usage = self._source
        return tree.headroom(node, self.fr, usage)


@dataclass(frozen=True, slots=True)
class FitResult:
    """The fit of a whole request: the worst mode over its FlavorResources.

    ``borrow_level`` is the largest Kueue borrowing height (0 = no borrowing);
    ``borrow_from`` names the cohort at that level.
    """

    mode: FitMode
    resources: Mapping[FlavorResource, ResourceFit]
    borrow_level: int
    borrow_from: str | None

    @property
    def fits(self) -> bool:
        return self.mode.fits

    @property
    def borrows(self) -> bool:
        """Fits, but only by borrowing."""
        return self.mode == FitMode.FITS_BORROWING

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(r.reason for r in self.resources.values() if r.reason)

    @property
    def needs_preemption(self) -> frozenset[FlavorResource]:
        """The FlavorResources that only fit after preemption."""
        return frozenset(fr for fr, r in self.resources.items() if r.mode == FitMode.NEEDS_PREEMPTION)


def _quotas_of(groups: Iterable[ResourceGroup]) -> dict[FlavorResource, Quota]:
    quotas: dict[FlavorResource, Quota] = {}
    for group in groups:
        for flavor in group.flavors:
            for rq in flavor.resources:
                quotas[(flavor.name, rq.name)] = Quota(
                    nominal=milli(rq.nominal_quota),
                    borrowing_limit=None if rq.borrowing_limit is None else milli(rq.borrowing_limit),
                    lending_limit=None if rq.lending_limit is None else milli(rq.lending_limit),
                )
    return quotas


def _weight(fair_sharing: object) -> Decimal:
    weight = getattr(fair_sharing, "weight", None)
    return Decimal(1) if weight is None else Decimal(weight)


class QuotaTree:
    """The immutable forest of Cohorts and ClusterQueues with their quotas.

    Build it once per configuration (``QuotaTree(cluster_queues, cohorts)``) and share
    it: every query takes a :class:`~quotas.usage.Usage` snapshot as argument.
    """

    def __init__(self, cluster_queues: Iterable[ClusterQueue], cohorts: Iterable[Cohort] = ()) -> None:
        cqs = sorted(cluster_queues, key=lambda cq: cq.name)
        cohort_objs = {c.name: c for c in cohorts}
        cq_by_name = {cq.name: cq for cq in cqs}
        if len(cq_by_name) != len(cqs):
            raise ValueError("duplicate ClusterQueue names")

        # Cohort names: declared objects, plus implicit cohorts named by a ClusterQueue or a parentName.
        cohort_names = set(cohort_objs)
        cohort_names.update(cq.spec.cohort for cq in cqs if cq.spec.cohort)
        cohort_names.update(c.spec.parent_name for c in cohort_objs.values() if c.spec.parent_name)
        cohort_parent = {
            name: (cohort_objs[name].spec.parent_name if name in cohort_objs else None) for name in cohort_names
        }
        self._check_cycles(cohort_parent)

        # Assign ids: cohorts first (sorted), then ClusterQueues (sorted).
        order: list[tuple[NodeKind, str]] = [("Cohort", n) for n in sorted(cohort_names)]
        order += [("ClusterQueue", cq.name) for cq in cqs]
        ids = {key: i for i, key in enumerate(order)}
        parent_of: list[int | None] = []
        for kind, name in order:
            if kind == "Cohort":
                parent_name = cohort_parent[name]
                parent_of.append(None if parent_name is None else ids[("Cohort", parent_name)])
            else:
                cohort_name = cq_by_name[name].spec.cohort
                parent_of.append(None if not cohort_name else ids[("Cohort", cohort_name)])
        children: list[list[int]] = [[] for _ in order]
        for i, parent_id in enumerate(parent_of):
            if parent_id is not None:
                children[parent_id].append(i)
        for lst in children:  # cohorts before ClusterQueues, each by name (ids already sort that way)
            lst.sort()

        quotas: list[dict[FlavorResource, Quota]] = []
        groups: list[tuple[ResourceGroup, ...]] = []
        weights: list[Decimal] = []
        for kind, name in order:
            if kind == "ClusterQueue":
                spec_groups = tuple(cq_by_name[name].spec.resource_groups)
                weights.append(_weight(cq_by_name[name].spec.fair_sharing))
            elif name in cohort_objs:
                spec_groups = tuple(cohort_objs[name].spec.resource_groups)
                weights.append(_weight(cohort_objs[name].spec.fair_sharing))
            else:
                spec_groups = ()
                weights.append(Decimal(1))
            groups.append(spec_groups)
            quotas.append(_quotas_of(spec_groups))

        # Subtree quota and guaranteed quota, bottom-up (post-order from each root).
        subtree: list[dict[FlavorResource, int]] = [{} for _ in order]
        guaranteed: list[dict[FlavorResource, int]] = [{} for _ in order]
        height = [0] * len(order)

        def accumulate(i: int) -> None:
            sub = {fr: q.nominal for fr, q in quotas[i].items()}
            h = 0
            if order[i][0] == "Cohort":
                h = min(len(children[i]), 1)
            for c in children[i]:
                accumulate(c)
                for fr, q in subtree[c].items():
                    sub[fr] = sub.get(fr, 0) + q - guaranteed[c].get(fr, 0)
                if order[c][0] == "Cohort":
                    h = max(h, height[c] + 1)
            subtree[i] = sub
            height[i] = h
            guaranteed[i] = {
                fr: max(0, sub.get(fr, 0) - q.lending_limit)
                for fr, q in quotas[i].items()
                if q.lending_limit is not None and max(0, sub.get(fr, 0) - q.lending_limit) > 0
            }

        depth = [0] * len(order)
        for i, parent_id in enumerate(parent_of):
            if parent_id is None:
                accumulate(i)
        for i in range(len(order)):
            d, up = 0, parent_of[i]
            while up is not None:
                d, up = d + 1, parent_of[up]
            depth[i] = d

        self.nodes: tuple[Node, ...] = tuple(
            Node(
                id=i,
                name=name,
                kind=kind,
                parent=parent_of[i],
                children=tuple(children[i]),
                quotas=quotas[i],
                subtree_quota=subtree[i],
                guaranteed=guaranteed[i],
                weight=weights[i],
                depth=depth[i],
                height=height[i],
                implicit=kind == "Cohort" and name not in cohort_objs,
                cluster_queue=cq_by_name.get(name) if kind == "ClusterQueue" else None,
                resource_groups=groups[i],
            )
            for i, (kind, name) in enumerate(order)
        )
        self._cq_ids = {name: ids[("ClusterQueue", name)] for name in cq_by_name}
        self._cohort_ids = {name: ids[("Cohort", name)] for name in cohort_names}
        self._paths: list[tuple[Node, ...]] = []
        for node in self.nodes:
            path = [node]
            while path[-1].parent is not None:
                path.append(self.nodes[path[-1].parent])
            self._paths.append(tuple(path))
        self._potential: dict[tuple[int, FlavorResource], int] = {}
        self._lendable: dict[int, dict[str, int]] = {}

    @staticmethod
    def _check_cycles(parents: Mapping[str, str | None]) -> None:
        for start in parents:
            seen = {start}
            p = parents[start]
            while p is not None:
                if p in seen:
                    raise ValueError(f'Cohort "{start}" is on a parentName cycle')
                seen.add(p)
                p = parents.get(p)

    # --- navigation -------------------------------------------------------------------------

    def cluster_queue(self, name: str) -> Node:
        """The node of ClusterQueue ``name`` (KeyError if unknown)."""
        try:
            return self.nodes[self._cq_ids[name]]
        except KeyError:
            raise KeyError(f'unknown ClusterQueue "{name}"') from None

    def cohort(self, name: str) -> Node:
        """The node of Cohort ``name`` (explicit or implicit; KeyError if unknown)."""
        try:
            return self.nodes[self._cohort_ids[name]]
        except KeyError:
            raise KeyError(f'unknown Cohort "{name}"') from None

    def node(self, ref: NodeRef | int) -> Node:
        """Resolve a node, a node id, or a ClusterQueue name."""
        if isinstance(ref, Node):
            return ref
        if isinstance(ref, int):
            return self.nodes[ref]
        return self.cluster_queue(ref)

    def has_cluster_queue(self, name: str) -> bool:
        return name in self._cq_ids

    @property
    def cluster_queue_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._cq_ids))

    @property
    def cohort_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._cohort_ids))

    @property
    def roots(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.parent is None)

    def parent(self, ref: NodeRef | int) -> Node | None:
        node = self.node(ref)
        return None if node.parent is None else self.nodes[node.parent]

    def path_to_root(self, ref: NodeRef | int) -> tuple[Node, ...]:
        """The node itself, then its ancestors up to the root."""
        return self._paths[self.node(ref).id]

    def root(self, ref: NodeRef | int) -> Node:
        return self._paths[self.node(ref).id][-1]

    def children(self, ref: NodeRef | int) -> tuple[Node, ...]:
        return tuple(self.nodes[c] for c in self.node(ref).children)

    def subtree_cluster_queues(self, ref: NodeRef | int) -> Iterator[Node]:
        """Every ClusterQueue below (or equal to) the node, depth-first, children in order."""
        node = self.node(ref)
        if node.is_cluster_queue:
            yield node
            return
        for c in node.children:
            yield from self.subtree_cluster_queues(c)

    def is_ancestor(self, ancestor: NodeRef | int, ref: NodeRef | int) -> bool:
        a = self.node(ancestor)
        return any(n is a for n in self._paths[self.node(ref).id])

    def empty_usage(self) -> Usage:
        """A usage snapshot with nothing admitted."""
        from quotas.usage import Usage

        return Usage.empty(self)

    # --- quota arithmetic (Kueue's resource_node.go) -------------------------------------------

    def local_available(self, ref: NodeRef | int, fr: FlavorResource, usage: Usage) -> int:
        """Unused guaranteed quota: usable here, invisible to the parent."""
        node = self.node(ref)
        return max(0, node.guaranteed.get(fr, 0) - usage.node(node.id).get(fr, 0))

    def _raw_available(self, node: Node, fr: FlavorResource, usage: Usage) -> int:
        path = self._paths[node.id]
        top = path[-1]
        by_node = usage.by_node  # (`Usage.node` resolves any reference; these are ids)
        avail = top.subtree_quota.get(fr, 0) - by_node[top.id].get(fr, 0)
        for n in reversed(path[:-1]):  # from just below the root down to the node
            used = by_node[n.id].get(fr, 0)
            g = n.guaranteed.get(fr, 0)
            quota = n.quotas.get(fr)
            if quota is not None and quota.borrowing_limit is not None:
                stored_in_parent = n.subtree_quota.get(fr, 0) - g
                used_in_parent = max(0, used - g)
                avail = min(stored_in_parent - used_in_parent + quota.borrowing_limit, avail)
            avail += max(0, g - used)
        return avail

    def available(self, ref: NodeRef | int, fr: FlavorResource, usage: Usage) -> int:
        """What the node can still admit of ``fr`` now, borrowing and every limit up the tree included (>= 0)."""
        return max(0, self._raw_available(self.node(ref), fr, usage))

    def potential_available(self, ref: NodeRef | int, fr: FlavorResource) -> int:
        """The most of ``fr`` the node could ever hold (an otherwise idle tree), limits respected."""
        node = self.node(ref)
        key = (node.id, fr)
        cached = self._potential.get(key)
        if cached is not None:
            return cached
        if node.parent is None:
            value = node.subtree_quota.get(fr, 0)
        else:
            value = node.guaranteed.get(fr, 0) + self.potential_available(node.parent, fr)
            quota = node.quotas.get(fr)
            if quota is not None and quota.borrowing_limit is not None:
                value = min(node.subtree_quota.get(fr, 0) + quota.borrowing_limit, value)
        self._potential[key] = value
        return value

    def borrowing_with(self, ref: NodeRef | int, fr: FlavorResource, amount: int, usage: Usage) -> bool:
        """Whether the node's usage plus ``amount`` would exceed its (subtree) quota."""
        node = self.node(ref)
        return usage.node(node.id).get(fr, 0) + amount > node.subtree_quota.get(fr, 0)

    def within_nominal(self, ref: NodeRef | int, frs: Iterable[FlavorResource], usage: Usage) -> bool:
        """Whether the node uses no more than its (subtree) quota in every one of ``frs``."""
        node = self.node(ref)
        u = usage.node(node.id)
        return all(u.get(fr, 0) <= node.subtree_quota.get(fr, 0) for fr in frs)

    def fits_in_quota(
        self, ref: NodeRef | int, requests: Mapping[FlavorResource, int], usage: Usage
    ) -> tuple[bool, dict[FlavorResource, int]]:
        """Kueue's QuantitiesFitInQuota: do the requests fit this node's subtree quota, and what
        remains of them for the parent after this node's unused guaranteed quota."""
        node = self.node(ref)
        u = usage.node(node.id)
        fits = True
        remaining: dict[FlavorResource, int] = {}
        for fr, v in requests.items():
            if u.get(fr, 0) + v > node.subtree_quota.get(fr, 0):
                fits = False
            remaining[fr] = max(0, v - max(0, node.guaranteed.get(fr, 0) - u.get(fr, 0)))
        return fits, remaining

    def lowest_fitting_subtree(
        self, ref: NodeRef | int, fr: FlavorResource, amount: int, usage: Usage
    ) -> tuple[int, bool, Node | None]:
        """Kueue's FindHeightOfLowestSubtreeThatFits.

        Returns ``(height, smaller_than_tree, node)``: the height of the lowest subtree
        (the ClusterQueue itself = 0) whose quota covers ``amount`` more of ``fr``, whether
        that subtree is smaller than the whole tree (so reclaiming inside it is possible),
        and its node (None when the ClusterQueue itself suffices).
        """
        node = self.node(ref)
        if not self.borrowing_with(node, fr, amount, usage) or node.parent is None:
            return 0, node.parent is not None, None
        remaining = amount - self.local_available(node, fr, usage)
        for anc in self._paths[node.id][1:]:
            if not self.borrowing_with(anc, fr, remaining, usage):
                return anc.height, anc.parent is not None, anc
            remaining -= self.local_available(anc, fr, usage)
        top = self._paths[node.id][-1]
        return top.height, False, top

    def lendable(self, ref: NodeRef | int) -> Mapping[str, int]:
        """What a cohort can lend to its children, per resource name (summed over flavors):
        ``potentialAvailable`` of the cohort for every FlavorResource of its tree. The
        denominator of the dominant resource share of the cohort's children."""
        node = self.node(ref)
        cached = self._lendable.get(node.id)
        if cached is None:
            cached = {}
            for fr in self.root(node).subtree_quota:
                cached[fr[1]] = cached.get(fr[1], 0) + self.potential_available(node, fr)
            self._lendable[node.id] = cached
        return cached

    # --- fit of a request -----------------------------------------------------------------------

    def headroom(self, ref: NodeRef | int, fr: FlavorResource, usage: Usage) -> tuple[Headroom, ...]:
        """Free quota of ``fr`` at each level from the node up to its root."""
        return tuple(
            Headroom(
                node=n.name,
                kind=n.kind,
                available=self.available(n, fr, usage),
                unused=n.subtree_quota.get(fr, 0) - usage.node(n.id).get(fr, 0),
            )
            for n in self._paths[self.node(ref).id]
        )

    def fit_resource(self, cq: NodeRef, fr: FlavorResource, amount: int, usage: Usage) -> ResourceFit:
        """How ``amount`` more of ``fr`` fits ClusterQueue ``cq`` (see :meth:`fits`)."""
        node = self.node(cq)
        flavor, resource = fr
        if fr not in node.quotas:
            return ResourceFit(
                fr, amount, FitMode.NEVER_FITS, 0, 0, 0, None,
                f'resource {resource} unavailable in flavor {flavor} of ClusterQueue "{node.name}"', (self, node, usage),
            )
        potential = self.potential_available(node, fr)
        avail = self.available(node, fr, usage)
        level, _, at = self.lowest_fitting_subtree(node, fr, amount, usage)
        borrow_from = at.name if at is not None else None
        reason = ""
        if amount > potential:
            mode = FitMode.NEVER_FITS
            reason = (
                f"insufficient quota for {resource} in flavor {flavor}, request ({format_amount(amount, resource)})"
                f" > maximum capacity ({format_amount(potential, resource)})"
            )
        elif amount <= avail:
            mode = FitMode.FITS_BORROWING if self.borrowing_with(node, fr, amount, usage) else FitMode.FITS_NOMINAL
        else:
            mode = FitMode.NEEDS_PREEMPTION
            reason = (
                f"insufficient unused quota for {resource} in flavor {flavor}, "
                f"{format_amount(amount - avail, resource)} more needed"
            )
        return ResourceFit(fr, amount, mode, avail, potential, level, borrow_from, reason, (self, node, usage))

    def admissible(self, cq: NodeRef, request: Mapping[FlavorResource, int], usage: Usage) -> bool:
        """Whether :meth:`fits` would say ``request`` fits, without building its per-resource
        explanations (a scheduler that checks every proposal of a cycle asks this)."""
        node = self.node(cq)
        for fr, v in request.items():
            if v > 0 and (fr not in node.quotas or v > self.potential_available(node, fr) or v > self.available(node, fr, usage)):
                return False
        return True

    def fits(self, cq: NodeRef, request: Mapping[FlavorResource, int], usage: Usage) -> FitResult:
        """Whether ``request`` (milli-units per FlavorResource) fits ClusterQueue ``cq`` now.

        Per FlavorResource: never-fits if above ``potentialAvailable``; fits if within
        ``available`` (in nominal quota, or by borrowing); otherwise needs preemption.
        Zero amounts are ignored, as Kueue ignores zero requests.
        """
        node = self.node(cq)
        if not node.is_cluster_queue:
            raise ValueError(f"{node!r} is not a ClusterQueue")
        results = {fr: self.fit_resource(node, fr, v, usage) for fr, v in request.items() if v > 0}
        mode = max((r.mode for r in results.values()), default=FitMode.FITS_NOMINAL)
        top = max(results.values(), key=lambda r: r.borrow_level, default=None)
        level = top.borrow_level if top is not None else 0
        return FitResult(mode, results, level, top.borrow_from if top is not None and level > 0 else None)

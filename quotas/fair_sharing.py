"""Fair sharing (``Configuration.fairSharing``): dominant resource share, tournament, preemption strategies.

Kueue rules followed (pkg/cache fair_sharing.go, pkg/scheduler fair_sharing_iterator.go,
pkg/scheduler/preemption/fairsharing, KEP-1714):

* **Dominant resource share (DRS)** of a node with a parent: for every FlavorResource of
  its subtree quota, what it uses above that quota is what it borrows; borrowing is summed
  per resource name over flavors. Each resource's borrowing times 1000, divided by what
  the parent can lend of that resource (the parent's ``potentialAvailable`` summed over
  the flavors of the tree), gives a per-mille ratio; the DRS is the largest ratio (ties go
  to the alphabetically first resource) divided by the node's ``fairSharing.weight``
  (default 1). A node that borrows nothing, or has no parent, has share 0. Weight 0 means
  an infinite share as soon as the node borrows anything: it borrows last and is
  preempted first (among such nodes the unweighted ratio decides).
* **Tournament** (admission order): from the root cohort down, each cohort compares the
  candidates nominated by its children by the DRS the *child* would have after admitting
  its candidate; the lowest wins, then the higher priority, then the earlier queue time.
  One winner bubbles up to the root; it is admitted (or not) and the tournament reruns.
* **Preemption strategies**, comparing the shares of the AlmostLCAs of the preempting and
  target ClusterQueues (the children of their lowest common ancestor on each side):
  ``LessThanOrEqualToFinalShare`` preempts a workload if the preemptor side's share with
  the new workload is <= the target side's share without the preempted workload;
  ``LessThanInitialShare`` if it is < the target side's share as it is now.
* **Target ordering** for fair preemption: walk from the root, at each cohort step into
  the child (cohort or ClusterQueue) with the highest DRS (a cohort wins ties), skipping
  children that borrow nothing (except the preemptor's own ClusterQueue and cohorts on its
  path) or have no candidates left.

Shares are exact fractions, so "equal shares" in tests and reports mean equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Generic, TypeVar

from quotas.tree import Node, NodeRef, QuotaTree
from quotas.units import FlavorResource
from quotas.usage import Usage

__all__ = [
    "DEFAULT_STRATEGIES",
    "DominantResourceShare",
    "Strategy",
    "TargetQueueOrdering",
    "TournamentEntry",
    "almost_lcas",
    "dominant_resource_share",
    "fair_sharing_order",
    "less_than_initial_share",
    "less_than_or_equal_to_final_share",
    "parse_strategies",
    "tournament_winner",
]


@dataclass(frozen=True, eq=False, slots=True)
class DominantResourceShare:
    """A node's DRS. Compare with ``<``/``==``: lower is preferred for admission,
    higher for preemption (Kueue's CompareDRS)."""

    ratio: Fraction
    """Unweighted: per-mille of the parent's lendable quota, for the dominant resource."""
    weight: Fraction
    resource: str = ""
    borrowing: bool = False
    borrowed: frozenset[FlavorResource] = frozenset()

    @property
    def zero_weight_borrows(self) -> bool:
        return self.weight == 0 and self.borrowing

    @property
    def is_zero(self) -> bool:
        """Weighted share 0 (a node may borrow a resource its parent lends none of and still be zero)."""
        return not self.zero_weight_borrows and self.ratio == 0

    @property
    def value(self) -> float:
        """The weighted share as a number (``inf`` for a borrowing weight-0 node)."""
        if self.zero_weight_borrows:
            return math.inf
        if self.ratio == 0:
            return 0.0
        return float(self.ratio / self.weight)

    @property
    def rounded(self) -> int:
        """Kueue's reported ``weightedShare``: the share rounded up (2**63-1 for infinity)."""
        if self.zero_weight_borrows:
            return 2**63 - 1
        if self.ratio == 0:
            return 0
        return math.ceil(self.ratio / self.weight)

    def _key(self) -> tuple[int, Fraction]:
        if self.zero_weight_borrows:
            return (1, self.ratio)
        return (0, Fraction(0) if self.ratio == 0 else self.ratio / self.weight)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DominantResourceShare):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: DominantResourceShare) -> bool:
        return self._key() < other._key()

    def __le__(self, other: DominantResourceShare) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: DominantResourceShare) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: DominantResourceShare) -> bool:
        return self._key() >= other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"DRS({self.value:g}, {self.resource or '-'})"


def dominant_resource_share(tree: QuotaTree, usage: Usage, ref: NodeRef | int) -> DominantResourceShare:
    """The DRS of a ClusterQueue or Cohort under ``usage`` (see the module docstring)."""
    node = tree.node(ref)
    weight = Fraction(node.weight)
    if node.parent is None:
        return DominantResourceShare(Fraction(0), weight)
    used = usage.node(node.id)
    borrowing: dict[str, int] = {}
    borrowed: list[FlavorResource] = []
    for fr, quota in node.subtree_quota.items():
        amount = used.get(fr, 0) - quota
        if amount > 0:
            borrowing[fr[1]] = borrowing.get(fr[1], 0) + amount
            borrowed.append(fr)
    if not borrowing:
        return DominantResourceShare(Fraction(0), weight)
    lendable = tree.lendable(node.parent)
    best, dominant = Fraction(0), ""
    for resource in sorted(borrowing):
        lend = lendable.get(resource, 0)
        if lend > 0:
            ratio = Fraction(borrowing[resource] * 1000, lend)
            if ratio > best:
                best, dominant = ratio, resource
    return DominantResourceShare(best, weight, dominant, True, frozenset(borrowed))


# --- tournament (admission ordering) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TournamentEntry:
    """The head workload a ClusterQueue nominates this round, with the quota it would use."""

    key: str
    cluster_queue: str
    usage: Mapping[FlavorResource, int]
    priority: int = 0
    timestamp: float = 0.0
    payload: object = field(default=None, compare=False)


def _entry_shares(
    tree: QuotaTree, usage: Usage, entries: Mapping[str, TournamentEntry]
) -> dict[tuple[int, str], DominantResourceShare]:
    """DRS of each child on a candidate's path with the candidate admitted, keyed by (parent id, entry key)."""
    shares: dict[tuple[int, str], DominantResourceShare] = {}
    for entry in entries.values():
        cq = tree.cluster_queue(entry.cluster_queue)
        if cq.parent is None:
            continue
        simulated = usage.admit(cq, entry.usage)
        path = tree.path_to_root(cq)
        for child, parent in zip(path, path[1:]):
            shares[(parent.id, entry.key)] = dominant_resource_share(tree, simulated, child)
    return shares


def _better(
    a: TournamentEntry, b: TournamentEntry, level: int, shares: Mapping[tuple[int, str], DominantResourceShare]
) -> bool:
    """Whether ``a`` beats ``b`` at cohort ``level``: lower DRS, then higher priority, then earlier."""
    da, db = shares[(level, a.key)], shares[(level, b.key)]
    if da != db:
        return da < db
    if a.priority != b.priority:
        return a.priority > b.priority
    return a.timestamp < b.timestamp


def _run_tournament(
    tree: QuotaTree,
    cohort: Node,
    by_cq: Mapping[str, TournamentEntry],
    shares: Mapping[tuple[int, str], DominantResourceShare],
) -> TournamentEntry | None:
    candidates: list[TournamentEntry] = []
    for child in tree.children(cohort):
        if not child.is_cluster_queue:
            won = _run_tournament(tree, child, by_cq, shares)
            if won is not None:
                candidates.append(won)
    for child in tree.children(cohort):
        if child.is_cluster_queue and child.name in by_cq:
            candidates.append(by_cq[child.name])
    if not candidates:
        return None
    best = candidates[0]
    for current in candidates[1:]:
        if _better(current, best, cohort.id, shares):
            best = current
    return best


def _index_entries(entries: Iterable[TournamentEntry]) -> dict[str, TournamentEntry]:
    by_cq: dict[str, TournamentEntry] = {}
    for entry in entries:
        if entry.cluster_queue in by_cq:
            raise ValueError(f'two tournament entries for ClusterQueue "{entry.cluster_queue}"; nominate one head each')
        by_cq[entry.cluster_queue] = entry
    return by_cq


def tournament_winner(
    tree: QuotaTree, usage: Usage, entries: Iterable[TournamentEntry], root: NodeRef | None = None
) -> TournamentEntry | None:
    """The entry the tournament picks next (one entry per ClusterQueue at most).

    With ``root`` (a root Cohort node) only that tree competes. Without it, each tree's
    winner and each cohort-less ClusterQueue's entry compete by priority, then queue
    time, then key (Kueue leaves the order across trees unspecified).
    """
    by_cq = _index_entries(entries)
    shares = _entry_shares(tree, usage, by_cq)
    if root is not None:
        return _run_tournament(tree, tree.node(root), by_cq, shares)
    finalists: list[TournamentEntry] = []
    for top in tree.roots:
        if top.is_cluster_queue:
            if top.name in by_cq:
                finalists.append(by_cq[top.name])
        else:
            won = _run_tournament(tree, top, by_cq, shares)
            if won is not None:
                finalists.append(won)
    if not finalists:
        return None
    return min(finalists, key=lambda e: (-e.priority, e.timestamp, e.key))


def fair_sharing_order(tree: QuotaTree, usage: Usage, entries: Iterable[TournamentEntry]) -> list[TournamentEntry]:
    """All entries in tournament order for a fixed ``usage`` (nothing admitted in between).

    A scheduler that admits as it goes should call :func:`tournament_winner` after each
    admission instead, with the updated usage, as Kueue does.
    """
    remaining = _index_entries(entries)
    order: list[TournamentEntry] = []
    while remaining:
        won = tournament_winner(tree, usage, remaining.values())
        assert won is not None
        order.append(won)
        del remaining[won.cluster_queue]
    return order


# --- preemption strategies ----------------------------------------------------------------------

Strategy = Callable[[DominantResourceShare, DominantResourceShare, DominantResourceShare | None], bool]
"""``(preemptor side's new share, target side's old share, target side's new share) -> allowed``."""


def less_than_or_equal_to_final_share(
    preemptor_new: DominantResourceShare, target_old: DominantResourceShare, target_new: DominantResourceShare | None
) -> bool:
    """Rule S2-a: preempt if the preemptor side, with its workload, stays at or below the
    target side's share after the preemption."""
    assert target_new is not None
    return preemptor_new <= target_new


def less_than_initial_share(
    preemptor_new: DominantResourceShare, target_old: DominantResourceShare, target_new: DominantResourceShare | None
) -> bool:
    """Rule S2-b: preempt if the preemptor side, with its workload, is strictly below the
    target side's current share (independent of the workload preempted)."""
    return preemptor_new < target_old


STRATEGIES: dict[str, Strategy] = {
    "LessThanOrEqualToFinalShare": less_than_or_equal_to_final_share,
    "LessThanInitialShare": less_than_initial_share,
}
DEFAULT_STRATEGIES = ("LessThanOrEqualToFinalShare", "LessThanInitialShare")


def parse_strategies(names: Sequence[str] | None) -> list[Strategy]:
    """The strategy functions for ``Configuration.fairSharing.preemptionStrategies`` (empty = default)."""
    chosen = list(names) if names else list(DEFAULT_STRATEGIES)
    allowed = (["LessThanOrEqualToFinalShare"], ["LessThanInitialShare"], list(DEFAULT_STRATEGIES))
    if chosen not in allowed:
        raise ValueError(f"unsupported preemptionStrategies {chosen}; Kueue accepts {', '.join(map(str, allowed))}")
    return [STRATEGIES[name] for name in chosen]


# --- target ordering for fair preemption --------------------------------------------------------


def almost_lcas(tree: QuotaTree, preemptor_cq: NodeRef, target_cq: NodeRef) -> tuple[Node, Node]:
    """The children of the lowest common ancestor on the preemptor's and the target's side.

    For two ClusterQueues of one flat cohort these are the ClusterQueues themselves.
    """
    p = tree.node(preemptor_cq)
    t = tree.node(target_cq)
    p_path = tree.path_to_root(p)
    on_p_path = {n.id for n in p_path}
    lca = next((n for n in tree.path_to_root(t)[1:] if n.id in on_p_path), None)
    if lca is None:
        raise ValueError(f"{p!r} and {t!r} are not in one cohort tree")

    def below(path: tuple[Node, ...]) -> Node:
        prev = path[0]
        for n in path[1:]:
            if n is lca:
                return prev
            prev = n
        raise AssertionError("lowest common ancestor not on path")

    return below(p_path), below(tree.path_to_root(t))


W = TypeVar("W")


class TargetQueueOrdering(Generic[W]):
    """Kueue's TargetClusterQueueOrdering: which ClusterQueue to take the next preemption
    candidate from, walking from the root toward the highest shares.

    ``candidates`` maps ClusterQueue names to their candidates in preference order. Call
    :meth:`next_target` with the current usage (preemptor's workload included); between
    two calls, :meth:`pop` a workload from the returned queue or :meth:`drop` it.
    """

    def __init__(self, tree: QuotaTree, preemptor_cq: NodeRef, candidates: Mapping[str, Sequence[W]]) -> None:
        self.tree = tree
        self.preemptor = tree.node(preemptor_cq)
        self._ancestors = {n.id for n in tree.path_to_root(self.preemptor)[1:]}
        self._queues: dict[str, list[W]] = {k: list(v) for k, v in candidates.items()}
        self._pruned: set[int] = set()
        self._standalone_done = False

    def has_workload(self, cq: NodeRef) -> bool:
        return bool(self._queues.get(self.tree.node(cq).name))

    def pop(self, cq: NodeRef) -> W:
        return self._queues[self.tree.node(cq).name].pop(0)

    def drop(self, cq: NodeRef) -> None:
        self._pruned.add(self.tree.node(cq).id)

    def next_target(self, usage: Usage) -> Node | None:
        """The next ClusterQueue to consider, or None when no candidates remain."""
        if self.preemptor.parent is None:
            return self.preemptor if self.has_workload(self.preemptor) else None
        root = self.tree.root(self.preemptor)
        while root.id not in self._pruned:
            target = self._next(root, usage)
            if target is not None:
                return target
        return None

    def _next(self, cohort: Node, usage: Usage) -> Node | None:
        tree = self.tree
        best_cq: Node | None = None
        best_cq_drs: DominantResourceShare | None = None
        best_cohort: Node | None = None
        best_cohort_drs: DominantResourceShare | None = None
        for child in tree.children(cohort):
            if child.id in self._pruned:
                continue
            drs = dominant_resource_share(tree, usage, child)
            if child.is_cluster_queue:
                if (drs.is_zero and child is not self.preemptor) or not self.has_workload(child):
                    self._pruned.add(child.id)
                elif best_cq_drs is None or drs >= best_cq_drs:
                    best_cq, best_cq_drs = child, drs
            else:
                if drs.is_zero and child.id not in self._ancestors:
                    self._pruned.add(child.id)
                elif best_cohort_drs is None or drs >= best_cohort_drs:
                    best_cohort, best_cohort_drs = child, drs
        if best_cq is None and best_cohort is None:
            self._pruned.add(cohort.id)
            return None
        if best_cohort is not None and best_cohort_drs is not None:
            if best_cq_drs is None or best_cohort_drs >= best_cq_drs:  # a cohort wins ties: look inside it
                return self._next(best_cohort, usage)
        return best_cq


def group_by_queue(workloads: Iterable[W], queue_of: Callable[[W], Hashable]) -> dict[str, list[W]]:
    """Workloads grouped by ClusterQueue name, keeping their order."""
    grouped: dict[str, list[W]] = {}
    for w in workloads:
        grouped.setdefault(str(queue_of(w)), []).append(w)
    return grouped

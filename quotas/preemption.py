"""Which admitted workloads to preempt so a pending one fits: Kueue's classical and fair-sharing preemption.

Kueue rules followed (Preemption concept page; pkg/scheduler/preemption, classical/):

* **Candidates.** Workloads of the preemptor's ClusterQueue per ``withinClusterQueue``
  (``LowerPriority``: strictly lower priority; ``LowerOrNewerEqualPriority``: also equal
  priority queued after the preemptor), and workloads of other ClusterQueues of the tree
  per ``reclaimWithinCohort`` (``LowerPriority``, or ``Any`` priority) that are above
  their nominal quota in a FlavorResource the preemptor needs. Only workloads using one
  of the FlavorResources that need preemption are candidates.
* **Order.** Already evicted workloads first, then workloads of other ClusterQueues,
  then lower priority, then the most recently admitted, then by key.
* **Classical targets (hierarchical cohorts).** Walking from the preemptor's parent to
  the root, once some subtree on the way has room for the request in its own quota, the
  preemptor has *hierarchical advantage* over workloads borrowing into that subtree
  (reason ``InCohortReclamation``, any priority allowed by the policy). Other cohort
  candidates may only be preempted if the preemptor will not borrow
  (``InCohortReclamation``), unless ``borrowWithinCohort.policy: LowerPriority`` lets
  it borrow while preempting workloads of lower priority and at most
  ``maxPriorityThreshold`` (``InCohortReclaimWhileBorrowing``). Own workloads are
  ``InClusterQueue``. Attempts with and without borrowing are tried in Kueue's order.
* **Minimal set.** Remove candidates in order until the preemptor fits; then, in
  reverse order (except the last one taken), put each back and keep it if the
  preemptor still fits.
* **Fair sharing** (``Configuration.fairSharing.enable``): candidates as above from the
  whole cohort tree, taken from the ClusterQueue the target ordering picks (highest
  share first) while the first strategy allows (``InCohortFairSharing``), then by the
  second strategy; own workloads are ``InClusterQueue``. ``borrowWithinCohort`` does not
  apply. Then the same minimisation.

Pure functions: the usage snapshot passed in must include every admitted workload.
"""

from __future__ import annotations

import enum
import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Literal, NamedTuple

from quotas.api import ClusterQueuePreemption, FairSharingConfig
from quotas.fair_sharing import (
    TargetQueueOrdering,
    almost_lcas,
    dominant_resource_share,
    group_by_queue,
    less_than_initial_share,
    parse_strategies,
)
from quotas.tree import Node, QuotaTree
from quotas.units import FlavorResource
from quotas.usage import Usage

__all__ = [
    "AdmittedWorkload",
    "PreemptionPossibility",
    "PreemptionReason",
    "PreemptionResult",
    "Preemptor",
    "Victim",
    "VictimPool",
    "candidate_order_key",
    "find_victims",
    "preemption_oracle",
    "workload_fits",
]


class PreemptionReason(str, enum.Enum):
    """The ``reason`` of the ``Preempted`` condition Kueue sets on a victim."""

    IN_CLUSTER_QUEUE = "InClusterQueue"
    IN_COHORT_RECLAMATION = "InCohortReclamation"
    IN_COHORT_FAIR_SHARING = "InCohortFairSharing"
    IN_COHORT_RECLAIM_WHILE_BORROWING = "InCohortReclaimWhileBorrowing"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class AdmittedWorkload:
    """An admitted workload as preemption sees it.

    ``admitted_at`` is when its quota was reserved (seconds; the most recent is preempted
    first). ``queued_at`` is its queue-order time (creation, or last eviction under the
    ``Eviction`` requeuing timestamp), used by ``LowerOrNewerEqualPriority``.
    """

    key: str
    cluster_queue: str
    priority: int
    admitted_at: float
    usage: Mapping[FlavorResource, int]
    evicted: bool = False
    queued_at: float = 0.0
    frs: frozenset[FlavorResource] = field(init=False, repr=False, compare=False)
    """The FlavorResources it uses (a positive amount of): a preemptor's search asks this of every
    admitted workload, so it is computed once."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "frs", frozenset(fr for fr, v in self.usage.items() if v > 0))


@dataclass(frozen=True, slots=True)
class Preemptor:
    """The pending workload: its ClusterQueue, priority, queue time and the quota its
    flavor assignment needs (milli-units per FlavorResource)."""

    key: str
    cluster_queue: str
    priority: int
    request: Mapping[FlavorResource, int]
    queued_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Victim:
    workload: AdmittedWorkload
    reason: PreemptionReason


@dataclass(frozen=True, slots=True)
class PreemptionResult:
    """The victims (empty: preemption cannot make the preemptor fit), whether the fit they
    make room for may borrow, and the usage once they are gone."""

    victims: tuple[Victim, ...]
    borrowing_allowed: bool
    algorithm: Literal["classical", "fair"]
    usage_after: Usage

    def __bool__(self) -> bool:
        return bool(self.victims)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(v.workload.key for v in self.victims)


PreemptionPossibility = Literal["NoCandidates", "Preempt", "Reclaim"]


# --- shared helpers -----------------------------------------------------------------------------


def candidate_order_key(w: AdmittedWorkload, preemptor_cq: str) -> tuple[bool, bool, int, float, str]:
    """Sort key of Kueue's candidate ordering: evicted first, other ClusterQueues first,
    lower priority first, most recently admitted first, then key."""
    return (not w.evicted, w.cluster_queue == preemptor_cq, w.priority, -w.admitted_at, w.key)


def _queue_order(w: AdmittedWorkload) -> tuple[int, float, str]:
    """`candidate_order_key` among workloads of one queue and eviction state."""
    return (w.priority, -w.admitted_at, w.key)


def workload_fits(
    tree: QuotaTree, usage: Usage, cluster_queue: str, request: Mapping[FlavorResource, int], allow_borrowing: bool
) -> bool:
    """Kueue's workloadFits: every FlavorResource within ``available``, and within nominal
    quota too when borrowing is not allowed."""
    node = tree.cluster_queue(cluster_queue)
    used = usage.node(node.id)
    for fr, v in request.items():
        if v <= 0:
            continue
        if not allow_borrowing and used.get(fr, 0) + v > node.nominal(fr):
            return False
        if v > tree.available(node, fr, usage):
            return False
    return True


def _uses(w: AdmittedWorkload, frs: frozenset[FlavorResource]) -> bool:
    return not w.frs.isdisjoint(frs)


def _satisfies_policy(policy: str, preemptor: Preemptor, cand: AdmittedWorkload) -> bool:
    if policy == "LowerPriority":
        return cand.priority < preemptor.priority
    if policy == "LowerOrNewerEqualPriority":
        return cand.priority < preemptor.priority or (
            cand.priority == preemptor.priority and preemptor.queued_at < cand.queued_at
        )
    return policy == "Any"


def _cq_borrowing(tree: QuotaTree, usage: Usage, node: Node, frs: frozenset[FlavorResource]) -> bool:
    if node.parent is None:
        return False
    used = usage.node(node.id)
    return any(used.get(fr, 0) > node.nominal(fr) for fr in frs)


def _fill_back(
    tree: QuotaTree, usage: Usage, preemptor: Preemptor, targets: list[Victim], allow_borrowing: bool
) -> tuple[list[Victim], Usage]:
    """Put targets back in reverse order (all but the last taken) while the preemptor still fits."""
    for i in range(len(targets) - 2, -1, -1):
        w = targets[i].workload
        trial = usage.admit(w.cluster_queue, w.usage)
        if workload_fits(tree, trial, preemptor.cluster_queue, preemptor.request, allow_borrowing):
            usage = trial
            del targets[i]
    return targets, usage


@dataclass(frozen=True, slots=True)
class _Context:
    tree: QuotaTree
    usage: Usage
    preemptor: Preemptor
    node: Node
    policy: ClusterQueuePreemption
    frs: frozenset[FlavorResource]
    pool: VictimPool

    def fits(self, usage: Usage, allow_borrowing: bool) -> bool:
        return workload_fits(self.tree, usage, self.preemptor.cluster_queue, self.preemptor.request, allow_borrowing)

    def result(self, targets: list[Victim], usage: Usage, borrow: bool, algorithm: Literal["classical", "fair"]) -> PreemptionResult:
        targets, usage = _fill_back(self.tree, usage, self.preemptor, targets, borrow)
        return PreemptionResult(tuple(targets), borrow, algorithm, usage)

    def nothing(self, algorithm: Literal["classical", "fair"]) -> PreemptionResult:
        return PreemptionResult((), False, algorithm, self.usage)


# --- classical (hierarchical) preemption --------------------------------------------------------


class _Variant(enum.IntEnum):
    NEVER = 0
    WITHIN_CQ = 1
    HIERARCHICAL_RECLAIM = 2
    RECLAIM_WITHOUT_BORROWING = 3
    RECLAIM_WHILE_BORROWING = 4

    @property
    def reason(self) -> PreemptionReason:
        if self == _Variant.WITHIN_CQ:
            return PreemptionReason.IN_CLUSTER_QUEUE
        if self == _Variant.RECLAIM_WHILE_BORROWING:
            return PreemptionReason.IN_COHORT_RECLAIM_WHILE_BORROWING
        return PreemptionReason.IN_COHORT_RECLAMATION


class _Candidate(NamedTuple):
    """A possible victim (a tuple: a search builds one per admitted workload it considers)."""

    workload: AdmittedWorkload
    lca: Node | None
    variant: _Variant


def _borrow_within_cohort(policy: ClusterQueuePreemption) -> tuple[bool, int | None]:
    """(allowed, maxPriorityThreshold)."""
    bwc = policy.borrow_within_cohort
    if bwc is None or bwc.policy == "Never":
        return False, None
    return True, bwc.max_priority_threshold


def _classify(ctx: _Context, w: AdmittedWorkload, advantage: bool) -> _Variant:
    if not _uses(w, ctx.frs):
        return _Variant.NEVER
    same = w.cluster_queue == ctx.node.name
    policy = ctx.policy.within_cluster_queue if same else ctx.policy.reclaim_within_cohort
    if not _satisfies_policy(policy, ctx.preemptor, w):
        return _Variant.NEVER
    if same:
        return _Variant.WITHIN_CQ
    if advantage:
        return _Variant.HIERARCHICAL_RECLAIM
    allowed, threshold = _borrow_within_cohort(ctx.policy)
    if not allowed:
        return _Variant.RECLAIM_WITHOUT_BORROWING
    above = w.priority >= ctx.preemptor.priority or (threshold is not None and w.priority > threshold)
    return _Variant.RECLAIM_WITHOUT_BORROWING if above else _Variant.RECLAIM_WHILE_BORROWING


def _from_queue(
    ctx: _Context, source: _Source, evicted: bool, borrow: bool = False, reclaimed: set[tuple[str, int]] | None = None
) -> Iterator[_Candidate]:
    """The queue's candidates, evicted or not, in Kueue's order; those of too high a priority for
    the queue's policy are not looked at. For an attempt that may borrow, candidates only
    reclaimable without borrowing are left out; once the queue is in ``reclaimed`` (with this
    LCA), the rest are too."""
    cq, lca, advantage = source
    policy = ctx.policy.within_cluster_queue if cq is ctx.node else ctx.policy.reclaim_within_cohort
    workloads, priorities = ctx.pool.ordered(cq.name, evicted)
    stop = len(workloads)
    if policy == "LowerPriority":
        stop = bisect_left(priorities, ctx.preemptor.priority)
    elif policy == "LowerOrNewerEqualPriority":
        stop = bisect_right(priorities, ctx.preemptor.priority)
    if borrow and cq is not ctx.node and not advantage:
        # only reclaim while borrowing (`_classify`): lower priority, at most the threshold
        allowed, threshold = _borrow_within_cohort(ctx.policy)
        if not allowed:
            return
        stop = min(stop, bisect_left(priorities, ctx.preemptor.priority))
        if threshold is not None:
            stop = min(stop, bisect_right(priorities, threshold))
    never, without = _Variant.NEVER, _Variant.RECLAIM_WITHOUT_BORROWING
    dead = (cq.name, lca.id) if lca is not None and reclaimed is not None else None
    for i in range(stop):
        if dead is not None and dead in reclaimed:  # type: ignore[operator]
            return
        w = workloads[i]
        variant = _classify(ctx, w, advantage)
        if variant is not never and not (borrow and variant is without):
            yield _Candidate(w, lca, variant)


_Source = tuple[Node, "Node | None", bool]
"""A ClusterQueue whose workloads may be victims: (queue, lowest common ancestor, hierarchical advantage)."""


def _merged(
    ctx: _Context, sources: Sequence[_Source], evicted: bool, borrow: bool = False, reclaimed: set[tuple[str, int]] | None = None
) -> Iterator[_Candidate]:
    """The candidates of several queues merged in Kueue's order (all of them other queues than
    the preemptor's, or all its own, so the order within one queue decides)."""
    streams = [_from_queue(ctx, src, evicted, borrow, reclaimed) for src in sources]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda c: _queue_order(c.workload))


def _collect_in_subtree(
    ctx: _Context, current: Node, subtree_root: Node, skip: Node | None, advantage: bool, out: list[_Source]
) -> None:
    tree = ctx.tree
    for child in tree.children(current):
        if child.is_cluster_queue or child is skip:
            continue
        if tree.within_nominal(child, ctx.frs, ctx.usage):
            continue  # a subtree within its quota lends nothing it could give back
        _collect_in_subtree(ctx, child, subtree_root, skip, advantage, out)
    for child in tree.children(current):
        if not child.is_cluster_queue or child is ctx.node:
            continue
        if not tree.within_nominal(child, ctx.frs, ctx.usage):
            out.append((child, subtree_root, advantage))


def _hierarchical_sources(ctx: _Context) -> tuple[list[_Source], list[_Source]]:
    """(queues over which the preemptor has hierarchical advantage, queues of priority-based candidates)."""
    hierarchy: list[_Source] = []
    by_priority: list[_Source] = []
    if ctx.node.parent is None or ctx.policy.reclaim_within_cohort == "Never":
        return hierarchy, by_priority
    tree = ctx.tree
    advantage, remaining = tree.fits_in_quota(ctx.node, ctx.preemptor.request, ctx.usage)
    previous: Node | None = None
    for ancestor in tree.path_to_root(ctx.node)[1:]:
        _collect_in_subtree(ctx, ancestor, ancestor, previous, advantage, hierarchy if advantage else by_priority)
        fits, remaining = tree.fits_in_quota(ancestor, remaining, ctx.usage)
        advantage = advantage or fits
        previous = ancestor
    return hierarchy, by_priority


def _reclaimed(ctx: _Context, cand: _Candidate, usage: Usage) -> bool:
    """Earlier preemptions brought the candidate's queue, or a cohort on the way up to the LCA,
    back within quota: it lends nothing more. Usage only goes down while victims are taken, so
    this stays true for every later candidate of the same queue and LCA."""
    tree = ctx.tree
    cq = tree.cluster_queue(cand.workload.cluster_queue)
    if tree.within_nominal(cq, ctx.frs, usage):
        return True
    for node in tree.path_to_root(cq)[1:]:
        if node is cand.lca:
            break
        if tree.within_nominal(node, ctx.frs, usage):
            return True
    return False


def _classical(ctx: _Context) -> PreemptionResult:
    own: list[_Source] = [(ctx.node, None, False)] if ctx.policy.within_cluster_queue != "Never" else []
    hierarchy_from, by_priority_from = _hierarchical_sources(ctx)
    groups = (hierarchy_from, by_priority_from, own)
    hierarchy = any(True for evicted in (True, False) for _ in _merged(ctx, hierarchy_from, evicted))
    by_priority = any(True for evicted in (True, False) for _ in _merged(ctx, by_priority_from, evicted))

    forbidden = not _borrow_within_cohort(ctx.policy)[0]
    under_nominal = all(ctx.usage.node(ctx.node.id).get(fr, 0) < ctx.node.nominal(fr) for fr in ctx.frs)
    if (not hierarchy and not by_priority) or (forbidden and not under_nominal):
        attempts = [True]
    elif forbidden and not hierarchy:
        attempts = [False, True]
    else:
        attempts = [True, False]

    own_name = ctx.node.name
    for borrow in attempts:
        usage = ctx.usage
        targets: list[Victim] = []
        reclaimed: set[tuple[str, int]] = set()  # (queue, LCA id) of sources that lend nothing more
        # evicted ones first, then per group (hierarchical advantage, priority, own queue) in Kueue's order
        for cand in chain.from_iterable(_merged(ctx, g, evicted, borrow, reclaimed) for evicted in (True, False) for g in groups):
            w = cand.workload
            if w.cluster_queue != own_name and _reclaimed(ctx, cand, usage):
                assert cand.lca is not None
                reclaimed.add((w.cluster_queue, cand.lca.id))
                continue
            usage = usage.release(w.cluster_queue, w.usage)
            targets.append(Victim(w, cand.variant.reason))
            if ctx.fits(usage, borrow):
                return ctx.result(targets, usage, borrow, "classical")
    return ctx.nothing("classical")


# --- fair-sharing preemption --------------------------------------------------------------------


def _fair_candidates(ctx: _Context) -> list[AdmittedWorkload]:
    tree, pre = ctx.tree, ctx.preemptor
    out: list[AdmittedWorkload] = []
    if ctx.policy.within_cluster_queue != "Never":
        out += [
            w
            for w in ctx.pool.by_cq.get(ctx.node.name, ())
            if _satisfies_policy(ctx.policy.within_cluster_queue, pre, w) and _uses(w, ctx.frs)
        ]
    if ctx.node.parent is not None and ctx.policy.reclaim_within_cohort != "Never":
        for other in tree.subtree_cluster_queues(tree.root(ctx.node)):
            if other is ctx.node or not _cq_borrowing(tree, ctx.usage, other, ctx.frs):
                continue
            out += [
                w
                for w in ctx.pool.by_cq.get(other.name, ())
                if _satisfies_policy(ctx.policy.reclaim_within_cohort, pre, w) and _uses(w, ctx.frs)
            ]
    return sorted(out, key=lambda w: candidate_order_key(w, ctx.node.name))


def _fair(ctx: _Context, strategy_names: Sequence[str] | None) -> PreemptionResult:
    strategies = parse_strategies(strategy_names)
    candidates = _fair_candidates(ctx)
    if not candidates:
        return ctx.nothing("fair")
    tree, pre, node = ctx.tree, ctx.preemptor, ctx.node

    def with_preemptor(u: Usage) -> Usage:  # shares are computed as if the preemptor were admitted
        return u.admit(node, pre.request)

    usage = ctx.usage
    targets: list[Victim] = []
    retry: list[AdmittedWorkload] = []
    ordering = TargetQueueOrdering(tree, node, group_by_queue(candidates, lambda w: w.cluster_queue))
    while (target := ordering.next_target(with_preemptor(usage))) is not None:
        if target is node:
            w = ordering.pop(target)
            usage = usage.release(w.cluster_queue, w.usage)
            targets.append(Victim(w, PreemptionReason.IN_CLUSTER_QUEUE))
            if ctx.fits(usage, True):
                return ctx.result(targets, usage, True, "fair")
            continue
        snapshot = with_preemptor(usage)
        side_p, side_t = almost_lcas(tree, node, target)
        preemptor_new = dominant_resource_share(tree, snapshot, side_p)
        target_old = dominant_resource_share(tree, snapshot, side_t)
        while ordering.has_workload(target):
            w = ordering.pop(target)
            target_new = dominant_resource_share(tree, snapshot.release(w.cluster_queue, w.usage), side_t)
            if strategies[0](preemptor_new, target_old, target_new):
                usage = usage.release(w.cluster_queue, w.usage)
                targets.append(Victim(w, PreemptionReason.IN_COHORT_FAIR_SHARING))
                if ctx.fits(usage, True):
                    return ctx.result(targets, usage, True, "fair")
                break  # shares changed: pick the next queue afresh
            retry.append(w)

    if len(strategies) > 1 and retry:
        ordering = TargetQueueOrdering(tree, node, group_by_queue(retry, lambda w: w.cluster_queue))
        while (target := ordering.next_target(with_preemptor(usage))) is not None:
            snapshot = with_preemptor(usage)
            side_p, side_t = almost_lcas(tree, node, target)
            preemptor_new = dominant_resource_share(tree, snapshot, side_p)
            target_old = dominant_resource_share(tree, snapshot, side_t)
            if less_than_initial_share(preemptor_new, target_old, None):
                w = ordering.pop(target)
                usage = usage.release(w.cluster_queue, w.usage)
                targets.append(Victim(w, PreemptionReason.IN_COHORT_FAIR_SHARING))
                if ctx.fits(usage, True):
                    return ctx.result(targets, usage, True, "fair")
            ordering.drop(target)  # rule S2-b applies at most once per queue
    return ctx.nothing("fair")


# --- entry points -------------------------------------------------------------------------------


class VictimPool:
    """Admitted workloads grouped by ClusterQueue once, for the many searches a cycle runs over
    the same pool (the oracle searches once per FlavorResource, then for real)."""

    def __init__(self, admitted: Iterable[AdmittedWorkload]) -> None:
        self.workloads = list(admitted)
        self.by_cq: dict[str, list[AdmittedWorkload]] = {}
        for w in self.workloads:
            self.by_cq.setdefault(w.cluster_queue, []).append(w)
        self._ordered: dict[tuple[str, bool], tuple[list[AdmittedWorkload], list[int]]] = {}

    def ordered(self, cluster_queue: str, evicted: bool) -> tuple[list[AdmittedWorkload], list[int]]:
        """The queue's evicted (or other) workloads in Kueue's candidate order within one queue, and
        their priorities (ascending), sorted once per pool: a search reads only the few it takes."""
        key = (cluster_queue, evicted)
        found = self._ordered.get(key)
        if found is None:
            ws = sorted((w for w in self.by_cq.get(cluster_queue, ()) if w.evicted == evicted), key=_queue_order)
            found = self._ordered[key] = (ws, [w.priority for w in ws])
        return found

    def __iter__(self) -> Iterator[AdmittedWorkload]:
        return iter(self.workloads)

    def __len__(self) -> int:
        return len(self.workloads)


def find_victims(
    tree: QuotaTree,
    usage: Usage,
    preemptor: Preemptor,
    admitted: Iterable[AdmittedWorkload] | VictimPool,
    *,
    needs_preemption: Iterable[FlavorResource] | None = None,
    fair_sharing: FairSharingConfig | bool = False,
) -> PreemptionResult:
    """The workloads to preempt so that ``preemptor`` fits, each with its reason.

    ``usage`` must account for every workload in ``admitted``. ``needs_preemption`` are
    the FlavorResources whose flavor assignment came out as Preempt; by default, those of
    the request that do not fit now. ``fair_sharing`` is the Configuration's
    ``fairSharing`` (or a bool: enabled with the default strategies).
    """
    node = tree.cluster_queue(preemptor.cluster_queue)
    assert node.cluster_queue is not None
    if needs_preemption is None:
        frs = frozenset(
            fr for fr, v in preemptor.request.items() if v > 0 and v > tree.available(node, fr, usage)
        )
    else:
        frs = frozenset(needs_preemption)
    pool = admitted if isinstance(admitted, VictimPool) else VictimPool(admitted)
    # the FlavorResources short of quota first: the many fit checks of a search fail fast on them
    request = {**{fr: v for fr, v in preemptor.request.items() if fr in frs}, **preemptor.request}
    preemptor = replace(preemptor, request=request)
    ctx = _Context(tree, usage, preemptor, node, node.cluster_queue.spec.preemption, frs, pool)
    if isinstance(fair_sharing, bool):
        enabled, strategies = fair_sharing, None
    else:
        enabled, strategies = fair_sharing.enable, fair_sharing.preemption_strategies
    if not frs:
        return ctx.nothing("fair" if enabled else "classical")
    if enabled:
        return _fair(ctx, strategies)
    return _classical(ctx)


def preemption_oracle(
    tree: QuotaTree,
    usage: Usage,
    preemptor: Preemptor,
    admitted: Sequence[AdmittedWorkload] | VictimPool,
    *,
    fair_sharing: FairSharingConfig | bool = False,
) -> Callable[[FlavorResource, int], tuple[PreemptionPossibility, int]]:
    """Kueue's preemption oracle for flavor assignment: could preempting make ``amount``
    of one FlavorResource fit, and at what borrowing level afterwards?

    Returns a callable ``(fr, amount) -> (possibility, borrow_level)``: ``NoCandidates``
    when no victims exist, ``Preempt`` when some victim is in the preemptor's own queue,
    ``Reclaim`` when all victims are elsewhere in the cohort tree.
    """

    pool = admitted if isinstance(admitted, VictimPool) else VictimPool(admitted)

    def oracle(fr: FlavorResource, amount: int) -> tuple[PreemptionPossibility, int]:
        probe = replace(preemptor, request={fr: amount})
        result = find_victims(tree, usage, probe, pool, needs_preemption={fr}, fair_sharing=fair_sharing)
        if not result.victims:
            return "NoCandidates", tree.lowest_fitting_subtree(preemptor.cluster_queue, fr, amount, usage)[0]
        level = tree.lowest_fitting_subtree(preemptor.cluster_queue, fr, amount, result.usage_after)[0]
        if any(v.workload.cluster_queue == preemptor.cluster_queue for v in result.victims):
            return "Preempt", level
        return "Reclaim", level

    return oracle

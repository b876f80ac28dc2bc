"""Flavor assignment: which ResourceFlavor each podset gets per resource group (Kueue's flavor assigner).

Kueue rules followed (ClusterQueue concept page, "Flavors and borrowing semantics" and
"FlavorFungibility"; pkg/scheduler/flavorassigner):

* Podsets are assigned in order; the quota a podset takes counts against the next ones.
  Per podset, each resource group is assigned one flavor for all its covered resources.
* Flavors are tried in the order the ClusterQueue lists them. A flavor the podset cannot
  use (taints, node affinity: decided by the caller's ``eligible`` callback) is skipped.
* Per resource in a flavor: *NoFit* if podsets' requests exceed the most the
  ClusterQueue could ever get (``potentialAvailable``); *Fit* if within ``available``
  (with a borrowing level, 0 = none); otherwise *Preempt* when preemption could help
  (request within nominal quota, or a smaller subtree could be reclaimed, or
  ``borrowWithinCohort``/fair sharing allow preempting while borrowing), asking the
  preemption oracle whether candidates exist; else *NoFit*. A flavor's mode is its
  worst resource's.
* ``flavorFungibility``: stop at the first flavor that fits without borrowing; stop at a
  flavor that fits by borrowing unless ``whenCanBorrow: TryNextFlavor``; stop at a flavor
  that needs preemption only if ``whenCanPreempt: Preempt``. Otherwise keep the best
  flavor seen: fit beats reclaim beats preempt, then the lower borrowing level.
* A resource the ClusterQueue does not cover makes the podset NoFit.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from quotas.api import ResourceGroup
from quotas.preemption import PreemptionPossibility
from quotas.tree import QuotaTree
from quotas.units import FlavorResource, format_amount
from quotas.usage import Usage

__all__ = [
    "Assignment",
    "AssignmentMode",
    "Eligibility",
    "GroupAssignment",
    "PodSetAssignment",
    "PodSetRequest",
    "assign_flavors",
]


class AssignmentMode(enum.IntEnum):
    """Kueue's FlavorAssignmentMode, worst first (so ``min`` gives the representative mode)."""

    NO_FIT = 0
    PREEMPT = 1
    FIT = 2

    def __str__(self) -> str:
        return {0: "NoFit", 1: "Preempt", 2: "Fit"}[int(self)]


class _Granular(enum.IntEnum):
    """Internal preference of a flavor, worst first (Kueue's preemptionMode)."""

    NO_FIT = 0
    NO_CANDIDATES = 1
    PREEMPT = 2
    RECLAIM = 3
    FIT = 4

    @property
    def mode(self) -> AssignmentMode:
        if self == _Granular.NO_FIT:
            return AssignmentMode.NO_FIT
        if self == _Granular.FIT:
            return AssignmentMode.FIT
        return AssignmentMode.PREEMPT


_WORST = (_Granular.NO_FIT, 1 << 62)


def _preferred(a: tuple[_Granular, int], b: tuple[_Granular, int]) -> bool:
    """Whether flavor mode ``a`` is better than ``b`` (borrowing preferred over preemption)."""
    if a[0] == _Granular.NO_FIT:
        return False
    if b[0] == _Granular.NO_FIT:
        return True
    a_none, b_none = a[0] == _Granular.NO_CANDIDATES, b[0] == _Granular.NO_CANDIDATES
    if a_none != b_none:
        return not a_none
    if a[0] != b[0]:
        return a[0] > b[0]
    return a[1] < b[1]


Eligibility = Callable[[str, str], str | None]
"""``(podset name, flavor name) -> None`` if the podset may use the flavor, else the reason
(e.g. ``"untolerated taint gpu=true:NoSchedule in flavor a100"``)."""

Oracle = Callable[[FlavorResource, int], tuple[PreemptionPossibility, int]]


@dataclass(frozen=True, slots=True)
class PodSetRequest:
    """One podset: ``count`` pods each requesting ``requests`` (milli-units per resource)."""

    name: str
    count: int
    requests: Mapping[str, int]

    def totals(self, with_pods: bool) -> dict[str, int]:
        out = {r: v * self.count for r, v in self.requests.items() if v > 0}
        if with_pods:
            out["pods"] = self.count * 1000
        return out


@dataclass(frozen=True, slots=True)
class GroupAssignment:
    """The flavor chosen for one resource group of a podset (None when nothing fits)."""

    flavor: str | None
    mode: AssignmentMode
    borrow_level: int
    requests: Mapping[str, int]
    reasons: tuple[str, ...] = ()
    tried_index: int = -1
    """Index of the last flavor tried (-1 once the last flavor of the group was reached),
    for resuming the search after a failed preemption, as Kueue does."""


@dataclass(frozen=True, slots=True)
class PodSetAssignment:
    name: str
    count: int
    groups: tuple[GroupAssignment, ...]

    @property
    def flavors(self) -> dict[str, str]:
        """resource -> flavor."""
        return {r: g.flavor for g in self.groups if g.flavor is not None for r in g.requests}

    @property
    def mode(self) -> AssignmentMode:
        return min((g.mode for g in self.groups), default=AssignmentMode.FIT)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(sorted(r for g in self.groups if g.mode != AssignmentMode.FIT for r in g.reasons))


@dataclass(frozen=True, slots=True)
class Assignment:
    """The flavors for every podset; ``usage`` is the quota they take per FlavorResource."""

    podsets: tuple[PodSetAssignment, ...]
    usage: Mapping[FlavorResource, int] = field(default_factory=dict)
    preempt_frs: frozenset[FlavorResource] = frozenset()

    @property
    def mode(self) -> AssignmentMode:
        """The worst podset mode (NoFit when nothing was assigned)."""
        if not self.podsets:
            return AssignmentMode.NO_FIT
        return min(p.mode for p in self.podsets)

    @property
    def borrow_level(self) -> int:
        return max((g.borrow_level for p in self.podsets for g in p.groups if g.flavor), default=0)

    @property
    def borrows(self) -> bool:
        return self.borrow_level > 0

    @property
    def message(self) -> str:
        """Why it does not fit, as Kueue words it (empty when it fits)."""
        parts = [
            f"couldn't assign flavors to pod set {p.name}: {', '.join(p.reasons)}"
            for p in self.podsets
            if p.mode != AssignmentMode.FIT
        ]
        return "; ".join(parts)


def _group_for(groups: Sequence[ResourceGroup], resource: str) -> int | None:
    for i, g in enumerate(groups):
        if resource in g.covered_resources:
            return i
    return None


def _fits_resource(
    tree: QuotaTree,
    usage: Usage,
    cq: str,
    fr: FlavorResource,
    assumed: int,
    request: int,
    preempt_while_borrowing: bool,
    oracle: Oracle | None,
) -> tuple[_Granular, int, str]:
    """Kueue's fitsResourceQuota: (mode, borrowing level, reason)."""
    node = tree.cluster_queue(cq)
    flavor, resource = fr
    available = tree.available(node, fr, usage)
    potential = tree.potential_available(node, fr)
    val = assumed + request
    if val > potential:
        return _Granular.NO_FIT, 0, (
            f"insufficient quota for {resource} in flavor {flavor}, previously considered podsets requests "
            f"({format_amount(assumed, resource)}) + current podset request ({format_amount(request, resource)}) "
            f"> maximum capacity ({format_amount(potential, resource)})"
        )
    borrow, may_reclaim, _ = tree.lowest_fitting_subtree(node, fr, val, usage)
    if val <= available:
        return _Granular.FIT, borrow, ""
    reason = f"insufficient unused quota for {resource} in flavor {flavor}, {format_amount(val - available, resource)} more needed"
    if node.nominal(fr) >= val or may_reclaim or preempt_while_borrowing:
        if oracle is None:
            return _Granular.PREEMPT, borrow, reason
        possibility, after = oracle(fr, val)
        mode = {"NoCandidates": _Granular.NO_CANDIDATES, "Preempt": _Granular.PREEMPT, "Reclaim": _Granular.RECLAIM}[
            possibility
        ]
        return mode, after, reason
    return _Granular.NO_FIT, borrow, reason


def assign_flavors(
    tree: QuotaTree,
    usage: Usage,
    cluster_queue: str,
    podsets: Sequence[PodSetRequest],
    *,
    eligible: Eligibility | None = None,
    fair_sharing: bool = False,
    oracle: Oracle | None = None,
    resume: Mapping[tuple[str, str], int] | None = None,
) -> Assignment:
    """Choose flavors for every podset of a workload in ClusterQueue ``cluster_queue``.

    ``eligible`` filters flavors per podset (taints, affinity: the scheduler's job).
    ``oracle`` (see :func:`quotas.preemption.preemption_oracle`) tells whether preemption
    could free a flavor; without it, a flavor that could fit after preemption is reported
    as Preempt. ``resume`` maps ``(podset, resource)`` to the last flavor index tried in a
    previous attempt; the search continues after it.
    """
    node = tree.cluster_queue(cluster_queue)
    assert node.cluster_queue is not None
    spec = node.cluster_queue.spec
    groups = node.resource_groups
    fungibility = spec.flavor_fungibility
    bwc = spec.preemption.borrow_within_cohort
    preempt_while_borrowing = (bwc is not None and bwc.policy != "Never") or (
        fair_sharing and spec.preemption.reclaim_within_cohort != "Never"
    )
    covers_pods = _group_for(groups, "pods") is not None

    assumed: dict[FlavorResource, int] = {}
    preempt_frs: set[FlavorResource] = set()
    results: list[PodSetAssignment] = []
    for ps in podsets:
        totals = ps.totals(covers_pods)
        group_of = {r: _group_for(groups, r) for r in totals}
        by_group: dict[int, dict[str, int]] = {}
        missing = sorted(r for r, gi in group_of.items() if gi is None)
        group_results: list[GroupAssignment] = []
        if missing:
            group_results.append(
                GroupAssignment(
                    None, AssignmentMode.NO_FIT, 0, {r: totals[r] for r in missing},
                    tuple(f"resource {r} unavailable in ClusterQueue" for r in missing),
                )
            )
            results.append(PodSetAssignment(ps.name, ps.count, tuple(group_results)))
            return Assignment(tuple(results), dict(assumed), frozenset(preempt_frs))
        for r, v in totals.items():
            gi = group_of[r]
            assert gi is not None
            by_group.setdefault(gi, {})[r] = v

        for gi in sorted(by_group):
            requests = by_group[gi]
            group = groups[gi]
            reasons: list[str] = []
            best: dict[str, tuple[str, _Granular, int]] | None = None
            best_mode = _WORST
            start = 0
            if resume:
                last = resume.get((ps.name, next(iter(sorted(requests)))), -1)
                start = last + 1 if last >= 0 else 0
            tried = -1
            for fi in range(start, len(group.flavors)):
                tried = fi
                flavor = group.flavors[fi].name
                if eligible is not None:
                    why = eligible(ps.name, flavor)
                    if why:
                        reasons.append(why)
                        continue
                assignments: dict[str, tuple[str, _Granular, int]] = {}
                rep: tuple[_Granular, int] = (_Granular.FIT, 0)
                for resource in sorted(requests):
                    fr = (flavor, resource)
                    mode, borrow, why = _fits_resource(
                        tree, usage, cluster_queue, fr, assumed.get(fr, 0), requests[resource],
                        preempt_while_borrowing, oracle,
                    )
                    if why:
                        reasons.append(why)
                    if _preferred(rep, (mode, borrow)):
                        rep = (mode, borrow)
                    if rep[0] == _Granular.NO_FIT:
                        break
                    assignments[resource] = (flavor, mode, borrow)
                try_next = (
                    rep[0] in (_Granular.NO_FIT, _Granular.NO_CANDIDATES)
                    or (rep[0] in (_Granular.PREEMPT, _Granular.RECLAIM) and fungibility.when_can_preempt == "TryNextFlavor")
                    or (rep[1] > 0 and fungibility.when_can_borrow == "TryNextFlavor")
                )
                if not try_next:
                    best, best_mode = assignments, rep
                    break
                if _preferred(rep, best_mode):
                    best, best_mode = assignments, rep
            if tried == len(group.flavors) - 1:
                tried = -1
            if best is None or best_mode[0] == _Granular.NO_FIT:
                group_results.append(
                    GroupAssignment(None, AssignmentMode.NO_FIT, 0, requests, tuple(sorted(reasons)), tried)
                )
                results.append(PodSetAssignment(ps.name, ps.count, tuple(group_results)))
                return Assignment(tuple(results), dict(assumed), frozenset(preempt_frs))
            flavor = next(iter(best.values()))[0]
            group_mode = best_mode[0].mode
            for resource, (flv, res_mode, _) in best.items():
                fr = (flv, resource)
                assumed[fr] = assumed.get(fr, 0) + requests[resource]
                if res_mode.mode == AssignmentMode.PREEMPT:
                    preempt_frs.add(fr)
            group_results.append(
                GroupAssignment(
                    flavor, group_mode, max(b for _, _, b in best.values()), requests,
                    () if group_mode == AssignmentMode.FIT else tuple(sorted(reasons)), tried,
                )
            )
        results.append(PodSetAssignment(ps.name, ps.count, tuple(group_results)))
    return Assignment(tuple(results), dict(assumed), frozenset(preempt_frs))

"""Classical preemption: Kueue's policies, candidate order, minimal victim sets and reasons."""

from __future__ import annotations

from typing import Any

import pytest

from quotas.api import ClusterQueue, Cohort
from quotas.preemption import (
    AdmittedWorkload,
    PreemptionReason,
    Preemptor,
    candidate_order_key,
    find_victims,
    preemption_oracle,
    workload_fits,
)
from quotas.tree import QuotaTree
from quotas.usage import Usage

GPU = "nvidia.com/gpu"
A100 = ("a100", GPU)
G = 1000


def cq(name: str, gpus: int, *, cohort: str | None = None, **spec: Any) -> ClusterQueue:
    body: dict[str, Any] = {
        "resourceGroups": [{"coveredResources": [GPU], "flavors": [{"name": "a100", "resources": [{"name": GPU, "nominalQuota": gpus}]}]}],
        **spec,
    }
    if cohort:
        body["cohort"] = cohort
    return ClusterQueue.model_validate({"metadata": {"name": name}, "spec": body})


def wl(key: str, queue: str, priority: int, gpus: int, admitted_at: float = 0.0, **kw: Any) -> AdmittedWorkload:
    return AdmittedWorkload(key, queue, priority, admitted_at, {A100: gpus * G}, **kw)


def usage_of(tree: QuotaTree, admitted: list[AdmittedWorkload]) -> Usage:
    return Usage.of_admitted(tree, ((w.cluster_queue, w.usage) for w in admitted))


def victims(tree: QuotaTree, admitted: list[AdmittedWorkload], preemptor: Preemptor, **kw: Any) -> list[tuple[str, str]]:
    result = find_victims(tree, usage_of(tree, admitted), preemptor, admitted, **kw)
    return [(v.workload.key, str(v.reason)) for v in result.victims]


# --- within a ClusterQueue ----------------------------------------------------------------------

THREE = [wl("low", "q", 0, 1, 1.0), wl("mid", "q", 50, 1, 2.0), wl("high", "q", 100, 1, 3.0)]


@pytest.mark.parametrize(
    ("priority", "gpus", "expected"),
    [
        pytest.param(100, 1, [("low", "InClusterQueue")], id="takes only the lowest of three priorities"),
        pytest.param(75, 2, [("low", "InClusterQueue"), ("mid", "InClusterQueue")], id="two lower ones"),
        pytest.param(25, 2, [], id="not enough lower-priority workloads: nothing"),
        pytest.param(0, 1, [], id="equal priority is not lower"),
    ],
)
def test_within_cluster_queue_lower_priority(priority: int, gpus: int, expected: list[tuple[str, str]]) -> None:
    tree = QuotaTree([cq("q", 3, preemption={"withinClusterQueue": "LowerPriority"})])
    assert victims(tree, THREE, Preemptor("new", "q", priority, {A100: gpus * G})) == expected


def test_within_cluster_queue_never_preempts_nothing() -> None:
    tree = QuotaTree([cq("q", 3)])
    assert victims(tree, THREE, Preemptor("new", "q", 1000, {A100: G})) == []


def test_lower_or_newer_equal_priority_takes_newer_equals_only() -> None:
    tree = QuotaTree([cq("q", 2, preemption={"withinClusterQueue": "LowerOrNewerEqualPriority"})])
    admitted = [wl("older", "q", 5, 1, 1.0, queued_at=10.0), wl("newer", "q", 5, 1, 2.0, queued_at=30.0)]
    assert victims(tree, admitted, Preemptor("new", "q", 5, {A100: G}, queued_at=20.0)) == [("newer", "InClusterQueue")]
    assert victims(tree, admitted, Preemptor("new", "q", 5, {A100: G}, queued_at=40.0)) == []


def test_victim_set_is_minimised_by_putting_back_in_reverse_order() -> None:
    tree = QuotaTree([cq("q", 5, preemption={"withinClusterQueue": "LowerPriority"})])
    # most recently admitted first: small1, small2, then big; only big is needed
    admitted = [wl("big", "q", 0, 3, 1.0), wl("small2", "q", 0, 1, 2.0), wl("small1", "q", 0, 1, 3.0)]
    assert victims(tree, admitted, Preemptor("new", "q", 10, {A100: 3 * G})) == [("big", "InClusterQueue")]


def test_evicted_workloads_are_taken_first() -> None:
    tree = QuotaTree([cq("q", 2, preemption={"withinClusterQueue": "LowerPriority"})])
    admitted = [wl("running", "q", 0, 1, 1.0), wl("evicting", "q", 5, 1, 0.0, evicted=True)]
    assert victims(tree, admitted, Preemptor("new", "q", 10, {A100: G})) == [("evicting", "InClusterQueue")]


def test_candidate_order_key_matches_kueue() -> None:
    ws = [
        wl("own-low", "mine", 0, 1, 5.0),
        wl("other-high", "other", 9, 1, 1.0),
        wl("other-low-old", "other", 1, 1, 1.0),
        wl("other-low-new", "other", 1, 1, 2.0),
        wl("own-evicted", "mine", 9, 1, 0.0, evicted=True),
    ]
    ordered = sorted(ws, key=lambda w: candidate_order_key(w, "mine"))
    assert [w.key for w in ordered] == ["own-evicted", "other-low-new", "other-low-old", "other-high", "own-low"]


# --- within the cohort --------------------------------------------------------------------------


def reclaim_tree(reclaim: str = "Any", **extra: Any) -> QuotaTree:
    preemption = {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": reclaim, **extra}
    return QuotaTree([cq("reclaimer", 4, cohort="c", preemption=preemption), cq("borrower", 4, cohort="c")])


RECLAIM_STATE = [
    wl("own-low", "reclaimer", 0, 1, 1.0),
    wl("b-big", "borrower", 0, 4, 2.0),
    wl("b-extra", "borrower", 0, 3, 3.0),  # borrower uses 7 of its 4
]


def test_cohort_reclaim_takes_borrowers_job_and_spares_own_low_priority_job() -> None:
    tree = reclaim_tree("LowerPriority")
    usage = usage_of(tree, RECLAIM_STATE)
    assert tree.fits("reclaimer", {A100: 3 * G}, usage).mode.name == "NEEDS_PREEMPTION"
    result = find_victims(tree, usage, Preemptor("new", "reclaimer", 10, {A100: 3 * G}), RECLAIM_STATE)
    assert [(v.workload.key, v.reason) for v in result.victims] == [("b-extra", PreemptionReason.IN_COHORT_RECLAMATION)]
    assert workload_fits(tree, result.usage_after, "reclaimer", {A100: 3 * G}, result.borrowing_allowed)


def test_reclaim_respects_reclaim_policy_priority() -> None:
    tree = reclaim_tree("LowerPriority")
    # the borrower's jobs have the preemptor's priority: not lower, so not reclaimable; own job alone is not enough
    assert victims(tree, RECLAIM_STATE, Preemptor("new", "reclaimer", 0, {A100: 3 * G})) == []
    assert victims(reclaim_tree("Never"), RECLAIM_STATE, Preemptor("new", "reclaimer", 10, {A100: 3 * G})) == []


def test_queues_within_nominal_are_never_reclaimed_from() -> None:
    tree = reclaim_tree("Any")
    admitted = [wl("b", "borrower", 0, 4), wl("own", "reclaimer", 0, 4)]
    # the cohort is full but nobody borrows: only own lower-priority work can go
    assert victims(tree, admitted, Preemptor("new", "reclaimer", 10, {A100: G})) == [("own", "InClusterQueue")]


def borrowing_tree(**bwc: Any) -> QuotaTree:
    preemption: dict[str, Any] = {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "LowerPriority"}
    if bwc:
        preemption["borrowWithinCohort"] = bwc
    return QuotaTree([
        cq("needy", 2, cohort="c", preemption=preemption),
        cq("borrower", 4, cohort="c"),
        cq("idle", 6, cohort="c"),
    ])


BORROW_STATE = [
    wl("needy-high", "needy", 100, 2, 1.0),
    wl("b-low", "borrower", 0, 2, 3.0),
    wl("b-mid", "borrower", 5, 4, 2.0),
    wl("idle-own", "idle", 0, 4, 1.0),
]


@pytest.mark.parametrize(
    ("bwc", "expected"),
    [
        pytest.param({}, [], id="borrowWithinCohort unset: cannot preempt while borrowing"),
        pytest.param({"policy": "Never"}, [], id="policy Never"),
        pytest.param({"policy": "LowerPriority"}, [("b-low", "InCohortReclaimWhileBorrowing")], id="LowerPriority"),
        pytest.param({"policy": "LowerPriority", "maxPriorityThreshold": 0}, [("b-low", "InCohortReclaimWhileBorrowing")],
                     id="threshold admits priority 0"),
        pytest.param({"policy": "LowerPriority", "maxPriorityThreshold": -1}, [], id="threshold below every candidate"),
    ],
)
def test_borrow_within_cohort(bwc: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    tree = borrowing_tree(**bwc)
    preemptor = Preemptor("new", "needy", 10, {A100: 2 * G})
    assert tree.fits("needy", preemptor.request, usage_of(tree, BORROW_STATE)).needs_preemption == {A100}
    assert victims(tree, BORROW_STATE, preemptor) == expected


def test_hierarchical_reclaim_across_cohorts() -> None:
    tree = QuotaTree(
        [
            cq("a", 4, cohort="org1", preemption={"reclaimWithinCohort": "Any"}),
            cq("b", 4, cohort="org2"),
        ],
        [Cohort.model_validate({"metadata": {"name": "root"}}),
         Cohort.model_validate({"metadata": {"name": "org1"}, "spec": {"parentName": "root"}}),
         Cohort.model_validate({"metadata": {"name": "org2"}, "spec": {"parentName": "root"}})],
    )
    admitted = [wl("a-own", "a", 0, 2, 1.0), wl("b1", "b", 50, 4, 1.0), wl("b2", "b", 50, 2, 2.0)]
    result = find_victims(tree, usage_of(tree, admitted), Preemptor("new", "a", 0, {A100: 2 * G}), admitted)
    assert [(v.workload.key, str(v.reason)) for v in result.victims] == [("b2", "InCohortReclamation")]


def test_nothing_to_do_when_it_already_fits() -> None:
    tree = reclaim_tree()
    result = find_victims(tree, tree.empty_usage(), Preemptor("new", "reclaimer", 0, {A100: G}), [])
    assert not result and result.victims == ()


def test_preemption_oracle_tells_reclaim_from_preempt() -> None:
    tree = reclaim_tree("Any")
    usage = usage_of(tree, RECLAIM_STATE)
    oracle = preemption_oracle(tree, usage, Preemptor("new", "reclaimer", 10, {}), RECLAIM_STATE)
    assert oracle(A100, 3 * G) == ("Reclaim", 0)
    own_only = [wl("own", "reclaimer", 0, 4)]
    oracle = preemption_oracle(tree, usage_of(tree, own_only + [wl("b", "borrower", 0, 4)]),
                               Preemptor("new", "reclaimer", 10, {}), own_only)
    assert oracle(A100, 2 * G) == ("Preempt", 0)
    strict = reclaim_tree("LowerPriority")
    oracle = preemption_oracle(strict, usage_of(strict, RECLAIM_STATE), Preemptor("new", "reclaimer", -5, {}), RECLAIM_STATE)
    assert oracle(A100, 3 * G) == ("NoCandidates", 0)


def test_a_queue_back_within_quota_stops_lending_but_the_others_still_do() -> None:
    """Victims are read lazily, queue by queue: once a borrower is back within its quota its other
    workloads are skipped, and the other borrowers' later workloads are still taken."""
    tree = QuotaTree([
        cq("needy", 3, cohort="c", preemption={"reclaimWithinCohort": "Any"}),
        cq("a", 1, cohort="c"),
        cq("b", 0, cohort="c"),
    ])
    admitted = [wl("a1", "a", 0, 1, 10.0), wl("a2", "a", 0, 1, 9.0), wl("b1", "b", 0, 1, 2.0), wl("b2", "b", 0, 1, 3.0)]
    # most recent first: a1 brings "a" back to its quota, so a2 is skipped; then b2 and b1
    assert victims(tree, admitted, Preemptor("new", "needy", 0, {A100: 3 * G})) == [
        ("a1", "InCohortReclamation"), ("b2", "InCohortReclamation"), ("b1", "InCohortReclamation")]

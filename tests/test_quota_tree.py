"""Cohort tree, usage accounting and flavor assignment against Kueue's documented semantics."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from quotas.api import ClusterQueue, Cohort
from quotas.flavors import AssignmentMode, PodSetRequest, assign_flavors
from quotas.preemption import AdmittedWorkload, Preemptor, preemption_oracle
from quotas.tree import FitMode, QuotaTree
from quotas.units import format_amount, from_milli, milli

GPU = "nvidia.com/gpu"
A100 = ("a100", GPU)
G = 1000  # one GPU in milli-units


def resource_groups(flavors: dict[str, dict[str, Any]], covered: list[str] | None = None) -> list[dict[str, Any]]:
    """One resource group: ``{"a100": {"nvidia.com/gpu": 9}}`` or with limits as a dict."""
    covered = covered or sorted({r for res in flavors.values() for r in res})
    out = []
    for name, res in flavors.items():
        quotas = []
        for r in covered:
            q = res[r]
            quotas.append({"name": r, **(q if isinstance(q, dict) else {"nominalQuota": q})})
        out.append({"name": name, "resources": quotas})
    return [{"coveredResources": covered, "flavors": out}]


def cq(name: str, gpus: int | dict[str, Any] | None = None, *, cohort: str | None = None,
       flavors: dict[str, dict[str, Any]] | None = None, **spec: Any) -> ClusterQueue:
    body: dict[str, Any] = dict(spec)
    if cohort:
        body["cohort"] = cohort
    if flavors is not None:
        body["resourceGroups"] = resource_groups(flavors)
    elif gpus is not None:
        body["resourceGroups"] = resource_groups({"a100": {GPU: gpus}})
    return ClusterQueue.model_validate({"metadata": {"name": name}, "spec": body})


def cohort(name: str, gpus: int | dict[str, Any] | None = None, *, parent: str | None = None, **spec: Any) -> Cohort:
    body: dict[str, Any] = dict(spec)
    if parent:
        body["parentName"] = parent
    if gpus is not None:
        body["resourceGroups"] = resource_groups({"a100": {GPU: gpus}})
    return Cohort.model_validate({"metadata": {"name": name}, "spec": body})


# --- units --------------------------------------------------------------------------------------


def test_milli_rounds_up_and_round_trips() -> None:
    assert milli(Decimal("0.5")) == 500
    assert milli(Decimal("0.0001")) == 1
    assert milli(8) == 8000
    assert from_milli(1500) == Decimal("1.5")
    assert format_amount(4000, GPU) == "4"
    assert format_amount(500, "cpu") == "500m"
    assert format_amount(milli(64 * 2**30), "memory") == "64Gi"


# --- Kueue's documented borrowing examples (9 and 12 GPUs in one cohort) ------------------------

DOC_CASES = [
    # (team-a quota, team-b quota, team-a's maximum while team-b is idle)
    pytest.param(9, 12, 21, id="borrow everything team-b does not use"),
    pytest.param({"nominalQuota": 9, "borrowingLimit": 1}, 12, 10, id="borrowingLimit 1"),
    pytest.param(9, {"nominalQuota": 12, "lendingLimit": 1}, 10, id="team-b lendingLimit 1"),
]


@pytest.mark.parametrize(("a", "b", "maximum"), DOC_CASES)
def test_documented_borrowing_examples(a: Any, b: Any, maximum: int) -> None:
    tree = QuotaTree([cq("team-a", a, cohort="team-ab"), cq("team-b", b, cohort="team-ab")])
    idle = tree.empty_usage()
    assert tree.potential_available("team-a", A100) == maximum * G
    assert tree.available("team-a", A100, idle) == maximum * G
    assert tree.fits("team-a", {A100: 9 * G}, idle).mode == FitMode.FITS_NOMINAL
    at_max = tree.fits("team-a", {A100: maximum * G}, idle)
    assert at_max.mode == FitMode.FITS_BORROWING
    assert (at_max.borrow_level, at_max.borrow_from) == (1, "team-ab")
    assert tree.fits("team-a", {A100: maximum * G + 1}, idle).mode == FitMode.NEVER_FITS


def test_lending_limit_only_protects_what_team_b_does_not_use_beyond_its_guarantee() -> None:
    tree = QuotaTree([cq("team-a", 9, cohort="team-ab"), cq("team-b", {"nominalQuota": 12, "lendingLimit": 1}, cohort="team-ab")])
    guaranteed_full = tree.empty_usage().admit("team-b", {A100: 11 * G})
    assert tree.available("team-a", A100, guaranteed_full) == 10 * G  # the 1 lendable GPU is still free
    over = tree.empty_usage().admit("team-b", {A100: 12 * G})
    assert tree.available("team-a", A100, over) == 9 * G
    # team-b itself may use all 9 + 12, since team-a has no lending limit
    assert tree.potential_available("team-b", A100) == 21 * G


def test_lender_reclaims_what_the_borrower_took() -> None:
    tree = QuotaTree([cq("team-a", 9, cohort="team-ab"), cq("team-b", 12, cohort="team-ab")])
    usage = tree.empty_usage().admit("team-a", {A100: 21 * G})
    fit = tree.fits("team-b", {A100: 1 * G}, usage)
    assert fit.mode == FitMode.NEEDS_PREEMPTION
    assert fit.borrow_level == 0  # within its own nominal quota: a reclaim
    assert fit.reasons == ("insufficient unused quota for nvidia.com/gpu in flavor a100, 1 more needed",)
    assert fit.needs_preemption == {A100}
    assert usage.borrowed("team-a", A100) == 12 * G
    assert usage.borrowing("team-a") and not usage.borrowing("team-b")


def test_queue_without_cohort_cannot_borrow() -> None:
    tree = QuotaTree([cq("solo", 9)])
    usage = tree.empty_usage()
    assert tree.fits("solo", {A100: 9 * G}, usage).mode == FitMode.FITS_NOMINAL
    assert tree.fits("solo", {A100: 10 * G}, usage).mode == FitMode.NEVER_FITS
    usage = usage.admit("solo", {A100: 5 * G})
    assert tree.fits("solo", {A100: 5 * G}, usage).mode == FitMode.NEEDS_PREEMPTION


def test_resource_or_flavor_the_queue_does_not_define_never_fits() -> None:
    tree = QuotaTree([cq("a", 4, cohort="c"), cq("b", flavors={"h100": {GPU: 8}}, cohort="c")])
    fit = tree.fits("a", {("h100", GPU): G}, tree.empty_usage())
    assert fit.mode == FitMode.NEVER_FITS
    assert "unavailable" in fit.reasons[0]
    assert tree.fits("a", {A100: 0}, tree.empty_usage()).mode == FitMode.FITS_NOMINAL  # zero requests ignored


def test_cohort_quota_is_a_shared_pool_for_queues_with_zero_nominal() -> None:
    tree = QuotaTree([cq("zero", 0, cohort="hello")], [cohort("hello", 12)])
    usage = tree.empty_usage()
    fit = tree.fits("zero", {A100: 12 * G}, usage)
    assert fit.mode == FitMode.FITS_BORROWING
    assert tree.cohort("hello").subtree_quota[A100] == 12 * G
    assert not tree.cohort("hello").implicit
    assert tree.fits("zero", {A100: 13 * G}, usage).mode == FitMode.NEVER_FITS


def test_hierarchy_limits_apply_at_every_level() -> None:
    # root (10 own) -> org (borrowingLimit 2, lendingLimit 1) -> team (4); other (3) directly under root
    tree = QuotaTree(
        [cq("team", 4, cohort="org"), cq("other", 3, cohort="root")],
        [cohort("root", 10), cohort("org", {"nominalQuota": 0, "borrowingLimit": 2, "lendingLimit": 1}, parent="root")],
    )
    org, root = tree.cohort("org"), tree.cohort("root")
    assert org.subtree_quota[A100] == 4 * G and org.guaranteed[A100] == 3 * G
    assert root.subtree_quota[A100] == 10 * G + 1 * G + 3 * G
    assert tree.potential_available("team", A100) == 6 * G  # 4 in org + borrowingLimit 2
    assert tree.potential_available("other", A100) == 14 * G  # root pool + 1 lendable GPU of org
    usage = tree.empty_usage()
    assert tree.fits("team", {A100: 4 * G}, usage).borrow_level == 0
    six = tree.fits("team", {A100: 6 * G}, usage)
    assert (six.mode, six.borrow_level, six.borrow_from) == (FitMode.FITS_BORROWING, 2, "root")
    assert [h.node for h in six.resources[A100].headroom] == ["team", "org", "root"]
    # other takes the whole root pool; team keeps its guaranteed 3 (lendingLimit 1 of 4)
    usage = usage.admit("other", {A100: 14 * G})
    assert tree.available("team", A100, usage) == 3 * G
    assert tree.fits("team", {A100: 4 * G}, usage).mode == FitMode.NEEDS_PREEMPTION
    assert usage.get(org, A100) == 0 and usage.get(root, A100) == 14 * G


def test_borrow_level_is_height_of_lowest_subtree_that_fits() -> None:
    tree = QuotaTree(
        [cq("x", 2, cohort="left"), cq("y", 2, cohort="left"), cq("z", 2, cohort="right")],
        [cohort("top"), cohort("left", parent="top"), cohort("right", parent="top")],
    )
    usage = tree.empty_usage()
    assert tree.fits("x", {A100: 4 * G}, usage).borrow_level == 1  # y's quota in "left"
    assert tree.fits("x", {A100: 4 * G}, usage).borrow_from == "left"
    deep = tree.fits("x", {A100: 6 * G}, usage)
    assert (deep.borrow_level, deep.borrow_from) == (2, "top")


def test_implicit_cohort_and_tree_navigation() -> None:
    tree = QuotaTree([cq("a", 1, cohort="implicit"), cq("b", 1, cohort="implicit"), cq("c", 1)])
    top = tree.cohort("implicit")
    assert top.implicit and top.quotas == {}
    assert [n.name for n in tree.subtree_cluster_queues(top)] == ["a", "b"]
    assert {n.name for n in tree.roots} == {"implicit", "c"}
    assert tree.root("a") is top and tree.parent("c") is None
    with pytest.raises(KeyError):
        tree.cluster_queue("nope")


def test_cohort_cycle_is_rejected() -> None:
    with pytest.raises(ValueError, match="cycle"):
        QuotaTree([cq("a", 1, cohort="x")], [cohort("x", parent="y"), cohort("y", parent="x")])


# --- usage accounting ---------------------------------------------------------------------------


def test_admit_and_release_are_pure_and_inverse() -> None:
    tree = QuotaTree([cq("a", {"nominalQuota": 4, "lendingLimit": 1}, cohort="c"), cq("b", 4, cohort="c")])
    empty = tree.empty_usage()
    one = empty.admit("a", {A100: 2 * G})
    assert empty.is_empty and one.of("a") == {A100: 2 * G}
    assert one.get(tree.cohort("c"), A100) == 0  # within a's guaranteed 3 GPUs: nothing reaches the cohort
    two = one.admit("a", {A100: 3 * G})
    assert two.get(tree.cohort("c"), A100) == 2 * G  # 5 used, 3 guaranteed
    assert one.of("a") == {A100: 2 * G}  # the older snapshot is untouched
    assert two.subtree_total(tree.cohort("c")) == {A100: 5 * G}
    assert two.release("a", {A100: 3 * G}) == one
    assert two.release("a", {A100: 5 * G}).is_empty
    with pytest.raises(ValueError):
        one.release("a", {A100: 3 * G})
    with pytest.raises(ValueError):
        empty.admit(tree.cohort("c"), {A100: G})


def test_copy_on_write_shares_untouched_nodes() -> None:
    tree = QuotaTree([cq("a", 1, cohort="c"), cq("b", 1, cohort="c"), cq("solo", 1)])
    usage = tree.empty_usage().admit("solo", {A100: G})
    after = usage.admit("a", {A100: G})
    assert after.node("solo") is usage.node("solo")
    assert after.node("b") is usage.node("b")


# --- flavor assignment --------------------------------------------------------------------------


def two_flavor_tree(**spec: Any) -> QuotaTree:
    return QuotaTree(
        [
            cq("team", flavors={"a100": {GPU: 4}, "h100": {GPU: 8}}, cohort="c", **spec),
            cq("lender", flavors={"a100": {GPU: 4}, "h100": {GPU: 0}}, cohort="c"),
        ]
    )


def test_flavors_are_tried_in_order() -> None:
    tree = two_flavor_tree()
    usage = tree.empty_usage()
    small = assign_flavors(tree, usage, "team", [PodSetRequest("main", 2, {GPU: G})])
    assert small.mode == AssignmentMode.FIT and small.podsets[0].flavors == {GPU: "a100"}
    assert small.usage == {A100: 2 * G} and not small.borrows
    # 6 GPUs fit a100 only by borrowing the lender's 4: the default whenCanBorrow=Borrow stops there
    big = assign_flavors(tree, usage, "team", [PodSetRequest("main", 6, {GPU: G})])
    assert big.podsets[0].flavors == {GPU: "a100"} and big.borrow_level == 1


def test_when_can_borrow_try_next_flavor_prefers_a_flavor_without_borrowing() -> None:
    tree = two_flavor_tree(flavorFungibility={"whenCanBorrow": "TryNextFlavor"})
    a = assign_flavors(tree, tree.empty_usage(), "team", [PodSetRequest("main", 6, {GPU: G})])
    assert a.podsets[0].flavors == {GPU: "h100"} and a.borrow_level == 0


def test_when_can_preempt() -> None:
    usage_spec = {"preemption": {"withinClusterQueue": "LowerPriority"}}
    default = two_flavor_tree(**usage_spec)
    full_a100 = default.empty_usage().admit("team", {A100: 4 * G}).admit("lender", {A100: 4 * G})
    # default TryNextFlavor: a100 needs preemption, h100 fits
    a = assign_flavors(default, full_a100, "team", [PodSetRequest("main", 2, {GPU: G})])
    assert a.mode == AssignmentMode.FIT and a.podsets[0].flavors == {GPU: "h100"}
    # whenCanPreempt: Preempt stops at a100
    eager = two_flavor_tree(flavorFungibility={"whenCanPreempt": "Preempt"}, **usage_spec)
    a = assign_flavors(eager, full_a100, "team", [PodSetRequest("main", 2, {GPU: G})])
    assert a.mode == AssignmentMode.PREEMPT and a.podsets[0].flavors == {GPU: "a100"}
    assert a.preempt_frs == {A100}
    assert a.message == (
        "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor a100, 2 more needed"
    )


def test_preemption_oracle_without_candidates_falls_through_to_next_flavor_choice() -> None:
    tree = two_flavor_tree(preemption={"withinClusterQueue": "LowerPriority"})
    admitted = [
        AdmittedWorkload("mine", "team", 100, 1.0, {A100: 4 * G}),
        AdmittedWorkload("lent", "lender", 0, 1.0, {A100: 4 * G}),
        AdmittedWorkload("h", "team", 0, 2.0, {("h100", GPU): 8 * G}),
    ]
    usage = tree.empty_usage().admit_many((w.cluster_queue, w.usage) for w in admitted)
    oracle = preemption_oracle(tree, usage, Preemptor("new", "team", 50, {}), admitted)
    a = assign_flavors(tree, usage, "team", [PodSetRequest("main", 2, {GPU: G})], oracle=oracle)
    # a100 holds only a higher-priority workload (no candidates); h100 can preempt "h"
    assert a.mode == AssignmentMode.PREEMPT and a.podsets[0].flavors == {GPU: "h100"}


def test_ineligible_flavor_is_skipped_with_its_reason() -> None:
    tree = two_flavor_tree()

    def eligible(podset: str, flavor: str) -> str | None:
        return f"untolerated taint gpu=a100:NoSchedule in flavor {flavor}" if flavor == "a100" else None

    a = assign_flavors(tree, tree.empty_usage(), "team", [PodSetRequest("main", 1, {GPU: G})], eligible=eligible)
    assert a.podsets[0].flavors == {GPU: "h100"}
    none = assign_flavors(tree, tree.empty_usage(), "team", [PodSetRequest("main", 1, {GPU: G})],
                          eligible=lambda p, f: f"flavor {f} doesn't match node affinity")
    assert none.mode == AssignmentMode.NO_FIT
    assert "flavor h100 doesn't match node affinity" in none.message


def test_earlier_podsets_count_against_later_ones() -> None:
    tree = QuotaTree([cq("solo", flavors={"a100": {GPU: 4}, "h100": {GPU: 4}})])
    a = assign_flavors(tree, tree.empty_usage(), "solo",
                       [PodSetRequest("driver", 1, {GPU: 2 * G}), PodSetRequest("workers", 3, {GPU: G})])
    assert [p.flavors[GPU] for p in a.podsets] == ["a100", "h100"]
    assert a.usage == {A100: 2 * G, ("h100", GPU): 3 * G}
    too_big = assign_flavors(tree, tree.empty_usage(), "solo", [PodSetRequest("main", 5, {GPU: G})])
    assert too_big.mode == AssignmentMode.NO_FIT
    assert "> maximum capacity (4)" in too_big.message


def test_resource_groups_and_pods_resource() -> None:
    queue = ClusterQueue.model_validate({
        "metadata": {"name": "q"},
        "spec": {"resourceGroups": [
            {"coveredResources": ["cpu", "pods"], "flavors": [{"name": "std", "resources": [
                {"name": "cpu", "nominalQuota": 8}, {"name": "pods", "nominalQuota": 2}]}]},
            {"coveredResources": [GPU], "flavors": [{"name": "a100", "resources": [{"name": GPU, "nominalQuota": 8}]}]},
        ]},
    })
    tree = QuotaTree([queue])
    ok = assign_flavors(tree, tree.empty_usage(), "q", [PodSetRequest("main", 2, {"cpu": 500, GPU: G})])
    assert ok.mode == AssignmentMode.FIT
    assert ok.podsets[0].flavors == {"cpu": "std", "pods": "std", GPU: "a100"}
    assert ok.usage[("std", "pods")] == 2000
    three_pods = assign_flavors(tree, tree.empty_usage(), "q", [PodSetRequest("main", 3, {"cpu": 500})])
    assert three_pods.mode == AssignmentMode.NO_FIT
    missing = assign_flavors(tree, tree.empty_usage(), "q", [PodSetRequest("main", 1, {"memory": G})])
    assert missing.mode == AssignmentMode.NO_FIT and "resource memory unavailable in ClusterQueue" in missing.message

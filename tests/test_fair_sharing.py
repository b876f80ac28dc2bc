"""Fair sharing: dominant resource share, the admission tournament and fair-sharing preemption."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest

from quotas.api import ClusterQueue, Cohort, FairSharingConfig
from quotas.fair_sharing import (
    TournamentEntry,
    almost_lcas,
    dominant_resource_share,
    fair_sharing_order,
    less_than_initial_share,
    less_than_or_equal_to_final_share,
    parse_strategies,
    tournament_winner,
)
from quotas.preemption import AdmittedWorkload, Preemptor, find_victims
from quotas.tree import QuotaTree
from quotas.usage import Usage

GPU = "nvidia.com/gpu"
A100 = ("a100", GPU)
G = 1000
PREEMPT = {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "Any"}


def groups(quotas: dict[str, int]) -> list[dict[str, Any]]:
    return [{"coveredResources": sorted(quotas), "flavors": [{"name": "a100", "resources": [
        {"name": r, "nominalQuota": quotas[r]} for r in sorted(quotas)]}]}]


def cq(name: str, gpus: int, cohort: str, weight: str | None = None, **quotas: int) -> ClusterQueue:
    spec: dict[str, Any] = {"cohort": cohort, "resourceGroups": groups({GPU: gpus, **quotas}), "preemption": PREEMPT}
    if weight is not None:
        spec["fairSharing"] = {"weight": weight}
    return ClusterQueue.model_validate({"metadata": {"name": name}, "spec": spec})


def cohort(name: str, gpus: int | None = None, parent: str | None = None, weight: str | None = None) -> Cohort:
    spec: dict[str, Any] = {}
    if gpus is not None:
        spec["resourceGroups"] = groups({GPU: gpus})
    if parent:
        spec["parentName"] = parent
    if weight is not None:
        spec["fairSharing"] = {"weight": weight}
    return Cohort.model_validate({"metadata": {"name": name}, "spec": spec})


def documented_tree() -> QuotaTree:
    """Kueue's fair-sharing setting: queues of 3 and 1 GPUs plus 4 GPUs shared by their cohort."""
    return QuotaTree([cq("a", 3, "shared"), cq("b", 1, "shared")], [cohort("shared", 4)])


def drs(tree: QuotaTree, usage: Usage, name: str) -> float:
    return dominant_resource_share(tree, usage, name).value


def fill_by_tournament(tree: QuotaTree, usage: Usage, queues: list[str], gpus: int = 1, limit: int = 200) -> Usage:
    """Admit 1-GPU heads from endless backlogs, one tournament winner at a time, while any head fits."""
    seq = 0
    for _ in range(limit):
        entries = []
        for i, name in enumerate(queues):
            request = {A100: gpus * G}
            if tree.fits(name, request, usage).fits:
                entries.append(TournamentEntry(f"{name}-{seq}", name, request, timestamp=seq * len(queues) + i))
        if not entries:
            return usage
        winner = tournament_winner(tree, usage, entries)
        assert winner is not None
        usage = usage.admit(winner.cluster_queue, winner.usage)
        seq += 1
    raise AssertionError("backlog never stopped fitting")


# --- dominant resource share --------------------------------------------------------------------


def test_drs_is_borrowed_per_mille_of_what_the_parent_lends_over_weight() -> None:
    tree = documented_tree()
    usage = tree.empty_usage().admit("a", {A100: 7 * G}).admit("b", {A100: G})
    share = dominant_resource_share(tree, usage, "a")
    assert share.ratio == Fraction(4 * 1000, 8) and share.resource == GPU and share.borrowing
    assert share.value == 500 and share.rounded == 500
    assert dominant_resource_share(tree, usage, "b").is_zero
    assert dominant_resource_share(tree, usage, tree.cohort("shared")).is_zero  # the root has no parent
    heavy = QuotaTree([cq("a", 3, "shared", weight="2"), cq("b", 1, "shared")], [cohort("shared", 4)])
    assert drs(heavy, Usage.of_admitted(heavy, [("a", {A100: 7 * G})]), "a") == 250


def test_weight_zero_borrows_last() -> None:
    tree = QuotaTree([cq("zero", 1, "c", weight="0"), cq("one", 1, "c")], [cohort("c", 2)])
    usage = tree.empty_usage()
    within = dominant_resource_share(tree, usage.admit("zero", {A100: G}), "zero")
    assert within.is_zero and within.value == 0
    borrowing = dominant_resource_share(tree, usage.admit("zero", {A100: 2 * G}), "zero")
    assert borrowing.value == math.inf and borrowing.rounded == 2**63 - 1
    lots = dominant_resource_share(tree, usage.admit("one", {A100: 3 * G}), "one")
    assert borrowing > lots
    # both at nominal: the tournament lets the weight-1 queue borrow first
    usage = usage.admit("zero", {A100: G}).admit("one", {A100: G})
    entries = [TournamentEntry("z", "zero", {A100: G}, timestamp=0), TournamentEntry("o", "one", {A100: G}, timestamp=1)]
    assert tournament_winner(tree, usage, entries).key == "o"  # type: ignore[union-attr]


def test_dominant_resource_is_the_largest_ratio() -> None:
    tree = QuotaTree([cq("a", 2, "c", cpu=4), cq("b", 2, "c", cpu=4)])
    usage = tree.empty_usage().admit("a", {A100: 3 * G, ("a100", "cpu"): 8 * G})
    share = dominant_resource_share(tree, usage, "a")
    assert share.resource == "cpu" and share.ratio == Fraction(4 * 1000, 8)
    assert share.borrowed == {A100, ("a100", "cpu")}


# --- tournament (admission) ---------------------------------------------------------------------


def test_documented_example_converges_to_equal_shares() -> None:
    tree = documented_tree()
    usage = fill_by_tournament(tree, tree.empty_usage(), ["a", "b"])
    assert (usage.get("a", A100), usage.get("b", A100)) == (5 * G, 3 * G)
    assert drs(tree, usage, "a") == drs(tree, usage, "b") == 250


def test_freed_capacity_goes_to_the_lower_share_until_equal() -> None:
    tree = documented_tree()
    usage = tree.empty_usage().admit("a", {A100: 7 * G}).admit("b", {A100: G})
    usage = usage.release("a", {A100: 2 * G})  # two of a's jobs finish
    winners: list[str] = []
    for _ in range(2):
        entries = [TournamentEntry(f"a{len(winners)}", "a", {A100: G}, timestamp=0),
                   TournamentEntry(f"b{len(winners)}", "b", {A100: G}, timestamp=1)]
        won = tournament_winner(tree, usage, entries)
        assert won is not None
        winners.append(won.cluster_queue)
        usage = usage.admit(won.cluster_queue, won.usage)
    assert winners == ["b", "b"]
    assert drs(tree, usage, "a") == drs(tree, usage, "b") == 250


def test_tournament_breaks_ties_by_priority_then_time() -> None:
    tree = documented_tree()
    usage = tree.empty_usage()
    early = TournamentEntry("early", "a", {A100: G}, priority=0, timestamp=1)
    urgent = TournamentEntry("urgent", "b", {A100: G}, priority=10, timestamp=2)
    assert [e.key for e in fair_sharing_order(tree, usage, [early, urgent])] == ["urgent", "early"]
    same = TournamentEntry("later", "b", {A100: G}, priority=0, timestamp=2)
    assert [e.key for e in fair_sharing_order(tree, usage, [same, early])] == ["early", "later"]
    with pytest.raises(ValueError):
        fair_sharing_order(tree, usage, [early, early])


def test_hierarchical_cohorts_split_by_weight() -> None:
    tree = QuotaTree(
        [cq("imp", 0, "important-org"), cq("reg", 0, "regular-org")],
        [cohort("root-cohort", 40), cohort("important-org", parent="root-cohort", weight="0.75"),
         cohort("regular-org", parent="root-cohort", weight="0.25")],
    )
    usage = fill_by_tournament(tree, tree.empty_usage(), ["imp", "reg"])
    assert (usage.get("imp", A100), usage.get("reg", A100)) == (30 * G, 10 * G)
    imp = dominant_resource_share(tree, usage, tree.cohort("important-org"))
    reg = dominant_resource_share(tree, usage, tree.cohort("regular-org"))
    assert imp == reg and imp.value == 1000


# --- fair-sharing preemption --------------------------------------------------------------------


def preempt_until_stable(tree: QuotaTree, admitted: list[AdmittedWorkload], queue: str, gpus: int = 1,
                         config: FairSharingConfig | bool = True) -> tuple[Usage, list[list[tuple[str, str]]]]:
    usage = Usage.of_admitted(tree, ((w.cluster_queue, w.usage) for w in admitted))
    rounds: list[list[tuple[str, str]]] = []
    for n in range(50):
        preemptor = Preemptor(f"{queue}-new{n}", queue, 0, {A100: gpus * G}, queued_at=1000.0 + n)
        result = find_victims(tree, usage, preemptor, admitted, fair_sharing=config)
        if not result:
            return usage, rounds
        assert result.algorithm == "fair"
        rounds.append([(v.workload.key, str(v.reason)) for v in result.victims])
        for v in result.victims:
            admitted.remove(v.workload)
        usage = result.usage_after.admit(queue, preemptor.request)
        admitted.append(AdmittedWorkload(preemptor.key, queue, 0, 2000.0 + n, preemptor.request))
    raise AssertionError("preemption never stopped")


def test_fair_preemption_rebalances_the_documented_example() -> None:
    tree = documented_tree()
    admitted = [AdmittedWorkload(f"a{i}", "a", 0, float(i), {A100: G}) for i in range(7)]
    admitted.append(AdmittedWorkload("b0", "b", 0, 0.0, {A100: G}))
    usage, rounds = preempt_until_stable(tree, admitted, "b")
    assert rounds == [[("a6", "InCohortFairSharing")], [("a5", "InCohortFairSharing")]]
    assert drs(tree, usage, "a") == drs(tree, usage, "b") == 250


def test_less_than_initial_share_breaks_a_greedy_workload() -> None:
    tree = documented_tree()
    greedy = [AdmittedWorkload("greedy", "a", 0, 1.0, {A100: 7 * G}), AdmittedWorkload("b0", "b", 0, 0.0, {A100: G})]
    usage = Usage.of_admitted(tree, ((w.cluster_queue, w.usage) for w in greedy))
    preemptor = Preemptor("b-new", "b", 0, {A100: 2 * G})
    only_final = FairSharingConfig(enable=True, preemption_strategies=["LessThanOrEqualToFinalShare"])
    assert not find_victims(tree, usage, preemptor, greedy, fair_sharing=only_final)
    both = find_victims(tree, usage, preemptor, greedy, fair_sharing=FairSharingConfig(enable=True))
    assert [(v.workload.key, str(v.reason)) for v in both.victims] == [("greedy", "InCohortFairSharing")]


def test_fair_preemption_between_weighted_cohorts() -> None:
    tree = QuotaTree(
        [cq("imp", 0, "important-org"), cq("reg", 0, "regular-org")],
        [cohort("root-cohort", 40), cohort("important-org", parent="root-cohort", weight="0.75"),
         cohort("regular-org", parent="root-cohort", weight="0.25")],
    )
    admitted = [AdmittedWorkload(f"r{i}", "reg", 0, float(i), {A100: G}) for i in range(40)]
    usage, rounds = preempt_until_stable(tree, admitted, "imp")
    assert len(rounds) == 30 and all(r[0][1] == "InCohortFairSharing" for r in rounds)
    assert (usage.get("imp", A100), usage.get("reg", A100)) == (30 * G, 10 * G)


def test_fair_preemption_takes_own_lower_priority_work_as_in_cluster_queue() -> None:
    tree = documented_tree()
    admitted = [AdmittedWorkload("own-low", "b", -1, 0.0, {A100: G})]
    admitted += [AdmittedWorkload(f"a{i}", "a", 0, float(i), {A100: G}) for i in range(5)]
    admitted += [AdmittedWorkload("b1", "b", 0, 0.0, {A100: 2 * G})]
    usage = Usage.of_admitted(tree, ((w.cluster_queue, w.usage) for w in admitted))
    # shares are equal (250 each); b's new workload may only displace its own lower-priority job
    result = find_victims(tree, usage, Preemptor("b-new", "b", 0, {A100: G}), admitted, fair_sharing=True)
    assert [(v.workload.key, str(v.reason)) for v in result.victims] == [("own-low", "InClusterQueue")]


# --- strategies and helpers ---------------------------------------------------------------------


def test_strategies() -> None:
    tree = documented_tree()
    u = tree.empty_usage()
    s = {n: dominant_resource_share(tree, u.admit("a", {A100: n * G}), "a") for n in (3, 4, 5)}
    assert less_than_or_equal_to_final_share(s[4], s[5], s[4]) and not less_than_or_equal_to_final_share(s[5], s[5], s[4])
    assert less_than_initial_share(s[4], s[5], None) and not less_than_initial_share(s[5], s[5], None)
    assert len(parse_strategies(None)) == 2 and len(parse_strategies(["LessThanInitialShare"])) == 1
    with pytest.raises(ValueError):
        parse_strategies(["LessThanInitialShare", "LessThanOrEqualToFinalShare"])


def test_almost_lcas() -> None:
    tree = QuotaTree(
        [cq("x", 1, "left"), cq("y", 1, "left"), cq("z", 1, "right")],
        [cohort("top"), cohort("left", parent="top"), cohort("right", parent="top")],
    )
    assert [n.name for n in almost_lcas(tree, "x", "y")] == ["x", "y"]
    assert [n.name for n in almost_lcas(tree, "x", "z")] == ["left", "right"]

"""Property tests over random cohort trees: quotas and limits always hold, usage returns to zero,
and every victim set is sufficient and minimal.

The invariants are checked from the manifests themselves, not from the engine's
``available``: for every node, the usage of all ClusterQueues below it against the sum of
all nominal quotas below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from quotas.api import ClusterQueue, Cohort
from quotas.preemption import AdmittedWorkload, PreemptionReason, Preemptor, candidate_order_key, find_victims, workload_fits
from quotas.tree import QuotaTree
from quotas.units import FlavorResource
from quotas.usage import Usage

GPU = "nvidia.com/gpu"
RESOURCES = (GPU, "cpu")
FRS: tuple[FlavorResource, ...] = tuple(("f", r) for r in RESOURCES)
U = 1000  # one unit in milli-units

Key = tuple[str, str]  # ("ClusterQueue" | "Cohort", name)


@dataclass
class Layout:
    """The random configuration, kept as plain data so invariants are computed independently."""

    cluster_queues: list[ClusterQueue]
    cohorts: list[Cohort]
    parent: dict[Key, Key | None] = field(default_factory=dict)
    quota: dict[Key, dict[FlavorResource, tuple[int, int | None, int | None]]] = field(default_factory=dict)

    def tree(self) -> QuotaTree:
        return QuotaTree(self.cluster_queues, self.cohorts)

    def subtree(self, key: Key) -> list[Key]:
        out = [key]
        for child, p in self.parent.items():
            if p == key:
                out += self.subtree(child)
        return out

    def root(self, key: Key) -> Key:
        while self.parent.get(key) is not None:
            key = self.parent[key]  # type: ignore[assignment]
        return key


def _groups(quotas: dict[FlavorResource, tuple[int, int | None, int | None]]) -> list[dict[str, Any]]:
    resources = []
    for (_, r), (nominal, bl, ll) in sorted(quotas.items(), key=lambda kv: RESOURCES.index(kv[0][1])):
        q: dict[str, Any] = {"name": r, "nominalQuota": nominal}
        if bl is not None:
            q["borrowingLimit"] = bl
        if ll is not None:
            q["lendingLimit"] = ll
        resources.append(q)
    return [{"coveredResources": list(RESOURCES), "flavors": [{"name": "f", "resources": resources}]}]


@st.composite
def quotas_for(draw: st.DrawFn, has_parent: bool) -> dict[FlavorResource, tuple[int, int | None, int | None]]:
    out = {}
    for fr in FRS:
        nominal = draw(st.integers(0, 6))
        bl = draw(st.one_of(st.none(), st.integers(0, 4))) if has_parent else None
        ll = draw(st.one_of(st.none(), st.integers(0, nominal))) if has_parent else None
        out[fr] = (nominal, bl, ll)
    return out


POLICIES = st.fixed_dictionaries({
    "withinClusterQueue": st.sampled_from(["Never", "LowerPriority", "LowerPriority", "LowerOrNewerEqualPriority"]),
    "reclaimWithinCohort": st.sampled_from(["Never", "LowerPriority", "Any", "Any"]),
    "borrowWithinCohort": st.one_of(
        st.just({"policy": "Never"}),
        st.builds(lambda t: {"policy": "LowerPriority", **({} if t is None else {"maxPriorityThreshold": t})},
                  st.one_of(st.none(), st.integers(0, 3))),
    ),
})


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    n_cohorts = draw(st.integers(0, 3))
    cohorts: list[Cohort] = []
    layout = Layout([], cohorts)
    for i in range(n_cohorts):
        name = f"c{i}"
        parent = draw(st.one_of(st.none(), st.sampled_from([f"c{j}" for j in range(i)]))) if i else None
        own = draw(st.booleans())
        quotas = draw(quotas_for(parent is not None)) if own else {}
        spec: dict[str, Any] = {"fairSharing": {"weight": draw(st.sampled_from(["1", "0.5", "2", "0"]))}}
        if parent:
            spec["parentName"] = parent
        if quotas:
            spec["resourceGroups"] = _groups(quotas)
        cohorts.append(Cohort.model_validate({"metadata": {"name": name}, "spec": spec}))
        layout.parent[("Cohort", name)] = ("Cohort", parent) if parent else None
        layout.quota[("Cohort", name)] = quotas
    cohort_choices = [None, "implicit"] + [f"c{i}" for i in range(n_cohorts)]
    for i in range(draw(st.integers(1, 4))):
        name = f"q{i}"
        parent = draw(st.sampled_from(cohort_choices))
        quotas = draw(quotas_for(parent is not None))
        spec = {"resourceGroups": _groups(quotas), "preemption": draw(POLICIES),
                "fairSharing": {"weight": draw(st.sampled_from(["1", "0.5", "2", "0"]))}}
        if parent:
            spec["cohort"] = parent
        layout.cluster_queues.append(ClusterQueue.model_validate({"metadata": {"name": name}, "spec": spec}))
        layout.parent[("ClusterQueue", name)] = ("Cohort", parent) if parent else None
        layout.quota[("ClusterQueue", name)] = quotas
        if parent == "implicit":
            layout.parent.setdefault(("Cohort", "implicit"), None)
            layout.quota.setdefault(("Cohort", "implicit"), {})
    return layout


def check_invariants(layout: Layout, usage: Usage) -> None:
    """No node uses more than its subtree's quota allows, no borrowing or lending limit is exceeded."""
    used = {key: dict(usage.of(key[1])) for key in layout.parent if key[0] == "ClusterQueue"}

    def total(keys: list[Key], fr: FlavorResource) -> tuple[int, int]:
        u = sum(used[k].get(fr, 0) for k in keys if k[0] == "ClusterQueue")
        q = sum(layout.quota[k][fr][0] * U for k in keys if fr in layout.quota[k])
        return u, q

    for key in layout.parent:
        inside = layout.subtree(key)
        everything = layout.subtree(layout.root(key))
        for fr in FRS:
            u_in, q_in = total(inside, fr)
            u_all, q_all = total(everything, fr)
            assert u_all <= q_all, f"tree of {key} uses {u_all} of {fr} over its quota {q_all}"
            if layout.parent[key] is None:
                assert u_in <= q_in
                continue
            nominal, bl, ll = layout.quota[key].get(fr, (0, None, None))
            if bl is not None:
                assert u_in - q_in <= bl * U, f"{key} borrows {u_in - q_in} of {fr} over borrowingLimit {bl}"
            if ll is not None:
                lent = (u_all - u_in) - (q_all - q_in)
                assert lent <= ll * U, f"{key} lends {lent} of {fr} over lendingLimit {ll}"


ops = st.lists(
    st.tuples(
        st.sampled_from([True, True, True, False]),  # admit three times as often as release
        st.integers(0, 1000),
        st.tuples(*(st.integers(0, 3) for _ in FRS)),
        st.integers(0, 1),  # take half a unit off: fractional amounts
    ),
    min_size=5, max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts(), steps=ops, seed=st.randoms(use_true_random=False))
def test_admissions_never_exceed_quota_and_release_returns_to_zero(layout: Layout, steps: list[Any], seed: Any) -> None:
    tree = layout.tree()
    names = tree.cluster_queue_names
    usage = tree.empty_usage()
    admitted: list[tuple[str, dict[FlavorResource, int]]] = []
    for is_admit, pick, amounts, half in steps:
        if is_admit or not admitted:
            cq = names[pick % len(names)]
            request = {fr: a * U - half * 500 * (a > 0) for fr, a in zip(FRS, amounts)}
            fit = tree.fits(cq, request, usage)
            if not fit.fits:
                continue
            before = usage
            usage = usage.admit(cq, request)
            assert usage.release(cq, request) == before  # release is the exact inverse
            admitted.append((cq, request))
        else:
            cq, request = admitted.pop(pick % len(admitted))
            usage = usage.release(cq, request)
        check_invariants(layout, usage)
    event(f"admitted at the end: {min(len(admitted), 5)}")
    seed.shuffle(admitted)
    for cq, request in admitted:
        usage = usage.release(cq, request)
    assert usage.is_empty
    assert all(not usage.node(n) for n in tree.nodes)


@st.composite
def preemption_cases(draw: st.DrawFn, most: int = 20) -> tuple[Layout, list[AdmittedWorkload], Preemptor]:
    layout = draw(layouts())
    tree = layout.tree()
    names = tree.cluster_queue_names
    usage = tree.empty_usage()
    admitted: list[AdmittedWorkload] = []
    for i in range(draw(st.integers(4, most))):
        cq = draw(st.sampled_from(names))
        frs = draw(st.sampled_from([FRS[:1], FRS[1:], FRS]))
        request = {fr: draw(st.integers(1, 2)) * U for fr in frs}
        if tree.fits(cq, request, usage).fits:
            usage = usage.admit(cq, request)
            admitted.append(AdmittedWorkload(
                f"w{i}", cq, draw(st.integers(0, 3)), float(i), request,
                evicted=draw(st.booleans()) and draw(st.booleans()), queued_at=float(draw(st.integers(0, 20))),
            ))
    # a preemptor that does not fit now in some FlavorResource but could once others make room
    blocked = [(cq, fr) for cq in names for fr in FRS
               if tree.potential_available(cq, fr) - tree.available(cq, fr, usage) >= U]
    cq, short = draw(st.sampled_from(blocked)) if blocked else (draw(st.sampled_from(names)), FRS[0])
    request = {fr: draw(st.integers(0, 2)) * U for fr in FRS}
    available, potential = tree.available(cq, short, usage), tree.potential_available(cq, short)
    request[short] = available + draw(st.integers(1, max(1, (potential - available) // U))) * U
    preemptor = Preemptor("new", cq, draw(st.integers(0, 4)), request, queued_at=float(draw(st.integers(0, 20))))
    return layout, admitted, preemptor


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=preemption_cases(), fair=st.sampled_from([False, True]))
def test_victim_sets_are_sufficient_and_minimal(case: tuple[Layout, list[AdmittedWorkload], Preemptor], fair: bool) -> None:
    layout, admitted, preemptor = case
    tree = layout.tree()
    usage = Usage.of_admitted(tree, ((w.cluster_queue, w.usage) for w in admitted))
    result = find_victims(tree, usage, preemptor, admitted, fair_sharing=fair)
    event(f"{'fair' if fair else 'classical'} victims: {min(len(result.victims), 3)}")
    if not result.victims:
        return
    keys = [v.workload.key for v in result.victims]
    assert len(set(keys)) == len(keys) and set(keys) <= {w.key for w in admitted}
    expected_after = usage
    for v in result.victims:
        expected_after = expected_after.release(v.workload.cluster_queue, v.workload.usage)
    assert result.usage_after == expected_after
    borrow = result.borrowing_allowed
    # sufficient: with the victims gone the preemptor fits
    assert workload_fits(tree, result.usage_after, preemptor.cluster_queue, preemptor.request, borrow)
    check_invariants(layout, result.usage_after.admit(preemptor.cluster_queue, preemptor.request))
    # minimal: putting any single victim back makes it not fit
    for v in result.victims:
        back = result.usage_after.admit(v.workload.cluster_queue, v.workload.usage)
        assert not workload_fits(tree, back, preemptor.cluster_queue, preemptor.request, borrow), v.workload.key
    # reasons and policies
    spec = tree.cluster_queue(preemptor.cluster_queue).cluster_queue.spec.preemption  # type: ignore[union-attr]
    for v in result.victims:
        same = v.workload.cluster_queue == preemptor.cluster_queue
        assert (v.reason == PreemptionReason.IN_CLUSTER_QUEUE) == same
        policy = spec.within_cluster_queue if same else spec.reclaim_within_cohort
        assert policy != "Never"
        if policy == "LowerPriority":
            assert v.workload.priority < preemptor.priority
        if fair:
            assert v.reason in (PreemptionReason.IN_CLUSTER_QUEUE, PreemptionReason.IN_COHORT_FAIR_SHARING)
        elif v.reason == PreemptionReason.IN_COHORT_RECLAIM_WHILE_BORROWING:
            assert spec.borrow_within_cohort is not None and spec.borrow_within_cohort.policy == "LowerPriority"
            assert v.workload.priority < preemptor.priority


def eager_classical(tree: QuotaTree, usage: Usage, pre: Preemptor, admitted: list[AdmittedWorkload]) -> list[tuple[str, str]]:
    """Kueue's classical search written plainly, as a reference for the lazy one: classify every
    admitted workload, sort each group, then take candidates in order while they are still valid."""
    node = tree.cluster_queue(pre.cluster_queue)
    spec = node.cluster_queue.spec.preemption  # type: ignore[union-attr]
    frs = {fr for fr, v in pre.request.items() if v > 0 and v > tree.available(node, fr, usage)}
    if not frs:
        return []
    bwc = spec.borrow_within_cohort
    allowed = bwc is not None and bwc.policy != "Never"
    threshold = bwc.max_priority_threshold if allowed and bwc is not None else None

    def satisfies(policy: str, w: AdmittedWorkload) -> bool:
        if policy == "LowerPriority":
            return w.priority < pre.priority
        if policy == "LowerOrNewerEqualPriority":
            return w.priority < pre.priority or (w.priority == pre.priority and pre.queued_at < w.queued_at)
        return policy == "Any"

    def classify(w: AdmittedWorkload, advantage: bool) -> str | None:
        """None, or the variant: "own", "advantage", "without" (borrowing) or "while" (borrowing)."""
        same = w.cluster_queue == node.name
        if not (w.frs & frs) or not satisfies(spec.within_cluster_queue if same else spec.reclaim_within_cohort, w):
            return None
        if same:
            return "own"
        if advantage:
            return "advantage"
        if not allowed or w.priority >= pre.priority or (threshold is not None and w.priority > threshold):
            return "without"
        return "while"

    def collect(current: Any, lca: Any, skip: Any, advantage: bool, out: list[tuple[AdmittedWorkload, Any, str]]) -> None:
        for child in tree.children(current):
            if not child.is_cluster_queue and child is not skip and not tree.within_nominal(child, frs, usage):
                collect(child, lca, skip, advantage, out)
        for child in tree.children(current):
            if child.is_cluster_queue and child is not node and not tree.within_nominal(child, frs, usage):
                for w in admitted:
                    if w.cluster_queue == child.name and (v := classify(w, advantage)) is not None:
                        out.append((w, lca, v))

    own = [(w, None, "own") for w in admitted if w.cluster_queue == node.name and spec.within_cluster_queue != "Never"
           and classify(w, False) == "own"]
    hierarchy: list[tuple[AdmittedWorkload, Any, str]] = []
    by_priority: list[tuple[AdmittedWorkload, Any, str]] = []
    if node.parent is not None and spec.reclaim_within_cohort != "Never":
        advantage, remaining = tree.fits_in_quota(node, pre.request, usage)
        previous = None
        for ancestor in tree.path_to_root(node)[1:]:
            collect(ancestor, ancestor, previous, advantage, hierarchy if advantage else by_priority)
            fits, remaining = tree.fits_in_quota(ancestor, remaining, usage)
            advantage = advantage or fits
            previous = ancestor
    groups = [sorted(g, key=lambda c: candidate_order_key(c[0], node.name)) for g in (hierarchy, by_priority, own)]
    ordered = [c for g in groups for c in g if c[0].evicted] + [c for g in groups for c in g if not c[0].evicted]
    under = all(usage.node(node.id).get(fr, 0) < node.nominal(fr) for fr in frs)
    if (not hierarchy and not by_priority) or (not allowed and not under):
        attempts = [True]
    elif not allowed and not hierarchy:
        attempts = [False, True]
    else:
        attempts = [True, False]
    reasons = {"own": "InClusterQueue", "advantage": "InCohortReclamation", "without": "InCohortReclamation",
               "while": "InCohortReclaimWhileBorrowing"}
    for borrow in attempts:
        now = usage
        taken: list[tuple[AdmittedWorkload, str]] = []
        for w, lca, variant in ordered:
            if variant != "own":
                if borrow and variant == "without":
                    continue
                cq = tree.cluster_queue(w.cluster_queue)
                path = [cq] + [n for n in tree.path_to_root(cq)[1:]]
                upto = path[: path.index(lca)] if lca in path else path
                if any(tree.within_nominal(n, frs, now) for n in upto):
                    continue
            now = now.release(w.cluster_queue, w.usage)
            taken.append((w, reasons[variant]))
            if workload_fits(tree, now, pre.cluster_queue, pre.request, borrow):
                for i in range(len(taken) - 2, -1, -1):  # fill back
                    trial = now.admit(taken[i][0].cluster_queue, taken[i][0].usage)
                    if workload_fits(tree, trial, pre.cluster_queue, pre.request, borrow):
                        now = trial
                        del taken[i]
                return [(w.key, r) for w, r in taken]
    return []


@st.composite
def borrowing_cases(draw: st.DrawFn) -> tuple[QuotaTree, list[AdmittedWorkload], Preemptor]:
    """Queues in a cohort tree (root, optionally two sub-cohorts) filled past their nominal quotas
    by borrowing, and a preemptor short of quota: reclaiming from borrowers is the usual case."""
    nested = draw(st.booleans())
    cohorts = [Cohort.model_validate({"metadata": {"name": "root"}})]
    if nested:
        cohorts += [Cohort.model_validate({"metadata": {"name": f"c{i}"}, "spec": {"parentName": "root"}}) for i in range(2)]
    queues = []
    for i in range(draw(st.integers(2, 5))):
        cohort = draw(st.sampled_from(["root", "c0", "c1"] if nested else ["root"]))
        quotas = {fr: (draw(st.integers(0, 5)), draw(st.one_of(st.none(), st.none(), st.integers(0, 4))), None) for fr in FRS}
        policy = draw(POLICIES)
        if policy["reclaimWithinCohort"] == "Never":
            policy["reclaimWithinCohort"] = "Any"
        queues.append(ClusterQueue.model_validate({"metadata": {"name": f"q{i}"}, "spec": {
            "cohort": cohort, "resourceGroups": _groups(quotas), "preemption": policy}}))
    tree = QuotaTree(queues, cohorts)
    names = tree.cluster_queue_names
    usage = tree.empty_usage()
    admitted: list[AdmittedWorkload] = []
    for i in range(draw(st.integers(6, 40))):
        cq = draw(st.sampled_from(names))
        request = {fr: draw(st.sampled_from([1, 1, 1, 2])) * U for fr in draw(st.sampled_from([FRS[:1], FRS[:1], FRS]))}
        if tree.fits(cq, request, usage).fits:
            usage = usage.admit(cq, request)
            admitted.append(AdmittedWorkload(f"w{i}", cq, draw(st.integers(0, 4)), float(i), request,
                                             evicted=draw(st.integers(0, 5)) == 0, queued_at=float(draw(st.integers(0, 20)))))
    cq = draw(st.sampled_from(names))
    available = tree.available(cq, FRS[0], usage)
    request = {FRS[0]: available + draw(st.integers(1, 6)) * U}
    if draw(st.booleans()):
        request[FRS[1]] = draw(st.integers(0, 2)) * U
    return tree, admitted, Preemptor("new", cq, draw(st.integers(0, 5)), request, queued_at=float(draw(st.integers(0, 20))))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.one_of(preemption_cases(most=40).map(lambda c: (c[0].tree(), c[1], c[2])), borrowing_cases()))
def test_classical_search_takes_what_a_plain_scan_of_every_candidate_takes(
    case: tuple[QuotaTree, list[AdmittedWorkload], Preemptor]
) -> None:
    """The search reads each queue's candidates lazily, cut at the priority its policy allows and
    dropped once the queue lends nothing more: the victims are those of the plain algorithm."""
    tree, admitted, preemptor = case
    usage = Usage.of_admitted(tree, ((w.cluster_queue, w.usage) for w in admitted))
    result = find_victims(tree, usage, preemptor, admitted)
    got = [(v.workload.key, str(v.reason)) for v in result.victims]
    assert got == eager_classical(tree, usage, preemptor, admitted)
    event(f"victims: {min(len(got), 3)}")
    for _, reason in got:
        event(f"reason {reason}")

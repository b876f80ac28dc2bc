"""The `tessera` policy's parking (incremental cycles): it decides exactly as from scratch.

A random world (the one `test_kueue_incremental` drives: arrivals, finishes, requeues, backoff,
preemptions whose victims take a while to go, StrictFIFO and BestEffortFIFO queues, borrowing,
topology) is scheduled by an incremental policy and by one that looks at every workload in every
cycle; their decisions must be equal, cycle after cycle, while the incremental one parks work.
"""

from __future__ import annotations

import pytest

from dataclasses import replace

from quotas.api import Cohort, Configuration
from scheduler.cluster import Cluster
from scheduler.decisions import Decisions
from scheduler.kueue import admitted_from_admission
from scheduler.snapshot import Admitted, Pending
from scheduler.solver import TesseraPolicy
from test_kueue_incremental import World, _usage
from test_solver import config, cq, lq, node, running, snapshot, workload


def _decisions(d: Decisions, parked: set[str] = frozenset()) -> tuple[object, ...]:
    """What must be equal; a parked workload keeps the reason of the cycle that parked it (amounts
    of quota in it may have changed since), so only its being pending is compared."""
    reasons = {k: (v if k not in parked else "parked") for k, v in d.pending.items()}
    return (d.admissions, d.preemptions, reasons, d.nominations, d.again)


@pytest.mark.parametrize("style", ["shared", "fresh"])
def test_parking_decides_as_from_scratch(style: str) -> None:
    parked = decided = 0
    for seed in range(12):
        p, d = _compare(seed, style)
        parked, decided = parked + p, decided + d
    assert decided > 0
    if style == "shared":
        assert parked > 0  # the same objects from cycle to cycle: work was parked
    else:
        assert parked == 0  # new objects every cycle: nothing is known to be unchanged


def _compare(seed: int, style: str) -> tuple[int, int]:
    """Both policies over one random world; (workloads parked, admissions and preemptions)."""
    world = World.random(seed * 104729 + len(style), style)
    world._config["config"] = Configuration.model_validate({"solver": {"timeLimit": 5, "workers": 1}})
    fast = TesseraPolicy(aging_threshold=6.0)  # aging within the run: reservations and wake-ups
    reference = TesseraPolicy(aging_threshold=6.0, incremental=False)
    parked = decided = 0
    for _ in range(30):
        world.step_time()
        for _ in range(20):  # the simulator's loop: cycles at this instant until nothing changes
            snap = world.snapshot()
            maybe = set(fast._memory.parked) if fast._memory is not None else set()  # noqa: SLF001
            got = fast.schedule(snap)
            want = reference.schedule(snap)
            assert _decisions(got, maybe) == _decisions(want, maybe), f"t={world.now}"
            assert want.stats.parked == 0
            parked += got.stats.parked
            world.apply(got)
            decided += len(got.admissions) + len(got.preemptions)
            if not (got.admissions or got.preemptions):
                break
    return parked, decided


def _world() -> tuple[Cluster, list[Admitted], dict[str, object]]:
    """One 8-GPU node, 6 GPUs taken by a running workload; the snapshots share their configuration."""
    cluster = Cluster([node("n1", gpus=8)])
    busy = [running(cluster, "busy", "n1", 6, priority=0)]
    shared = {"queues": [cq("cq", gpus=16, preemption={"withinClusterQueue": "LowerPriority"})], "cfg": config()}
    return cluster, busy, shared


def _snap(cluster: Cluster, admitted: list[Admitted], pend: list[Pending], shared: dict[str, object], now: float) -> object:
    snap = snapshot(cluster, shared["queues"], [], now=now, cfg=shared["cfg"])  # type: ignore[arg-type]
    base = shared.setdefault("base", snap)
    snap = replace(base, now=now, pending=pend, admitted=admitted)  # type: ignore[type-var]
    snap.usage = _usage(snap)
    return snap


def test_a_parked_workload_waits_out_arrivals_and_is_admitted_at_the_release() -> None:
    cluster, admitted, shared = _world()
    big = Pending(workload("big", 4), 0.0)
    policy = TesseraPolicy()
    first = policy.schedule(_snap(cluster, admitted, [big], shared, 100.0))
    assert not first.admissions and first.stats.parked == 0
    small = Pending(workload("small", 1, created=101.0), 101.0)
    second = policy.schedule(_snap(cluster, admitted, [big, small], shared, 101.0))
    assert [a.key for a in second.admissions] == ["default/small"]
    assert second.stats.parked == 1 and second.pending["default/big"] == first.pending["default/big"]
    admitted = admitted + [admitted_from_admission(cluster, second.admissions[0], small.workload, 101.0)]
    third = policy.schedule(_snap(cluster, admitted, [big], shared, 102.0))  # the follow-up cycle
    assert not third.admissions and third.stats.parked == 1
    for b in admitted[0].bindings:  # "busy" finishes
        cluster.unbind(b)
    fourth = policy.schedule(_snap(cluster, admitted[1:], [big], shared, 103.0))
    assert fourth.stats.parked == 0 and [a.key for a in fourth.admissions] == ["default/big"]


def test_a_parked_workload_wakes_at_its_aging_threshold() -> None:
    cluster, admitted, shared = _world()
    big = Pending(workload("big", 4), 0.0)
    policy = TesseraPolicy(aging_threshold=1000.0)
    policy.schedule(_snap(cluster, admitted, [big], shared, 100.0))
    assert policy.schedule(_snap(cluster, admitted, [big], shared, 999.0)).stats.parked == 1
    late = policy.schedule(_snap(cluster, admitted, [big], shared, 1000.0))
    assert late.stats.parked == 0 and "reserved for it (waiting 1000s)" in late.pending["default/big"]
    # holding nodes for it gives it no room: it is parked again, its reason telling the wait so far
    later = policy.schedule(_snap(cluster, admitted, [big], shared, 1500.0))
    assert later.stats.parked == 1 and not later.admissions
    assert later.pending["default/big"].endswith("1 node(s) reserved for it (waiting 1500s)")
    assert later.pending["default/big"].count("reserved for it") == 1


def _count_searches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ClusterQueue of every preemption search that runs (each starts with a flavor assignment)."""
    import scheduler.solver as solver

    searches: list[str] = []
    real = solver.assign_flavors

    def counted(tree, usage, cq, podsets, **kw):  # type: ignore[no-untyped-def]
        searches.append(cq)
        return real(tree, usage, cq, podsets, **kw)

    monkeypatch.setattr(solver, "assign_flavors", counted)
    return searches


def _preemptor_world(quota: int) -> tuple[Cluster, list[Admitted], dict[str, object], Pending]:
    """8 GPUs, 6 taken by a workload of priority 100; a priority-50 workload asks for 3."""
    cluster = Cluster([node("n1", gpus=8)])
    admitted = [running(cluster, "busy", "n1", 6, priority=100)]
    shared: dict[str, object] = {"queues": [cq("cq", gpus=quota, preemption={"withinClusterQueue": "LowerPriority"})],
                                 "cfg": config()}
    return cluster, admitted, shared, Pending(workload("urgent", 3, priority=50), 0.0)


def test_a_parked_preemptor_that_found_no_victim_is_not_searched_again_after_admissions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Quota short and no victim: an admission takes from the free quota what it brings as a
    victim, so the search would find nothing again; it is not run."""
    searches = _count_searches(monkeypatch)
    cluster, admitted, shared, urgent = _preemptor_world(quota=8)
    policy = TesseraPolicy()
    policy.schedule(_snap(cluster, admitted, [urgent], shared, 100.0))
    assert len(searches) == 1
    low = Pending(workload("low", 1, priority=0, created=101.0), 101.0)
    second = policy.schedule(_snap(cluster, admitted, [urgent, low], shared, 101.0))
    assert [a.key for a in second.admissions] == ["default/low"] and second.stats.parked == 1
    admitted = admitted + [admitted_from_admission(cluster, second.admissions[0], low.workload, 101.0)]
    policy.schedule(_snap(cluster, admitted, [urgent], shared, 102.0))
    assert len(searches) == 1


def test_a_parked_preemptor_whose_quota_fitted_searches_again_after_admissions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its quota fitted (its pods did not): as admissions fill the quota it may have to preempt,
    so its search runs again after each (in the next cycle, whose pool holds what was admitted),
    and not in cycles where nothing was admitted."""
    searches = _count_searches(monkeypatch)
    cluster, admitted, shared, urgent = _preemptor_world(quota=16)
    policy = TesseraPolicy()
    policy.schedule(_snap(cluster, admitted, [urgent], shared, 100.0))
    assert len(searches) == 1
    policy.schedule(_snap(cluster, admitted, [urgent], shared, 100.5))
    assert len(searches) == 1  # nothing admitted since: it would find nothing again
    low = Pending(workload("low", 1, priority=0, created=101.0), 101.0)
    second = policy.schedule(_snap(cluster, admitted, [urgent, low], shared, 101.0))
    assert [a.key for a in second.admissions] == ["default/low"] and second.stats.parked == 1
    assert len(searches) == 1  # admitted in this cycle: searched in the next one, with "low" in the pool
    admitted = admitted + [admitted_from_admission(cluster, second.admissions[0], low.workload, 101.0)]
    third = policy.schedule(_snap(cluster, admitted, [urgent], shared, 102.0))
    assert len(searches) == 2 and third.stats.parked == 1  # a new possible victim
    policy.schedule(_snap(cluster, admitted, [urgent], shared, 103.0))
    assert len(searches) == 2


def test_a_parked_preemptor_searches_again_when_an_admission_makes_a_queue_borrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a queue going over its quota makes the workloads already there reclaimable: then the
    parked preemptor that found no victim searches again, in the cycle after the admission (the
    one that admitted does not search: its pool would lack what it admitted)."""
    searches = _count_searches(monkeypatch)
    cluster = Cluster([node("n1", gpus=8)])
    admitted = [running(cluster, "b-old", "n1", 3, queue="b")]
    queues = [cq("a", gpus=4, cohort="c", preemption={"reclaimWithinCohort": "Any"}), cq("b", gpus=4, cohort="c")]
    base = snapshot(cluster, queues, [], local_queues=[lq("qa", "a"), lq("qb", "b")],
                    cohorts=[Cohort.model_validate({"metadata": {"name": "c"}})], cfg=config())
    policy = TesseraPolicy()
    pend: list[Pending] = [Pending(workload("urgent", 6, queue="qa"), 0.0)]

    def cycle(now: float) -> Decisions:
        nonlocal admitted
        snap = replace(base, now=now, pending=list(pend), admitted=list(admitted))
        snap.usage = _usage(snap)
        got = policy.schedule(snap)
        for a in got.admissions:
            p = next(p for p in pend if p.key == a.key)
            pend.remove(p)
            admitted = admitted + [admitted_from_admission(cluster, a, p.workload, now)]
        return got

    assert not cycle(100).preemptions and len(searches) == 1  # b borrows nothing: no victim
    cycle(101)
    pend.append(Pending(workload("b-small", 1, queue="qb", created=102.0), 102.0))
    assert [a.key for a in cycle(102).admissions] == ["default/b-small"]
    cycle(103)
    assert len(searches) == 1  # b at its quota, not over: nothing new to reclaim
    pend.append(Pending(workload("b-big", 1, queue="qb", created=104.0), 104.0))
    assert [a.key for a in cycle(104).admissions] == ["default/b-big"]
    assert len(searches) == 1
    cycle(105)
    assert len(searches) == 2  # b borrows now, b-big among the possible victims
    cycle(106)
    assert len(searches) == 2


def test_a_cycle_that_admits_in_one_quota_tree_still_preempts_in_another() -> None:
    """Searches wait for the next cycle only in the quota trees where this one admitted."""
    cluster = Cluster([node("n1", gpus=8)])
    admitted = [running(cluster, "a-low", "n1", 6, queue="a")]
    queues = [cq("a", gpus=6, preemption={"withinClusterQueue": "LowerPriority"}), cq("b", gpus=2)]
    pend = [Pending(workload("a-high", 6, priority=100, queue="qa"), 0.0), Pending(workload("b-one", 2, queue="qb"), 0.0)]
    snap = snapshot(cluster, queues, pend, local_queues=[lq("qa", "a"), lq("qb", "b")], admitted=admitted, cfg=config())
    got = TesseraPolicy().schedule(snap)
    assert [a.key for a in got.admissions] == ["default/b-one"]
    assert [(p.key, p.preemptor) for p in got.preemptions] == [("default/a-low", "default/a-high")]


def _count_replays(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The candidates of every replay of Kueue's cycle inside a tessera cycle."""
    replays: list[int] = []
    real = TesseraPolicy._kueue_baseline

    def counted(self, snapshot, prepared, reservations, *rest):  # type: ignore[no-untyped-def]
        replays.append(len(prepared.candidates))
        return real(self, snapshot, prepared, reservations, *rest)

    monkeypatch.setattr(TesseraPolicy, "_kueue_baseline", counted)
    return replays


def test_the_kueue_baseline_is_replayed_only_when_someone_could_admit_something(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing fits (quota or total capacity short at the lowest count): no cycle admits anything
    from this state, so Kueue's cycle is not replayed; when the greedy leaves out a workload
    that could fit, it is."""
    replays = _count_replays(monkeypatch)
    cluster, admitted, shared = _world()  # 2 of 8 GPUs free
    hopeless = [Pending(workload("too-big", 4), 0.0), Pending(workload("over-quota", 2, pods=6, min_count=6), 0.0)]
    got = TesseraPolicy(incremental=False).schedule(_snap(cluster, admitted, hopeless, shared, 100.0))
    assert not got.admissions and replays == []
    fits = [Pending(workload("gang", 1, pods=3, min_count=2), 0.0), Pending(workload("one", 1), 1.0)]
    TesseraPolicy(incremental=False).schedule(_snap(cluster, admitted, fits, shared, 100.0))
    assert replays == [2]  # the gang took the room partially: another order might admit more
    # the greedy admitted "one" whole and the rest could not be admitted even before it: no replay
    got = TesseraPolicy(incremental=False).schedule(_snap(cluster, admitted, [Pending(workload("one", 1), 0.0), *hopeless], shared, 100.0))
    assert [a.key for a in got.admissions] == ["default/one"] and replays == [2]
    # "two" fitted before "one" took a GPU: Kueue's order might admit it instead
    small_first = [Pending(workload("one", 1), 0.0), Pending(workload("two", 2), 1.0)]
    got = TesseraPolicy(incremental=False).schedule(_snap(cluster, admitted, small_first, shared, 100.0))
    assert replays == [2, 2]


def test_a_rack_gang_that_fits_no_rack_or_only_on_held_nodes_is_no_reason_to_replay_kueue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Free room spread over racks, or held for a workload that outranks it, admits nothing that
    needs one rack: Kueue's cycle (its TAS also keeps a required podset in one domain, and its
    placements may not use held nodes) is not replayed for it."""
    from scheduler.solver_common import prepare
    from scheduler.solver_place import Placer, Reservation
    from test_solver import flavor, rack_nodes, topology

    replays = _count_replays(monkeypatch)
    cluster = Cluster(rack_nodes(2, 2))
    busy = [running(cluster, "x0", "r0n0", 8), running(cluster, "x1", "r1n0", 8)]  # a free node per rack

    def snap_of(*pend: Pending) -> object:
        return snapshot(cluster, [cq("cq", 64)], list(pend), flavors=[flavor(topology="dc")],
                        topologies=[topology()], admitted=busy)

    gang = Pending(workload("gang", 8, 2, topo=("required", "rack"), created=5.0), 5.0)
    got = TesseraPolicy(incremental=False).schedule(snap_of(gang))
    assert not got.admissions and replays == []  # 2 free nodes, but one per rack
    # without the rack: the two free nodes might hold it (they do)
    loose = Pending(workload("loose", 8, 2, created=5.0), 5.0)
    got = TesseraPolicy(incremental=False).schedule(snap_of(loose))
    assert [a.key for a in got.admissions] == ["default/loose"]
    # held nodes: the one free node of rack r1 is held for an older workload, which outranks "one"
    snap = snap_of(Pending(workload("one", 8, created=5.0), 5.0))
    placer = Placer(snap, reservations=[Reservation("default/older", 0, 0.0, frozenset({"r1n1"}))])  # type: ignore[arg-type]
    cand = prepare(snap).candidates[0]
    opt = cand.podsets[0].options[0]
    assert placer.could_hold(cand.podsets[0].pod, opt, placer.excluded(cand), 1)
    assert not placer.could_hold(cand.podsets[0].pod, opt, placer.excluded(cand), 2)
    assert placer.could_hold(cand.podsets[0].pod, opt, frozenset(), 2)


def test_preemptors_past_the_cycle_limit_are_parked_with_their_search_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle searches for at most 16 preemptors; the ones after them are parked like the rest
    (later cycles do not try to place them) and their searches run, in queue order, once fewer
    are ahead of them. The decisions are those of a policy without parking."""
    import scheduler.solver as solver

    searches = _count_searches(monkeypatch)
    cluster, admitted, shared, _ = _preemptor_world(quota=8)
    many = [Pending(workload(f"p{i:02d}", 3, cpu=i + 1, priority=50, created=float(i)), float(i))
            for i in range(solver.MAX_PREEMPTORS + 2)]  # all shapes differ: no search stands for another
    policy, reference = TesseraPolicy(), TesseraPolicy(incremental=False)
    snap = _snap(cluster, admitted, many, shared, 100.0)
    first = policy.schedule(snap)
    assert len(searches) == solver.MAX_PREEMPTORS
    assert _decisions(first) == _decisions(reference.schedule(snap))
    del searches[:]
    snap = _snap(cluster, admitted, many[2:], shared, 101.0)  # two of the searched ones are gone
    second = policy.schedule(snap)
    assert second.stats.parked == len(many) - 2  # the two not searched yet are parked too
    assert len(searches) == 2  # theirs run now; the others' would find nothing again
    parked = set(policy._memory.parked) if policy._memory is not None else set()  # noqa: SLF001
    assert _decisions(second, parked) == _decisions(reference.schedule(snap), parked)


def test_reservations_are_remembered_until_the_cluster_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """An aged gang's reservation search runs again only when what it reads changed."""
    import scheduler.solver as solver

    searched: list[str] = []
    real = solver.TesseraPolicy._reserve_for

    def counted(snapshot, probe, cand):  # type: ignore[no-untyped-def]
        searched.append(cand.key)
        return real(snapshot, probe, cand)

    monkeypatch.setattr(solver.TesseraPolicy, "_reserve_for", staticmethod(counted))
    cluster = Cluster([node("n0"), node("n1"), node("n2")])
    x, y = running(cluster, "x", "n0", 4), running(cluster, "y", "n1", 2)
    gang = Pending(workload("gang", 8, pods=2, created=0.0), 0.0)  # two whole nodes; only n2 is
    first = snapshot(cluster, [cq("cq", 100)], [gang], admitted=[x, y], now=4100.0, cfg=config())
    policy = TesseraPolicy(aging_threshold=3600.0)
    held = policy.schedule(first).pending["default/gang"]
    assert "reserved for it" in held and searched == ["default/gang"]
    again = policy.schedule(replace(first, now=4200.0)).pending["default/gang"]
    assert again == held.replace("waiting 4100s", "waiting 4200s")  # the same nodes
    assert searched == ["default/gang"]  # same cluster, usage and workload: remembered
    cluster.bind("n2", y.bindings[0].pod)  # a pod outside the queues: the usage object stays
    policy.schedule(replace(first, now=4300.0))
    assert searched == ["default/gang", "default/gang"]  # the cluster changed: searched again
    for b in y.bindings:
        cluster.unbind(b)
    released = replace(first, now=4400.0, admitted=[x], usage=first.usage.release("cq", dict(y.usage)))
    policy.schedule(released)
    assert searched == ["default/gang"] * 3


def test_a_state_index_without_held_nodes_matches_one_built_from_scratch_and_stays_in_step() -> None:
    """`Placer.index` with nodes left out copies the option's whole index instead of reading every
    node's state again: the result is the index of the nodes left, and binds keep both current."""
    from scheduler.solver_common import prepare
    from scheduler.solver_place import Placer, _StateIndex
    from test_solver import flavor, rack_nodes, topology

    cluster = Cluster(rack_nodes(2, 3))
    busy = [running(cluster, "x0", "r0n0", 8), running(cluster, "x1", "r1n2", 4)]
    snap = snapshot(cluster, [cq("cq", 64)], [Pending(workload("one", 2), 0.0)], flavors=[flavor(topology="dc")],
                    topologies=[topology()], admitted=busy)
    cand = prepare(snap).candidates[0]
    pod, opt = cand.podsets[0].pod, cand.podsets[0].options[0]
    placer = Placer(snap)
    held = frozenset({"r0n1", "r1n0"})

    def same(idx: _StateIndex, names: list[str]) -> None:
        fresh = _StateIndex(names, placer.cluster)
        assert idx.state_of == fresh.state_of and list(idx.state_of) == list(fresh.state_of)
        assert idx.by_state == fresh.by_state

    whole, rest = placer.index(opt, frozenset()), placer.index(opt, held)
    same(rest, [n for n in opt.nodes if n not in held])
    got = placer.try_admit(cand)
    assert not isinstance(got, str)
    same(whole, list(opt.nodes))
    same(rest, [n for n in opt.nodes if n not in held])
    assert placer.fit_total(pod, opt, held) == sum(placer.fit(n, pod) for n in opt.nodes if n not in held)

"""The `kueue` policy's incremental queue manager decides exactly what the from-scratch path decides.

`QueueState(incremental=True)` (the default) keeps the queues, the preemption candidates and
memoised nominations across cycles; `incremental=False` re-sorts the whole pending set every
cycle. Random worlds are driven through both, on the very same snapshots, and every cycle's
decisions (admissions, preemptions, every pending reason, `again`, the counts) and queue state
(set-aside workloads, sticky preemptors) must be equal. The worlds hand their snapshots over the
way the simulator does (the same list objects while nothing changed), the way the operator does
(fresh lists, fresh objects every cycle), or mixed, and include what moves workloads between
queue states: arrivals, finishes, preemptions, requeues with a new queue time, backoff, a
previous admission still held, unknown or stopped queues, namespaces not selected, priorities
that tie, StrictFIFO, LowerOrNewerEqualPriority, partial admission and topology requests.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor, Topology
from scheduler.cluster import Cluster
from scheduler.decisions import Admission, Decisions
from scheduler.kueue import KueuePolicy, QueueState, admitted_from_admission, greedy_cycle
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot, build_snapshot
from scheduler.workload import WorkloadInfo
from simulator.trace import make_podset

GPU = "nvidia.com/gpu"
RACK, HOST = "example.com/rack", "kubernetes.io/hostname"

# --- a random world -----------------------------------------------------------------------------


def _cluster_queue(name: str, rng: random.Random, cohort: str | None) -> ClusterQueue:
    gpu: dict[str, Any] = {"name": GPU, "nominalQuota": rng.choice([2, 4, 6, 8])}
    if cohort and rng.random() < 0.5:
        gpu["borrowingLimit"] = rng.choice([0, 2, 4])
    flavors = [{"name": "a", "resources": [gpu, {"name": "cpu", "nominalQuota": 1000}]}]
    if rng.random() < 0.4:
        flavors.append({"name": "tas", "resources": [{"name": GPU, "nominalQuota": rng.choice([4, 8])},
                                                      {"name": "cpu", "nominalQuota": 1000}]})
    spec: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"team": "yes"}} if rng.random() < 0.2 else {},
        "queueingStrategy": rng.choice(["BestEffortFIFO", "BestEffortFIFO", "StrictFIFO"]),
        "resourceGroups": [{"coveredResources": [GPU, "cpu"], "flavors": flavors}],
        "preemption": {
            "withinClusterQueue": rng.choice(["LowerPriority", "LowerOrNewerEqualPriority", "Never"]),
            "reclaimWithinCohort": rng.choice(["Any", "LowerPriority", "Never"]),
        },
    }
    if rng.random() < 0.1:
        spec["stopPolicy"] = "Hold"
    if cohort:
        spec["cohort"] = cohort
    return ClusterQueue.model_validate({"metadata": {"name": name}, "spec": spec})


@dataclass
class World:
    """A tiny simulator that applies one policy's decisions and hands out snapshots in one of
    three styles: ``shared`` (the same list objects while nothing changed, as the simulator),
    ``fresh`` (new lists and new `Pending` objects every cycle, as the operator) or ``mixed``."""

    rng: random.Random
    style: str
    queues: list[ClusterQueue]
    cohorts: list[Cohort]
    local_queues: list[LocalQueue]
    namespaces: list[str]
    cluster: Cluster
    flavors: list[ResourceFlavor]
    topologies: list[Topology]
    now: float = 0.0
    pending: dict[str, Pending] = field(default_factory=dict)
    admitted: dict[str, Admitted] = field(default_factory=dict)
    finish_at: dict[str, float] = field(default_factory=dict)
    counter: int = 0
    _pending_list: list[Pending] | None = None
    _admitted: tuple[list[Admitted], Any] | None = None
    """The shared lists (and the usage of the admitted list): replaced when they change, as the
    simulator's (an arrival does not change the usage object)."""
    _config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def random(cls, seed: int, style: str) -> World:
        rng = random.Random(seed)
        n_queues = rng.randint(1, 4)
        cohort = "c" if rng.random() < 0.7 else None
        queues = [_cluster_queue(f"cq{i}", rng, cohort if rng.random() < 0.8 else None) for i in range(n_queues)]
        cohorts = [Cohort.model_validate({"metadata": {"name": "c"}})] if cohort else []
        namespaces = [f"ns{i}" for i in range(n_queues + 1)]
        local_queues = [
            LocalQueue.model_validate({"metadata": {"name": "lq", "namespace": f"ns{i}"}, "spec": {"clusterQueue": f"cq{i}"}})
            for i in range(n_queues)
        ]
        # ns<n_queues> has no LocalQueue: its workloads are rejected (LocalQueue not found)
        if rng.random() < 0.3:
            local_queues[0] = LocalQueue.model_validate(
                {"metadata": {"name": "lq", "namespace": "ns0"}, "spec": {"clusterQueue": "cq0", "stopPolicy": "Hold"}})
        nodes = []
        for i in range(rng.randint(1, 4)):
            labels = {HOST: f"n{i}", RACK: f"r{i % 2}", "kind": "tas" if i % 2 else "a"}
            nodes.append(Cluster.make_node(f"n{i}", {GPU: 8000, "cpu": 64000, "memory": 512 * 2**30 * 1000, "pods": 110000}, labels))
        flavors = [
            ResourceFlavor.model_validate({"metadata": {"name": "a"}, "spec": {"nodeLabels": {"kind": "a"}}}),
            ResourceFlavor.model_validate({"metadata": {"name": "tas"}, "spec": {"nodeLabels": {"kind": "tas"}, "topologyName": "dc"}}),
        ]
        topologies = [Topology.model_validate({"metadata": {"name": "dc"}, "spec": {"levels": [{"nodeLabel": RACK}, {"nodeLabel": HOST}]}})]
        world = cls(rng, style, queues, cohorts, local_queues, namespaces, Cluster(nodes), flavors, topologies)
        world._config = {
            "namespace_labels": {ns: {"team": "yes"} for ns in namespaces[::2]},
            "config": Configuration(),
        }
        return world

    def submit(self) -> None:
        """A new workload: few distinct priorities and shapes, so that many look alike (the
        nomination memo's case); some in backoff, some in no queue (their namespace)."""
        rng = self.rng
        self.counter += 1
        ns = rng.choice(self.namespaces)
        count = rng.choice([1, 1, 2, 3])
        podset = make_podset(
            "main", count, {GPU: 1000 * rng.choice([1, 1, 2, 4]), "cpu": 1000},
            min_count=rng.choice([None, None, 1]) if count > 1 else None,
            required_topology=RACK if rng.random() < 0.15 else None,
        )
        # few distinct priorities and shapes: many workloads look alike (the nomination memo's case)
        w = WorkloadInfo(namespace=ns, name=f"w{self.counter}", local_queue="lq", podsets=(podset,),
                         priority=rng.choice([0, 0, 1, 5]), creation_time=self.now)
        not_before = self.now + rng.choice([0, 0, 0, 2]) if rng.random() < 0.2 else 0.0
        self.pending[w.key] = Pending(w, self.now, 0, not_before)
        self._pending_list = None

    def step_time(self, aside: Iterable[str] = ()) -> None:
        """Advance the clock: submissions, finishes, requeues (of a set-aside workload among
        ``aside`` too), new objects for unchanged workloads."""
        rng = self.rng
        self.now += rng.choice([0.0, 1.0, 1.0, 3.0])
        for _ in range(rng.choice([0, 1, 1, 2, 4])):
            self.submit()
        for key, at in list(self.finish_at.items()):
            if at <= self.now and key in self.admitted:
                self.release(key)
                del self.finish_at[key]
                self._changed()
        for key, a in list(self.admitted.items()):
            if a.evicted and rng.random() < 0.5:  # a terminating victim is finally gone
                self.release(key)
                self._changed()
        if self.pending and rng.random() < 0.1:
            self.requeue(rng.choice(sorted(self.pending)))
        aside = sorted(k for k in aside if k in self.pending)
        if aside and rng.random() < 0.3:
            self.requeue(rng.choice(aside))
        if self.pending and rng.random() < 0.1:  # a new object with the same fields (token unchanged)
            key = rng.choice(sorted(self.pending))
            self.pending[key] = replace(self.pending[key])
            self._pending_list = None

    def _changed(self) -> None:
        self._pending_list = None
        self._admitted = None

    def requeue(self, key: str) -> None:
        """An eviction-style requeue: a new queue time and count (a new token)."""
        p = self.pending[key]
        self.pending[key] = replace(p, queued_at=self.now, requeue_count=p.requeue_count + 1)
        self._pending_list = None

    def release(self, key: str) -> None:
        a = self.admitted.pop(key)
        for b in a.bindings:
            self.cluster.unbind(b)

    def snapshot(self) -> Snapshot:
        style = self.style if self.style != "mixed" else self.rng.choice(["shared", "fresh"])
        usage = None
        if style == "fresh":
            pending = [replace(p) for p in self.pending.values()]
            admitted = list(self.admitted.values())
        else:
            if self._pending_list is None:
                self._pending_list = list(self.pending.values())
            if self._admitted is None:
                self._admitted = (list(self.admitted.values()), None)
            pending, (admitted, usage) = self._pending_list, self._admitted
        snap = build_snapshot(
            now=self.now, cluster=self.cluster, cluster_queues=self.queues, cohorts=self.cohorts, flavors=self.flavors,
            local_queues=self.local_queues, admitted=(), pending=(), topologies=self.topologies,
            config=self._config["config"], namespace_labels=self._config["namespace_labels"],
        )
        if style == "shared":
            # the simulator's snapshots share their configuration objects between cycles
            cached = self._config.setdefault("shared", snap)
            snap = replace(cached, now=self.now)
        snap.pending, snap.admitted = pending, admitted
        snap.usage = usage if usage is not None else _usage(snap)
        if style != "fresh":  # unchanged usage is the same (immutable) object, as in the simulator
            self._admitted = (admitted, snap.usage)
        return snap

    def apply(self, decisions: Decisions) -> None:
        rng = self.rng
        for pre in decisions.preemptions:
            if pre.key in self.admitted:
                a = self.admitted[pre.key]
                if rng.random() < 0.2:
                    # still terminating: stays admitted (evicted) and is already pending again
                    self.admitted[pre.key] = replace(a, evicted=True)
                    self.pending[pre.key] = Pending(a.workload, self.now, 1)
                else:
                    self.release(pre.key)
                    self.pending[pre.key] = Pending(a.workload, self.now, 1, self.now + rng.choice([0, 0, 2]))
                self.finish_at.pop(pre.key, None)
        for adm in decisions.admissions:
            p = self.pending.pop(adm.key)
            if adm.key in self.admitted:  # a terminating earlier admission is replaced
                self.release(adm.key)
            self.admitted[adm.key] = admitted_from_admission(self.cluster, adm, p.workload, self.now)
            self.finish_at[adm.key] = self.now + rng.choice([1, 2, 4, 8])
        if decisions.preemptions or decisions.admissions:
            self._changed()


def _usage(snap: Snapshot) -> Any:
    from quotas.usage import Usage

    return Usage.of_admitted(snap.tree, [(a.cluster_queue, dict(a.usage)) for a in snap.admitted])


def _state(st: QueueState) -> tuple[object, ...]:
    return (
        {k: (v.token, v.cluster_queue, v.root, v.reason, v.physical) for k, v in st.inadmissible.items()},
        dict(st.sticky),
        st.last_admitted,
        st.cycles,
    )


def _decisions(d: Decisions) -> tuple[object, ...]:
    return (d.admissions, d.preemptions, d.pending, d.nominations, d.again, d.stats.solver_status, d.stats.considered)


# --- the comparison -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["shared", "fresh", "mixed"])
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("drain", [False, True], ids=["cycle", "drain"])
def test_incremental_decides_as_from_scratch(seed: int, style: str, drain: bool) -> None:
    world = World.random(seed * 7919 + len(style), style)
    fast = KueuePolicy(drain=drain)
    reference = KueuePolicy(drain=drain, incremental=False)
    assert fast.state.incremental and not reference.state.incremental
    decided = 0
    for _ in range(40):
        world.step_time(aside=fast.state.inadmissible)
        cycles = 0
        while True:  # the simulator's loop: cycles at this instant until nothing more to do
            snap = world.snapshot()
            got = fast.schedule(snap)
            want = reference.schedule(snap)
            assert _decisions(got) == _decisions(want), f"cycle {fast.state.cycles} at t={world.now}"
            assert _state(fast.state) == _state(reference.state)
            world.apply(got)
            decided += len(got.admissions) + len(got.preemptions)
            cycles += 1
            if not (got.admissions or got.preemptions or got.again) or cycles >= 20:
                break
    assert decided > 0  # the world did something
    # the manager kept the queues the from-scratch path sorts (sticky preemptors aside)
    snap = world.snapshot()
    fast.schedule(snap)
    reference.schedule(snap)
    assert fast.state.queues.queued() == _sorted_queues(snap, reference.state)


def _sorted_queues(snap: Snapshot, state: QueueState) -> dict[str, list[str]]:
    """The queues `build_queues` sorts for ``snap`` with the set-aside workloads of ``state``
    (the manager files a cycle's set-aside heads out at the end of that cycle), no sticky preemptor."""
    probe = QueueState(incremental=False)
    probe.inadmissible = dict(state.inadmissible)
    probe._by_root, probe._physical = {}, set()
    from scheduler.kueue import _Cycle

    cyc = _Cycle(snap, probe, Decisions())
    return {cq: [p.key for p in q] for cq, q in sorted(cyc.build_queues().items())}


def test_the_memo_is_used_and_cannot_outlive_its_world(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look-alike heads of a full queue: the cycles after the first set-aside reuse its
    nomination; a release (new usage) makes the policy nominate afresh."""
    from scheduler import kueue

    computed: list[str] = []
    real = kueue._Cycle._nominate

    def counting(self: Any, p: Pending, cq: str, usage: Any) -> Any:
        if self.memo is not None:
            computed.append(p.key)
        return real(self, p, cq, usage)

    monkeypatch.setattr(kueue._Cycle, "_nominate", counting)
    world = World.random(3, "shared")
    world.queues = [ClusterQueue.model_validate({"metadata": {"name": "cq0"}, "spec": {
        "namespaceSelector": {},
        "resourceGroups": [{"coveredResources": [GPU, "cpu"],
                            "flavors": [{"name": "a", "resources": [{"name": GPU, "nominalQuota": 2},
                                                                    {"name": "cpu", "nominalQuota": 100}]}]}]}})]
    world.cohorts, world.namespaces = [], ["ns0"]
    world.local_queues = [LocalQueue.model_validate({"metadata": {"name": "lq", "namespace": "ns0"}, "spec": {"clusterQueue": "cq0"}})]
    world._config = {"namespace_labels": {}, "config": Configuration()}
    podset = make_podset("main", 1, {GPU: 2000, "cpu": 1000})
    for i in range(6):
        w = WorkloadInfo(namespace="ns0", name=f"w{i}", local_queue="lq", podsets=(podset,), creation_time=float(i))
        world.pending[w.key] = Pending(w, float(i))
    policy, reference = KueuePolicy(), KueuePolicy(incremental=False)
    admitted = []
    for _ in range(6):
        snap = world.snapshot()
        got, want = policy.schedule(snap), reference.schedule(snap)
        assert _decisions(got) == _decisions(want)
        admitted += [a.key for a in got.admissions]
        world.apply(got)
    assert admitted == ["ns0/w0"]
    # w0 fits (computed), w1 does not (computed, set aside); w2..w5 are nominated from the memo
    assert computed == ["ns0/w0", "ns0/w1"]
    assert "ns0/w5" in policy.state.inadmissible
    # a release changes the usage: the memo is emptied before it is used again
    world.release("ns0/w0")
    world._changed()
    snap = world.snapshot()
    got, want = policy.schedule(snap), reference.schedule(snap)
    assert _decisions(got) == _decisions(want)
    assert [a.key for a in got.admissions] == ["ns0/w1"]
    assert computed[-1] == "ns0/w1" and len(computed) == 3
    assert policy.state.memo.env is not None and policy.state.memo.env[-1] is snap.usage


def test_a_placement_failure_returns_when_another_tree_releases_quota() -> None:
    """A gang set aside because its rack is full (not for quota) is retried when any cohort
    tree releases quota: the nodes are shared even where the quota is not."""
    world = World.random(1, "shared")

    def tas_queue(name: str) -> ClusterQueue:
        return ClusterQueue.model_validate({"metadata": {"name": name}, "spec": {
            "namespaceSelector": {},
            "resourceGroups": [{"coveredResources": [GPU, "cpu"], "flavors": [{"name": "tas", "resources": [
                {"name": GPU, "nominalQuota": 16}, {"name": "cpu", "nominalQuota": 100}]}]}]}})

    world.queues, world.cohorts, world.namespaces = [tas_queue("a"), tas_queue("b")], [], ["na", "nb"]
    world.local_queues = [
        LocalQueue.model_validate({"metadata": {"name": "lq", "namespace": ns}, "spec": {"clusterQueue": cq}})
        for ns, cq in (("na", "a"), ("nb", "b"))
    ]
    world.cluster = Cluster([
        Cluster.make_node(name, {GPU: 8000, "cpu": 64000, "pods": 110000}, {HOST: name, RACK: "r0", "kind": "tas"})
        for name in ("n0", "n1")
    ])
    world._config = {"namespace_labels": {}, "config": Configuration()}
    holder = WorkloadInfo(namespace="nb", name="holder", local_queue="lq", podsets=(make_podset("main", 1, {GPU: 8000, "cpu": 1000}),))
    held = Admission(holder.key, "b", (PodSetPlacement("main", 1, {GPU: "tas", "cpu": "tas"}, nodes=("n0",)),),
                     {("tas", GPU): 8000, ("tas", "cpu"): 1000})
    world.admitted[holder.key] = admitted_from_admission(world.cluster, held, holder, 0.0)
    gang = WorkloadInfo(namespace="na", name="gang", local_queue="lq",
                        podsets=(make_podset("main", 2, {GPU: 8000, "cpu": 1000}, required_topology=RACK),))
    world.pending[gang.key] = Pending(gang, 0.0)
    fast, reference = KueuePolicy(), KueuePolicy(incremental=False)
    for _ in range(2):  # quota fits, the rack does not: set aside, and left aside while nothing changes
        snap = world.snapshot()
        got, want = fast.schedule(snap), reference.schedule(snap)
        assert _decisions(got) == _decisions(want)
        assert not got.admissions and "topology-aware placement" in got.pending[gang.key]
        assert fast.state.inadmissible[gang.key].physical
        world.now += 1
    world.release(holder.key)  # quota released in b's tree, not in a's
    world._changed()
    snap = world.snapshot()
    got, want = fast.schedule(snap), reference.schedule(snap)
    assert _decisions(got) == _decisions(want)
    assert [a.key for a in got.admissions] == [gang.key]


def _one_queue_world(within: str) -> World:
    """One ClusterQueue of 4 GPUs, full with one admitted workload ``ns0/running``."""
    world = World.random(2, "shared")
    world.queues = [ClusterQueue.model_validate({"metadata": {"name": "q"}, "spec": {
        "namespaceSelector": {}, "preemption": {"withinClusterQueue": within},
        "resourceGroups": [{"coveredResources": [GPU, "cpu"], "flavors": [{"name": "a", "resources": [
            {"name": GPU, "nominalQuota": 4}, {"name": "cpu", "nominalQuota": 100}]}]}]}})]
    world.cohorts, world.namespaces = [], ["ns0"]
    world.local_queues = [LocalQueue.model_validate({"metadata": {"name": "lq", "namespace": "ns0"}, "spec": {"clusterQueue": "q"}})]
    world._config = {"namespace_labels": {}, "config": Configuration()}
    return world


def _look_alike(name: str, priority: int, created: float) -> WorkloadInfo:
    return WorkloadInfo(namespace="ns0", name=name, local_queue="lq", podsets=(make_podset("main", 1, {GPU: 4000, "cpu": 1000}),),
                        priority=priority, creation_time=created)


def _admit(world: World, w: WorkloadInfo, at: float) -> None:
    adm = Admission(w.key, "q", (PodSetPlacement("main", 1, {GPU: "a", "cpu": "a"}),), {("a", GPU): 4000, ("a", "cpu"): 1000})
    world.admitted[w.key] = admitted_from_admission(world.cluster, adm, w, at)
    world._changed()


def _both(world: World, fast: KueuePolicy, reference: KueuePolicy) -> Decisions:
    snap = world.snapshot()
    got, want = fast.schedule(snap), reference.schedule(snap)
    assert _decisions(got) == _decisions(want)
    return got


def test_a_higher_priority_look_alike_is_not_nominated_from_a_lower_ones_memo() -> None:
    """Same shape, same world (an arrival changes no usage): the priority decides the candidates."""
    world = _one_queue_world("LowerPriority")
    _admit(world, _look_alike("running", 1, 0.0), 0.0)
    low = _look_alike("low", 1, 1.0)
    world.pending[low.key] = Pending(low, 1.0)
    fast, reference = KueuePolicy(), KueuePolicy(incremental=False)
    got = _both(world, fast, reference)
    assert not got.preemptions and low.key in fast.state.inadmissible  # no lower priority to preempt
    high = _look_alike("high", 5, 2.0)
    world.pending[high.key] = Pending(high, 2.0)
    world._pending_list = None
    got = _both(world, fast, reference)
    assert [(p.key, p.preemptor) for p in got.preemptions] == [("ns0/running", high.key)]


def test_an_older_look_alike_is_not_nominated_from_a_newer_ones_memo() -> None:
    """LowerOrNewerEqualPriority: of two equal-priority look-alikes, only the one queued before
    the running workload may preempt it, so the queue time is part of the nomination."""
    world = _one_queue_world("LowerOrNewerEqualPriority")
    _admit(world, _look_alike("running", 0, 5.0), 5.0)
    older = _look_alike("older", 0, 4.0)
    world.pending[older.key] = Pending(older, 4.0, 0, not_before=10.0)  # in backoff until t=10
    newer = _look_alike("newer", 0, 6.0)
    world.pending[newer.key] = Pending(newer, 6.0)
    world.now = 6.0
    fast, reference = KueuePolicy(), KueuePolicy(incremental=False)
    got = _both(world, fast, reference)
    assert not got.preemptions and newer.key in fast.state.inadmissible
    world.now = 10.0  # the older one leaves backoff: nothing else changed
    got = _both(world, fast, reference)
    assert [(p.key, p.preemptor) for p in got.preemptions] == [("ns0/running", older.key)]


def test_a_preemption_in_the_cycle_empties_the_memo_for_later_nominations() -> None:
    """Once a cycle marks a victim evicted, a later nomination of a look-alike sees it evicted
    (as a cycle that never memoised would), not the memoised candidates."""
    from scheduler.kueue import _Cycle

    world = _one_queue_world("LowerPriority")
    _admit(world, _look_alike("running", 0, 0.0), 0.0)
    first, second = _look_alike("first", 5, 1.0), _look_alike("second", 5, 1.0)
    world.pending = {w.key: Pending(w, 1.0) for w in (first, second)}
    world._changed()
    snap = world.snapshot()
    p1, p2 = snap.pending

    def nominate_both(state: QueueState) -> tuple[object, ...]:
        cyc = _Cycle(snap, state, Decisions())
        e1 = cyc.nominate(p1, "q", cyc.usage)
        cyc.process(e1, cyc.usage, {})
        e2 = cyc.nominate(p2, "q", cyc.usage)
        return e2.mode, tuple((v.workload.key, v.workload.evicted) for v in e2.victims), cyc.decisions.preemptions

    got, want = nominate_both(QueueState()), nominate_both(QueueState(incremental=False))
    assert got == want
    assert got[1] == (("ns0/running", True),)


def test_duplicate_keys_fall_back_to_sorting_from_scratch() -> None:
    world = World.random(5, "fresh")
    for _ in range(3):
        world.submit()
    snap = world.snapshot()
    snap.pending = snap.pending + [replace(snap.pending[0])]
    got = KueuePolicy().schedule(snap)
    want = KueuePolicy(incremental=False).schedule(snap)
    assert _decisions(got) == _decisions(want)


def test_time_going_back_starts_afresh() -> None:
    world = World.random(11, "shared")
    fast, reference = KueuePolicy(), KueuePolicy(incremental=False)
    for now in (5.0, 6.0, 1.0, 7.0):
        world.now = now
        world.submit()
        world.pending = {k: replace(p, not_before=3.0 if i % 2 else 0.0) for i, (k, p) in enumerate(world.pending.items())}
        world._changed()
        snap = world.snapshot()
        assert _decisions(fast.schedule(snap)) == _decisions(reference.schedule(snap))


def test_greedy_cycle_without_state_matches_too() -> None:
    world = World.random(17, "fresh")
    for _ in range(12):
        world.submit()
    snap = world.snapshot()
    got = greedy_cycle(snap, drain=True)
    want = greedy_cycle(snap, state=QueueState(incremental=False), drain=True)
    assert _decisions(got) == _decisions(want)


if __name__ == "__main__":  # pragma: no cover - a quick manual run
    sys.exit(pytest.main([str(Path(__file__)), "-q"]))

"""Discrete-event replay of a workload trace on a cluster, through one scheduling policy.

Events are submissions, finishes, waitForPodsReady timeouts and requeue wake-ups. After
the events of an instant, the policy runs cycles (on the same `Snapshot` type the operator
builds) until it has nothing more to decide; its admissions reserve quota, and pods are
bound either by the policy itself (`places_pods`) or, as on a real cluster, by a
kube-scheduler-like binder that leaves pods Pending while they do not fit. Every policy
replays the same setup and seed, so runs compare.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from quotas.admission_fair_sharing import AdmissionFairSharing
from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor, Topology
from quotas.kube import Node
from quotas.preemption import PreemptionReason
from quotas.tree import QuotaTree
from quotas.usage import Usage
from scheduler.cluster import GPU_RESOURCE, Binding, Cluster
from scheduler.decisions import Admission, Decisions, Policy
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot, fair_sharing_charge
from scheduler.workload import WorkloadInfo
from simulator.trace import SimJob

EventKind = Literal["submit", "finish", "timeout", "wake"]
MAX_CYCLES_PER_INSTANT = 200

Binder = Callable[[Snapshot, list[Admitted], random.Random], list[tuple[str, int, Binding]]]
"""Binds what it can of the admitted workloads' unbound pods on `snapshot.cluster` (the live
cluster), as kube-scheduler would: returns (workload key, podset index, binding)."""


@dataclass
class Setup:
    """Everything a run needs besides the policy: the same for every policy compared."""

    nodes: list[Node]
    flavors: list[ResourceFlavor]
    cluster_queues: list[ClusterQueue]
    cohorts: list[Cohort]
    local_queues: list[LocalQueue]
    jobs: list[SimJob]
    topologies: list[Topology] = field(default_factory=list)
    config: Configuration = field(default_factory=Configuration)
    seed: int = 0
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    """Labels per namespace (from Namespace manifests), for ClusterQueues' namespaceSelector."""


@dataclass
class WorkloadRecord:
    """The life of one workload in a run (DESIGN.md's JSON `workloads` entries, plus a few)."""

    name: str
    namespace: str
    queue: str
    submitted_at: float
    cluster_queue: str | None = None
    workload_type: str = "training"
    gpus: float = 0.0
    admitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    preemptions: int = 0
    evictions: int = 0
    flavor: str | None = None
    nodes: list[str] = field(default_factory=list)
    pending_reason: str = ""
    deactivated: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "queue": self.queue,
            "submitted_at": self.submitted_at,
            "admitted_at": self.admitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "preemptions": self.preemptions,
            "flavor": self.flavor,
            "nodes": list(self.nodes),
        }


@dataclass
class Sample:
    """The cluster at one instant, for the time-series plots."""

    at: float
    allocated_gpus: float
    waiting: int
    running: int
    usage_by_queue: dict[str, float]


@dataclass
class RunResult:
    policy: str
    metrics: dict[str, Any]
    workloads: list[WorkloadRecord]
    samples: list[Sample]
    cycle_seconds: list[float]
    gpu_capacity: float


@dataclass
class _State:
    job: SimJob
    record: WorkloadRecord
    epoch: int = 0
    queued_at: float = 0.0
    not_before: float = 0.0
    admitted: Admitted | None = None
    """Current admission record; its `bindings` are every pod bound so far (kept up to date)."""
    pending: Pending | None = None


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


class Simulation:
    """One policy over one setup; `run()` returns the workloads' histories and the metrics."""

    def __init__(self, setup: Setup, policy: Policy, binder: Binder | None = None,
                 progress: Callable[[float], None] | None = None) -> None:
        self.setup = setup
        self.policy = policy
        self.binder = binder
        if not policy.places_pods and binder is None:
            raise ValueError(f"policy {policy.name} does not place pods and no binder was given")
        self.progress = progress
        self.rng = random.Random(setup.seed)
        self.cluster = Cluster.from_nodes(setup.nodes)
        self.tree = QuotaTree(setup.cluster_queues, setup.cohorts)
        self.usage = Usage.empty(self.tree)
        self.local_queues = {(q.namespace, q.name): q for q in setup.local_queues}
        self.config = setup.config
        self.wait_for_pods_ready = self.config.wait_for_pods_ready
        afs = self.config.admission_fair_sharing
        self.fair_sharing = AdmissionFairSharing.from_config(afs) if afs is not None else None
        self.states: dict[str, _State] = {}
        self.pending: dict[str, _State] = {}
        self.admitted: dict[str, _State] = {}
        self.nominated: set[str] = set()
        """Pending workloads whose `Pending.nominated_nodes` the last cycle set."""
        # What every snapshot shares. Built once: a policy may then recognise them by identity
        # between cycles (the `kueue` policy keeps its queues while the configuration is the same).
        self._flavors = {f.name: f for f in setup.flavors}
        self._cluster_queues = {q.name: q for q in setup.cluster_queues}
        self._topologies = {t.name: t for t in setup.topologies}
        self._pending_list: list[Pending] | None = None
        self._admitted_list: list[Admitted] | None = None
        """The snapshots' lists, rebuilt only after a change (None): a snapshot's lists are never
        mutated, so a cycle that changed nothing hands the next one the very same objects."""
        self._admitted_keys: frozenset[str] | None = None
        """The admitted keys, rebuilt only after an admission or a release (a pod bind replaces
        the admitted list, not its keys)."""
        self._unplaced: dict[str, None] = {}
        """Admitted workloads whose pods are not all bound yet (kube-scheduler's work), in admission order."""
        self._running = 0
        """Admitted workloads whose pods all started (kept by the transitions: sampled every instant)."""
        self._gpus_by_queue: dict[str, tuple[int, int]] = {}
        """(workloads, GPU milli) admitted per ClusterQueue (likewise; CPU-only ones count too)."""
        self._reasons: dict[str, str] = {}
        """Pending reasons the cycles gave since the record was last written otherwise (applied
        to the records at the end: every cycle gives one per pending workload)."""
        self.events: list[tuple[float, int, EventKind, str, int]] = []
        self._seq = 0
        self.samples: list[Sample] = []
        self.cycle_seconds: list[float] = []
        self.now = 0.0
        self.gpu_capacity = self.cluster.capacity(GPU_RESOURCE) / 1000
        self._alloc_integral = 0.0
        self._busy_integral = 0.0
        self._busy_time = 0.0
        self._last_t: float | None = None
        for job in setup.jobs:
            key = job.workload.key
            if key in self.states:
                raise ValueError(f"{job.source}: duplicate workload {key}")
            workload = job.workload
            record = WorkloadRecord(
                name=workload.name,
                namespace=workload.namespace,
                queue=workload.local_queue,
                submitted_at=job.submit_at,
                cluster_queue=self._cluster_queue(workload),
                workload_type=workload.workload_type,
                gpus=workload.total_gpus() / 1000,
            )
            self.states[key] = _State(job=job, record=record)
            self._push(job.submit_at, "submit", key, 0)

    # --- events -------------------------------------------------------------------------------

    def _push(self, at: float, kind: EventKind, key: str, epoch: int) -> None:
        self._seq += 1
        heapq.heappush(self.events, (at, self._seq, kind, key, epoch))

    def _cluster_queue(self, workload: WorkloadInfo) -> str | None:
        if workload.cluster_queue:
            return workload.cluster_queue
        queue = self.local_queues.get((workload.namespace, workload.local_queue))
        return queue.spec.cluster_queue if queue else None

    def run(self) -> RunResult:
        started = time.perf_counter()
        while self.events:
            at = self.events[0][0]
            self._advance(at)
            while self.events and self.events[0][0] == at:
                _, _, kind, key, epoch = heapq.heappop(self.events)
                self._handle(kind, key, epoch)
            self._schedule()
            self._sample()
            if self.progress:
                self.progress(at)
        self._advance(self.now)
        return self._result(time.perf_counter() - started)

    def _advance(self, at: float) -> None:
        """Integrate allocation and busy time up to `at`."""
        if self._last_t is not None and at > self._last_t:
            span = at - self._last_t
            allocated = self.cluster.allocated(GPU_RESOURCE) / 1000
            self._alloc_integral += allocated * span
            if self._waiting() > 0:
                self._busy_integral += allocated * span
                self._busy_time += span
        self._last_t = at if self._last_t is None else max(self._last_t, at)
        self.now = max(self.now, at)

    def _waiting(self) -> int:
        return len(self.pending) + len(self.admitted) - self._running

    def _handle(self, kind: EventKind, key: str, epoch: int) -> None:
        state = self.states[key]
        if kind == "submit":
            state.queued_at = self.now
            self._enqueue(state)
        elif kind == "finish" and epoch == state.epoch and key in self.admitted:
            self._release(state)
            state.record.finished_at = self.now
        elif kind == "timeout" and epoch == state.epoch and key in self.admitted and state.record.started_at is None:
            self._evict_for_pods_ready(state)
        # "wake" only makes the loop run a cycle at its time

    # --- transitions ----------------------------------------------------------------------------

    def _release(self, state: _State) -> None:
        assert state.admitted is not None
        for binding in state.admitted.bindings:
            self.cluster.unbind(binding)
        self.usage = self.usage.release(state.admitted.cluster_queue, dict(state.admitted.usage))
        if self.fair_sharing is not None:
            self.fair_sharing.release(*fair_sharing_charge(state.admitted), at=self.now)
        key = state.job.workload.key
        del self.admitted[key]
        self._admitted_keys = None
        if state.record.started_at is not None:
            self._running -= 1
        self._count_gpus(state, -1)
        self._unplaced.pop(key, None)
        self._admitted_list = None
        state.admitted = None
        state.epoch += 1

    def _enqueue(self, state: _State) -> None:
        state.pending = Pending(
            workload=state.job.workload, queued_at=state.queued_at, requeue_count=state.record.evictions,
            not_before=state.not_before,
        )
        self.pending[state.job.workload.key] = state
        self._pending_list = None

    def _requeue(self, state: _State, backoff: float) -> None:
        state.queued_at = self.now
        state.not_before = self.now + backoff
        state.record.started_at = None
        self._enqueue(state)
        if backoff > 0:
            self._push(state.not_before, "wake", state.job.workload.key, state.epoch)

    def _evict_for_pods_ready(self, state: _State) -> None:
        """waitForPodsReady: the pods did not all start in time; evict and requeue with backoff."""
        self._release(state)
        state.record.evictions += 1
        strategy = self.wait_for_pods_ready.requeuing_strategy
        limit = strategy.backoff_limit_count
        if limit is not None and state.record.evictions > limit:
            state.record.deactivated = True
            self._set_reason(state, f"deactivated after {state.record.evictions} evictions by waitForPodsReady")
            return
        backoff = min(strategy.backoff_base_seconds * 2 ** (state.record.evictions - 1), strategy.backoff_max_seconds)
        self._requeue(state, float(backoff))

    def _preempt(self, key: str, reason: PreemptionReason, preemptor: str) -> None:
        state = self.admitted.get(key)
        if state is None:
            return
        self._release(state)
        state.record.preemptions += 1
        self._set_reason(state, f"preempted ({reason}) by {preemptor}")
        self._requeue(state, 0.0)

    def _set_reason(self, state: _State, text: str) -> None:
        """Write a record's pending reason now (it outranks what earlier cycles said)."""
        self._reasons.pop(state.job.workload.key, None)
        state.record.pending_reason = text

    def _admit(self, admission: Admission) -> None:
        state = self.pending.pop(admission.key)
        self._pending_list = None
        usage = dict(admission.usage)
        self.usage = self.usage.admit(admission.cluster_queue, usage)
        state.record.admitted_at = self.now
        state.record.cluster_queue = admission.cluster_queue
        flavors = sorted({f for p in admission.podsets for f in p.flavors.values()})
        gpu_flavors = sorted({p.flavors[GPU_RESOURCE] for p in admission.podsets if GPU_RESOURCE in p.flavors})
        state.record.flavor = (gpu_flavors or flavors or [None])[0]
        bindings: list[Binding] = []
        placements = []
        for placement in admission.podsets:
            pod = next(p for p in state.job.workload.podsets if p.name == placement.name).requests
            # A pod pinned to a node that has no room left stays Pending for the binder to retry.
            bound = [self.cluster.bind(node, pod) for node in placement.nodes if self.cluster.node(node).fits(pod)]
            bindings.extend(bound)
            placements.append(replace(placement, nodes=tuple(b.node for b in bound)))
        state.admitted = Admitted(
            workload=state.job.workload,
            cluster_queue=admission.cluster_queue,
            admitted_at=self.now,
            usage=usage,
            podsets=tuple(placements),
            bindings=tuple(bindings),
        )
        self.admitted[admission.key] = state
        self._admitted_keys = None
        self._count_gpus(state, +1)
        self._admitted_list = None
        self._unplaced[admission.key] = None
        if self.fair_sharing is not None:
            self.fair_sharing.admit(*fair_sharing_charge(state.admitted), at=self.now)
        if self.wait_for_pods_ready.enable:
            self._push(self.now + self.wait_for_pods_ready.timeout, "timeout", admission.key, state.epoch)
        self._maybe_started(state)

    def _maybe_started(self, state: _State) -> None:
        assert state.admitted is not None
        if state.record.started_at is not None or not state.admitted.placed:
            return
        state.record.started_at = self.now
        self._running += 1
        state.record.nodes = sorted({b.node for b in state.admitted.bindings})
        self._unplaced.pop(state.job.workload.key, None)
        self._set_reason(state, "")
        if state.job.duration is not None:
            self._push(self.now + state.job.duration, "finish", state.job.workload.key, state.epoch)

    def _count_gpus(self, state: _State, sign: int) -> None:
        cq = state.record.cluster_queue or "?"
        count, milli = self._gpus_by_queue.get(cq, (0, 0))
        count, milli = count + sign, milli + sign * state.job.workload.total_gpus()
        if count:
            self._gpus_by_queue[cq] = (count, milli)
        else:
            del self._gpus_by_queue[cq]

    def _bind_pending_pods(self) -> None:
        if self.binder is None:
            return
        if not self._unplaced:
            return
        waiting = [a for a in (self.admitted[k].admitted for k in self._unplaced) if a is not None and not a.placed]
        if not waiting:
            return
        waiting.sort(key=lambda a: (a.admitted_at, a.key))
        for key, index, binding in self.binder(self.snapshot(), waiting, self.rng):
            state = self.admitted[key]
            assert state.admitted is not None
            podsets = list(state.admitted.podsets)
            podsets[index] = replace(podsets[index], nodes=podsets[index].nodes + (binding.node,))
            state.admitted = replace(state.admitted, podsets=tuple(podsets), bindings=state.admitted.bindings + (binding,))
            self._admitted_list = None
            self._maybe_started(state)

    # --- cycles ---------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The state now, for a cycle. The lists and mappings are shared with other snapshots
        of this run and must not be mutated (they are replaced, never changed, when the state
        changes)."""
        if self._pending_list is None:
            self._pending_list = [s.pending for s in self.pending.values() if s.pending is not None]
        if self._admitted_list is None:
            self._admitted_list = [s.admitted for s in self.admitted.values() if s.admitted is not None]
        if self._admitted_keys is None:
            self._admitted_keys = frozenset(self.admitted)  # (every entry of `admitted` holds its admission)
        return Snapshot(
            now=self.now,
            cluster=self.cluster,
            tree=self.tree,
            usage=self.usage,
            flavors=self._flavors,
            cluster_queues=self._cluster_queues,
            local_queues=self.local_queues,
            admitted=self._admitted_list,
            pending=self._pending_list,
            topologies=self._topologies,
            config=self.config,
            admission_fair_sharing=self.fair_sharing,
            seed=self.setup.seed,
            namespace_labels=self.setup.namespace_labels,
            known_admitted_keys=self._admitted_keys,
        )

    def _schedule(self) -> None:
        self._bind_pending_pods()
        for _ in range(MAX_CYCLES_PER_INSTANT):
            if not self.pending:
                break
            snapshot = self.snapshot()
            started = time.perf_counter()
            decisions = self.policy.schedule(snapshot)
            self.cycle_seconds.append(time.perf_counter() - started)
            changed = self._apply(decisions)
            self._bind_pending_pods()
            if not changed and not decisions.again:
                break

    def _apply(self, decisions: Decisions) -> bool:
        for preemption in decisions.preemptions:
            self._preempt(preemption.key, preemption.reason, preemption.preemptor)
        for admission in decisions.admissions:
            if admission.key in self.pending:
                self._admit(admission)
        self._reasons.update(decisions.pending)  # into the records at the end (`_flush_reasons`)
        self._nominate(decisions.nominations)
        return bool(decisions.preemptions or decisions.admissions)

    def _nominate(self, nominations: Mapping[str, frozenset[str]]) -> None:
        """Pass the policy's nominations to the next snapshot; the others lapse."""
        for key in self.nominated - nominations.keys():
            state = self.pending.get(key)
            if state is not None and state.pending is not None:
                state.pending = replace(state.pending, nominated_nodes=frozenset())
                self._pending_list = None
        self.nominated = set()
        for key, nodes in nominations.items():
            state = self.pending.get(key)
            if state is not None and state.pending is not None:
                state.pending = replace(state.pending, nominated_nodes=frozenset(nodes))
                self._pending_list = None
                self.nominated.add(key)

    # --- results --------------------------------------------------------------------------------

    def _sample(self) -> None:
        self.samples.append(
            Sample(
                at=self.now,
                allocated_gpus=self.cluster.allocated(GPU_RESOURCE) / 1000,
                waiting=self._waiting(),
                running=self._running,
                usage_by_queue={cq: milli / 1000 for cq, (_, milli) in self._gpus_by_queue.items()},
            )
        )

    def _flush_reasons(self) -> None:
        """Write the cycles' last pending reasons into the records (done once, at the end: a
        cycle gives a reason to every pending workload, and writing thousands of records per
        cycle cost more than the cycle itself)."""
        for key, reason in self._reasons.items():
            state = self.states.get(key)
            if state is not None:
                state.record.pending_reason = reason
        self._reasons.clear()

    def _result(self, wall: float) -> RunResult:
        self._flush_reasons()
        records = [s.record for s in self.states.values()]
        first = min((r.submitted_at for r in records), default=0.0)
        finishes = [r.finished_at for r in records if r.finished_at is not None]
        end = max(finishes) if finishes else self.now
        span = max(end - first, 0.0)
        waits = [r.started_at - r.submitted_at for r in records if r.started_at is not None]
        jcts = [r.finished_at - r.submitted_at for r in records if r.finished_at is not None]
        cycles_ms = [s * 1000 for s in self.cycle_seconds]
        capacity = self.gpu_capacity
        metrics: dict[str, Any] = {
            "gpu_utilization": self._alloc_integral / (capacity * span) if capacity and span else 0.0,
            "gpu_utilization_busy": self._busy_integral / (capacity * self._busy_time) if capacity and self._busy_time else 0.0,
            "workloads": len(records),
            "admitted": sum(1 for r in records if r.admitted_at is not None),
            "finished": len(finishes),
            "never_admitted": sum(1 for r in records if r.admitted_at is None),
            "preemptions": sum(r.preemptions for r in records),
            "evictions": sum(r.evictions for r in records),
            "mean_wait_s": sum(waits) / len(waits) if waits else 0.0,
            "p95_wait_s": _percentile(waits, 95),
            "mean_jct_s": sum(jcts) / len(jcts) if jcts else 0.0,
            "makespan_s": span,
            "cycle_latency_p50_ms": _percentile(cycles_ms, 50),
            "cycle_latency_p99_ms": _percentile(cycles_ms, 99),
            "cycles": len(cycles_ms),
            "wall_s": wall,
        }
        return RunResult(self.policy.name, metrics, records, self.samples, self.cycle_seconds, capacity)


def run_policies(setup: Setup, policies: Iterable[tuple[Policy, Binder | None]],
                 progress: Callable[[str, float], None] | None = None) -> list[RunResult]:
    """Every policy on the same setup and seed, one after the other."""
    results = []
    for policy, binder in policies:
        callback = (lambda at, name=policy.name: progress(name, at)) if progress else None
        results.append(Simulation(setup, policy, binder, callback).run())
    return results

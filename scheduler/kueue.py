"""The `kueue` policy: Kueue's scheduling cycle, admission by quota, kube-scheduler placement.

One call of `greedy_cycle` (and so of ``KueuePolicy.schedule``) is one cycle of Kueue's
scheduler (pkg/scheduler/scheduler.go) over the queue manager's state (pkg/cache/queue):

1. **Queues.** Pending workloads go to their ClusterQueue through their LocalQueue. A
   workload whose LocalQueue or ClusterQueue is unknown, whose namespace the ClusterQueue's
   ``namespaceSelector`` does not select (no selector selects nothing), whose LocalQueue or
   ClusterQueue has ``stopPolicy`` Hold/HoldAndDrain, or which is in requeue backoff
   (``not_before > now``), is in no queue and stays pending with that reason. Inside a
   ClusterQueue: LocalQueue usage first when admission fair sharing is on, then priority
   (higher first), then queue time (FIFO), then key.
2. **Heads.** One head per ClusterQueue per cycle. Under BestEffortFIFO a head found
   inadmissible (NoFit, or Preempt without candidates) is set aside (Kueue's inadmissible
   list) and the next workload is head in the *next* cycle; set-aside workloads return
   when quota is released in their cohort tree (a workload of the tree finished or was
   evicted), as ``QueueAssociatedInadmissibleWorkloadsAfter`` does, and a workload whose
   preemptions are in flight stays head (Kueue's sticky preemptor). Under StrictFIFO an
   inadmissible head stays head and blocks the queue.
3. **Nomination.** Every head gets a flavor assignment against the usage at the start of
   the cycle (`quotas.flavors.assign_flavors`, flavors the podset cannot use filtered by
   `scheduler.flavors.podset_fits_flavor`, the preemption oracle deciding whether a flavor
   that needs preemption has candidates). Fit: done. Preempt: `quotas.preemption.find_victims`.
   Else, with ``minCount``, partial admission searches the largest counts that fit (or that
   fit by preemption). Topology-aware podsets get a TAS placement (`scheduler.kueue_tas`).
4. **Order.** Without fair sharing: not borrowing first (lower borrowing level), then
   priority, then queue time. With ``fairSharing.enable``: the tournament of
   `quotas.fair_sharing` rerun after every entry with the cycle's usage.
5. **Admit.** For each entry in order: skipped if its victims overlap those of an earlier
   entry, or if it no longer fits the cycle's usage (earlier admissions and reservations
   counted, victims of this cycle removed); otherwise its usage is charged to the cycle.
   A Fit entry is admitted (quota reserved; TAS pods pinned to nodes); a Preempt entry emits
   `Preemption` decisions and waits: it is *not* admitted in the same cycle. A Preempt entry
   without candidates reserves its quota for the rest of the cycle unless the ClusterQueue
   can always reclaim (``reclaimWithinCohort: Any``).

Admission is by quota only (except TAS): the admissions carry ``nodes=()`` and the pods are
placed later, pod by pod, by `bind_pending_pods` as kube-scheduler would; pods that do not
fit stay Pending and keep the quota reserved (``waitForPodsReady`` is the simulator's job).

Driving it (one policy object per run: it keeps the queue manager's state)::

    decisions = policy.schedule(snapshot)
    # evict decisions.preemptions (a victim still terminating stays admitted with evicted=True)
    for adm in decisions.admissions:          # binds the TAS pods the admission pins to nodes
        records.append(admitted_from_admission(cluster, adm, workload_of[adm.key], now))
    made = policy.bind_pending(cluster, records, snapshot)      # kube-scheduler's pass
    records = apply_pod_bindings(records, made)
    # decisions.again: Kueue would run its next cycle at once (same instant)

For a solver: ``greedy_cycle(snapshot, drain=True)`` is the greedy admission of back-to-back
cycles at one instant (stateless by default), and `place_admissions` gives its pods nodes.

Deviations from Kueue are listed in `DEVIATIONS`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, repeat
from typing import NamedTuple

from quotas.api import ResourceFlavor, Topology
from quotas.fair_sharing import TournamentEntry, tournament_winner
from quotas.flavors import Assignment, AssignmentMode, PodSetRequest, assign_flavors
from quotas.preemption import AdmittedWorkload, Preemptor, Victim, find_victims, preemption_oracle
from quotas.units import FlavorResource
from quotas.usage import Usage
from scheduler.affinity import NodeConstraints
from scheduler.cluster import Binding, Cluster
from scheduler.decisions import Admission, CycleStats, Decisions, Preemption, register_policy
from scheduler.fgd import FGDScorer, TaskDistribution
from scheduler.flavors import flavor_nodes, podset_fits_flavor
from scheduler.kueue_reasons import explain_quota, preemption_policy_text
from scheduler.kueue_tas import TASPlacement, TASPlanner, constraints_with_flavors, domain_nodes, tas_flavor_of
from scheduler.placement import RandomScorer, Scorer, bin_packing, default_profile, place_podset
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot
from scheduler.workload import PodSetInfo, WorkloadInfo

__all__ = [
    "DEVIATIONS",
    "BestFitPolicy",
    "FGDPolicy",
    "KueuePolicy",
    "PodBinding",
    "QueueState",
    "RandomPolicy",
    "admitted_from_admission",
    "apply_pod_bindings",
    "bind_pending_pods",
    "greedy_cycle",
    "place_admissions",
]

DEVIATIONS = """\
- Namespace labels: the snapshot carries none, so namespaceSelector is matched against
  {kubernetes.io/metadata.name: <namespace>} plus snapshot.namespace_labels.
- Workloads rejected before nomination (namespace mismatch, stopped queues, unknown
  queues) do not take a head slot (Kueue pops them once and parks them as inadmissible).
- Set-aside (inadmissible) workloads return on quota release in their cohort tree;
  TAS-placement failures also return on any release and on new schedulable nodes. Other
  Kueue triggers (ClusterQueue/flavor/cohort updates) are not modelled.
- LastAssignment / flavor-resume and TAS failed-flavor memory are not kept across cycles:
  every nomination tries the flavors from the first one.
- Partial admission shrinks podsets from the last one (ordered reducer) without the
  give-back pass for several reduced podsets.
- TAS applies only to podsets with an explicit topology request (no implied TAS for
  TAS-only ClusterQueues; non-TAS podsets may use TAS flavors through kube-scheduler).
  A Preempt entry without candidates gets no empty-cluster TAS reservation.
- waitForPodsReady.blockAdmission: the entry is not admitted this cycle (Kueue's
  scheduler blocks until pods are ready, then admits).
- drain=True: workloads admitted earlier in the same call are not preemption candidates
  (Kueue's next cycle could preempt them; one Decisions cannot both admit and preempt).
- Admission fair sharing orders the LocalQueues of every ClusterQueue when configured
  (Kueue: only ClusterQueues with admissionScope UsageBasedAdmissionFairSharing).
- Admission checks, MultiKueue, workload slices, DRA and priority boost are out of scope.
"""

Token = tuple[float, int]

# --- queue manager state ------------------------------------------------------------------------


def _token(p: Pending) -> Token:
    """Identifies one queued incarnation of a workload (an eviction requeues it with a new one)."""
    return (p.queued_at, p.requeue_count)


def _root_key(snapshot: Snapshot, cq: str) -> tuple[str, str]:
    root = snapshot.tree.root(cq)
    return (root.kind, root.name)


@dataclass
class _SetAside:
    token: Token
    cluster_queue: str
    root: tuple[str, str]
    reason: str
    physical: bool


@dataclass
class QueueState:
    """What Kueue's queue manager remembers between cycles: the inadmissible (set-aside)
    workloads of BestEffortFIFO queues, the sticky preemptor of each ClusterQueue, and what
    was admitted last time (to notice quota being released)."""

    inadmissible: dict[str, _SetAside] = field(default_factory=dict)
    sticky: dict[str, tuple[str, Token]] = field(default_factory=dict)
    last_admitted: dict[tuple[str, str], frozenset[str]] | None = None
    last_schedulable: frozenset[str] | None = None
    cycles: int = 0

    def observe(self, snapshot: Snapshot) -> None:
        """Requeue set-aside workloads whose cohort tree released quota since the last cycle."""
        tree = snapshot.tree
        current: dict[tuple[str, str], set[str]] = {}
        for a in snapshot.admitted:
            if tree.has_cluster_queue(a.cluster_queue):
                current.setdefault(_root_key(snapshot, a.cluster_queue), set()).add(a.key)
        released = {r for r, keys in (self.last_admitted or {}).items() if keys - current.get(r, set())}
        schedulable = frozenset(n.name for n in snapshot.cluster if n.schedulable)
        grew = self.last_schedulable is not None and not schedulable <= self.last_schedulable
        tokens = {p.key: _token(p) for p in snapshot.pending}
        for key, entry in list(self.inadmissible.items()):
            if (
                tokens.get(key) != entry.token
                or entry.root in released
                or (entry.physical and (bool(released) or grew))
            ):
                del self.inadmissible[key]
        for cq, (key, token) in list(self.sticky.items()):
            if tokens.get(key) != token:
                del self.sticky[cq]
        self.last_admitted = {r: frozenset(keys) for r, keys in current.items()}
        self.last_schedulable = schedulable
        self.cycles += 1


# --- one cycle --------------------------------------------------------------------------------


@dataclass
class _Entry:
    pending: Pending
    cq: str
    counts: tuple[int, ...]
    assignment: Assignment
    mode: AssignmentMode
    victims: tuple[Victim, ...] = ()
    tas: dict[int, TASPlacement] = field(default_factory=dict)
    reason: str = ""
    physical: bool = False
    tas_commits: int = 0

    @property
    def key(self) -> str:
        return self.pending.key

    @property
    def workload(self) -> WorkloadInfo:
        return self.pending.workload


_MISSING = object()

# outcomes of a processed head
ADMITTED, INADMISSIBLE, PREEMPTING, SKIPPED = "admitted", "inadmissible", "preempting", "skipped"


class _Cycle:
    """Everything one `greedy_cycle` call shares: the snapshot, usage as admissions accumulate,
    preemption candidates, TAS working cluster and per-call caches."""

    def __init__(self, snapshot: Snapshot, state: QueueState, decisions: Decisions) -> None:
        self.s = snapshot
        self.tree = snapshot.tree
        self.state = state
        self.decisions = decisions
        self.now = snapshot.now
        self.fs_config = snapshot.config.fair_sharing
        self.fs = bool(self.fs_config.enable)
        self.usage: Usage = snapshot.usage
        """Usage of everything admitted: the snapshot's plus this call's admissions."""
        self.admitted_by_key: dict[str, Admitted] = {a.key: a for a in snapshot.admitted}
        self.candidates: dict[str, AdmittedWorkload] = {a.key: a.as_candidate() for a in snapshot.admitted}
        self.tas = TASPlanner(snapshot)
        self.issued: set[str] = set()
        self.admitted_here = 0
        wfpr = snapshot.config.wait_for_pods_ready
        self.block_admission = bool(wfpr.enable and wfpr.block_admission)
        self.not_ready = any(not a.placed and not a.evicted for a in snapshot.admitted)
        self._eligible: dict[tuple[object, ...], str | None] = {}
        self._label_keys: dict[str, dict[str, frozenset[str]]] = {}
        self._roots: dict[str, tuple[str, str]] = {}
        self.considered = 0

    # --- queues -------------------------------------------------------------------------------

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        labels = dict(self.s.namespace_labels.get(namespace, {}))
        labels["kubernetes.io/metadata.name"] = namespace  # the API server sets it, users cannot
        return labels

    def build_queues(self) -> dict[str, list[Pending]]:
        """Pending workloads per ClusterQueue in queue order (set-aside ones left out); the
        reasons of the workloads in no queue go straight into the decisions."""
        s, tree, st = self.s, self.tree, self.state
        reasons = self.decisions.pending
        queues: dict[str, list[Pending]] = {}
        afs = s.admission_fair_sharing
        lq_usage: dict[str, float] = {}
        matched: dict[tuple[str, str], bool] = {}  # (ClusterQueue, namespace) -> selected
        for p in s.pending:
            w = p.workload
            key = p.key
            if key in self.admitted_by_key:
                reasons[key] = "waiting for its previous admission to be released"
                continue
            if p.not_before > self.now:
                reasons[key] = f"requeued with backoff: not before t={p.not_before:g} ({p.not_before - self.now:.0f}s left)"
                continue
            lq = s.local_queues.get((w.namespace, w.local_queue))
            cq_name = s.cluster_queue_of(w)
            if cq_name is None:
                reasons[key] = f"LocalQueue {w.namespace}/{w.local_queue} not found"
                continue
            cq = s.cluster_queues.get(cq_name)
            if cq is None or not tree.has_cluster_queue(cq_name):
                reasons[key] = f"ClusterQueue {cq_name} not found"
                continue
            if lq is not None and lq.spec.stop_policy != "None":
                reasons[key] = f"LocalQueue {w.namespace}/{w.local_queue} is stopped (stopPolicy: {lq.spec.stop_policy})"
                continue
            if cq.spec.stop_policy != "None":
                reasons[key] = f"ClusterQueue {cq_name} is stopped (stopPolicy: {cq.spec.stop_policy})"
                continue
            selector = cq.spec.namespace_selector
            if selector is None:
                reasons[key] = f"namespace not selected by ClusterQueue {cq_name}: it has no namespaceSelector, which selects no namespace"
                continue
            selected = matched.get((cq_name, w.namespace))
            if selected is None:
                selected = matched[(cq_name, w.namespace)] = selector.matches(self._namespace_labels(w.namespace))
            if not selected:
                reasons[key] = f"namespace not selected by ClusterQueue {cq_name}: namespace {w.namespace} does not match its namespaceSelector"
                continue
            aside = st.inadmissible.get(key)
            if aside is not None and aside.token == _token(p):
                reasons[key] = aside.reason
                continue
            queues.setdefault(cq_name, []).append(p)
        for cq_name, queue in queues.items():
            sticky = st.sticky.get(cq_name)

            def order(p: Pending, sticky: tuple[str, Token] | None = sticky) -> tuple[object, ...]:
                w = p.workload
                first = 0 if sticky is not None and sticky == (p.key, _token(p)) else 1
                share = 0.0
                if afs is not None:
                    lq_key = f"{w.namespace}/{w.local_queue}"
                    share = lq_usage.get(lq_key, -1.0)
                    if share < 0:
                        share = lq_usage[lq_key] = afs.usage(lq_key, at=self.now)
                return (first, share, -w.priority, p.queued_at, w.creation_time, p.key)

            queue.sort(key=order)
        return queues

    # --- nomination ----------------------------------------------------------------------------

    def _label_keys_for(self, cq: str) -> dict[str, frozenset[str]]:
        found = self._label_keys.get(cq)
        if found is None:
            found = {}
            for group in self.tree.cluster_queue(cq).resource_groups:
                keys = frozenset(
                    k for f in group.flavors if f.name in self.s.flavors for k in self.s.flavors[f.name].spec.node_labels
                )
                for f in group.flavors:
                    found[f.name] = keys
            self._label_keys[cq] = found
        return found

    def eligibility(self, cq: str, workload: WorkloadInfo) -> Callable[[str, str], str | None]:
        keys = self._label_keys_for(cq)
        by_name: dict[str, PodSetInfo] = {}
        for ps in workload.podsets:
            by_name.setdefault(ps.name, ps)
        flavors, topologies, cache = self.s.flavors, self.s.topologies, self._eligible

        def eligible(podset: str, flavor_name: str) -> str | None:
            ps = by_name[podset]
            ck = (ps.constraints, ps.topology, flavor_name, keys.get(flavor_name))
            found = cache.get(ck, _MISSING)
            if found is not _MISSING:
                return found  # type: ignore[return-value]
            flavor = flavors.get(flavor_name)
            why: str | None
            if flavor is None:
                why = f"flavor {flavor_name} not found"
            else:
                why = podset_fits_flavor(ps, flavor, keys.get(flavor_name))
                if why is None and ps.topology is not None:
                    topo_name = flavor.spec.topology_name
                    if not topo_name:
                        why = f'Flavor "{flavor_name}" does not support TopologyAwareScheduling'
                    elif topo_name not in topologies:
                        why = f'Flavor "{flavor_name}" information missing in TAS cache (Topology "{topo_name}" not found)'
                    elif ps.topology.level not in topologies[topo_name].level_labels:
                        why = f'Flavor "{flavor_name}" does not contain the requested level "{ps.topology.level}"'
            cache[ck] = why
            return why

        return eligible

    def preemption_candidates(self, cq: str, priority: int, queued_at: float) -> list[AdmittedWorkload]:
        """The admitted workloads the ClusterQueue's preemption policy lets this preemptor
        consider at all: its own per ``withinClusterQueue``, those of its cohort tree per
        ``reclaimWithinCohort`` (the quota engine applies the same rules again, and the rest;
        filtering first only saves it the work)."""
        spec = self.s.cluster_queues[cq].spec.preemption
        within, reclaim = spec.within_cluster_queue, spec.reclaim_within_cohort
        if within == "Never" and reclaim == "Never":
            return []
        roots = self._roots
        root = roots.get(cq) or roots.setdefault(cq, _root_key(self.s, cq))
        out = []
        for c in self.candidates.values():
            other = c.cluster_queue
            policy = within if other == cq else reclaim
            if policy == "Never":
                continue
            if policy == "LowerPriority" and c.priority >= priority:
                continue
            if policy == "LowerOrNewerEqualPriority" and not (
                c.priority < priority or (c.priority == priority and queued_at < c.queued_at)
            ):
                continue
            if other != cq:
                their = roots.get(other)
                if their is None:
                    if not self.tree.has_cluster_queue(other):
                        continue
                    their = roots[other] = _root_key(self.s, other)
                if their != root:
                    continue
            out.append(c)
        return out

    def nominate(self, p: Pending, cq: str, usage: Usage) -> _Entry:
        """Kueue's getAssignments: full counts, then preemption targets, then partial admission."""
        self.considered += 1
        w = p.workload
        tree = self.tree
        eligible = self.eligibility(cq, w)
        candidates = self.preemption_candidates(cq, w.priority, p.queued_at)
        base = Preemptor(w.key, cq, w.priority, {}, p.queued_at)
        oracle = preemption_oracle(tree, usage, base, candidates, fair_sharing=self.fs_config)

        def attempt(counts: tuple[int, ...]) -> _Entry:
            requests = [PodSetRequest(ps.name, c, ps.requests.as_dict()) for ps, c in zip(w.podsets, counts)]
            a = assign_flavors(tree, usage, cq, requests, eligible=eligible, fair_sharing=self.fs, oracle=oracle)
            e = _Entry(p, cq, counts, a, a.mode, tas_commits=self.tas.commits)
            if e.mode == AssignmentMode.FIT:
                placements, why = self.tas.place(w, [ps.flavors for ps in a.podsets], counts)
                if why:
                    e.mode, e.reason, e.physical = AssignmentMode.NO_FIT, why, True
                else:
                    e.tas = placements
            return e

        def targets(e: _Entry) -> tuple[Victim, ...]:
            pre = Preemptor(w.key, cq, w.priority, dict(e.assignment.usage), p.queued_at)
            found = find_victims(
                tree, usage, pre, candidates, needs_preemption=e.assignment.preempt_frs, fair_sharing=self.fs_config
            )
            return found.victims

        full = tuple(ps.count for ps in w.podsets)
        entry = attempt(full)
        if entry.mode == AssignmentMode.FIT:
            return entry
        if entry.mode == AssignmentMode.PREEMPT:
            victims = targets(entry)
            if victims:
                entry.victims = victims
                return self._tas_after_preemption(entry)
        deltas = [ps.count - (ps.min_count if ps.min_count is not None else ps.count) for ps in w.podsets]
        total = sum(deltas)
        if total > 0:

            def counts_for(amount: int) -> tuple[int, ...]:
                out = list(full)
                left = amount
                for i in range(len(out) - 1, -1, -1):
                    cut = min(deltas[i], left)
                    out[i] -= cut
                    left -= cut
                return tuple(out)

            def fits(amount: int) -> _Entry | None:
                e = attempt(counts_for(amount))
                if e.mode == AssignmentMode.FIT:
                    return e
                if e.mode == AssignmentMode.PREEMPT:
                    v = targets(e)
                    if v:
                        e.victims = v
                        return e
                return None

            lo, hi, best = 0, total + 1, None
            while lo < hi:  # sort.Search over the shrink budget: the smallest budget that fits
                mid = (lo + hi) // 2
                found = fits(mid)
                if found is not None:
                    best, hi = found, mid
                else:
                    lo = mid + 1
            if best is not None:
                return self._tas_after_preemption(best) if best.mode == AssignmentMode.PREEMPT else best
        return entry

    def _tas_after_preemption(self, e: _Entry) -> _Entry:
        """Kueue's updateAssignmentForTAS: a Preempt entry must fit its topology once the victims are gone."""
        w = e.workload
        if not any(ps.topology is not None for ps in w.podsets):
            return e
        removed = [self.admitted_by_key[v.workload.key] for v in e.victims if v.workload.key in self.admitted_by_key]
        placements, why = self.tas.place(w, [ps.flavors for ps in e.assignment.podsets], e.counts, removed)
        if why:
            e.mode, e.reason, e.physical, e.victims = AssignmentMode.NO_FIT, why, True, ()
        else:
            e.tas = placements
        return e

    # --- ordering ------------------------------------------------------------------------------

    def iterate(self, entries: list[_Entry], usage_of: Callable[[], Usage]) -> Iterable[_Entry]:
        """Kueue's entry iterators: classical order, or the fair-sharing tournament rerun per entry."""
        live = [e for e in entries if e.mode != AssignmentMode.NO_FIT]
        dead = [e for e in entries if e.mode == AssignmentMode.NO_FIT]
        if not self.fs:
            live.sort(key=lambda e: (e.assignment.borrow_level, -e.workload.priority, e.pending.queued_at, e.key))
            yield from live
        else:
            remaining = {e.cq: e for e in live}
            while remaining:
                tournament = [
                    TournamentEntry(e.key, e.cq, e.assignment.usage, e.workload.priority, e.pending.queued_at, e)
                    for e in remaining.values()
                ]
                won = tournament_winner(self.tree, usage_of(), tournament)
                assert won is not None
                entry = won.payload
                assert isinstance(entry, _Entry)
                del remaining[entry.cq]
                yield entry
        yield from dead

    # --- processing ----------------------------------------------------------------------------

    def _quota_reason(self, e: _Entry, usage: Usage) -> str:
        if e.reason:
            return e.reason
        eligible = self.eligibility(e.cq, e.workload)
        text = explain_quota(self.tree, usage, e.cq, e.assignment, eligible)
        return text or e.assignment.message or "does not fit"

    def _fits(self, e: _Entry, usage: Usage, preempted: Mapping[str, AdmittedWorkload]) -> bool:
        for w in chain(preempted.values(), (v.workload for v in e.victims if v.workload.key not in preempted)):
            usage = usage.release(w.cluster_queue, w.usage)
        node = self.tree.cluster_queue(e.cq)
        return all(v <= self.tree.available(node, fr, usage) for fr, v in e.assignment.usage.items() if v > 0)

    def _reserve_for_unreclaimable(self, e: _Entry, usage: Usage) -> Usage:
        """Kueue's reserveCapacityForUnreclaimablePreempt: hold quota for a head that waits
        without candidates unless its ClusterQueue can always reclaim (reclaimWithinCohort: Any)."""
        cq = self.s.cluster_queues[e.cq]
        if cq.spec.preemption.reclaim_within_cohort == "Any":
            return usage
        node = self.tree.cluster_queue(e.cq)
        used = usage.node(node.id)
        reserve: dict[FlavorResource, int] = {}
        for fr, v in e.assignment.usage.items():
            quota = node.quotas.get(fr)
            nominal = quota.nominal if quota else 0
            if e.assignment.borrows:
                if quota is None or quota.borrowing_limit is None:
                    amount = v
                else:
                    amount = min(v, nominal + quota.borrowing_limit - used.get(fr, 0))
            else:
                amount = min(v, nominal - used.get(fr, 0))
            if amount > 0:
                reserve[fr] = amount
        return usage.admit(e.cq, reserve) if reserve else usage

    def process(
        self, e: _Entry, cycle_usage: Usage, preempted: dict[str, AdmittedWorkload], recomputed: bool = False
    ) -> tuple[str, str, Usage, _Entry]:
        """One entry of the cycle: (outcome, reason, cycle usage after it, the entry as processed)."""
        w = e.workload
        if e.mode == AssignmentMode.NO_FIT:
            return INADMISSIBLE, self._quota_reason(e, self.usage), cycle_usage, e
        if e.mode == AssignmentMode.PREEMPT and not e.victims:
            policy = preemption_policy_text(self.s.cluster_queues[e.cq].spec.preemption)
            reason = f"{self._quota_reason(e, self.usage)}; no workload can be preempted ({policy})"
            return INADMISSIBLE, reason, self._reserve_for_unreclaimable(e, cycle_usage), e
        if e.tas and e.tas_commits != self.tas.commits and not recomputed:
            # TAS nominations of different heads are computed independently: recompute
            # against the cycle's state (Kueue's TASRecomputeAssignmentWithinSchedulingCycle).
            fresh = self.nominate(e.pending, e.cq, cycle_usage)
            return self.process(fresh, cycle_usage, preempted, recomputed=True)
        keys = {v.workload.key for v in e.victims}
        if keys & preempted.keys():
            return SKIPPED, "Workload has overlapping preemption targets with another workload in this cycle", cycle_usage, e
        if not self._fits(e, cycle_usage, preempted):
            return SKIPPED, "Workload no longer fits after processing another workload in this cycle", cycle_usage, e
        for v in e.victims:
            preempted[v.workload.key] = v.workload
        cycle_usage = cycle_usage.admit(e.cq, e.assignment.usage)
        if e.mode == AssignmentMode.PREEMPT:
            for v in e.victims:
                key = v.workload.key
                if key in self.issued or v.workload.evicted:
                    continue
                self.issued.add(key)
                self.candidates[key] = replace(self.candidates.get(key, v.workload), evicted=True)
                self.decisions.preemptions.append(
                    Preemption(key, w.key, v.reason, f"Preempted to accommodate a workload ({w.key}) due to {_reason_words(v)}")
                )
            n = len(e.victims)
            names = ", ".join(v.workload.key for v in e.victims)
            return PREEMPTING, f"waiting for preemption of {n} workload{'s' if n != 1 else ''} ({names})", cycle_usage, e
        if self.block_admission and (self.not_ready or self.admitted_here):
            return SKIPPED, "waiting for all admitted workloads to be in the PodsReady condition (waitForPodsReady.blockAdmission)", cycle_usage, e
        if e.tas and not self.tas.commit(w, e.tas):
            return SKIPPED, "Workload no longer fits its topology after processing another workload in this cycle", cycle_usage, e
        podsets = []
        for i, (ps, psa) in enumerate(zip(w.podsets, e.assignment.podsets)):
            placement = e.tas.get(i)
            podsets.append(
                PodSetPlacement(
                    name=ps.name,
                    count=e.counts[i],
                    flavors=dict(psa.flavors),
                    nodes=placement.nodes if placement else (),
                    domain=placement.domain if placement else None,
                )
            )
        usage = dict(e.assignment.usage)
        self.decisions.admissions.append(Admission(w.key, e.cq, tuple(podsets), usage, e.assignment.borrows))
        self.usage = self.usage.admit(e.cq, usage)
        # Not a preemption candidate in later (drained) cycles of this call: the caller would
        # get an admission and a preemption of the same workload in one set of decisions.
        self.admitted_here += 1
        return ADMITTED, "", cycle_usage, e

    def run_round(self, heads: Sequence[tuple[Pending, str]]) -> dict[str, tuple[str, str, _Entry]]:
        """One scheduling cycle over the given heads (one per ClusterQueue)."""
        start = self.usage
        entries = [self.nominate(p, cq, start) for p, cq in heads]
        cycle = {"usage": start}
        preempted: dict[str, AdmittedWorkload] = {}
        results: dict[str, tuple[str, str, _Entry]] = {}
        for e in self.iterate(entries, lambda: cycle["usage"]):
            outcome, reason, cycle["usage"], done = self.process(e, cycle["usage"], preempted)
            results[e.key] = (outcome, reason, done)
        return results


def _reason_words(v: Victim) -> str:
    return {
        "InClusterQueue": "prioritization in the ClusterQueue",
        "InCohortReclamation": "reclamation within the cohort",
        "InCohortFairSharing": "fair sharing within the cohort",
        "InCohortReclaimWhileBorrowing": "reclamation within the cohort while borrowing",
    }.get(str(v.reason), str(v.reason))


def greedy_cycle(
    snapshot: Snapshot,
    *,
    state: QueueState | None = None,
    policy: str = "kueue",
    drain: bool = False,
    max_rounds: int | None = None,
) -> Decisions:
    """Kueue's admission cycle on ``snapshot`` (see the module docstring); the snapshot is not mutated.

    ``state`` is the queue manager's memory across cycles (set-aside BestEffortFIFO heads,
    sticky preemptors); None starts from a fresh queue manager and keeps nothing.
    ``drain=True`` runs consecutive cycles at the same instant, each on the state the previous
    one left (admissions counted, set-aside heads skipped), until no head makes progress: what
    Kueue's back-to-back cycles do within milliseconds, and the greedy solution a solver can
    warm-start from. ``decisions.again`` (and ``stats.solver_status``, Kueue's speed signal
    ``KeepGoing``/``SlowDown``) says another cycle at the same instant could admit more: a
    BestEffortFIFO head was set aside or a head was admitted with more work behind it, or a
    head was skipped because of another entry of this cycle.
    """
    started = time.perf_counter()
    decisions = Decisions(stats=CycleStats(policy=policy))
    st = state if state is not None else QueueState()
    st.observe(snapshot)
    cyc = _Cycle(snapshot, st, decisions)
    queues = cyc.build_queues()
    pos = {cq: 0 for cq in queues}
    stopped: set[str] = set()
    last: dict[str, tuple[str, str, str]] = {}  # cq -> (head key, outcome, reason)
    keep_going = False
    rounds = 0
    while True:
        heads = [(queues[cq][pos[cq]], cq) for cq in sorted(queues) if cq not in stopped and pos[cq] < len(queues[cq])]
        if not heads:
            break
        results = cyc.run_round(heads)
        rounds += 1
        progress = False
        for p, cq in heads:
            outcome, reason, entry = results[p.key]
            strict = snapshot.cluster_queues[cq].spec.queueing_strategy == "StrictFIFO"
            last[cq] = (p.key, outcome, reason)
            if outcome != ADMITTED:
                decisions.pending[p.key] = reason
            else:
                decisions.pending.pop(p.key, None)
            sticky = st.sticky.get(cq)
            if outcome == PREEMPTING and not strict:
                st.sticky[cq] = (p.key, _token(p))
            elif sticky is not None and sticky[0] == p.key:
                del st.sticky[cq]
            if outcome == ADMITTED:
                pos[cq] += 1
                progress = True
            elif outcome == INADMISSIBLE and not strict:
                root = _root_key(snapshot, cq)
                st.inadmissible[p.key] = _SetAside(_token(p), cq, root, reason, entry.physical)
                pos[cq] += 1
                progress = True
                last[cq] = (p.key, "set_aside", reason)
            elif outcome == SKIPPED:
                keep_going = True
            else:  # preempting, or StrictFIFO inadmissible: the head stays head
                stopped.add(cq)
        if not drain or not progress or (max_rounds is not None and rounds >= max_rounds):
            if not drain:
                keep_going = keep_going or any(
                    last.get(cq, ("", "", ""))[1] in (ADMITTED, "set_aside") and pos[cq] < len(queues[cq]) for cq in queues
                )
            break
    if drain:
        keep_going = False
    # workloads that were not heads this cycle
    for cq, queue in queues.items():
        if cq not in last:
            continue
        head, outcome, reason = last[cq]
        strict = snapshot.cluster_queues[cq].spec.queueing_strategy == "StrictFIFO"
        start = pos[cq] + (1 if cq in stopped or (pos[cq] < len(queue) and queue[pos[cq]].key == head) else 0)
        for p in queue[start:]:
            if p.key in decisions.pending:
                continue
            if outcome == ADMITTED:
                text = f"another workload was admitted first in this cycle ({head}; ClusterQueue {cq} admits one head per cycle)"
            elif outcome == INADMISSIBLE and strict:
                text = f"blocked by {head}, the head of StrictFIFO ClusterQueue {cq}: {reason}"
            elif outcome == PREEMPTING:
                text = f"waiting behind {head}, which is preempting workloads in ClusterQueue {cq}"
            elif outcome == "set_aside":
                text = f"not the head of ClusterQueue {cq} this cycle ({head} was considered first and set aside as inadmissible)"
            else:
                text = f"not the head of ClusterQueue {cq} this cycle ({head} was considered first)"
            decisions.pending[p.key] = text
    decisions.stats.seconds = time.perf_counter() - started
    decisions.stats.considered = cyc.considered
    decisions.stats.solver_status = "KeepGoing" if keep_going else "SlowDown"
    decisions.again = keep_going
    return decisions


# --- pod placement after admission (kube-scheduler) -------------------------------------------


class PodBinding(NamedTuple):
    """One pod of an admitted workload bound by kube-scheduler: workload key, podset index, binding."""

    key: str
    podset: int
    binding: Binding


def _podset_info(workload: WorkloadInfo, index: int, name: str) -> PodSetInfo:
    if index < len(workload.podsets) and workload.podsets[index].name == name:
        return workload.podsets[index]
    for ps in workload.podsets:
        if ps.name == name:
            return ps
    return workload.podsets[index]


def _domain_candidates(
    cluster: Cluster, placement: PodSetPlacement, flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology]
) -> list[str] | None:
    """The nodes a TAS podset's remaining pods may use: its domain within its TAS flavor."""
    if placement.domain is None:
        return None
    names = tas_flavor_of(placement.flavors.values(), flavors)
    if len(names) != 1:
        return None
    flavor = flavors[names[0]]
    topology = topologies.get(flavor.spec.topology_name or "")
    if topology is None:
        return None
    return domain_nodes(cluster, topology.level_labels, placement.domain, flavor_nodes(cluster, flavor))


def bind_pending_pods(
    cluster: Cluster,
    admitted: Sequence[Admitted],
    scorer: Scorer,
    rng: random.Random,
    *,
    flavors: Mapping[str, ResourceFlavor],
    topologies: Mapping[str, Topology] | None = None,
) -> list[PodBinding]:
    """kube-scheduler's pass over the Pending pods of admitted workloads; binds on ``cluster``.

    Workloads in admission order (``admitted_at``, then list order), podsets in order, pods
    one at a time: filter nodes by the podset's selectors, affinity and tolerations with the
    admitted flavors' nodeLabels and tolerations injected (and, for a TAS podset, its
    domain), score with ``scorer``, bind the best (random tie-break from ``rng``). A pod
    that fits nowhere stays unbound, the pods bound before it stay bound (no gang
    scheduling), and the workload keeps its quota. Evicted workloads are skipped.
    Returns the bindings made; apply them to the records with `apply_pod_bindings`.
    """
    topologies = topologies or {}
    out: list[PodBinding] = []
    failed: set[tuple[object, ...]] = set()
    order = sorted(range(len(admitted)), key=lambda i: (admitted[i].admitted_at, i))
    for i in order:
        a = admitted[i]
        if a.evicted:
            continue
        for index, placement in enumerate(a.podsets):
            missing = placement.count - len(placement.nodes)
            if missing <= 0:
                continue
            info = _podset_info(a.workload, index, placement.name)
            constraints = constraints_with_flavors(info.constraints, placement.flavors.values(), flavors)
            nodes = _domain_candidates(cluster, placement, flavors, topologies)
            fkey = (info.requests, constraints, None if nodes is None else tuple(nodes))
            if fkey in failed:
                continue  # binding only takes capacity: what failed before in this pass fails again
            podset = replace(info, constraints=constraints)
            result = place_podset(cluster, podset, nodes, scorer, rng, count=missing, all_or_nothing=False)
            out.extend(PodBinding(a.key, index, b) for b in result.bindings)
            if result.reason is not None:
                failed.add(fkey)
    return out


def apply_pod_bindings(admitted: Sequence[Admitted], bindings: Iterable[PodBinding]) -> list[Admitted]:
    """The admitted records with the new pods' nodes and bindings appended (new objects where changed)."""
    by_key: dict[str, list[PodBinding]] = {}
    for b in bindings:
        by_key.setdefault(b.key, []).append(b)
    out = []
    for a in admitted:
        mine = by_key.get(a.key)
        if not mine:
            out.append(a)
            continue
        podsets = list(a.podsets)
        for b in mine:
            ps = podsets[b.podset]
            podsets[b.podset] = replace(ps, nodes=ps.nodes + (b.binding.node,))
        out.append(replace(a, podsets=tuple(podsets), bindings=a.bindings + tuple(b.binding for b in mine)))
    return out


def admitted_from_admission(
    cluster: Cluster, admission: Admission, workload: WorkloadInfo, now: float
) -> Admitted:
    """The `Admitted` record of an admission, binding on ``cluster`` the pods the admission
    pins to nodes (TAS podsets of `kueue`, every pod for a policy that places pods).
    A pod whose node no longer has room stays unbound (`bind_pending_pods` retries it in its
    domain)."""
    bindings: list[Binding] = []
    podsets = []
    for index, placement in enumerate(admission.podsets):
        bound: list[str] = []
        if placement.nodes:
            pod = _podset_info(workload, index, placement.name).requests
            for node in placement.nodes:
                info = cluster.nodes.get(node)
                if info is not None and info.fits(pod):
                    bindings.append(cluster.bind(node, pod))
                    bound.append(node)
        podsets.append(replace(placement, nodes=tuple(bound)))
    return Admitted(
        workload=workload,
        cluster_queue=admission.cluster_queue,
        admitted_at=now,
        usage=dict(admission.usage),
        podsets=tuple(podsets),
        bindings=tuple(bindings),
    )


def place_admissions(
    snapshot: Snapshot,
    decisions: Decisions,
    scorer: Scorer | None = None,
    rng: random.Random | None = None,
    *,
    gang: bool = True,
) -> Decisions:
    """``decisions`` with a node for every pod of every admission, placed on a copy of the
    snapshot's cluster in admission order as kube-scheduler would (TAS pods keep their nodes).

    For a policy that places pods itself (the CP-SAT policy's greedy warm start and fallback).
    With ``gang`` an admission whose pods do not all fit is dropped and its workload left
    pending with the placement failure as reason (and, in a StrictFIFO ClusterQueue, the
    later admissions of that queue too: the dropped head blocks them); without it the pods
    that fit are kept.
    Default scorer: MostAllocated bin-packing; default RNG seeded from ``snapshot.seed``.
    """
    cluster = snapshot.cluster.copy()
    scorer = scorer or bin_packing()
    rng = rng or random.Random(f"place/{snapshot.seed}")
    workloads = {p.key: p.workload for p in snapshot.pending}
    out = Decisions(preemptions=list(decisions.preemptions), pending=dict(decisions.pending), stats=decisions.stats)
    blocked: dict[str, str] = {}  # StrictFIFO ClusterQueue -> the dropped head that blocks it
    for adm in decisions.admissions:
        w = workloads[adm.key]
        if adm.cluster_queue in blocked:
            head = blocked[adm.cluster_queue]
            out.pending[adm.key] = f"blocked by {head}, the head of StrictFIFO ClusterQueue {adm.cluster_queue}: {out.pending[head]}"
            continue
        why = ""
        placements: list[PodSetPlacement] = []
        with cluster.what_if() as trial:
            for index, psp in enumerate(adm.podsets):
                info = _podset_info(w, index, psp.name)
                if psp.nodes:
                    for node in psp.nodes:
                        failure = cluster.nodes[node].fit_failure(info.requests)
                        if failure is not None:
                            why = f"pod of podset {psp.name} no longer fits its topology node {node}: {failure}"
                            break
                        cluster.bind(node, info.requests)
                    placements.append(psp)
                else:
                    constraints = constraints_with_flavors(info.constraints, psp.flavors.values(), snapshot.flavors)
                    result = place_podset(
                        cluster, replace(info, constraints=constraints), None, scorer, rng, count=psp.count, all_or_nothing=gang
                    )
                    if result.reason is not None and gang:
                        why = result.reason
                    placements.append(replace(psp, nodes=tuple(result.nodes)))
                if why:
                    break
            if not why:
                trial.commit()
                out.admissions.append(replace(adm, podsets=tuple(placements)))
        if why:
            out.pending[adm.key] = f"admissible by quota, but its pods do not fit the cluster now: {why}"
            cq = snapshot.cluster_queues.get(adm.cluster_queue)
            if cq is not None and cq.spec.queueing_strategy == "StrictFIFO":
                blocked[adm.cluster_queue] = adm.key
    return out


# --- policies -------------------------------------------------------------------------------


class KueuePolicy:
    """Kueue admission + kube-scheduler's default profile (LeastAllocated + BalancedAllocation)."""

    name = "kueue"
    places_pods = False

    def __init__(self, *, drain: bool = False) -> None:
        self.drain = drain
        self.state = QueueState()
        self._scorer: Scorer | None = None
        self._rng: random.Random | None = None
        self._seed: int | None = None

    def schedule(self, snapshot: Snapshot) -> Decisions:
        return greedy_cycle(snapshot, state=self.state, policy=self.name, drain=self.drain)

    def reset(self) -> None:
        """Forget the queue manager's state and the placement RNG (a new run)."""
        self.state = QueueState()
        self._rng = None
        self._seed = None

    def _make_scorer(self, snapshot: Snapshot) -> Scorer:
        return default_profile()

    def scorer_for(self, snapshot: Snapshot) -> Scorer:
        """The node scorer kube-scheduler uses for this policy (kept across cycles for its memo)."""
        if self._scorer is None:
            self._scorer = self._make_scorer(snapshot)
        return self._scorer

    def rng_for(self, snapshot: Snapshot) -> random.Random:
        """The tie-break RNG, seeded once from ``snapshot.seed`` (reseeded if the seed changes)."""
        if self._rng is None or self._seed != snapshot.seed:
            self._seed = snapshot.seed
            self._rng = random.Random(f"{self.name}/{snapshot.seed}")
        return self._rng

    @property
    def placement(self) -> Scorer | None:
        """The scorer in use (None before the first `scorer_for`)."""
        return self._scorer

    def bind_pending(self, cluster: Cluster, admitted: Sequence[Admitted], snapshot: Snapshot) -> list[PodBinding]:
        """`bind_pending_pods` with this policy's scorer and RNG; binds on ``cluster``."""
        return bind_pending_pods(
            cluster, admitted, self.scorer_for(snapshot), self.rng_for(snapshot),
            flavors=snapshot.flavors, topologies=snapshot.topologies,
        )


class BestFitPolicy(KueuePolicy):
    """Kueue admission + NodeResourcesFit MostAllocated (GPU weighted in): bin-packing."""

    name = "bestfit"

    def _make_scorer(self, snapshot: Snapshot) -> Scorer:
        return bin_packing()


class RandomPolicy(KueuePolicy):
    """Kueue admission + a uniformly random feasible node."""

    name = "random"

    def _make_scorer(self, snapshot: Snapshot) -> Scorer:
        return RandomScorer()


class FGDPolicy(KueuePolicy):
    """Kueue admission + Fragmentation Gradient Descent placement, with the task distribution
    of the pods seen so far (pending and admitted workloads of the snapshots, count-weighted)."""

    name = "fgd"
    REBUILD_GROWTH = 0.05
    """Rebuild the distribution when the pods seen grew by this fraction (or a new shape appears)."""

    def __init__(self, *, drain: bool = False) -> None:
        super().__init__(drain=drain)
        self._seen: set[str] = set()
        self._tasks: Counter[tuple[object, NodeConstraints]] = Counter()
        self._built_total = 0
        self._built_shapes = 0

    def reset(self) -> None:
        super().reset()
        self._seen, self._tasks = set(), Counter()
        self._built_total = self._built_shapes = 0
        self._scorer = None

    def observe(self, workloads: Iterable[WorkloadInfo]) -> None:
        for w in workloads:
            if w.key in self._seen:
                continue
            self._seen.add(w.key)
            for ps in w.podsets:
                if ps.count > 0:
                    self._tasks[(ps.requests, ps.constraints)] += ps.count

    def distribution(self) -> TaskDistribution:
        tasks = chain.from_iterable(repeat(task, n) for task, n in sorted(self._tasks.items(), key=lambda kv: repr(kv[0])))
        return TaskDistribution.from_requests(tasks)  # type: ignore[arg-type]

    def scorer_for(self, snapshot: Snapshot) -> Scorer:
        self.observe(chain((p.workload for p in snapshot.pending), (a.workload for a in snapshot.admitted)))
        total, shapes = sum(self._tasks.values()), len(self._tasks)
        if (
            self._scorer is None
            or shapes != self._built_shapes
            or total > self._built_total * (1 + self.REBUILD_GROWTH)
        ):
            self._scorer = FGDScorer(self.distribution())
            self._built_total, self._built_shapes = total, shapes
        return self._scorer


register_policy("kueue", KueuePolicy)
register_policy("bestfit", BestFitPolicy)
register_policy("fgd", FGDPolicy)
register_policy("random", RandomPolicy)

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

**Cost per cycle.** A busy instant runs many cycles (a BestEffortFIFO queue sets one head
aside per cycle), so the policy keeps between cycles what Kueue's queue manager keeps
(`QueueState`): the queues themselves, sorted and updated from what changed between two
snapshots (`scheduler.kueue_queues.QueueManager`), each admitted workload's preemption
candidate, and the nominations of a world that did not change (`_NominationMemo`: the
look-alike heads behind a set-aside one are nominated once). Every kept item is checked
against the snapshot before it is used; ``QueueState(incremental=False)`` recomputes all of
it every cycle and decides exactly the same (tests/test_kueue_incremental.py). What remains
proportional to the pending set is one reason per pending workload per cycle (the decisions
carry them).

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
from quotas.preemption import AdmittedWorkload, Preemptor, Victim, VictimPool, find_victims, preemption_oracle
from quotas.units import FlavorResource
from quotas.usage import Usage
from scheduler.affinity import NodeConstraints
from scheduler.cluster import Binding, Cluster
from scheduler.decisions import Admission, CycleStats, Decisions, Preemption, collector_paused, register_policy
from scheduler.fgd import FGDScorer, TaskDistribution
from scheduler.flavors import flavor_nodes, podset_fits_flavor
from scheduler.kueue_reasons import explain_quota, preemption_policy_text
from scheduler.kueue_queues import BLOCKED_REASON, QueueManager, QueueView, Untrackable, backoff_reason
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


class _NominationMemo:
    """Nominations and quota reasons of the cycles that saw one unchanged world.

    A BestEffortFIFO queue sets one head aside per cycle, and a busy instant runs many
    cycles in which nothing is admitted: the next heads are nominated against the same
    usage and the same preemption candidates, and most of them look alike (same podsets,
    priority and ClusterQueue). Their nomination is a pure function of that world and of
    the workload's shape, so it is computed once. The world is checked before every use:
    the quota tree, flavors, ClusterQueues, topologies and configuration by identity, the
    usage by identity (`Usage` is immutable), and the preemption candidates by the identity
    of every candidate object (a preemption in flight replaces its victim's). Anything
    else empties the memo. Workloads with topology requests are never memoised (their
    nomination reads the TAS state of the cycle).
    """

    def __init__(self) -> None:
        self.env: tuple[object, ...] | None = None
        self.candidate_ids: tuple[int, ...] = ()
        self._keep: list[AdmittedWorkload] = []
        self.entries: dict[tuple[object, ...], _Entry] = {}
        self.candidates: dict[tuple[object, ...], VictimPool] = {}
        self.reasons: dict[tuple[int, str, int], tuple[Assignment, Usage, str]] = {}

    def check(self, env: tuple[object, ...], candidates: Iterable[AdmittedWorkload]) -> None:
        """Empty the memo unless ``env`` (compared by identity) and the candidates are unchanged."""
        keep = list(candidates)
        ids = tuple(map(id, keep))
        if (
            self.env is not None
            and len(env) == len(self.env)
            and all(a is b for a, b in zip(env, self.env))
            and ids == self.candidate_ids
        ):
            return
        self.env, self.candidate_ids, self._keep = env, ids, keep
        self.entries.clear()
        self.candidates.clear()
        self.reasons.clear()


@dataclass
class QueueState:
    """What Kueue's queue manager remembers between cycles: the inadmissible (set-aside)
    workloads of BestEffortFIFO queues, the sticky preemptor of each ClusterQueue, and what
    was admitted last time (to notice quota being released).

    With ``incremental`` (the default) it also keeps the queues themselves
    (`scheduler.kueue_queues.QueueManager`), the preemption candidates of the admitted
    workloads, and memoised nominations, so that a cycle costs what changed rather than the
    whole pending set; every cached item is validated against the snapshot (see those
    classes). ``incremental=False`` rebuilds everything every cycle (the reference the
    incremental path is tested against).
    """

    inadmissible: dict[str, _SetAside] = field(default_factory=dict)
    sticky: dict[str, tuple[str, Token]] = field(default_factory=dict)
    last_admitted: dict[tuple[str, str], frozenset[str]] | None = None
    last_schedulable: frozenset[str] | None = None
    cycles: int = 0
    incremental: bool = True
    queues: QueueManager = field(default_factory=QueueManager, repr=False)
    memo: _NominationMemo = field(default_factory=_NominationMemo, repr=False)
    _by_root: dict[tuple[str, str], set[str]] = field(default_factory=dict, repr=False)
    _physical: set[str] = field(default_factory=set, repr=False)
    _admitted_seen: tuple[list[Admitted], int] | None = field(default=None, repr=False)
    _candidates: dict[str, tuple[Admitted, AdmittedWorkload]] = field(default_factory=dict, repr=False)
    _candidates_of: tuple[list[Admitted], int] | None = field(default=None, repr=False)
    _candidate_index: tuple[dict[str, Admitted], dict[str, AdmittedWorkload]] = field(
        default_factory=lambda: ({}, {}), repr=False
    )
    _roots: tuple[object, dict[str, tuple[str, str]]] = field(default_factory=lambda: (None, {}), repr=False)

    # --- set-aside bookkeeping (every change goes through these two) ---------------------------

    def set_aside(self, key: str, entry: _SetAside) -> None:
        self.drop_aside(key)
        self.inadmissible[key] = entry
        self._by_root.setdefault(entry.root, set()).add(key)
        if entry.physical:
            self._physical.add(key)

    def drop_aside(self, key: str) -> None:
        entry = self.inadmissible.pop(key, None)
        if entry is None:
            return
        keys = self._by_root.get(entry.root)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_root[entry.root]
        self._physical.discard(key)

    # --- observing a new snapshot ----------------------------------------------------------------

    def _root_of(self, snapshot: Snapshot, cq: str) -> tuple[str, str]:
        tree, roots = self._roots
        if tree is not snapshot.tree:
            roots = {}
            self._roots = (snapshot.tree, roots)
        found = roots.get(cq)
        if found is None:
            found = roots[cq] = _root_key(snapshot, cq)
        return found

    def _released(self, snapshot: Snapshot) -> set[tuple[str, str]]:
        """Cohort trees (roots) that released quota since the last cycle; records this cycle's admitted."""
        tree = snapshot.tree
        current: dict[tuple[str, str], set[str]] = {}
        for a in snapshot.admitted:
            if tree.has_cluster_queue(a.cluster_queue):
                current.setdefault(self._root_of(snapshot, a.cluster_queue), set()).add(a.key)
        released = {r for r, keys in (self.last_admitted or {}).items() if keys - current.get(r, set())}
        self.last_admitted = {r: frozenset(keys) for r, keys in current.items()}
        return released

    def _grew(self, snapshot: Snapshot) -> bool:
        schedulable = frozenset(n.name for n in snapshot.cluster if n.schedulable)
        grew = self.last_schedulable is not None and not schedulable <= self.last_schedulable
        self.last_schedulable = schedulable
        return grew

    def observe(self, snapshot: Snapshot) -> None:
        """Requeue set-aside workloads whose cohort tree released quota since the last cycle
        (from scratch: every set-aside entry and sticky preemptor checked against the snapshot)."""
        released = self._released(snapshot)
        self._admitted_seen = None
        grew = self._grew(snapshot)
        tokens = {p.key: _token(p) for p in snapshot.pending}
        for key, entry in list(self.inadmissible.items()):
            if (
                tokens.get(key) != entry.token
                or entry.root in released
                or (entry.physical and (bool(released) or grew))
            ):
                self.drop_aside(key)
        for cq, (key, token) in list(self.sticky.items()):
            if tokens.get(key) != token:
                del self.sticky[cq]
        self.queues.reset()  # it did not see these changes: it files everything afresh next time
        self.cycles += 1

    def observe_incremental(self, snapshot: Snapshot, changed: set[str] | None) -> None:
        """`observe` for the queue manager's path: the same rules, applied to what changed.

        ``changed`` are the keys whose pending object changed since the last cycle (None: all).
        A set-aside entry is dropped when its workload's token changed (only a changed key
        can have), when its cohort tree released quota, or, for a placement failure, when any
        tree released quota or schedulable nodes appeared; the queue manager re-files it.
        """
        seen = self._admitted_seen
        admitted = snapshot.admitted
        if seen is None or seen[0] is not admitted or seen[1] != len(admitted):
            released = self._released(snapshot)
            self._admitted_seen = (admitted, len(admitted))
        else:
            released = set()  # the very list of the last cycle: nothing was released
        grew = self._grew(snapshot)
        qm = self.queues
        drop: set[str] = set()
        check = self.inadmissible.keys() if changed is None else changed & self.inadmissible.keys()
        for key in check:
            p = qm.objs.get(key)
            if p is None or _token(p) != self.inadmissible[key].token:
                drop.add(key)
        for root in released:
            drop.update(self._by_root.get(root, ()))
        if released or grew:
            drop.update(self._physical)
        for key in drop:
            self.drop_aside(key)
            qm.refile(key, self)
        for cq, (key, token) in list(self.sticky.items()):
            p = qm.objs.get(key)
            if p is None or _token(p) != token:
                del self.sticky[cq]
        self.cycles += 1

    def admitted_index(self, snapshot: Snapshot) -> tuple[dict[str, Admitted], dict[str, AdmittedWorkload]]:
        """(key -> admitted record, key -> preemption candidate) for the snapshot, reusing the
        candidates of admitted records that are the same objects as last cycle's (`Admitted`
        is frozen). The second mapping is a fresh copy: a cycle marks its victims in it."""
        admitted = snapshot.admitted
        seen = self._candidates_of
        if seen is None or seen[0] is not admitted or seen[1] != len(admitted):
            old = self._candidates
            fresh: dict[str, tuple[Admitted, AdmittedWorkload]] = {}
            for a in admitted:
                found = old.get(a.key)
                fresh[a.key] = found if found is not None and found[0] is a else (a, a.as_candidate())
            self._candidates = fresh
            self._candidates_of = (admitted, len(admitted))
            self._candidate_index = ({k: a for k, (a, _) in fresh.items()}, {k: c for k, (_, c) in fresh.items()})
        by_key, candidates = self._candidate_index
        return by_key, dict(candidates)


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

    def rebound(self, pending: Pending, tas_commits: int) -> _Entry:
        """A copy for ``pending`` (a memoised nomination of a look-alike; no TAS placements)."""
        return _Entry(pending, self.cq, self.counts, self.assignment, self.mode, self.victims, {}, self.reason,
                      self.physical, tas_commits)


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
        self.admitted_by_key: dict[str, Admitted]
        self.candidates: dict[str, AdmittedWorkload]
        if state.incremental:
            self.admitted_by_key, self.candidates = state.admitted_index(snapshot)
            self.memo: _NominationMemo | None = state.memo
        else:
            self.admitted_by_key = {a.key: a for a in snapshot.admitted}
            self.candidates = {a.key: a.as_candidate() for a in snapshot.admitted}
            self.memo = None
        self._memo_usage: Usage | None = None
        """The usage the memo was last checked against (None: check before the next use)."""
        self._pools: dict[tuple[object, ...], VictimPool] = {}
        """Preemption candidate pools of this call while no candidate changes."""
        self.tas = TASPlanner(snapshot)
        self.issued: set[str] = set()
        self.admitted_here = 0
        wfpr = snapshot.config.wait_for_pods_ready
        self.block_admission = bool(wfpr.enable and wfpr.block_admission)
        self.not_ready = self.block_admission and any(not a.placed and not a.evicted for a in snapshot.admitted)
        """Some admitted workload's pods are not all running (read only under blockAdmission)."""
        self._eligible: dict[tuple[object, ...], str | None] = {}
        self._label_keys: dict[str, dict[str, frozenset[str]]] = {}
        self._roots: dict[str, tuple[str, str]] = {}
        self._matched: dict[tuple[str, str], bool] = {}
        self._queued_at_matters: dict[str, bool] = {}
        self.considered = 0

    # --- queues -------------------------------------------------------------------------------

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        labels = dict(self.s.namespace_labels.get(namespace, {}))
        labels["kubernetes.io/metadata.name"] = namespace  # the API server sets it, users cannot
        return labels

    def route(self, p: Pending) -> tuple[str | None, str]:
        """(ClusterQueue, "") for a workload its LocalQueue, ClusterQueue and namespace selector
        let into a queue, else (None, the reason). Depends only on the workload's namespace,
        LocalQueue and explicit ClusterQueue, and on the snapshot's queue configuration."""
        s, tree = self.s, self.tree
        w = p.workload
        lq = s.local_queues.get((w.namespace, w.local_queue))
        cq_name = s.cluster_queue_of(w)
        if cq_name is None:
            return None, f"LocalQueue {w.namespace}/{w.local_queue} not found"
        cq = s.cluster_queues.get(cq_name)
        if cq is None or not tree.has_cluster_queue(cq_name):
            return None, f"ClusterQueue {cq_name} not found"
        if lq is not None and lq.spec.stop_policy != "None":
            return None, f"LocalQueue {w.namespace}/{w.local_queue} is stopped (stopPolicy: {lq.spec.stop_policy})"
        if cq.spec.stop_policy != "None":
            return None, f"ClusterQueue {cq_name} is stopped (stopPolicy: {cq.spec.stop_policy})"
        selector = cq.spec.namespace_selector
        if selector is None:
            return None, f"namespace not selected by ClusterQueue {cq_name}: it has no namespaceSelector, which selects no namespace"
        selected = self._matched.get((cq_name, w.namespace))
        if selected is None:
            selected = self._matched[(cq_name, w.namespace)] = selector.matches(self._namespace_labels(w.namespace))
        if not selected:
            return None, f"namespace not selected by ClusterQueue {cq_name}: namespace {w.namespace} does not match its namespaceSelector"
        return cq_name, ""

    def build_queues(self) -> dict[str, list[Pending]]:
        """Pending workloads per ClusterQueue in queue order (set-aside ones left out), from
        scratch; the reasons of the workloads in no queue go straight into the decisions."""
        s, st = self.s, self.state
        reasons = self.decisions.pending
        queues: dict[str, list[Pending]] = {}
        afs = s.admission_fair_sharing
        lq_usage: dict[str, float] = {}
        for p in s.pending:
            key = p.key
            if key in self.admitted_by_key:
                reasons[key] = BLOCKED_REASON
                continue
            if p.not_before > self.now:
                reasons[key] = backoff_reason(p, self.now)
                continue
            cq_name, why = self.route(p)
            if cq_name is None:
                reasons[key] = why
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

    def _memo_for(self, usage: Usage) -> _NominationMemo | None:
        """The nomination memo, checked against this cycle's world at ``usage`` (None: no memo)."""
        memo = self.memo
        if memo is None:
            return None
        if self._memo_usage is not usage:
            s = self.s
            memo.check((s.tree, s.flavors, s.cluster_queues, s.topologies, s.config, usage), self.candidates.values())
            self._memo_usage = usage
        return memo

    def _candidates_changed(self) -> None:
        """A candidate was replaced (marked evicted): memoised nominations and pools no longer apply."""
        self._memo_usage = None
        self._pools.clear()

    def queued_at_matters(self, cq: str) -> bool:
        """Whether a preemptor's queue time can change its nomination in ``cq``: only
        ``LowerOrNewerEqualPriority`` compares it (with candidates of equal priority)."""
        found = self._queued_at_matters.get(cq)
        if found is None:
            spec = self.s.cluster_queues[cq].spec.preemption
            found = self._queued_at_matters[cq] = "LowerOrNewerEqualPriority" in (
                spec.within_cluster_queue, spec.reclaim_within_cohort
            )
        return found

    def nominate(self, p: Pending, cq: str, usage: Usage) -> _Entry:
        """Kueue's getAssignments: full counts, then preemption targets, then partial admission.

        Memoised across cycles that see the same world (`_NominationMemo`) for workloads
        without topology requests, keyed by everything of the workload the nomination reads:
        its podsets' shapes, its priority and (where it matters) its queue time."""
        self.considered += 1
        w = p.workload
        memo = self._memo_for(usage)
        mkey: tuple[object, ...] | None = None
        if memo is not None and all(ps.topology is None for ps in w.podsets):
            mkey = (
                cq,
                w.priority,
                p.queued_at if self.queued_at_matters(cq) else None,
                tuple((ps.name, ps.count, ps.min_count, ps.requests, ps.constraints) for ps in w.podsets),
            )
            found = memo.entries.get(mkey)
            if found is not None:
                return found.rebound(p, self.tas.commits)
        entry = self._nominate(p, cq, usage)
        if mkey is not None and memo is not None:
            memo.entries[mkey] = entry.rebound(entry.pending, entry.tas_commits)
        return entry

    def _candidates_for(self, cq: str, priority: int, queued_at: float) -> VictimPool:
        """The preemptor's candidate pool: a function of the candidates and of the key below (not
        of the usage), so kept for this call while no candidate changes, and in the memo across
        cycles that see the same world."""
        ckey = (cq, priority, queued_at if self.queued_at_matters(cq) else None)
        found = self._pools.get(ckey)
        if found is None:
            memo = self.memo if self._memo_usage is not None else None
            found = memo.candidates.get(ckey) if memo is not None else None
            if found is None:
                found = VictimPool(self.preemption_candidates(cq, priority, queued_at))
                if memo is not None:
                    memo.candidates[ckey] = found
            self._pools[ckey] = found
        return found

    def _nominate(self, p: Pending, cq: str, usage: Usage) -> _Entry:
        w = p.workload
        tree = self.tree
        eligible = self.eligibility(cq, w)
        candidates = self._candidates_for(cq, w.priority, p.queued_at)
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
        memo = self.memo if self._memo_usage is not None else None
        rkey = (id(e.assignment), e.cq, id(usage))
        if memo is not None:
            found = memo.reasons.get(rkey)
            # the same Assignment object comes only from one memoised nomination (same podsets)
            if found is not None and found[0] is e.assignment and found[1] is usage:
                return found[2]
        eligible = self.eligibility(e.cq, e.workload)
        text = explain_quota(self.tree, usage, e.cq, e.assignment, eligible)
        text = text or e.assignment.message or "does not fit"
        if memo is not None:
            memo.reasons[rkey] = (e.assignment, usage, text)
        return text

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
                self._candidates_changed()
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


class _Queues(dict[str, "list[Pending] | QueueView"]):
    """The cycle's queues by ClusterQueue, with the `_Cycle` that built them and the queue
    manager that keeps them (None when they were sorted from scratch)."""

    cycle: _Cycle
    manager: QueueManager | None


def _queues_for(snapshot: Snapshot, st: QueueState, decisions: Decisions, *, kept: bool) -> _Queues:
    """Observe ``snapshot`` and give the cycle its queues: from the queue manager kept in
    ``st`` (incremental), or sorted from scratch when the state is not incremental, is not
    ``kept`` for another cycle (filing every workload into a manager used once costs more
    than one sort), when admission fair sharing orders the queues by decaying usage (the
    order changes with time alone), or when the snapshot cannot be tracked (`Untrackable`)."""
    cyc = _Cycle(snapshot, st, decisions)
    out = _Queues()
    out.cycle = cyc
    out.manager = None
    if kept and st.incremental and snapshot.admission_fair_sharing is None:
        qm = st.queues
        try:
            changed = qm.sync(snapshot, cyc.admitted_by_key, cyc.route, st)
        except Untrackable:
            pass
        else:
            st.observe_incremental(snapshot, changed)
            out.update(qm.views(st.sticky))
            qm.write_reasons(decisions.pending)
            out.manager = qm
            return out
    st.observe(snapshot)
    out.update(cyc.build_queues())
    return out


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
    queues = _queues_for(snapshot, st, decisions, kept=state is not None)
    cyc = queues.cycle
    set_aside: list[str] = []
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
                st.set_aside(p.key, _SetAside(_token(p), cq, st._root_of(snapshot, cq), reason, entry.physical))
                set_aside.append(p.key)
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
        if start >= len(queue):
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
        # every workload behind the last head (the heads before it have their own reasons)
        if isinstance(queue, QueueView):
            queue.fill_from(decisions.pending, start, text)
        else:
            for p in queue[start:]:
                if p.key not in decisions.pending:  # (a duplicate of a head's key keeps the head's reason)
                    decisions.pending[p.key] = text
    if queues.manager is not None:
        for key in set_aside:  # out of the queue from the next cycle on (positions held during this one)
            queues.manager.refile(key, st)
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

    def __init__(self, *, drain: bool = False, incremental: bool = True) -> None:
        self.drain = drain
        self.incremental = incremental
        """Keep the queues across cycles (`QueueState`); False re-sorts the pending set every cycle."""
        self.state = QueueState(incremental=incremental)
        self._scorer: Scorer | None = None
        self._rng: random.Random | None = None
        self._seed: int | None = None

    def schedule(self, snapshot: Snapshot) -> Decisions:
        with collector_paused():
            return greedy_cycle(snapshot, state=self.state, policy=self.name, drain=self.drain)

    def reset(self) -> None:
        """Forget the queue manager's state and the placement RNG (a new run)."""
        self.state = QueueState(incremental=self.incremental)
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

    def __init__(self, *, drain: bool = False, incremental: bool = True) -> None:
        super().__init__(drain=drain, incremental=incremental)
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

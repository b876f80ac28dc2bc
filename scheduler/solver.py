"""The `tessera` policy: a greedy pass over the whole pending set, then one CP-SAT model per
scheduling cycle over its frontier (`solver.maxCandidates` workloads, see `window_for`).

A cycle (see docs/solver.md for the full description):

1. **Prepare** (`scheduler.solver_common`): per pending workload its ClusterQueue and, per
   podset, the flavor combinations it may use, with the nodes each allows.
2. **Reserve** for aged gangs: a workload that has waited ``aging_threshold`` seconds and
   still does not fit gets nodes held for it; work it outranks (lower priority, or equal
   priority and queued later) may not be placed there, so the nodes drain towards it.
3. **Greedy** (`scheduler.solver_place.greedy_cycle`): Kueue's order, first flavor that fits,
   pods packed best-fit, bound for real. Warm start of the model, and the fallback.
4. **Solve** (`scheduler.solver_model`): admit/flavor/domain/pods-per-node-class for every
   candidate at once, quota tree and capacity constraints, lexicographic objective
   (priority, GPU-time, then fairness, aging, flavor order, compactness, fragmentation),
   hinted with the greedy solution, decomposed into independent components, stopped at
   ``Configuration.solver.timeLimit`` with ``solver.workers`` workers, seeded.
5. **Expand and verify** (`scheduler.solver_expand`): pods per class to nodes, every pod bound
   on a copy of the cluster and every admission charged with `QuotaTree.fits`; failures are
   repaired greedily, then a greedy **backfill** pass offers the remaining capacity to the
   remaining workloads (and yields every pending reason in the final state).
6. **Keep the better** of solver and greedy by priority-weighted GPU (`cycle_value`), so a
   cycle never admits less than the greedy cycle from the same state.
7. **Preempt** as a post-step, as Kueue does: for pending workloads whose flavor assignment
   says Preempt, `quotas.preemption.find_victims` with the ClusterQueue's policy, issued only
   when the victims' nodes would also let the pods bind; the preemptor is admitted in a later
   cycle, once the victims are gone.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter, methodcaller

import numpy as np

from quotas.flavors import AssignmentMode, PodSetRequest, assign_flavors
from quotas.preemption import Preemptor, VictimPool, find_victims, preemption_oracle
from quotas.units import format_amount
from scheduler.cluster import DEVICE_MILLI, Cluster, NodeInfo, PodRequest
from scheduler.decisions import Admission, CycleStats, Decisions, Preemption, collector_paused, register_policy
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot
from scheduler.solver_common import Candidate, PodSetOption, Prepared, aging_fraction, prepare
from scheduler.solver_expand import expand
from scheduler.solver_model import ModelResult, SolveParams, solve_cycle
from scheduler.solver_place import Placed, Placer, Reservation, excluded_nodes, greedy_cycle

__all__ = [
    "NOT_ADMITTED",
    "TesseraPolicy",
    "cycle_value",
    "decisions_value",
]

NOT_ADMITTED = "not admitted this cycle: higher-priority or better-packing work used the capacity"

DETERMINISTIC_SHARE = 0.6
"""Share of ``timeLimit`` given to the solver as deterministic time (the rest covers model
building, expansion and backfill; the wall clock is capped at what is left of the cycle)."""

DETERMINISTIC_UNITS_PER_SECOND = 0.2
"""CP-SAT deterministic time units per wall second, with margin: on the benchmark machine a model
that runs to its limit takes 1-2 s of wall time per unit (3-5 s with the 300-candidate window and
cuts on), and the machine itself varies by up to 2x. The deterministic limit is ``timeLimit`` x
DETERMINISTIC_SHARE x this, so that a cycle's result does not depend on machine load."""

MIN_SOLVER_SHARE = 0.25

KUEUE_BASELINE_MAX = 64
"""Up to this many pending workloads, Kueue's own greedy cycle is a second baseline."""

WINDOW_MIN, WINDOW_PER_NODES, WINDOW_MAX = 40, 4, 300


def window_for(nodes: int) -> int:
    """The model's default window (`solver.maxCandidates` unset): a quarter of the nodes, at
    least 40 and at most 300. What a cycle admits, and so the frontier where packing decides,
    grows with the cluster, while the model's cost grows faster than its size: at 128 nodes with
    200 pending a window of 40 takes about 60 ms per cycle, 300 about 210 ms, for the same
    GPUs admitted (docs/solver.md, *Scaling*)."""
    return min(WINDOW_MAX, max(WINDOW_MIN, nodes // WINDOW_PER_NODES))


MAX_RESERVATIONS = 4
MAX_PREEMPTORS = 16
_KEY = attrgetter("key")
_CANDIDATE = methodcaller("as_candidate")


# --- the value a cycle admits ---------------------------------------------------------------------


def cycle_value(items: Iterable[tuple[int, int]]) -> tuple[tuple[int, int, int], ...]:
    """Priority-weighted GPU, lexicographically: per priority (highest first) the GPU milli and the
    number of workloads admitted. ``items`` are (priority, GPU milli) per admitted workload.

    Compare two cycles with ``>=``: more GPU at the highest priority where they differ wins.
    """
    per: dict[int, list[int]] = {}
    for prio, gpu in items:
        acc = per.setdefault(prio, [0, 0])
        acc[0] += gpu
        acc[1] += 1
    return tuple((p, per[p][0], per[p][1]) for p in sorted(per, reverse=True))


def _compare(a: tuple[tuple[int, int, int], ...], b: tuple[tuple[int, int, int], ...]) -> int:
    """-1/0/1 as value ``a`` is lower/equal/higher than ``b`` (tiers missing count as zero)."""
    prios = sorted({p for p, _, _ in a} | {p for p, _, _ in b}, reverse=True)
    da = {p: (g, n) for p, g, n in a}
    db = {p: (g, n) for p, g, n in b}
    for p in prios:
        va, vb = da.get(p, (0, 0)), db.get(p, (0, 0))
        if va != vb:
            return 1 if va > vb else -1
    return 0


def decisions_value(decisions: Decisions, snapshot: Snapshot) -> tuple[tuple[int, int, int], ...]:
    """`cycle_value` of a policy's admissions (GPU of the pods admitted, any policy)."""
    by_key = {p.key: p.workload for p in snapshot.pending}
    accel = snapshot.cluster.accelerators
    items = []
    for adm in decisions.admissions:
        wl = by_key[adm.key]
        podsets = {ps.name: ps for ps in wl.podsets}
        gpu = sum(sum(podsets[p.name].requests.get(a) for a in accel) * p.count for p in adm.podsets if p.name in podsets)
        items.append((wl.priority, gpu))
    return cycle_value(items)


def _placed_value(placed: Iterable[Placed], accelerators: Iterable[str]) -> tuple[tuple[int, int, int], ...]:
    accel = tuple(accelerators)
    items = []
    for p in placed:
        gpu = sum(sum(ps.pod.get(a) for a in accel) * n for ps, (_, n) in zip(p.candidate.podsets, p.choice))
        items.append((p.candidate.priority, gpu))
    return cycle_value(items)


# --- what the policy remembers between cycles ----------------------------------------------------------


@dataclass
class _Parked:
    """A pending workload set aside until something could change its fate (see `TesseraPolicy`)."""

    pending: Pending
    """The object it was set aside as: another one (requeued, nominated) makes it active again."""
    reason: str
    wake_at: float = math.inf
    """It is looked at again from this time on (its aging threshold: it may then get a reservation)."""
    candidate: Candidate | None = None
    preempt_seen: tuple[object, ...] | None = None
    """What its last preemption search, which found nothing, saw (`_Stamps.stamp`); None: it may
    not preempt, or its search is due (the cycle that parked it admitted in its tree, or reached
    its preemptors' limit before it)."""
    excluded: frozenset[str] = frozenset()
    """Nodes held for others it could not use when it was parked: it stays parked while they are."""


@dataclass
class _Memory:
    inputs: tuple[object, ...]
    """The snapshot's objects that decide what may be admitted; all the same objects, or forget."""
    releases: int
    admitted: frozenset[str]
    parked: dict[str, _Parked] = field(default_factory=dict)
    admissions: dict[str, int] = field(default_factory=dict)
    """Admissions so far per root of the quota tree."""
    epochs: dict[str, int] = field(default_factory=dict)
    borrowing: frozenset[tuple[int, object]] = frozenset()
    """(tree node id, FlavorResource) over their quota at the end of the cycle."""


@dataclass
class _Stamps:
    """What the preemption searches of one cycle see, per root of the quota tree: admissions
    before and after this cycle's, and the borrowing epoch (moved when a queue or cohort of the
    tree went over its quota in some resource; with fair sharing, by any admission there).

    A search that found nothing finds nothing again while its stamp stays the same:
    - ``fit`` (the quota fits) and ``nodes`` (victims would free quota, not node room): while no
      admission happened in its tree. As quota
      fills up, a workload whose quota fitted may have to preempt, and a larger pool may give
      other victims on other nodes.
    - ``no-victims`` (preempting could not make the quota fit, or no flavor fits even with
      preemption: the oracle's searches found nothing): while the epoch stays. Between
      releases an admission takes from what was free as much as it brings as a possible victim;
      only a queue going over its quota makes the workloads already there reclaimable. (No
      search runs in a cycle that admitted in its tree: what one saw is the pool and usage.)
    """

    before: dict[str, int]
    after: dict[str, int]
    epochs: dict[str, int]
    over: frozenset[tuple[int, object]]

    def stamp(self, root: str, kind: str) -> tuple[object, ...]:
        if kind == "no-victims":
            return (kind, self.epochs.get(root, 0))
        return (kind, self.before.get(root, 0), self.after.get(root, 0))

    def settled(self, root: str, seen: tuple[object, ...] | None) -> bool:
        return seen is not None and seen == self.stamp(root, str(seen[0]))


def _inputs(snapshot: Snapshot) -> tuple[object, ...]:
    return (snapshot.cluster, snapshot.tree, snapshot.config, snapshot.flavors, snapshot.cluster_queues,
            snapshot.local_queues, snapshot.topologies, snapshot.namespace_labels, snapshot.seed)


# --- the policy ---------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    admitted: list[Placed]
    reasons: dict[str, str]
    placer: Placer
    ordered: bool = False
    """``admitted`` is already in the order the decisions must list it (else: queue order)."""


def _finalize(snapshot: Snapshot, admitted: Sequence[Placed]) -> tuple[list[Placed], dict[str, str]]:
    """The admissions in the order the decisions will list them, each of them bindable in that order.

    Decisions name a node per pod but not the devices; whoever applies them binds pod by pod in
    decision order, letting `Cluster.bind` choose devices (best fit for shares). Listing the
    largest pods first reproduces how the expansion filled each node; every pod is bound again
    that way on a fresh copy, and an admission that does not bind is dropped.

    Only nodes that receive a device share need the check: pods of whole devices (or of none)
    bind in any order once they all fit together, which the expansion showed (each takes whole
    free devices and adds to sums), so every order of them binds.
    """
    accel = snapshot.cluster.accelerators

    def size(p: Placed) -> tuple[int, int]:
        return (-max(sum(ps.pod.get(a) for a in accel) for ps in p.candidate.podsets), p.candidate.order)

    def shares(pod: PodRequest) -> bool:
        return any(pod.get(a) % DEVICE_MILLI for a in accel)

    checked = {n for p in admitted for ps, nodes in zip(p.candidate.podsets, p.nodes) if shares(ps.pod) for n in nodes}
    cluster = Cluster([snapshot.cluster.nodes[n].copy() for n in sorted(checked)], accel)
    kept: list[Placed] = []
    dropped: dict[str, str] = {}
    for p in sorted(admitted, key=size):
        bindings = []
        why = None
        for ps, nodes in zip(p.candidate.podsets, p.nodes):
            for name in nodes:
                if name not in checked:
                    continue
                why = cluster.nodes[name].fit_failure(ps.pod)
                if why is not None:
                    why = f"{NOT_ADMITTED} (its pods would not bind on {name}: {why})"
                    break
                bindings.append(cluster.bind(name, ps.pod))
            if why is not None:
                break
        if why is None:
            kept.append(p)
        else:
            for b in reversed(bindings):
                cluster.unbind(b)
            dropped[p.key] = why
    return kept, dropped


class TesseraPolicy:
    """The CP-SAT global packer (see the module docstring).

    Incremental (``incremental=True``): a candidate a cycle could not admit, whose preemption
    search found nothing or did not run in that cycle (it is then due), and which is not a
    preemptor waiting for its victims, is *parked*: later cycles leave it out of the greedy pass,
    the model and the backfill until capacity or quota may have been freed (a workload released,
    a node uncordoned or added: `Cluster.releases`, the admitted set), nodes held for others that
    it could not use are no longer held, the configuration objects change, its pending object
    changes (requeue, nomination), or it reaches its aging threshold. Admissions alone only take
    capacity, and nodes held for it give it no room, so it still would not fit; its preemption
    search runs again when admissions could have given it something to preempt (`_Stamps`).
    Kueue keeps inadmissible workloads aside the same way, and as there, a parked workload keeps
    the pending reason of the cycle that parked it (with its reservation's current note).
    Preparation and reservations still see the whole pending set. StrictFIFO ClusterQueues are
    never parked (their head blocks the rest). A policy object remembers one stream of snapshots
    (the snapshots' objects are compared by identity): give each simulation its own.
    """

    name = "tessera"
    places_pods = True

    def __init__(
        self,
        *,
        aging_threshold: float = 3600.0,
        max_candidates: int | None = None,
        deterministic: bool = True,
        duration_of: Callable[[object], float | None] | None = None,
        backfill: bool = True,
        preemption: bool = True,
        kueue_baseline: bool = True,
        incremental: bool = True,
    ) -> None:
        self.aging_threshold = aging_threshold
        self.max_candidates = max_candidates
        """The model's window; None: the snapshot's `solver.maxCandidates`, else `window_for`."""
        self.deterministic = deterministic
        self.duration_of = duration_of
        self.backfill = backfill
        self.preemption = preemption
        self.kueue_baseline = kueue_baseline
        self.incremental = incremental
        self._memory: _Memory | None = None
        self._held: tuple[tuple[object, ...], int, dict[tuple[object, ...], tuple[Pending, list[str]]]] | None = None
        """`_reserve_for` results, valid while the snapshot's inputs, cluster version and usage are
        the same objects (a cycle at an instant where only workloads arrived)."""
        self._victims: tuple[list[Admitted], dict[str, Admitted], VictimPool] | None = None
        """The admitted workloads by key and as a victim pool, for the last admitted list (a list
        is replaced, never changed in place; the pool's per-queue orders fill up as searches read
        them and stay valid for the same list)."""
        self.last: ModelResult | None = None
        """The solver result of the last cycle (for benchmarks and debugging)."""

    # --- the cycle ---

    def schedule(self, snapshot: Snapshot) -> Decisions:
        with collector_paused():
            return self._cycle(snapshot)

    def _cycle(self, snapshot: Snapshot) -> Decisions:
        start = time.monotonic()
        solver_cfg = snapshot.config.solver
        time_limit = max(0.0, float(solver_cfg.time_limit))
        deadline = start + time_limit
        prepared = prepare(snapshot)
        reservations = self._reservations(snapshot, prepared)
        full = snapshot
        parked = self._parked(snapshot, prepared, reservations)
        if parked:
            snapshot = replace(snapshot, pending=[p for p in snapshot.pending if p.key not in parked])
            prepared = replace(prepared, candidates=[c for c in prepared.candidates if c.key not in parked])

        greedy = self._greedy(snapshot, prepared, reservations)
        chosen = greedy
        status = "EMPTY"
        objective = bound = None
        considered = 0
        if prepared.candidates:
            budget = self.max_candidates or solver_cfg.max_candidates or window_for(len(snapshot.cluster.nodes))
            fixed, model_cands = self._window(prepared, greedy.admitted, budget)
            considered = len(model_cands)
            greedy_seconds = time.monotonic() - start
            # the solver stops at timeLimit, leaving about half the greedy's time for expansion and
            # backfill; it gets at least a quarter of timeLimit even when the greedy was slow
            wall_deadline = deadline - greedy_seconds / 2
            if time_limit * DETERMINISTIC_SHARE <= 1e-3 or not model_cands:
                status = "NOT_SOLVED (no time left): greedy fallback" if model_cands else "EMPTY"
            else:
                # the base: the snapshot plus the greedy admissions kept fixed (the head of the queue)
                base = Placer(snapshot, cluster=greedy.placer.cluster.copy(), usage=greedy.placer.usage, reservations=reservations)
                fixed_keys = {p.key for p in fixed}
                for p in reversed(greedy.admitted):
                    if p.key not in fixed_keys:
                        base.undo(p)
                params = SolveParams(
                    time_limit=time_limit * DETERMINISTIC_SHARE * DETERMINISTIC_UNITS_PER_SECOND,
                    workers=int(solver_cfg.workers),
                    seed=snapshot.seed,
                    deterministic=self.deterministic,
                    aging_threshold=self.aging_threshold,
                    duration_of=self.duration_of,
                )
                hint = {p.key: p for p in greedy.admitted if p.key not in fixed_keys}
                model, classes, _, _ = solve_cycle(
                    snapshot, prepared, model_cands, base.cluster, base.usage, reservations, hint, greedy.placer.usage,
                    params, wall_deadline, min_wall=MIN_SOLVER_SHARE * time_limit,
                )
                self.last = model
                status = model.status
                if model.solved and model.solved < model.components:
                    status += f" ({model.components - model.solved} of {model.components} components unsolved)"
                objective, bound = model.objective, model.bound
                if model.solved:
                    admitted = list(fixed)
                    expanded, failures = expand(model.proposals, classes, base, model.patterns)
                    admitted.extend(expanded)
                    reasons = dict(failures)
                    if self.backfill:
                        done = {p.key for p in admitted}
                        more, back = greedy_cycle(prepared, base, source="backfill", skip=frozenset(done))
                        admitted.extend(more)
                        reasons.update(back)
                    admitted, dropped = _finalize(snapshot, admitted)
                    reasons.update(dropped)
                    solved = _Outcome(admitted, reasons, base, ordered=True)
                    accel = snapshot.cluster.accelerators
                    if _compare(_placed_value(solved.admitted, accel), _placed_value(greedy.admitted, accel)) >= 0:
                        chosen = solved
                    else:
                        status += ": greedy better"
                elif model.status != "EMPTY":
                    status += ": greedy fallback"
        decisions = self._decisions(snapshot, prepared, chosen, greedy, reservations)
        notes = {r.key: _held_note(r) for r in reservations}
        for key, entry in parked.items():
            decisions.pending[key] = entry.reason + notes.get(key, "")
        searched: dict[str, str] = {}
        stamps: _Stamps | None = None
        if self.preemption:
            stamps = self._stamps(snapshot, chosen, decisions)
            searched = self._preempt(snapshot, prepared, chosen, decisions, parked, stamps)
        self._renominate(snapshot, decisions)
        if self.incremental:
            self._remember(full, prepared, decisions, reservations, parked, searched, stamps)
        decisions.stats = CycleStats(
            policy=self.name,
            seconds=time.monotonic() - start,
            solver_status=status,
            objective=objective,
            bound=bound,
            considered=considered,
            parked=len(parked),
        )
        return decisions

    def _greedy(self, snapshot: Snapshot, prepared: Prepared, reservations: Sequence[Reservation]) -> _Outcome:
        """The better of two greedy cycles (by `cycle_value`): tessera's own (queue order, best-fit
        placement) and, for small pending sets, Kueue's (`scheduler.kueue.greedy_cycle` in drain
        mode, pods placed by `place_admissions`) replayed here and backfilled with the former."""
        placer = Placer(snapshot, reservations=reservations)
        admitted, reasons = greedy_cycle(prepared, placer)
        best = _Outcome(admitted, reasons, placer)
        whole = all(n == ps.count for p in admitted for ps, (_, n) in zip(p.candidate.podsets, p.choice))
        if whole and len(admitted) == len(prepared.candidates):  # Kueue's cycle cannot admit more
            return best
        if not self.kueue_baseline or len(snapshot.pending) > KUEUE_BASELINE_MAX:
            return best
        fresh = Placer(snapshot, reservations=reservations) if admitted else None  # the state before the greedy
        if whole:
            done = {p.key for p in admitted}
            if all(_hopeless(fresh or placer, c) for c in prepared.candidates if c.key not in done):
                # Kueue's cycle admits only workloads this one admitted whole: its value is not higher
                return best
        other = self._kueue_baseline(snapshot, prepared, reservations, fresh)
        if other is not None:
            accel = snapshot.cluster.accelerators
            if _compare(_placed_value(other.admitted, accel), _placed_value(best.admitted, accel)) > 0:
                best = other
        return best

    def _kueue_baseline(self, snapshot: Snapshot, prepared: Prepared, reservations: Sequence[Reservation],
                        placer: Placer | None = None) -> _Outcome | None:
        """Kueue's drain cycle replayed; ``placer`` (at the snapshot's state) binds its admissions."""
        if not self.kueue_baseline or len(snapshot.pending) > KUEUE_BASELINE_MAX:  # (`_greedy` checks first)
            return None
        try:
            from scheduler import kueue
        except ImportError:  # pragma: no cover - the kueue policy is part of the package
            return None
        cycle, place = getattr(kueue, "greedy_cycle", None), getattr(kueue, "place_admissions", None)
        if not callable(cycle) or not callable(place):
            return None
        decisions = place(snapshot, cycle(snapshot, drain=True), gang=True)
        if placer is None:
            placer = Placer(snapshot, reservations=reservations)
        theirs = {a.key: a for a in decisions.admissions}
        admitted: list[Placed] = []
        blocked: set[str] = set()  # StrictFIFO queues whose head is not admitted
        for cand in prepared.candidates:  # queue order
            adm = theirs.get(cand.key)
            cq = cand.cluster_queue
            got: Placed | str | None = None
            if adm is not None and cq not in blocked:
                replay = _replay(cand, adm)
                got = None if replay is None else placer.admit_plan(cand, *replay)
            if isinstance(got, Placed):
                got.source = "kueue"
                placer.commit(got)
                admitted.append(got)
            elif snapshot.cluster_queues[cq].spec.queueing_strategy == "StrictFIFO":
                blocked.add(cq)
        done = frozenset(p.key for p in admitted)
        head_of: dict[str, str] = {}
        for c in prepared.candidates:
            if c.cluster_queue in blocked and c.key not in done:
                head_of.setdefault(c.cluster_queue, c.key)
        head_keys = set(head_of.values())
        rest = [c for c in prepared.candidates if c.cluster_queue not in blocked or c.key in head_keys]
        more, reasons = greedy_cycle(prepared, placer, candidates=rest, source="greedy", skip=done)
        for c in prepared.candidates:
            if c.cluster_queue in blocked and c.key not in done and c.key not in head_keys:
                reasons[c.key] = f"StrictFIFO: waiting behind the head of ClusterQueue {c.cluster_queue}"
        return _Outcome(admitted + more, reasons, placer, ordered=True)  # the order they were bound in

    @staticmethod
    def _window(prepared: Prepared, greedy: Sequence[Placed], budget: int) -> tuple[list[Placed], list[Candidate]]:
        """Which greedy admissions stay fixed, and which candidates the model decides.

        Up to ``budget`` candidates go to the model: up to half of the budget for
        workloads the greedy cycle left out (queue order), the rest for the greedy's *last*
        admissions, whose capacity the left-out ones compete for. The greedy's earlier
        admissions (the head of the queue) stay as they are. Small cycles fit entirely.
        """
        admitted = {p.key for p in greedy}
        left_out = [c for c in prepared.candidates if c.key not in admitted]
        budget = max(1, budget)
        take_out = left_out[: max(budget // 2, budget - len(greedy))]
        room = budget - len(take_out)
        fixed = list(greedy[: max(0, len(greedy) - room)])
        fixed_keys = {p.key for p in fixed}
        chosen = {c.key for c in take_out} | (admitted - fixed_keys)
        return fixed, [c for c in prepared.candidates if c.key in chosen]

    # --- parking (see the class docstring) ---

    def _parked(self, snapshot: Snapshot, prepared: Prepared, reservations: Sequence[Reservation]) -> dict[str, _Parked]:
        """The candidates still parked in this cycle (none when the memory does not hold)."""
        memory = self._memory
        if memory is None or not self.incremental:
            return {}
        inputs = _inputs(snapshot)
        if (
            len(inputs) != len(memory.inputs)
            or any(a is not b for a, b in zip(inputs, memory.inputs))
            or snapshot.cluster.releases != memory.releases
            or not memory.admitted <= snapshot.admitted_keys
        ):
            self._memory = None
            return {}
        nominated = {r.key for r in reservations if r.nominated}
        now = snapshot.now
        out: dict[str, _Parked] = {}
        for cand in prepared.candidates:
            entry = memory.parked.get(cand.key)
            if entry is None or entry.pending is not cand.pending or now >= entry.wake_at or cand.key in nominated:
                continue
            if entry.excluded and not entry.excluded <= excluded_nodes(reservations, cand):
                continue  # nodes it could not use are free for it now
            entry.candidate = cand
            out[cand.key] = entry
        return out

    def _stamps(self, snapshot: Snapshot, chosen: _Outcome, decisions: Decisions) -> _Stamps:
        tree = snapshot.tree
        memory = self._memory
        before = dict(memory.admissions) if memory is not None else {}
        after = dict(before)
        for a in decisions.admissions:
            root = tree.root(a.cluster_queue).name
            after[root] = after.get(root, 0) + 1
        if memory is not None and not decisions.admissions:
            over = memory.borrowing  # the usage the last cycle ended with (nothing released since)
        else:
            usage = chosen.placer.usage
            over = frozenset(
                (node.id, fr) for node in tree.nodes for fr, v in usage.node(node.id).items()
                if v > node.subtree_quota.get(fr, 0)
            )
        epochs = dict(memory.epochs) if memory is not None else {}
        moved = {tree.root(nid).name for nid, _ in over - (memory.borrowing if memory is not None else frozenset())}
        if snapshot.config.fair_sharing.enable:
            moved |= {root for root in after if after[root] != before.get(root, 0)}
        for root in moved:
            epochs[root] = epochs.get(root, 0) + 1
        return _Stamps(before, after, epochs, over)

    def _remember(self, snapshot: Snapshot, prepared: Prepared, decisions: Decisions,
                  reservations: Sequence[Reservation], parked: Mapping[str, _Parked], searched: Mapping[str, str],
                  stamps: _Stamps | None) -> None:
        """Park what this cycle left pending and nothing but a release can change (``snapshot``: the whole one)."""
        admitted = snapshot.admitted_keys | {a.key for a in decisions.admissions}
        memory = _Memory(_inputs(snapshot), snapshot.cluster.releases, admitted)
        if stamps is not None:
            memory.admissions, memory.epochs, memory.borrowing = stamps.after, stamps.epochs, stamps.over
        tree = snapshot.tree

        def seen(cand: Candidate) -> tuple[object, ...] | None:
            return None if stamps is None else stamps.stamp(tree.root(cand.cluster_queue).name, searched[cand.key])

        # an aged workload with nodes held for it is parked like the rest (holding nodes for it does
        # not give it room); a preemptor waiting for its victims is not
        held = {r.key for r in reservations if r.nominated} | decisions.nominations.keys()
        notes = {r.key: _held_note(r) for r in reservations if not r.nominated}
        strict = {name for name, cq in snapshot.cluster_queues.items() if cq.spec.queueing_strategy == "StrictFIFO"}
        now = snapshot.now
        for key, entry in parked.items():
            if key in held:
                continue
            if key in searched and entry.candidate is not None:
                entry.preempt_seen = seen(entry.candidate)
            memory.parked[key] = entry  # (a search not reached this cycle runs in the next)
        admitted_now = {a.key for a in decisions.admissions}
        for cand in prepared.candidates:
            key = cand.key
            if key in admitted_now or key in held or cand.cluster_queue in strict:
                continue
            may_preempt = self.preemption and _may_preempt(snapshot, cand)
            # not searched in this cycle (admissions in its tree, or too many preemptors before
            # it): parked with its search due, which runs in queue order in a later cycle
            due = may_preempt and key not in searched
            wake = math.inf
            if cand.gpu_total() > 0 and aging_fraction(now - cand.queued_at, self.aging_threshold) < 1.0:
                wake = cand.queued_at + self.aging_threshold
            reason = decisions.pending.get(key, NOT_ADMITTED).removesuffix(notes.get(key, ""))
            memory.parked[key] = _Parked(cand.pending, reason, wake, cand,
                                         seen(cand) if may_preempt and not due else None, excluded_nodes(reservations, cand))
        self._memory = memory

    # --- aging: reservations ---

    def _reservations(self, snapshot: Snapshot, prepared: Prepared) -> list[Reservation]:
        """Nodes held for preemptors (their nominated nodes) and for aged workloads that do not fit
        now (see docs/solver.md, "Aging" and "Preemption")."""
        nominated: list[Reservation] = []
        for cand in prepared.candidates:
            nodes = cand.pending.nominated_nodes & snapshot.cluster.nodes.keys()
            if nodes:
                nominated.append(Reservation(cand.key, cand.priority, cand.queued_at, frozenset(nodes),
                                             note="freed by its preemptions", nominated=True))
        out: list[Reservation] = []
        probe: Placer | None = None
        looked = 0
        for cand in prepared.candidates:
            if cand.pending.nominated_nodes:
                continue
            if len(out) >= MAX_RESERVATIONS or looked >= 4 * MAX_RESERVATIONS:
                break
            waited = snapshot.now - cand.queued_at
            if aging_fraction(waited, self.aging_threshold) < 1.0 or cand.gpu_total() <= 0:
                continue
            looked += 1
            if probe is None:
                probe = Placer(snapshot)
            probe.reservations = nominated + out
            nodes = self._reserve_memo(snapshot, probe, cand)
            if nodes:
                out.append(
                    Reservation(cand.key, cand.priority, cand.queued_at, frozenset(nodes), note=f"waiting {waited:.0f}s")
                )
        return nominated + out

    def _reserve_memo(self, snapshot: Snapshot, probe: Placer, cand: Candidate) -> list[str]:
        """`_reserve_for`, remembered while nothing it reads changes: the snapshot's inputs and
        usage (same objects), the cluster's version, the candidate's pending object and the
        reservations made before it."""
        world = (*_inputs(snapshot), snapshot.usage)
        held = self._held
        if (held is None or held[1] != snapshot.cluster.version or len(held[0]) != len(world)
                or any(a is not b for a, b in zip(held[0], world))):
            held = self._held = (world, snapshot.cluster.version, {})
        key = (cand.key, tuple(probe.reservations))
        found = held[2].get(key)
        if found is None or found[0] is not cand.pending:
            found = held[2][key] = (cand.pending, self._reserve_for(snapshot, probe, cand))
        return list(found[1])

    @staticmethod
    def _reserve_for(snapshot: Snapshot, probe: Placer, cand: Candidate) -> list[str]:
        """The nodes an aged workload needs, those closest to free first; none if it fits now, if
        quota (not nodes) holds it back, or if even empty nodes could not hold it."""
        request: dict = {}
        chosen = []
        for ps in cand.podsets:
            opt = next(
                (o for o in ps.options if not _exceeds(snapshot, cand.cluster_queue, request, o.per_pod_quota, ps.lowest)),
                None,
            )
            if opt is None:
                return []  # quota holds it back: preemption and fair sharing apply, not reservations
            for fr, v in opt.per_pod_quota.items():
                request[fr] = request.get(fr, 0) + v * ps.lowest
            chosen.append((ps, opt))
        got = probe.try_admit(cand)
        if not isinstance(got, str):
            probe.undo(got, committed=False)
            return []
        taken = set(probe.excluded(cand))
        nodes: list[str] = []
        states = probe.cluster.state_array
        for ps, opt in chosen:
            empty_fit, all_pools = _empty_pools(snapshot.cluster, ps.pod, opt)
            fit_of_state: dict[int, int] = {}  # pods that fit now, per node state (the probe is not changed here)
            best: list[str] | None = None
            best_score: tuple[int, int] | None = None
            for _, members, at in all_pools:
                left = [n for n in members if n not in taken] if taken else members
                if sum(map(empty_fit.__getitem__, left)) < ps.count:
                    continue
                # the nodes that could hold pods, most room now first: each holds at least one, so
                # the first ``count`` of that order are all a pick can need
                order: list[tuple[int, int, str]] = []
                for n, sid in zip(members, states[at].tolist()):  # (states gathered from the array)
                    empty = empty_fit[n]
                    if empty > 0 and n not in taken:
                        now = fit_of_state.get(sid)
                        if now is None:
                            now = fit_of_state[sid] = probe.fit(n, ps.pod)
                        order.append((-now, -empty, n))
                pick: list[str] = []
                room = fits = 0
                for now, empty, n in heapq.nsmallest(ps.count, order):
                    if room >= ps.count:
                        break
                    pick.append(n)
                    room -= empty
                    fits += min(-now, -empty)
                score = (fits, -len(pick))
                if best_score is None or score > best_score:
                    best, best_score = pick, score
            if best is None:
                return []
            nodes.extend(best)
            taken.update(best)
        return nodes

    # --- decisions and reasons ---

    def _decisions(
        self, snapshot: Snapshot, prepared: Prepared, chosen: _Outcome, greedy: _Outcome, reservations: Sequence[Reservation]
    ) -> Decisions:
        decisions = Decisions()
        admitted_keys = set()
        for p in chosen.admitted if chosen.ordered else sorted(chosen.admitted, key=lambda p: p.candidate.order):
            admitted_keys.add(p.key)
            podsets = []
            for i, ps in enumerate(p.candidate.podsets):
                opt = p.option(i)
                podsets.append(
                    PodSetPlacement(
                        name=ps.info.name,
                        count=p.choice[i][1],
                        flavors=dict(opt.flavors),
                        nodes=tuple(p.nodes[i]),
                        domain=p.domains[i],
                    )
                )
            decisions.admissions.append(Admission(p.key, p.candidate.cluster_queue, tuple(podsets), dict(p.usage), p.borrows))
        greedy_keys = {p.key for p in greedy.admitted}
        held = {r.key: r for r in reservations}
        for pending in snapshot.pending:
            key = pending.key
            if key in admitted_keys:
                continue
            reason = prepared.reasons.get(key) or prepared.blocked_strict.get(key) or chosen.reasons.get(key)
            if reason is None:
                reason = greedy.reasons.get(key, NOT_ADMITTED)
            if key in greedy_keys and chosen is not greedy and not reason.startswith(NOT_ADMITTED):
                reason = f"{NOT_ADMITTED} ({reason})"
            if key in held:
                reason += _held_note(held[key])
            decisions.pending[key] = reason
        return decisions

    # --- preemption (post-step) ---

    def _preempt(self, snapshot: Snapshot, prepared: Prepared, chosen: _Outcome, decisions: Decisions,
                 parked: Mapping[str, _Parked] | None = None, stamps: _Stamps | None = None) -> dict[str, str]:
        """Preemptions for candidates left pending, parked ones included, in queue order; returns the
        workloads whose search ran to the end in this cycle and preempted nothing, with why (see
        `_Stamps`).

        A parked workload whose last search holds for these ``stamps`` (`_Parked.preempt_seen`)
        would find nothing again: it is passed over without running the search.

        No search runs in a quota tree where this cycle admitted: its pool would lack what the
        cycle admitted while its usage counts it. Admitting is a change, so another cycle runs
        at the same instant and searches with the pool and the usage in step."""
        tree = snapshot.tree
        admitted_now = {a.key for a in decisions.admissions}
        busy = {tree.root(a.cluster_queue).name for a in decisions.admissions}
        candidates = [c for c in prepared.candidates if c.key not in admitted_now]
        settled: dict[str, str] = {}
        if parked:
            for key, entry in parked.items():
                if entry.candidate is not None:
                    candidates.append(entry.candidate)
                    seen = entry.preempt_seen
                    if stamps is not None and seen is not None and stamps.settled(tree.root(entry.candidate.cluster_queue).name, seen):
                        settled[key] = str(seen[0])
            candidates.sort(key=lambda c: c.order)  # the order of the whole pending set's preparation
        searched: dict[str, str] = {}
        if not candidates or not snapshot.admitted:
            return {c.key: "fit" for c in candidates if c.key not in settled}
        fair = snapshot.config.fair_sharing
        usage = chosen.placer.usage
        fitter: Placer | None = None  # on a copy of the cluster that keeps the preemptors' pods
        by_key: dict[str, object] = {}
        gone: set[str] = set()
        pool: VictimPool | None = None  # built at the first search that runs (parked ones are often all settled)
        tried = 0
        # Preemptors that found nothing to preempt, by what the search reads of them: an identical
        # one finds nothing either until a preemption changes the usage and the pool.
        fruitless: dict[tuple[object, ...], str] = {}
        for cand in candidates:
            if not _may_preempt(snapshot, cand):
                searched[cand.key] = "fit"
                continue
            if busy and tree.root(cand.cluster_queue).name in busy:
                continue  # searched in the next cycle
            policy = snapshot.cluster_queues[cand.cluster_queue].spec.preemption
            if tried >= MAX_PREEMPTORS:
                break
            tried += 1
            allowed = {ps.info.name: {f for o in ps.options for f in o.flavors.values()} for ps in cand.podsets}
            same = (
                cand.cluster_queue,
                cand.priority,
                cand.queued_at if policy.within_cluster_queue == "LowerOrNewerEqualPriority" else None,
                tuple((ps.info.name, ps.count, ps.pod.items, frozenset(allowed[ps.info.name])) for ps in cand.podsets),
            )
            if cand.key in settled and not gone:  # (a preemption this cycle changes what it sees)
                fruitless.setdefault(same, settled[cand.key])
                continue
            if same in fruitless:
                searched[cand.key] = fruitless[same]
                continue
            if pool is None:
                by_key, pool = self._victim_pool(snapshot)
            oracle = None
            if any(len(ps.options) > 1 for ps in cand.podsets):
                # the oracle only ranks flavors: with one option per podset (one eligible flavor
                # per resource group) the assignment is the same without it, and so is the search
                probe = Preemptor(cand.key, cand.cluster_queue, cand.priority, {}, cand.queued_at)
                oracle = preemption_oracle(tree, usage, probe, pool, fair_sharing=fair)
            assignment = assign_flavors(
                tree,
                usage,
                cand.cluster_queue,
                [PodSetRequest(ps.info.name, ps.count, ps.pod.as_dict()) for ps in cand.podsets],
                eligible=lambda name, flavor: None if flavor in allowed.get(name, ()) else "not eligible",
                fair_sharing=fair.enable,
                oracle=oracle,
            )
            if assignment.mode != AssignmentMode.PREEMPT or len(assignment.podsets) != len(cand.podsets):
                # no flavor fits even by preempting (the oracle's searches found nothing): as "no-victims"
                fruitless[same] = searched[cand.key] = "no-victims" if assignment.mode == AssignmentMode.NO_FIT else "fit"
                continue
            preemptor = Preemptor(cand.key, cand.cluster_queue, cand.priority, dict(assignment.usage), cand.queued_at)
            result = find_victims(
                tree, usage, preemptor, pool, needs_preemption=assignment.preempt_frs, fair_sharing=fair
            )
            if not result.victims:
                fruitless[same] = searched[cand.key] = "no-victims"
                continue
            if fitter is None:
                fitter = Placer(snapshot, cluster=chosen.placer.cluster.copy(), usage=snapshot.tree.empty_usage())
            nodes = self._fits_after(fitter, cand, assignment, [by_key[v.workload.key] for v in result.victims],
                                     chosen.placer.excluded(cand))
            victims = ", ".join(v.workload.key for v in result.victims)
            if nodes is None:
                decisions.pending[cand.key] = (
                    f"{decisions.pending.get(cand.key, NOT_ADMITTED)}; preempting {victims} would free quota "
                    "but not node capacity for its pods, so nothing is preempted"
                )
                searched[cand.key] = "nodes"
                continue
            for v in result.victims:
                gone.add(v.workload.key)
                if v.workload.evicted:
                    continue
                decisions.preemptions.append(
                    Preemption(
                        key=v.workload.key,
                        preemptor=cand.key,
                        reason=v.reason,
                        message=f"Preempted to accommodate a workload ({cand.key}) due to {_reason_words(str(v.reason))}",
                    )
                )
            usage = result.usage_after.admit(cand.cluster_queue, assignment.usage)  # keep the freed quota for it
            pool = VictimPool(w for w in pool if w.key not in gone)
            fruitless.clear()
            decisions.nominations[cand.key] = nodes
            need = ", ".join(f"{format_amount(v, r)} {r} in {f}" for (f, r), v in sorted(assignment.usage.items()) if v)
            decisions.pending[cand.key] = (
                f"waiting for {len(result.victims)} preempted workload(s) to release {need}: {victims}"
            )
        return searched

    def _victim_pool(self, snapshot: Snapshot) -> tuple[dict[str, Admitted], VictimPool]:
        """The admitted workloads by key and as a victim pool: built once per admitted list (the
        simulator hands the same list to every cycle until a workload is admitted or leaves or a
        pod binds)."""
        got = self._victims
        if got is None or got[0] is not snapshot.admitted:
            admitted = snapshot.admitted
            got = self._victims = (admitted, dict(zip(map(_KEY, admitted), admitted)), VictimPool(map(_CANDIDATE, admitted)))
        return got[1], got[2]

    @staticmethod
    def _renominate(snapshot: Snapshot, decisions: Decisions) -> None:
        """Keep holding a preemptor's nominated nodes while a victim still occupies them (its pods
        are terminating); once they are free, the nomination lasts the one cycle that admits it."""
        if not any(p.nominated_nodes for p in snapshot.pending):
            return
        admitted = {a.key for a in decisions.admissions}
        evicting = {b.node for a in snapshot.admitted if a.evicted for b in a.bindings}
        for pending in snapshot.pending:
            key = pending.key
            if pending.nominated_nodes and key not in admitted and key not in decisions.nominations:
                if pending.nominated_nodes & evicting:
                    decisions.nominations[key] = pending.nominated_nodes

    @staticmethod
    def _fits_after(placer: Placer, cand: Candidate, assignment: object, victims: Sequence[object],
                    excluded: frozenset[str] = frozenset()) -> frozenset[str] | None:
        """The nodes the preemptor's pods bind on once the victims' pods are gone, None if they do
        not (the result is kept on the placer's cluster when they do, so later preemptors do not
        count the same nodes twice). ``excluded``: nodes held for workloads that outrank it. One
        placer serves a cycle's preemptors: its node indexes are told what changed."""
        cluster = placer.cluster
        touched: set[str] = set()  # the victims' nodes
        nodes: set[str] = set()
        try:
            with cluster.what_if() as trial:
                for a in victims:
                    for b in getattr(a, "bindings", ()):
                        if b.node in cluster.nodes:
                            cluster.unbind(b)
                            touched.add(b.node)
                placer.touch(touched)
                placer.epoch += 1
                for i, ps in enumerate(cand.podsets):
                    want = assignment.podsets[i].flavors  # type: ignore[attr-defined]
                    opt = next((o for o in ps.options if all(o.flavors.get(r) == f for r, f in want.items())), None)
                    if opt is None:
                        return None
                    attempt = placer.place_podset(cand, ps, opt, ps.count, excluded)
                    if attempt.reason is not None:
                        return None
                    nodes.update(attempt.nodes)
                    placer.epoch += 1  # the next podsets meet these pods
                trial.commit()
            return frozenset(nodes)
        finally:
            placer.touch(touched | nodes)  # rolled back, or kept: either way these nodes changed
            placer.epoch += 1


def _held_note(reservation: Reservation) -> str:
    """What a pending reason adds for the workload nodes are held for."""
    return f"; {len(reservation.nodes)} node(s) reserved for it ({reservation.note})"


def _may_preempt(snapshot: Snapshot, cand: Candidate) -> bool:
    """Its ClusterQueue's preemption policy lets it preempt something (in the queue or the cohort)."""
    policy = snapshot.cluster_queues[cand.cluster_queue].spec.preemption
    return not (policy.within_cluster_queue == "Never" and policy.reclaim_within_cohort == "Never")


def _hopeless(placer: Placer, cand: Candidate) -> bool:
    """No cycle could admit ``cand`` from the placer's state: some podset has no option whose
    quota at its lowest pod count fits on top of the usage, or whose nodes (less those held for
    workloads that outrank it) could hold that many of its pods, within one domain of a required
    topology level. (Sufficient, not necessary: a cheap test.)"""
    excluded = placer.excluded(cand)
    for ps in cand.podsets:
        if not any(
            placer.quota_fits(cand.cluster_queue, {fr: v * ps.lowest for fr, v in opt.per_pod_quota.items()})[0]
            and placer.could_hold(ps.pod, opt, excluded, ps.lowest)
            for opt in ps.options
        ):
            return True
    return False


def _replay(cand: Candidate, adm: Admission) -> tuple[list[tuple[int, int]], list[list[tuple[str, int]]], list[tuple[str, ...] | None]] | None:
    """A Kueue admission (every pod on a node) as (choice, per-podset node plans, domains) of a candidate."""
    by_name = {psp.name: psp for psp in adm.podsets}
    choice, plans, domains = [], [], []
    for ps in cand.podsets:
        psp = by_name.get(ps.info.name)
        if psp is None or len(psp.nodes) != psp.count or not psp.count:
            return None
        opt = next((o for o in ps.options if all(o.flavors.get(r) == f for r, f in psp.flavors.items())), None)
        if opt is None or not set(psp.nodes) <= set(opt.nodes):
            return None
        counts: dict[str, int] = {}
        for n in psp.nodes:
            counts[n] = counts.get(n, 0) + 1
        choice.append((opt.index, psp.count))
        plans.append(list(counts.items()))
        domains.append(psp.domain if opt.required else None)
    return choice, plans, domains


def _reason_words(reason: str) -> str:
    return {
        "InClusterQueue": "prioritization in the ClusterQueue",
        "InCohortReclamation": "reclamation within the cohort",
        "InCohortFairSharing": "fair sharing within the cohort",
        "InCohortReclaimWhileBorrowing": "reclamation within the cohort while borrowing",
    }.get(reason, reason)


def _exceeds(snapshot: Snapshot, cq: str, base: Mapping, per_pod: Mapping, pods: int) -> bool:
    trial = dict(base)
    for fr, v in per_pod.items():
        trial[fr] = trial.get(fr, 0) + v * pods
    return not snapshot.tree.fits(cq, trial, snapshot.usage).fits


def _fit_if_empty(node: NodeInfo, pod: PodRequest) -> int:
    """Pods like ``pod`` the node would hold if empty."""
    empty = node.copy()
    empty.used = {}
    empty.pod_count = 0
    empty.devices = {r: [1000] * len(d) for r, d in node.devices.items()}
    return min(empty.fit_count(pod), 1 << 20)


def _empty_pools(
    cluster: Cluster, pod: PodRequest, opt: PodSetOption
) -> tuple[dict[str, int], list[tuple[tuple[str, ...], list[str], np.ndarray]]]:
    """Per node of the option, the pods like ``pod`` it would hold if empty; and its nodes by
    domain at the required topology level (one pool without one), domains in order, each pool
    with its nodes' positions in the cluster's state array. Kept in the cluster's shared cache:
    it reads allocatable, labels and positions only, which a node keeps for life."""
    labels: tuple[str, ...] = ()
    if opt.required and opt.topology is not None and opt.level is not None:
        labels = tuple(opt.topology.level_labels[: opt.level + 1])
    memo = cluster.shared.setdefault("empty_pools", {})
    key = (pod.items, opt.nodes, labels)
    found = memo.get(key)
    if found is None:
        if len(memo) > 1000:
            memo.clear()
        nodes = cluster.nodes
        empty_fit = {n: _fit_if_empty(nodes[n], pod) for n in opt.nodes}
        pools: dict[tuple[str, ...], list[str]] = {}
        for n in opt.nodes:
            node_labels = nodes[n].labels
            pools.setdefault(tuple(node_labels.get(lb, "") for lb in labels), []).append(n)
        found = memo[key] = (
            empty_fit,
            [(k, members, cluster.positions(members)) for k, members in sorted(pools.items())],
        )
    return found


register_policy("tessera", TesseraPolicy)

"""Binding workloads on a working copy of the cluster, with quota: the ground truth of the `tessera` policy.

Everything the `tessera` policy returns goes through a `Placer`: a copy of the snapshot's
cluster on which every admitted pod is really bound (`Cluster.bind`, devices included) and a
`Usage` to which every admission is really charged after `QuotaTree.fits` said yes. The
CP-SAT model proposes, the placer disposes: a proposal that does not bind or does not fit is
dropped (and retried greedily), so no decision can break node capacity, per-GPU capacity,
quota, gang, topology, selectors or taints.

The same machinery gives the greedy cycle (`greedy_cycle`): workloads in Kueue's queue order,
flavors in ClusterQueue order, first flavor whose quota fits and whose pods bind, pods packed
best-fit (MostAllocated) or by Kueue's TAS for topology requests. It is the warm start of the
model, the fallback when the solver finds nothing, and the backfill pass after the solve.
"""

from __future__ import annotations

import heapq
from bisect import insort

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from quotas.units import FlavorResource, format_amount
from scheduler.cluster import Binding, Cluster, PodRequest
from scheduler.placement import Scorer, bin_packing
from scheduler.snapshot import Snapshot
from scheduler.solver_common import Candidate, PodSetCandidate, PodSetOption, Prepared
from scheduler.topology import TopologyGraph, describe_pod, level_name

__all__ = ["Placed", "Placer", "Reservation", "greedy_cycle", "quota_shortfall"]


@dataclass(frozen=True)
class Reservation:
    """Nodes held for a workload: for an aged one, work it outranks may not be placed on them;
    for a preemptor (``nominated``), no other work may, not even of higher priority: with
    `reclaimWithinCohort: Any` the victims may outrank it, and would take the nodes back."""

    key: str
    priority: int
    queued_at: float
    nodes: frozenset[str]
    note: str = ""
    nominated: bool = False

    def blocks(self, candidate: Candidate) -> bool:
        if candidate.key == self.key:
            return False
        if self.nominated:
            return True
        if candidate.priority != self.priority:
            return candidate.priority < self.priority
        return (candidate.queued_at, candidate.key) > (self.queued_at, self.key)


def excluded_nodes(reservations: Iterable[Reservation], candidate: Candidate) -> frozenset[str]:
    """The nodes held for others that ``candidate`` may not use."""
    out: frozenset[str] = frozenset()
    for r in reservations:
        if r.blocks(candidate):
            out = out | r.nodes
    return out


@dataclass
class Placed:
    """One admitted workload: option and pod count per podset, one node per pod, its bindings and quota."""

    candidate: Candidate
    choice: list[tuple[int, int]]
    nodes: list[tuple[str, ...]]
    domains: list[tuple[str, ...] | None]
    bindings: list[Binding]
    usage: dict[FlavorResource, int]
    borrows: bool = False
    source: str = "greedy"

    @property
    def key(self) -> str:
        return self.candidate.key

    def option(self, i: int) -> PodSetOption:
        return self.candidate.podsets[i].options[self.choice[i][0]]


def quota_detail(snapshot: Snapshot, cq: str, fr: FlavorResource) -> str:
    node = snapshot.tree.cluster_queue(cq)
    quota = node.quotas.get(fr)
    resource = fr[1]
    parts = [f"nominal quota {format_amount(quota.nominal if quota else 0, resource)}"]
    if quota is not None and quota.borrowing_limit is not None and node.parent is not None:
        parts.append(f"borrowing limit {format_amount(quota.borrowing_limit, resource)}")
    if quota is not None and quota.lending_limit is not None:
        parts.append(f"lending limit {format_amount(quota.lending_limit, resource)}")
    parts.append("not in a cohort" if node.parent is None else f"cohort {snapshot.tree.nodes[node.parent].name}")
    return ", ".join(parts)


def quota_shortfall(snapshot: Snapshot, usage: object, cq: str, request: Mapping[FlavorResource, int]) -> str | None:
    """The first FlavorResource of ``request`` that does not fit ClusterQueue ``cq``, in words; None if it fits."""
    tree = snapshot.tree
    node = tree.cluster_queue(cq)
    for fr in sorted(request):
        need = request[fr]
        if need <= 0:
            continue
        avail = tree.available(node, fr, usage)  # type: ignore[arg-type]
        if need > avail:
            flavor, resource = fr
            text = (
                f"insufficient quota in ClusterQueue {cq} for {resource} in flavor {flavor}: "
                f"needs {format_amount(need, resource)}, {format_amount(avail, resource)} available"
            )
            potential = tree.potential_available(node, fr)
            if need > potential:
                text += f", at most {format_amount(potential, resource)} ever"
            return f"{text} ({quota_detail(snapshot, cq, fr)})"
    return None


def _flavor_text(opt: PodSetOption) -> str:
    """``h100`` or ``a100/cpu-pool``: the flavors an option uses, for reasons."""
    return "/".join(sorted(set(opt.flavors.values())))


class _StateIndex:
    """A set of nodes grouped by current `NodeInfo.state_id` (nodes in one state are interchangeable)."""

    def __init__(self, names: Iterable[str], cluster: Cluster) -> None:
        self.by_state: dict[int, set[str]] = {}
        self.ranked: dict[tuple[object, ...], tuple[list[tuple[float, int]], set[int]]] = {}
        """Per pod shape: the states it fits, best score first (a valid heap), and every state already
        looked at. A state's fit and score never change, so each is evaluated once per placer."""
        names = tuple(names)
        self.state_of: dict[str, int] = dict(zip(names, cluster.state_array[cluster.positions(names)].tolist()))
        state_of = self.state_of
        by_state = self.by_state
        for n, sid in state_of.items():
            members = by_state.get(sid)
            if members is None:
                by_state[sid] = {n}
            else:
                members.add(n)

    def without(self, excluded: Iterable[str]) -> _StateIndex:
        """A copy without some nodes: the same as indexing what is left (in the same order), but a
        copy costs a fraction of reading every node's state again."""
        idx = _StateIndex.__new__(_StateIndex)
        idx.ranked = {}
        state_of = idx.state_of = dict(self.state_of)
        by_state = idx.by_state = {sid: set(members) for sid, members in self.by_state.items()}
        for n in excluded:
            sid = state_of.pop(n, None)
            if sid is not None:
                members = by_state[sid]
                members.discard(n)
                if not members:
                    del by_state[sid]
        return idx

    def update(self, name: str, sid: int) -> None:
        old = self.state_of[name]
        if old == sid:
            return
        members = self.by_state[old]
        members.discard(name)
        if not members:
            del self.by_state[old]
        self.by_state.setdefault(sid, set()).add(name)
        self.state_of[name] = sid


@dataclass
class _Attempt:
    nodes: tuple[str, ...] = ()
    bindings: list[Binding] = field(default_factory=list)
    domain: tuple[str, ...] | None = None
    reason: str | None = None


class Placer:
    """A working cluster and usage that admissions are bound and charged to, one at a time."""

    def __init__(
        self,
        snapshot: Snapshot,
        cluster: Cluster | None = None,
        usage: object | None = None,
        reservations: Sequence[Reservation] = (),
        scorer: Scorer | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.tree = snapshot.tree
        self.cluster = cluster if cluster is not None else snapshot.cluster.copy()
        self.usage = usage if usage is not None else snapshot.usage
        self.reservations = list(reservations)
        self.scorer = scorer or bin_packing()
        self.epoch = 0
        self._fit: dict[tuple[object, int], int] = {}
        self._scores: dict[tuple[object, int], float] = {}
        self._totals: dict[tuple[object, ...], int] = {}
        self._indexes: dict[tuple[object, ...], _StateIndex] = {}
        self._graphs: dict[tuple[object, ...], TopologyGraph] = {}
        self._domains: dict[tuple[object, ...], Mapping[object, int]] = {}
        self._failures: dict[tuple[object, ...], str] = {}
        """Placement failures per epoch. The epoch moves whenever the cluster changes other than
        by one podset's own all-or-nothing attempt: commits and undos, and within one workload,
        the pods of a podset that later ones meet (and their rollback)."""
        self._shortfalls: tuple[object, dict[tuple[object, ...], str | None]] = (None, {})
        """`quota_shortfall` results for one usage object (usages are replaced, never changed)."""

    # --- capacity -------------------------------------------------------------------------

    def fit(self, name: str, pod: PodRequest) -> int:
        """Pods like ``pod`` that fit on node ``name`` now (memoised per node state)."""
        node = self.cluster.nodes[name]
        return self._fit_state(pod, node.state_id, name)

    def _fit_state(self, pod: PodRequest, sid: int, name: str) -> int:
        key = (pod.items, sid)  # tuples hash and compare in C, PodRequest in Python
        got = self._fit.get(key)
        if got is None:
            got = self._fit[key] = min(self.cluster.fit_count(self.cluster.nodes[name], pod), 1 << 20)
        return got

    def excluded(self, candidate: Candidate) -> frozenset[str]:
        return excluded_nodes(self.reservations, candidate)

    def allowed_nodes(self, opt: PodSetOption, excluded: frozenset[str]) -> list[str]:
        if not excluded:
            return list(opt.nodes)
        return [n for n in opt.nodes if n not in excluded]

    def index(self, opt: PodSetOption, excluded: frozenset[str]) -> _StateIndex:
        """The allowed nodes of an option grouped by their current state (kept up to date by `touch`)."""
        key = (opt.group, excluded)
        idx = self._indexes.get(key)
        if idx is None:
            if excluded:
                idx = self._indexes[key] = self.index(opt, frozenset()).without(excluded)
            else:
                idx = self._indexes[key] = _StateIndex(opt.nodes, self.cluster)
        return idx

    def touch(self, names: Iterable[str]) -> None:
        """Tell the state indexes that these nodes may have changed (after binds and unbinds)."""
        nodes = self.cluster.nodes
        indexes = self._indexes.values()
        for n in set(names):
            sid = nodes[n].state_id
            for idx in indexes:
                if n in idx.state_of:
                    idx.update(n, sid)

    def fit_total(self, pod: PodRequest, opt: PodSetOption, excluded: frozenset[str]) -> int:
        """Pods like ``pod`` the option's allowed nodes hold now, summed over nodes."""
        key = (pod.items, opt.group, excluded, self.epoch)
        got = self._totals.get(key)
        if got is None:
            idx = self.index(opt, excluded)
            fit = self._fit_state
            got = sum(fit(pod, sid, next(iter(names))) * len(names) for sid, names in idx.by_state.items())
            if len(self._totals) > 50_000:
                self._totals.clear()
            self._totals[key] = got
        return got

    def could_hold(self, pod: PodRequest, opt: PodSetOption, excluded: frozenset[str], count: int) -> bool:
        """Whether ``count`` pods like ``pod`` could bind on the option's allowed nodes now: in total,
        and within one domain of a required topology level. Necessary for any placement of them
        there (`place_podset`'s, Kueue's TAS), and cheap: one pass over node states."""
        if self.fit_total(pod, opt, excluded) < count:
            return False
        if not opt.required or opt.topology is None or opt.level is None:
            return True
        counts = self.domain_counts(pod, opt, excluded)
        return any(counts[d] >= count for d in self.graph(opt, excluded).domains_at(opt.level))

    def domain_counts(self, pod: PodRequest, opt: PodSetOption, excluded: frozenset[str]) -> Mapping[object, int]:
        """Kueue TAS's counts for the option's topology over its allowed nodes: pods like ``pod``
        that fit per node and per domain now. From the node states (one fit count per state, not
        per node), remembered until the cluster changes."""
        key = (pod.items, opt.group, excluded, self.cluster.version)
        got = self._domains.get(key)
        if got is None:
            per_node: dict[str, int] = {}
            nodes = self.cluster.nodes
            for names in self.index(opt, excluded).by_state.values():
                per_node.update(dict.fromkeys(names, self.cluster.fit_count(nodes[next(iter(names))], pod)))
            if len(self._domains) > 1000:
                self._domains.clear()
            got = self._domains[key] = self.graph(opt, excluded).domain_counts(per_node)
        return got

    def graph(self, opt: PodSetOption, excluded: frozenset[str]) -> TopologyGraph:
        """The option's topology over its allowed nodes (capacity read from the working cluster)."""
        assert opt.topology is not None
        key = (opt.group, excluded)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = TopologyGraph(self.cluster, opt.topology, self.allowed_nodes(opt, excluded))
        return graph

    def _score(self, pod: PodRequest, sid: int, name: str) -> float:
        key = (pod.items, sid)
        got = self._scores.get(key)
        if got is None:
            got = self._scores[key] = self.scorer.evaluate(self.cluster.nodes[name], pod)[0]
        return got

    def _place_best_fit(self, pod: PodRequest, count: int, idx: _StateIndex) -> tuple[list[str], list[Binding]] | None:
        """``count`` pods one by one, each on a node of the best-scoring state (MostAllocated by
        default: packing), the first such node by name. All or nothing.

        A state's fit and score do not change, only its members: the states are ranked in a heap
        once, a bind moves one node into a state that is ranked when it appears, and states left
        empty are dropped when they reach the top."""
        entry = idx.ranked.get(pod.items)
        if entry is None:
            entry = idx.ranked[pod.items] = ([], set())
        ranked, seen = entry

        def look(sid: int, name: str) -> tuple[float, int] | None:
            seen.add(sid)
            if self._fit_state(pod, sid, name) <= 0:
                return None
            item = (-self._score(pod, sid, name), sid)
            insort(ranked, item)
            return item

        for sid in [sid for sid in idx.by_state if sid not in seen]:
            look(sid, next(iter(idx.by_state[sid])))
        heap = list(ranked)  # sorted, hence already a heap
        emptied: dict[int, tuple[float, int]] = {}  # popped from this heap: no member left then
        names: list[str] = []
        bindings: list[Binding] = []
        nodes = self.cluster.nodes
        try:
            for _ in range(count):
                members = None
                while heap:
                    members = idx.by_state.get(heap[0][1])
                    if members:
                        break
                    item = heapq.heappop(heap)
                    emptied[item[1]] = item
                    members = None
                if members is None:
                    self._unbind(bindings)
                    return None
                name = min(members)
                bindings.append(self.cluster.bind(name, pod, fits=True))  # its state's fit count is positive
                names.append(name)
                self.touch((name,))
                sid = nodes[name].state_id
                if sid not in seen:
                    item = look(sid, name)
                    if item is not None:
                        heapq.heappush(heap, item)
                elif sid in emptied:
                    heapq.heappush(heap, emptied.pop(sid))
        finally:
            # states that stayed empty leave the ranking; if one comes back, it is looked at again
            gone = {sid for sid in emptied if not idx.by_state.get(sid)}
            if gone:
                ranked[:] = [item for item in ranked if item[1] not in gone]
                seen -= gone
        return names, bindings

    # --- placing one podset ------------------------------------------------------------------

    def place_podset(
        self,
        candidate: Candidate,
        ps: PodSetCandidate,
        opt: PodSetOption,
        count: int,
        excluded: frozenset[str],
        plan: Sequence[tuple[str, int]] | None = None,
        domain: tuple[str, ...] | None = None,
    ) -> _Attempt:
        """Bind ``count`` pods of ``ps`` in option ``opt``: on ``plan`` (node, pods) when given, else chosen here.

        All-or-nothing: on failure nothing stays bound and ``reason`` says why.
        """
        pod = ps.pod
        if plan is not None:
            return self._bind_plan(pod, plan, domain)
        memo = (pod.items, opt.group, excluded, count, self.epoch)
        known = self._failures.get(memo)
        if known is not None:
            return _Attempt(reason=known)
        # a gang first checks that enough pods fit in total (one pass over node states); a single
        # pod learns the same from the placement pass itself
        total = self.fit_total(pod, opt, excluded) if count > 1 or opt.topology is not None else count
        if total < count:
            reason = self._short(ps, opt, count, total, excluded)
            self._failures[memo] = reason
            return _Attempt(reason=reason)
        if opt.topology is not None and opt.level is not None:
            graph = self.graph(opt, excluded)
            result = graph.assign(count, opt.level, opt.required, pod, counts=self.domain_counts(pod, opt, excluded))
            if not result:
                reason = f"podset {ps.info.name}: {result.reason}"
                self._failures[memo] = reason
                return _Attempt(reason=reason)
            attempt = self._bind_plan(pod, result.nodes, None)
            if attempt.reason is None:
                leaves = [d for d, _ in result.domains]
                depth = opt.level + 1
                heads = {leaf[:depth] for leaf in leaves}
                if len(heads) == 1:
                    attempt.domain = next(iter(heads))
                elif opt.required:  # cannot happen: TAS keeps a required podset in one domain
                    self._unbind(attempt.bindings)
                    return _Attempt(reason=f"podset {ps.info.name}: spread over {len(heads)} {level_name(opt.topology.level_labels[opt.level])}s")
            return attempt
        got = self._place_best_fit(pod, count, self.index(opt, excluded))
        if got is None:
            total = self.fit_total(pod, opt, excluded)
            if total < count:
                reason = self._short(ps, opt, count, total, excluded)
            else:
                reason = f"podset {ps.info.name}: {count} pods of {describe_pod(pod)} do not all fit on the nodes of flavor {_flavor_text(opt)}"
            self._failures[memo] = reason
            return _Attempt(reason=reason)
        return _Attempt(tuple(got[0]), got[1])

    def _short(self, ps: PodSetCandidate, opt: PodSetOption, count: int, total: int, excluded: frozenset[str]) -> str:
        """``only 3 of 4 pods of 8 GPUs fit on the 12 nodes of flavor h100 it may use``."""
        nodes = len(self.allowed_nodes(opt, excluded))
        reason = (
            f"podset {ps.info.name}: only {total} of {count} pods of {describe_pod(ps.pod)} fit on the "
            f"{nodes} node{'s' if nodes != 1 else ''} of flavor {_flavor_text(opt)} it may use"
        )
        if excluded and self.fit_total(ps.pod, opt, frozenset()) >= count:  # (all its nodes)
            reason += " (some nodes are reserved for an older or higher-priority workload)"
        return reason

    def _bind_plan(self, pod: PodRequest, plan: Iterable[tuple[str, int]], domain: tuple[str, ...] | None) -> _Attempt:
        bindings: list[Binding] = []
        nodes: list[str] = []
        for name, n in plan:
            for _ in range(n):
                node = self.cluster.nodes[name]
                why = node.fit_failure(pod)
                if why is not None:
                    self._unbind(bindings)
                    return _Attempt(reason=f"pod of {describe_pod(pod)} does not fit on node {name}: {why}")
                bindings.append(self.cluster.bind(name, pod))
                nodes.append(name)
        self.touch(nodes)
        return _Attempt(tuple(nodes), bindings, domain)

    def _unbind(self, bindings: Sequence[Binding]) -> None:
        for b in reversed(bindings):
            self.cluster.unbind(b)
        self.touch(b.node for b in bindings)

    # --- whole workloads ---------------------------------------------------------------------------

    def shortfall(self, cq: str, request: Mapping[FlavorResource, int]) -> str | None:
        """`quota_shortfall` at the current usage. Between two admissions a cycle asks it for
        many workloads of the same few shapes, once the quota is used up mostly in vain."""
        usage = self.usage
        seen, memo = self._shortfalls
        if seen is not usage:
            memo = {}
            self._shortfalls = (usage, memo)
        key = (cq, *sorted(request.items()))
        if key in memo:
            return memo[key]
        why = memo[key] = quota_shortfall(self.snapshot, usage, cq, request)
        return why

    def quota_fits(self, cq: str, request: Mapping[FlavorResource, int]) -> tuple[bool, bool]:
        """(fits, borrows) of ``request`` on top of the current usage, as `QuotaTree.fits` says."""
        if not self.tree.admissible(self.tree.cluster_queue(cq), request, self.usage):  # type: ignore[arg-type]
            return False, False
        return True, self.borrows(cq, request)

    def borrows(self, cq: str, request: Mapping[FlavorResource, int]) -> bool:
        """Whether ``request``, known to fit ``cq``'s quota, fits only by borrowing (as `quota_fits`
        would say, without recomputing where it fits)."""
        tree = self.tree
        node = tree.cluster_queue(cq)
        return any(v > 0 and tree.borrowing_with(node, fr, v, self.usage) for fr, v in request.items())  # type: ignore[arg-type]

    def try_admit(self, candidate: Candidate, choice: Sequence[tuple[int, int]] | None = None) -> Placed | str:
        """Place every podset (first option in flavor order that fits quota and binds) and return the
        admission, still uncommitted (its pods are bound; `commit` charges quota, `undo` unbinds); or why not."""
        excluded = self.excluded(candidate)
        placed_nodes: list[tuple[str, ...]] = []
        domains: list[tuple[str, ...] | None] = []
        bindings: list[Binding] = []
        chosen: list[tuple[int, int]] = []
        request: dict[FlavorResource, int] = {}
        for i, ps in enumerate(candidate.podsets):
            options = ps.options if choice is None else [ps.options[choice[i][0]]]
            counts = self._counts(ps) if choice is None else [choice[i][1]]
            reasons: list[str] = []
            done = False
            for opt in options:
                for count in counts:
                    trial = dict(request)
                    for fr, v in opt.per_pod_quota.items():
                        trial[fr] = trial.get(fr, 0) + v * count
                    why = self.shortfall(candidate.cluster_queue, trial)
                    if why is not None:
                        reasons.append(why)
                        continue
                    if count < ps.count and self.fit_total(ps.pod, opt, excluded) < count:
                        continue
                    attempt = self.place_podset(candidate, ps, opt, count, excluded)
                    if attempt.reason is not None:
                        reasons.append(attempt.reason)
                        continue
                    placed_nodes.append(attempt.nodes)
                    domains.append(attempt.domain)
                    bindings.extend(attempt.bindings)
                    chosen.append((opt.index, count))
                    request = trial
                    done = True
                    if attempt.bindings and i + 1 < len(candidate.podsets):
                        self.epoch += 1  # the next podsets meet these pods: what was remembered is stale
                    break
                if done:
                    break
            if not done:
                if bindings:
                    self._unbind(bindings)
                    self.epoch += 1  # back to the state before: what this try saw is not it
                return reasons[0] if reasons else f"podset {ps.info.name}: no flavor fits"
        # `request` passed quota_shortfall as a whole with the last podset
        return Placed(candidate, chosen, placed_nodes, domains, bindings, request, self.borrows(candidate.cluster_queue, request))

    def admit_plan(
        self,
        candidate: Candidate,
        choice: Sequence[tuple[int, int]],
        plans: Sequence[Sequence[tuple[str, int]]],
        domains: Sequence[tuple[str, ...] | None],
    ) -> Placed | str:
        """Bind a given plan (per podset: (node, pods) pairs) after checking quota; uncommitted."""
        request: dict[FlavorResource, int] = {}
        for ps, (oi, count) in zip(candidate.podsets, choice):
            for fr, v in ps.options[oi].per_pod_quota.items():
                request[fr] = request.get(fr, 0) + v * count
        why = self.shortfall(candidate.cluster_queue, request)
        if why is not None:
            return why
        excluded = self.excluded(candidate)
        bindings: list[Binding] = []
        nodes_out: list[tuple[str, ...]] = []
        for ps, plan, domain in zip(candidate.podsets, plans, domains):
            if excluded and any(n in excluded for n, _ in plan):
                self._unbind(bindings)
                return "placement on reserved nodes"
            attempt = self._bind_plan(ps.pod, plan, domain)
            if attempt.reason is not None:
                self._unbind(bindings)
                return attempt.reason
            bindings.extend(attempt.bindings)
            nodes_out.append(attempt.nodes)
        return Placed(candidate, list(choice), nodes_out, list(domains), bindings, request,
                      self.borrows(candidate.cluster_queue, request), source="solver")

    def commit(self, placed: Placed) -> None:
        self.usage = self.usage.admit(placed.candidate.cluster_queue, placed.usage)  # type: ignore[attr-defined]
        self.epoch += 1

    def undo(self, placed: Placed, committed: bool = True) -> None:
        self._unbind(placed.bindings)
        if committed:
            self.usage = self.usage.release(placed.candidate.cluster_queue, placed.usage)  # type: ignore[attr-defined]
        self.epoch += 1

    @staticmethod
    def _counts(ps: PodSetCandidate) -> list[int]:
        if not ps.partial:
            return [ps.count]
        lo, hi = ps.lowest, ps.count
        out = [hi]
        for c in ((hi + lo) // 2, (hi + 3 * lo) // 4, lo):
            if c not in out and lo <= c < hi:
                out.append(c)
        return out


def greedy_cycle(
    prepared: Prepared,
    placer: Placer,
    candidates: Iterable[Candidate] | None = None,
    source: str = "greedy",
    skip: frozenset[str] = frozenset(),
) -> tuple[list[Placed], dict[str, str]]:
    """Admit in queue order whatever fits (quota, then pods bound best-fit), committing on ``placer``.

    StrictFIFO ClusterQueues stop at their first workload that does not fit. Returns the
    admissions in order and a reason for every candidate left out.
    """
    snapshot = placer.snapshot
    admitted: list[Placed] = []
    reasons: dict[str, str] = {}
    blocked: dict[str, str] = {}
    for cand in prepared.candidates if candidates is None else candidates:
        if cand.key in skip:
            continue
        cq = cand.cluster_queue
        if cq in blocked:
            reasons[cand.key] = blocked[cq]
            continue
        result = placer.try_admit(cand)
        if isinstance(result, str):
            reasons[cand.key] = result
            if snapshot.cluster_queues[cq].spec.queueing_strategy == "StrictFIFO":
                blocked[cq] = f"StrictFIFO: waiting behind {cand.key} at the head of ClusterQueue {cq}"
            continue
        result.source = source
        placer.commit(result)
        admitted.append(result)
    return admitted, reasons

"""The CP-SAT model of one `tessera` scheduling cycle (see docs/solver.md for the maths).

Node classes
    Nodes that are interchangeable for this cycle are collapsed into one class: same set of
    placement groups that may use them (flavor membership, selectors, affinity, taints), same
    topology domain (at the deepest level any podset asks for, and at the "whole domain"
    level), same free amount of every resource a candidate requests, same free-device vector,
    same room for pods, same reservation. A class of ``size`` nodes offers ``size`` times one
    node's room. Pods are decided per class (``n[w,p,o,c]``) and expanded to concrete nodes
    after solving (`scheduler.solver_expand`).

Soundness of the class capacity
    Aggregating identical bins over-approximates bin packing. The model therefore adds, per
    class, only *valid* inequalities (every physical placement satisfies them, so the greedy
    warm start always does): per resource, the sum over pods; per pod shape, ``size`` times
    what fits on one node (exact for one shape); whole-device demand against whole free
    devices; and "large item" cuts per resource — at most ``k`` pods larger than ``1/(k+1)``
    of a node's room fit on one node (k = 1, 2, 3), fractional GPU shares per device alike.
    What remains of the over-approximation (mixed shapes that pass every cut and still do not
    pack) is caught when the expansion binds the pods for real, and repaired there.

Quota
    Kueue's cohort tree, linearly: for every node of the tree on the way up from a
    ClusterQueue with candidates, and every FlavorResource, ``up[n] >= usage[n] - guaranteed[n]``
    and ``up[n] >= 0`` is what the node stores in its parent; a cohort's usage is the sum of
    its children's ``up``; the root's usage stays within its subtree quota, and a node with a
    ``borrowingLimit`` keeps ``up[n] <= subtreeQuota - guaranteed + borrowingLimit``. Every
    limit is an upper bound on a monotone quantity, so the relaxation ``up >= max(...)`` is
    exact. Limits already exceeded by the snapshot (over-admission) only forbid growth.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from operator import add, gt
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from quotas.fair_sharing import dominant_resource_share
from quotas.units import FlavorResource
from scheduler.cluster import DEVICE_MILLI, Cluster, NodeInfo, PodRequest, device_shape
from scheduler.fgd import FGDScorer, TaskDistribution
from scheduler.snapshot import Snapshot
from scheduler.solver_common import Candidate, PodSetOption, Prepared, aging_fraction
from scheduler.solver_place import Placed, Reservation

__all__ = ["ModelResult", "NodeClass", "Proposal", "SolveParams", "build_classes", "solve_cycle"]

HOST_LABEL = "kubernetes.io/hostname"
MAX_COEF = 1 << 52
"""Objective coefficients stay below this (CP-SAT is exact in int64; the LP in doubles)."""
COUNT_BONUS = 8
"""Secondary bonus per admitted workload: among cycles admitting the same GPU, more workloads."""
FIRST_SHARE = 0.5
"""Share of a model's budget for solving its whole objective at once (`_Builder.solve`)."""
PRIMARY_SHARE = 0.5
"""Share of what is left for proving the GPU-time part alone when the first solve did not prove."""

LinearTerms = list[tuple[cp_model.IntVar, int]]


# --- node classes ------------------------------------------------------------------------------


@dataclass(eq=False)
class NodeClass:
    """Nodes interchangeable for this cycle (see the module docstring)."""

    id: int
    nodes: list[str]
    rep: NodeInfo
    """One member (in the snapshot's state); every member has its devices and its pod fits."""
    groups: frozenset[int]
    domains: dict[str, tuple[str, ...] | None]
    pristine: bool
    """Has accelerator devices and every one of them is free."""
    reserved: Reservation | None = None
    free: dict[str, int] = field(default_factory=dict)
    """Free amount per resource, summed over the members."""
    max_free: dict[str, int] = field(default_factory=dict)
    """The largest free amount of one member, per resource."""
    pods_free: int | None = None
    """Room for pods summed over the members (None: no member limits pods)."""
    min_free: dict[str, int] = field(default_factory=dict)
    """The smallest free amount of one member, per resource (what a per-node pattern may use)."""
    min_pods: int | None = None

    @property
    def size(self) -> int:
        return len(self.nodes)


def class_depths(snapshot: Snapshot, prepared: Prepared) -> dict[str, int]:
    """Per topology, the depth at which classes are split: the deepest requested level, and at
    least the deepest level above hosts (so that whole racks can be kept whole)."""
    depths: dict[str, int] = {}
    for name, topo in snapshot.topologies.items():
        levels = topo.level_labels
        whole = len(levels) - 1
        if levels and levels[-1] == HOST_LABEL:
            whole -= 1
        depth = max(whole, prepared.level_requests.get(name, -1))
        if depth >= 0:
            depths[name] = depth
    return depths


def _node_groups(cluster: Cluster, prepared: Prepared) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], np.ndarray]:
    """The nodes some placement group may use, in the order the groups list them (ascending ids,
    each group's own order), each with its group ids and its position in the cluster's state
    array. Kept in the cluster's shared cache while the groups are the same node tuples under
    the same ids (options and their node tuples last across cycles; see `prepare`)."""
    memo: dict[tuple[tuple[int, int], ...], tuple[object, ...]] = cluster.shared.setdefault("class_node_groups", {})
    key = tuple((gid, id(names)) for gid, names in prepared.group_nodes.items())
    found = memo.get(key)
    if found is not None and all(a is b for a, b in zip(found[0], prepared.group_nodes.values())):  # type: ignore[call-overload]
        return found[1], found[2], found[3]  # type: ignore[return-value]
    node_groups: dict[str, list[int]] = defaultdict(list)
    for gid, names in prepared.group_nodes.items():  # ascending ids: each node's list is sorted
        for n in names:
            node_groups[n].append(gid)
    ordered = tuple(node_groups)
    gids = tuple(tuple(g) for g in node_groups.values())
    positions = cluster.positions(ordered)
    if len(memo) > 64:
        memo.clear()
    memo[key] = (tuple(prepared.group_nodes.values()), ordered, gids, positions)  # (keeps the tuples, hence their ids, alive)
    return ordered, gids, positions


def build_classes(
    cluster: Cluster,
    snapshot: Snapshot,
    prepared: Prepared,
    shapes: Iterable[PodRequest],
    reservations: Sequence[Reservation] = (),
) -> tuple[list[NodeClass], dict[str, int]]:
    """Collapse the nodes some candidate may use into classes (see the module docstring).

    Two nodes share a class when the same placement groups may use them, they lie in the same
    domains, their free-device vectors are equal and every candidate pod shape fits on them
    the same number of times; CPU and memory may differ (capacities are summed over members).
    """
    names, node_gids, positions = _node_groups(cluster, prepared)
    depths = class_depths(snapshot, prepared)
    topo_levels = tuple(sorted((name, tuple(snapshot.topologies[name].level_labels[: d + 1])) for name, d in depths.items()))
    # a node's domains depend on its labels only: kept from one cycle to the next
    domain_memo: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]] = cluster.shared.setdefault(
        ("class_domains", topo_levels), {}
    )
    reserved_by: dict[str, Reservation] = {}
    for r in reservations:
        for n in r.nodes:
            reserved_by.setdefault(n, r)
    shapes = list(dict.fromkeys(shapes))
    resources = sorted({r for pod in shapes for r in pod})
    accel = sorted(cluster.accelerators)
    nodes = cluster.nodes
    # What a node's class and capacities read of its state, once per state: the pods of every
    # shape it holds with its devices (as one number per distinct pair), whether its devices are
    # all free, and its free amounts. None for states that hold no candidate pod.
    sids = cluster.state_array[positions]
    unique, first = np.unique(sids, return_index=True)
    state_memo: dict[int, tuple[int, bool, tuple[int, ...]] | None] = {}
    tokens: dict[tuple[object, ...], int] = {}
    for sid, i in zip(unique.tolist(), first.tolist()):
        node = nodes[names[i]]
        signature = tuple(min(cluster.fit_count(node, pod), 1 << 20) for pod in shapes)
        if not any(signature):
            state_memo[sid] = None
            continue
        devices = tuple(tuple(sorted(node.devices.get(a, ()), reverse=True)) for a in accel)
        pristine = any(devices) and all(all(d == DEVICE_MILLI for d in devs) for devs in devices)
        token = tokens.setdefault((signature, devices), len(tokens))
        state_memo[sid] = (token, pristine, tuple(node.free(r) for r in resources))
    useful = [sid for sid, seen in state_memo.items() if seen is not None]
    classes: dict[tuple[object, ...], NodeClass] = {}
    node_class: dict[str, int] = {}
    ordered: list[NodeClass] = []
    member_frees: list[list[tuple[int, ...]]] = []  # per class: each member's free amounts
    member_rooms: list[list[int]] = []  # per class: each member's room for pods (when limited)
    at = np.flatnonzero(np.isin(sids, useful)).tolist() if len(useful) < len(state_memo) else range(len(names))
    sid_of = sids.tolist()
    for i in at:
        name, gids = names[i], node_gids[i]
        token, pristine, frees = state_memo[sid_of[i]]  # type: ignore[misc]
        domains = domain_memo.get(name)
        node = nodes[name]
        if domains is None:
            found = []
            for tname, labels in topo_levels:
                values = [node.labels.get(lb) for lb in labels]
                found.append((tname, None if any(v is None for v in values) else tuple(values)))
            domains = domain_memo[name] = tuple(found)  # type: ignore[arg-type]
        reservation = reserved_by.get(name)
        key = (gids, domains, token, None if reservation is None else reservation.key)
        cls = classes.get(key)
        if cls is None:
            cls = classes[key] = NodeClass(len(ordered), [], node, frozenset(gids), dict(domains), pristine, reservation)
            ordered.append(cls)
            member_frees.append([])
            member_rooms.append([])
        cls.nodes.append(name)
        member_frees[cls.id].append(frees)
        if node.max_pods is not None:
            member_rooms[cls.id].append(max(0, node.max_pods - node.pod_count))
        node_class[name] = cls.id
    # capacities summed per class once its members are known (one pass per column, not per node)
    for cls in ordered:
        for r, column in zip(resources, zip(*member_frees[cls.id])):
            cls.free[r] = sum(column)
            cls.max_free[r] = max(0, max(column))
            cls.min_free[r] = min(column)
        rooms = member_rooms[cls.id]
        if rooms:
            cls.pods_free = sum(rooms)
            cls.min_pods = min(rooms)
    return ordered, node_class


# --- per-node patterns -------------------------------------------------------------------------

MAX_PATTERNS = 128
_PATTERN_BUDGET = 6000

_FillState = tuple[tuple[int, ...], int, tuple[tuple[int, tuple[int, ...]], ...]]
"""A node being filled (`_NodeFit.initial`)."""


class _NodeFit:
    """Whether a count vector of pod shapes fits one node of a class, devices included.

    Devices are assigned exactly as the expansion will bind them (`Cluster.bind`): pods largest
    first, whole-device pods on fully free devices, shares best-fit; CPU, memory and pod room
    against the smallest amounts any member of the class has. Only the multiset of device
    amounts matters for what fits next, so whole-device pods just count fully free devices and
    shares take the smallest amount that holds them. Answers are memoised per count vector:
    pattern enumeration asks about the same vectors many times.
    """

    def __init__(self, cls: NodeClass, shapes: Sequence[PodRequest], accelerators: Iterable[str]) -> None:
        accel = sorted(accelerators)
        others = sorted({r for pod in shapes for r in pod if r not in accel})
        # per other resource: (what one pod of each shape needs, the room on the smallest member)
        self.columns = [([pod.get(r) for pod in shapes], cls.min_free.get(r, 0)) for r in others]
        self.pods_room = cls.min_pods
        order = sorted(range(len(shapes)), key=lambda i: (-sum(shapes[i].get(a) for a in accel), i))
        dshapes = [[device_shape(pod.get(a)) for a in accel] for pod in shapes]
        self.valid = all(d is not None for row in dshapes for d in row)
        # per accelerator: fully free devices, the other non-empty amounts (sorted), and per shape
        # in binding order (index, devices, milli each) for the shapes that use it
        self.plan: list[tuple[int, list[int], list[tuple[int, int, int]]]] = []
        if self.valid:
            for k, a in enumerate(accel):
                devs = cls.rep.devices.get(a, ())
                uses = [(i, *dshapes[i][k]) for i in order if dshapes[i][k] != (0, 0)]  # type: ignore[misc]
                full = sum(1 for d in devs if d == DEVICE_MILLI)
                self.plan.append((full, sorted(d for d in devs if 0 < d < DEVICE_MILLI), uses))
        self.order = order
        self._uses = [{i: (many, per) for i, many, per in uses} for _, _, uses in self.plan]
        self._needs = [tuple(need[i] for need, _ in self.columns) for i in range(len(shapes))]
        self._rooms = tuple(room for _, room in self.columns)
        self._devices_of = [[(k, *uses[i]) for k, uses in enumerate(self._uses) if i in uses] for i in range(len(shapes))]
        """Per shape: (accelerator position, devices, milli each) of the accelerators it uses."""
        # where whole-device pods all bind before any share (pods largest first: one accelerator),
        # one more whole-device pod fits iff the devices left fully free at the end can hold it
        self._whole_first = [
            all(per == DEVICE_MILLI for _, _, per in uses[: sum(1 for _, _, per in uses if per == DEVICE_MILLI)])
            for _, _, uses in self.plan
        ]
        self._memo: dict[tuple[int, ...], bool] = {}

    # --- incremental form, for shapes given in binding order (`_enumerate_patterns`) ---

    def initial(self) -> _FillState:
        """The state of an empty node: (sums per other resource, pods, per accelerator (fully
        free devices, the other non-empty amounts sorted))."""
        return (tuple(0 for _ in self.columns), 0, tuple((full, tuple(partial)) for full, partial, _ in self.plan))

    def add(self, state: _FillState, i: int) -> _FillState | None:
        """``state`` with one more pod of shape ``i`` bound after the others, or None if it does
        not fit. Binding after the others is binding in order when no later shape has pods yet."""
        sums, pods, devs = state
        if self.pods_room is not None and pods + 1 > self.pods_room:
            return None
        grown = tuple(map(add, sums, self._needs[i]))
        if any(map(gt, grown, self._rooms)):
            return None
        out = list(devs)
        for k, many, per in self._devices_of[i]:
            full, amounts = devs[k]
            if per == DEVICE_MILLI:
                full -= many
                if full < 0:
                    return None
            else:
                at = bisect_left(amounts, per)
                if at < len(amounts):
                    left = amounts[at] - per
                    amounts = amounts[:at] + amounts[at + 1 :]
                elif full > 0:
                    full -= 1
                    left = DEVICE_MILLI - per
                else:
                    return None
                if left:
                    at = bisect_left(amounts, left)
                    amounts = amounts[:at] + (left,) + amounts[at:]
            out[k] = (full, amounts)
        return (grown, pods + 1, tuple(out))

    def can_add(self, state: _FillState, counts: list[int], j: int) -> bool:
        """Whether ``counts`` (whose bound state is ``state``) plus one pod of shape ``j`` fits,
        as ``self(counts + e_j)`` says. Exact shortcuts where the answer follows from the end
        state: other resources and pod room always; a whole-device pod where whole-device pods
        bind first (shares after them take the same fully free devices whatever is left); a
        share when no later shape has pods on that accelerator (it binds last). Otherwise the
        vector is simulated."""
        sums, pods, devs = state
        if self.pods_room is not None and pods + 1 > self.pods_room:
            return False
        if any(map(gt, map(add, sums, self._needs[j]), self._rooms)):
            return False
        for k, many, per in self._devices_of[j]:
            full, amounts = devs[k]
            if per == DEVICE_MILLI and self._whole_first[k]:
                if full < many:
                    return False
            elif per < DEVICE_MILLI and not any(counts[i] for i in self._uses[k] if i > j):
                if full <= 0 and (not amounts or amounts[-1] < per):
                    return False
            else:
                counts[j] += 1
                got = self(counts)
                counts[j] -= 1
                return got
        return True

    def __call__(self, counts: Sequence[int]) -> bool:
        key = tuple(counts)
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = self._fits(key)
        return got

    def _fits(self, counts: tuple[int, ...]) -> bool:
        """The pods bound one by one in binding order (`add`)."""
        state: _FillState | None = self.initial()
        for i in self.order:
            for _ in range(counts[i]):
                state = self.add(state, i)  # type: ignore[arg-type]
                if state is None:
                    return False
        return True


def _aggregate_is_exact(cls: NodeClass, shapes: Sequence[PodRequest], accelerators: Iterable[str]) -> bool:
    """Whether the class's aggregate capacity is already exact for these shapes, so patterns are
    not needed: one accelerator, whole devices only, device counts forming a divisibility chain
    that divides each node's whole free devices (so first-fit decreasing packs perfectly), and no
    other resource or the pod count binding before the devices do (every shape asks for at most
    its share, per device, of what the smallest member has)."""
    accel = sorted(accelerators)
    used = [a for a in accel if any(p.get(a) for p in shapes)]
    if len(used) != 1:
        return False
    a = used[0]
    full = sum(1 for d in cls.rep.devices.get(a, ()) if d == DEVICE_MILLI)
    counts = []
    for p in shapes:
        amount = p.get(a)
        if amount <= 0 or amount % DEVICE_MILLI:
            return False
        counts.append(amount // DEVICE_MILLI)
    chain = sorted(set(counts))
    if any(big % small for small, big in zip(chain, chain[1:])) or full % chain[-1]:
        return False
    if cls.min_pods is not None and cls.min_pods < full:
        return False
    for p, c in zip(shapes, counts):
        for r, amount in p.items:
            if r != a and amount * full > cls.min_free.get(r, 0) * c:
                return False
    return True


_PATTERN_MEMO: dict[tuple[object, ...], list[tuple[int, ...]] | None] = {}


def node_patterns(cls: NodeClass, shapes: Sequence[PodRequest], caps: Sequence[int], accelerators: Iterable[str]) -> list[tuple[int, ...]] | None:
    """Every maximal way to fill one node of ``cls`` with pods of ``shapes`` (at most ``caps[i]``
    of shape i): count vectors that fit (see `_NodeFit`) and to which no further pod fits.
    None when there are too many to enumerate. Memoised on what the answer depends on."""
    accel = tuple(sorted(accelerators))
    others = sorted({r for pod in shapes for r in pod if r not in accel})
    key = (
        tuple(tuple(sorted(cls.rep.devices.get(a, ()))) for a in accel),
        tuple(cls.min_free.get(r, 0) for r in others),
        cls.min_pods,
        tuple(shapes),
        tuple(caps),
    )
    if key in _PATTERN_MEMO:
        return _PATTERN_MEMO[key]
    if len(_PATTERN_MEMO) > 20_000:
        _PATTERN_MEMO.clear()
    got = _PATTERN_MEMO[key] = _enumerate_patterns(cls, shapes, caps, accel)
    return got


def _enumerate_patterns(cls: NodeClass, shapes: Sequence[PodRequest], caps: Sequence[int], accelerators: Iterable[str]) -> list[tuple[int, ...]] | None:
    """Depth-first over the shapes in binding order (`_NodeFit`: largest first), most pods
    first; the node's state is carried down the path (`_NodeFit.add`), so a count is extended
    pod by pod instead of simulated again."""
    probe = _NodeFit(cls, shapes, accelerators)
    if not probe.valid:
        return None
    order = probe.order
    if order != list(range(len(shapes))):  # enumerate in binding order, answer in the given one
        got = _enumerate_patterns(cls, [shapes[i] for i in order], [caps[i] for i in order], accelerators)
        if got is None:
            return None
        back = [order.index(i) for i in range(len(shapes))]
        return [tuple(pat[back[i]] for i in range(len(shapes))) for pat in got]
    fits = probe
    n = len(shapes)
    out: list[tuple[int, ...]] = []
    visited = 0
    counts = [0] * n

    def rec(i: int, state: _FillState) -> bool:
        nonlocal visited
        visited += 1
        if visited > _PATTERN_BUDGET or len(out) > MAX_PATTERNS:
            return False
        if i == n:
            for j in range(n):
                if counts[j] < caps[j] and fits.can_add(state, counts, j):
                    return True  # not maximal
            if any(counts):
                out.append(tuple(counts))
            return True
        states = [state]
        while len(states) <= caps[i]:
            grown = fits.add(states[-1], i)
            if grown is None:
                break
            states.append(grown)
        most = len(states) - 1
        if i == n - 1:
            # below ``most`` pods of the last shape a leaf is not maximal (one more was just seen
            # to fit): only the visits are counted, as if each had been looked at
            counts[i] = most
            if not rec(n, states[most]):
                return False
            counts[i] = 0
            visited += most
            return visited <= _PATTERN_BUDGET
        for c in range(most, -1, -1):
            counts[i] = c
            if not rec(i + 1, states[c]):
                return False
        counts[i] = 0
        return True

    if not rec(0, fits.initial()) or len(out) > MAX_PATTERNS:
        return None
    return out


def extend_pattern(cls: NodeClass, shapes: Sequence[PodRequest], caps: Sequence[int], used: Sequence[int], accelerators: Iterable[str]) -> tuple[int, ...]:
    """``used`` (pods per shape on one node) filled up, in shape order, to a maximal pattern."""
    fits = _NodeFit(cls, shapes, accelerators)
    counts = list(used)
    changed = True
    while changed:
        changed = False
        for i in range(len(shapes)):
            if counts[i] < caps[i]:
                counts[i] += 1
                if fits(counts):
                    changed = True
                else:
                    counts[i] -= 1
    return tuple(counts)


# --- the model ---------------------------------------------------------------------------------


@dataclass
class SolveParams:
    time_limit: float
    workers: int = 1
    seed: int = 0
    deterministic: bool = True
    aging_threshold: float = 3600.0
    duration_of: object | None = None


@dataclass
class Proposal:
    """What the solver decided for one workload: per podset the option, pods, and pods per class."""

    candidate: Candidate
    choice: list[tuple[int, int]]
    classes: list[list[tuple[int, int]]]
    domains: list[tuple[str, ...] | None]


@dataclass
class ModelResult:
    status: str
    proposals: list[Proposal] = field(default_factory=list)
    objective: float | None = None
    bound: float | None = None
    wall: float = 0.0
    deterministic_time: float = 0.0
    variables: int = 0
    constraints: int = 0
    components: int = 0
    solved: int = 0
    """Components with a solution (the others' candidates are left to the backfill)."""
    patterns: dict[int, list[tuple[dict[PodRequest, int], int]]] = field(default_factory=dict)
    """Per class modelled with per-node patterns: the patterns in use and how many nodes each."""
    primary_proven: bool = False
    """The priority-weighted GPU-time part of the objective is proven at its optimum (the
    whole objective may not be: `status`)."""


@dataclass(eq=False)
class _Var:
    cand: int
    ps: int
    opt: int
    cls: NodeClass
    var: cp_model.IntVar
    ub: int
    pod: PodRequest


@dataclass(eq=False)
class _Opt:
    option: PodSetOption
    y: cp_model.IntVar
    k: cp_model.IntVar | None
    """Pods of this option (None: always ``count * y``)."""
    count: int
    vars: list[_Var] = field(default_factory=list)
    domain_vars: dict[tuple[str, ...], cp_model.IntVar] = field(default_factory=dict)
    used_domains: dict[tuple[str, ...], cp_model.IntVar] = field(default_factory=dict)

    def pods_terms(self) -> LinearTerms:
        return [(self.k, 1)] if self.k is not None else [(self.y, self.count)]


@dataclass(eq=False)
class _Cand:
    cand: Candidate
    x: cp_model.IntVar
    podsets: list[dict[int, _Opt]]


def _domain_of(cls: NodeClass, opt: PodSetOption) -> tuple[str, ...] | None:
    if opt.topology is None or opt.level is None:
        return None
    key = cls.domains.get(opt.topology.name)
    return None if key is None else key[: opt.level + 1]


class _Builder:
    """Builds and solves the model for one independent component of candidates and classes."""

    def __init__(
        self,
        snapshot: Snapshot,
        candidates: list[Candidate],
        options: dict[tuple[int, int], list[tuple[PodSetOption, list[tuple[NodeClass, int]]]]],
        classes: list[NodeClass],
        fits: dict[tuple[PodRequest, int], int],
        params: SolveParams,
        frag: Mapping[tuple[PodRequest, int], int],
        usage: object,
    ) -> None:
        self.snapshot = snapshot
        self.usage = usage
        self.candidates = candidates
        self.options = options
        self.classes = classes
        self.fits = fits
        self.params = params
        self.frag = frag
        self.model = cp_model.CpModel()
        self.cands: list[_Cand] = []
        self.secondary: dict[int, int] = defaultdict(int)
        self.primary: list[tuple[int, dict[int, int]]] = []
        self.vars: list[cp_model.IntVar] = []
        self.ubs: list[int] = []
        self.open_vars: dict[int, cp_model.IntVar] = {}
        self.domain_open: dict[tuple[str, tuple[str, ...]], cp_model.IntVar] = {}
        self.quota_up: dict[tuple[int, FlavorResource], tuple[cp_model.IntVar, int, int]] = {}
        self.cls_entries: dict[int, list[_Var]] = defaultdict(list)
        self.max_duration = 1
        self.strict = True
        unit = DEVICE_MILLI
        for c in candidates:
            for ps in c.podsets:
                unit = math.gcd(unit, ps.gpu_per_pod)
        self.gpu_unit = max(1, unit)
        """GPU milli per objective unit: the gcd of every candidate's per-pod GPU, so the GPU term is exact."""
        self.patterns: dict[int, tuple[list[PodRequest], list[int], list[tuple[int, ...]], list[cp_model.IntVar]]] = {}
        self.primary_items: list[tuple[int, int]] = []
        """The objective's priority-weighted GPU-time part (variable index, coefficient)."""
        self.objective_items: list[tuple[int, int]] = []

    # --- variables ---

    def _new_int(self, lb: int, ub: int, name: str) -> cp_model.IntVar:
        v = self.model.new_int_var(lb, ub, name)
        self.vars.append(v)
        self.ubs.append(ub)
        return v

    def _new_bool(self, name: str) -> cp_model.IntVar:
        v = self.model.new_bool_var(name)
        self.vars.append(v)
        self.ubs.append(1)
        return v

    def build(self) -> None:
        snapshot = self.snapshot
        drs_bonus = self._fairness_bonus()
        for ci, cand in enumerate(self.candidates):
            x = self._new_bool(f"x{ci}")
            entry = _Cand(cand, x, [])
            prim: dict[int, int] = defaultdict(int)
            self.secondary[x.index] += COUNT_BONUS  # among equal GPU, more workloads (CPU-only ones too)
            duration = self._duration_factor(cand)
            self.max_duration = max(self.max_duration, duration)
            for pi, ps in enumerate(cand.podsets):
                opts: dict[int, _Opt] = {}
                usable = self.options[(ci, pi)]
                single = len(usable) == 1
                unit = duration * (ps.gpu_per_pod // self.gpu_unit)
                for opt, members in usable:
                    y = x if single else self._new_bool(f"y{ci}_{pi}_{opt.index}")
                    k = None
                    if ps.partial:
                        k = self._new_int(0, ps.count, f"k{ci}_{pi}_{opt.index}")
                        self.model.add(k >= ps.lowest * y)
                        self.model.add(k <= ps.count * y)
                    o = _Opt(opt, y, k, ps.count)
                    if not single and opt.rank:
                        self.secondary[y.index] -= min(opt.rank, 4)
                    if unit:
                        for var, coef in o.pods_terms():
                            prim[var.index] += unit * coef
                    self._podset_vars(ci, pi, ps.count, o, members)
                    opts[opt.index] = o
                if not single:
                    self.model.add(cp_model.LinearExpr.sum([o.y for o in opts.values()]) == x)
                entry.podsets.append(opts)
            bonus = drs_bonus.get(cand.cluster_queue, 0)
            waited = snapshot.now - cand.queued_at
            bonus += int(8 * aging_fraction(waited, self.params.aging_threshold))
            bonus += 4 * (len(self.candidates) - ci) // len(self.candidates)  # FIFO among equals
            if bonus:
                self.secondary[x.index] += bonus
            self.primary.append((cand.priority, prim))
            self.cands.append(entry)
        self._strict_fifo()
        self._class_constraints()
        self._quota()

    def _duration_factor(self, cand: Candidate) -> int:
        """GPU-time: GPU-hours when the expected remaining duration is known (1..24), else 1."""
        fn = self.params.duration_of
        seconds = fn(cand.workload) if callable(fn) else getattr(cand.workload, "expected_duration", None)
        if not seconds or seconds <= 0:
            return 1
        return max(1, min(24, math.ceil(seconds / 3600)))

    def _fairness_bonus(self) -> dict[str, int]:
        """0..3 per ClusterQueue: lower dominant resource share, larger bonus."""
        cqs = sorted({c.cluster_queue for c in self.candidates})
        if len(cqs) < 2:
            return {}
        tree, usage = self.snapshot.tree, self.usage
        shares = {cq: dominant_resource_share(tree, usage, cq) for cq in cqs}
        ordered = sorted(cqs, key=lambda q: (shares[q], q))
        distinct = sorted({shares[q] for q in cqs})
        if len(distinct) < 2:
            return {}
        rank = {s: i for i, s in enumerate(distinct)}
        top = len(distinct) - 1
        return {q: 3 * (top - rank[shares[q]]) // top for q in ordered}

    def _podset_vars(self, ci: int, pi: int, count: int, o: _Opt, members: list[tuple[NodeClass, int]]) -> None:
        opt = o.option
        pod = self.candidates[ci].podsets[pi].pod
        by_domain: dict[tuple[str, ...] | None, list[_Var]] = defaultdict(list)
        for cls, fit in members:
            ub = min(count, cls.size * fit)
            v = self._new_int(0, ub, f"n{ci}_{pi}_{opt.index}_{cls.id}")
            var = _Var(ci, pi, opt.index, cls, v, ub, pod)
            o.vars.append(var)
            self.cls_entries[cls.id].append(var)
            cost = self.frag.get((pod, cls.id), 0)
            if cost:
                self.secondary[v.index] -= cost
            by_domain[_domain_of(cls, opt)].append(var)
        self.model.add(cp_model.LinearExpr.sum([v.var for v in o.vars]) == (o.k if o.k is not None else count * o.y))
        if opt.level is None:
            return
        if opt.required:
            for d, vs in sorted(by_domain.items(), key=lambda kv: kv[0] or ()):
                z = self._new_bool(f"z{ci}_{pi}_{opt.index}_{'/'.join(d or ())}")
                o.domain_vars[d] = z  # type: ignore[index]
                for v in vs:
                    self.model.add(v.var <= v.ub * z)
            self.model.add(cp_model.LinearExpr.sum(list(o.domain_vars.values())) == o.y)
        elif len(by_domain) > 1:
            for d, vs in sorted(by_domain.items(), key=lambda kv: kv[0] or ()):
                u = self._new_bool(f"u{ci}_{pi}_{opt.index}_{'/'.join(d or ())}")
                o.used_domains[d] = u  # type: ignore[index]
                for v in vs:
                    self.model.add(v.var <= v.ub * u)
                self.secondary[u.index] -= 2

    def _strict_fifo(self) -> None:
        last: dict[str, cp_model.IntVar] = {}
        for entry in self.cands:
            cq = entry.cand.cluster_queue
            if self.snapshot.cluster_queues[cq].spec.queueing_strategy != "StrictFIFO":
                continue
            if cq in last:
                self.model.add(entry.x <= last[cq])
            last[cq] = entry.x

    # --- capacity per class ---

    def _class_constraints(self) -> None:
        accel = self.snapshot.cluster.accelerators
        for cid, entries in self.cls_entries.items():
            cls = self.classes[cid]
            rep, size = cls.rep, cls.size
            shapes: dict[PodRequest, list[_Var]] = defaultdict(list)
            for e in entries:
                shapes[e.pod].append(e)
            resources = sorted({r for pod in shapes for r in pod})

            def add_cap(terms: list[tuple[_Var, int]], cap: int) -> None:
                terms = [(e, c) for e, c in terms if c > 0]
                if not terms or sum(e.ub * c for e, c in terms) <= cap:
                    return
                self.model.add(cp_model.LinearExpr.weighted_sum([e.var for e, _ in terms], [c for _, c in terms]) <= cap)

            for r in resources:
                add_cap([(e, e.pod[r]) for e in entries], cls.free.get(r, 0))
            if cls.pods_free is not None:
                add_cap([(e, 1) for e in entries], cls.pods_free)
            for pod, es in shapes.items():
                if len(es) > 1:
                    add_cap([(e, 1) for e in es], size * self.fits[(pod, cid)])
            for r in resources:
                devices = rep.devices.get(r) if r in accel else None
                if devices is not None:
                    whole = [(e, e.pod[r] // DEVICE_MILLI) for e in entries if e.pod[r] >= DEVICE_MILLI]
                    full = sum(1 for d in devices if d == DEVICE_MILLI)
                    add_cap(whole, size * full)
                    self._large_item_cuts(whole, full, size, add_cap)
                    self._dff_cuts(whole, full, size, add_cap)
                    frac = [e for e in entries if 0 < e.pod[r] < DEVICE_MILLI]
                    for k in (1, 2, 3):
                        big = [e for e in frac if e.pod[r] > DEVICE_MILLI // (k + 1)]
                        if len({e.pod for e in big}) < 2:
                            continue
                        smallest = min(e.pod[r] for e in big)
                        per_node = sum(min(k, d // smallest) for d in devices)
                        add_cap([(e, 1) for e in big], size * per_node)
                else:
                    self._large_item_cuts([(e, e.pod[r]) for e in entries], cls.max_free.get(r, 0), size, add_cap)
            patterned = len(shapes) >= 2 and self._patterns(cls, shapes)
            if cls.pristine and not patterned:
                self._open_nodes(cls, entries)

    @staticmethod
    def _dff_cuts(items: list[tuple[_Var, int]], room: int, size: int, add_cap: object) -> None:
        """Martello-Toth dual feasible functions on identical nodes of ``room``: for a threshold
        e <= room/2, an item above room - e leaves no space any item of at least e could use,
        so it counts as a whole node; items below e count nothing; the rest count themselves.
        Every packing satisfies sum f_e(item) <= room x nodes."""
        sizes = sorted({a for _, a in items if 0 < a <= room})
        if len(sizes) < 2:
            return
        for eps in sizes:
            if 2 * eps > room:
                break
            terms = []
            for e, a in items:
                value = room if a > room - eps else (a if a >= eps else 0)
                if value:
                    terms.append((e, value))
            if any(a > room - eps for _, a in items):  # otherwise the plain sum already says it
                add_cap(terms, room * size)  # type: ignore[operator]

    @staticmethod
    def _large_item_cuts(items: list[tuple[_Var, int]], room: int, size: int, add_cap: object) -> None:
        """At most k items larger than room/(k+1) fit on one node."""
        for k in (1, 2, 3):
            big = [(e, 1) for e, amount in items if amount * (k + 1) > room]
            if len({e.pod for e, _ in big}) >= 2:
                add_cap(big, k * size)  # type: ignore[operator]

    def _patterns(self, cls: NodeClass, shapes: Mapping[PodRequest, list[_Var]]) -> bool:
        """Exact per-node packing for a class with mixed whole-device shapes: ``m[c, pattern]`` nodes
        use each maximal pattern, and every shape's pods fit in the slots the patterns offer."""
        order = sorted(shapes, key=lambda p: (-sum(p.get(a) for a in self.snapshot.cluster.accelerators), -p.get("cpu"), p.items))
        if _aggregate_is_exact(cls, order, self.snapshot.cluster.accelerators):
            return False
        caps = [min(sum(e.ub for e in shapes[p]), self.fits[(p, cls.id)]) for p in order]
        patterns = node_patterns(cls, order, caps, self.snapshot.cluster.accelerators)
        if not patterns:
            return False
        mvars = [self._new_int(0, cls.size, f"m{cls.id}_{i}") for i in range(len(patterns))]
        self.model.add(cp_model.LinearExpr.sum(mvars) <= cls.size)
        for j, pod in enumerate(order):
            es = shapes[pod]
            slots = [(m, pat[j]) for m, pat in zip(mvars, patterns) if pat[j]]
            self.model.add(
                cp_model.LinearExpr.weighted_sum([e.var for e in es] + [m for m, _ in slots], [1] * len(es) + [-c for _, c in slots])
                <= 0
            )
        self.patterns[cls.id] = (order, caps, patterns, mvars)
        if cls.pristine:  # every node a pattern uses is a whole node opened
            for m in mvars:
                self.secondary[m.index] -= 2
            for tname, key in sorted(cls.domains.items()):
                if key is None or not self._domain_pristine(tname, key):
                    continue
                dv = self.domain_open.get((tname, key))
                if dv is None:
                    dv = self.domain_open[(tname, key)] = self._new_bool(f"dom{tname}/{'/'.join(key)}")
                    self.secondary[dv.index] -= 4
                self.model.add(cp_model.LinearExpr.sum(mvars) <= cls.size * dv)
        return True

    def _open_nodes(self, cls: NodeClass, entries: list[_Var]) -> None:
        """Whole nodes opened in a pristine class (cost 2 each) and whole domains opened (cost 4)."""
        accel = sorted(self.snapshot.cluster.accelerators)
        per_node = sum(len(cls.rep.devices.get(a, ())) for a in accel) * DEVICE_MILLI
        terms = [(e, sum(e.pod[a] for a in accel)) for e in entries]
        terms = [(e, c) for e, c in terms if c > 0]
        if not terms or per_node <= 0:
            return
        opened = self._new_int(0, cls.size, f"open{cls.id}")
        self.open_vars[cls.id] = opened
        self.model.add(
            cp_model.LinearExpr.weighted_sum([e.var for e, _ in terms], [c for _, c in terms]) <= per_node * opened
        )
        self.secondary[opened.index] -= 2
        for tname, key in sorted(cls.domains.items()):
            if key is None or not self._domain_pristine(tname, key):
                continue
            dv = self.domain_open.get((tname, key))
            if dv is None:
                dv = self.domain_open[(tname, key)] = self._new_bool(f"dom{tname}/{'/'.join(key)}")
                self.secondary[dv.index] -= 4
            self.model.add(opened <= cls.size * dv)

    _pristine_domains: dict[tuple[str, tuple[str, ...]], bool] | None = None

    def _domain_pristine(self, tname: str, key: tuple[str, ...]) -> bool:
        if self._pristine_domains is None:
            flags: dict[tuple[str, tuple[str, ...]], bool] = {}
            for cls in self.classes:
                for t, k in cls.domains.items():
                    if k is not None:
                        flags[(t, k)] = flags.get((t, k), True) and cls.pristine
            self._pristine_domains = flags
        return self._pristine_domains.get((tname, key), False)

    # --- quota ---

    def _quota(self) -> None:
        """The cohort tree's limits per FlavorResource (see the module docstring).

        A FlavorResource whose limits cannot bind whatever the candidates do is left out;
        the others are divided by the gcd of every amount involved (exact), which keeps
        memory in milli-bytes from blowing up the domains.
        """
        tree, usage = self.snapshot.tree, self.usage
        terms: dict[tuple[str, FlavorResource], LinearTerms] = defaultdict(list)
        for entry in self.cands:
            cq = entry.cand.cluster_queue
            for opts in entry.podsets:
                for o in opts.values():
                    for fr, per_pod in o.option.per_pod_quota.items():
                        for var, coef in o.pods_terms():
                            terms[(cq, fr)].append((var, per_pod * coef))
        by_fr: dict[FlavorResource, dict[int, LinearTerms]] = defaultdict(dict)
        for (cq, fr), ts in terms.items():
            by_fr[fr][tree.cluster_queue(cq).id] = ts
        for fr, own in sorted(by_fr.items()):
            order = sorted({n.id for nid in own for n in tree.path_to_root(nid)}, key=lambda i: (-tree.nodes[i].depth, i))
            # 1. can any limit bind? (max growth bottom-up)
            grow: dict[int, int] = defaultdict(int)
            amounts: list[int] = []
            binding = False
            for nid in order:
                node = tree.nodes[nid]
                for v, c in own.get(nid, ()):
                    grow[nid] += self.ubs_of(v) * c
                    amounts.append(c)
                base = usage.node(nid).get(fr, 0)
                g = node.guaranteed.get(fr, 0)
                base_up = max(0, base - g)
                up_grow = max(0, base + grow[nid] - g) - base_up
                amounts += [base, g]
                if node.parent is None:
                    cap = node.subtree_quota.get(fr, 0)
                    amounts.append(cap)
                    binding = binding or base + grow[nid] > cap
                else:
                    quota = node.quotas.get(fr)
                    if quota is not None and quota.borrowing_limit is not None:
                        limit = node.subtree_quota.get(fr, 0) - g + quota.borrowing_limit
                        amounts.append(limit)
                        binding = binding or base_up + up_grow > limit
                    grow[node.parent] += up_grow
            if not binding:
                continue
            unit = 0
            for a in amounts:
                unit = math.gcd(unit, a)
            unit = max(1, unit)
            # 2. the constraints, in units of `unit`
            touched: dict[int, LinearTerms] = {nid: [(v, c // unit) for v, c in ts] for nid, ts in own.items()}
            shift: dict[int, int] = defaultdict(int)
            for nid in order:
                node = tree.nodes[nid]
                ts = touched.get(nid, [])
                if not ts:
                    continue
                base = usage.node(nid).get(fr, 0) // unit
                g = node.guaranteed.get(fr, 0) // unit
                expr = cp_model.LinearExpr.weighted_sum([v for v, _ in ts], [c for _, c in ts])
                if node.parent is None:
                    cap = max(node.subtree_quota.get(fr, 0) // unit, base)
                    self.model.add(expr + shift[nid] <= cap - base)
                    continue
                base_up = max(0, base - g)
                top = base_up + sum(self.ubs_of(v) * c for v, c in ts)
                up = self._new_int(base_up, max(base_up, top), f"up{nid}_{fr[0]}_{fr[1]}")
                self.model.add(up - expr >= base - g + shift[nid])
                quota = node.quotas.get(fr)
                if quota is not None and quota.borrowing_limit is not None:
                    limit = (node.subtree_quota.get(fr, 0) - node.guaranteed.get(fr, 0) + quota.borrowing_limit) // unit
                    self.model.add(up <= max(limit, base_up))
                self.quota_up[(nid, fr)] = (up, base_up, unit)
                touched.setdefault(node.parent, []).append((up, 1))
                shift[node.parent] -= base_up

    def ubs_of(self, var: cp_model.IntVar) -> int:
        return self.ubs[var.index] if var.index < len(self.ubs) else 1

    # --- objective ---

    def objective(self) -> bool:
        """Set the objective; returns whether it is strictly lexicographic (see docs/solver.md)."""
        tiers: dict[int, list[dict[int, int]]] = defaultdict(list)
        for prio, prim in self.primary:
            tiers[prio].append(prim)
        accel = sorted(self.snapshot.cluster.accelerators)
        free_units = sum(
            sum(max(0, self.classes[cid].free.get(a, 0)) for a in accel) // self.gpu_unit
            for cid in self.cls_entries
        )
        levels = sorted(tiers)
        caps = []
        for p in levels:
            demand = sum(sum(c * self.ubs[i] for i, c in prim.items()) for prim in tiers[p])
            caps.append(min(demand, len(tiers[p]) + free_units * self.max_duration))

        def weigh(scale: int) -> tuple[dict[int, int], int]:
            weights, acc = {}, 0
            for p, cap in zip(levels, caps):
                weights[p] = acc + scale
                acc += weights[p] * cap
            return weights, acc

        scale = sum(abs(c) * self.ubs[i] for i, c in self.secondary.items()) + 1
        weights, acc = weigh(scale)
        strict = acc < MAX_COEF
        if not strict:  # too wide for exact lexicographic weights: coarsen the secondary terms
            factor = acc // MAX_COEF + 2
            self.secondary = defaultdict(int, {i: int(c / factor) for i, c in self.secondary.items() if int(c / factor)})
            scale = sum(abs(c) * self.ubs[i] for i, c in self.secondary.items()) + 1
            weights, acc = weigh(scale)
        while acc >= MAX_COEF and len(levels) > 1:  # then merge the lowest priorities
            merged = levels.pop(0)
            caps[1] += caps.pop(0)
            tiers[levels[0]].extend(tiers.pop(merged))
            weights, acc = weigh(scale)
        coefs: dict[int, int] = defaultdict(int)
        for p in levels:
            for prim in tiers[p]:
                for i, c in prim.items():
                    coefs[i] += weights[p] * c
        self.primary_items = [(i, c) for i, c in sorted(coefs.items()) if c]
        for i, c in self.secondary.items():
            coefs[i] += c
        self.objective_items = [(i, c) for i, c in sorted(coefs.items()) if c]
        self._maximize(self.objective_items)
        self.strict = strict
        return strict

    def _expr(self, items: Sequence[tuple[int, int]]) -> cp_model.LinearExpr:
        return cp_model.LinearExpr.weighted_sum([self.vars[i] for i, _ in items], [c for _, c in items])

    def _maximize(self, items: Sequence[tuple[int, int]]) -> None:
        self.model.maximize(self._expr(items))

    # --- hint ---

    def hint(self, placed: Mapping[str, Placed], node_class: Mapping[str, int], usage_after: object | None) -> None:
        values: dict[int, int] = {}
        for entry in self.cands:
            p = placed.get(entry.cand.key)
            values[entry.x.index] = 1 if p is not None else 0
            for pi, opts in enumerate(entry.podsets):
                chosen = p.choice[pi] if p is not None else None
                per_class: dict[int, int] = defaultdict(int)
                if p is not None:
                    for n in p.nodes[pi]:
                        per_class[node_class[n]] += 1
                for oi, o in opts.items():
                    on = chosen is not None and chosen[0] == oi
                    values[o.y.index] = 1 if on else 0
                    if o.k is not None:
                        values[o.k.index] = chosen[1] if on else 0  # type: ignore[index]
                    used: set[tuple[str, ...] | None] = set()
                    for v in o.vars:
                        n = per_class.get(v.cls.id, 0) if on else 0
                        values[v.var.index] = n
                        if n:
                            used.add(_domain_of(v.cls, o.option))
                    for d, z in o.domain_vars.items():
                        values[z.index] = 1 if on and d in used else 0
                    for d, u in o.used_domains.items():
                        values[u.index] = 1 if on and d in used else 0
        # aux: opened nodes and domains, quota storage
        accel = sorted(self.snapshot.cluster.accelerators)
        for cid, opened in self.open_vars.items():
            cls = self.classes[cid]
            per_node = sum(len(cls.rep.devices.get(a, ())) for a in accel) * DEVICE_MILLI
            demand = sum(values.get(e.var.index, 0) * sum(e.pod[a] for a in accel) for e in self.cls_entries[cid])
            values[opened.index] = min(cls.size, -(-demand // per_node))
        if self.patterns:
            on_node: dict[str, dict[PodRequest, int]] = defaultdict(lambda: defaultdict(int))
            for p in placed.values():
                for i, ps in enumerate(p.candidate.podsets):
                    for n in p.nodes[i]:
                        on_node[n][ps.pod] += 1
            accel = self.snapshot.cluster.accelerators
            for cid, (order, caps, patterns, mvars) in self.patterns.items():
                index = {pat: i for i, pat in enumerate(patterns)}
                counts = [0] * len(patterns)
                complete = True
                for n in self.classes[cid].nodes:
                    here = on_node.get(n)
                    if not here:
                        continue
                    used = [here.get(pod, 0) for pod in order]
                    if sum(used) != sum(here.values()):
                        complete = False  # a pod of another shape on this node: leave the hint partial
                        break
                    pat = extend_pattern(self.classes[cid], order, caps, used, accel)
                    if pat not in index:
                        complete = False
                        break
                    counts[index[pat]] += 1
                if complete:
                    for m, c in zip(mvars, counts):
                        values[m.index] = c
        for (tname, key), dv in self.domain_open.items():
            members = [cid for cid in self.open_vars if self.classes[cid].domains.get(tname) == key]
            used = any(values.get(self.open_vars[cid].index, 0) > 0 for cid in members) or any(
                values.get(m.index, 0) > 0
                for cid, (_, _, _, mvars) in self.patterns.items()
                if self.classes[cid].domains.get(tname) == key
                for m in mvars
            )
            values[dv.index] = int(used)
        if usage_after is not None:
            tree = self.snapshot.tree
            for (nid, fr), (up, base_up, unit) in self.quota_up.items():
                g = tree.nodes[nid].guaranteed.get(fr, 0)
                values[up.index] = max(base_up, (usage_after.node(nid).get(fr, 0) - g) // unit)  # type: ignore[attr-defined]
        # in bulk: add_hint costs about 7 us a variable, most of this method's time
        hint = self.model.proto.solution_hint
        hint.vars.extend([self.vars[i].index for i in values])
        hint.values.extend([int(v) for v in values.values()])

    # --- solve ---

    def solve(self, wall: float, deterministic: float) -> tuple[ModelResult, cp_model.CpSolver]:
        """Solve within ``wall`` seconds and, in deterministic mode, ``deterministic`` time units.

        The whole objective first, on part of the budget: most models are proven there. One
        that is not is solved lexicographically with the rest: its priority-weighted GPU-time
        alone (proven in a fraction of the time: the lower terms, fragmentation above all, are
        what makes proofs long), then the whole objective with that part held at its optimum.
        The primary terms outweigh the rest, so the second solve's optimum and bound are the
        whole model's; and where the first solve stopped at a packing with less GPU-time, the
        result now has the most there is (`ModelResult.primary_proven`)."""
        start = time.monotonic()
        first, solver = self._solve_once(wall * FIRST_SHARE, deterministic * FIRST_SHARE)
        if first.status not in ("FEASIBLE", "UNKNOWN") or not self.primary_items:
            first.primary_proven = first.status == "OPTIMAL"
            return first, solver
        spent = first.deterministic_time
        if first.status == "FEASIBLE":
            self._rehint(list(solver.response_proto.solution))
        self._maximize(self.primary_items)
        left_wall = wall - (time.monotonic() - start)
        primary, p_solver = self._solve_once(left_wall * PRIMARY_SHARE, (deterministic - spent) * PRIMARY_SHARE, extract=False)
        spent += primary.deterministic_time
        self._maximize(self.objective_items)
        if primary.status != "OPTIMAL":
            first.wall += primary.wall
            first.deterministic_time += primary.deterministic_time
            return first, solver
        self.model.add(self._expr(self.primary_items) >= round(p_solver.objective_value))
        self._rehint(list(p_solver.response_proto.solution))
        left_wall = wall - (time.monotonic() - start)
        second, s_solver = self._solve_once(left_wall, deterministic - spent)
        second.wall += first.wall + primary.wall
        second.deterministic_time += spent
        second.primary_proven = True
        if second.objective is None:  # no time left for even the hint: the first solution stands
            first.wall, first.deterministic_time, first.primary_proven = second.wall, second.deterministic_time, False
            return first, solver
        return second, s_solver

    def _rehint(self, values: Sequence[int]) -> None:
        """A complete hint: ``values`` of every variable, in model order."""
        self.model.clear_hints()
        hint = self.model.proto.solution_hint
        hint.vars.extend(range(len(values)))
        hint.values.extend(values)

    def _solve_once(self, wall: float, deterministic: float, extract: bool = True) -> tuple[ModelResult, cp_model.CpSolver]:
        solver = cp_model.CpSolver()
        p = solver.parameters
        p.random_seed = self.params.seed & 0x7FFFFFFF
        p.log_search_progress = False
        p.max_time_in_seconds = max(0.0, wall)
        # Measured on these models (docs/solver.md): presolve, probing and symmetry detection cost
        # more than the search itself, which proves optimality within tens of milliseconds.
        p.cp_model_presolve = False
        p.cp_model_probing_level = 0
        p.symmetry_level = 0
        p.cut_level = 0  # the LP's cuts (MIR, CG, ...) cost more time than the bounds they buy here
        if self.params.deterministic:
            # one search thread per model (components run side by side, see `solve_cycle`)
            p.num_workers = 1
            p.max_deterministic_time = max(0.0, deterministic)
        else:
            p.num_workers = max(1, self.params.workers)
        status = solver.solve(self.model)
        name = solver.status_name(status)
        result = ModelResult(name, wall=solver.wall_time, deterministic_time=solver.deterministic_time)
        proto = self.model.proto
        result.variables = len(proto.variables)
        result.constraints = len(proto.constraints)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            result.objective = solver.objective_value
            result.bound = solver.best_objective_bound
            if extract:
                result.proposals = self._extract(solver)
                result.patterns = self.extract_patterns(solver)
        return result, solver

    def _extract(self, solver: cp_model.CpSolver) -> list[Proposal]:
        out = []
        for entry in self.cands:
            if not solver.value(entry.x):
                continue
            choice: list[tuple[int, int]] = []
            classes: list[list[tuple[int, int]]] = []
            domains: list[tuple[str, ...] | None] = []
            for opts in entry.podsets:
                on = next(o for o in opts.values() if solver.value(o.y))
                pods = solver.value(on.k) if on.k is not None else on.count
                choice.append((on.option.index, pods))
                classes.append([(v.cls.id, solver.value(v.var)) for v in on.vars if solver.value(v.var) > 0])
                dom = next((d for d, z in on.domain_vars.items() if solver.value(z)), None)
                domains.append(dom)
            out.append(Proposal(entry.cand, choice, classes, domains))
        return out

    def extract_patterns(self, solver: cp_model.CpSolver) -> dict[int, list[tuple[dict[PodRequest, int], int]]]:
        """Per patterned class: (pods per shape on one node, number of nodes) of every pattern in use."""
        out: dict[int, list[tuple[dict[PodRequest, int], int]]] = {}
        for cid, (order, _, patterns, mvars) in self.patterns.items():
            used = [(dict(zip(order, pat)), solver.value(m)) for pat, m in zip(patterns, mvars)]
            out[cid] = [(p, m) for p, m in used if m > 0]
        return out


# --- entry point -------------------------------------------------------------------------------

MAX_CLASSES = 24
"""Node classes offered to one podset option (the tightest that fit, and the warm start's)."""
MIN_CLASSES = 6
CAPACITY_FACTOR = 3
"""Shortlist classes until they hold this many times the podset's pods."""
MAX_DOMAINS = 6
"""Topology domains offered to a podset with a required level."""


def _tightness(c: NodeClass) -> tuple[bool, int, int]:
    """Partly used classes before whole ones, least free accelerator first."""
    return (c.pristine, sum(sum(d) for d in c.rep.devices.values()), c.id)


def _shortlist(
    ordered: list[tuple[NodeClass, int]], count: int, lowest: int, opt: PodSetOption, hinted: set[int]
) -> list[tuple[NodeClass, int]]:
    """The classes a podset option may use in the model (``ordered`` tightest first): those the
    warm start used, then the tightest until CAPACITY_FACTOR x count pods fit, at least
    MIN_CLASSES and at most MAX_CLASSES. Required topology: whole domains, the warm start's
    and the best-fitting ones (least room that still holds the podset), at most MAX_DOMAINS."""
    if not opt.required:
        keep = [m for m in ordered if m[0].id in hinted]
        room = sum(min(count, c.size * f) for c, f in keep)
        for c, f in ordered:
            if len(keep) >= MAX_CLASSES or (room >= CAPACITY_FACTOR * count and len(keep) >= MIN_CLASSES):
                break
            if c.id not in hinted:
                keep.append((c, f))
                room += min(count, c.size * f)
        return keep
    by_domain: dict[tuple[str, ...], list[tuple[NodeClass, int]]] = defaultdict(list)
    for c, f in ordered:
        d = _domain_of(c, opt)
        if d is not None:
            by_domain[d].append((c, f))
    rooms = {d: sum(c.size * f for c, f in ms) for d, ms in by_domain.items()}
    fitting = [d for d in by_domain if rooms[d] >= lowest]
    fitting.sort(key=lambda d: (not any(c.id in hinted for c, _ in by_domain[d]), rooms[d], d))
    out: list[tuple[NodeClass, int]] = []
    for d in fitting[:MAX_DOMAINS]:
        out.extend(by_domain[d])
    return out


def _frag_costs(
    snapshot: Snapshot, candidates: Sequence[Candidate], pairs: Iterable[tuple[PodRequest, NodeClass]], budget: int = 20_000
) -> dict[tuple[PodRequest, int], int]:
    """FGD's fragmentation growth of one pod on one node of each class, as small integer costs.

    The target workload is the pending demand (pods of the candidates). Positive: the pod
    breaks capacity others could use; negative: it fills a fragment. Scaled to -2..8 per pod.
    """
    pairs = list(pairs)
    if not pairs or len(pairs) > budget:
        return {}
    accel = snapshot.cluster.accelerators
    gpu = next(iter(sorted(accel)), None)
    if gpu is None:
        return {}
    tasks = [ps.pod for c in candidates for ps in c.podsets for _ in range(min(ps.count, 64))]
    if not any(t.get(gpu) for t in tasks):
        return {}
    dist = TaskDistribution.from_requests(tasks, popularity_threshold=0.95, resources=sorted({r for t in tasks for r in t}))
    scorer = FGDScorer(dist, gpu_resource=gpu)
    memo: dict[tuple[PodRequest, int], int] = {}
    out: dict[tuple[PodRequest, int], int] = {}
    for pod, cls in pairs:
        key = (pod, cls.rep.state_id)
        cost = memo.get(key)
        if cost is None:
            shape = device_shape(pod.get(gpu))
            if shape is None:
                cost = 0
            else:
                growth, _ = scorer.increase(cls.rep, pod)
                cost = 0 if not math.isfinite(growth) else max(-2, min(8, round(growth / 500)))
            memo[key] = cost
        if cost:
            out[(pod, cls.id)] = cost
    return out


def solve_cycle(
    snapshot: Snapshot,
    prepared: Prepared,
    candidates: list[Candidate],
    cluster: Cluster,
    usage: object,
    reservations: Sequence[Reservation],
    hint: Mapping[str, Placed],
    usage_after_hint: object | None,
    params: SolveParams,
    deadline: float,
    min_wall: float = 0.0,
) -> tuple[ModelResult, list[NodeClass], dict[str, int], dict[str, str]]:
    """Build the model(s) for ``candidates`` on ``cluster`` and ``usage`` (the snapshot's, plus any
    admissions fixed before the model) and solve them until ``deadline`` (time.monotonic()), or for
    ``min_wall`` seconds of wall time at least.

    Returns the solver result (proposals per admitted workload), the classes, the node-to-class
    map, and reasons for candidates the model could not take at all.
    """
    shapes = [ps.pod for c in candidates for ps in c.podsets]
    classes, node_class = build_classes(cluster, snapshot, prepared, shapes, reservations)
    tree = snapshot.tree
    fits: dict[tuple[PodRequest, int], int] = {}
    memo_fit: dict[tuple[PodRequest, int], int] = {}

    def fit(pod: PodRequest, cls: NodeClass) -> int:
        key = (pod, cls.id)
        got = fits.get(key)
        if got is None:
            skey = (pod, cls.rep.state_id)
            got = memo_fit.get(skey)
            if got is None:
                got = memo_fit[skey] = min(cls.rep.fit_count(pod), 1 << 20)
            fits[key] = got
        return got

    hinted: dict[tuple[str, int], set[int]] = defaultdict(set)
    for key, placed in hint.items():
        for i, ps in enumerate(placed.candidate.podsets):
            hinted[(key, ps.index)].update(node_class[n] for n in placed.nodes[i] if n in node_class)
    group_classes: dict[int, list[NodeClass]] = defaultdict(list)
    for cls in classes:
        for g in cls.groups:
            group_classes[g].append(cls)
    by_shape: dict[tuple[PodRequest, int], tuple[list[tuple[NodeClass, int]], int, list[tuple[NodeClass, int]]]] = {}

    def fitting(pod: PodRequest, group: int) -> tuple[list[tuple[NodeClass, int]], int, list[tuple[NodeClass, int]]]:
        """(classes of the group where the pod fits, tightest first; their room; the reserved ones)."""
        key = (pod, group)
        got = by_shape.get(key)
        if got is None:
            members = [(c, f) for c in group_classes.get(group, ()) for f in (fit(pod, c),) if f > 0]
            members.sort(key=lambda m: _tightness(m[0]))
            got = by_shape[key] = (members, sum(c.size * f for c, f in members), [m for m in members if m[0].reserved is not None])
        return got

    options: dict[tuple[int, int], list[tuple[PodSetOption, list[tuple[NodeClass, int]]]]] = {}
    kept: list[Candidate] = []
    dropped: dict[str, str] = {}
    strict_stop: set[str] = set()
    for cand in candidates:
        cq = cand.cluster_queue
        strict = snapshot.cluster_queues[cq].spec.queueing_strategy == "StrictFIFO"
        if cq in strict_stop:
            dropped[cand.key] = f"StrictFIFO: waiting behind an earlier workload of ClusterQueue {cq}"
            continue
        node = tree.cluster_queue(cq)
        per_ps: list[list[tuple[PodSetOption, list[tuple[NodeClass, int]]]]] = []
        ok = True
        for ps in cand.podsets:
            usable = []
            for opt in ps.options:
                if any(v * ps.lowest > tree.available(node, fr, usage) for fr, v in opt.per_pod_quota.items()):
                    continue
                ordered, room, reserved = fitting(ps.pod, opt.group)
                if reserved:
                    blocked = {c.id for c, _ in reserved if c.reserved is not None and c.reserved.blocks(cand)}
                    if blocked:
                        ordered = [m for m in ordered if m[0].id not in blocked]
                        room -= sum(c.size * f for c, f in reserved if c.id in blocked)
                if room < ps.lowest:
                    continue
                members = _shortlist(ordered, ps.count, ps.lowest, opt, hinted.get((cand.key, ps.index), set()))
                if not members:
                    continue
                usable.append((opt, members))
            if not usable:
                ok = False
                break
            per_ps.append(usable)
        if not ok:
            dropped[cand.key] = "does not fit in free capacity or quota on its own"
            if strict:
                strict_stop.add(cq)
            continue
        for pi, usable in enumerate(per_ps):
            options[(len(kept), pi)] = usable
        kept.append(cand)
    if not kept:
        return ModelResult("EMPTY"), classes, node_class, dropped

    # components: candidates sharing a class or a quota tree root
    parent = list(range(len(kept)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, object], int] = {}
    for ci, cand in enumerate(kept):
        keys: list[tuple[str, object]] = [("root", tree.root(cand.cluster_queue).id)]
        for pi in range(len(cand.podsets)):
            for _, members in options[(ci, pi)]:
                keys.extend(("class", c.id) for c, _ in members)
        for k in keys:
            if k in owner:
                a, b = find(ci), find(owner[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[k] = ci
    comps: dict[int, list[int]] = defaultdict(list)
    for ci in range(len(kept)):
        comps[find(ci)].append(ci)

    pairs = {(ps.pod, c.id): (ps.pod, c) for ci, cand in enumerate(kept) for pi, ps in enumerate(cand.podsets) for _, m in options[(ci, pi)] for c, _ in m}
    frag = _frag_costs(snapshot, kept, pairs.values())

    builders: list[_Builder] = []
    for root in sorted(comps):
        idx = comps[root]
        sub = [kept[i] for i in idx]
        sub_opts = {(j, pi): options[(i, pi)] for j, i in enumerate(idx) for pi in range(len(kept[i].podsets))}
        b = _Builder(snapshot, sub, sub_opts, classes, fits, params, frag, usage)
        b.build()
        b.objective()
        b.hint(hint, node_class, usage_after_hint)
        builders.append(b)

    total = ModelResult("OPTIMAL", components=len(builders), objective=0.0, bound=0.0, primary_proven=True)
    rank = {"OPTIMAL": 0, "FEASIBLE": 1, "UNKNOWN": 2, "INFEASIBLE": 3, "MODEL_INVALID": 4}
    weights = [max(1, len(b.vars)) for b in builders]
    all_weight = sum(weights)
    threads = max(1, params.workers) if params.deterministic else 1
    deadline = max(deadline, time.monotonic() + min_wall)
    if threads > 1 and len(builders) > 1:
        # independent components side by side, each single-threaded and deterministic
        from concurrent.futures import ThreadPoolExecutor

        left = max(0.0, deadline - time.monotonic())
        with ThreadPoolExecutor(max_workers=min(threads, len(builders))) as pool:
            results = list(
                pool.map(
                    lambda bw: bw[0].solve(left * min(1.0, threads * bw[1] / all_weight), params.time_limit * bw[1] / all_weight)[0],
                    zip(builders, weights),
                )
            )
    else:
        results = []
        remaining_weight = all_weight
        for b, w in zip(builders, weights):
            left = deadline - time.monotonic()
            share = max(0.0, left) * w / remaining_weight
            remaining_weight -= w
            results.append(b.solve(share, params.time_limit * w / all_weight)[0])
    for res in results:
        total.wall += res.wall
        total.deterministic_time += res.deterministic_time
        total.variables += res.variables
        total.constraints += res.constraints
        if rank.get(res.status, 5) > rank.get(total.status, 5):
            total.status = res.status
        if res.objective is not None:
            total.solved += 1
        total.primary_proven = total.primary_proven and res.primary_proven
        if res.objective is None:
            total.objective = total.bound = None
        elif total.objective is not None:
            total.objective += res.objective
            total.bound = (total.bound or 0.0) + (res.bound or 0.0)
        total.proposals.extend(res.proposals)
        total.patterns.update(res.patterns)
    return total, classes, node_class, dropped

"""Per-pod placement: the `tessera` policy's node for every pod, honoured through a scheduling gate.

A policy that places pods (`Policy.places_pods`: `tessera`) names a node for every pod it
admits (`Admission.podsets[i].nodes`). kube-scheduler would otherwise put the pods anywhere
in the flavor and the packing would be lost, so the operator pins them, as Kueue's
topology-aware scheduling does:

1. **Recorded.** The admission record keeps the plan, as pods per node, in
   `status.admission.podSetAssignments[i].nodes` (`[{name, count}]`), written with the rest of
   the admission under the Workload's resourceVersion. The Kueue-style policies record none.
2. **Gated.** The release that un-suspends the object also adds the scheduling gate
   `tessera.dev/placement` to the pod template of every planned podset (beside the flavor's
   node selector), in the same patch: every pod the object's controller creates is gated from
   birth, whether or not a webhook runs, and a crash between the two writes is repaired by the
   next pass (the release is recomputed from the record).
3. **Ungated.** Each pass, for every admitted object with a plan, the gated pods are matched to
   the plan (`match_pods`): oldest first, each to a planned node that still has room (the
   plan's count minus the pods already ungated onto it), never more pods ungated in all than
   the admitted count. The pod is patched once: the gate removed and `nodeSelector`
   `kubernetes.io/hostname: <node>` added (with the flavor's labels it lacks), which
   Kubernetes allows on a gated pod (1.27+). Nothing is remembered in memory: which pods are
   ungated onto which node is read from the pods themselves (their hostname selector, else
   the node they are bound to), so the matching is idempotent and restart-safe.
4. **Fallback.** A gated pod for which no planned node can take it (the node is gone or
   cordoned, or there is no plan) is ungated with the flavor's node selector only, and the
   controller posts a `PlacementFallback` Warning Event on the object.
5. **Held again** (eviction, preemption): the gate is taken off the template with the rest of
   what admission changed; the object's controller deletes its pods, gated ones included.

`reserve_plans` makes the next cycles see the plan: pods planned but not bound yet occupy
their planned nodes in the snapshot, so a later admission is not planned onto the same room.
It keeps its reservations from one cycle to the next (`PlanMemo`) and binds again only what
changed: planned pods can stay unbound over many cycles (pods not created yet; in the
benchmark's emulator, pods never created), and binding all of them in every cycle grew with the
number of admitted workloads.

Pure: plain dicts in, patches out; no API calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scheduler.cluster import Binding, Cluster
from scheduler.snapshot import Admitted, PodSetPlacement

PLACEMENT_GATE = "tessera.dev/placement"
HOSTNAME_LABEL = "kubernetes.io/hostname"
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


# --- the plan ---------------------------------------------------------------------------------


def plan_counts(nodes: Iterable[str]) -> dict[str, int]:
    """Pods per node, nodes in the order they first appear (one node name per pod in)."""
    return dict(Counter(nodes))


def expand(plan: Mapping[str, int]) -> tuple[str, ...]:
    """One node name per pod (the inverse of `plan_counts`)."""
    return tuple(node for node, count in plan.items() for _ in range(max(int(count), 0)))


def record_nodes(nodes: Sequence[str]) -> list[dict[str, Any]]:
    """The plan as the admission record keeps it: `[{name, count}]`, nodes in first-appearance order."""
    return [{"name": node, "count": count} for node, count in plan_counts(nodes).items()]


def node_plans(admission: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Pods per node per podset name, from an admission record (`status.admission`); podsets without a
    plan are left out."""
    out: dict[str, dict[str, int]] = {}
    for assignment in admission.get("podSetAssignments") or []:
        plan: dict[str, int] = {}
        for entry in assignment.get("nodes") or []:
            if isinstance(entry, Mapping) and entry.get("name") and int(entry.get("count") or 0) > 0:
                plan[str(entry["name"])] = plan.get(str(entry["name"]), 0) + int(entry["count"])
        if plan:
            out[str(assignment.get("name") or "main")] = plan
    return out


def planned(podsets: Sequence[PodSetPlacement], places_pods: bool) -> tuple[PodSetPlacement, ...]:
    """The podsets with their nodes kept as a plan only where the policy places pods and every pod
    has a node; elsewhere `nodes` is emptied (Kueue's TAS nodes, for example, are not a plan)."""
    return tuple(p if places_pods and p.count > 0 and len(p.nodes) == p.count else replace(p, nodes=())
                 for p in podsets)


# --- the gate ---------------------------------------------------------------------------------


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def gates_of(pod_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(g) for g in pod_spec.get("schedulingGates") or [] if isinstance(g, Mapping)]


def has_gate(pod_spec: Mapping[str, Any]) -> bool:
    """Whether a pod spec (or a pod template's spec) carries the placement gate."""
    return any(g.get("name") == PLACEMENT_GATE for g in gates_of(pod_spec))


def template_gates(pod_spec: Mapping[str, Any], gated: bool) -> list[dict[str, Any]]:
    """The template's scheduling gates with the placement gate added (`gated`) or removed; others kept."""
    others = [g for g in gates_of(pod_spec) if g.get("name") != PLACEMENT_GATE]
    return [*others, {"name": PLACEMENT_GATE}] if gated else others


def is_gated(pod: Mapping[str, Any]) -> bool:
    return has_gate(_spec(pod))


# --- matching pods to the plan ----------------------------------------------------------------


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def _name(pod: Mapping[str, Any]) -> str:
    return str(_meta(pod).get("name") or "")


def _age(pod: Mapping[str, Any]) -> tuple[str, str]:
    return str(_meta(pod).get("creationTimestamp") or ""), _name(pod)


def _live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in TERMINAL_POD_PHASES


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool(_meta(pod).get("deletionTimestamp"))


def pinned_node(pod: Mapping[str, Any]) -> str | None:
    """The node a pod is tied to: its `kubernetes.io/hostname` selector, else the node it is bound to."""
    spec = _spec(pod)
    return (spec.get("nodeSelector") or {}).get(HOSTNAME_LABEL) or spec.get("nodeName") or None


def assign(plan: Mapping[str, int], count: int, placed: Iterable[str | None],
           waiting: Sequence[tuple[str, str | None]],
           available: Collection[str] | None = None) -> list[tuple[str, str | None]]:
    """Which waiting pods to let go now, and onto which planned node (None: no planned node can take it).

    `placed`: the node of every pod already let go (None when it is tied to none yet); `waiting`:
    (pod name, the node it is already tied to or None), oldest first. At most `count` pods in all
    are let go, and at most `plan[node]` onto each node; a node outside `available` (when given)
    takes none. Nodes are filled in the plan's order. Pure and deterministic: called again with
    the pods' new state it lets no pod go twice and no node overflow.
    """
    placed = list(placed)
    occupied = Counter(node for node in placed if node is not None)
    free = {node: max(int(n) - occupied.get(node, 0), 0) for node, n in plan.items()
            if available is None or node in available}
    room = max(count - len(placed), 0)
    out: list[tuple[str, str | None]] = []
    for name, fixed in waiting[:room]:
        if fixed is not None:  # already tied to a node (its own selector): only that node can count it
            node = fixed if free.get(fixed, 0) > 0 else None
        else:
            node = next((n for n, left in free.items() if left > 0), None)
        if node is not None:
            free[node] -= 1
        out.append((name, node))
    return out


@dataclass(frozen=True)
class PodPlacement:
    """One gated pod to ungate: onto `node`, or (None) with the flavor's node selector only."""

    pod: str
    node: str | None
    patch: dict[str, Any]


def ungate_patch(pod: Mapping[str, Any], node: str | None, selector: Mapping[str, str],
                 gate: str = PLACEMENT_GATE) -> dict[str, Any]:
    """A merge patch removing `gate` and adding the node selector keys the pod lacks (the
    hostname of `node`, the flavor's and domain's labels). Keys it has are never changed: a
    gated pod's selector keys may only be added."""
    spec = _spec(pod)
    gates = [g for g in gates_of(spec) if g.get("name") != gate]
    current = spec.get("nodeSelector") or {}
    wanted = {**selector, **({HOSTNAME_LABEL: node} if node is not None else {})}
    additions = {k: v for k, v in wanted.items() if k not in current}
    spec_patch: dict[str, Any] = {"schedulingGates": gates or None}
    if additions:
        spec_patch["nodeSelector"] = additions
    return {"spec": spec_patch}


def match_pods(pods: Sequence[Mapping[str, Any]], plan: Mapping[str, int], count: int,
               selector: Mapping[str, str] | None = None,
               available: Collection[str] | None = None) -> list[PodPlacement]:
    """The pods of one podset to ungate now (see the module docstring), oldest first.

    `pods`: the podset's pods (finished ones are ignored); `plan`: pods per node from the
    admission record; `count`: the admitted count; `selector`: the flavor's and topology
    domain's labels; `available`: the nodes that exist and are schedulable (None: all).
    """
    live = [p for p in pods if _live(p)]
    placed = [pinned_node(p) for p in live if not is_gated(p)]
    waiting = sorted((p for p in live if is_gated(p) and not _terminating(p)), key=_age)
    by_name = {_name(p): p for p in waiting}
    fixed = [(_name(p), (_spec(p).get("nodeSelector") or {}).get(HOSTNAME_LABEL)) for p in waiting]
    return [PodPlacement(name, node, ungate_patch(by_name[name], node, selector or {}))
            for name, node in assign(plan, count, placed, fixed, available)]


# --- the plan in the snapshot -------------------------------------------------------------------


@dataclass(frozen=True)
class _Reservation:
    """The planned pods `reserve_plans` bound for one admitted workload, and what they were derived from."""

    key: str
    admitted: Admitted
    """The snapshot's entry (without the reservation) they were computed for."""
    record: Mapping[str, Any]
    """The admission record (`status.admission`) the plan was read from (compared by identity)."""
    plans: Mapping[str, Mapping[str, int]]
    signature: tuple[Any, ...]
    """Everything the reservation depends on besides the cluster it was bound on (`_signature`)."""
    added: tuple[tuple[int, tuple[str, ...]], ...]
    """(podset index, the nodes reserved for its unbound pods), for the podsets that got any."""
    bindings: tuple[Binding, ...]
    """What was bound, in binding order (undone in reverse when the memo rewinds)."""
    output: Admitted
    """`admitted` with the reserved nodes and bindings appended (itself when nothing was reserved)."""


def _signature(admitted: Admitted, plans: Mapping[str, Mapping[str, int]]) -> tuple[Any, ...]:
    """What a workload's reservation depends on: its podsets' counts and bound nodes, their pods' requests and
    the plan. Equal signatures on the same cluster state bind the same pods onto the same devices."""
    return (tuple((p.name, p.count, p.nodes) for p in admitted.podsets),
            tuple((p.name, p.requests) for p in admitted.workload.podsets),
            tuple((name, tuple(plan.items())) for name, plan in plans.items()))


def _reserve(cluster: Cluster, admitted: Admitted, plans: Mapping[str, Mapping[str, int]]
             ) -> tuple[tuple[tuple[int, tuple[str, ...]], ...], tuple[Binding, ...]]:
    """Bind, on `cluster`, the planned pods of one workload that are not bound yet onto their planned nodes,
    where they still fit; returns (podset index, nodes) per podset that got any, and the bindings."""
    added_all: list[tuple[int, tuple[str, ...]]] = []
    bindings: list[Binding] = []
    for index, ps in enumerate(admitted.podsets):
        plan = plans.get(ps.name)
        remaining = ps.count - len(ps.nodes)
        info = next((p for p in admitted.workload.podsets if p.name == ps.name), None)
        if not plan or remaining <= 0 or info is None:
            continue
        bound = Counter(ps.nodes)
        added: list[str] = []
        for node, n in plan.items():
            want = min(n - bound.get(node, 0), remaining - len(added))
            if want <= 0 or node not in cluster:
                continue
            for _ in range(want):
                if not cluster.nodes[node].fits(info.requests):
                    break
                bindings.append(cluster.bind(node, info.requests))
                added.append(node)
        if added:
            added_all.append((index, tuple(added)))
    return tuple(added_all), tuple(bindings)


def _with_reservation(admitted: Admitted, added: tuple[tuple[int, tuple[str, ...]], ...],
                      bindings: tuple[Binding, ...]) -> Admitted:
    if not bindings:
        return admitted
    podsets = list(admitted.podsets)
    for index, nodes in added:
        podsets[index] = replace(podsets[index], nodes=podsets[index].nodes + nodes)
    return replace(admitted, podsets=tuple(podsets), bindings=admitted.bindings + bindings)


class PlanMemo:
    """What `reserve_plans` keeps from one cycle to the next: the reservations bound on a cluster of its own.

    The reservations are bound in the snapshot's order of admitted workloads, on top of the pod-bound cluster
    (`Cycle.base`). While that base stays, the next cycle keeps the longest prefix of reservations whose
    workloads come in the same order with the same signature, undoes the rest in reverse order (`Cluster.unbind`
    gives back exactly the devices taken, so the cluster is then exactly as after that prefix) and binds from
    there: the result is the one binding every reservation from scratch gives (`tests/test_operator_placement.py`
    checks it on random histories). A new admission usually comes last in that order, and a workload whose pods
    are all bound reserves nothing, so a cycle binds little more than what changed. Another base (a Node changed,
    a pod bound or gone) starts over. Derived from the snapshots only: losing it costs one full binding."""

    def __init__(self) -> None:
        self.base: object | None = None
        """`Cycle.base` of the cluster the reservations are bound on."""
        self.cluster: Cluster | None = None
        """A copy of that cluster with every reservation bound, in order (never handed out: snapshots get copies)."""
        self.reservations: list[_Reservation] = []
        self.rebound = 0
        """Reservations computed (bound anew) by the last cycle, the rest being kept: for tests and profiling."""


def reserve_plans(cycle: Any, memo: PlanMemo | None = None) -> int:
    """Bind, in `cycle.snapshot`, the planned pods of admitted workloads that are not bound yet onto their
    planned nodes (where they still fit), so that the policy does not plan other work onto the same room;
    returns how many pods are reserved. The snapshot gets a cluster of its own (its cluster is never changed
    in place); `Admitted.podsets[i].nodes` and `bindings` include the reserved pods, so preempting such a
    workload frees its planned nodes too. Evicted workloads reserve nothing.

    With `memo` (kept by the caller from one cycle to the next), only what changed since the last cycle is
    bound again (see `PlanMemo`); without, everything is bound from scratch. The result is the same."""
    from admission.snapshot import detached_copy  # (admission.snapshot imports this module through admission.jobs)

    snapshot = cycle.snapshot
    if memo is None:
        memo = PlanMemo()
    base = getattr(cycle, "base", None)
    if base is None or memo.base is not base or memo.cluster is None:
        memo.base, memo.cluster, memo.reservations = base, None, []
    old = memo.reservations
    known = {r.key: r for r in old}
    planned: list[tuple[int, Admitted, Mapping[str, Any], Mapping[str, Mapping[str, int]]]] = []
    for index, a in enumerate(snapshot.admitted):
        if a.evicted:
            continue
        entry = cycle.entries.get(a.key)
        record = ((entry.workload.get("status") or {}).get("admission") or {}) if entry is not None else {}
        if not record:
            continue
        before = known.get(a.key)
        plans = before.plans if before is not None and before.record is record else node_plans(record)
        if plans:
            planned.append((index, a, record, plans))

    keep = 0
    kept: list[_Reservation] = []
    for (_, a, record, plans), r in zip(planned, old):
        if r.key != a.key:
            break
        if r.admitted is not a or r.record is not record:
            if r.signature != _signature(a, plans):
                break
            r = replace(r, admitted=a, record=record, output=_with_reservation(a, r.added, r.bindings))
        kept.append(r)
        keep += 1

    cluster = memo.cluster
    if cluster is None:
        cluster = memo.cluster = detached_copy(snapshot.cluster)
    for r in reversed(old[keep:]):
        for binding in reversed(r.bindings):
            cluster.unbind(binding)
    for _, a, record, plans in planned[keep:]:
        added, bindings = _reserve(cluster, a, plans)
        kept.append(_Reservation(a.key, a, record, plans, _signature(a, plans), added, bindings,
                                 _with_reservation(a, added, bindings)))
    memo.reservations = kept
    memo.rebound = len(planned) - keep

    reserved = sum(len(r.bindings) for r in kept)
    if reserved:
        outputs = {index: r.output for (index, _, _, _), r in zip(planned, kept)}
        snapshot.cluster = detached_copy(cluster)
        snapshot.admitted = [outputs.get(index, a) for index, a in enumerate(snapshot.admitted)]
    return reserved

"""From the solver's pods-per-class to pods-per-node, bound for real (and repaired where that fails).

The model decides how many pods of each podset go on each node class. Here those counts
become nodes: per class, pods are taken largest first (first-fit decreasing over the class's
identical nodes), each pod on the first node of the class it fits on, so a class fills node by
node instead of spreading. Every pod is bound on the `Placer`'s working cluster; quota is
charged in priority order with `QuotaTree.fits`.

A proposal whose pods do not all bind (the class aggregate over-approximated a mix of shapes)
or whose quota does not fit is undone and retried: first with the solver's flavors and counts
wherever it fits (within its domain rules), then like the greedy cycle would. What still fails
is left pending.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from scheduler.cluster import Binding, PodRequest
from scheduler.solver_model import NodeClass, Proposal
from scheduler.solver_place import Placed, Placer

__all__ = ["expand"]


def _size_key(pod: PodRequest, accelerators: frozenset[str]) -> tuple[int, ...]:
    gpu = sum(pod.get(a) for a in accelerators)
    return (-gpu, -pod.get("cpu"), -pod.get("memory"), -sum(v for _, v in pod.items))


def expand(
    proposals: Sequence[Proposal],
    classes: Sequence[NodeClass],
    placer: Placer,
    patterns: Mapping[int, list[tuple[dict[PodRequest, int], int]]] | None = None,
) -> tuple[list[Placed], dict[str, str]]:
    """Bind the proposals on ``placer`` (committing quota); returns the admissions and reasons for failures.

    Classes the model packed with per-node ``patterns`` get their nodes assigned to patterns
    (exact); the others are filled first-fit decreasing."""
    patterns = patterns or {}
    ordered = sorted(proposals, key=lambda p: (-p.candidate.priority, p.candidate.order))
    failures: dict[str, str] = {}
    accepted: list[Proposal] = []
    borrows: dict[str, bool] = {}
    # quota first, in priority order (the model keeps it; this is the ground truth)
    for prop in ordered:
        request: dict = {}
        for ps, (oi, pods) in zip(prop.candidate.podsets, prop.choice):
            for fr, v in ps.options[oi].per_pod_quota.items():
                request[fr] = request.get(fr, 0) + v * pods
        fits, borrows[prop.candidate.key] = placer.quota_fits(prop.candidate.cluster_queue, request)
        if not fits:
            failures[prop.candidate.key] = "quota"
            continue
        placer.usage = placer.usage.admit(prop.candidate.cluster_queue, request)  # type: ignore[attr-defined]
        accepted.append(prop)
    # then pods, largest first per class
    accel = placer.cluster.accelerators
    work: dict[int, list[tuple[tuple[int, ...], int, int, int, PodRequest]]] = defaultdict(list)
    for pi_, prop in enumerate(accepted):
        for ps_i, per_class in enumerate(prop.classes):
            pod = prop.candidate.podsets[ps_i].pod
            for cid, n in per_class:
                work[cid].append((_size_key(pod, accel), pi_, ps_i, n, pod))
    bound: dict[int, list[Binding]] = defaultdict(list)
    nodes_of: dict[tuple[int, int], list[str]] = defaultdict(list)
    broken: set[int] = set()
    cluster = placer.cluster
    for cid in sorted(work):
        members = classes[cid].nodes
        items = sorted(work[cid], key=lambda t: (t[0], t[1], t[2]))
        if cid in patterns:
            # node j of the class takes the j-th pattern slot set, shapes fill their slots in node order
            slots: dict[PodRequest, list[str]] = defaultdict(list)
            j = 0
            for pattern, count in patterns[cid]:
                for _ in range(count):
                    if j >= len(members):
                        break
                    for shape, k in pattern.items():
                        slots[shape].extend([members[j]] * k)
                    j += 1
            taken: dict[PodRequest, int] = defaultdict(int)
            for _, pi_, ps_i, n, pod in items:
                for _ in range(n):
                    i = taken[pod]
                    if pi_ in broken or i >= len(slots[pod]) or cluster.nodes[slots[pod][i]].fit_failure(pod) is not None:
                        broken.add(pi_)
                        break
                    taken[pod] = i + 1
                    bound[pi_].append(cluster.bind(slots[pod][i], pod))
                    nodes_of[(pi_, ps_i)].append(slots[pod][i])
            continue
        start: dict[PodRequest, int] = {}
        for _, pi_, ps_i, n, pod in items:
            if pi_ in broken:
                continue
            i = start.get(pod, 0)
            for _ in range(n):
                while i < len(members) and cluster.nodes[members[i]].fit_failure(pod) is not None:
                    i += 1
                if i >= len(members):
                    broken.add(pi_)
                    break
                bound[pi_].append(cluster.bind(members[i], pod))
                nodes_of[(pi_, ps_i)].append(members[i])
            start[pod] = i
    placer.touch(n for cid in work for n in classes[cid].nodes)
    admitted: list[Placed] = []
    retry: list[Proposal] = []
    for pi_, prop in enumerate(accepted):
        request: dict = {}
        for ps, (oi, pods) in zip(prop.candidate.podsets, prop.choice):
            for fr, v in ps.options[oi].per_pod_quota.items():
                request[fr] = request.get(fr, 0) + v * pods
        if pi_ in broken:
            for b in reversed(bound[pi_]):
                cluster.unbind(b)
            placer.touch(b.node for b in bound[pi_])
            placer.usage = placer.usage.release(prop.candidate.cluster_queue, request)  # type: ignore[attr-defined]
            retry.append(prop)
            continue
        nodes = [tuple(nodes_of[(pi_, i)]) for i in range(len(prop.choice))]
        domains = [_domain(prop, i, nodes[i], placer) for i in range(len(prop.choice))]
        admitted.append(
            Placed(prop.candidate, list(prop.choice), nodes, domains, bound[pi_], request, borrows[prop.candidate.key], "solver")
        )
    placer.epoch += 1
    for prop in retry:
        got = placer.try_admit(prop.candidate, prop.choice)
        if isinstance(got, str):
            got = placer.try_admit(prop.candidate)
        if isinstance(got, str):
            failures[prop.candidate.key] = got
            continue
        got.source = "repair"
        placer.commit(got)
        admitted.append(got)
    for prop in ordered:
        if failures.get(prop.candidate.key) == "quota":
            got = placer.try_admit(prop.candidate)
            if isinstance(got, str):
                failures[prop.candidate.key] = got
            else:
                got.source = "repair"
                placer.commit(got)
                admitted.append(got)
                del failures[prop.candidate.key]
    return admitted, failures


def _domain(prop: Proposal, i: int, nodes: Sequence[str], placer: Placer) -> tuple[str, ...] | None:
    opt = prop.candidate.podsets[i].options[prop.choice[i][0]]
    if opt.topology is None or opt.level is None or not nodes:
        return None
    labels = opt.topology.level_labels[: opt.level + 1]
    keys = {tuple(placer.cluster.nodes[n].labels.get(lb, "") for lb in labels) for n in nodes}
    return next(iter(keys)) if len(keys) == 1 else None

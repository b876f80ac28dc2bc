"""From the operator's caches to the scheduling core's `Snapshot`: the same input the simulator builds.

* the tessera.dev kinds are parsed with the foundation's `quotas.bundle.parse_object` (an
  object that does not parse is left out and reported once in the log);
* the cluster is `Cluster.from_nodes` over the Nodes, with every live pod (bound, not
  finished) bound to its node, Tessera's and everyone else's: their requests occupy
  capacity;
* a Workload holding quota (`QuotaReserved` with `status.admission`) is `Admitted`, charging
  what its admission record says, with its pods' nodes per podset (`Integration.pod_owner`);
  one that is being evicted stays admitted with ``evicted=True`` until its Job's pods are gone
  (as in Kueue);
* every other active, unfinished Workload whose owner (a Job, a JobSet, ... see
  `admission.integrations`) exists is `Pending`, queued since its creation or its last
  requeue, not before its requeue backoff;
* a Workload whose owner's kind this operator does not watch (its integration is disabled, or
  its CRD not installed) is never pending, but keeps charging the quota it holds: its pods run.

Pure with respect to the API: reads only the `ClusterState`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from admission import integrations
from admission import workloads as wl
from admission.integrations import Integration
from admission.state import ClusterState, Key, pod_is_live
from quotas.api import (
    ClusterQueue,
    Cohort,
    Configuration,
    LocalQueue,
    ResourceFlavor,
    Topology,
    Workload,
    WorkloadPriorityClass,
)
from quotas.bundle import parse_object, without_nulls
from quotas.kube import Node, PodSpec, pod_requests
from quotas.loader import RawObject, Source
from scheduler.cluster import Binding, Cluster, PodRequest
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot, build_snapshot
from scheduler.workload import WorkloadInfo, resolve_priority

logger = logging.getLogger("tessera.snapshot")

KIND_OF_PLURAL = {
    "resourceflavors": ResourceFlavor,
    "clusterqueues": ClusterQueue,
    "localqueues": LocalQueue,
    "cohorts": Cohort,
    "workloadpriorityclasses": WorkloadPriorityClass,
    "topologies": Topology,
}


@dataclass
class Entry:
    """One Workload of the cycle with the object it queues, its Job (None once it is gone or not watched)."""

    key: str
    workload: dict[str, Any]
    job: dict[str, Any] | None
    info: WorkloadInfo | None = None
    integration: Integration | None = None
    owner: str | None = None
    """The name of the owning object (in the Workload's namespace)."""


@dataclass
class Cycle:
    """A snapshot and what it was built from: entries by workload key (`namespace/name`)."""

    snapshot: Snapshot
    entries: dict[str, Entry]
    flavors: dict[str, ResourceFlavor]
    topologies: dict[str, Topology]
    skipped: dict[str, str] = field(default_factory=dict)
    """Workload key -> why it could not be read (bad podset template, ...)."""


class _Unparsable:
    def __init__(self, reason: str) -> None:
        self.reason = reason


_reported: set[tuple[str, Key, str]] = set()


def _report(plural: str, key: Key, rv: str, message: str) -> None:
    if (plural, key, rv) not in _reported:
        if len(_reported) > 10_000:
            _reported.clear()
        _reported.add((plural, key, rv))
        logger.warning("ignoring %s %s: %s", plural, "/".join(k for k in key if k), message)


def parse_tessera(raw: Mapping[str, Any]) -> BaseModel | _Unparsable:
    obj, problems = parse_object(RawObject(Source("api", 0), without_nulls(dict(raw))))
    if obj is None:
        return _Unparsable("; ".join(str(p) for p in problems) or "cannot be parsed")
    return obj


def objects_of(state: ClusterState, plural: str) -> list[Any]:
    """Parsed objects of one tessera.dev resource, leaving out (and logging) those that do not parse."""
    out = []
    for key, raw in state.items(plural):
        obj = state.parsed(plural, key, parse_tessera)
        if isinstance(obj, _Unparsable):
            _report(plural, key, str((raw.get("metadata") or {}).get("resourceVersion")), obj.reason)
            continue
        out.append(obj)
    return out


def _parse_node(raw: Mapping[str, Any]) -> Node | _Unparsable:
    try:
        return Node.model_validate(without_nulls(dict(raw)))
    except ValidationError as exc:
        return _Unparsable(str(exc).splitlines()[0])


def _parse_pod_request(raw: Mapping[str, Any]) -> PodRequest | _Unparsable:
    try:
        spec = PodSpec.model_validate(without_nulls(dict(raw.get("spec") or {})))
        return PodRequest.from_quantities(pod_requests(spec))
    except (ValidationError, ValueError) as exc:
        return _Unparsable(str(exc).splitlines()[0])


def _parse_workload(raw: Mapping[str, Any]) -> WorkloadInfo | _Unparsable:
    try:
        workload = Workload.model_validate(without_nulls(dict(raw)))
        return WorkloadInfo.from_workload(workload, {})
    except (ValidationError, ValueError) as exc:
        return _Unparsable(str(exc).splitlines()[0])


def build_cycle(state: ClusterState, now: float, config: Configuration | None = None, seed: int = 0) -> Cycle:
    """The snapshot of `state` at `now` (see the module docstring)."""
    flavors = {f.name: f for f in objects_of(state, "resourceflavors")}
    topologies = {t.name: t for t in objects_of(state, "topologies")}
    classes = {c.name: c for c in objects_of(state, "workloadpriorityclasses")}

    nodes = []
    for key, raw in state.items("nodes"):
        node = state.parsed("nodes", key, _parse_node)
        if isinstance(node, _Unparsable):
            _report("nodes", key, "", node.reason)
            continue
        nodes.append(node)
    cluster = Cluster.from_nodes(nodes)

    entries: dict[str, Entry] = {}
    skipped: dict[str, str] = {}
    admitted_raw: dict[str, tuple[Entry, dict[str, Any]]] = {}
    by_owner: dict[tuple[str, str, str], str] = {}
    pending: list[Pending] = []
    for (namespace, name), raw in state.items("workloads"):
        key = f"{namespace}/{name}"
        found = integrations.owner_of(raw)
        integration, owner = (found[0], found[1]) if found else (None, None)
        job = state.get(integration.plural, namespace, owner) if integration and owner else None
        entry = Entry(key=key, workload=raw, job=job, integration=integration, owner=owner)
        entries[key] = entry
        if integration and owner:
            by_owner[(integration.plural, namespace, owner)] = key
        unwatched = integration is not None and integration.plural not in state.synced
        if wl.is_finished(raw) or (job is None and not (unwatched and wl.holds_quota(raw))):
            continue
        info = state.parsed("workloads", (namespace, name), _parse_workload)
        if isinstance(info, _Unparsable):
            skipped[key] = info.reason
            _report("workloads", (namespace, name), str((raw.get("metadata") or {}).get("resourceVersion")), info.reason)
            continue
        info = replace(info, priority=resolve_priority((raw.get("spec") or {}).get("priority"),
                                                       info.priority_class, classes))
        entry.info = info
        if wl.holds_quota(raw):
            admitted_raw[key] = (entry, raw["status"]["admission"])
        elif wl.is_active(raw):
            count, not_before = wl.requeue_state(raw)
            pending.append(Pending(workload=info, queued_at=wl.queued_at(raw) or now, requeue_count=count,
                                   not_before=not_before))

    # Live pods occupy their nodes; those of admitted workloads are remembered as their bindings.
    bound: dict[str, list[tuple[str, Binding]]] = {}
    for (namespace, pod_name), pod in state.items("pods"):
        if not pod_is_live(pod):
            continue
        node = pod["spec"]["nodeName"]
        if node not in cluster:
            continue
        request = state.parsed("pods", (namespace, pod_name), _parse_pod_request)
        if isinstance(request, _Unparsable):
            continue
        try:
            binding = cluster.bind(node, request)
        except ValueError as exc:
            logger.debug("pod %s/%s does not fit its node in the model: %s", namespace, pod_name, exc)
            continue
        for integration in integrations.ALL:
            found = integration.pod_owner(pod)
            owner = by_owner.get((integration.plural, namespace, found[0])) if found else None
            if found is not None and owner is not None and owner in admitted_raw:
                bound.setdefault(owner, []).append((found[1], binding))
                break

    admitted: list[Admitted] = []
    for key, (entry, admission) in admitted_raw.items():
        assert entry.info is not None
        owned = bound.get(key, [])
        bindings = [b for _, b in owned]
        placements = wl.placements_of(admission)
        if len(placements) == 1:  # one podset (a Job): every pod of the object belongs to it
            placements[0] = replace(placements[0], nodes=tuple(b.node for b in bindings))
        else:
            placements = [replace(p, nodes=tuple(b.node for podset, b in owned if podset == p.name))
                          for p in placements]
        admitted.append(Admitted(
            workload=replace(entry.info, cluster_queue=str(admission.get("clusterQueue") or "")),
            cluster_queue=str(admission.get("clusterQueue") or ""),
            admitted_at=wl.reserved_at(entry.workload) or now,
            usage=wl.usage_of(admission),
            podsets=tuple(placements),
            bindings=tuple(bindings),
            evicted=wl.is_evicting(entry.workload),
        ))

    snapshot = build_snapshot(
        now=now,
        cluster=cluster,
        cluster_queues=objects_of(state, "clusterqueues"),
        cohorts=objects_of(state, "cohorts"),
        flavors=flavors.values(),
        local_queues=objects_of(state, "localqueues"),
        admitted=admitted,
        pending=pending,
        topologies=topologies.values(),
        config=config,
        seed=seed,
    )
    return Cycle(snapshot=snapshot, entries=entries, flavors=flavors, topologies=topologies, skipped=skipped)


def placement_for(cycle: Cycle, key: str) -> PodSetPlacement | None:
    """The first podset placement of an admitted workload (Jobs have one podset)."""
    for admitted in cycle.snapshot.admitted:
        if admitted.key == key and admitted.podsets:
            return admitted.podsets[0]
    return None

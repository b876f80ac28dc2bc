"""Workload objects: built from Jobs, and their status (conditions and admission) as plain data.

Pure functions, no API calls: what the operator writes is decided here and tested without a
server. Conditions follow Kueue's: `QuotaReserved`, `Admitted`, `Evicted`, `Preempted`,
`Requeued`, `Finished`, each with a reason and a message; a condition keeps its
`lastTransitionTime` while its status does not change.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from admission.placement import expand, node_plans, record_nodes
from quotas.api import ResourceFlavor, Topology, Workload
from quotas.bundle import without_nulls
from quotas.jobs import workload_from_job
from quotas.kube import Job
from quotas.quantity import format_quantity, parse_quantity
from quotas.units import FlavorResource, from_milli, milli
from scheduler.decisions import Admission
from scheduler.snapshot import PodSetPlacement
from scheduler.workload import WorkloadInfo, parse_timestamp

JOB_UID_LABEL = "tessera.dev/job-uid"

QUOTA_RESERVED = "QuotaReserved"
ADMITTED = "Admitted"
EVICTED = "Evicted"
PREEMPTED = "Preempted"
REQUEUED = "Requeued"
FINISHED = "Finished"

# Eviction reasons (Kueue's WorkloadEvictedBy...)
EVICTED_BY_PREEMPTION = "Preempted"
EVICTED_BY_PODS_READY_TIMEOUT = "PodsReadyTimeout"
EVICTED_BY_DEACTIVATION = "InactiveWorkload"
"""A user (or waitForPodsReady's backoff limit) set `spec.active: false` on an admitted Workload."""


def now_rfc3339(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- from a Job -------------------------------------------------------------------------------


def parse_job(raw: Mapping[str, Any]) -> Job:
    return Job.model_validate(without_nulls(dict(raw)))


def workload_manifest(job_raw: Mapping[str, Any]) -> dict[str, Any]:
    """The Workload a managed Job should have (raises `quotas.jobs.JobConversionError` naming the field).

    The owner reference carries the Job's uid, so Kubernetes deletes the Workload with its Job.
    """
    job = parse_job(job_raw)
    manifest = workload_from_job(job).to_manifest()
    meta = manifest.setdefault("metadata", {})
    meta.pop("creationTimestamp", None)
    uid = job.metadata.uid
    if uid:
        meta.setdefault("labels", {})[JOB_UID_LABEL] = uid
    return manifest


def spec_differs(workload_raw: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a Workload's spec no longer matches what its Job asks for (compared as parsed models)."""
    current = Workload.model_validate(without_nulls(dict(workload_raw))).spec
    wanted = Workload.model_validate(desired).spec
    return current.model_dump(mode="json") != wanted.model_dump(mode="json")


def owner_uid(workload_raw: Mapping[str, Any]) -> str | None:
    for owner in (workload_raw.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "Job":
            return owner.get("uid")
    return None


def job_name_of(workload_raw: Mapping[str, Any]) -> str | None:
    for owner in (workload_raw.get("metadata") or {}).get("ownerReferences") or []:
        if owner.get("kind") == "Job":
            return str(owner.get("name"))
    return None


# --- conditions -----------------------------------------------------------------------------


def conditions_of(workload_raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(((workload_raw.get("status") or {}).get("conditions")) or [])


def condition(workload_raw: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in conditions_of(workload_raw):
        if cond.get("type") == kind:
            return cond
    return None


def is_true(workload_raw: Mapping[str, Any], kind: str) -> bool:
    cond = condition(workload_raw, kind)
    return cond is not None and cond.get("status") == "True"


def set_condition(conditions: Sequence[Mapping[str, Any]], kind: str, status: bool, reason: str, message: str,
                  now: str) -> list[dict[str, Any]]:
    """`conditions` with `kind` set; the transition time moves only when the status changes."""
    text = "True" if status else "False"
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") == kind:
            found = True
            changed = cond.get("status") != text
            out.append({
                "type": kind, "status": text, "reason": reason, "message": message,
                "lastTransitionTime": now if changed or not cond.get("lastTransitionTime") else cond["lastTransitionTime"],
            })
        else:
            out.append(dict(cond))
    if not found:
        out.append({"type": kind, "status": text, "reason": reason, "message": message, "lastTransitionTime": now})
    return out


def _flip_off(conditions: list[dict[str, Any]], kind: str, reason: str, message: str, now: str) -> list[dict[str, Any]]:
    """Set `kind` False only if it is present (absent conditions stay absent)."""
    if any(c.get("type") == kind and c.get("status") == "True" for c in conditions):
        return set_condition(conditions, kind, False, reason, message, now)
    return conditions


# --- admission records ------------------------------------------------------------------------


def _quantity(amount: int) -> str:
    return format_quantity(from_milli(amount))


def topology_of(placement: PodSetPlacement, flavors: Mapping[str, ResourceFlavor],
                topologies: Mapping[str, Topology]) -> Topology | None:
    for name in placement.flavors.values():
        flavor = flavors.get(name)
        if flavor is not None and flavor.spec.topology_name and flavor.spec.topology_name in topologies:
            return topologies[flavor.spec.topology_name]
    return None


def admission_record(admission: Admission, workload: WorkloadInfo, flavors: Mapping[str, ResourceFlavor],
                     topologies: Mapping[str, Topology]) -> dict[str, Any]:
    """`status.admission` for a decision: per podset its flavors, count, usage, topology domain and,
    where the placement carries one node per pod (a plan: `admission.placement.planned`), the
    pods per node (`nodes`).

    Per-podset usage is what admission charged for that podset: the flavored resources of
    its pods at the admitted count (their sum over podsets is `admission.usage`).
    """
    podsets = {p.name: p for p in workload.podsets}
    assignments = []
    for placement in admission.podsets:
        info = podsets[placement.name]
        usage = {resource: _quantity(info.requests[resource] * placement.count)
                 for resource in sorted(placement.flavors)}
        entry: dict[str, Any] = {
            "name": placement.name,
            "flavors": dict(sorted(placement.flavors.items())),
            "count": placement.count,
            "resourceUsage": usage,
        }
        if placement.domain:
            topology = topology_of(placement, flavors, topologies)
            if topology is not None:
                levels = topology.level_labels[: len(placement.domain)]
                entry["topologyAssignment"] = {
                    "levels": levels,
                    "domains": [{"values": list(placement.domain), "count": placement.count}],
                }
        if placement.nodes and len(placement.nodes) == placement.count:
            entry["nodes"] = record_nodes(placement.nodes)
        assignments.append(entry)
    return {"clusterQueue": admission.cluster_queue, "podSetAssignments": assignments}


def usage_of(admission: Mapping[str, Any]) -> dict[FlavorResource, int]:
    """What an admission record charges, in milli per (flavor, resource)."""
    total: dict[FlavorResource, int] = {}
    for assignment in admission.get("podSetAssignments") or []:
        flavors = assignment.get("flavors") or {}
        for resource, amount in (assignment.get("resourceUsage") or {}).items():
            flavor = flavors.get(resource)
            if flavor is None:
                continue
            key = (flavor, resource)
            total[key] = total.get(key, 0) + milli(parse_quantity(amount))
    return total


def placements_of(admission: Mapping[str, Any]) -> list[PodSetPlacement]:
    """The podset placements an admission record describes; `nodes` is the recorded plan (one node per
    pod, `admission.placement`), empty without one (the snapshot replaces it by the pods' nodes)."""
    out = []
    plans = node_plans(admission)
    for assignment in admission.get("podSetAssignments") or []:
        domain = None
        topo = assignment.get("topologyAssignment") or {}
        domains = topo.get("domains") or []
        if len(domains) == 1:
            domain = tuple(domains[0].get("values") or ())
        out.append(PodSetPlacement(
            name=str(assignment.get("name") or "main"),
            count=int(assignment.get("count") or 0),
            flavors=dict(assignment.get("flavors") or {}),
            nodes=expand(plans.get(str(assignment.get("name") or "main"), {})),
            domain=domain,
        ))
    return out


def requests_of(admission: Mapping[str, Any]) -> dict[str, str]:
    """Total requests per resource (quantities) of an admission record, for the ledger."""
    totals: dict[str, int] = {}
    for (_, resource), amount in usage_of(admission).items():
        totals[resource] = totals.get(resource, 0) + amount
    return {resource: _quantity(amount) for resource, amount in sorted(totals.items())}


def main_flavor(admission: Mapping[str, Any]) -> str | None:
    """The flavor to report: the GPU flavor if any, else the first flavor."""
    gpu, other = [], []
    for assignment in admission.get("podSetAssignments") or []:
        for resource, flavor in (assignment.get("flavors") or {}).items():
            (gpu if "gpu" in resource else other).append(flavor)
    return (gpu or other or [None])[0]


# --- status transitions -----------------------------------------------------------------------


def _status(workload_raw: Mapping[str, Any]) -> dict[str, Any]:
    return dict(workload_raw.get("status") or {})


def admitted_status(workload_raw: Mapping[str, Any], admission: Mapping[str, Any], now: str) -> dict[str, Any]:
    """Quota reserved and admitted (no admission checks: both at once)."""
    status = _status(workload_raw)
    cq = admission.get("clusterQueue", "")
    conditions = conditions_of(workload_raw)
    conditions = set_condition(conditions, QUOTA_RESERVED, True, "QuotaReserved", f"Quota reserved in ClusterQueue {cq}", now)
    conditions = set_condition(conditions, ADMITTED, True, "Admitted", "The workload is admitted", now)
    conditions = _flip_off(conditions, EVICTED, "QuotaReserved", "The workload is admitted again", now)
    conditions = _flip_off(conditions, PREEMPTED, "QuotaReserved", "The workload is admitted again", now)
    conditions = _flip_off(conditions, REQUEUED, "QuotaReserved", "The workload is admitted again", now)
    status["conditions"] = conditions
    status["admission"] = dict(admission)
    return status


def pending_status(workload_raw: Mapping[str, Any], message: str, now: str) -> dict[str, Any]:
    """Waiting for quota, with the scheduler's reason in the QuotaReserved message."""
    status = _status(workload_raw)
    status["conditions"] = set_condition(conditions_of(workload_raw), QUOTA_RESERVED, False, "Pending", message, now)
    return status


def pending_message(workload_raw: Mapping[str, Any]) -> str | None:
    cond = condition(workload_raw, QUOTA_RESERVED)
    if cond is None or cond.get("status") != "False":
        return None
    return str(cond.get("message") or "")


def evicting_status(workload_raw: Mapping[str, Any], reason: str, message: str, now: str,
                    preemption_reason: str | None = None) -> dict[str, Any]:
    """Evicted (and Preempted): the Job is being suspended; quota stays reserved until its pods are gone."""
    status = _status(workload_raw)
    conditions = set_condition(conditions_of(workload_raw), EVICTED, True, reason, message, now)
    if preemption_reason is not None:
        conditions = set_condition(conditions, PREEMPTED, True, preemption_reason, message, now)
    status["conditions"] = conditions
    return status


def released_status(workload_raw: Mapping[str, Any], now: str, requeue_at: float | None = None,
                    requeue_count: int | None = None) -> dict[str, Any]:
    """The evicted workload's pods are gone: quota released, back in the queue (with backoff if given)."""
    status = _status(workload_raw)
    evicted = condition(workload_raw, EVICTED) or {}
    reason = str(evicted.get("reason") or "Evicted")
    message = str(evicted.get("message") or "")
    conditions = set_condition(conditions_of(workload_raw), QUOTA_RESERVED, False, reason, f"Quota released: {message}", now)
    conditions = _flip_off(conditions, ADMITTED, reason, "The workload was evicted", now)
    if is_active(workload_raw):
        conditions = set_condition(conditions, REQUEUED, True, reason, "Requeued after eviction", now)
    else:  # deactivated: out of the queue until spec.active is true again
        conditions = set_condition(conditions, REQUEUED, False, EVICTED_BY_DEACTIVATION, "The workload is deactivated", now)
    status["conditions"] = conditions
    status["admission"] = None
    if requeue_count is not None:
        state: dict[str, Any] = {"count": requeue_count}
        if requeue_at is not None:
            state["requeueAt"] = now_rfc3339(requeue_at)
        status["requeueState"] = state
    return status


def finished_status(workload_raw: Mapping[str, Any], reason: str, message: str, now: str) -> dict[str, Any]:
    status = _status(workload_raw)
    status["conditions"] = set_condition(conditions_of(workload_raw), FINISHED, True, reason, message, now)
    return status


def status_patch(workload_raw: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch of `status` guarded by the Workload's resourceVersion (409 if it moved)."""
    meta = workload_raw.get("metadata") or {}
    patch: dict[str, Any] = {"status": dict(status)}
    if meta.get("resourceVersion"):
        patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    return patch


# --- reading a Workload's state ---------------------------------------------------------------


def is_finished(workload_raw: Mapping[str, Any]) -> bool:
    return is_true(workload_raw, FINISHED)


def holds_quota(workload_raw: Mapping[str, Any]) -> bool:
    return is_true(workload_raw, QUOTA_RESERVED) and bool((workload_raw.get("status") or {}).get("admission"))


def is_evicting(workload_raw: Mapping[str, Any]) -> bool:
    """Evicted but still holding quota (its Job's pods are terminating)."""
    return holds_quota(workload_raw) and is_true(workload_raw, EVICTED)


def is_active(workload_raw: Mapping[str, Any]) -> bool:
    return (workload_raw.get("spec") or {}).get("active", True) is not False


def reserved_at(workload_raw: Mapping[str, Any]) -> float:
    cond = condition(workload_raw, QUOTA_RESERVED) or {}
    return parse_timestamp(cond.get("lastTransitionTime"))


def queued_at(workload_raw: Mapping[str, Any]) -> float:
    """When the workload (re-)entered the queue: its last requeue, else its creation."""
    requeued = condition(workload_raw, REQUEUED)
    if requeued is not None and requeued.get("status") == "True":
        return parse_timestamp(requeued.get("lastTransitionTime"))
    return parse_timestamp((workload_raw.get("metadata") or {}).get("creationTimestamp"))


def requeue_state(workload_raw: Mapping[str, Any]) -> tuple[int, float]:
    """(evictions counted for backoff, not-before time) from `status.requeueState`."""
    state = (workload_raw.get("status") or {}).get("requeueState") or {}
    return int(state.get("count") or 0), parse_timestamp(state.get("requeueAt"))


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))

"""batch/v1 Job: the first integration, exactly the behaviour the operator had before adapters.

Held by `spec.suspend`; one podset `main` of `parallelism` pods (at most `completions`), with
partial admission from `tessera.dev/job-min-parallelism` (`quotas.jobs.workload_from_job`,
the simulator's reading too); released by `admission.jobs.admission_patch` (template patch,
lowered `parallelism` for partial admission, the original saved in the annotation); finished
from the `Complete` / `Failed` conditions. With a per-pod plan the template is also gated
(`tessera.dev/placement`) and the pods are ungated onto their nodes
(`Integration.placement_change`, `admission.placement`). Jobs owned by a JobSet are the JobSet's: they are
neither queued nor mutated on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from admission import jobs as jb
from admission import workloads as wl
from admission.integrations.base import Change, Integration, Obj, Pods
from admission.kube import JOBS
from admission.state import is_managed_job, job_of_pod
from quotas.api import PodSet, ResourceFlavor, Topology
from quotas.jobs import workload_from_job
from scheduler.snapshot import PodSetPlacement


class BatchJob(Integration):
    framework = "batch/job"
    resource = JOBS
    prefix = "job"
    webhook_id = "mutate-job"

    def is_managed(self, obj: Obj) -> bool:
        return is_managed_job(dict(obj))

    def podsets(self, obj: Obj) -> list[PodSet]:
        return list(workload_from_job(wl.parse_job(obj)).spec.pod_sets)

    def workload_manifest(self, obj: Obj) -> dict[str, Any]:
        return wl.workload_manifest(obj)

    def mutation(self, obj: Obj) -> dict[str, Any] | None:
        if not self.is_managed(obj) or (obj.get("spec") or {}).get("suspend") is True:
            return None
        return {"spec": {"suspend": True}}

    def is_held(self, obj: Obj, pods: Pods) -> bool:
        return jb.is_suspended(obj)

    def hold(self, obj: Obj, pods: Pods) -> Change:
        return Change(patch=jb.suspend_patch(obj))

    def is_started(self, obj: Obj, pods: Pods) -> bool:
        return jb.saved_original(obj) is not None

    def release(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement],
                flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology]) -> Change:
        placement = placements[0]  # a Job has one podset
        topology = wl.topology_of(placement, flavors, topologies)
        return Change(patch=jb.admission_patch(obj, placement, flavors, topology, gate=bool(placement.nodes)),
                      starts=True)

    def finished(self, obj: Obj) -> tuple[str, str] | None:
        return jb.finished(obj)

    def active_pods(self, obj: Obj, pods: Pods) -> int:
        return jb.active_pods(obj)

    def pods_ready(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement]) -> bool:
        expected = placements[0].count if placements else 1
        succeeded = int((obj.get("status") or {}).get("succeeded") or 0)
        return jb.ready_pods(obj) + succeeded >= expected

    def pod_owner(self, pod: Obj) -> tuple[str, str] | None:
        job = job_of_pod(dict(pod))
        return (job, "main") if job else None

"""JobSet (`jobset.x-k8s.io/v1alpha2`): one podset per replicated Job, held by `spec.suspend`.

* Podsets: one per `spec.replicatedJobs[]`, named after it, of `replicas` × the Job's pods
  (`parallelism`, default 1, at most `completions`), as Kueue counts them; the pod template is
  the replicated Job's `template.spec.template`.
* Held: `spec.suspend: true` (set by the `/mutate-jobset` webhook at creation, else by the
  controller). The JobSet controller suspends its child Jobs; their pods go.
* Released: each admitted replicated Job's pod template gets its podset's node selector and
  tolerations, and `spec.suspend` turns false, in one merge patch. `replicatedJobs` is a list,
  which a merge patch replaces whole, so the patch carries the JobSet's `resourceVersion`
  (409 if it moved; the next pass recomputes it). JobSet accepts pod-template changes of a
  suspended JobSet (for Kueue), and copies them to its child Jobs when it resumes.
* Finished: `status.terminalState` (`Completed`, `Failed`) or the `Completed` / `Failed`
  conditions. Evicted pods are gone when no replicated Job counts `active` child Jobs.
* Pods: the JobSet controller labels them `jobset.sigs.k8s.io/jobset-name` and
  `jobset.sigs.k8s.io/replicatedjob-name`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from admission.integrations.base import (
    Obj,
    Pods,
    SuspendableIntegration,
    as_count,
    check_podset_count,
    podset,
    true_condition,
    with_fields,
)
from admission.kube import JOBSETS
from quotas.api import PodSet
from scheduler.snapshot import PodSetPlacement

JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"


def _replicated_jobs(obj: Obj) -> list[dict[str, Any]]:
    return [rj for rj in ((obj.get("spec") or {}).get("replicatedJobs") or []) if isinstance(rj, dict)]


def _job_spec(rj: Mapping[str, Any]) -> dict[str, Any]:
    return dict((rj.get("template") or {}).get("spec") or {})


def _pods_per_job(job_spec: Mapping[str, Any], path: str) -> int:
    count = as_count(job_spec.get("parallelism"), f"{path}.parallelism")
    if job_spec.get("completions") is not None:
        count = min(count, as_count(job_spec.get("completions"), f"{path}.completions"))
    return count


class JobSetIntegration(SuspendableIntegration):
    framework = "jobset.x-k8s.io/jobset"
    resource = JOBSETS
    prefix = "jobset"
    webhook_id = "mutate-jobset"

    def podsets(self, obj: Obj) -> list[PodSet]:
        rjobs = _replicated_jobs(obj)
        check_podset_count(rjobs, "spec.replicatedJobs")
        out = []
        for i, rj in enumerate(rjobs):
            path = f"spec.replicatedJobs[{i}]"
            replicas = as_count(rj.get("replicas"), f"{path}.replicas")
            count = replicas * _pods_per_job(_job_spec(rj), f"{path}.template.spec")
            out.append(podset(rj.get("name"), count, _job_spec(rj).get("template"), f"{path}.template.spec.template",
                              f"{path}.name"))
        return out

    def pod_specs(self, obj: Obj) -> dict[str, dict[str, Any]]:
        return {str(rj.get("name")): dict((_job_spec(rj).get("template") or {}).get("spec") or {})
                for rj in _replicated_jobs(obj)}

    def is_suspended(self, obj: Obj) -> bool:
        return bool((obj.get("spec") or {}).get("suspend"))

    def suspend_patch(self, value: bool) -> dict[str, Any]:
        return {"spec": {"suspend": value}}

    def templates_patch(self, obj: Obj, wanted: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        rjobs = copy.deepcopy(_replicated_jobs(obj))
        changed = False
        for rj in rjobs:
            fields = wanted.get(str(rj.get("name")))
            if fields is None:
                continue
            template = rj.setdefault("template", {}).setdefault("spec", {}).setdefault("template", {})
            current = template.get("spec") or {}
            updated = with_fields(current, fields)
            if updated != current:
                template["spec"] = updated
                changed = True
        if not changed:
            return {}
        patch: dict[str, Any] = {"spec": {"replicatedJobs": rjobs}}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:  # the list is replaced whole: only over the version it was computed from
            patch["metadata"] = {"resourceVersion": version}
        return patch

    def finished(self, obj: Obj) -> tuple[str, str] | None:
        for kind, reason in (("Failed", "Failed"), ("Completed", "Succeeded")):
            cond = true_condition(obj, kind)
            if cond is not None:
                default = "JobSet completed successfully" if reason == "Succeeded" else "JobSet failed"
                return reason, str(cond.get("message") or default)
        terminal = (obj.get("status") or {}).get("terminalState")
        if terminal == "Completed":
            return "Succeeded", "JobSet completed successfully"
        if terminal == "Failed":
            return "Failed", "JobSet failed"
        return None

    def active_pods(self, obj: Obj, pods: Pods) -> int:
        statuses = (obj.get("status") or {}).get("replicatedJobsStatus") or []
        return sum(int(s.get("active") or 0) for s in statuses if isinstance(s, dict))

    def pods_ready(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement]) -> bool:
        """Every child Job ready or succeeded (JobSet counts Jobs whose pods are all ready), as Kueue reads it."""
        expected = sum(as_count(rj.get("replicas"), "replicas") for rj in _replicated_jobs(obj))
        statuses = (obj.get("status") or {}).get("replicatedJobsStatus") or []
        done = sum(int(s.get("ready") or 0) + int(s.get("succeeded") or 0) for s in statuses if isinstance(s, dict))
        return done >= expected

    def pod_owner(self, pod: Obj) -> tuple[str, str] | None:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        name, rjob = labels.get(JOBSET_NAME_LABEL), labels.get(REPLICATED_JOB_LABEL)
        return (str(name), str(rjob)) if name and rjob else None

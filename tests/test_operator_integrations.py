"""Integrations beyond batch/v1 Jobs (admission.integrations): JobSet, Kubeflow PyTorchJob, inference Deployments.

The first half tests the adapters as pure functions (podsets, the patches that hold and release
an object, finished / active / ready, the webhooks' mutations, the snapshot's view); the second
half runs the real operator (kopf in-process) against kmock's emulator, as
tests/test_operator_e2e.py does, playing the JobSet controller, the training operator, the
ReplicaSet controller and the kubelet by writing statuses and pods.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import jsonpatch
import kopf
import pytest
import pytest_asyncio
from pydantic import ValidationError

from admission import integrations as ig
from admission import workloads as wl
from admission.integrations.base import ORIGINAL_TEMPLATE_ANNOTATION
from admission.integrations.deployment import ADMITTED_ANNOTATION, GATE, pod_mutation
from admission.kube import API_CALLS, DEPLOYMENTS, JOBS, JOBSETS, PODS, PYTORCHJOBS, USER_AGENT, WATCHED, WORKLOADS, \
    Resource
from admission.operator import Operator
from admission.snapshot import build_cycle
from admission.state import ClusterState
from admission.testing import (
    condition,
    until,
    GPU,
    EmulatedCluster,
    cluster_queue,
    deployment,
    flavor,
    job,
    jobset,
    local_queue,
    merge_patch,
    node,
    pod,
    pod_template,
    priority_class,
    pytorchjob,
    replica_pod,
    running_operator,
    topology,
)
from admission.webhooks import job_mutation
from quotas.api import Configuration, ResourceFlavor, Topology
from quotas.jobs import JobConversionError
from quotas.kube import pod_requests
from scheduler.snapshot import PodSetPlacement
from scheduler.workload import parse_timestamp

T = TypeVar("T")
NOW = "2025-01-02T03:04:05Z"
LATER = "2025-01-02T03:10:00Z"
TOL = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
A100 = ResourceFlavor.model_validate(flavor("a100", {"gpu.product": "A100"}, tolerations=[TOL]))
FLAVORS = {"a100": A100}


def with_meta(obj: dict[str, Any], rv: str = "1", uid: str = "uid-1", created: str = NOW) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].update({"resourceVersion": rv, "uid": uid, "creationTimestamp": created})
    return obj


def placement(name: str, count: int, domain: tuple[str, ...] | None = None) -> PodSetPlacement:
    return PodSetPlacement(name, count, {GPU: "a100"}, domain=domain)


# --- JobSet ----------------------------------------------------------------------------------------------


def test_jobset_podsets_one_per_replicated_job_counting_replicas_times_pods() -> None:
    workers = pod_template(2, annotations={"tessera.dev/podset-required-topology": "rack"})
    raw = with_meta(jobset("ns", "train", "lq", {"leader": (1, 1, 1), "workers": (2, 4, 2)},
                           templates={"workers": workers}, priority="high"), uid="js-uid")
    podsets = ig.JOBSET.podsets(raw)
    assert [(p.name, p.count) for p in podsets] == [("leader", 1), ("workers", 8)]
    assert pod_requests(podsets[1].template.spec) == {GPU: Decimal(2)}
    assert podsets[1].topology_request is not None and podsets[1].topology_request.required == "rack"
    assert podsets[0].topology_request is None

    manifest = ig.JOBSET.workload_manifest(raw)
    assert manifest["metadata"]["name"] == "jobset-train"
    assert manifest["metadata"]["ownerReferences"] == [{
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "name": "train", "controller": True,
        "blockOwnerDeletion": True, "uid": "js-uid"}]
    assert manifest["metadata"]["labels"][wl.JOB_UID_LABEL] == "js-uid"
    assert manifest["spec"]["queueName"] == "lq" and manifest["spec"]["priorityClassName"] == "high"
    assert [p["count"] for p in manifest["spec"]["podSets"]] == [1, 8]


def test_jobset_completions_cap_the_pods_per_job_and_bad_fields_are_named() -> None:
    raw = jobset("ns", "j", "lq", {"w": (3, 4, 1)})
    raw["spec"]["replicatedJobs"][0]["template"]["spec"]["completions"] = 2
    assert [p.count for p in ig.JOBSET.podsets(raw)] == [6]

    bad = jobset("ns", "j", "lq", {"a": (1, 1, 1), "b": (1, 1, 1)})
    bad["spec"]["replicatedJobs"][1]["replicas"] = "two"
    with pytest.raises(JobConversionError) as caught:
        ig.JOBSET.podsets(bad)
    assert caught.value.field == "spec.replicatedJobs[1].replicas"

    both = pod_template(1, annotations={"tessera.dev/podset-required-topology": "rack",
                                        "tessera.dev/podset-preferred-topology": "block"})
    with pytest.raises(JobConversionError) as caught:
        ig.JOBSET.podsets(jobset("ns", "j", "lq", {"a": (1, 1, 1)}, templates={"a": both}))
    assert caught.value.field == "spec.replicatedJobs[0].template.spec.template.metadata.annotations"

    empty = jobset("ns", "j", "lq", {})
    with pytest.raises(JobConversionError) as caught:
        ig.JOBSET.podsets(empty)
    assert caught.value.field == "spec.replicatedJobs"

    bad_name = jobset("ns", "j", "lq", {"Not_A_Label": (1, 1, 1)})
    with pytest.raises(JobConversionError) as caught:
        ig.JOBSET.podsets(bad_name)
    assert caught.value.field == "spec.replicatedJobs[0].name"


def test_jobset_release_patches_each_replicated_job_template_and_hold_restores_them() -> None:
    user_tol = {"key": "team", "operator": "Equal", "value": "a", "effect": "NoSchedule"}
    leader = pod_template(1, node_selector={"zone": "z1"}, tolerations=[user_tol])
    original = with_meta(jobset("ns", "j", "lq", {"leader": (1, 1, 1), "workers": (1, 2, 2)},
                                templates={"leader": leader}), rv="7")
    dc = Topology.model_validate(topology("dc", "block", "rack"))
    f = ResourceFlavor.model_validate(flavor("a100", {"gpu.product": "A100"}, tolerations=[TOL], topology="dc"))
    change = ig.JOBSET.release(original, [], [placement("leader", 1), placement("workers", 2, ("b1", "r2"))],
                               {"a100": f}, {"dc": dc})
    assert change.starts and change.patch is not None
    assert change.patch["metadata"]["resourceVersion"] == "7"  # the list is replaced whole: guarded
    started = merge_patch(original, change.patch)
    assert started["spec"]["suspend"] is False
    rjobs = {rj["name"]: rj["template"]["spec"]["template"]["spec"] for rj in started["spec"]["replicatedJobs"]}
    assert rjobs["leader"]["nodeSelector"] == {"zone": "z1", "gpu.product": "A100"}
    assert rjobs["leader"]["tolerations"] == [user_tol, TOL]
    assert rjobs["workers"]["nodeSelector"] == {"gpu.product": "A100", "block": "b1", "rack": "r2"}
    assert rjobs["workers"]["tolerations"] == [TOL]
    assert json.loads(started["metadata"]["annotations"][ORIGINAL_TEMPLATE_ANNOTATION]) == {
        "leader": {"nodeSelector": {"zone": "z1"}, "tolerations": [user_tol]},
        "workers": {"nodeSelector": {}, "tolerations": []}}
    assert ig.JOBSET.is_started(started, []) and not ig.JOBSET.is_held(started, [])
    assert ig.JOBSET.admitted_change(started, [], [placement("leader", 1), placement("workers", 2)], {"a100": f},
                                     {"dc": dc}) is None  # runs as admitted: nothing to do

    # Released again after a crash: from the saved original, not from the injected selector.
    again = merge_patch(started, ig.JOBSET.release(started, [], [placement("leader", 1), placement("workers", 2)],
                                                   FLAVORS, {}).patch)
    workers = next(rj for rj in again["spec"]["replicatedJobs"] if rj["name"] == "workers")
    assert workers["template"]["spec"]["template"]["spec"]["nodeSelector"] == {"gpu.product": "A100"}

    held = merge_patch(again, ig.JOBSET.hold(again, []).patch)
    assert held["spec"]["suspend"] is True
    assert held["spec"]["replicatedJobs"] == original["spec"]["replicatedJobs"]
    assert ORIGINAL_TEMPLATE_ANNOTATION not in held["metadata"].get("annotations", {})
    # Never admitted: holding only suspends.
    assert ig.JOBSET.hold(with_meta(jobset("ns", "k", "lq", {"a": (1, 1, 1)}, suspend=False)), []).patch == {
        "spec": {"suspend": True}}


def test_jobset_finished_active_and_ready_from_its_status() -> None:
    raw = with_meta(jobset("ns", "j", "lq", {"leader": (1, 1, 1), "workers": (2, 2, 1)}))
    assert ig.JOBSET.finished(raw) is None
    raw["status"] = {"replicatedJobsStatus": [{"name": "leader", "active": 1, "ready": 1},
                                              {"name": "workers", "active": 2, "ready": 1, "succeeded": 0}]}
    assert ig.JOBSET.active_pods(raw, []) == 3
    assert not ig.JOBSET.pods_ready(raw, [], [])  # 2 of 3 child Jobs ready
    raw["status"]["replicatedJobsStatus"][1]["ready"] = 2
    assert ig.JOBSET.pods_ready(raw, [], [])
    raw["status"] = {"terminalState": "Completed"}
    assert ig.JOBSET.finished(raw) == ("Succeeded", "JobSet completed successfully")
    raw["status"] = {"conditions": [{"type": "Failed", "status": "True", "message": "worker 3 failed"}]}
    assert ig.JOBSET.finished(raw) == ("Failed", "worker 3 failed")
    raw["status"] = {"conditions": [{"type": "Completed", "status": "False"}]}
    assert ig.JOBSET.finished(raw) is None


def test_jobset_webhook_suspends_and_its_child_jobs_are_never_queued_on_their_own() -> None:
    assert ig.JOBSET.mutation(jobset("ns", "j", "lq", {"a": (1, 1, 1)}, suspend=None)) == {"spec": {"suspend": True}}
    assert ig.JOBSET.mutation(jobset("ns", "j", "lq", {"a": (1, 1, 1)})) is None  # already suspended
    assert ig.JOBSET.mutation(jobset("ns", "j", None, {"a": (1, 1, 1)}, suspend=None)) is None
    child = with_meta(job("ns", "j-a-0", "lq", suspend=False))
    child["metadata"]["ownerReferences"] = [{"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "name": "j",
                                             "uid": "u", "controller": True}]
    assert job_mutation(child) is None
    state = ClusterState(r.plural for r in WATCHED)
    assert not state.apply("jobs", "ADDED", child)
    labelled_pod = pod("ns", "j-a-0-x", "n1", job_name="j-a-0")
    labelled_pod["metadata"]["labels"].update({"jobset.sigs.k8s.io/jobset-name": "j",
                                               "jobset.sigs.k8s.io/replicatedjob-name": "a"})
    assert ig.JOBSET.pod_owner(labelled_pod) == ("j", "a")
    assert ig.JOBSET.pod_owner(pod("ns", "p", "n1", job_name="j-a-0")) is None


# --- PyTorchJob ------------------------------------------------------------------------------------------


def test_pytorchjob_podsets_master_then_workers() -> None:
    raw = with_meta(pytorchjob("ns", "bert", "lq", {"Worker": (3, 2), "Master": (1, 1)}), uid="pt-uid")
    podsets = ig.PYTORCHJOB.podsets(raw)
    assert [(p.name, p.count) for p in podsets] == [("master", 1), ("worker", 3)]
    assert pod_requests(podsets[1].template.spec) == {GPU: Decimal(2)}
    manifest = ig.PYTORCHJOB.workload_manifest(raw)
    assert manifest["metadata"]["name"] == "pytorchjob-bert"
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "PyTorchJob"
    assert manifest["metadata"]["ownerReferences"][0]["apiVersion"] == "kubeflow.org/v1"
    default = pytorchjob("ns", "b", "lq", {"Master": (1, 1)})
    del default["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"]
    assert [p.count for p in ig.PYTORCHJOB.podsets(default)] == [1]
    with pytest.raises(JobConversionError) as caught:
        ig.PYTORCHJOB.podsets(pytorchjob("ns", "b", "lq", {}))
    assert caught.value.field == "spec.pytorchReplicaSpecs"


def test_pytorchjob_release_touches_only_templates_and_run_policy_suspend() -> None:
    original = with_meta(pytorchjob("ns", "bert", "lq", {"Master": (1, 1), "Worker": (2, 1)},
                                    run_policy={"cleanPodPolicy": "None", "backoffLimit": 3}))
    assert ig.PYTORCHJOB.is_held(original, []) and not ig.PYTORCHJOB.is_started(original, [])
    change = ig.PYTORCHJOB.release(original, [], [placement("master", 1), placement("worker", 2)], FLAVORS, {})
    assert change.patch is not None and "resourceVersion" not in change.patch.get("metadata", {})
    assert set(change.patch["spec"]) == {"runPolicy", "pytorchReplicaSpecs"}
    started = merge_patch(original, change.patch)
    assert started["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 3, "suspend": False}
    for kind in ("Master", "Worker"):
        spec = started["spec"]["pytorchReplicaSpecs"][kind]["template"]["spec"]
        assert spec["nodeSelector"] == {"gpu.product": "A100"} and spec["tolerations"] == [TOL]
    held = merge_patch(started, ig.PYTORCHJOB.hold(started, []).patch)
    assert held["spec"] == original["spec"]
    assert ig.PYTORCHJOB.mutation(pytorchjob("ns", "b", "lq", {"Master": (1, 1)}, suspend=None)) == {
        "spec": {"runPolicy": {"suspend": True}}}


def test_pytorchjob_finished_active_ready_and_its_pods() -> None:
    raw = with_meta(pytorchjob("ns", "bert", "lq", {"Master": (1, 1), "Worker": (2, 1)}))
    raw["status"] = {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}],
                     "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 2}}}
    assert ig.PYTORCHJOB.finished(raw) is None and ig.PYTORCHJOB.active_pods(raw, []) == 3
    assert ig.PYTORCHJOB.pods_ready(raw, [], [])
    raw["status"]["conditions"] = [{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}]
    assert ig.PYTORCHJOB.finished(raw) == ("Succeeded", "PyTorchJob finished successfully")
    raw["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "ReplicaFailed"}]
    assert ig.PYTORCHJOB.finished(raw) == ("Failed", "PyTorchJob failed: ReplicaFailed")
    worker = pod("ns", "bert-worker-0", "n1")
    worker["metadata"]["labels"] = {"training.kubeflow.org/job-name": "bert",
                                    "training.kubeflow.org/replica-type": "worker",
                                    "training.kubeflow.org/operator-name": "pytorchjob-controller"}
    assert ig.PYTORCHJOB.pod_owner(worker) == ("bert", "worker")
    worker["metadata"]["labels"]["training.kubeflow.org/operator-name"] = "tfjob-controller"
    assert ig.PYTORCHJOB.pod_owner(worker) is None


# --- Deployment ------------------------------------------------------------------------------------------


def gated_pods(dep: dict[str, Any], n: int) -> list[dict[str, Any]]:
    dep = merge_patch(dep, ig.DEPLOYMENT.mutation(dep) or {})
    out = []
    for i in range(n):
        p = replica_pod(dep, i)
        p["metadata"]["creationTimestamp"] = f"2025-01-02T03:04:0{i}Z"
        out.append(merge_patch(p, pod_mutation(p) or {}))
    return out


def test_deployment_podset_labels_and_which_deployments_are_queued() -> None:
    dep = with_meta(deployment("ns", "web", "lq", replicas=3, gpus=1, priority="low"), uid="dep-uid")
    assert ig.DEPLOYMENT.is_managed(dep)
    assert not ig.DEPLOYMENT.is_managed(deployment("ns", "web", "lq", workload_type="training"))
    assert not ig.DEPLOYMENT.is_managed(deployment("ns", "web", None))
    assert [(p.name, p.count) for p in ig.DEPLOYMENT.podsets(dep)] == [("main", 3)]
    manifest = ig.DEPLOYMENT.workload_manifest(dep)
    assert manifest["metadata"]["name"] == "deployment-web"
    assert manifest["metadata"]["labels"]["tessera.dev/workload-type"] == "inference"
    assert manifest["metadata"]["ownerReferences"] == [{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "controller": True, "blockOwnerDeletion": True,
        "uid": "dep-uid"}]

    # The Deployment webhook copies the queue labels into the pod template, once.
    mutation = ig.DEPLOYMENT.mutation(dep)
    assert mutation == {"spec": {"template": {"metadata": {"labels": {
        "tessera.dev/queue-name": "lq", "tessera.dev/workload-type": "inference"}}}}}
    assert ig.DEPLOYMENT.mutation(merge_patch(dep, mutation)) is None


def test_pod_webhook_gates_only_pods_of_queued_deployments() -> None:
    dep = deployment("ns", "web", "lq", replicas=1)
    (gated,) = gated_pods(dep, 1)
    assert gated["spec"]["schedulingGates"] == [{"name": GATE}]
    assert pod_mutation(gated) is None  # already gated
    assert ig.DEPLOYMENT.pod_owner(gated) == ("web", "main")
    unlabelled = replica_pod(dep, 0)  # the Deployment webhook did not run: the pod carries no queue label
    assert pod_mutation(unlabelled) is None
    of_a_job = pod("ns", "j-0", None, job_name="j")
    of_a_job["metadata"]["labels"].update({"tessera.dev/queue-name": "lq", "tessera.dev/workload-type": "inference"})
    assert pod_mutation(of_a_job) is None and ig.DEPLOYMENT.pod_owner(of_a_job) is None


def test_deployment_admission_ungates_at_most_the_admitted_pods_and_eviction_deletes_them() -> None:
    dep = with_meta(deployment("ns", "web", "lq", replicas=2))
    pods = gated_pods(dep, 3)  # a rollout's surge pod: one more than admitted
    stranger = replica_pod(merge_patch(dep, ig.DEPLOYMENT.mutation(dep)), 9)  # ungated around the webhook
    assert ig.DEPLOYMENT.is_held(dep, pods) and not ig.DEPLOYMENT.is_held(dep, [*pods, stranger])

    change = ig.DEPLOYMENT.admitted_change(dep, [*pods, stranger], [placement("main", 2)], FLAVORS, {})
    assert change is not None and change.starts and change.patch is None  # the Deployment itself is not changed
    assert change.pod_deletions == [stranger["metadata"]["name"]]
    assert [name for name, _ in change.pod_patches] == [pods[0]["metadata"]["name"]]  # room for 1 while it runs
    change = ig.DEPLOYMENT.admitted_change(dep, pods, [placement("main", 2)], FLAVORS, {})
    assert [name for name, _ in change.pod_patches] == [p["metadata"]["name"] for p in pods[:2]]  # oldest first
    name, patch = change.pod_patches[0]
    assert patch == {"metadata": {"annotations": {ADMITTED_ANNOTATION: "deployment-web"}},
                     "spec": {"schedulingGates": None, "nodeSelector": {"gpu.product": "A100"}, "tolerations": [TOL]}}
    running = [merge_patch(p, patch) for p, (_, patch) in zip(pods, change.pod_patches)] + [pods[2]]
    assert ig.DEPLOYMENT.is_started(dep, running) and not ig.DEPLOYMENT.is_held(dep, running)
    assert ig.DEPLOYMENT.admitted_change(dep, running, [placement("main", 2)], FLAVORS, {}) is None  # full
    assert not ig.DEPLOYMENT.pods_ready(dep, running, [placement("main", 2)])
    for p in running[:2]:
        p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    assert ig.DEPLOYMENT.pods_ready(dep, running, [placement("main", 2)])

    # Eviction: a gate cannot come back, so the ungated pods are deleted (their replacements are gated).
    hold = ig.DEPLOYMENT.hold(dep, running)
    assert hold.patch is None and hold.pod_deletions == sorted(p["metadata"]["name"] for p in running[:2])
    terminating = [merge_patch(p, {"metadata": {"deletionTimestamp": LATER}}) for p in running[:2]] + [pods[2]]
    assert ig.DEPLOYMENT.is_held(dep, terminating)  # nothing more to delete ...
    assert ig.DEPLOYMENT.active_pods(dep, terminating) == 2  # ... but the quota waits until they are gone
    assert ig.DEPLOYMENT.active_pods(dep, [pods[2]]) == 0
    assert ig.DEPLOYMENT.finished(dep) is None


# --- the registry, the configuration, the snapshot --------------------------------------------------------


def test_the_batch_job_adapter_is_the_operators_job_path() -> None:
    raw = with_meta(job("ns", "j", "lq", gpus=2, parallelism=3, suspend=None))
    assert [(p.name, p.count) for p in ig.BATCH_JOB.podsets(raw)] == [("main", 3)]
    assert ig.BATCH_JOB.workload_manifest(raw) == wl.workload_manifest(raw)
    assert ig.BATCH_JOB.mutation(raw) == {"spec": {"suspend": True}} and job_mutation(raw) == {"suspend": True}
    assert not ig.BATCH_JOB.is_held(raw, []) and not ig.BATCH_JOB.is_started(raw, [])
    change = ig.BATCH_JOB.admitted_change(raw, [], [placement("main", 3)], FLAVORS, {})
    assert change is not None and change.patch == {"spec": {"suspend": True}}  # runs without admission: held first
    held = merge_patch(raw, change.patch)
    started = merge_patch(held, ig.BATCH_JOB.admitted_change(held, [], [placement("main", 3)], FLAVORS, {}).patch)
    assert started["spec"]["suspend"] is False
    assert started["spec"]["template"]["spec"]["nodeSelector"] == {"gpu.product": "A100"}
    assert ig.BATCH_JOB.pod_owner(pod("ns", "j-0", "n1", job_name="j")) == ("j", "main")
    assert ig.owner_of(ig.BATCH_JOB.workload_manifest(raw)) == (ig.BATCH_JOB, "j", "uid-1")


def test_frameworks_are_configured_by_kueue_names() -> None:
    assert Configuration().integrations.frameworks == ["batch/job", "jobset.x-k8s.io/jobset",
                                                       "kubeflow.org/pytorchjob"]
    config = Configuration.model_validate({"integrations": {"frameworks": ["deployment", "batch/job"]}})
    assert ig.enabled(config.integrations.frameworks) == [ig.BATCH_JOB, ig.DEPLOYMENT]
    with pytest.raises(ValidationError) as caught:
        Configuration.model_validate({"integrations": {"frameworks": ["ray.io/rayjob"]}})
    assert caught.value.errors()[0]["loc"] == ("integrations", "frameworks", 0)
    with pytest.raises(ValueError):
        ig.enabled(["ray.io/rayjob"])


def queues() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("resourceflavors", flavor("a100", {"gpu.product": "A100"})),
        ("clusterqueues", cluster_queue("cq", {"a100": 16})),
        ("localqueues", local_queue("ns", "lq", "cq")),
        ("nodes", node("n1", 8, {"gpu.product": "A100"})),
        ("nodes", node("n2", 8, {"gpu.product": "A100"})),
    ]


def test_snapshot_gives_each_podset_its_pods_and_keeps_charging_unwatched_kinds() -> None:
    js = with_meta(jobset("ns", "js", "lq", {"leader": (1, 1, 1), "workers": (1, 2, 2)}, suspend=False), uid="u-js")
    js_wl = with_meta(ig.JOBSET.workload_manifest(js), rv="10")
    record = {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "leader", "flavors": {GPU: "a100"}, "count": 1, "resourceUsage": {GPU: "1"}},
        {"name": "workers", "flavors": {GPU: "a100"}, "count": 2, "resourceUsage": {GPU: "4"}}]}
    js_wl["status"] = wl.admitted_status(js_wl, record, NOW)
    pods = []
    for name, rjob, node_name, gpus in (("js-leader-0", "leader", "n1", 1), ("js-workers-0", "workers", "n1", 2),
                                        ("js-workers-1", "workers", "n2", 2)):
        p = pod("ns", name, node_name, gpus=gpus)
        p["metadata"]["labels"] = {"jobset.sigs.k8s.io/jobset-name": "js",
                                   "jobset.sigs.k8s.io/replicatedjob-name": rjob}
        pods.append(("pods", p))
    pt = with_meta(pytorchjob("ns", "pt", "lq", {"Master": (1, 4)}, suspend=False), uid="u-pt")
    pt_wl = with_meta(ig.PYTORCHJOB.workload_manifest(pt), rv="11")
    pt_wl["status"] = wl.admitted_status(pt_wl, {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "master", "flavors": {GPU: "a100"}, "count": 1, "resourceUsage": {GPU: "4"}}]}, NOW)
    pending_pt = with_meta(pytorchjob("ns", "later", "lq", {"Master": (1, 1)}), uid="u-later")
    pending_wl = with_meta(ig.PYTORCHJOB.workload_manifest(pending_pt), rv="12")

    # JobSets are watched here, PyTorchJobs are not (their integration is off, or their CRD absent).
    state = ClusterState([*(r.plural for r in WATCHED), "jobsets"], managed={"jobs": ig.BATCH_JOB.is_managed,
                                                                              "jobsets": ig.JOBSET.is_managed})
    for plural, obj in [*queues(), ("jobsets", js), ("workloads", js_wl), ("workloads", pt_wl),
                        ("workloads", pending_wl), *pods]:
        state.apply(plural, None, obj)
    state.synced.update([*(r.plural for r in WATCHED), "jobsets"])
    cycle = build_cycle(state, parse_timestamp(LATER))
    admitted = {a.key: a for a in cycle.snapshot.admitted}
    assert set(admitted) == {"ns/jobset-js", "ns/pytorchjob-pt"}
    assert {p.name: p.nodes for p in admitted["ns/jobset-js"].podsets} == {"leader": ("n1",),
                                                                           "workers": ("n1", "n2")}
    assert admitted["ns/jobset-js"].placed
    assert admitted["ns/pytorchjob-pt"].usage == {("a100", GPU): 4000}  # still charged: its pods may run
    assert cycle.entries["ns/pytorchjob-pt"].job is None
    assert cycle.snapshot.pending == []  # an unwatched kind is never admitted from here
    assert cycle.entries["ns/jobset-js"].integration is ig.JOBSET and cycle.entries["ns/jobset-js"].owner == "js"


# --- end to end, against kmock's emulator ---------------------------------------------------------------

class Actor:
    """Plays kubectl and the controllers Tessera relies on (JobSet, training operator, ReplicaSet, kubelet)."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def create(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"].get("namespace")
        async with self.session.post(self.url + resource.path(namespace), json=obj) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        async with self.session.get(self.url + resource.path(namespace, name)) as r:
            return None if r.status == 404 else await r.json()

    async def must(self, resource: Resource, name: str, namespace: str = "ns") -> dict[str, Any]:
        found = await self.get(resource, namespace, name)
        assert found is not None, f"{resource.plural}/{name} not found"
        return found

    async def patch(self, resource: Resource, namespace: str, name: str, body: dict[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        async with self.session.patch(self.url + resource.path(namespace, name, subresource), json=body,
                                      headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        async with self.session.delete(self.url + resource.path(namespace, name)) as r:
            assert r.status < 300, await r.text()

    async def workload(self, name: str, namespace: str = "ns") -> dict[str, Any] | None:
        return await self.get(WORKLOADS, namespace, name)






@pytest.fixture
def cluster() -> Any:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest_asyncio.fixture
async def actor(cluster: EmulatedCluster) -> AsyncIterator[Actor]:
    async with aiohttp.ClientSession() as session:
        yield Actor(cluster.url, session)


FRAMEWORKS = ["batch/job", "jobset.x-k8s.io/jobset", "kubeflow.org/pytorchjob", "deployment"]


def running(cluster: EmulatedCluster, frameworks: list[str] = FRAMEWORKS, **overrides: Any) -> Any:
    configuration = Configuration.model_validate({"integrations": {"frameworks": frameworks}})
    return running_operator(cluster, configuration=configuration, **overrides)


async def setup_queues(actor: Actor, quota: int = 8, preemption: dict[str, Any] | None = None) -> None:
    paths = [(Resource("tessera.dev", "v1alpha1", "resourceflavors", False),
              flavor("a100", {"gpu.product": "A100"}, tolerations=[TOL])),
             (Resource("tessera.dev", "v1alpha1", "clusterqueues", False),
              cluster_queue("cq", {"a100": quota}, preemption=preemption)),
             (Resource("tessera.dev", "v1alpha1", "localqueues", True), local_queue("ns", "lq", "cq")),
             (Resource("tessera.dev", "v1alpha1", "workloadpriorityclasses", False), priority_class("low", 1)),
             (Resource("tessera.dev", "v1alpha1", "workloadpriorityclasses", False), priority_class("high", 1000)),
             (Resource("", "v1", "nodes", False), node("gpu-node", 8, {"gpu.product": "A100"}))]
    for resource, obj in paths:
        await actor.create(resource, obj)


def assert_calls_declared(cluster: EmulatedCluster) -> None:
    declared = {(group, resource, verb) for group, resource, verbs in API_CALLS for verb in verbs}
    seen = set()
    for call in cluster.calls():
        if call.plural is None or call.group is None:
            continue
        if call.agent.startswith("kopf/") or call.agent.startswith(USER_AGENT):
            seen.add((call.group, call.plural + (f"/{call.subresource}" if call.subresource else ""), call.verb))
    assert not seen - declared, f"API calls missing from API_CALLS: {sorted(seen - declared)}"


async def pending_message(actor: Actor, name: str) -> str | None:
    cond = condition(await actor.workload(name), "QuotaReserved")
    return cond.get("message") if cond.get("status") == "False" else None


@pytest.mark.asyncio
async def test_jobsets_are_admitted_per_replicated_job_queued_beyond_quota_and_release_it_when_done(
        cluster: EmulatedCluster, actor: Actor) -> None:
    await setup_queues(actor, quota=8)
    async with running(cluster):
        first = await actor.create(JOBSETS, jobset("ns", "first", "lq", {"leader": (1, 1, 1), "workers": (1, 2, 2)},
                                                   suspend=False))  # no webhook ran: the controller holds it

        async def admitted_jobset(name: str) -> dict[str, Any] | None:
            js = await actor.must(JOBSETS, name)
            return js if js["spec"].get("suspend") is False and \
                ORIGINAL_TEMPLATE_ANNOTATION in (js["metadata"].get("annotations") or {}) else None

        started = await until(lambda: admitted_jobset("first"), what="first JobSet admitted")
        for rj in started["spec"]["replicatedJobs"]:
            spec = rj["template"]["spec"]["template"]["spec"]
            assert spec["nodeSelector"] == {"gpu.product": "A100"} and spec["tolerations"] == [TOL], rj["name"]
        workload = await actor.workload("jobset-first")
        assert workload is not None
        assert workload["metadata"]["ownerReferences"][0]["uid"] == first["metadata"]["uid"]
        assert [(p["name"], p["count"]) for p in workload["spec"]["podSets"]] == [("leader", 1), ("workers", 2)]
        assert [(a["name"], a["count"], a["resourceUsage"]) for a in workload["status"]["admission"][
            "podSetAssignments"]] == [("leader", 1, {GPU: "1"}), ("workers", 2, {GPU: "4"})]

        # Created running (no webhook): held by the controller, and queued beyond the quota (5 + 4 > 8).
        await actor.create(JOBSETS, jobset("ns", "second", "lq", {"workers": (2, 1, 2)}, suspend=False))

        async def suspended(name: str) -> bool:
            return (await actor.must(JOBSETS, name))["spec"].get("suspend") is True
        await until(lambda: suspended("second"), what="second JobSet held")
        waiting = await until(lambda: pending_message(actor, "jobset-second"), what="second JobSet pending")
        assert "insufficient quota" in waiting
        assert [(p["name"], p["count"]) for p in (await actor.workload("jobset-second"))["spec"]["podSets"]] == [
            ("workers", 2)]
        await asyncio.sleep(0.3)
        assert await suspended("second")

        # The JobSet controller reports it done: the quota goes to the second one.
        await actor.patch(JOBSETS, "ns", "first", {"status": {"terminalState": "Completed", "conditions": [
            {"type": "Completed", "status": "True", "message": "jobset completed"}]}}, "status")
        await until(lambda: admitted_jobset("second"), what="second JobSet admitted after the first finished")
        done = await actor.workload("jobset-first")
        assert condition(done, "Finished")["reason"] == "Succeeded"
        assert condition(done, "Finished")["message"] == "jobset completed"
    assert_calls_declared(cluster)


@pytest.mark.asyncio
async def test_pytorchjobs_are_admitted_per_replica_type_queued_beyond_quota_and_release_it_when_done(
        cluster: EmulatedCluster, actor: Actor) -> None:
    await setup_queues(actor, quota=8)
    async with running(cluster):
        await actor.create(PYTORCHJOBS, pytorchjob("ns", "bert", "lq", {"Master": (1, 1), "Worker": (3, 1)},
                                                   run_policy={"cleanPodPolicy": "None"}))

        async def admitted_job(name: str) -> dict[str, Any] | None:
            pt = await actor.must(PYTORCHJOBS, name)
            return pt if pt["spec"]["runPolicy"].get("suspend") is False else None

        started = await until(lambda: admitted_job("bert"), what="PyTorchJob admitted")
        assert started["spec"]["runPolicy"]["cleanPodPolicy"] == "None"
        for kind in ("Master", "Worker"):
            spec = started["spec"]["pytorchReplicaSpecs"][kind]["template"]["spec"]
            assert spec["nodeSelector"] == {"gpu.product": "A100"} and spec["tolerations"] == [TOL], kind
        workload = await actor.workload("pytorchjob-bert")
        assert [(p["name"], p["count"]) for p in workload["spec"]["podSets"]] == [("master", 1), ("worker", 3)]
        assert condition(workload, "Admitted")["status"] == "True"

        await actor.create(PYTORCHJOBS, pytorchjob("ns", "gpt", "lq", {"Master": (1, 1), "Worker": (4, 1)}))
        waiting = await until(lambda: pending_message(actor, "pytorchjob-gpt"), what="second PyTorchJob pending")
        assert "insufficient quota" in waiting
        assert not await admitted_job("gpt")

        await actor.patch(PYTORCHJOBS, "ns", "bert", {"status": {"conditions": [
            {"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}]}}, "status")
        await until(lambda: admitted_job("gpt"), what="second PyTorchJob admitted after the first succeeded")
        assert condition(await actor.workload("pytorchjob-bert"), "Finished")["reason"] == "Succeeded"
    assert_calls_declared(cluster)


def review(uid: str, resource: Resource, obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": resource.group, "version": resource.version, "kind": obj["kind"]},
        "resource": {"group": resource.group, "version": resource.version, "resource": resource.plural},
        "operation": operation, "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "namespace": obj["metadata"].get("namespace"), "object": obj}}


class Admission:
    """Sends an object through the operator's mutating webhook as the API server does, then creates it."""

    def __init__(self, actor: Actor, port: int) -> None:
        self.actor = actor
        self.hook = f"http://127.0.0.1:{port}"
        self.count = 0

    async def mutate(self, path: str, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        async with self.actor.session.post(f"{self.hook}/{path}", json=review(f"u{self.count}", resource, obj)) as r:
            answer = (await r.json())["response"]
        assert answer["allowed"] is True, answer
        if "patch" not in answer:
            return obj
        return jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))

    async def create_deployment(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.actor.create(DEPLOYMENTS, await self.mutate("mutate-deployment", DEPLOYMENTS, obj))

    async def create_pods(self, dep: dict[str, Any], indices: range, template_hash: str = "5d8f7c9b4") -> list[dict[str, Any]]:
        """The pods as the webhook let them in (the operator may ungate them at once after)."""
        made = []
        for i in indices:  # the ReplicaSet controller, through the Pod webhook
            made.append(await self.mutate("mutate-pod", PODS, replica_pod(dep, i, template_hash)))
            await self.actor.create(PODS, made[-1])
        return made


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def pods_of(actor: Actor, cluster: EmulatedCluster, deployment_name: str) -> list[dict[str, Any]]:
    return sorted((p for p in cluster.objects("v1/pods") if p["metadata"]["name"].startswith(f"{deployment_name}-")),
                  key=lambda p: p["metadata"]["name"])


@pytest.mark.asyncio
async def test_deployment_pods_are_gated_then_ungated_on_admission_and_a_second_deployment_stays_gated(
        cluster: EmulatedCluster, actor: Actor) -> None:
    await setup_queues(actor, quota=8)
    port = free_port()
    async with running(cluster, webhook_port=port, webhook_insecure=True), aiohttp.ClientSession() as session:
        hooks = Admission(Actor(cluster.url, session), port)
        web = await hooks.create_deployment(deployment("ns", "web", "lq", replicas=2, gpus=2))
        assert web["spec"]["template"]["metadata"]["labels"]["tessera.dev/queue-name"] == "lq"
        gated = await hooks.create_pods(web, range(2))
        assert [p["spec"]["schedulingGates"] for p in gated] == [[{"name": GATE}]] * 2

        async def ungated(name: str, n: int) -> list[dict[str, Any]] | None:
            pods = [p for p in await pods_of(actor, cluster, name) if not p["spec"].get("schedulingGates")]
            return pods if len(pods) == n else None

        running_pods = await until(lambda: ungated("web", 2), what="web's pods ungated")
        for p in running_pods:
            assert p["spec"]["nodeSelector"] == {"gpu.product": "A100"} and p["spec"]["tolerations"] == [TOL]
            assert p["metadata"]["annotations"][ADMITTED_ANNOTATION] == "deployment-web"
        workload = await actor.workload("deployment-web")
        assert [(p.get("name", "main"), p["count"]) for p in workload["spec"]["podSets"]] == [("main", 2)]
        assert workload["status"]["admission"]["podSetAssignments"][0]["resourceUsage"] == {GPU: "4"}
        deployed = await actor.must(DEPLOYMENTS, "web")
        assert "nodeSelector" not in deployed["spec"]["template"]["spec"]  # no rollout: pods are admitted one by one

        # The other kinds' webhooks are served beside them, each scoped to its kind.
        held_js = await hooks.mutate("mutate-jobset", JOBSETS, jobset("ns", "js", "lq", {"a": (1, 1, 1)}, suspend=None))
        assert held_js["spec"]["suspend"] is True
        held_pt = await hooks.mutate("mutate-pytorchjob", PYTORCHJOBS, pytorchjob(
            "ns", "pt", "lq", {"Master": (1, 1)}, suspend=None, run_policy={"cleanPodPolicy": "None"}))
        assert held_pt["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "suspend": True}

        api = await hooks.create_deployment(deployment("ns", "api", "lq", replicas=3, gpus=2))  # 4 + 6 > 8
        await hooks.create_pods(api, range(3), template_hash="77c6d5f8b")
        waiting = await until(lambda: pending_message(actor, "deployment-api"), what="second Deployment pending")
        assert "insufficient quota" in waiting
        await asyncio.sleep(0.3)
        assert all(p["spec"].get("schedulingGates") == [{"name": GATE}] for p in await pods_of(actor, cluster, "api"))

        # Deleting the first Deployment (and its pods, as the garbage collector does) frees its quota.
        await actor.delete(DEPLOYMENTS, "ns", "web")
        for p in running_pods:
            await actor.delete(PODS, "ns", p["metadata"]["name"])
        await until(lambda: ungated("api", 3), what="second Deployment's pods ungated")
        assert await actor.workload("deployment-web") is None
    assert_calls_declared(cluster)


@pytest.mark.asyncio
async def test_a_higher_priority_job_preempts_a_deployment_whose_pods_are_deleted_and_come_back_gated(
        cluster: EmulatedCluster, actor: Actor) -> None:
    await setup_queues(actor, quota=8, preemption={"withinClusterQueue": "LowerPriority"})
    async with running(cluster) as operator:
        dep = deployment("ns", "web", "lq", replicas=2, gpus=3, priority="low")
        dep = await actor.create(DEPLOYMENTS, merge_patch(dep, ig.DEPLOYMENT.mutation(dep)))  # as the webhook does
        for i in range(2):
            p = replica_pod(dep, i)
            await actor.create(PODS, merge_patch(p, pod_mutation(p)))

        async def ungated_count() -> int:
            return sum(1 for p in await pods_of(actor, cluster, "web") if not p["spec"].get("schedulingGates"))

        await until(lambda: _eq(ungated_count, 2), what="web admitted")
        for p in await pods_of(actor, cluster, "web"):  # the kubelet runs them
            await actor.patch(PODS, "ns", p["metadata"]["name"], {"spec": {"nodeName": "gpu-node"}})

        await actor.create(JOBS, job("ns", "train", "lq", gpus=4, priority="high"))  # 6 + 4 > 8: web must go

        async def web_pods_gone() -> bool:
            return await ungated_count() == 0
        await until(web_pods_gone, what="web's running pods deleted")
        evicted = await actor.workload("deployment-web")
        assert condition(evicted, "Evicted")["reason"] == "Preempted"
        assert condition(evicted, "Preempted")["reason"] == "InClusterQueue"
        # The ReplicaSet replaces the deleted pods: the webhook gates them again.
        for i in range(2, 4):
            p = replica_pod(dep, i)
            await actor.create(PODS, merge_patch(p, pod_mutation(p)))

        async def job_started() -> bool:
            return (await actor.must(JOBS, "train"))["spec"].get("suspend") is False
        await until(job_started, what="the preemptor started")
        requeued = await until(lambda: _requeued(actor, "deployment-web"), what="web requeued")
        assert "admission" not in requeued["status"]
        await asyncio.sleep(0.3)
        assert await ungated_count() == 0  # still held: 4 of 8 GPUs left, it needs 6
        events = {(e["involvedObject"]["kind"], e["reason"]) for e in cluster.objects("v1/events")}
        assert ("Deployment", "Stopped") in events
        assert operator.controller.absent == set()
    assert_calls_declared(cluster)


async def _eq(probe: Callable[[], Awaitable[int]], value: int) -> bool:
    return await probe() == value


async def _requeued(actor: Actor, name: str) -> dict[str, Any] | None:
    w = await actor.workload(name)
    return w if condition(w, "Requeued").get("status") == "True" else None


@pytest.mark.asyncio
async def test_the_operator_starts_without_the_jobset_and_pytorchjob_crds_and_picks_them_up_once_installed(
        ) -> None:
    import kmock

    with EmulatedCluster(without=("jobsets", "pytorchjobs")) as cluster:
        async with aiohttp.ClientSession() as session:
            actor = Actor(cluster.url, session)
            await setup_queues(actor, quota=8)
            async with running(cluster, absent_retry=0.3) as operator:
                ok, body = operator.ready()
                assert ok and body["absent"] == ["jobsets", "pytorchjobs"] and body["unsynced"] == []
                await actor.create(JOBS, job("ns", "j", "lq", gpus=1))

                async def job_started() -> bool:
                    return (await actor.must(JOBS, "j"))["spec"].get("suspend") is False
                await until(job_started, what="a Job admitted while the CRDs are absent")

                # The JobSet CRD is installed: the integration starts without a restart.
                assert cluster.emulator is not None
                cluster.emulator.resources["jobset.x-k8s.io/v1alpha2/jobsets"] = kmock.ResourceInfo(
                    kind="JobSet", namespaced=True, verbs={"list", "watch", "get", "create", "patch", "delete"},
                    subresources={"status"})
                await actor.create(Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", False), {
                    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": "jobsets.jobset.x-k8s.io"},
                    "spec": {"group": "jobset.x-k8s.io", "scope": "Namespaced",
                             "names": {"plural": "jobsets", "kind": "JobSet"},
                             "versions": [{"name": "v1alpha2", "served": True, "storage": True}]}})
                await until(lambda: _absent_is(operator, ["pytorchjobs"]), what="jobsets served")
                await actor.create(JOBSETS, jobset("ns", "js", "lq", {"w": (1, 2, 1)}))

                async def jobset_started() -> bool:
                    return (await actor.must(JOBSETS, "js"))["spec"].get("suspend") is False
                await until(jobset_started, what="a JobSet admitted after its CRD appeared")
        assert_calls_declared(cluster)


async def _absent_is(operator: Operator, plurals: list[str]) -> bool:
    return sorted(operator.controller.absent) == plurals

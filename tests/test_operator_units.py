"""The operator's pure parts, without any server: Workload manifests and conditions, Job patches,
the caches, the snapshot built from them, webhook decisions, and metrics."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from admission import jobs as jb
from admission import workloads as wl
from admission.kube import WATCHED
from admission.metrics import Metrics
from admission.snapshot import build_cycle
from admission.state import ClusterState, is_older
from admission.testing import GPU, cluster_queue, flavor, job, local_queue, node, pod, priority_class, topology
from admission.webhooks import job_mutation, refusal, review_problem, validation_errors
from quotas.api import ResourceFlavor, Topology
from quotas.bundle import load_bundle
from quotas.jobs import JobConversionError
from scheduler.decisions import Admission
from scheduler.snapshot import PodSetPlacement
from scheduler.workload import WorkloadInfo, parse_timestamp

NOW = "2025-01-02T03:04:05Z"
LATER = "2025-01-02T03:10:00Z"


def with_meta(obj: dict[str, Any], rv: str = "1", uid: str = "uid-1", created: str = NOW) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].update({"resourceVersion": rv, "uid": uid, "creationTimestamp": created})
    return obj


def a100(**extra: Any) -> ResourceFlavor:
    return ResourceFlavor.model_validate(flavor("a100", {"gpu.product": "A100"}, **extra))


# --- Workloads from Jobs -------------------------------------------------------------------------


def test_workload_manifest_owns_the_job_and_copies_queue_priority_and_podset() -> None:
    raw = with_meta(job("team-a", "train", "lq", gpus=2, parallelism=4, priority="high"), uid="job-uid")
    manifest = wl.workload_manifest(raw)
    assert manifest["metadata"]["name"] == "job-train"
    assert manifest["metadata"]["namespace"] == "team-a"
    assert manifest["metadata"]["ownerReferences"] == [{
        "apiVersion": "batch/v1", "kind": "Job", "name": "train", "controller": True, "blockOwnerDeletion": True,
        "uid": "job-uid"}]
    assert manifest["metadata"]["labels"][wl.JOB_UID_LABEL] == "job-uid"
    assert manifest["spec"]["queueName"] == "lq"
    assert manifest["spec"]["priorityClassName"] == "high"
    podset = manifest["spec"]["podSets"][0]
    assert podset["count"] == 4
    assert podset["template"]["spec"]["containers"][0]["resources"]["requests"][GPU] == "2"
    assert "creationTimestamp" not in manifest["metadata"]  # the API server sets the Workload's own


def test_workload_manifest_names_the_bad_field() -> None:
    bad = with_meta(job("ns", "j", "lq", template_annotations={
        "tessera.dev/podset-required-topology": "rack", "tessera.dev/podset-preferred-topology": "block"}))
    with pytest.raises(JobConversionError) as caught:
        wl.workload_manifest(bad)
    assert caught.value.field == "spec.template.metadata.annotations"


def test_spec_differs_only_when_the_job_asks_for_something_else() -> None:
    raw = with_meta(job("ns", "j", "lq", gpus=1, parallelism=2))
    workload = with_meta(wl.workload_manifest(raw), rv="7")
    assert not wl.spec_differs(workload, wl.workload_manifest(raw))
    bigger = copy.deepcopy(raw)
    bigger["spec"]["parallelism"] = bigger["spec"]["completions"] = 3
    assert wl.spec_differs(workload, wl.workload_manifest(bigger))


# --- conditions ----------------------------------------------------------------------------------


def test_set_condition_keeps_the_transition_time_while_the_status_holds() -> None:
    conds = wl.set_condition([], "QuotaReserved", False, "Pending", "first reason", NOW)
    conds = wl.set_condition(conds, "QuotaReserved", False, "Pending", "second reason", LATER)
    assert conds == [{"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": "second reason",
                      "lastTransitionTime": NOW}]
    conds = wl.set_condition(conds, "QuotaReserved", True, "QuotaReserved", "in", LATER)
    assert conds[0]["lastTransitionTime"] == LATER and conds[0]["status"] == "True"


def _workload(rv: str = "3") -> dict[str, Any]:
    return with_meta(wl.workload_manifest(with_meta(job("ns", "j", "lq", gpus=2, parallelism=2))), rv=rv)


def _record() -> dict[str, Any]:
    return {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "main", "flavors": {GPU: "a100"}, "count": 2, "resourceUsage": {GPU: "4"}}]}


def test_admission_lifecycle_conditions() -> None:
    workload = _workload()
    pending = {**workload, "status": wl.pending_status(workload, "no quota", NOW)}
    assert wl.pending_message(pending) == "no quota" and not wl.holds_quota(pending)

    admitted = {**pending, "status": wl.admitted_status(pending, _record(), LATER)}
    assert wl.holds_quota(admitted) and wl.is_true(admitted, "Admitted")
    assert wl.reserved_at(admitted) == parse_timestamp(LATER)
    assert wl.pending_message(admitted) is None

    evicting = {**admitted, "status": wl.evicting_status(admitted, wl.EVICTED_BY_PREEMPTION, "for ns/vip", LATER,
                                                         "InClusterQueue")}
    assert wl.is_evicting(evicting) and wl.holds_quota(evicting)  # quota held until the pods are gone
    assert wl.condition(evicting, "Preempted")["reason"] == "InClusterQueue"

    released = {**evicting, "status": wl.released_status(evicting, LATER, requeue_at=None, requeue_count=None)}
    assert not wl.holds_quota(released) and released["status"]["admission"] is None
    assert not wl.is_true(released, "Admitted") and wl.is_true(released, "Requeued")
    assert wl.queued_at(released) == parse_timestamp(LATER)

    again = {**released, "status": wl.admitted_status(released, _record(), LATER)}
    assert not wl.is_true(again, "Evicted") and not wl.is_true(again, "Preempted") and wl.holds_quota(again)

    done = {**again, "status": wl.finished_status(again, "Succeeded", "ok", LATER)}
    assert wl.is_finished(done)


def test_status_patch_is_guarded_by_the_resource_version() -> None:
    workload = _workload(rv="42")
    patch = wl.status_patch(workload, wl.pending_status(workload, "x", NOW))
    assert patch["metadata"] == {"resourceVersion": "42"}
    assert set(patch) == {"metadata", "status"}


def test_requeue_backoff_state_round_trips() -> None:
    workload = _workload()
    workload["status"] = wl.admitted_status(workload, _record(), NOW)
    workload["status"] = wl.evicting_status(workload, wl.EVICTED_BY_PODS_READY_TIMEOUT, "slow", NOW)
    status = wl.released_status(workload, NOW, requeue_at=parse_timestamp(NOW) + 120, requeue_count=2)
    assert wl.requeue_state({"status": status}) == (2, parse_timestamp(NOW) + 120)
    assert wl.condition({"status": status}, "QuotaReserved")["reason"] == "PodsReadyTimeout"


# --- admission records ---------------------------------------------------------------------------


def _info(gpus: int = 2, parallelism: int = 2) -> WorkloadInfo:
    from quotas.api import Workload

    return WorkloadInfo.from_workload(Workload.model_validate(
        wl.workload_manifest(with_meta(job("ns", "j", "lq", gpus=gpus, parallelism=parallelism, cpu="1")))))


def test_admission_record_round_trips_usage_and_topology_domain() -> None:
    info = _info(gpus=2, parallelism=3)
    dc = Topology.model_validate(topology("dc", "block", "rack", "kubernetes.io/hostname"))
    f = ResourceFlavor.model_validate(flavor("a100", {"gpu": "a100"}, topology="dc"))
    decision = Admission(key="ns/job-j", cluster_queue="cq", usage={("a100", GPU): 6000, ("a100", "cpu"): 3000},
                         podsets=(PodSetPlacement("main", 3, {GPU: "a100", "cpu": "a100"}, domain=("b1", "r2")),))
    record = wl.admission_record(decision, info, {"a100": f}, {"dc": dc})
    assignment = record["podSetAssignments"][0]
    assert assignment["resourceUsage"] == {GPU: "6", "cpu": "3"}
    assert assignment["topologyAssignment"] == {"levels": ["block", "rack"], "domains": [{"values": ["b1", "r2"],
                                                                                            "count": 3}]}
    assert wl.usage_of(record) == decision.usage
    placement = wl.placements_of(record)[0]
    assert (placement.count, dict(placement.flavors), placement.domain) == (3, {GPU: "a100", "cpu": "a100"}, ("b1", "r2"))
    assert wl.requests_of(record) == {"cpu": "3", GPU: "6"}
    assert wl.main_flavor(record) == "a100"


# --- Job patches ---------------------------------------------------------------------------------


def _placement(count: int = 2, domain: tuple[str, ...] | None = None) -> PodSetPlacement:
    return PodSetPlacement("main", count, {GPU: "a100"}, domain=domain)


def _apply(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(obj) if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _apply(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def test_admission_patch_injects_flavor_labels_tolerations_and_domain_and_saves_the_original() -> None:
    tol = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    user_tol = {"key": "team", "operator": "Equal", "value": "a", "effect": "NoSchedule"}
    original = with_meta(job("ns", "j", "lq", gpus=2, parallelism=2, node_selector={"zone": "z1"},
                             tolerations=[user_tol]))
    dc = Topology.model_validate(topology("dc", "block", "rack"))
    f = ResourceFlavor.model_validate(flavor("a100", {"gpu.product": "A100"}, tolerations=[tol], topology="dc"))
    patch = jb.admission_patch(original, _placement(domain=("b1", "r3")), {"a100": f}, dc)
    started = _apply(original, patch)
    pod = started["spec"]["template"]["spec"]
    assert started["spec"]["suspend"] is False
    assert pod["nodeSelector"] == {"zone": "z1", "gpu.product": "A100", "block": "b1", "rack": "r3"}
    assert pod["tolerations"] == [user_tol, tol]
    assert json.loads(started["metadata"]["annotations"][jb.ORIGINAL_TEMPLATE_ANNOTATION]) == {
        "nodeSelector": {"zone": "z1"}, "tolerations": [user_tol], "parallelism": 2}
    assert "parallelism" not in patch["spec"]  # full admission keeps it

    # Admitting again (after a crash) starts from the saved original, not from the injected selector.
    again = _apply(started, jb.admission_patch(started, _placement(domain=("b2", "r1")), {"a100": f}, dc))
    assert again["spec"]["template"]["spec"]["nodeSelector"] == {"zone": "z1", "gpu.product": "A100",
                                                                  "block": "b2", "rack": "r1"}

    # Suspending restores exactly what the user wrote.
    suspended = _apply(again, jb.suspend_patch(again))
    assert suspended["spec"]["suspend"] is True
    assert suspended["spec"]["template"]["spec"]["nodeSelector"] == {"zone": "z1"}
    assert suspended["spec"]["template"]["spec"]["tolerations"] == [user_tol]
    assert jb.ORIGINAL_TEMPLATE_ANNOTATION not in suspended["metadata"].get("annotations", {})
    assert suspended["spec"]["template"] == original["spec"]["template"]


def test_partial_admission_lowers_parallelism_and_suspension_restores_it() -> None:
    original = with_meta(job("ns", "j", "lq", gpus=1, parallelism=4))
    started = _apply(original, jb.admission_patch(original, _placement(count=2), {"a100": a100()}, None))
    assert started["spec"]["parallelism"] == 2
    assert jb.job_pod_count(started) == 4  # the original count, from the annotation
    suspended = _apply(started, jb.suspend_patch(started))
    assert suspended["spec"]["parallelism"] == 4


def test_suspend_patch_of_a_never_admitted_job_only_suspends() -> None:
    raw = with_meta(job("ns", "j", "lq", suspend=False, node_selector={"a": "b"}))
    assert jb.suspend_patch(raw) == {"spec": {"suspend": True}}


def test_job_finished_reads_complete_and_failed_conditions() -> None:
    raw = with_meta(job("ns", "j", "lq"))
    assert jb.finished(raw) is None
    raw["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert jb.finished(raw)[0] == "Succeeded"
    raw["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    assert jb.finished(raw) == ("Failed", "Job failed: BackoffLimitExceeded")
    raw["status"] = {"conditions": [{"type": "Complete", "status": "False"}], "active": 2, "terminating": 1}
    assert jb.finished(raw) is None and jb.active_pods(raw) == 3


# --- caches --------------------------------------------------------------------------------------


def state_of(*objs: tuple[str, dict[str, Any]]) -> ClusterState:
    state = ClusterState(r.plural for r in WATCHED)
    for plural, obj in objs:
        state.apply(plural, None, obj)
    state.synced.update(r.plural for r in WATCHED)
    return state


def test_state_never_rolls_back_to_an_older_resource_version() -> None:
    state = state_of()
    assert is_older("9", "10") and not is_older("10", "9") and not is_older("abc", "10")
    state.store("workloads", {**_workload(rv="10"), "status": {"x": "new"}})
    revision = state.revision
    assert not state.apply("workloads", "MODIFIED", {**_workload(rv="9"), "status": {"x": "old"}})
    assert state.get("workloads", "ns", "job-j")["status"] == {"x": "new"} and state.revision == revision
    assert state.apply("workloads", "MODIFIED", {**_workload(rv="11"), "status": {"x": "newer"}})
    assert state.apply("workloads", "DELETED", _workload(rv="12"))
    assert state.get("workloads", "ns", "job-j") is None


def test_state_keeps_only_queued_jobs() -> None:
    state = state_of()
    managed = with_meta(job("ns", "a", "lq"))
    assert state.apply("jobs", "ADDED", managed)
    assert not state.apply("jobs", "ADDED", with_meta(job("ns", "b", None)))
    assert state.get("jobs", "ns", "b") is None
    unlabelled = copy.deepcopy(managed)
    unlabelled["metadata"]["labels"] = {}
    unlabelled["metadata"]["resourceVersion"] = "2"
    assert state.apply("jobs", "MODIFIED", unlabelled)  # the label went away: no longer ours
    assert state.get("jobs", "ns", "a") is None


def test_parsed_is_memoised_per_resource_version() -> None:
    state = state_of(("workloads", _workload(rv="5")))
    calls: list[str] = []

    def parse(obj: dict[str, Any]) -> str:
        calls.append(obj["metadata"]["resourceVersion"])
        return "parsed"

    key = ("ns", "job-j")
    state.parsed("workloads", key, parse)
    state.parsed("workloads", key, parse)
    state.apply("workloads", "MODIFIED", _workload(rv="6"))
    state.parsed("workloads", key, parse)
    assert calls == ["5", "6"]


# --- snapshot -----------------------------------------------------------------------------------


def queues() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("resourceflavors", flavor("a100", {"gpu": "a100"})),
        ("clusterqueues", cluster_queue("cq", {"a100": 8}, preemption={"withinClusterQueue": "LowerPriority"})),
        ("localqueues", local_queue("ns", "lq", "cq")),
        ("workloadpriorityclasses", priority_class("high", 100)),
        ("nodes", node("n1", 8, {"gpu": "a100"})),
    ]


def admitted_pair(name: str, gpus: int, parallelism: int, rv: str, **job_args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    j = with_meta(job("ns", name, "lq", gpus=gpus, parallelism=parallelism, suspend=False, **job_args), uid=f"u-{name}")
    w = with_meta(wl.workload_manifest(j), rv=rv)
    record = {"clusterQueue": "cq", "podSetAssignments": [
        {"name": "main", "flavors": {GPU: "a100"}, "count": parallelism, "resourceUsage": {GPU: str(gpus * parallelism)}}]}
    w["status"] = wl.admitted_status(w, record, NOW)
    return j, w


def test_snapshot_splits_admitted_pending_finished_and_counts_live_pods() -> None:
    run_job, run_wl = admitted_pair("run", 2, 2, "10")
    wait_job = with_meta(job("ns", "wait", "lq", gpus=4, priority="high"), uid="u-wait")
    wait_wl = with_meta(wl.workload_manifest(wait_job), rv="11")
    done_job, done_wl = admitted_pair("done", 1, 1, "12")
    done_wl["status"] = wl.finished_status(done_wl, "Succeeded", "ok", NOW)
    orphan_wl = with_meta(wl.workload_manifest(with_meta(job("ns", "gone", "lq"))), rv="13")
    state = state_of(
        *queues(),
        ("jobs", run_job), ("workloads", run_wl), ("jobs", wait_job), ("workloads", wait_wl),
        ("jobs", done_job), ("workloads", done_wl), ("workloads", orphan_wl),
        ("pods", pod("ns", "run-0", "n1", gpus=2, job_name="run")),
        ("pods", pod("ns", "run-1", None, gpus=2, job_name="run")),  # not bound yet
        ("pods", pod("other", "daemon", "n1", gpus=1)),  # not Tessera's: still takes a GPU
        ("pods", pod("other", "old", "n1", gpus=4, phase="Succeeded")),  # finished: takes nothing
    )
    cycle = build_cycle(state, parse_timestamp(LATER))
    snap = cycle.snapshot
    assert [a.key for a in snap.admitted] == ["ns/job-run"]
    admitted = snap.admitted[0]
    assert admitted.usage == {("a100", GPU): 4000}
    assert admitted.podsets[0].nodes == ("n1",) and not admitted.placed
    assert admitted.admitted_at == parse_timestamp(NOW)
    assert [p.key for p in snap.pending] == ["ns/job-wait"]
    assert snap.pending[0].workload.priority == 100
    assert snap.cluster.allocated(GPU) == 3000  # run-0 (2) + daemon (1)
    assert snap.usage.of("cq") == {("a100", GPU): 4000}
    assert cycle.entries["ns/job-gone"].job is None


def test_an_evicted_workload_stays_admitted_until_its_pods_are_gone() -> None:
    j, w = admitted_pair("victim", 8, 1, "20")
    w["status"] = wl.evicting_status(w, wl.EVICTED_BY_PREEMPTION, "for ns/vip", NOW, "InClusterQueue")
    cycle = build_cycle(state_of(*queues(), ("jobs", j), ("workloads", w)), parse_timestamp(LATER))
    assert [(a.key, a.evicted) for a in cycle.snapshot.admitted] == [("ns/job-victim", True)]


def test_requeue_backoff_reaches_the_pending_entry() -> None:
    j = with_meta(job("ns", "slow", "lq"), uid="u-slow")
    w = with_meta(wl.workload_manifest(j), rv="30")
    w["status"] = {"requeueState": {"count": 3, "requeueAt": LATER}}
    inactive_job = with_meta(job("ns", "off", "lq"), uid="u-off")
    inactive = with_meta(wl.workload_manifest(inactive_job), rv="31")
    inactive["spec"]["active"] = False
    cycle = build_cycle(state_of(*queues(), ("jobs", j), ("workloads", w), ("jobs", inactive_job),
                                 ("workloads", inactive)), parse_timestamp(NOW))
    assert [(p.key, p.requeue_count, p.not_before) for p in cycle.snapshot.pending] == [
        ("ns/job-slow", 3, parse_timestamp(LATER))]


def test_a_tessera_object_that_does_not_parse_is_left_out() -> None:
    bad = cluster_queue("broken", {"a100": 8})
    bad["spec"]["queueingStrategy"] = "Whatever"
    cycle = build_cycle(state_of(*queues(), ("clusterqueues", bad)), parse_timestamp(NOW))
    assert set(cycle.snapshot.cluster_queues) == {"cq"}


# --- webhooks -------------------------------------------------------------------------------------


def test_job_mutation_suspends_only_queued_jobs() -> None:
    assert job_mutation(job("ns", "j", "lq", suspend=False)) == {"suspend": True}
    assert job_mutation(job("ns", "j", "lq", suspend=None)) == {"suspend": True}
    assert job_mutation(job("ns", "j", "lq", suspend=True)) is None
    assert job_mutation(job("ns", "j", None, suspend=False)) is None


def test_validation_repeats_the_message_tessera_validate_prints(tmp_path: Path) -> None:
    bad = cluster_queue("team-a", {"a100": 8})
    bad["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["lendingLimit"] = "2"
    path = tmp_path / "cq.yaml"
    import yaml

    path.write_text(yaml.safe_dump_all([flavor("a100"), bad]))
    _, problems = load_bundle([path])
    printed = [str(p).removeprefix(f"{path}:2: ") for p in problems if p.is_error]
    errors, warnings = validation_errors(bad)
    assert errors == printed == [
        "ClusterQueue/team-a: spec.resourceGroups[0].flavors[0].resources[0].lendingLimit: may only be set with spec.cohort"]
    assert warnings == []


def test_validation_refuses_schema_errors_and_warns_about_unknown_references() -> None:
    typo = cluster_queue("cq", {"a100": 8})
    typo["spec"]["queueingStrategy"] = "Fifo"
    errors, _ = validation_errors(typo)
    assert len(errors) == 1 and errors[0].startswith("ClusterQueue/cq: spec.queueingStrategy: must be one of")
    errors, warnings = validation_errors(cluster_queue("cq", {"h100": 8}), known=[a100()])
    assert errors == []
    assert warnings == ['ClusterQueue/cq: spec.resourceGroups[0].flavors[0].name: unknown ResourceFlavor "h100"']
    assert validation_errors(cluster_queue("cq", {"a100": 8}), known=[a100()]) == ([], [])


@pytest.mark.parametrize("review, problem", [
    ([], "the body must be a JSON object (an AdmissionReview)"),
    ({"kind": "Pod"}, 'kind must be AdmissionReview, got "Pod"'),
    ({"request": {"uid": "u"}}, "request.resource is missing or not a mapping"),
    ({"request": {"uid": "u", "resource": {"group": "", "version": "v1"}, "operation": "CREATE", "userInfo": {}}},
     "request.resource.resource is missing or not a string"),
    ({"request": {"uid": "u", "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                  "userInfo": {}}}, "request.object or request.oldObject must be an object"),
])
def test_malformed_reviews_are_named(review: Any, problem: str) -> None:
    assert review_problem(review) == problem
    answer = refusal(review, problem)
    assert answer["response"]["allowed"] is False and answer["response"]["status"]["message"] == problem


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_follow_the_snapshot() -> None:
    run_job, run_wl = admitted_pair("run", 2, 2, "10")
    wait_job = with_meta(job("ns", "wait", "lq", gpus=8), uid="u-wait")
    state = state_of(*queues(), ("jobs", run_job), ("workloads", run_wl), ("jobs", wait_job),
                     ("workloads", with_meta(wl.workload_manifest(wait_job), rv="11")),
                     ("pods", pod("ns", "run-0", "n1", gpus=2, job_name="run")))
    metrics = Metrics()
    metrics.observe_cycle(build_cycle(state, parse_timestamp(NOW)).snapshot)
    metrics.observe_admission("cq", 12.0)
    metrics.observe_eviction("cq", "Preempted", "InClusterQueue")
    get = metrics.registry.get_sample_value
    assert get("tessera_pending_workloads", {"cluster_queue": "cq", "status": "active"}) == 1
    assert get("tessera_cluster_queue_resource_usage", {"cluster_queue": "cq", "flavor": "a100", "resource": GPU}) == 4
    assert get("tessera_cluster_queue_nominal_quota", {"cluster_queue": "cq", "flavor": "a100", "resource": GPU}) == 8
    assert get("tessera_cluster_queue_weighted_share", {"cluster_queue": "cq"}) == 0
    assert get("tessera_gpu_allocation_ratio") == 2 / 8
    assert get("tessera_admitted_workloads_total", {"cluster_queue": "cq"}) == 1
    assert get("tessera_admission_wait_time_seconds_sum", {"cluster_queue": "cq"}) == 12.0
    assert get("tessera_preempted_workloads_total", {"cluster_queue": "cq", "reason": "InClusterQueue"}) == 1
    assert get("tessera_evicted_workloads_total", {"cluster_queue": "cq", "reason": "Preempted"}) == 1
    text = metrics.render().decode()
    for name in ("tessera_pending_workloads", "tessera_admitted_workloads_total", "tessera_admission_wait_time_seconds",
                 "tessera_evicted_workloads_total", "tessera_preempted_workloads_total",
                 "tessera_cluster_queue_resource_usage", "tessera_cluster_queue_nominal_quota",
                 "tessera_cluster_queue_weighted_share", "tessera_scheduling_cycle_seconds",
                 "tessera_solver_outcomes_total", "tessera_gpu_allocation_ratio"):
        assert f"# TYPE {name} " in text


# --- kopf: no diff base for event handlers ------------------------------------------------------------


def test_kopf_builds_no_diff_base_while_every_handler_is_an_event_handler() -> None:
    import kopf

    from admission.operator import EventOnlyDiffBase, EventOnlyProgress, Operator, OperatorConfig, only_event_handlers

    operator = Operator(OperatorConfig(webhook_port=19443, webhook_insecure=True, policy="kueue", metrics_port=0,
                                       health_port=0, login=lambda: kopf.ConnectionInfo(server="http://127.0.0.1:1")))
    assert only_event_handlers(operator.registry)  # one on.event per watched kind, the webhooks, the login
    persistence = operator.kopf_settings().persistence
    storage, progress = persistence.diffbase_storage, persistence.progress_storage
    assert isinstance(storage, EventOnlyDiffBase) and isinstance(progress, EventOnlyProgress)
    body = kopf.Body(with_meta(job("ns", "j", "lq")))
    assert storage.build(body=body) == {} and storage.fetch(body=body) is None
    essence = storage.build(body=body)
    assert progress.clear(essence=essence) is essence and progress.fetch(key="watch-jobs", body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=essence)
    progress.touch(body=body, patch=patch, value="x")
    progress.purge(key="watch-jobs", body=body, patch=patch)
    assert not patch  # nothing is ever written to the object

    # A change handler reads the diff base (and its progress): kopf's own storage is kept then.
    kopf.on.update("batch", "v1", "jobs", registry=operator.registry)(lambda **_: None)
    assert not only_event_handlers(operator.registry)
    kept = operator.kopf_settings().persistence
    assert not isinstance(kept.diffbase_storage, EventOnlyDiffBase)
    assert not isinstance(kept.progress_storage, EventOnlyProgress)
    assert kept.diffbase_storage.build(body=body)["spec"]["parallelism"] == 1


# --- the ledger is written off the pass, in order ---------------------------------------------------


@pytest.mark.asyncio
async def test_ledger_writes_are_queued_in_order_and_never_awaited_by_the_pass() -> None:
    import asyncio
    import threading

    from admission.scheduling import Controller

    release = threading.Event()
    written: list[tuple[str, str]] = []

    class SlowLedger:
        """A ledger whose first write waits for the test (a SQLite commit waiting for the database lock)."""

        def record_admission(self, key: str, **_: Any) -> None:
            release.wait(timeout=10)
            written.append(("admission", key))

        def record_end(self, key: str, **_: Any) -> None:
            written.append(("end", key))

        def broken(self, key: str) -> None:
            raise RuntimeError("disk full")

    controller = Controller(None, state_of(), lambda: None, ledger=SlowLedger())  # type: ignore[arg-type]
    admitted = _workload(rv="5")
    admitted["status"] = wl.admitted_status(admitted, _record(), NOW)
    controller._ledger_admission("ns/job-j", admitted)  # returns at once: the write waits on its own thread
    controller._ledger_admission("ns/job-j", admitted)  # once per process
    controller._ledger("broken", "ns/job-j")  # a failing write is logged, the others go on
    controller._ledger("record_end", "ns/job-j", at=1.0, reason="Finished")
    await asyncio.sleep(0.05)
    assert written == []
    release.set()
    await controller.flush_ledger()
    assert written == [("admission", "ns/job-j"), ("end", "ns/job-j")]
    controller._ledger("record_end", "ns/job-k", at=2.0, reason="Finished")  # a new writer after a flush
    await controller.flush_ledger()
    assert written[-1] == ("end", "ns/job-k")

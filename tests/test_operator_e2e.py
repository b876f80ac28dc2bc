"""The real operator (kopf in-process, `Operator.run`) against kmock's Kubernetes emulator over real HTTP.

The emulator (`admission.testing.StrictEmulator`) runs in its own thread and event loop and
adds what the operator's safety rests on: integer resourceVersions, 409 on a stale
resourceVersion precondition, and a status subresource. There is no Job controller and no
kubelet: the tests play them, patching Job status (Complete, active pods) and creating Pods.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kopf
import pytest
import pytest_asyncio

from admission.jobs import ORIGINAL_TEMPLATE_ANNOTATION
from admission.kube import API_CALLS, JOBS, LEASES, NAMESPACES, USER_AGENT, WORKLOADS, KubeApi, Resource
from admission.leader import LeaderElector, micro_time
from admission.operator import Operator
from admission.testing import (
    condition,
    until,
    GPU,
    EmulatedCluster,
    cluster_queue,
    flavor,
    job,
    local_queue,
    namespace,
    node,
    operator_config,
    priority_class,
    running_operator,
)
from quotas.api import Configuration
from quotas.ledger import Ledger

pytestmark = pytest.mark.asyncio
T = TypeVar("T")
PATHS = {
    "ResourceFlavor": "/apis/tessera.dev/v1alpha1/resourceflavors",
    "ClusterQueue": "/apis/tessera.dev/v1alpha1/clusterqueues",
    "WorkloadPriorityClass": "/apis/tessera.dev/v1alpha1/workloadpriorityclasses",
    "Node": "/api/v1/nodes",
    "Namespace": "/api/v1/namespaces",
}
NAMESPACED = {"LocalQueue": "/apis/tessera.dev/v1alpha1/namespaces/{ns}/localqueues",
              "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
              "Pod": "/api/v1/namespaces/{ns}/pods",
              "Lease": "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class User:
    """Plays kubectl, the Job controller and the kubelet against the emulator."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = obj["kind"]
        path = PATHS.get(kind) or NAMESPACED[kind].format(ns=obj["metadata"]["namespace"])
        async with self.session.post(self.url + path, json=obj) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        async with self.session.get(self.url + resource.path(namespace, name)) as r:
            return None if r.status == 404 else await r.json()

    async def patch(self, resource: Resource, namespace: str | None, name: str, body: dict[str, Any],
                    subresource: str | None = None) -> dict[str, Any]:
        async with self.session.patch(self.url + resource.path(namespace, name, subresource), json=body,
                                      headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status < 300, await r.text()
            return await r.json()

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> None:
        async with self.session.delete(self.url + resource.path(namespace, name)) as r:
            assert r.status < 300, await r.text()

    async def job(self, name: str, ns: str = "ns") -> dict[str, Any]:
        found = await self.get(JOBS, ns, name)
        assert found is not None
        return found

    async def workload(self, job_name: str, ns: str = "ns") -> dict[str, Any] | None:
        return await self.get(WORKLOADS, ns, f"job-{job_name}")

    async def finish(self, name: str, ns: str = "ns") -> None:
        await self.patch(JOBS, ns, name, {"status": {"active": 0, "succeeded": 1, "conditions": [
            {"type": "Complete", "status": "True", "lastTransitionTime": micro_time(time.time())}]}}, "status")






def started(j: dict[str, Any]) -> bool:
    return j["spec"].get("suspend") is False


@pytest.fixture
def cluster() -> Any:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest_asyncio.fixture
async def user(cluster: EmulatedCluster) -> AsyncIterator[User]:
    async with aiohttp.ClientSession() as session:
        yield User(cluster.url, session)


async def setup_queues(user: User, quota: int = 8, preemption: dict[str, Any] | None = None) -> None:
    await user.create(flavor("a100", {"gpu.product": "A100"},
                             tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]))
    await user.create(cluster_queue("cq", {"a100": quota}, preemption=preemption))
    await user.create(local_queue("ns", "lq", "cq"))
    await user.create(priority_class("low", 1))
    await user.create(priority_class("high", 1000))
    await user.create(node("gpu-node", 8, {"gpu.product": "A100", "zone": "z1"}))


def operator_calls(cluster: EmulatedCluster) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every request kopf and the operator made to the emulator."""
    calls = set()
    for call in cluster.calls():
        if call.plural is None or call.group is None:
            continue  # discovery (/api, /apis/...): open to every authenticated client
        if not (call.agent.startswith("kopf/") or call.agent.startswith(USER_AGENT)):
            continue  # the test's own requests
        calls.add((call.group, call.plural + (f"/{call.subresource}" if call.subresource else ""), call.verb))
    return calls


def assert_calls_declared(cluster: EmulatedCluster) -> None:
    declared = {(group, resource, verb) for group, resource, verbs in API_CALLS for verb in verbs}
    undeclared = operator_calls(cluster) - declared
    assert not undeclared, f"API calls missing from API_CALLS (and docs/operator.md): {sorted(undeclared)}"


# --- 1. admission, pending reason, completion ----------------------------------------------------


async def test_admit_with_flavor_selector_keep_the_next_pending_and_release_on_completion(
        cluster: EmulatedCluster, user: User, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    await setup_queues(user, quota=8)
    async with running_operator(cluster, ledger_url=ledger_url):
        await user.create(job("ns", "first", "lq", gpus=2, parallelism=3, node_selector={"zone": "z1"}))
        first = await until(lambda: _started_job(user, "first"), what="first job started")
        pod = first["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"zone": "z1", "gpu.product": "A100"}
        assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert json.loads(first["metadata"]["annotations"][ORIGINAL_TEMPLATE_ANNOTATION])["nodeSelector"] == {"zone": "z1"}
        workload = await user.workload("first")
        assert workload is not None
        assert workload["metadata"]["ownerReferences"][0]["uid"] == first["metadata"]["uid"]
        assert condition(workload, "QuotaReserved")["status"] == "True"
        assert condition(workload, "Admitted")["status"] == "True"
        assert workload["status"]["admission"]["podSetAssignments"][0] == {
            "name": "main", "flavors": {GPU: "a100"}, "count": 3, "resourceUsage": {GPU: "6"}}

        await user.create(job("ns", "second", "lq", gpus=2, parallelism=2))  # 6 + 4 > 8
        waiting = await until(lambda: _pending_message(user, "second"), what="pending reason")
        assert "insufficient quota" in waiting and "a100" in waiting
        await asyncio.sleep(0.3)
        assert (await user.job("second"))["spec"]["suspend"] is True

        await user.finish("first")
        await until(lambda: _started_job(user, "second"), what="second job started after completion")
        done = await user.workload("first")
        assert condition(done, "Finished")["status"] == "True"
        assert condition(done, "Finished")["reason"] == "Succeeded"

    with Ledger(ledger_url) as ledger:
        intervals = {i.workload: i for i in ledger.intervals()}
    assert set(intervals) == {"ns/job-first", "ns/job-second"}
    assert intervals["ns/job-first"].end_reason == "Finished" and intervals["ns/job-first"].gpus == 6
    assert intervals["ns/job-second"].ended_at is None
    events = cluster.objects("v1/events")
    assert {"QuotaReserved", "Started", "Finished"} <= {e["reason"] for e in events}
    assert_calls_declared(cluster)


async def _started_job(user: User, name: str, ns: str = "ns") -> dict[str, Any] | None:
    j = await user.job(name, ns)
    return j if started(j) else None


async def _pending_message(user: User, name: str, ns: str = "ns") -> str | None:
    cond = condition(await user.workload(name, ns), "QuotaReserved")
    return cond.get("message") if cond.get("status") == "False" else None


# --- 2. preemption -------------------------------------------------------------------------------


async def test_higher_priority_job_preempts_and_the_victim_is_suspended_with_its_template_restored(
        cluster: EmulatedCluster, user: User) -> None:
    await setup_queues(user, quota=8, preemption={"withinClusterQueue": "LowerPriority"})
    async with running_operator(cluster):
        await user.create(job("ns", "low", "lq", gpus=4, parallelism=2, priority="low"))
        await until(lambda: _started_job(user, "low"), what="low-priority job started")
        # The Job controller reports running pods: the victim's quota is held until they are gone.
        await user.patch(JOBS, "ns", "low", {"status": {"active": 2}}, "status")

        await user.create(job("ns", "high", "lq", gpus=4, parallelism=2, priority="high"))
        victim = await until(lambda: _suspended_job(user, "low"), what="victim suspended")
        assert "nodeSelector" not in victim["spec"]["template"]["spec"]
        assert "tolerations" not in victim["spec"]["template"]["spec"]
        assert ORIGINAL_TEMPLATE_ANNOTATION not in (victim["metadata"].get("annotations") or {})
        evicted = await user.workload("low")
        assert condition(evicted, "Evicted")["reason"] == "Preempted"
        assert condition(evicted, "Preempted")["reason"] == "InClusterQueue"
        await asyncio.sleep(0.5)
        assert not started(await user.job("high")), "admitted while the victim's pods still run"

        await user.patch(JOBS, "ns", "low", {"status": {"active": 0}}, "status")  # pods terminated
        await until(lambda: _started_job(user, "high"), what="preemptor started")
        released = await user.workload("low")
        assert condition(released, "QuotaReserved")["status"] == "False"
        assert condition(released, "Requeued")["status"] == "True"
        assert "admission" not in released["status"]
        assert not started(await user.job("low"))
    assert_calls_declared(cluster)


async def _suspended_job(user: User, name: str) -> dict[str, Any] | None:
    j = await user.job(name)
    return j if j["spec"].get("suspend") is True else None


# --- 3. crash between the Workload update and the Job patch ------------------------------------


class Killed(BaseException):
    """The process dies: nothing after this point runs."""


async def test_killed_between_workload_update_and_job_patch_neither_loses_nor_double_admits(
        cluster: EmulatedCluster, user: User, tmp_path: Path) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    await setup_queues(user, quota=4)
    await user.create(job("ns", "a", "lq", gpus=4))

    operator = Operator(operator_config(cluster, ledger_url=ledger_url))
    patch = operator.api.patch

    async def dying_patch(resource: Resource, namespace: str | None, name: str, body: Any, **kw: Any) -> Any:
        if resource == JOBS and (body.get("spec") or {}).get("suspend") is False:
            raise Killed()
        return await patch(resource, namespace, name, body, **kw)

    operator.api.patch = dying_patch  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await asyncio.wait_for(operator.run(), timeout=20)
    recorded = await user.workload("a")
    assert condition(recorded, "QuotaReserved")["status"] == "True"  # the admission was recorded ...
    assert not started(await user.job("a"))  # ... and the Job never started

    await user.create(job("ns", "b", "lq", gpus=4))  # would fit only if a's quota were forgotten
    async with running_operator(cluster, ledger_url=ledger_url):
        resumed = await until(lambda: _started_job(user, "a"), what="a started after restart")
        assert resumed["spec"]["template"]["spec"]["nodeSelector"] == {"gpu.product": "A100"}
        await until(lambda: _pending_message(user, "b"), what="b pending")
        await asyncio.sleep(0.5)
        assert not started(await user.job("b"))
        again = await user.workload("a")
        assert condition(again, "QuotaReserved")["lastTransitionTime"] == \
            condition(recorded, "QuotaReserved")["lastTransitionTime"]  # not re-admitted
    with Ledger(ledger_url) as ledger:
        assert [(i.workload, i.ended_at) for i in ledger.intervals()] == [("ns/job-a", None)]


# --- 4. webhooks, metrics, health ---------------------------------------------------------------


def review(uid: str, group: str, version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": plural}, "operation": "CREATE",
        "userInfo": {"username": "alice"}, "namespace": obj["metadata"].get("namespace"), "object": obj}}


async def test_webhooks_metrics_and_health_over_http(cluster: EmulatedCluster, user: User) -> None:
    ports = {"webhook_port": free_port(), "metrics_port": free_port(), "health_port": free_port()}
    await setup_queues(user)
    # A session of its own, closed before the operator stops: kopf waits for connections it did not open.
    async with running_operator(cluster, webhook_insecure=True, **ports), aiohttp.ClientSession() as session:
        hook = f"http://127.0.0.1:{ports['webhook_port']}"
        queued = job("ns", "j", "lq", suspend=None)
        async with session.post(f"{hook}/mutate-job", json=review("u1", "batch", "v1", "jobs", queued)) as r:
            answer = await r.json()
        assert answer["response"]["uid"] == "u1" and answer["response"]["allowed"] is True
        assert json.loads(base64.b64decode(answer["response"]["patch"])) == [
            {"op": "add", "path": "/spec/suspend", "value": True}]
        free = job("ns", "k", None, suspend=None)
        async with session.post(f"{hook}/mutate-job", json=review("u2", "batch", "v1", "jobs", free)) as r:
            assert "patch" not in (await r.json())["response"]

        bad = cluster_queue("team-a", {"a100": 8})
        bad["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["lendingLimit"] = "2"
        bad_review = review("u3", "tessera.dev", "v1alpha1", "clusterqueues", bad)
        async with session.post(f"{hook}/validate-tessera", json=bad_review) as r:
            refused = (await r.json())["response"]
        assert refused["allowed"] is False
        assert refused["status"]["message"] == ("ClusterQueue/team-a: spec.resourceGroups[0].flavors[0].resources[0]"
                                                ".lendingLimit: may only be set with spec.cohort")
        good_review = review("u4", "tessera.dev", "v1alpha1", "clusterqueues", cluster_queue("cq2", {"a100": 8}))
        async with session.post(f"{hook}/validate-tessera", json=good_review) as r:
            assert (await r.json())["response"]["allowed"] is True

        async with session.post(f"{hook}/validate-tessera", data=b"{not json") as r:
            assert r.status == 400 and "malformed AdmissionReview" in (await r.json())["message"]
        async with session.post(f"{hook}/mutate-job", json={"kind": "AdmissionReview", "request": {"uid": "u5"}}) as r:
            malformed = (await r.json())["response"]
        assert malformed == {"uid": "u5", "allowed": False, "status": {
            "code": 400, "message": "malformed AdmissionReview: request.resource is missing or not a mapping"}}

        await user.create(job("ns", "m", "lq", gpus=1))
        await until(lambda: _started_job(user, "m"), what="job started")
        metrics_url = f"http://127.0.0.1:{ports['metrics_port']}/metrics"

        async def scraped() -> str | None:
            async with session.get(metrics_url) as r:
                text = await r.text()
            # the usage gauges follow on the pass after the admission (admission/scheduling.py)
            usage = 'tessera_cluster_queue_resource_usage{cluster_queue="cq",flavor="a100",resource="nvidia.com/gpu"} 1.0'
            return text if 'tessera_admitted_workloads_total{cluster_queue="cq"} 1.0' in text and usage in text else None

        text = await until(scraped, what="admission and usage counted in /metrics")
        assert "tessera_scheduling_cycle_seconds_count" in text
        health = f"http://127.0.0.1:{ports['health_port']}"
        async with session.get(f"{health}/healthz") as r:
            assert r.status == 200
        async with session.get(f"{health}/readyz") as r:
            assert r.status == 200 and (await r.json())["unsynced"] == []


# --- 5. leader election -------------------------------------------------------------------------


async def test_only_the_lease_holder_admits_and_a_stale_lease_is_taken_over(
        cluster: EmulatedCluster, user: User) -> None:
    await setup_queues(user)
    lease = await user.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                               "metadata": {"name": "tessera-operator", "namespace": "tessera-system"},
                               "spec": {"holderIdentity": "other-replica", "leaseDurationSeconds": 1,
                                        "renewTime": micro_time(time.time()), "leaseTransitions": 0}})
    await user.create(job("ns", "j", "lq", gpus=1))

    async def other_replica_renews() -> None:
        while True:
            await user.patch(LEASES, "tessera-system", "tessera-operator", {"spec": {"renewTime": micro_time(time.time())}})
            await asyncio.sleep(0.2)

    renewing = asyncio.create_task(other_replica_renews())
    try:
        async with running_operator(cluster, leader_election=True, lease_namespace="tessera-system", identity="me",
                           lease_duration=2.0, renew_deadline=1.5, retry_period=0.1) as operator:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:  # the holder keeps renewing: we must follow
                assert not operator.is_leader()
                await asyncio.sleep(0.05)
            assert await user.workload("j") is None, "a follower wrote a Workload"
            assert not started(await user.job("j"))
            renewing.cancel()  # the holder dies; its Lease goes stale after its 1 s duration
            await until(lambda: _started_job(user, "j"), timeout=10, what="admitted after the takeover")
            held = await user.get(LEASES, "tessera-system", "tessera-operator")
            assert held["spec"]["holderIdentity"] == "me" and held["spec"]["leaseTransitions"] == 1
            assert held["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"]
    finally:
        renewing.cancel()
    released = await user.get(LEASES, "tessera-system", "tessera-operator")
    assert not released["spec"].get("holderIdentity")  # released on shutdown
    assert_calls_declared(cluster)


async def test_two_electors_never_lead_together(cluster: EmulatedCluster) -> None:
    apis = [KubeApi(lambda: kopf.ConnectionInfo(server=cluster.url)) for _ in range(2)]
    electors = [LeaderElector(api, "ns", "lease", identity=f"r{i}", lease_duration=3, renew_deadline=2,
                              retry_period=0.1) for i, api in enumerate(apis)]
    try:
        for _ in range(5):
            results = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
            assert sum(results) == 1 and sum(e.is_leader for e in electors) == 1
        leader = next(e for e in electors if e.is_leader)
        follower = next(e for e in electors if not e.is_leader)
        await leader.release()
        assert await follower.try_acquire_or_renew() and not leader.is_leader
    finally:
        for api in apis:
            await api.close()


# --- 6. waitForPodsReady -----------------------------------------------------------------------


async def test_pods_not_ready_in_time_are_evicted_and_requeued_with_backoff(
        cluster: EmulatedCluster, user: User) -> None:
    await setup_queues(user)
    config = Configuration.model_validate({"waitForPodsReady": {"enable": True, "timeout": "1s",
                                                                "requeuingStrategy": {"backoffBaseSeconds": 4}}})
    # The backoff is long enough that the first requeue is observed (and the pods made ready)
    # before a second admission can time out again, even on a busy machine.
    async with running_operator(cluster, configuration=config, period=0.2):
        await user.create(job("ns", "slow", "lq", gpus=1))
        await until(lambda: _started_job(user, "slow"), what="admitted")
        evicted = await until(lambda: _requeued(user, "slow"), timeout=10, what="evicted and requeued")
        assert condition(evicted, "Evicted")["reason"] == "PodsReadyTimeout"
        assert evicted["status"]["requeueState"]["count"] == 1
        assert not started(await user.job("slow"))
        # Its pods will be ready this time; after the backoff it is admitted again and stays.
        await user.patch(JOBS, "ns", "slow", {"status": {"ready": 1}}, "status")
        ready = await until(lambda: _has_condition(user, "slow", "PodsReady"), timeout=20, what="PodsReady recorded")
        assert condition(ready, "QuotaReserved")["status"] == "True"
        assert started(await user.job("slow"))


async def _requeued(user: User, name: str) -> dict[str, Any] | None:
    w = await user.workload(name)
    return w if condition(w, "Requeued").get("status") == "True" and condition(w, "Evicted") else None


async def _has_condition(user: User, name: str, kind: str) -> dict[str, Any] | None:
    w = await user.workload(name)
    return w if condition(w, kind).get("status") == "True" else None


# --- 7. Jobs started outside the webhook, deleted Jobs, unmanaged Jobs ----------------------------


async def test_unsuspended_job_is_held_deleted_job_drops_its_workload_and_others_are_left_alone(
        cluster: EmulatedCluster, user: User) -> None:
    await setup_queues(user, quota=1)
    async with running_operator(cluster, namespaces=["ns"]):  # namespaced mode: kopf watches namespaces too
        await user.create(job("ns", "mine", "lq", gpus=1))
        await until(lambda: _started_job(user, "mine"), what="first admitted")
        await user.create(job("ns", "eager", "lq", gpus=1, suspend=False))  # no webhook ran
        await until(lambda: _suspended_job(user, "eager"), what="eager job held")
        await user.create(job("ns", "free", None, gpus=8, suspend=False))
        await user.delete(JOBS, "ns", "mine")
        await until(lambda: _absent(user, "mine"), what="orphaned Workload deleted")
        await until(lambda: _started_job(user, "eager"), what="eager job admitted once quota is free")
        assert started(await user.job("free")) and await user.workload("free") is None
    assert_calls_declared(cluster)


async def _absent(user: User, name: str) -> bool:
    return await user.workload(name) is None


# --- 8. optimistic concurrency -----------------------------------------------------------------


async def test_a_status_write_from_a_stale_view_is_refused_and_the_cache_refreshed(
        cluster: EmulatedCluster, user: User) -> None:
    from admission import workloads as wl
    from admission.scheduling import Controller
    from admission.state import ClusterState
    from admission.kube import WATCHED

    api = KubeApi(lambda: kopf.ConnectionInfo(server=cluster.url))
    try:
        created = await api.create(WORKLOADS, "ns", wl.workload_manifest(await user.create(job("ns", "j", "lq"))))
        state = ClusterState(r.plural for r in WATCHED)
        state.store("workloads", created)
        controller = Controller(api, state, lambda: None)  # type: ignore[arg-type, return-value]
        # Someone else (another leader, an admin) changes the Workload after our cache read it.
        moved = await user.patch(WORKLOADS, "ns", "job-j", {"status": {"conditions": [
            {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "elsewhere"}]}}, "status")
        record = {"clusterQueue": "cq", "podSetAssignments": []}
        assert await controller.write_status(created, wl.admitted_status(created, record, "2025-01-01T00:00:00Z")) is None
        stored = await user.workload("j")
        assert condition(stored, "QuotaReserved")["message"] == "elsewhere"  # our write did not land
        assert state.get("workloads", "ns", "job-j")["metadata"]["resourceVersion"] == moved["metadata"]["resourceVersion"]
        fresh = state.get("workloads", "ns", "job-j")
        assert await controller.write_status(fresh, wl.pending_status(fresh, "now from a fresh view", "2025-01-01T00:00:00Z"))
    finally:
        await api.close()


# --- 9. admission fair sharing -------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["kueue", "tessera"])
async def test_admission_fair_sharing_admits_the_less_used_local_queue_first(
        cluster: EmulatedCluster, user: User, policy: str) -> None:
    await setup_queues(user, quota=8)
    await user.create(local_queue("ns", "lq2", "cq"))
    config = Configuration.model_validate({"admissionFairSharing": {"usageHalfLifeTime": "1h"}})
    async with running_operator(cluster, configuration=config, policy=policy, period=0.2):
        await user.create(job("ns", "heavy", "lq", gpus=8))
        await until(lambda: _started_job(user, "heavy"), what="heavy started")
        await user.create(job("ns", "again", "lq", gpus=8))
        await until(lambda: _pending_message(user, "again"), what="again pending")
        await user.create(job("ns", "newcomer", "lq2", gpus=8))  # later, but its LocalQueue used nothing
        await until(lambda: _pending_message(user, "newcomer"), what="newcomer pending")
        await user.finish("heavy")
        await until(lambda: _started_job(user, "newcomer"), what="newcomer started first")
        assert not started(await user.job("again"))


# --- 10. stopping admitted work ----------------------------------------------------------------


async def test_deactivating_an_admitted_workload_evicts_it_and_keeps_it_out_of_the_queue(
        cluster: EmulatedCluster, user: User) -> None:
    await setup_queues(user, quota=8)
    async with running_operator(cluster, period=0.2):
        await user.create(job("ns", "first", "lq", gpus=8))
        await until(lambda: _started_job(user, "first"), what="first started")
        await user.create(job("ns", "second", "lq", gpus=8))
        await until(lambda: _pending_message(user, "second"), what="second pending")
        await user.patch(WORKLOADS, "ns", "job-first", {"spec": {"active": False}})
        await until(lambda: _suspended_job(user, "first"), what="first suspended")
        await until(lambda: _started_job(user, "second"), what="second admitted in its place")
        stopped = await user.workload("first")
        assert condition(stopped, "Evicted")["reason"] == "InactiveWorkload"
        assert condition(stopped, "QuotaReserved")["status"] == "False"
        assert condition(stopped, "Requeued")["status"] == "False"
        await asyncio.sleep(0.5)  # several passes: it is not requeued, nothing takes the quota back
        assert started(await user.job("second")) and not started(await user.job("first"))


# --- 11. namespaceSelector: the Namespaces' labels ----------------------------------------------


@pytest.mark.parametrize("policy", ["kueue", "tessera"])
async def test_a_namespace_selector_admits_by_the_namespaces_labels_and_follows_a_relabelling(
        cluster: EmulatedCluster, user: User, policy: str) -> None:
    await user.create(namespace("team-a", {"team": "a"}))
    await user.create(namespace("team-b"))
    await user.create(flavor("a100", {"gpu.product": "A100"}))
    await user.create(cluster_queue("cq", {"a100": 8}, namespaceSelector={"matchLabels": {"team": "a"}}))
    for ns in ("team-a", "team-b"):
        await user.create(local_queue(ns, "lq", "cq"))
    await user.create(node("gpu-node", 8, {"gpu.product": "A100"}))
    async with running_operator(cluster, policy=policy, period=0.2):
        await user.create(job("team-a", "a", "lq", gpus=1))
        await user.create(job("team-b", "b", "lq", gpus=1))
        await until(lambda: _started_job(user, "a", "team-a"), what="the Job in the selected namespace started")
        why = await until(lambda: _pending_message(user, "b", "team-b"), what="the other one's pending reason")
        assert "namespaceSelector" in why and "ClusterQueue cq" in why and "team-b" in why, why
        await asyncio.sleep(0.5)  # several passes: still not admitted
        assert not started(await user.job("b", "team-b"))

        # Labelled, the namespace is selected: its Job is admitted without anything else changing.
        await user.patch(NAMESPACES, None, "team-b", {"metadata": {"labels": {"team": "a"}}})
        await until(lambda: _started_job(user, "b", "team-b"), what="admitted once its namespace is labelled")

        # Unlabelled, team-a is no longer selected: what runs keeps running, a new Job waits.
        await user.patch(NAMESPACES, None, "team-a", {"metadata": {"labels": {"team": None}}})
        await user.create(job("team-a", "later", "lq", gpus=1))
        why = await until(lambda: _pending_message(user, "later", "team-a"), what="pending after the unlabelling")
        assert "namespaceSelector" in why and "team-a" in why, why
        assert started(await user.job("a", "team-a"))
        assert condition(await user.workload("a", "team-a"), "QuotaReserved")["status"] == "True"
    assert_calls_declared(cluster)


async def test_the_emulator_serves_namespaces_as_the_api_server_does(cluster: EmulatedCluster, user: User) -> None:
    created = await user.create(namespace("team-a", {"team": "a"}))
    assert created["metadata"]["labels"] == {"team": "a", "kubernetes.io/metadata.name": "team-a"}
    base = cluster.url + NAMESPACES.path()
    async with user.session.post(base, json=namespace("team-a")) as r:
        assert r.status == 409 and (await r.json())["reason"] == "AlreadyExists"
    stale = {"metadata": {"resourceVersion": "1", "labels": {"team": "b"}}}
    async with user.session.patch(base + "/team-a", json=stale,
                                  headers={"Content-Type": "application/merge-patch+json"}) as r:
        assert r.status == 409
    await user.create(local_queue("implicit", "lq", "cq"))  # a namespaced object creates its namespace
    async with user.session.get(base) as r:
        listing = await r.json()
    assert [n["metadata"]["name"] for n in listing["items"]] == ["default", "implicit", "team-a"]
    since = listing["metadata"]["resourceVersion"]

    relabelled = await user.patch(NAMESPACES, None, "team-a", {"metadata": {"labels": {"team": None, "x": "y"}}})
    assert relabelled["metadata"]["labels"] == {"x": "y", "kubernetes.io/metadata.name": "team-a"}
    await user.delete(NAMESPACES, None, "implicit")
    assert await user.get(NAMESPACES, None, "implicit") is None
    async with user.session.get(base, params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "1"}) as r:
        events = [json.loads(line) for line in (await r.text()).splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "team-a"),
                                                                              ("DELETED", "implicit")]
    assert {("", "namespaces", "watch"), ("", "namespaces", "delete")} <= {
        (c.group, c.plural, c.verb) for c in cluster.calls()}

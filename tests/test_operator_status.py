"""ClusterQueue and LocalQueue status (admission/queue_status.py): the pure computation from a snapshot,
the writer's change detection, and the real operator filling them in against kmock's emulator."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio

from admission import workloads as wl
from admission.kube import API_CALLS, CLUSTER_QUEUES, JOBS, LOCAL_QUEUES, USER_AGENT, WATCHED, NotFound, Resource
from admission.queue_status import (
    QueueStatusWriter,
    cluster_queue_statuses,
    local_queue_statuses,
    with_transition_times,
    without_times,
)
from admission.snapshot import build_cycle
from admission.state import ClusterState
from admission.testing import (
    condition,
    until,
    GPU,
    EmulatedCluster,
    cluster_queue,
    flavor,
    job,
    local_queue,
    node,
    running_operator,
)
from quotas.api import ClusterQueue, LocalQueue
from scheduler.workload import parse_timestamp

NOW = "2025-01-02T03:04:05Z"
LATER = "2025-01-02T03:10:00Z"
T = TypeVar("T")


def with_meta(obj: dict[str, Any], rv: str = "1", uid: str = "uid-1", created: str = NOW) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].update({"resourceVersion": rv, "uid": uid, "creationTimestamp": created})
    return obj


def state_of(*objs: tuple[str, dict[str, Any]]) -> ClusterState:
    state = ClusterState(r.plural for r in WATCHED)
    for plural, obj in objs:
        state.apply(plural, None, obj)
    state.synced.update(r.plural for r in WATCHED)
    return state


def admitted(ns: str, name: str, queue: str, cq: str, usage: dict[str, str], rv: str,
             **job_args: Any) -> list[tuple[str, dict[str, Any]]]:
    """A running Job and its Workload holding `usage` (resource -> quantity) in flavor a100 of `cq`."""
    j = with_meta(job(ns, name, queue, suspend=False, **job_args), uid=f"u-{name}")
    w = with_meta(wl.workload_manifest(j), rv=rv)
    record = {"clusterQueue": cq, "podSetAssignments": [
        {"name": "main", "flavors": {r: "a100" for r in usage}, "count": 1, "resourceUsage": dict(usage)}]}
    w["status"] = wl.admitted_status(w, record, NOW)
    return [("jobs", j), ("workloads", w)]


def pending(ns: str, name: str, queue: str, rv: str) -> list[tuple[str, dict[str, Any]]]:
    j = with_meta(job(ns, name, queue), uid=f"u-{name}")
    return [("jobs", j), ("workloads", with_meta(wl.workload_manifest(j), rv=rv))]


def gpu_and_cpu_queue(name: str, gpus: int, cpus: str, cohort: str | None = None) -> dict[str, Any]:
    cq = cluster_queue(name, {"a100": gpus}, cohort=cohort)
    group = cq["spec"]["resourceGroups"][0]
    group["coveredResources"] = [GPU, "cpu"]
    group["flavors"][0]["resources"].append({"name": "cpu", "nominalQuota": cpus})
    return cq


def statuses(*objs: tuple[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[Any, Any]]:
    snapshot = build_cycle(state_of(*objs), parse_timestamp(LATER)).snapshot
    cqs = cluster_queue_statuses(snapshot)
    return cqs, local_queue_statuses(snapshot, cqs)


READY_CQ = {"type": "Active", "status": "True", "reason": "Ready", "message": "Can admit new workloads"}
READY_LQ = {"type": "Active", "status": "True", "reason": "Ready", "message": "Can submit new workloads to localQueue"}


# --- the pure computation ---------------------------------------------------------------------


def test_counts_and_usage_per_flavor_with_borrowing_and_quantity_strings() -> None:
    evicting = admitted("other", "victim", "lq-a2", "cq-a", {GPU: "1"}, "22")
    victim_wl = evicting[1][1]
    victim_wl["status"] = wl.evicting_status(victim_wl, wl.EVICTED_BY_PREEMPTION, "for ns/x", NOW, "InClusterQueue")
    cqs, lqs = statuses(
        ("resourceflavors", flavor("a100", {"gpu": "a100"})),
        ("clusterqueues", gpu_and_cpu_queue("cq-a", 4, "10", cohort="all")),
        ("clusterqueues", cluster_queue("cq-b", {"a100": 8}, cohort="all")),
        ("localqueues", local_queue("ns", "lq-a", "cq-a")),
        ("localqueues", local_queue("other", "lq-a2", "cq-a")),
        ("localqueues", local_queue("ns", "lq-b", "cq-b")),
        ("nodes", node("n1", 16, {"gpu": "a100"})),
        *admitted("ns", "big", "lq-a", "cq-a", {GPU: "5", "cpu": "1500m"}, "20"),  # 5 + 1 > 4: borrows 2
        *evicting,  # still reserving until its pods are gone
        *pending("ns", "p1", "lq-a", "30"), *pending("ns", "p2", "lq-a", "31"), *pending("ns", "p3", "lq-b", "32"),
        *pending("ns", "lost", "no-such-queue", "33"),  # counted nowhere: its LocalQueue does not exist
    )
    assert cqs["cq-a"] == {
        "pendingWorkloads": 2, "reservingWorkloads": 2, "admittedWorkloads": 2,
        "flavorsReservation": [{"name": "a100", "resources": [
            {"name": GPU, "total": "6", "borrowed": "2"}, {"name": "cpu", "total": "1500m", "borrowed": "0"}]}],
        "flavorsUsage": [{"name": "a100", "resources": [
            {"name": GPU, "total": "6", "borrowed": "2"}, {"name": "cpu", "total": "1500m", "borrowed": "0"}]}],
        "conditions": [READY_CQ],
    }
    assert cqs["cq-b"]["pendingWorkloads"] == 1 and cqs["cq-b"]["admittedWorkloads"] == 0
    assert cqs["cq-b"]["flavorsReservation"] == [{"name": "a100", "resources": [
        {"name": GPU, "total": "0", "borrowed": "0"}]}]  # every flavor and resource of the spec, zeros included
    assert lqs[("ns", "lq-a")] == {
        "pendingWorkloads": 2, "reservingWorkloads": 1, "admittedWorkloads": 1,
        "flavorsReservation": [{"name": "a100", "resources": [{"name": GPU, "total": "5"}, {"name": "cpu", "total": "1500m"}]}],
        "flavorUsage": [{"name": "a100", "resources": [{"name": GPU, "total": "5"}, {"name": "cpu", "total": "1500m"}]}],
        "conditions": [READY_LQ],
    }
    assert lqs[("other", "lq-a2")]["reservingWorkloads"] == 1 and lqs[("other", "lq-a2")]["pendingWorkloads"] == 0
    assert lqs[("other", "lq-a2")]["flavorUsage"][0]["resources"][0] == {"name": GPU, "total": "1"}
    assert lqs[("ns", "lq-b")]["pendingWorkloads"] == 1 and lqs[("ns", "lq-b")]["flavorUsage"][0]["resources"] == [
        {"name": GPU, "total": "0"}]
    # What the operator writes is valid against the models (and so against the generated CRDs).
    ClusterQueue.model_validate({"metadata": {"name": "cq-a"}, "status": cqs["cq-a"]})
    LocalQueue.model_validate({"metadata": {"name": "lq-a", "namespace": "ns"}, "spec": {"clusterQueue": "cq-a"},
                               "status": lqs[("ns", "lq-a")]})


def test_finished_workloads_count_nowhere() -> None:
    done = admitted("ns", "done", "lq", "cq", {GPU: "2"}, "20")
    done_wl = done[1][1]
    done_wl["status"] = wl.finished_status(done_wl, "Succeeded", "ok", NOW)
    cqs, lqs = statuses(("resourceflavors", flavor("a100")), ("clusterqueues", cluster_queue("cq", {"a100": 8})),
                        ("localqueues", local_queue("ns", "lq", "cq")), *done)
    assert (cqs["cq"]["pendingWorkloads"], cqs["cq"]["reservingWorkloads"]) == (0, 0)
    assert cqs["cq"]["flavorsUsage"][0]["resources"] == [{"name": GPU, "total": "0", "borrowed": "0"}]
    assert lqs[("ns", "lq")]["admittedWorkloads"] == 0


def test_missing_flavor_missing_cluster_queue_and_stop_policies_make_queues_inactive() -> None:
    stopped = cluster_queue("held", {"a100": 8}, stopPolicy="Hold")
    stopped_lq = local_queue("ns", "paused", "cq")
    stopped_lq["spec"]["stopPolicy"] = "HoldAndDrain"
    cqs, lqs = statuses(
        ("resourceflavors", flavor("a100")),
        ("clusterqueues", cluster_queue("cq", {"a100": 8})),
        ("clusterqueues", cluster_queue("broken", {"a100": 8, "h100": 8, "b200": 4})),
        ("clusterqueues", stopped),
        ("localqueues", local_queue("ns", "lq", "cq")),
        ("localqueues", local_queue("ns", "to-broken", "broken")),
        ("localqueues", local_queue("ns", "to-nothing", "absent")),
        ("localqueues", stopped_lq),
    )
    assert cqs["cq"]["conditions"] == [READY_CQ]
    assert cqs["broken"]["conditions"] == [{
        "type": "Active", "status": "False", "reason": "FlavorNotFound",
        "message": "Can't admit new workloads: references missing ResourceFlavor(s): [b200 h100]."}]
    assert [f["name"] for f in cqs["broken"]["flavorsReservation"]] == ["a100", "h100", "b200"]  # spec order
    assert cqs["held"]["conditions"][0]["status"] == "False" and cqs["held"]["conditions"][0]["reason"] == "Stopped"
    assert lqs[("ns", "lq")]["conditions"] == [READY_LQ]
    assert lqs[("ns", "to-broken")]["conditions"][0] == {
        "type": "Active", "status": "False", "reason": "ClusterQueueIsInactive",
        "message": "Can't submit new workloads to clusterQueue"}
    assert lqs[("ns", "to-nothing")]["conditions"][0]["reason"] == "ClusterQueueDoesNotExist"
    assert lqs[("ns", "to-nothing")]["flavorUsage"] == []
    assert lqs[("ns", "paused")]["conditions"][0]["reason"] == "Stopped"


def test_observed_generation_is_the_queues_generation() -> None:
    cq = cluster_queue("cq", {"a100": 8})
    cq["metadata"]["generation"] = 3
    cqs, _ = statuses(("resourceflavors", flavor("a100")), ("clusterqueues", cq))
    assert cqs["cq"]["conditions"][0]["observedGeneration"] == 3


def test_transition_times_are_kept_while_the_condition_holds() -> None:
    ready = {"pendingWorkloads": 1, "conditions": [READY_CQ]}
    first = with_transition_times(ready, None, NOW)
    assert first["conditions"][0]["lastTransitionTime"] == NOW
    again = with_transition_times({**ready, "pendingWorkloads": 5}, first, LATER)
    assert again["conditions"][0]["lastTransitionTime"] == NOW
    flipped = with_transition_times({"conditions": [{**READY_CQ, "status": "False", "reason": "FlavorNotFound"}]},
                                    again, LATER)
    assert flipped["conditions"][0]["lastTransitionTime"] == LATER
    assert without_times(flipped) == {"conditions": [{**READY_CQ, "status": "False", "reason": "FlavorNotFound"}]}


# --- the writer: patch only what changed --------------------------------------------------------


class FakeApi:
    """Records status patches and answers as the API server would (the object with the new status)."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.rv = 100
        self.gone: set[str] = set()

    async def patch(self, resource: Resource, namespace: str | None, name: str, body: Any, *,
                    subresource: str | None = None, **_: Any) -> dict[str, Any]:
        assert subresource == "status" and set(body) == {"status"}
        if name in self.gone:
            raise NotFound(404, "NotFound", f"{name} not found")
        self.patches.append((resource.plural, name, body["status"]))
        self.rv += 1
        current = copy.deepcopy(self.state.get(resource.plural, namespace or "", name))
        current["metadata"]["resourceVersion"] = str(self.rv)
        current["status"] = copy.deepcopy(body["status"])
        return current


@pytest.mark.asyncio
async def test_the_writer_patches_only_queues_whose_status_changed() -> None:
    base = [("resourceflavors", flavor("a100")),
            ("clusterqueues", with_meta(cluster_queue("cq", {"a100": 8}), rv="1")),
            ("clusterqueues", with_meta(cluster_queue("cq2", {"a100": 8}), rv="2")),
            ("localqueues", with_meta(local_queue("ns", "lq", "cq"), rv="3")),
            ("nodes", node("n1", 8))]
    state = state_of(*base, *pending("ns", "p1", "lq", "10"))
    api = FakeApi(state)
    writer = QueueStatusWriter(api, state, min_interval=0)  # type: ignore[arg-type]
    assert await writer.publish(build_cycle(state, parse_timestamp(NOW)).snapshot, NOW) == 3
    assert sorted((p, n) for p, n, _ in api.patches) == [("clusterqueues", "cq"), ("clusterqueues", "cq2"),
                                                         ("localqueues", "lq")]
    written = {n: s for _, n, s in api.patches}
    assert written["cq"]["pendingWorkloads"] == 1 and written["cq"]["conditions"][0]["lastTransitionTime"] == NOW
    assert state.get("clusterqueues", "", "cq")["status"] == written["cq"]  # the cache holds what was written

    api.patches.clear()
    assert await writer.publish(build_cycle(state, parse_timestamp(LATER)).snapshot, LATER) == 0  # nothing changed

    for plural, obj in pending("ns", "p2", "lq", "11"):  # one more pending: cq and lq change, cq2 does not
        state.apply(plural, "ADDED", obj)
    assert await writer.publish(build_cycle(state, parse_timestamp(LATER)).snapshot, LATER) == 2
    assert sorted(n for _, n, _ in api.patches) == ["cq", "lq"]
    assert api.patches[0][2]["conditions"][0]["lastTransitionTime"] == NOW  # Active held: its time is kept

    api.patches.clear()  # someone else overwrote cq2's status: it is written again
    cq2 = copy.deepcopy(state.get("clusterqueues", "", "cq2"))
    cq2["metadata"]["resourceVersion"] = "500"
    cq2["status"] = {"pendingWorkloads": 42}
    state.apply("clusterqueues", "MODIFIED", cq2)
    assert await writer.publish(build_cycle(state, parse_timestamp(LATER)).snapshot, LATER) == 1
    assert [n for _, n, _ in api.patches] == ["cq2"]

    api.gone.add("lq")  # deleted behind the cache's back: forgotten, not retried forever
    for plural, obj in pending("ns", "p3", "lq", "12"):
        state.apply(plural, "ADDED", obj)
    await writer.publish(build_cycle(state, parse_timestamp(LATER)).snapshot, LATER)
    assert state.get("localqueues", "ns", "lq") is None and ("localqueues", ("ns", "lq")) not in writer.written


@pytest.mark.asyncio
async def test_background_publishing_writes_the_newest_snapshot() -> None:
    base = [("resourceflavors", flavor("a100")), ("clusterqueues", with_meta(cluster_queue("cq", {"a100": 8}))),
            ("localqueues", with_meta(local_queue("ns", "lq", "cq"), rv="2")), ("nodes", node("n1", 8))]
    state = state_of(*base, *pending("ns", "p1", "lq", "10"))
    older = build_cycle(state, parse_timestamp(NOW)).snapshot
    for plural, obj in pending("ns", "p2", "lq", "11"):
        state.apply(plural, "ADDED", obj)
    newer = build_cycle(state, parse_timestamp(NOW)).snapshot
    api = FakeApi(state)
    writer = QueueStatusWriter(api, state, min_interval=0)  # type: ignore[arg-type]
    writer.publish_soon(older, NOW)
    writer.publish_soon(newer, NOW)  # handed over before the first was written: replaces it
    await writer.idle()
    assert sorted((n, s["pendingWorkloads"]) for _, n, s in api.patches) == [("cq", 2), ("lq", 2)]
    writer.publish_soon(newer, LATER)
    await writer.idle()
    assert len(api.patches) == 2  # unchanged: nothing written

    leading = [False]  # a replica that lost the Lease writes nothing more in the background
    follower = QueueStatusWriter(api, state, min_interval=0, is_leader=lambda: leading[0])  # type: ignore[arg-type]
    follower.publish_soon(older, LATER)
    await follower.idle()
    assert len(api.patches) == 2


@pytest.mark.asyncio
async def test_count_changes_are_written_at_most_once_per_interval_condition_changes_at_once() -> None:
    state = state_of(("resourceflavors", with_meta(flavor("a100"))),
                     ("clusterqueues", with_meta(cluster_queue("cq", {"a100": 8}))), ("nodes", node("n1", 8)),
                     *pending("ns", "p1", "lq", "10"))
    api = FakeApi(state)
    writer = QueueStatusWriter(api, state, min_interval=0.3)  # type: ignore[arg-type]
    assert await writer.publish(build_cycle(state, parse_timestamp(NOW)).snapshot, NOW) == 1
    state.apply("localqueues", "ADDED", with_meta(local_queue("ns", "lq", "cq"), rv="20"))  # p1 now counts in cq
    assert await writer.publish(build_cycle(state, parse_timestamp(NOW)).snapshot, NOW) == 1  # the new lq only
    assert [n for _, n, _ in api.patches] == ["cq", "lq"]
    await asyncio.sleep(0.45)  # the held-back count is written by the writer's timer, from the newest snapshot
    await writer.idle()
    assert [(n, s["pendingWorkloads"]) for _, n, s in api.patches] == [("cq", 0), ("lq", 1), ("cq", 1)]

    state.forget("resourceflavors", ("", "a100"))  # Active turns False: written at once, interval or not
    assert await writer.publish(build_cycle(state, parse_timestamp(LATER)).snapshot, LATER) == 2
    assert api.patches[-2][2]["conditions"][0]["reason"] == "FlavorNotFound"
    assert api.patches[-1][2]["conditions"][0]["reason"] == "ClusterQueueIsInactive"

    overwritten = copy.deepcopy(state.get("clusterqueues", "", "cq"))  # someone else changed it: put right at once
    overwritten["metadata"]["resourceVersion"] = "900"
    overwritten["status"]["pendingWorkloads"] = 7
    state.apply("clusterqueues", "MODIFIED", overwritten)
    assert await writer.publish(build_cycle(state, parse_timestamp(LATER)).snapshot, LATER) == 1
    assert api.patches[-1][1:] == ("cq", {**api.patches[-3][2]})


@pytest.mark.asyncio
async def test_due_says_when_no_snapshot_was_handed_over_for_an_interval() -> None:
    state = state_of(("resourceflavors", flavor("a100")), ("clusterqueues", with_meta(cluster_queue("cq", {"a100": 8}))))
    clock = [100.0]
    writer = QueueStatusWriter(FakeApi(state), state, min_interval=1.0, clock=lambda: clock[0])  # type: ignore[arg-type]
    assert writer.due()  # nothing handed over yet
    writer.publish_soon(build_cycle(state, parse_timestamp(NOW)).snapshot, NOW)
    clock[0] += 0.5
    assert not writer.due()
    clock[0] += 0.5
    assert writer.due()
    await writer.idle()


@pytest.mark.asyncio
async def test_a_restarted_writer_does_not_rewrite_a_status_the_api_already_shows() -> None:
    state = state_of(("resourceflavors", flavor("a100")), ("clusterqueues", with_meta(cluster_queue("cq", {"a100": 8}))),
                     ("nodes", node("n1", 8)))
    snapshot = build_cycle(state, parse_timestamp(NOW)).snapshot
    shown = with_meta(cluster_queue("cq", {"a100": 8}), rv="7")
    shown["status"] = with_transition_times(cluster_queue_statuses(snapshot)["cq"], None, NOW)
    state.apply("clusterqueues", "MODIFIED", shown)
    api = FakeApi(state)
    assert await QueueStatusWriter(api, state).publish(snapshot, LATER) == 0  # type: ignore[arg-type]
    assert api.patches == []


# --- the real operator against the emulator ---------------------------------------------------




@pytest.fixture
def cluster() -> Any:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def create(session: aiohttp.ClientSession, url: str, resource: Resource, obj: dict[str, Any]) -> None:
    async with session.post(url + resource.path(obj["metadata"].get("namespace")), json=obj) as r:
        assert r.status < 300, await r.text()


def status_patches(cluster: EmulatedCluster) -> int:
    return sum(1 for c in cluster.calls() if c.agent.startswith(USER_AGENT) and c.subresource == "status"
               and c.plural in ("clusterqueues", "localqueues"))


@pytest.mark.asyncio
async def test_operator_reports_one_admitted_one_pending_and_the_usage(
        cluster: EmulatedCluster, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tessera.controller")
    url = cluster.url
    rf = Resource("tessera.dev", "v1alpha1", "resourceflavors", False)
    nodes = Resource("", "v1", "nodes", False)
    await create(session, url, rf, flavor("a100", {"gpu.product": "A100"}))
    await create(session, url, CLUSTER_QUEUES, cluster_queue("cq", {"a100": 4}))
    await create(session, url, CLUSTER_QUEUES, cluster_queue("no-flavor", {"h100": 4}))
    await create(session, url, LOCAL_QUEUES, local_queue("ns", "lq", "cq"))
    await create(session, url, LOCAL_QUEUES, local_queue("ns", "orphan", "absent"))
    await create(session, url, nodes, node("gpu-node", 8, {"gpu.product": "A100"}))

    def cq_status(name: str = "cq") -> dict[str, Any]:
        return (cluster.object("tessera.dev/v1alpha1/clusterqueues", None, name) or {}).get("status") or {}

    def lq_status(name: str = "lq") -> dict[str, Any]:
        return (cluster.object("tessera.dev/v1alpha1/localqueues", "ns", name) or {}).get("status") or {}

    async with running_operator(cluster, period=0.3):
        await create(session, url, JOBS, job("ns", "first", "lq", gpus=4))
        await until(lambda: _async(cq_status().get("admittedWorkloads") == 1), what="first admitted in the status")
        await create(session, url, JOBS, job("ns", "second", "lq", gpus=2))
        await until(lambda: _async(cq_status().get("pendingWorkloads") == 1 and lq_status().get("pendingWorkloads") == 1),
                    what="second pending in the statuses")
        cq, lq = cq_status(), lq_status()
        assert (cq["pendingWorkloads"], cq["reservingWorkloads"], cq["admittedWorkloads"]) == (1, 1, 1)
        assert cq["flavorsReservation"] == cq["flavorsUsage"] == [
            {"name": "a100", "resources": [{"name": GPU, "total": "4", "borrowed": "0"}]}]
        [active] = cq["conditions"]
        assert (active["type"], active["status"], active["reason"]) == ("Active", "True", "Ready")
        assert active["lastTransitionTime"].endswith("Z")
        assert (lq["pendingWorkloads"], lq["reservingWorkloads"], lq["admittedWorkloads"]) == (1, 1, 1)
        assert lq["flavorUsage"] == lq["flavorsReservation"] == [{"name": "a100", "resources": [{"name": GPU, "total": "4"}]}]
        assert lq["conditions"][0]["status"] == "True"
        broken = cq_status("no-flavor")["conditions"][0]
        assert (broken["status"], broken["reason"]) == ("False", "FlavorNotFound") and "[h100]" in broken["message"]
        assert lq_status("orphan")["conditions"][0]["reason"] == "ClusterQueueDoesNotExist"

        # Steady state: passes keep running (period 0.3 s) but nothing is rewritten.
        writes = status_patches(cluster)
        await asyncio.sleep(1.2)
        assert status_patches(cluster) == writes

        # The first Job completes: its quota goes to the second one.
        async with session.patch(url + JOBS.path("ns", "first", "status"), json={"status": {"conditions": [
                {"type": "Complete", "status": "True"}], "succeeded": 1}},
                headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status < 300
        await until(lambda: _async(cq_status().get("pendingWorkloads") == 0
                                   and cq_status()["flavorsUsage"][0]["resources"][0]["total"] == "2"
                                   and lq_status().get("pendingWorkloads") == 0),  # both patches landed
                    what="second admitted in the statuses")
        assert lq_status()["admittedWorkloads"] == 1 and lq_status()["flavorUsage"][0]["resources"][0]["total"] == "2"
        assert cq_status()["conditions"][0]["lastTransitionTime"] == active["lastTransitionTime"]

    # The controller's key log lines carry structured fields (admission/logs.py writes them as JSON keys).
    fields = [(r.getMessage().split()[2], getattr(r, "workload", None), getattr(r, "namespace", None),
               getattr(r, "job", None), getattr(r, "cluster_queue", None), getattr(r, "reason", None))
              for r in caplog.records if r.name == "tessera.controller" and hasattr(r, "workload")]
    assert fields == [("admitted", "job-first", "ns", "first", "cq", "QuotaReserved"),
                      ("finished", "job-first", "ns", "first", "cq", "Succeeded"),
                      ("admitted", "job-second", "ns", "second", "cq", "QuotaReserved")]

    declared = {(g, r, v) for g, r, verbs in API_CALLS for v in verbs}
    made = {(c.group, c.plural + (f"/{c.subresource}" if c.subresource else ""), c.verb) for c in cluster.calls()
            if c.plural and c.group is not None and c.agent.startswith(USER_AGENT)}
    assert ("tessera.dev", "clusterqueues/status", "patch") in made
    assert ("tessera.dev", "localqueues/status", "patch") in made
    assert made <= declared, sorted(made - declared)


async def _async(value: T) -> T:
    return value

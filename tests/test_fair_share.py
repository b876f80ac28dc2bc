"""The operator's memory between cycles: admission fair sharing charged from snapshots, nominations."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from admission.fair_share import FairShareTracker, with_nominations
from quotas.api import Configuration
from scheduler.snapshot import Pending
from scheduler.workload import PodSetInfo, WorkloadInfo
from scheduler.cluster import PodRequest

AFS = Configuration.model_validate({"admissionFairSharing": {"usageHalfLifeTime": "1h"}})


def admitted(name: str, lq: str, gpus: int) -> Any:
    return SimpleNamespace(key=f"ns/{name}", usage={("a100", "nvidia.com/gpu"): gpus * 1000},
                           workload=SimpleNamespace(namespace="ns", local_queue=lq))


def snap(now: float, *running: Any) -> Any:
    return SimpleNamespace(now=now, admitted=list(running), pending=[])


def test_charged_once_per_admission_and_released_when_gone() -> None:
    tracker = FairShareTracker(AFS)
    afs = tracker.sync(snap(0.0, admitted("a", "lq", 8)))
    assert afs is not None and afs.admitted("ns/lq") == {"nvidia.com/gpu": 8.0}
    charged = afs.consumed("ns/lq", at=0.0)
    assert charged["nvidia.com/gpu"] > 0  # the entry penalty
    tracker.sync(snap(0.0, admitted("a", "lq", 8)))  # the same admission seen again: no second penalty
    assert afs.consumed("ns/lq", at=0.0) == charged
    tracker.sync(snap(600.0))
    assert afs.admitted("ns/lq") == {}
    assert afs.usage("ns/lq", at=600.0) > 0  # what it consumed decays, it does not vanish
    assert afs.usage("ns/other", at=600.0) == 0


def test_without_the_setting_there_is_nothing_to_track() -> None:
    assert FairShareTracker(Configuration()).sync(snap(0.0, admitted("a", "lq", 8))) is None


class History:
    """A ledger's history: ns/lq consumed 100 GPU units, and one workload of it still runs."""

    def decayed_usage(self, local_queues: Any, *, now: float, half_life: float, sampling_interval: float) -> dict[str, dict[str, float]]:
        return {"ns/lq": {"nvidia.com/gpu": 100.0}}

    def admitted_usage(self, local_queues: Any, *, at: float) -> dict[str, dict[str, float]]:
        return {"ns/lq": {"nvidia.com/gpu": 8.0}}


def test_seeded_from_the_ledger_without_charging_what_it_already_counts() -> None:
    tracker = FairShareTracker(AFS, ledger=History())
    asyncio.run(tracker.seed(50.0))
    afs = tracker.sync(snap(50.0, admitted("a", "lq", 8)))
    assert afs is not None
    assert afs.admitted("ns/lq") == {"nvidia.com/gpu": 8.0}  # not 16
    assert afs.consumed("ns/lq", at=50.0) == {"nvidia.com/gpu": 100.0}  # no entry penalty on top
    tracker.sync(snap(60.0, admitted("a", "lq", 8), admitted("b", "lq", 8)))  # a new one is charged
    assert afs.admitted("ns/lq") == {"nvidia.com/gpu": 16.0}


def test_a_broken_ledger_leaves_usage_at_zero() -> None:
    class Broken:
        def decayed_usage(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("database is locked")

    tracker = FairShareTracker(AFS, ledger=Broken())
    asyncio.run(tracker.seed(0.0))
    afs = tracker.sync(snap(0.0, admitted("a", "lq", 8)))
    assert afs is not None and afs.admitted("ns/lq") == {"nvidia.com/gpu": 8.0}


def test_nominations_reach_only_their_pending_workloads() -> None:
    def pending(name: str) -> Pending:
        podset = PodSetInfo("main", 1, PodRequest.of({"nvidia.com/gpu": 1000}))
        return Pending(WorkloadInfo(namespace="ns", name=name, local_queue="lq", podsets=(podset,)), queued_at=0.0)

    s = SimpleNamespace(pending=[pending("p"), pending("q")])
    with_nominations(s, {"ns/p": frozenset({"node-1"}), "ns/gone": frozenset({"node-2"})})
    assert [(p.key, p.nominated_nodes) for p in s.pending] == [("ns/p", frozenset({"node-1"})), ("ns/q", frozenset())]

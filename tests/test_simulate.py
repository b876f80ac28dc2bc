"""`tessera simulate` end to end on small manifests, and the engine's lifecycle rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scheduler.decisions import make_policy
from scheduler.snapshot import Snapshot
from simulator.run import binder_for, load_inputs
from simulator.engine import Simulation
from tessera.cli import app

runner = CliRunner()

QUEUES = """
apiVersion: tessera.dev/v1alpha1
kind: ResourceFlavor
metadata: {name: gpu}
---
apiVersion: tessera.dev/v1alpha1
kind: ClusterQueue
metadata: {name: team}
spec:
  namespaceSelector: {}
  resourceGroups:
  - coveredResources: [cpu, memory, nvidia.com/gpu]
    flavors:
    - name: gpu
      resources:
      - {name: cpu, nominalQuota: 256}
      - {name: memory, nominalQuota: 2Ti}
      - {name: nvidia.com/gpu, nominalQuota: 32}
---
apiVersion: tessera.dev/v1alpha1
kind: LocalQueue
metadata: {name: q, namespace: ml}
spec: {clusterQueue: team}
---
apiVersion: tessera.dev/v1alpha1
kind: Configuration
waitForPodsReady: {enable: true, timeout: 10m, requeuingStrategy: {backoffBaseSeconds: 60, backoffLimitCount: 10}}
"""


def job(name: str, gpus: int, pods: int, submit: float, duration: float) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"tessera.dev/queue-name": "q"},
            "annotations": {"tessera.dev/sim-submit-at": str(submit), "tessera.dev/sim-duration": str(duration)},
        },
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "template": {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": gpus}}}]}},
        },
    }


def files(tmp_path: Path, write_yaml: Callable[..., Path], jobs: list[dict[str, Any]], nodes: int = 2) -> list[str]:
    nodes_file = tmp_path / "nodes.yaml"
    result = runner.invoke(app, ["cluster", "generate", "--nodes", str(nodes), "--gpus-per-node", "8", "--gpu-model", "H100",
                                 "--racks", "1", "--blocks", "1", "-o", str(nodes_file)])
    assert result.exit_code == 0, result.output
    queues = write_yaml("queues.yaml", QUEUES)
    jobs_file = write_yaml("jobs.yaml", *jobs)
    return ["--cluster", str(nodes_file), "--queues", str(queues), "--workload", str(jobs_file)]


def test_json_shape_and_determinism(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    args = files(tmp_path, write_yaml, [job("a", 4, 1, 0, 100), job("b", 8, 1, 10, 50), job("c", 8, 2, 20, 30)])
    result = runner.invoke(app, ["simulate", *args, "--policy", "kueue,bestfit", "--json", "--seed", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["policy"] for r in data["results"]] == ["kueue", "bestfit"]
    for run in data["results"]:
        metrics = run["metrics"]
        for key in ("gpu_utilization", "gpu_utilization_busy", "workloads", "admitted", "finished", "never_admitted",
                    "preemptions", "mean_wait_s", "p95_wait_s", "mean_jct_s", "makespan_s",
                    "cycle_latency_p50_ms", "cycle_latency_p99_ms"):
            assert key in metrics
        assert metrics["workloads"] == 3 and metrics["finished"] == 3
        assert 0.0 < metrics["gpu_utilization"] <= 1.0
        for w in run["workloads"]:
            assert set(w) == {"name", "namespace", "queue", "submitted_at", "admitted_at", "started_at", "finished_at",
                              "preemptions", "flavor", "nodes"}
            assert w["namespace"] == "ml" and w["queue"] == "q" and w["flavor"] == "gpu"
            assert w["admitted_at"] <= w["started_at"] <= w["finished_at"]
    again = json.loads(runner.invoke(app, ["simulate", *args, "--policy", "kueue,bestfit", "--json", "--seed", "3"]).stdout)
    assert [untimed(r) for r in again["results"]] == [untimed(r) for r in data["results"]]


TIMING = ("cycle_latency_p50_ms", "cycle_latency_p99_ms", "wall_s")


def untimed(run: dict[str, Any]) -> dict[str, Any]:
    """A run without its wall-clock measurements, which differ between identical runs."""
    return {**run, "metrics": {k: v for k, v in run["metrics"].items() if k not in TIMING}}


def test_finish_time_is_start_plus_duration(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    args = files(tmp_path, write_yaml, [job("a", 8, 2, 5, 100), job("b", 8, 1, 6, 40)])
    data = json.loads(runner.invoke(app, ["simulate", *args, "--policy", "bestfit", "--json"]).stdout)
    by_name = {w["name"]: w for w in data["results"][0]["workloads"]}
    assert by_name["job-a"]["started_at"] == 5 and by_name["job-a"]["finished_at"] == 105
    # b needs a whole node that a holds until 105: it waits for it.
    assert by_name["job-b"]["started_at"] == 105 and by_name["job-b"]["finished_at"] == 145
    assert len(by_name["job-a"]["nodes"]) == 2


def test_kueue_admits_by_quota_and_wait_for_pods_ready_evicts(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    # Two nodes of 8 GPUs. Three single-GPU pods spread by LeastAllocated leave no node whole, so the
    # 2 x 8 GPU gang is admitted by quota but cannot bind: it is evicted after 10 minutes and
    # requeued with backoff, and starts once the small jobs end.
    jobs = [job(f"s{i}", 1, 1, 0, 3000) for i in range(3)] + [job("gang", 8, 2, 1, 100)]
    args = files(tmp_path, write_yaml, jobs)
    data = json.loads(runner.invoke(app, ["simulate", *args, "--policy", "kueue", "--json"]).stdout)
    gang = next(w for w in data["results"][0]["workloads"] if w["name"] == "job-gang")
    assert gang["started_at"] is not None and gang["started_at"] >= 3000
    # Times are those of the last admission (DESIGN.md), which found the nodes free.
    assert gang["admitted_at"] == gang["started_at"] == 3301
    inputs = load_inputs(*args[1::2], seed=0)
    policy = make_policy("kueue")
    result = Simulation(inputs.setup, policy, binder_for(policy)).run()
    record = next(w for w in result.workloads if w.name == "job-gang")
    # Evicted at 601, 1261, 1981 and 2821 (backoff 60, 120, 240, 480 s), started at 3301.
    assert record.evictions == 4 and record.started_at == 3301
    # With backoffLimitCount 2 the third eviction deactivates it: it never starts.
    strategy = inputs.setup.config.wait_for_pods_ready.requeuing_strategy
    strategy.backoff_limit_count = 2
    policy = make_policy("kueue")
    record = next(w for w in Simulation(inputs.setup, policy, binder_for(policy)).run().workloads if w.name == "job-gang")
    assert record.deactivated and record.started_at is None and record.evictions == 3


def test_out_writes_report_files(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    args = files(tmp_path, write_yaml, [job("a", 4, 1, 0, 100), job("b", 8, 1, 10, 50)])
    out = tmp_path / "out"
    result = runner.invoke(app, ["simulate", *args, "--policy", "kueue", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("results.sqlite", "report.html"):
        assert (out / name).stat().st_size > 0
    assert list(out.glob("*.png"))
    assert "kueue" in result.stdout


def test_bad_inputs_exit_2_naming_the_file(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    args = files(tmp_path, write_yaml, [job("a", 4, 1, 0, 100)])
    bad = write_yaml("bad.yaml", QUEUES.replace("nominalQuota: 32", "nominalQuota: lots"))
    result = runner.invoke(app, ["simulate", "--cluster", args[1], "--queues", str(bad), "--workload", args[5]])
    assert result.exit_code == 2
    assert f"{bad}:2: ClusterQueue/team" in result.stderr and "nominalQuota" in result.stderr
    result = runner.invoke(app, ["simulate", *args, "--policy", "slurm"])
    assert result.exit_code == 2 and "unknown policy" in result.stderr
    result = runner.invoke(app, ["simulate", *args, "--mode", "sideways"])
    assert result.exit_code == 2 and "--mode" in result.stderr
    unknown_queue = write_yaml("j2.yaml", {**job("x", 1, 1, 0, 1), "metadata": {**job("x", 1, 1, 0, 1)["metadata"], "labels": {"tessera.dev/queue-name": "nope"}}})
    result = runner.invoke(app, ["simulate", "--cluster", args[1], "--queues", args[3], "--workload", str(unknown_queue)])
    assert result.exit_code == 2 and "nope" in result.stderr


def test_admission_fair_sharing_orders_local_queues(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    # Queue "q" has used the cluster before; with admission fair sharing the newcomer "r" goes first
    # even though its job arrived later.
    second_queue = "---\napiVersion: tessera.dev/v1alpha1\nkind: LocalQueue\nmetadata: {name: r, namespace: ml}\nspec: {clusterQueue: team}\n"
    with_afs = QUEUES.replace("waitForPodsReady:", "admissionFairSharing: {usageHalfLifeTime: 1h}\nwaitForPodsReady:") + second_queue
    other = job("late", 8, 4, 20, 100)
    other["metadata"]["labels"] = {"tessera.dev/queue-name": "r"}
    jobs = [job("first", 8, 4, 0, 100), job("second", 8, 4, 10, 100), other]
    args = files(tmp_path, write_yaml, jobs, nodes=4)
    args[3] = str(write_yaml("queues-afs.yaml", with_afs))
    data = json.loads(runner.invoke(app, ["simulate", *args, "--policy", "bestfit,tessera", "--json"]).stdout)
    for run in data["results"]:
        by_name = {w["name"]: w for w in run["workloads"]}
        assert by_name["job-late"]["started_at"] == 100 and by_name["job-second"]["started_at"] == 200, run["policy"]
    args[3] = str(write_yaml("queues-plain.yaml", QUEUES + second_queue))
    plain = json.loads(runner.invoke(app, ["simulate", *args, "--policy", "bestfit,tessera", "--json"]).stdout)
    for run in plain["results"]:
        by_name = {w["name"]: w for w in run["workloads"]}
        assert by_name["job-second"]["started_at"] == 100 and by_name["job-late"]["started_at"] == 200, run["policy"]


def test_tessera_places_pods_at_admission(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    # The case where Kueue's spreading strands the gang: tessera packs the small jobs and the
    # gang starts at once, with no eviction.
    jobs = [job(f"s{i}", 1, 1, 0, 3000) for i in range(3)] + [job("gang", 8, 1, 1, 100)]
    args = files(tmp_path, write_yaml, jobs)
    data = json.loads(runner.invoke(app, ["simulate", *args, "--policy", "tessera,kueue", "--json"]).stdout)
    tessera, kueue = ({w["name"]: w for w in run["workloads"]} for run in data["results"])
    assert all(w["admitted_at"] == w["started_at"] for w in tessera.values())
    assert tessera["job-gang"]["started_at"] == 1
    assert kueue["job-gang"]["started_at"] > 1


def test_default_run_compares_tessera_and_kueue() -> None:
    result = runner.invoke(app, ["simulate", "--json"])
    assert result.exit_code == 0, result.output
    runs = {r["policy"]: r for r in json.loads(result.stdout)["results"]}
    assert set(runs) == {"tessera", "kueue"}
    for run in runs.values():
        assert run["metrics"]["workloads"] == len(run["workloads"]) >= 400
        assert run["metrics"]["admitted"] > 0


RECLAIM_QUEUES = """
apiVersion: tessera.dev/v1alpha1
kind: ResourceFlavor
metadata: {name: gpu}
---
apiVersion: tessera.dev/v1alpha1
kind: WorkloadPriorityClass
metadata: {name: high}
value: 100
---
apiVersion: tessera.dev/v1alpha1
kind: ClusterQueue
metadata: {name: prod}
spec:
  cohort: all
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: prod}}
  preemption: {reclaimWithinCohort: Any, withinClusterQueue: LowerPriority}
  resourceGroups:
  - coveredResources: [cpu, memory, nvidia.com/gpu]
    flavors:
    - name: gpu
      resources:
      - {name: cpu, nominalQuota: 128}
      - {name: memory, nominalQuota: 1Ti}
      - {name: nvidia.com/gpu, nominalQuota: 8}
---
apiVersion: tessera.dev/v1alpha1
kind: ClusterQueue
metadata: {name: research}
spec:
  cohort: all
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: research}}
  preemption: {reclaimWithinCohort: Any, withinClusterQueue: LowerPriority}
  resourceGroups:
  - coveredResources: [cpu, memory, nvidia.com/gpu]
    flavors:
    - name: gpu
      resources:
      - {name: cpu, nominalQuota: 128}
      - {name: memory, nominalQuota: 1Ti}
      - {name: nvidia.com/gpu, nominalQuota: 8}
---
apiVersion: tessera.dev/v1alpha1
kind: LocalQueue
metadata: {name: q, namespace: prod}
spec: {clusterQueue: prod}
---
apiVersion: tessera.dev/v1alpha1
kind: LocalQueue
metadata: {name: q, namespace: research}
spec: {clusterQueue: research}
"""


def test_reclaimed_capacity_goes_to_the_preemptor_not_back_to_its_victim(
        tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    # research's high-priority 2 x 8 GPU gang borrows prod's idle quota; prod's low-priority job
    # reclaims it (reclaimWithinCohort: Any). The victim outranks the preemptor and would fit the
    # freed quota again: the nodes freed for the preemptor must go to it, once, instead of the
    # victim being readmitted and preempted again in a loop (Kueue admits non-borrowing work first).
    big = job("big", 8, 2, 0, 5000)
    big["metadata"].update(namespace="research", labels={"tessera.dev/queue-name": "q", "tessera.dev/priority-class": "high"})
    small = job("small", 8, 1, 100, 1000)
    small["metadata"]["namespace"] = "prod"
    nodes_file = tmp_path / "nodes.yaml"
    assert runner.invoke(app, ["cluster", "generate", "--nodes", "2", "--gpus-per-node", "8", "--gpu-model", "H100",
                               "--racks", "1", "--blocks", "1", "-o", str(nodes_file)]).exit_code == 0
    args = ["--cluster", str(nodes_file), "--queues", str(write_yaml("queues.yaml", RECLAIM_QUEUES)),
            "--workload", str(write_yaml("jobs.yaml", big, small))]
    result = runner.invoke(app, ["simulate", *args, "--policy", "tessera,kueue", "--json"])
    assert result.exit_code == 0, result.output
    for run in json.loads(result.stdout)["results"]:
        by_name = {w["name"]: w for w in run["workloads"]}
        assert run["metrics"]["preemptions"] == 1, run["policy"]
        assert by_name["job-big"]["preemptions"] == 1
        assert by_name["job-small"]["started_at"] == 100, run["policy"]
        # the gang restarts once the small job is done
        assert by_name["job-big"]["started_at"] == 1100, run["policy"]


def test_namespace_selector_matches_labels_of_namespace_manifests(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    selecting = QUEUES.replace("  namespaceSelector: {}", "  namespaceSelector: {matchLabels: {team: vision}}")
    namespace = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ml, labels: {team: vision}}\n"
    args = files(tmp_path, write_yaml, [job("a", 1, 1, 0, 100)])
    for queues, admitted in ((selecting + namespace, True), (selecting, False)):
        args[3] = str(write_yaml("queues-ns.yaml", queues))
        result = runner.invoke(app, ["simulate", *args, "--policy", "tessera,kueue", "--json"])
        assert result.exit_code == 0, result.output
        for run in json.loads(result.stdout)["results"]:
            assert (run["workloads"][0]["admitted_at"] is not None) is admitted, run["policy"]


class _RecountingSimulation(Simulation):
    """Checks every sample against a recount of the workloads' states (the engine keeps counters),
    and every snapshot's admitted keys (kept between admissions and releases) against its list."""

    def snapshot(self) -> Snapshot:
        snap = super().snapshot()
        assert snap.known_admitted_keys == frozenset(a.key for a in snap.admitted)
        return snap

    def _sample(self) -> None:
        super()._sample()
        sample = self.samples[-1]
        started = sum(1 for s in self.admitted.values() if s.record.started_at is not None)
        by_queue: dict[str, float] = {}
        for s in self.admitted.values():
            by_queue[s.record.cluster_queue or "?"] = by_queue.get(s.record.cluster_queue or "?", 0.0) + s.record.gpus
        assert sample.running == started
        assert sample.waiting == len(self.pending) + len(self.admitted) - started
        assert sample.usage_by_queue.keys() == by_queue.keys()
        assert sample.usage_by_queue == pytest.approx(by_queue)
        assert sample.allocated_gpus == sum(n.used.get("nvidia.com/gpu", 0) for n in self.cluster.nodes.values()) / 1000


def test_samples_match_a_recount_through_evictions_and_preemptions(tmp_path: Path, write_yaml: Callable[..., Path]) -> None:
    jobs = [job(f"s{i}", 1, 1, 0, 3000) for i in range(3)] + [job("gang", 8, 2, 1, 100), job("cpu-only", 0, 1, 4000, 50)]
    args = files(tmp_path, write_yaml, jobs)
    inputs = load_inputs(*args[1::2], seed=0)
    big = job("big", 8, 2, 0, 5000)
    big["metadata"].update(namespace="research", labels={"tessera.dev/queue-name": "q", "tessera.dev/priority-class": "high"})
    small = job("small", 8, 1, 100, 1000)
    small["metadata"]["namespace"] = "prod"
    reclaim = load_inputs(args[1], str(write_yaml("queues-r.yaml", RECLAIM_QUEUES)), str(write_yaml("jobs-r.yaml", big, small)), seed=0)
    seen = {"evictions": 0, "preemptions": 0}
    for setup in (inputs.setup, reclaim.setup):
        for name in ("kueue", "tessera"):
            policy = make_policy(name)
            result = _RecountingSimulation(setup, policy, binder_for(policy)).run()
            assert len(result.samples) > 3
            seen["evictions"] += sum(w.evictions for w in result.workloads)
            seen["preemptions"] += sum(w.preemptions for w in result.workloads)
    assert seen["evictions"] and seen["preemptions"]  # both transitions were exercised

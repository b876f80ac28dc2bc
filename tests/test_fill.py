"""Fill mode (simulator/fill.py): the FGD paper's packing experiment.

Inline openb-format traces (a few nodes, crafted pods) exercise every path; when the real
openb trace and the paper's per-seed results are present under ../shared/traces/, a short
reproduction of the paper's Random and BestFit runs checks the numbers too.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cluster import DEVICE_MILLI, GPU_RESOURCE, Cluster, PodRequest
from simulator.cluster_gen import GPU_MODEL_LABEL
from simulator.engine import RunResult
from simulator.fill import (
    DEFAULT_LEVELS,
    FillConfig,
    FillRun,
    allocation_at,
    arrival_order,
    default_levels,
    pod_list,
    run_fill,
    run_fill_policies,
)
from simulator.run import load_inputs
from tessera.cli import app

runner = CliRunner()

NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"
POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"

# 10 GPUs: two 4-GPU "A" nodes, one 2-GPU "B" node, one CPU-only node.
SMALL_NODES = """n0,32000,131072,4,A
n1,32000,131072,4,A
n2,16000,65536,2,B
n3,8000,32768,0,
"""
# 9.75 GPUs of demand: shares, whole GPUs, a 4-GPU pod, CPU-only pods, one pod pinned to model B.
SMALL_PODS = """p0,4000,8192,1,500,
p1,2000,4096,1,250,
p2,8000,16384,1,1000,
p3,8000,16384,2,1000,
p4,2000,4096,0,0,
p5,4000,8192,1,1000,B
p6,16000,32768,4,1000,
p7,1000,2048,1,300,
p8,6000,12288,1,700,
p9,3000,4096,0,0,
"""
POLICIES = ("tessera", "kueue", "bestfit", "fgd", "random")


def write_trace(folder: Path, nodes: str, pods: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "openb_node_list_gpu_node.csv").write_text(NODE_HEADER + nodes)
    (folder / "openb_pod_list_default.csv").write_text(POD_HEADER + pods)
    return folder


def medium_trace(folder: Path, seed: int = 0) -> Path:
    """24 nodes (8-GPU and 2-GPU kinds) and 300 pods in openb's mix: mostly shares and single GPUs."""
    rng = random.Random(seed)
    nodes = "".join(
        f"m{i:02d},{96000 if i % 3 else 32000},{393216 if i % 3 else 131072},{8 if i % 3 else 2},{'G2' if i % 3 else 'T4'}\n"
        for i in range(24))
    rows = []
    for i in range(300):
        kind = rng.random()
        if kind < 0.15:
            num, milli = 0, 0
        elif kind < 0.55:
            num, milli = 1, rng.choice([250, 300, 500, 600])
        elif kind < 0.85:
            num, milli = 1, 1000
        else:
            num, milli = rng.choice([2, 4, 8]), 1000
        cpu = rng.choice([2000, 4000, 8000, 12000])
        rows.append(f"q{i:03d},{cpu},{cpu * 4},{num},{milli},\n")
    return write_trace(folder, nodes, "".join(rows))


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_trace(tmp_path / "small", SMALL_NODES, SMALL_PODS)


@pytest.fixture
def medium(tmp_path: Path) -> Path:
    return medium_trace(tmp_path / "medium")


def setup_of(folder: Path, seed: int = 42):  # noqa: ANN201 - engine.Setup
    return load_inputs(None, None, f"openb:{folder}", seed).setup


def gpu_capacity(setup) -> int:  # noqa: ANN001
    return Cluster.from_nodes(setup.nodes).capacity(GPU_RESOURCE)


# --------------------------------------------------------------------------- arrivals


@pytest.mark.parametrize("inflate", [1.3, 2.0, 0.5])
def test_artifact_sampling_reaches_the_inflate_target(small: Path, inflate: float) -> None:
    setup = setup_of(small)
    pods = pod_list(setup.jobs)
    capacity = gpu_capacity(setup)
    arrivals = arrival_order(pods, capacity, inflate, seed=7)
    total = sum(p.gpu_milli for p in arrivals)
    target = inflate * capacity
    assert total <= target
    largest = max(p.gpu_milli for p in pods)
    names = Counter(p.name for p in arrivals)
    if sum(p.gpu_milli for p in pods) < target:  # tune up: every original pod plus samples
        assert set(names) == {p.name for p in pods}
        assert total > target - largest  # sampling stopped at the first pod that would overshoot
        originals = arrivals[: len(pods)]
        assert sorted(p.name for p in originals) == sorted(p.name for p in pods)  # shuffled originals first
    else:  # tune down: distinct originals, randomly dropped
        assert max(names.values()) == 1
        assert len(arrivals) < len(pods)


def test_iid_sampling(small: Path) -> None:
    setup = setup_of(small)
    pods = pod_list(setup.jobs)
    capacity = gpu_capacity(setup)
    arrivals = arrival_order(pods, capacity, 1.3, seed=3, sampling="iid")
    total = sum(p.gpu_milli for p in arrivals)
    assert 1.3 * capacity - max(p.gpu_milli for p in pods) < total <= 1.3 * capacity
    assert arrivals == arrival_order(pods, capacity, 1.3, seed=3, sampling="iid")


def test_arrivals_depend_only_on_the_seed(medium: Path) -> None:
    setup = setup_of(medium)
    pods = pod_list(setup.jobs)
    capacity = gpu_capacity(setup)
    first = [p.name for p in arrival_order(pods, capacity, 1.3, 42)]
    assert first == [p.name for p in arrival_order(list(reversed(pods)), capacity, 1.3, 42)]
    assert first != [p.name for p in arrival_order(pods, capacity, 1.3, 43)]


def test_sampling_needs_gpu_demand_and_capacity(tmp_path: Path) -> None:
    cpu_only = setup_of(write_trace(tmp_path / "cpu", SMALL_NODES, "c0,1000,1024,0,0,\n"))
    with pytest.raises(ValueError, match="requests nvidia.com/gpu"):
        arrival_order(pod_list(cpu_only.jobs), gpu_capacity(cpu_only), 1.3, 1)
    with pytest.raises(ValueError, match="no nvidia.com/gpu capacity"):
        arrival_order(pod_list(cpu_only.jobs), 0, 1.3, 1)


def test_pod_list_expands_podsets() -> None:
    from scheduler.workload import PodSetInfo, WorkloadInfo
    from simulator.trace import SimJob

    gang = WorkloadInfo(namespace="ns", name="gang", local_queue="lq",
                        podsets=(PodSetInfo("workers", 3, PodRequest.of({GPU_RESOURCE: 1000})),))
    single = WorkloadInfo(namespace="ns", name="one", local_queue="lq",
                          podsets=(PodSetInfo("main", 1, PodRequest.of({GPU_RESOURCE: 500})),))
    pods = pod_list([SimJob(gang, 0.0, None), SimJob(single, 0.0, None)])
    assert [p.name for p in pods] == ["gang-workers-0", "gang-workers-1", "gang-workers-2", "one"]
    assert all(p.podset.count == 1 for p in pods)
    assert [p.gpu_milli for p in pods] == [1000, 1000, 1000, 500]


# --------------------------------------------------------------------------- placement


def check_run(run: FillRun, result: RunResult) -> None:
    """The cluster after the run holds exactly the placed pods, within capacity, on allowed nodes."""
    cluster = run.cluster
    assert run.arrivals is not None
    by_name = {f"{pod.name}-{seq}": pod for seq, pod in enumerate(run.arrivals)}
    expected: dict[str, Counter[str]] = {name: Counter() for name in cluster.nodes}
    for record in result.workloads:
        pod = by_name[record.name]
        if record.started_at is None:
            assert record.nodes == [] and record.pending_reason.startswith("not placed on arrival: ")
            assert "nodes are available" in record.pending_reason
            continue
        (node_name,) = record.nodes
        node = cluster.node(node_name)
        for resource, amount in pod.request.items:
            expected[node_name][resource] += amount
        if pod.podset.constraints.required_terms:  # the pinned pod went to a model-B node
            assert node.labels.get(GPU_MODEL_LABEL) == "B"
        if pod.gpu_milli:
            assert node.device_count() > 0
    for node in cluster:
        for resource, amount in node.used.items():
            assert amount == expected[node.name][resource]
            assert 0 <= amount <= node.allocatable.get(resource, 0)
        devices = node.devices.get(GPU_RESOURCE, [])
        assert all(0 <= free <= DEVICE_MILLI for free in devices)
        assert sum(DEVICE_MILLI - free for free in devices) == node.used.get(GPU_RESOURCE, 0)


@pytest.mark.parametrize("policy", POLICIES)
def test_policies_place_feasibly_within_capacity(medium: Path, policy: str) -> None:
    run = FillRun(setup_of(medium), policy, FillConfig(seed=5))
    result = run.run()
    check_run(run, result)
    m = result.metrics
    assert m["workloads"] == len(result.workloads) == len(run.arrivals or [])
    assert m["admitted"] + m["never_admitted"] == m["workloads"]
    assert m["admitted"] > 0 and m["never_admitted"] > 0  # 130% demand cannot all fit
    allocated = run.cluster.allocated(GPU_RESOURCE)
    assert m["allocated_gpus"] == allocated / 1000
    assert m["unallocated_gpus"] == pytest.approx((run.capacity - allocated) / 1000)
    assert m["gpu_utilization"] == pytest.approx(allocated / run.capacity)


@pytest.mark.parametrize("policy", ("tessera", "bestfit", "fgd", "kueue"))
def test_choice_is_the_first_best_node_in_the_seeded_order(medium: Path, policy: str) -> None:
    """The vectorised filter and the memoised scores choose what a plain loop over all nodes would."""
    run = FillRun(setup_of(medium), policy, FillConfig(seed=11))
    place = run._place  # noqa: SLF001

    def checked(pod):  # noqa: ANN001, ANN202
        best, best_score = None, None
        assert pod.constraints.unconstrained
        for node in run.arrays.nodes:  # node order
            if node.fit_failure(pod.request) is not None:
                continue
            score, prefer = run.scorer.evaluate(node, pod.request)
            if policy == "tessera":  # FGD's score, then the tie-break, compared as a pair
                score = (score, run.scorer.tie_break(node, pod.request, prefer))
            if best_score is None or score > best_score:
                best, best_score = node.name, score
        outcome = place(pod)
        assert outcome.node == best
        return outcome

    run._place = checked  # type: ignore[method-assign]  # noqa: SLF001
    run.run()


def test_vectorised_filter_matches_fit_failure(medium: Path) -> None:
    run = FillRun(setup_of(medium), "random", FillConfig(seed=2))
    rng = random.Random(0)
    shapes = {p.request for p in run.pods or []} | {
        PodRequest.of({GPU_RESOURCE: 1500}), PodRequest.of({"cpu": 1000, "ephemeral-storage": 1})}
    for pod in (run.arrivals or [])[:120]:
        run._place(pod)  # noqa: SLF001
        request = rng.choice(sorted(shapes, key=repr))
        mask = run.arrays.mask(request)
        expected = [node.fit_failure(request) is None for node in run.arrays.nodes]
        assert list(mask) == expected
        failing = [i for i, fits in enumerate(expected) if not fits]
        assert run.arrays.reasons(request, failing) == Counter(run.arrays.nodes[i].fit_failure(request) for i in failing)


def test_random_spreads_shares_over_devices(medium: Path) -> None:
    """The artifact's Random picks a random fitting GPU for a share (not the fullest one)."""
    run = FillRun(setup_of(medium), "random", FillConfig(seed=1, inflate=0.5))
    run.run()
    partly_used = sum(1 for node in run.cluster for free in node.devices.get(GPU_RESOURCE, []) if 0 < free < DEVICE_MILLI)
    best = FillRun(setup_of(medium), "bestfit", FillConfig(seed=1, inflate=0.5))
    best.run()
    packed = sum(1 for node in best.cluster for free in node.devices.get(GPU_RESOURCE, []) if 0 < free < DEVICE_MILLI)
    assert partly_used > packed


@pytest.mark.parametrize("policy", ("random", "bestfit", "fgd", "kueue"))
def test_policy_scoring_uses_the_policies_scorers(small: Path, policy: str) -> None:
    run = FillRun(setup_of(small), policy, FillConfig(seed=3, scoring="policy"))
    assert run.tie_break == "policy"
    result = run.run()
    check_run(run, result)
    assert result.metrics["scoring"] == "policy"


def test_deterministic_for_a_seed(medium: Path) -> None:
    setup = setup_of(medium)
    for policy in ("random", "fgd", "tessera"):
        a, b = (run_fill(setup, policy, FillConfig(seed=9)) for _ in range(2))
        assert [(w.name, w.nodes) for w in a.workloads] == [(w.name, w.nodes) for w in b.workloads]
        assert a.metrics["gpu_allocation_at"] == b.metrics["gpu_allocation_at"]
    other = run_fill(setup, "random", FillConfig(seed=10))
    assert [w.name for w in other.workloads] != [w.name for w in a.workloads]


def test_policies_share_one_arrival_sequence(small: Path) -> None:
    results = run_fill_policies(setup_of(small), POLICIES, FillConfig(seed=4))
    names = {tuple(w.name for w in r.workloads) for r in results}
    assert len(names) == 1
    assert [r.policy for r in results] == list(POLICIES)


# --------------------------------------------------------------------------- the measure


def test_allocation_at_follows_the_artifacts_buckets() -> None:
    arrived = [79.4, 79.6, 80.2, 80.49, 80.6, 89.0, 91.0, 99.9, 131.0]
    allocated = [70.0, 71.0, 72.0, 73.004, 74.0, 80.0, 82.0, 85.0, 86.0]
    at = allocation_at(arrived, allocated, (80, 90, 100, 110, 130, 140))
    assert at["80"] == round((71.0 + 72.0 + 73.0) / 3, 2)  # arrived rounding to 80
    assert at["90"] == 81.0  # none rounds to 90: the mean within one point
    assert at["100"] == 85.0
    assert at["110"] == 86.0 and at["130"] == 86.0  # coarse: the first record at or beyond the level
    assert "140" not in at  # never reached
    assert list(at) == ["80", "90", "100", "110", "130"]


def test_default_levels() -> None:
    assert default_levels(1.3) == DEFAULT_LEVELS
    assert default_levels(1.0) == DEFAULT_LEVELS
    assert default_levels(1.5) == (80, 90, 100, 110, 120, 130, 140, 150)
    assert default_levels(0.55) == (10, 20, 30, 40, 50)


def test_gpu_allocation_at_keys_and_monotonicity(medium: Path) -> None:
    for policy in POLICIES:
        result = run_fill(setup_of(medium), policy, FillConfig(seed=21))
        at = result.metrics["gpu_allocation_at"]
        assert list(at) == [str(level) for level in DEFAULT_LEVELS]
        values = list(at.values())
        assert values == sorted(values) and all(0 < v <= 100 for v in values)
        largest = max(p.gpu_milli for p in pod_list(setup_of(medium).jobs))
        assert at["80"] <= 80 + 100 * largest / 144_000  # allocation never runs ahead of arrived demand
        samples = result.samples
        assert samples[0].at == 0.0 and samples[-1].at == pytest.approx(result.metrics["arrived_pct"])
        assert [s.at for s in samples] == sorted(s.at for s in samples)
        assert samples[-1].allocated_gpus == result.metrics["allocated_gpus"]
        assert samples[-1].running == result.metrics["admitted"]
        assert samples[-1].waiting == result.metrics["never_admitted"]


def test_records(small: Path) -> None:
    result = run_fill(setup_of(small), "bestfit", FillConfig(seed=8))
    for seq, record in enumerate(result.workloads):
        assert record.name.endswith(f"-{seq}") and record.submitted_at == float(seq)
        placed = record.started_at is not None
        assert (record.admitted_at is not None) == placed and (record.nodes != []) == placed
        if placed:
            assert record.admitted_at == record.started_at == float(seq)
            assert record.cluster_queue == "cluster"
        doc = record.as_json()
        assert doc["finished_at"] is None and doc["preemptions"] == 0


def test_batch_mode(medium: Path) -> None:
    setup = setup_of(medium)
    one = run_fill(setup, "bestfit", FillConfig(seed=6))
    batched = run_fill(setup, "bestfit", FillConfig(seed=6, batch=7))
    n = len(batched.workloads)
    assert batched.metrics["cycles"] == math.ceil(n / 7) == len(batched.cycle_seconds)
    # baselines decide a batch in arrival order: the same placements, decided at the batch's last arrival
    assert [w.nodes for w in one.workloads] == [w.nodes for w in batched.workloads]
    for seq, record in enumerate(batched.workloads):
        if record.started_at is not None:
            assert record.started_at == float(min(n - 1, seq // 7 * 7 + 6))
    assert batched.metrics["mean_wait_s"] > 0 == one.metrics["mean_wait_s"]
    run = FillRun(setup, "tessera", FillConfig(seed=6, batch=40))  # windows of 16 tried in two orders, rolled back
    tessera = run.run()
    check_run(run, tessera)
    assert tessera.metrics["batch"] == 40 and tessera.metrics["cycles"] == math.ceil(n / 40)
    for request in {p.request for p in run.pods or []}:  # the vectorised view followed every rollback
        assert list(run.arrays.mask(request)) == [node.fit_failure(request) is None for node in run.arrays.nodes]
    assert list(run.arrays.key) == [run.arrays.intern(st, node.state_id)
                                    for st, node in zip(run.arrays.static, run.arrays.nodes, strict=True)]


def test_tessera_batch_order() -> None:
    from simulator.fill import FillPod, _batch_rank
    from scheduler.workload import PodSetInfo

    def pod(name: str, gpu: int) -> FillPod:
        return FillPod(name, "ns", "lq", "training", PodSetInfo("main", 1, PodRequest.of({"cpu": 1000, GPU_RESOURCE: gpu})))

    batch = [pod("cpu", 0), pod("one", 1000), pod("small", 250), pod("four", 4000), pod("half", 500)]
    order = sorted(range(len(batch)), key=lambda i: _batch_rank(batch[i], i))
    assert [batch[i].name for i in order] == ["half", "small", "four", "one", "cpu"]


# --------------------------------------------------------------------------- tessera's tie-break

# 40 pods: 1-GPU pods of 12 CPU (the common shape), CPU-heavy 1-GPU pods of 24 CPU, CPU-only pods of 8 CPU.
TIE_PODS = "".join([f"g{i:02d},12000,16384,1,1000,\n" for i in range(30)]
                   + [f"h{i:02d},24000,16384,1,1000,\n" for i in range(5)]
                   + [f"c{i:02d},8000,16384,0,0,\n" for i in range(10)])


def crafted_run(folder: Path, policy: str, nodes: str, order: list[str]):  # noqa: ANN201 - FillRun
    """A fill run on ``nodes`` with the TIE_PODS distribution, nodes tried in ``order``, nothing placed yet."""
    run = FillRun(setup_of(write_trace(folder, nodes, TIE_PODS)), policy, FillConfig(seed=1))
    assert run._arrays is None  # noqa: SLF001 - the node order is read when the arrays are built
    run.node_rank = {name: i for i, name in enumerate(order)}
    return run


def pod_named(run, name: str):  # noqa: ANN001, ANN201 - FillPod
    return next(p for p in run.pods or [] if p.name == name)


def test_tessera_sends_a_cpu_only_pod_where_the_gpus_are_taken(tmp_path: Path) -> None:
    """FGD scores both nodes 50 (every task class still fits either way): fgd takes the first in node
    order, the pristine node, and eats CPU its eight GPUs need (12 CPU per GPU); tessera's
    stranding measure sends it to the node whose GPUs are all allocated."""
    nodes = "a0,96000,393216,8,G2\na1,96000,393216,8,G2\n"
    chosen = {}
    for policy in ("fgd", "tessera"):
        run = crafted_run(tmp_path / policy, policy, nodes, ["a0", "a1"])
        run.cluster.bind("a1", PodRequest.of({"cpu": 8000, GPU_RESOURCE: 8000}))  # a1: no GPU left, 88 CPU free
        pod = pod_named(run, "c00")
        a0, a1 = run.cluster.node("a0"), run.cluster.node("a1")
        assert run.scorer.evaluate(a0, pod.request)[0] == run.scorer.evaluate(a1, pod.request)[0] == 50
        chosen[policy] = run._place(pod).node  # noqa: SLF001
        if policy == "tessera":
            scorer = run.scorer
            assert scorer.stranding.rho["cpu"] == pytest.approx((30 * 12 + 5 * 24) / 35)
            assert scorer.stranding_growth(a1, pod.request) == 0  # measured after the bind: a1 was chosen
            assert scorer.growth(a1, pod.request) == 0
    assert chosen == {"fgd": "a0", "tessera": "a1"}


def test_tessera_sends_a_cpu_heavy_pod_to_the_cpu_rich_node(tmp_path: Path) -> None:
    """A 1-GPU pod of 24 CPU: on the 8-GPU node (96 CPU) it leaves 72 CPU for 7 GPUs, fewer than
    the 12-CPU pods need for all of them; on the 2-GPU node (104 CPU) nothing is stranded. FGD ties
    (score 50 on both); tessera picks the CPU-rich node, fgd the first in node order."""
    nodes = "a0,96000,393216,8,G2\nt0,104000,524288,2,T4\n"
    chosen = {}
    for policy in ("fgd", "tessera"):
        run = crafted_run(tmp_path / policy, policy, nodes, ["a0", "t0"])
        pod = pod_named(run, "h00")
        a0, t0 = run.cluster.node("a0"), run.cluster.node("t0")
        assert run.scorer.evaluate(a0, pod.request)[0] == run.scorer.evaluate(t0, pod.request)[0]
        if policy == "tessera":
            scorer = run.scorer
            assert scorer.stranding_growth(a0, pod.request) > 0 == scorer.stranding_growth(t0, pod.request)
            assert scorer.repeat_growth(a0, pod.request) > 0 == scorer.repeat_growth(t0, pod.request)
            assert scorer.tie_break(t0, pod.request) > scorer.tie_break(a0, pod.request)
        chosen[policy] = run._place(pod).node  # noqa: SLF001
    assert chosen == {"fgd": "a0", "tessera": "t0"}


def test_tessera_tie_break_only_among_the_best_fgd_scores(tmp_path: Path) -> None:
    """The tie-break orders only the nodes tied on FGD's score: with a tie-break that prefers t0, a
    pod still goes to a0 when FGD scores a0 higher, and to t0 when the two tie."""
    nodes = "a0,96000,393216,8,G2\nt0,104000,524288,2,T4\n"
    run = crafted_run(tmp_path, "tessera", nodes, ["a0", "t0"])
    run._tie_breaks = (lambda node, pod, prefer: 1.0 if node.name == "t0" else 0.0,)  # noqa: SLF001
    pod = pod_named(run, "h00")
    a0, t0 = run.cluster.node("a0"), run.cluster.node("t0")
    assert run.scorer.evaluate(a0, pod.request)[0] == run.scorer.evaluate(t0, pod.request)[0]
    with run.cluster.what_if():
        assert run._place(pod).node == "t0"  # noqa: SLF001
    run._refresh(["a0", "t0"])  # noqa: SLF001 - the trial was rolled back
    run.cluster.bind("t0", PodRequest.of({"cpu": 80000}))  # t0: 24 CPU left for 2 GPUs
    # the pod would take t0's last CPU and strand its other GPU: FGD scores t0 lower now
    assert run.scorer.evaluate(a0, pod.request)[0] > run.scorer.evaluate(t0, pod.request)[0]
    run._refresh(["t0"])  # noqa: SLF001
    assert run._place(pod).node == "a0"  # noqa: SLF001


def test_tessera_forgetting_the_memo_changes_nothing(medium: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the memoised scores outgrow their bound they are all forgotten (scores and tie-break values
    alike) and recomputed: the placements stay the same."""
    import simulator.fill as fill

    setup = setup_of(medium)
    expected = run_fill(setup, "tessera", FillConfig(seed=3))
    monkeypatch.setattr(fill, "_MEMO_LIMIT", 4096)
    again = run_fill(setup, "tessera", FillConfig(seed=3))
    assert [w.nodes for w in again.workloads] == [w.nodes for w in expected.workloads]


def test_repeat_fit_counts_what_the_last_copy_leaves() -> None:
    from scheduler.fgd import TaskDistribution
    from simulator.fill import RepeatFit, Stranding

    share = PodRequest.of({"cpu": 1000, GPU_RESOURCE: 470})
    pair = PodRequest.of({"cpu": 4000, GPU_RESOURCE: 2000})
    model = RepeatFit(TaskDistribution.of([(share, 3.0), (pair, 1.0)]))
    assert model.resources == ("cpu",)
    assert model.access(Cluster.make_node("n", {"cpu": 32000})) == 0  # both classes may run there
    # one free GPU, plenty of CPU: two 470m shares fit and strand 60m; the 2-GPU class can use nothing
    assert model.value((32000,), (1000,), 0) == pytest.approx(0.75 * 60 + 0.25 * 1000)
    # three whole GPUs: shares use 6 x 470; the 2-GPU class one pair, stranding the third GPU
    assert model.value((32000,), (1000, 1000, 1000), 0) == pytest.approx(0.75 * (3000 - 6 * 470) + 0.25 * 1000)
    # CPU for one share only: the rest of the GPU is stranded for the shares too
    assert model.value((1500,), (1000,), 0) == pytest.approx(0.75 * 530 + 0.25 * 1000)
    assert model.value((32000,), (), 0) == 0.0
    stranding = Stranding(TaskDistribution.of([(PodRequest.of({"cpu": 12000, GPU_RESOURCE: 1000}), 1.0)]))
    assert stranding.rho == {"cpu": 12.0}
    assert stranding.value(8000, {"cpu": 96000}) == 0
    assert stranding.value(8000, {"cpu": 48000}) == pytest.approx(4000)


SCARCE_NODES = "".join(f"a{i},96000,393216,8,G2\n" for i in range(4)) + "b0,128000,786432,8,G3\n"
# 97 common 1-GPU pods, two 8-GPU pods of 120 CPU (only b0 hosts them), a rare 1-GPU pod that fits
# everywhere, and an 8-GPU pod of 200 CPU that fits nowhere: the 95% cut keeps the common class alone.
SCARCE_PODS = ("".join(f"g{i:02d},12000,16384,1,1000,\n" for i in range(97)) + "x0,120000,16384,8,1000,\n"
               + "x1,120000,16384,8,1000,\n" + "r0,2000,16384,1,1000,\n" + "z0,200000,16384,8,1000,\n")


def test_repeat_fit_distribution_adds_scarce_classes(tmp_path: Path) -> None:
    """A class the popularity cut leaves out joins the repeat-fit measure, weighing p / reach, when its
    share of the GPU demand is at least 0.2 times its reach; then breaking the only node that hosts it
    costs tessera's lookahead what that class loses there."""
    from scheduler.fgd import TaskClass
    from simulator.fill import TESSERA_SCARCE, class_reach, repeat_fit_distribution

    run = FillRun(setup_of(write_trace(tmp_path, SCARCE_NODES, SCARCE_PODS)), "tessera", FillConfig(seed=1))
    nodes = list(run.cluster)
    tasks = [(p.request, p.constraints) for p in run.pods or []]
    common, scarce, rare, nowhere = (pod_named(run, name).request for name in ("g00", "x0", "r0", "z0"))
    assert class_reach(TaskClass(scarce, 1.0), nodes) == pytest.approx(8 / 40)
    assert class_reach(TaskClass(rare, 1.0), nodes) == class_reach(TaskClass(common, 1.0), nodes) == 1.0
    assert class_reach(TaskClass(nowhere, 1.0), nodes) == 0.0
    # GPU demand share of the 120-CPU class: 16 of 122 GPUs (0.13) >= 0.2 x reach 0.2; the rare class: 1/122 < 0.2
    dist = repeat_fit_distribution(tasks, nodes)
    assert [(c.request, round(c.popularity, 6)) for c in dist.classes] == [
        (common, 1.0), (scarce, round((2 / 101) / (97 / 101) / 0.2, 6))]
    assert TESSERA_SCARCE == 0.2
    assert [c.request for c in repeat_fit_distribution(tasks, nodes, scarce=1.0).classes] == [common]
    assert [c.request for c in run.scorer.repeat.classes] == [common, scarce]
    # a common pod on the 128-CPU node ends its ability to host the 120-CPU class: 7 free GPUs at weight w;
    # on a 96-CPU node that class never fitted, so its (already counted) free GPU only shrinks
    weight = dist.classes[1].popularity
    a0, b0 = run.cluster.node("a0"), run.cluster.node("b0")
    assert run.scorer.repeat_growth(b0, common) == pytest.approx(7000 * weight)
    assert run.scorer.repeat_growth(a0, common) == pytest.approx(-1000 * weight)
    assert run.scorer.evaluate(a0, common)[0] == run.scorer.evaluate(b0, common)[0]  # FGD ties: the lookahead decides
    run.node_rank = {"b0": 0, **{f"a{i}": i + 1 for i in range(4)}}
    assert run._place(pod_named(run, "g00")).node == "a0"  # noqa: SLF001


def test_config_validation() -> None:
    for bad in (FillConfig(inflate=0), FillConfig(inflate=-1.0), FillConfig(inflate=float("nan")),
                FillConfig(batch=0), FillConfig(scoring="best"), FillConfig(sample_every=0)):  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            bad.validate()


# --------------------------------------------------------------------------- the CLI


def test_cli_fill_json(small: Path) -> None:
    result = runner.invoke(app, ["simulate", "--mode", "fill", "--workload", f"openb:{small}", "--policy", "all",
                                 "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["policy"] for r in doc["results"]] == list(POLICIES)
    for entry in doc["results"]:
        metrics = entry["metrics"]
        for key in ("gpu_allocation_at", "unallocated_gpus", "workloads", "admitted", "never_admitted",
                    "cycle_latency_p50_ms", "cycle_latency_p99_ms", "gpu_utilization"):
            assert key in metrics
        assert all(isinstance(k, str) for k in metrics["gpu_allocation_at"])
        assert len(entry["workloads"]) == metrics["workloads"]
        first = entry["workloads"][0]
        assert set(first) >= {"name", "namespace", "queue", "submitted_at", "admitted_at", "started_at", "nodes"}
    again = runner.invoke(app, ["simulate", "--mode", "fill", "--workload", f"openb:{small}", "--policy", "all",
                                "--seed", "3", "--json"])
    strip = lambda d: [(r["policy"], r["workloads"], r["metrics"]["gpu_allocation_at"]) for r in d["results"]]  # noqa: E731
    assert strip(json.loads(again.stdout)) == strip(doc)


def test_cli_fill_batch_table_and_report(medium: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["simulate", "--mode", "fill", "--workload", f"openb:{medium}", "--policy",
                                 "fgd,random", "--inflate", "1.1", "--batch", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "@100%" in result.stdout and "arrivals" in result.stdout
    for name in ("report.html", "results.sqlite", "gpu_allocation.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--inflate", "0"], "--inflate: must be a number greater than 0"),
    (["--inflate", "-2"], "--inflate: must be a number greater than 0"),
    (["--batch", "0"], "--batch: must be at least 1"),
])
def test_cli_fill_bad_options(small: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["simulate", "--mode", "fill", "--workload", f"openb:{small}", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}, got ")


def test_cli_fill_without_gpu_demand(tmp_path: Path) -> None:
    folder = write_trace(tmp_path / "cpu", SMALL_NODES, "c0,1000,1024,0,0,\n")
    result = runner.invoke(app, ["simulate", "--mode", "fill", "--workload", f"openb:{folder}", "--policy", "random"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--mode fill: no pod of the workload requests nvidia.com/gpu" in lines[0]


# --------------------------------------------------------------------------- the paper's numbers

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
OPENB = TRACES / "openb"
EXPECTED = TRACES / "openb_fgd_expected_results" / "analysis_allo_discrete.csv"
PAPER_POLICIES = {"random": "01-Random", "bestfit": "05-BestFit"}
CI_SEEDS = (42, 43)


def paper_allocation(policy: str) -> dict[int, float]:
    """The paper's allocation at 130% arrived demand per seed (default trace, tune 1.3)."""
    with EXPECTED.open(newline="") as handle:
        return {int(row["seed"]): float(row["130"]) for row in csv.DictReader(handle)
                if row["workload"] == "openb_pod_list_default" and row["sc_policy"] == PAPER_POLICIES[policy]
                and row["tune"] == "1.3"}


if (OPENB / "openb_pod_list_default.csv").is_file() and EXPECTED.is_file():

    @pytest.fixture(scope="module")
    def openb_setup():  # noqa: ANN201
        return load_inputs(None, None, f"openb:{OPENB}", 42).setup

    @pytest.mark.parametrize("policy", sorted(PAPER_POLICIES))
    def test_reproduces_the_paper_on_openb(openb_setup, policy: str) -> None:  # noqa: ANN001
        """Random and BestFit on two seeds against the paper's per-seed results at 130%.

        Our seeded RNG is Python's, not the artifact's Go math/rand, so a seed gives a
        different (equally likely) arrival order and tie-break than the paper's run of that
        seed: per-seed values are independent draws. The paper's 10 seeds spread with a
        standard deviation of 0.32 (Random) and 0.13 (BestFit) points, so the difference of two
        draws has sd <= 0.46 and 1.5 points per seed is over 3 sd; the 2-seed mean against the
        paper's 10-seed mean has sd <= 0.25, and the issue's bar of 1 point is 4 sd. The full
        10-seed comparison (random, bestfit, fgd) is benchmarks/bench_fill.py.
        """
        paper = paper_allocation(policy)
        ours = {}
        for seed in CI_SEEDS:
            result = run_fill(openb_setup, policy, FillConfig(seed=seed))
            assert result.metrics["workloads"] > 10_000
            ours[seed] = result.metrics["gpu_allocation_at"]["130"]
            assert abs(ours[seed] - paper[seed]) <= 1.5, (seed, ours[seed], paper[seed])
        paper_mean = sum(paper.values()) / len(paper)
        assert abs(sum(ours.values()) / len(ours) - paper_mean) <= 1.0, (ours, paper_mean)

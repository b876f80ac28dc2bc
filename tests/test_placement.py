"""Pod placement: kube-scheduler's scores, random and FGD placement, and capacity safety."""

from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.affinity import NodeConstraints
from scheduler.cluster import DEVICE_MILLI, GPU_RESOURCE, Binding, Cluster, NodeInfo, PodRequest
from scheduler.fgd import FGDScorer, TaskClass, TaskDistribution, cluster_fragmentation, node_fragmentation
from scheduler.placement import (
    MostAllocated,
    RandomScorer,
    Scorer,
    balanced_allocation,
    bin_packing,
    default_profile,
    least_allocated,
    most_allocated,
    place_podset,
)
from scheduler.workload import PodSetInfo

GI = 1024**3 * 1000


def node(name: str, gpus: int = 0, cpu: int = 10_000, memory: int = 20 * GI, labels: dict[str, str] | None = None) -> NodeInfo:
    alloc = {"cpu": cpu, "memory": memory, "pods": 110_000}
    if gpus:
        alloc[GPU_RESOURCE] = gpus * DEVICE_MILLI
    return Cluster.make_node(name, alloc, labels or {})


def gpu(amount: int, cpu: int = 1000, memory: int = GI) -> PodRequest:
    return PodRequest.of({"cpu": cpu, "memory": memory, GPU_RESOURCE: amount})


# --- kube-scheduler score functions against hand computation -----------------------------------


def test_scores_of_a_known_node() -> None:
    cluster = Cluster([node("n", gpus=10)])
    cluster.bind("n", PodRequest.of({"cpu": 2000, "memory": 4 * GI, GPU_RESOURCE: 4000}))
    n = cluster.node("n")
    pod = PodRequest.of({"cpu": 3000, "memory": 10 * GI, GPU_RESOURCE: 5000})
    # requested/allocatable after the pod: cpu 5/10 = 0.5, memory 14/20 = 0.7, gpu 9/10 = 0.9
    assert least_allocated(n, pod) == (50 + 30) // 2 == 40
    assert most_allocated(n, pod) == (50 + 70) // 2 == 60
    # std of (0.5, 0.7) = 0.1 -> (1 - 0.1) * 100
    assert balanced_allocation(n, pod) == 90
    # three resources: mean 0.7, std = sqrt((0.04 + 0 + 0.04) / 3) = 0.1633 -> 83
    assert balanced_allocation(n, pod, ("cpu", "memory", GPU_RESOURCE)) == 83
    # GPU weighted in (weight 2): (50 + 30 + 2 * 10) // 4
    assert least_allocated(n, pod, {"cpu": 1, "memory": 1, GPU_RESOURCE: 2}) == 25
    # the default profile adds both plugin scores with weight 1
    assert default_profile().evaluate(n, pod)[0] == 40 + 90


def test_scores_use_kube_defaults_for_pods_without_requests() -> None:
    cluster = Cluster([node("n", cpu=1000, memory=1000 * 1024**2 * 1000)])
    n = cluster.node("n")
    empty = PodRequest.of({})
    # 100m CPU and 200Mi memory stand in for no request when scoring: (90 + 80) // 2
    assert least_allocated(n, empty) == 85
    # BalancedAllocation skips best-effort pods
    assert balanced_allocation(n, empty) == 0
    # resources the node has none of are left out of the mean
    assert least_allocated(n, empty, {"cpu": 1, "memory": 1, GPU_RESOURCE: 5}) == 85


def test_least_allocated_spreads_and_most_allocated_packs() -> None:
    pods = PodSetInfo("w", 2, gpu(1000, cpu=2000, memory=2 * GI))
    spread = Cluster([node("a", gpus=4), node("b", gpus=4)])
    result = place_podset(spread, pods, scorer=default_profile(), rng=random.Random(1))
    assert result and sorted(result.nodes) == ["a", "b"]
    packed = Cluster([node("a", gpus=4), node("b", gpus=4)])
    result = place_podset(packed, pods, scorer=MostAllocated(), rng=random.Random(1))
    assert result and result.nodes[0] == result.nodes[1]
    # packing prefers the fuller node from the start
    packed2 = Cluster([node("a", gpus=4), node("b", gpus=4)])
    packed2.bind("b", gpu(1000))
    assert place_podset(packed2, gpu(1000), scorer=bin_packing()).nodes == ["b"]
    assert place_podset(packed2, gpu(1000), scorer=default_profile()).nodes == ["a"]


def test_ties_are_broken_by_the_seeded_rng() -> None:
    def run(seed: int) -> list[str]:
        cluster = Cluster([node(f"n{i}", gpus=8) for i in range(8)])
        return place_podset(cluster, PodSetInfo("w", 6, gpu(8000)), scorer=default_profile(), rng=random.Random(seed)).nodes

    assert run(3) == run(3)
    assert len({tuple(run(seed)) for seed in range(6)}) > 1
    assert all(len(set(run(seed))) == 6 for seed in range(3))  # one 8-GPU pod per node


def test_random_placement_is_feasible_and_reproducible() -> None:
    def build() -> Cluster:
        return Cluster([node(f"n{i}", gpus=2, labels={"pool": "a" if i % 2 else "b"}) for i in range(6)])

    pods = PodSetInfo("w", 12, gpu(500), constraints=NodeConstraints.build({"pool": "a"}))
    first = place_podset(build(), pods, scorer=RandomScorer(), rng=random.Random(11))
    again = place_podset(build(), pods, scorer=RandomScorer(), rng=random.Random(11))
    assert first and first.nodes == again.nodes
    assert set(first.nodes) <= {"n1", "n3", "n5"}
    others = {tuple(place_podset(build(), pods, scorer=RandomScorer(), rng=random.Random(s)).nodes) for s in range(5)}
    assert len(others) > 1
    # 12 half-GPU pods exactly fill the three allowed nodes
    assert not place_podset(build(), pods.with_count(13), scorer=RandomScorer(), rng=random.Random(0))


def test_gang_that_does_not_fit_is_rolled_back_with_a_reason() -> None:
    cluster = Cluster([node("a", gpus=8), node("b", gpus=8), node("c", gpus=8, labels={"x": "y"})])
    cluster.cordon("b")
    pods = PodSetInfo("workers", 3, gpu(4000), constraints=NodeConstraints.build(affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}]}}}))
    result = place_podset(cluster, pods, scorer=default_profile())
    assert not result and result.nodes == [] and result.bindings == []
    assert result.reason == (
        "pod 3 of 3 of podset workers: 0/3 nodes are available: "
        f"1 Insufficient {GPU_RESOURCE}, "
        "1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable"
    )
    assert cluster.node("a").used.get(GPU_RESOURCE, 0) == 0
    partial = place_podset(cluster, pods, scorer=default_profile(), all_or_nothing=False)
    assert not partial and partial.nodes == ["a", "a"]
    assert cluster.node("a").used[GPU_RESOURCE] == 8000


def test_dry_run_and_topology_limits() -> None:
    cluster = Cluster([node("a", gpus=8), node("b", gpus=8)])
    dry = place_podset(cluster, PodSetInfo("w", 2, gpu(1000)), commit=False)
    assert dry and len(dry.bindings) == 2
    assert cluster.allocated(GPU_RESOURCE) == 0
    limited = place_podset(cluster, PodSetInfo("w", 3, gpu(1000)), limits={"a": 1, "b": 2}, scorer=bin_packing())
    assert sorted(limited.nodes) == ["a", "b", "b"]
    over = place_podset(cluster, PodSetInfo("w", 2, gpu(1000)), limits={"a": 1})
    assert not over and "outside the assigned topology domain" in (over.reason or "")


# --- FGD ----------------------------------------------------------------------------------------


def test_node_fragmentation_by_hand() -> None:
    cluster = Cluster([node("n", gpus=4, cpu=4000)])
    cluster.bind("n", gpu(700, cpu=0, memory=0))
    cluster.bind("n", gpu(2000, cpu=0, memory=0))
    n = cluster.node("n")
    assert sorted(n.devices[GPU_RESOURCE]) == [0, 0, 300, 1000]
    dist = TaskDistribution.of([
        (PodRequest.of({GPU_RESOURCE: 500}), 2),  # a share of 500m: the 300m device is too small
        (PodRequest.of({"cpu": 8000, GPU_RESOURCE: 1000}), 1),  # does not fit the node's CPU: all free GPU
        (PodRequest.of({"cpu": 1000}), 1),  # CPU-only: can use none of the GPUs
    ])
    # 0.5 * 300 + 0.25 * 1300 + 0.25 * 1300
    assert node_fragmentation(n, dist) == 800
    assert cluster_fragmentation(cluster, dist) == 800


def test_fgd_picks_the_device_that_fragments_least() -> None:
    dist = TaskDistribution.of([(PodRequest.of({GPU_RESOURCE: 500}), 1)])
    base = Cluster([node("n", gpus=2)])
    base.bind("n", gpu(450))  # devices: 550 and 1000 free
    fgd_cluster, packed = base.copy(), base.copy()
    place_podset(fgd_cluster, gpu(100), scorer=FGDScorer(dist))
    # best fit would put it on the 550 device, leaving 450 that no 500m task can use
    assert sorted(fgd_cluster.node("n").devices[GPU_RESOURCE]) == [550, 900]
    place_podset(packed, gpu(100), scorer=bin_packing())
    assert sorted(packed.node("n").devices[GPU_RESOURCE]) == [450, 1000]


def test_fgd_completes_a_partly_used_gpu() -> None:
    dist = TaskDistribution.of([(PodRequest.of({GPU_RESOURCE: 1000}), 1)])
    cluster = Cluster([node("a", gpus=2), node("b", gpus=2)])
    cluster.bind("b", gpu(500))
    result = place_podset(cluster, gpu(500), scorer=FGDScorer(dist))
    assert result.nodes == ["b"]
    assert sorted(cluster.node("b").devices[GPU_RESOURCE]) == [0, 1000]


def test_fgd_keeps_room_for_the_expected_gangs_where_packing_does_not() -> None:
    # half the tasks want 2 GPUs, half 1 GPU; a 2-GPU hole is worth keeping
    dist = TaskDistribution.of([(PodRequest.of({GPU_RESOURCE: 2000}), 1), (PodRequest.of({GPU_RESOURCE: 1000}), 1)])

    def build() -> Cluster:
        cluster = Cluster([node("a", gpus=4), node("b", gpus=4)])
        cluster.bind("a", gpu(2000))  # a: 2 free GPUs
        cluster.bind("b", gpu(1000))  # b: 3 free GPUs
        return cluster

    fgd = build()
    # on a the last 2-GPU hole would break (F grows by 0.5 * 1000); on b two whole GPUs stay
    assert place_podset(fgd, gpu(1000), scorer=FGDScorer(dist)).nodes == ["b"]
    assert place_podset(build(), gpu(1000), scorer=bin_packing()).nodes == ["a"]
    scorer = FGDScorer(dist)
    assert scorer.increase(build().node("a"), gpu(1000)) == (500.0, None)
    assert scorer.increase(build().node("b"), gpu(1000)) == (0.0, None)


def test_fgd_ties_across_label_groups_are_broken_uniformly() -> None:
    # the class may only use pool a, so FGD groups nodes by pool; a CPU-only pod on GPU-less
    # nodes changes no fragmentation anywhere, so both nodes tie
    dist = TaskDistribution((TaskClass(PodRequest.of({GPU_RESOURCE: 1000}), 1.0, NodeConstraints.build({"pool": "a"})),))
    picks = set()
    for seed in range(12):
        cluster = Cluster([node("a1", labels={"pool": "a"}), node("b1", labels={"pool": "b"})])
        picks.update(place_podset(cluster, PodRequest.of(cpu=100), scorer=FGDScorer(dist), rng=random.Random(seed)).nodes)
    assert picks == {"a1", "b1"}


def test_task_distribution_popularity_threshold() -> None:
    a, b, c = PodRequest.of({GPU_RESOURCE: 1000}), PodRequest.of({GPU_RESOURCE: 500}), PodRequest.of({"cpu": 100})
    tasks = [a] * 6 + [b] * 3 + [c]
    full = TaskDistribution.from_requests(tasks)
    assert [(t.request, t.popularity) for t in full.classes] == [(a, 0.6), (b, 0.3), (c, 0.1)]
    top = TaskDistribution.from_requests(tasks, popularity_threshold=0.9)
    assert [(t.request, round(t.popularity, 6)) for t in top.classes] == [(a, round(6 / 9, 6)), (b, round(3 / 9, 6))]
    gpu_only = TaskDistribution.from_requests(tasks, include_cpu_only=False)
    assert [t.request for t in gpu_only.classes] == [a, b]
    projected = TaskDistribution.from_requests([gpu(1000, cpu=1), gpu(1000, cpu=2)], resources=(GPU_RESOURCE,))
    assert len(projected.classes) == 1 and projected.classes[0].popularity == 1.0


# --- safety property ----------------------------------------------------------------------------


@st.composite
def pod_requests(draw: st.DrawFn) -> PodRequest:
    kind = draw(st.sampled_from(["cpu", "share", "whole"]))
    cpu = draw(st.integers(0, 4000))
    memory = draw(st.integers(0, 8)) * GI
    amount = 0
    if kind == "share":
        amount = draw(st.integers(1, 19)) * 50
    elif kind == "whole":
        amount = draw(st.sampled_from([1, 2, 4, 8])) * DEVICE_MILLI
    return PodRequest.of({"cpu": cpu, "memory": memory, GPU_RESOURCE: amount})


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    count = draw(st.integers(1, 5))
    nodes = []
    for i in range(count):
        alloc = {
            "cpu": draw(st.integers(1, 16)) * 1000,
            "memory": draw(st.integers(1, 32)) * GI,
            "pods": draw(st.integers(1, 12)) * 1000,
        }
        gpus = draw(st.sampled_from([0, 1, 2, 4, 8]))
        if gpus:
            alloc[GPU_RESOURCE] = gpus * DEVICE_MILLI
        nodes.append(Cluster.make_node(f"n{i}", alloc, {"pool": draw(st.sampled_from(["a", "b"]))}))
    return Cluster(nodes)


def check_capacity(cluster: Cluster, bindings: list[Binding]) -> None:
    """Recompute usage from the bindings alone and compare with capacity and the cluster's books."""
    used: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    device_use: dict[tuple[str, int], int] = defaultdict(int)
    pods: dict[str, int] = defaultdict(int)
    for b in bindings:
        pods[b.node] += 1
        for resource, amount in b.pod.items:
            used[b.node][resource] += amount
        gpu_amount = b.pod.get(GPU_RESOURCE)
        shares = [(idx, milli) for res, idx, milli in b.devices if res == GPU_RESOURCE]
        assert sum(m for _, m in shares) == gpu_amount
        if 0 < gpu_amount < DEVICE_MILLI:
            assert len(shares) == 1  # a fractional request lands on ONE device
        elif gpu_amount:
            assert len({idx for idx, _ in shares}) == len(shares) == gpu_amount // DEVICE_MILLI
            assert all(m == DEVICE_MILLI for _, m in shares)
        for idx, milli in shares:
            device_use[(b.node, idx)] += milli
    for n in cluster:
        for resource, amount in used[n.name].items():
            assert amount <= n.allocatable.get(resource, 0), (n.name, resource)
            assert n.used.get(resource, 0) == amount
        assert pods[n.name] <= (n.max_pods or 10**9)
        for idx, free in enumerate(n.devices.get(GPU_RESOURCE, [])):
            assert device_use[(n.name, idx)] <= DEVICE_MILLI
            assert free == DEVICE_MILLI - device_use[(n.name, idx)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=clusters(), pods=st.lists(pod_requests(), min_size=1, max_size=25), seed=st.integers(0, 2**16),
       restrict=st.booleans())
def test_no_scorer_ever_exceeds_node_or_device_capacity(base: Cluster, pods: list[PodRequest], seed: int, restrict: bool) -> None:
    dist = TaskDistribution.from_requests(pods)
    scorers: list[Scorer] = [default_profile(), bin_packing(), RandomScorer(), FGDScorer(dist)]
    constraints = NodeConstraints.build({"pool": "a"}) if restrict else NodeConstraints()
    for scorer in scorers:
        cluster = base.copy()
        rng = random.Random(seed)
        bindings: list[Binding] = []
        for i, pod in enumerate(pods):
            result = place_podset(cluster, PodSetInfo("p", 1, pod, constraints=constraints), scorer=scorer, rng=rng,
                                  explain=i % 2 == 0)
            if result:
                bindings.extend(result.bindings)
                assert constraints.matches_labels(cluster.node(result.nodes[0]).labels)
            else:
                # placement fails only when no allowed node has room
                assert not any(n.fits(pod) for n in cluster if constraints.matches_labels(n.labels))
        check_capacity(cluster, bindings)
        # and everything can be released exactly
        for b in reversed(bindings):
            cluster.unbind(b)
        assert all(n.state_key() == base.node(n.name).state_key() for n in cluster)


@settings(max_examples=15, deadline=None)
@given(base=clusters(), pods=st.lists(pod_requests(), min_size=1, max_size=15), seed=st.integers(0, 2**16))
def test_same_seed_same_placement(base: Cluster, pods: list[PodRequest], seed: int) -> None:
    dist = TaskDistribution.from_requests(pods)
    for make in (default_profile, bin_packing, RandomScorer, lambda: FGDScorer(dist)):
        runs = []
        for _ in range(2):
            cluster, rng, scorer = base.copy(), random.Random(seed), make()
            runs.append([tuple(place_podset(cluster, p, scorer=scorer, rng=rng).nodes) for p in pods])
        assert runs[0] == runs[1]

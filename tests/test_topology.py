"""The topology tree over node labels, capacity per domain, and Kueue's TAS BestFit choices."""

from __future__ import annotations

import pytest

from quotas.api import Topology
from scheduler.affinity import NodeConstraints
from scheduler.cluster import GPU_RESOURCE, Cluster, NodeInfo, PodRequest
from scheduler.topology import TopologyGraph, level_name

BLOCK, RACK, HOST = "example.com/block", "example.com/rack", "kubernetes.io/hostname"
LEVELS = (BLOCK, RACK, HOST)
GPU8 = PodRequest.of({"cpu": 8000, GPU_RESOURCE: 8000})
GPU1 = PodRequest.of({"cpu": 1000, GPU_RESOURCE: 1000})


def make_cluster(extra: list[NodeInfo] | None = None) -> Cluster:
    """2 blocks x 2 racks x 2 hosts, 8 GPUs and 64 CPUs each; rack names repeat across blocks."""
    nodes = []
    for b in ("b1", "b2"):
        for r in ("r1", "r2"):
            for h in ("h1", "h2"):
                name = f"{b}-{r}-{h}"
                nodes.append(Cluster.make_node(
                    name, {"cpu": 64_000, GPU_RESOURCE: 8000}, {BLOCK: b, RACK: r, HOST: name, "gpu": "h100"}))
    return Cluster(nodes + (extra or []))


def topology() -> Topology:
    return Topology.model_validate({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "Topology", "metadata": {"name": "dc"},
        "spec": {"levels": [{"nodeLabel": label} for label in LEVELS]},
    })


def fill(cluster: Cluster, *names: str) -> None:
    for name in names:
        cluster.bind(name, GPU8)


def test_tree_structure_with_domain_keys_from_the_top() -> None:
    graph = TopologyGraph(make_cluster(), topology())
    assert graph.levels == LEVELS and graph.name == "dc"
    assert graph.domains_at(BLOCK) == [("b1",), ("b2",)]
    # r1 of b1 and r1 of b2 are different domains
    assert graph.domains_at(RACK) == [("b1", "r1"), ("b1", "r2"), ("b2", "r1"), ("b2", "r2")]
    assert len(graph.domains_at(2)) == 8
    assert graph.children(("b2",)) == [("b2", "r1"), ("b2", "r2")]
    assert graph.children(("b1", "r2", "b1-r2-h1")) == ["b1-r2-h1"]
    assert graph.parent(("b1", "r2")) == ("b1",)
    assert graph.nodes_in(("b2", "r1")) == ["b2-r1-h1", "b2-r1-h2"]
    assert len(graph.nodes_in(("b1",))) == 4
    assert graph.domain_of("b2-r2-h1", RACK) == ("b2", "r2")
    assert graph.graph.number_of_nodes() == 1 + 2 + 4 + 8 + 8
    assert graph.outside == []
    with pytest.raises(ValueError, match="no level"):
        graph.domains_at("zone")


def test_nodes_without_level_labels_are_outside() -> None:
    stray = Cluster.make_node("stray", {"cpu": 64_000, GPU_RESOURCE: 8000}, {BLOCK: "b1", HOST: "stray"})
    graph = TopologyGraph(make_cluster([stray]), LEVELS)
    assert graph.outside == ["stray"]
    assert "stray" not in graph.nodes_in(("b1",))
    assert graph.domain_of("stray") is None
    assert "stray" not in graph.fit_counts(GPU8)


def test_capacity_aggregates_up_the_tree() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    counts = graph.fit_counts(GPU8)
    assert counts[()] == 8 and counts[("b1",)] == 4 and counts[("b1", "r1")] == 2 and counts["b1-r1-h1"] == 1
    assert graph.fit_counts(GPU1)[("b1",)] == 32
    fill(cluster, "b1-r1-h1")
    cluster.bind("b1-r1-h2", GPU1)
    counts = graph.fit_counts(GPU8)
    assert counts[("b1", "r1")] == 0 and counts[("b1",)] == 2 and counts[()] == 6
    assert graph.fit_counts(GPU1)[("b1", "r1")] == 7
    assert graph.pods_that_fit(("b1",), GPU1) == 23
    cap = graph.capacity(("b1", "r1"))
    assert (cap.nodes, cap.free_gpu, cap.free_devices, cap.whole_free_nodes) == (2, 7000, 7, 0)
    assert graph.capacity(("b2",)).whole_free_nodes == 4
    # cordoned nodes count for nothing
    cluster.cordon("b2-r1-h1")
    assert graph.fit_counts(GPU8)[("b2", "r1")] == 1
    assert graph.capacity(("b2", "r1")).schedulable_nodes == 1


def test_fit_counts_respect_node_constraints() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    only_b2 = NodeConstraints.build(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": BLOCK, "operator": "In", "values": ["b2"]}]}]}}})
    counts = graph.fit_counts(GPU8, only_b2)
    assert counts[("b1",)] == 0 and counts[("b2",)] == 4


def test_best_fit_picks_the_fitting_domain_with_least_room() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    # rooms per rack: b1/r1: 1, b1/r2: 2, b2/r1: 2, b2/r2: 1
    fill(cluster, "b1-r1-h1", "b2-r2-h2")
    counts = graph.fit_counts(GPU8)
    assert graph.best_fit_domain(RACK, 1, counts) == ("b1", "r1")  # least room, first by key
    assert graph.best_fit_domain(RACK, 2, counts) == ("b1", "r2")  # both r2/b1 and r1/b2 have 2: first by key
    assert graph.best_fit_domain(RACK, 3, counts) is None
    assert graph.best_fit_domain(BLOCK, 3, counts) == ("b1",)
    result = graph.assign(2, RACK, True, GPU8, counts=counts)
    assert result and result.domains == ((("b1", "r2", "b1-r2-h1"), 1), (("b1", "r2", "b1-r2-h2"), 1))
    assert dict(result.nodes) == {"b1-r2-h1": 1, "b1-r2-h2": 1}
    api = result.to_api()
    assert api.levels == list(LEVELS) and api.domains[0].values == ["b1", "r2", "b1-r2-h1"]


def test_best_fit_for_small_pods_fills_the_fullest_fitting_rack() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    for _ in range(8):
        cluster.bind("b2-r1-h1", GPU1)  # b2/r1: h1 full, h2 empty
    assert graph.fit_counts(GPU1)[("b2", "r1")] == 8
    cluster.bind("b1-r2-h1", GPU1)
    counts = graph.fit_counts(GPU1)
    # 6 one-GPU pods fit in every rack; b2/r1 (8 left) is the tightest fit
    assert graph.assign(6, RACK, True, GPU1, counts=counts).domains == ((("b2", "r1", "b2-r1-h2"), 6),)
    # 9: racks with 15 and 16 left fit; b1/r2 has least room
    result = graph.assign(9, RACK, True, GPU1, counts=counts)
    assert {d[:2] for d, _ in result.domains} == {("b1", "r2")}
    assert sum(n for _, n in result.domains) == 9
    # descending: the host with most room first, then the best-fit host for the rest
    assert result.nodes == (("b1-r2-h2", 8), ("b1-r2-h1", 1))


def test_required_topology_that_does_not_fit_explains_the_largest_block() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    fill(cluster, "b1-r1-h1", "b2-r2-h2")
    result = graph.assign(3, RACK, True, GPU8)
    assert not result
    assert result.reason == "no rack has 3 nodes with 8 free GPUs; largest free block is 2 nodes in rack r2"
    fill(cluster, "b1-r1-h2", "b1-r2-h1", "b1-r2-h2", "b2-r1-h1", "b2-r1-h2", "b2-r2-h1")
    assert graph.assign(1, RACK, True, GPU8).reason == "no rack has 1 node with 8 free GPUs; no rack has any"


def test_explanation_for_pods_that_share_nodes() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    reason = graph.assign(40, BLOCK, True, GPU1).reason
    assert reason is not None
    assert reason.startswith("no block has room for 40 pods of 1 GPU, cpu 1")
    assert reason.endswith("largest free block fits 32 in block b1")


def test_preferred_uses_one_domain_a_level_up_when_no_rack_fits() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    fill(cluster, "b1-r1-h1")  # b1 has room for 3, b2 for 4
    result = graph.assign(3, RACK, False, GPU8)
    assert result
    # one block (b1 fits 3 exactly: best fit), its largest rack first, then the rest
    assert [d for d, _ in result.domains] == [("b1", "r1", "b1-r1-h2"), ("b1", "r2", "b1-r2-h1"), ("b1", "r2", "b1-r2-h2")]
    # a required rack would fail
    assert not graph.assign(3, RACK, True, GPU8)


def test_preferred_takes_fewest_domains_largest_first() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, topology())
    fill(cluster, "b1-r1-h1", "b1-r1-h2", "b2-r1-h1")  # b1: 2 free nodes, b2: 3 free nodes
    result = graph.assign(4, BLOCK, False, GPU8)
    assert result
    # no block fits 4: both blocks (b2 with 3 first, b1 for the rest); then, as Kueue does, the
    # children of the chosen blocks are pooled and taken largest first: the two racks with 2 free
    assert {d[0] for d, _ in result.domains} == {"b1", "b2"}
    assert {d[:2] for d, _ in result.domains} == {("b1", "r2"), ("b2", "r2")}
    assert sum(n for _, n in result.domains) == 4
    too_many = graph.assign(6, BLOCK, False, GPU8)
    assert too_many.reason == "topology dc has room for only 5 of 6 pods of 8 GPUs, cpu 8"


def test_smallest_fitting_domain() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS)
    counts = graph.fit_counts(GPU8)
    assert graph.smallest_fitting(1, counts) == ("b1", "r1", "b1-r1-h1")
    assert graph.smallest_fitting(2, counts) == ("b1", "r1")
    assert graph.smallest_fitting(3, counts) == ("b1",)
    assert graph.smallest_fitting(5, counts) == ()
    assert graph.smallest_fitting(9, counts) is None


def test_topology_over_a_flavor_subset_and_level_names() -> None:
    cluster = make_cluster()
    graph = TopologyGraph(cluster, LEVELS, nodes=[n for n in cluster.nodes if n.startswith("b2")])
    assert graph.domains_at(BLOCK) == [("b2",)]
    assert level_name("example.com/topology-rack") == "rack"
    assert level_name(HOST) == "host"

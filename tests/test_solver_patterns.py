"""Per-node packing patterns of the CP-SAT model: what they claim fits one node must bind there.

`_NodeFit` predicts, without binding, whether a count vector of pod shapes fits one node of a
class; the model's per-node patterns rest on it, and the expansion then binds pods for real
(largest first, as `Cluster.bind` chooses devices). The two must agree on every vector.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cluster import Cluster, PodRequest
from scheduler.solver_model import NodeClass, _NodeFit, node_patterns

GPU = "nvidia.com/gpu"
G = 1000


def _node_with(used_shares: list[int], used_whole: int, cpu: int) -> Cluster:
    cluster = Cluster([Cluster.make_node("n", {"cpu": cpu * G, "memory": 512 * 2**30 * G, GPU: 8 * G, "pods": 40 * G})], [GPU])
    for _ in range(used_whole):
        cluster.bind("n", PodRequest.of({GPU: G}))
    for share in used_shares:
        if cluster.nodes["n"].fits(PodRequest.of({GPU: share})):
            cluster.bind("n", PodRequest.of({GPU: share}))
    return cluster


def _class_of(cluster: Cluster) -> NodeClass:
    node = cluster.nodes["n"]
    resources = ("cpu", "memory", GPU, "pods")
    free = {r: node.free(r) for r in resources}
    room = None if node.max_pods is None else node.max_pods - node.pod_count
    return NodeClass(0, ["n"], node, frozenset(), {}, False, None, dict(free), dict(free), room, dict(free), room)


def _binds(cluster: Cluster, shapes: list[PodRequest], counts: tuple[int, ...]) -> bool:
    """Bind the pods on a copy, largest GPU first (the expansion's order)."""
    trial = cluster.copy()
    order = sorted(range(len(shapes)), key=lambda i: (-shapes[i].get(GPU), i))
    for i in order:
        for _ in range(counts[i]):
            if not trial.nodes["n"].fits(shapes[i]):
                return False
            trial.bind("n", shapes[i])
    return True


SHAPES = st.lists(
    st.sampled_from([G, 2 * G, 4 * G, 3 * G, 250, 300, 500, 700]).map(lambda g: g).flatmap(
        lambda g: st.integers(1, 24).map(lambda cpu: PodRequest.of({GPU: g, "cpu": cpu * G}))
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda p: p.items,
)


@settings(max_examples=150, deadline=None)
@given(
    shares=st.lists(st.sampled_from([250, 300, 500, 700]), max_size=6),
    whole=st.integers(0, 5),
    cpu=st.integers(8, 128),
    shapes=SHAPES,
    data=st.data(),
)
def test_node_fit_agrees_with_binding(shares: list[int], whole: int, cpu: int, shapes: list[PodRequest], data: st.DataObject) -> None:
    cluster = _node_with(shares, whole, cpu)
    shapes = sorted(shapes, key=lambda p: (-p.get(GPU), -p.get("cpu"), p.items))
    fit = _NodeFit(_class_of(cluster), shapes, [GPU])
    for _ in range(8):
        counts = tuple(data.draw(st.integers(0, 6)) for _ in shapes)
        assert fit(counts) == _binds(cluster, shapes, counts), counts


@settings(max_examples=60, deadline=None)
@given(shares=st.lists(st.sampled_from([250, 500]), max_size=4), whole=st.integers(0, 4), shapes=SHAPES)
def test_patterns_are_maximal_and_bind(shares: list[int], whole: int, shapes: list[PodRequest]) -> None:
    cluster = _node_with(shares, whole, 128)
    shapes = sorted(shapes, key=lambda p: (-p.get(GPU), -p.get("cpu"), p.items))
    caps = [8] * len(shapes)
    patterns = node_patterns(_class_of(cluster), shapes, caps, [GPU])
    if patterns is None:  # too many to enumerate: the model then falls back to aggregate capacity
        return
    assert len(set(patterns)) == len(patterns)
    for pattern in patterns:
        assert _binds(cluster, shapes, pattern)
        for j in range(len(shapes)):
            more = tuple(c + (1 if k == j else 0) for k, c in enumerate(pattern))
            assert pattern[j] >= caps[j] or not _binds(cluster, shapes, more)


@settings(max_examples=120, deadline=None)
@given(
    shares=st.lists(st.sampled_from([250, 300, 500, 700]), max_size=5),
    whole=st.integers(0, 5),
    cpu=st.integers(8, 96),
    shapes=SHAPES,
    caps=st.lists(st.integers(0, 5), min_size=4, max_size=4),
    shuffle=st.randoms(use_true_random=False),
)
def test_patterns_are_every_maximal_vector(shares: list[int], whole: int, cpu: int, shapes: list[PodRequest],
                                           caps: list[int], shuffle: Any) -> None:
    """Complete as well as sound: exactly the vectors within the caps that fit one node and take
    no further pod, found by brute force over the grid, whatever order the shapes come in (the
    enumeration extends a node pod by pod in binding order and reads maximality off its end state)."""
    cluster = _node_with(shares, whole, cpu)
    shapes = list(shapes)
    shuffle.shuffle(shapes)
    caps = caps[: len(shapes)]
    fit = _NodeFit(_class_of(cluster), shapes, [GPU])
    expected = set()
    for counts in itertools.product(*(range(c + 1) for c in caps)):
        if not any(counts) or not fit(counts):
            continue
        grown = (tuple(c + (k == j) for k, c in enumerate(counts)) for j in range(len(shapes)))
        if all(g[j] > caps[j] or not fit(g) for j, g in enumerate(grown)):
            expected.add(counts)
    patterns = node_patterns(_class_of(cluster), shapes, caps, [GPU])
    if patterns is None:  # over the enumeration's limits
        assert len(expected) > 0
        return
    assert len(patterns) == len(set(patterns)) and set(patterns) == expected

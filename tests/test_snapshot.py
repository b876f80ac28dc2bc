"""The physical snapshot: nodes from manifests, per-GPU accounting, bind/unbind, flavors as node sets."""

from __future__ import annotations

from typing import Any

import pytest

from quotas.api import ResourceFlavor, Workload, WorkloadPriorityClass
from quotas.kube import Job, Node, Toleration
from scheduler.affinity import NodeConstraints, parse_required_terms
from scheduler.cluster import GPU_RESOURCE, Cluster, PodRequest, device_shape
from scheduler.placement import bin_packing, place_podset
from scheduler.flavors import (
    feasible_nodes,
    flavor_nodes,
    node_feasible,
    node_in_flavor,
    node_infeasible_reason,
    podset_fits_flavor,
)
from scheduler.workload import PodSetInfo, WorkloadInfo, parse_timestamp

GI = 1024**3 * 1000  # one GiB in milli-bytes


def node_manifest(
    name: str,
    gpus: int = 8,
    cpu: str = "32",
    memory: str = "256Gi",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    unschedulable: bool = False,
    ready: str | None = None,
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpus:
        allocatable[GPU_RESOURCE] = str(gpus)
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }
    if ready is not None:
        doc["status"]["conditions"] = [{"type": "Ready", "status": ready}]
    return doc


def cluster_of(*docs: dict[str, Any]) -> Cluster:
    return Cluster.from_nodes([Node.model_validate(d) for d in docs])


def gpu_pod(gpu: int, cpu: int = 1000, memory: int = 4 * GI) -> PodRequest:
    return PodRequest.of({"cpu": cpu, "memory": memory, GPU_RESOURCE: gpu})


def flavor(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None,
           tolerations: list[dict[str, Any]] | None = None) -> ResourceFlavor:
    return ResourceFlavor.model_validate(
        {
            "apiVersion": "tessera.dev/v1alpha1",
            "kind": "ResourceFlavor",
            "metadata": {"name": name},
            "spec": {"nodeLabels": labels or {}, "nodeTaints": taints or [], "tolerations": tolerations or []},
        }
    )


def podset(selector: dict[str, str] | None = None, affinity: dict[str, Any] | None = None,
           tolerations: list[dict[str, Any]] | None = None) -> PodSetInfo:
    return PodSetInfo(
        name="main",
        count=1,
        requests=gpu_pod(1000),
        constraints=NodeConstraints.build(selector, affinity, [Toleration.model_validate(t) for t in tolerations or []]),
    )


def required(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs} for exprs in terms]
            }
        }
    }


# --- nodes from manifests ---------------------------------------------------------------------


def test_cluster_from_node_manifests_in_milli_units() -> None:
    cluster = cluster_of(node_manifest("n1", gpus=8, cpu="32", memory="256Gi"), node_manifest("n2", gpus=0, cpu="500m"))
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    assert n1.allocatable["cpu"] == 32_000
    assert n1.allocatable["memory"] == 256 * GI
    assert n1.allocatable[GPU_RESOURCE] == 8_000
    assert n1.devices[GPU_RESOURCE] == [1000] * 8
    assert n1.max_pods == 110
    assert n2.allocatable["cpu"] == 500
    assert GPU_RESOURCE not in n2.devices
    assert cluster.capacity(GPU_RESOURCE) == 8_000
    assert list(cluster.nodes) == ["n1", "n2"]


def test_readiness_and_cordon_from_manifest() -> None:
    cluster = cluster_of(
        node_manifest("ok", ready="True"),
        node_manifest("sick", ready="False"),
        node_manifest("cordoned", unschedulable=True),
    )
    assert cluster.node("ok").schedulable
    assert not cluster.node("sick").schedulable
    assert not cluster.node("cordoned").schedulable
    anything = podset()
    assert node_feasible(anything, cluster.node("ok"))
    assert node_infeasible_reason(anything, cluster.node("sick")) == "node(s) were not ready"
    assert node_infeasible_reason(anything, cluster.node("cordoned")) == "node(s) were unschedulable"
    # a pod tolerating the unschedulable taint may still go there (kube's NodeUnschedulable filter)
    daemon = podset(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}])
    assert node_feasible(daemon, cluster.node("cordoned"))
    assert feasible_nodes(cluster, anything) == ["ok"]


def test_cordon_takes_no_new_pods_and_uncordon_restores() -> None:
    cluster = cluster_of(node_manifest("a"), node_manifest("b"))
    cluster.cordon("a")
    assert feasible_nodes(cluster, podset()) == ["b"]
    cluster.cordon("a", False)
    assert feasible_nodes(cluster, podset()) == ["a", "b"]


# --- per-GPU accounting -------------------------------------------------------------------------


def test_device_shape() -> None:
    assert device_shape(500) == (1, 500)
    assert device_shape(1000) == (1, 1000)
    assert device_shape(4000) == (4, 1000)
    assert device_shape(1500) is None
    assert device_shape(0) == (0, 0)


def test_fractional_shares_land_on_one_device_best_fit() -> None:
    cluster = cluster_of(node_manifest("n", gpus=4))
    cluster.bind("n", gpu_pod(600))
    cluster.bind("n", gpu_pod(700))  # 400 left on device 0 is too little: a fresh device
    cluster.bind("n", gpu_pod(300))  # best fit: device 1 (300 left), not device 0 (400 left)
    assert cluster.node("n").devices[GPU_RESOURCE] == [400, 0, 1000, 1000]
    cluster.bind("n", gpu_pod(350))  # best fit among 400, 1000, 1000: device 0
    assert cluster.node("n").devices[GPU_RESOURCE] == [50, 0, 1000, 1000]
    assert cluster.node("n").used[GPU_RESOURCE] == 1950


def test_share_needs_room_on_a_single_device() -> None:
    cluster = cluster_of(node_manifest("n", gpus=2))
    cluster.bind("n", gpu_pod(600))
    cluster.bind("n", gpu_pod(600))
    node = cluster.node("n")
    assert node.devices[GPU_RESOURCE] == [400, 400]
    assert node.free(GPU_RESOURCE) == 800
    # 800m free in total, but no single GPU has 500m
    assert not node.fits(gpu_pod(500))
    assert "no single device" in (node.fit_failure(gpu_pod(500)) or "")
    assert node.fits(gpu_pod(400))
    assert node.fit_count(gpu_pod(200)) == 4


def test_whole_gpu_requests_take_whole_free_devices() -> None:
    cluster = cluster_of(node_manifest("n", gpus=4))
    cluster.bind("n", gpu_pod(100))
    node = cluster.node("n")
    assert node.free_devices() == 3
    assert node.fits(gpu_pod(3000))
    assert not node.fits(gpu_pod(4000))  # 3,900m free but only 3 whole devices
    binding = cluster.bind("n", gpu_pod(2000))
    assert sorted(idx for _, idx, _ in binding.devices) == [1, 2]
    assert node.devices[GPU_RESOURCE] == [900, 0, 0, 1000]
    with pytest.raises(ValueError, match="does not fit"):
        cluster.bind("n", gpu_pod(2000))


def test_whole_gpus_need_whole_devices_even_when_enough_is_free_in_total() -> None:
    cluster = cluster_of(node_manifest("n", gpus=4))
    for idx in range(3):  # pin a 100m share on each of devices 0-2
        cluster.bind("n", gpu_pod(100), devices=((GPU_RESOURCE, idx, 100),))
    node = cluster.node("n")
    assert node.free(GPU_RESOURCE) == 3700
    assert node.fit_failure(gpu_pod(2000)) == f"Insufficient {GPU_RESOURCE}: fewer than 2 whole free devices"
    assert node.fit_count(gpu_pod(1000)) == 1
    assert node.fit_count(gpu_pod(900)) == 4


def test_gpu_request_that_is_neither_share_nor_whole_never_fits() -> None:
    cluster = cluster_of(node_manifest("n", gpus=8))
    assert not cluster.node("n").fits(gpu_pod(1500))
    assert cluster.node("n").fit_count(gpu_pod(1500)) == 0


def test_cpu_memory_and_pod_count_limits() -> None:
    cluster = cluster_of(node_manifest("n", gpus=0, cpu="2", memory="4Gi"))
    node = cluster.node("n")
    assert node.fit_count(PodRequest.of(cpu=500)) == 4
    assert node.fit_count(PodRequest.of(cpu=500, memory=3 * GI)) == 1
    assert node.fit_failure(PodRequest.of(cpu=3000)) == "Insufficient cpu"
    assert node.fit_failure(gpu_pod(1000, cpu=100, memory=GI)) == f"Insufficient {GPU_RESOURCE}"
    tiny = cluster_of({**node_manifest("t", gpus=0), "status": {"allocatable": {"cpu": "8", "pods": "2"}}})
    tiny.bind("t", PodRequest.of(cpu=100))
    tiny.bind("t", PodRequest.of(cpu=100))
    assert tiny.node("t").fit_failure(PodRequest.of(cpu=100)) == "Too many pods"


def test_bind_unbind_restores_state_exactly() -> None:
    cluster = cluster_of(node_manifest("n", gpus=4))
    node = cluster.node("n")
    empty_key, empty_id = node.state_key(), node.state_id
    bindings = [cluster.bind("n", gpu_pod(g)) for g in (300, 700, 2000, 250)]
    assert node.state_id != empty_id
    for binding in reversed(bindings):
        cluster.unbind(binding)
    assert node.state_key() == empty_key
    assert node.state_id == empty_id
    assert node.devices[GPU_RESOURCE] == [1000] * 4
    assert all(v == 0 for v in node.used.values())
    assert node.pod_count == 0 and node.nonzero_cpu == 0


def test_unbind_out_of_order_frees_the_same_devices() -> None:
    cluster = cluster_of(node_manifest("n", gpus=2))
    first = cluster.bind("n", gpu_pod(400))
    cluster.bind("n", gpu_pod(400))
    cluster.unbind(first)
    assert cluster.node("n").devices[GPU_RESOURCE] == [600, 1000]


def test_identical_states_share_a_state_id() -> None:
    cluster = cluster_of(node_manifest("a", gpus=2), node_manifest("b", gpus=2))
    cluster.bind("a", gpu_pod(300))
    cluster.bind("b", gpu_pod(300))
    assert cluster.node("a").state_id == cluster.node("b").state_id
    assert list(cluster.state_array) == [cluster.node("a").state_id] * 2


def test_node_classes_collapse_interchangeable_nodes() -> None:
    cluster = cluster_of(
        node_manifest("a", labels={"rack": "r1"}), node_manifest("b", labels={"rack": "r1"}),
        node_manifest("c", labels={"rack": "r2"}), node_manifest("d", labels={"rack": "r1"}),
        node_manifest("e", labels={"rack": "r1"}, unschedulable=True),
    )
    cluster.bind("d", gpu_pod(500))
    assert cluster.node_classes() == [["a", "b", "c"], ["d"], ["e"]]
    assert cluster.node_classes(label_keys=["rack"]) == [["a", "b"], ["c"], ["d"], ["e"]]
    assert cluster.node_classes(["c", "b"]) == [["c", "b"]]


def test_what_if_rolls_back_and_commit_keeps() -> None:
    cluster = cluster_of(node_manifest("a", gpus=2), node_manifest("b", gpus=2))
    before = [n.state_key() for n in cluster]
    with cluster.what_if():
        cluster.bind("a", gpu_pod(2000))
        cluster.cordon("b")
        with cluster.what_if() as inner:
            cluster.bind("b", gpu_pod(500))
            inner.commit()
        assert cluster.node("b").used[GPU_RESOURCE] == 500
    assert [n.state_key() for n in cluster] == before
    assert not cluster.node("b").unschedulable
    with cluster.what_if() as trial:
        cluster.bind("a", gpu_pod(1000))
        trial.commit()
    assert cluster.node("a").used[GPU_RESOURCE] == 1000


def test_allocated_totals_follow_binds_rollbacks_and_copies() -> None:
    """`Cluster.allocated` is kept by every bind and unbind rather than summed over the nodes:
    it must equal that sum after binds, unbinds, rolled-back trials and on independent copies."""
    cluster = cluster_of(node_manifest("a", gpus=4), node_manifest("b", gpus=4))

    def summed(c: Cluster, resource: str) -> int:
        return sum(n.used.get(resource, 0) for n in c)

    first = cluster.bind("a", gpu_pod(2000, cpu=3000))
    cluster.bind("b", gpu_pod(250))
    with cluster.what_if():
        cluster.bind("b", gpu_pod(1000))
        cluster.unbind(first)
        assert cluster.allocated(GPU_RESOURCE) == summed(cluster, GPU_RESOURCE) == 1250
    other = cluster.copy()
    other.bind("a", gpu_pod(1000))
    for c, gpus in ((cluster, 2250), (other, 3250)):
        assert c.allocated(GPU_RESOURCE) == summed(c, GPU_RESOURCE) == gpus
        assert c.allocated("cpu") == summed(c, "cpu") > 0
    assert cluster.allocated("example.com/none") == 0


def test_state_ids_follow_remembered_moves_through_random_binds_and_copies() -> None:
    """A bind or unbind takes its new state id from the moves the cluster remembers (state id,
    pod, sign, device frees before): after each of many random ones, on a cluster, a copy
    sharing its ids and a copy with ids of its own (as the operator's snapshots are), every
    node's id is the one of its full state key in its cluster's table."""
    import random

    rng = random.Random(7)
    cluster = cluster_of(*(node_manifest(f"n{i}", gpus=4) for i in range(3)))
    cluster.bind("n0", gpu_pod(500))
    copies = [cluster, cluster.copy(), cluster.copy(own_ids=True)]
    held: list[tuple[Cluster, object]] = []
    pods = [gpu_pod(250), gpu_pod(500), gpu_pod(750), gpu_pod(1000), gpu_pod(2000, cpu=3000)]
    for _ in range(400):
        c = rng.choice(copies)
        mine = [b for owner, b in held if owner is c]
        if mine and rng.random() < 0.45:
            b = rng.choice(mine)
            held.remove((c, b))
            c.unbind(b)  # type: ignore[arg-type]
        else:
            name, pod = f"n{rng.randrange(3)}", rng.choice(pods)
            if c.node(name).fits(pod):
                held.append((c, c.bind(name, pod)))
        for k in copies:
            for n in k:
                assert k._state_ids[n.state_key()] == n.state_id  # noqa: SLF001
                assert k.state_array[n.index] == n.state_id
    assert len(cluster._moves) > 10  # noqa: SLF001 - moves were remembered and reused


def test_copy_is_independent() -> None:
    cluster = cluster_of(node_manifest("a", gpus=2))
    other = cluster.copy()
    other.bind("a", gpu_pod(1000))
    assert cluster.node("a").used.get(GPU_RESOURCE, 0) == 0
    assert other.node("a").devices[GPU_RESOURCE] == [0, 1000]
    assert cluster.node("a").devices[GPU_RESOURCE] == [1000, 1000]


def test_copies_share_node_state_until_either_side_binds() -> None:
    cluster = cluster_of(node_manifest("a", gpus=2), node_manifest("b", gpus=2))
    cluster.bind("a", gpu_pod(500))
    other = cluster.copy()
    assert other.node("b").devices is cluster.node("b").devices  # nothing copied that nobody changed
    cluster.bind("a", gpu_pod(1000))  # the original moves on: the copy keeps the state it was given
    assert other.node("a").devices[GPU_RESOURCE] == [500, 1000]
    assert other.node("a").used[GPU_RESOURCE] == 500
    assert cluster.node("a").devices[GPU_RESOURCE] == [500, 0]
    binding = other.bind("b", gpu_pod(2000))
    assert cluster.node("b").used.get(GPU_RESOURCE, 0) == 0 and cluster.node("b").devices[GPU_RESOURCE] == [1000, 1000]
    other.unbind(binding)
    assert other.node("b").state_key() == cluster.node("b").state_key()


def test_copies_share_node_objects_until_a_side_changes_a_node() -> None:
    cluster = cluster_of(node_manifest("a", gpus=2), node_manifest("b", gpus=2), node_manifest("c", gpus=2))
    other = cluster.copy()
    assert all(other.nodes[n] is cluster.nodes[n] for n in cluster.nodes)  # a copy costs a mapping
    other.bind("a", gpu_pod(1000))
    assert other.nodes["a"] is not cluster.nodes["a"] and other.nodes["b"] is cluster.nodes["b"]
    cluster.cordon("b")  # the original, too, copies a node it shares before changing it
    assert cluster.node("b").unschedulable and not other.node("b").unschedulable
    with other.what_if():
        other.bind("c", gpu_pod(2000))
        assert cluster.node("c").devices[GPU_RESOURCE] == [1000, 1000]
    assert other.node("c").state_key() == cluster.node("c").state_key()
    third = other.copy()  # a copy of a copy: every side keeps its own state
    third.bind("a", gpu_pod(1000))
    assert [c.node("a").used.get(GPU_RESOURCE, 0) for c in (cluster, other, third)] == [0, 1000, 2000]


def test_placement_reads_the_current_node_after_the_cluster_replaced_it() -> None:
    """Placement caches its candidate nodes on the cluster; a bind after a copy replaces the node
    object, and the next placement must see the node's new state, not the cached object's."""
    cluster = cluster_of(node_manifest("a", gpus=4), node_manifest("b", gpus=4))
    cluster.bind("a", gpu_pod(1000))  # most-allocated placement prefers a
    assert place_podset(cluster, gpu_pod(1000), count=1, scorer=bin_packing()).nodes == ["a"]
    cluster.copy()  # from now on the next change to a node replaces its object
    assert place_podset(cluster, gpu_pod(1000), count=2, scorer=bin_packing()).nodes == ["a", "a"]
    # a is full now; the object cached by the first placement still says two GPUs are free
    assert place_podset(cluster, gpu_pod(1000), count=1, scorer=bin_packing()).nodes == ["b"]
    assert cluster.node("a").devices[GPU_RESOURCE] == [0, 0, 0, 0]


def test_fit_memo_follows_the_state_of_each_copy() -> None:
    cluster = cluster_of(node_manifest("a", gpus=4))
    pod = gpu_pod(1000)
    assert cluster.fit_count(cluster.node("a"), pod) == 4
    other = cluster.copy()
    other.bind("a", gpu_pod(3000))
    assert other.fit_count(other.node("a"), pod) == other.node("a").fit_count(pod) == 1
    assert cluster.fit_count(cluster.node("a"), pod) == 4
    cluster.bind("a", gpu_pod(2000))
    assert cluster.fit_count(cluster.node("a"), pod) == 2
    for c in (cluster, other):  # every answer equals the node's own, whatever the memo holds
        assert c.fit_count(c.node("a"), gpu_pod(500)) == c.node("a").fit_count(gpu_pod(500))


def test_shared_cache_outlives_copies_but_not_a_cordon() -> None:
    cluster = cluster_of(node_manifest("a"), node_manifest("b"))
    nothing = NodeConstraints()
    assert feasible_nodes(cluster, nothing) == ["a", "b"]
    other = cluster.copy()
    assert other.shared is cluster.shared  # a later cycle's copy reuses what was worked out
    other.cordon("b")
    assert other.shared is not cluster.shared
    assert feasible_nodes(other, nothing) == ["a"]
    assert feasible_nodes(cluster, nothing) == ["a", "b"]  # the original's answers are untouched
    cluster.cordon("a")
    assert feasible_nodes(cluster, nothing) == ["b"]


# --- flavors and feasibility --------------------------------------------------------------------


def test_flavor_membership_by_node_labels() -> None:
    cluster = cluster_of(
        node_manifest("h1", labels={"gpu": "h100", "pool": "spot"}),
        node_manifest("h2", labels={"gpu": "h100", "pool": "ondemand"}),
        node_manifest("a1", labels={"gpu": "a100", "pool": "spot"}),
    )
    assert flavor_nodes(cluster, flavor("h100", {"gpu": "h100"})) == ["h1", "h2"]
    assert flavor_nodes(cluster, flavor("h100-spot", {"gpu": "h100", "pool": "spot"})) == ["h1"]
    assert flavor_nodes(cluster, flavor("any")) == ["h1", "h2", "a1"]
    assert not node_in_flavor(cluster.node("a1"), flavor("h100", {"gpu": "h100"}))


def test_podset_fits_flavor_by_node_selector() -> None:
    h100 = flavor("h100", {"gpu": "h100"})
    assert podset_fits_flavor(podset({"gpu": "h100"}), h100) is None
    reason = podset_fits_flavor(podset({"gpu": "a100"}), h100)
    assert reason is not None and "doesn't match node affinity" in reason and "h100" in reason
    # keys the flavor does not define are left to kube-scheduler ...
    assert podset_fits_flavor(podset({"zone": "z1"}), h100) is None
    # ... unless another flavor of the resource group defines them (Kueue's label keys)
    assert podset_fits_flavor(podset({"zone": "z1"}), h100, label_keys={"gpu", "zone"}) is not None


@pytest.mark.parametrize(
    ("exprs", "fits"),
    [
        ([{"key": "gpu", "operator": "In", "values": ["h100", "a100"]}], True),
        ([{"key": "gpu", "operator": "In", "values": ["a100"]}], False),
        ([{"key": "gpu", "operator": "NotIn", "values": ["a100"]}], True),
        ([{"key": "gpu", "operator": "NotIn", "values": ["h100"]}], False),
        ([{"key": "gpu", "operator": "Exists"}], True),
        ([{"key": "gpu", "operator": "DoesNotExist"}], False),
        ([{"key": "gen", "operator": "Gt", "values": ["8"]}], True),
        ([{"key": "gen", "operator": "Lt", "values": ["8"]}], False),
        # expressions of one term are ANDed
        ([{"key": "gpu", "operator": "Exists"}, {"key": "gen", "operator": "Lt", "values": ["5"]}], False),
    ],
)
def test_podset_fits_flavor_by_required_affinity(exprs: list[dict[str, Any]], fits: bool) -> None:
    h100 = flavor("h100", {"gpu": "h100", "gen": "9"})
    assert (podset_fits_flavor(podset(affinity=required(exprs)), h100) is None) is fits


def test_affinity_terms_are_ored_and_irrelevant_terms_match_any_flavor() -> None:
    h100 = flavor("h100", {"gpu": "h100"})
    either = required([{"key": "gpu", "operator": "In", "values": ["a100"]}], [{"key": "gpu", "operator": "In", "values": ["h100"]}])
    assert podset_fits_flavor(podset(affinity=either), h100) is None
    neither = required([{"key": "gpu", "operator": "In", "values": ["a100"]}], [{"key": "gpu", "operator": "In", "values": ["l4"]}])
    assert podset_fits_flavor(podset(affinity=neither), h100) is not None
    # a term only about keys the flavor does not define can be satisfied by some node of any flavor
    other = required([{"key": "gpu", "operator": "In", "values": ["a100"]}], [{"key": "zone", "operator": "In", "values": ["z1"]}])
    assert podset_fits_flavor(podset(affinity=other), h100) is None


def test_podset_fits_flavor_by_taints_and_flavor_tolerations() -> None:
    spot = flavor("spot", {"pool": "spot"}, taints=[{"key": "spot", "value": "true", "effect": "NoSchedule"}])
    reason = podset_fits_flavor(podset(), spot)
    assert reason == "untolerated taint spot=true:NoSchedule in flavor spot"
    assert podset_fits_flavor(podset(tolerations=[{"key": "spot", "operator": "Exists"}]), spot) is None
    wrong_value = podset(tolerations=[{"key": "spot", "operator": "Equal", "value": "false"}])
    assert podset_fits_flavor(wrong_value, spot) is not None
    # the flavor's own tolerations are added to admitted pods, so they count
    self_tolerating = flavor(
        "spot2", {"pool": "spot"}, taints=[{"key": "spot", "value": "true", "effect": "NoSchedule"}],
        tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
    )
    assert podset_fits_flavor(podset(), self_tolerating) is None
    # PreferNoSchedule never blocks
    soft = flavor("soft", taints=[{"key": "x", "effect": "PreferNoSchedule"}])
    assert podset_fits_flavor(podset(), soft) is None


def test_node_feasible_checks_labels_affinity_taints_and_admitted_flavor() -> None:
    cluster = cluster_of(
        node_manifest("h1", labels={"gpu": "h100", "gen": "9"}),
        node_manifest("a1", labels={"gpu": "a100", "gen": "8"}),
        node_manifest("t1", labels={"gpu": "h100"}, taints=[{"key": "dedicated", "value": "infer", "effect": "NoSchedule"}]),
    )
    plain = podset()
    assert feasible_nodes(cluster, plain) == ["h1", "a1"]
    assert feasible_nodes(cluster, podset({"gpu": "h100"})) == ["h1"]
    newer = podset(affinity=required([{"key": "gen", "operator": "Gt", "values": ["8"]}]))
    assert feasible_nodes(cluster, newer) == ["h1"]
    by_name = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a1"]}]}]}}}
    assert feasible_nodes(cluster, podset(affinity=by_name)) == ["a1"]
    tolerant = podset(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "infer", "effect": "NoSchedule"}])
    assert feasible_nodes(cluster, tolerant) == ["h1", "a1", "t1"]
    assert "untolerated taint" in (node_infeasible_reason(plain, cluster.node("t1")) or "")
    # admitted in a flavor: its nodeLabels are injected as a nodeSelector, its tolerations added
    h100 = flavor("h100", {"gpu": "h100"}, tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert feasible_nodes(cluster, plain, flavor=h100) == ["h1", "t1"]
    assert not node_feasible(plain, cluster.node("a1"), h100)


def test_malformed_affinity_names_the_field() -> None:
    bad = required([{"key": "gpu", "operator": "Near", "values": ["x"]}])
    with pytest.raises(ValueError, match=r"nodeSelectorTerms\[0\]\.matchExpressions\[0\]\.operator"):
        parse_required_terms(bad)
    with pytest.raises(ValueError, match="integer"):
        parse_required_terms(required([{"key": "gen", "operator": "Gt", "values": ["eight"]}]))
    empty = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    assert parse_required_terms(empty) == ()
    assert not NodeConstraints.build(affinity=empty).matches_labels({"a": "b"})


# --- workloads ----------------------------------------------------------------------------------


def workload_doc(**spec: Any) -> dict[str, Any]:
    podsets = [
        {
            "name": "workers",
            "count": 4,
            "minCount": 2,
            "template": {
                "metadata": {"annotations": {}},
                "spec": {
                    "nodeSelector": {"gpu": "h100"},
                    "tolerations": [{"key": "spot", "operator": "Exists"}],
                    "containers": [{"name": "c", "resources": {"requests": {"cpu": "4", "memory": "32Gi", GPU_RESOURCE: "2"}}}],
                },
            },
            "topologyRequest": {"required": "example.com/rack"},
        },
        {"name": "driver", "count": 1, "template": {"spec": {"containers": [{"resources": {"requests": {"cpu": "500m"}}}]}}},
    ]
    return {
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "train", "namespace": "team-a", "creationTimestamp": "2024-05-01T12:00:00Z",
                     "labels": {"tessera.dev/workload-type": "inference"}},
        "spec": {"queueName": "lq", "podSets": podsets, **spec},
    }


def test_workload_info_from_workload() -> None:
    classes = {"high": WorkloadPriorityClass.model_validate(
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "WorkloadPriorityClass", "metadata": {"name": "high"}, "value": 1000})}
    info = WorkloadInfo.from_workload(Workload.model_validate(workload_doc(priorityClassName="high")), classes)
    assert info.key == "team-a/train"
    assert info.local_queue == "lq" and info.cluster_queue is None
    assert info.priority == 1000
    assert info.workload_type == "inference"
    assert info.creation_time == parse_timestamp("2024-05-01T12:00:00Z") == 1714564800.0
    workers, driver = info.podsets
    assert workers.count == 4 and workers.min_count == 2 and workers.lowest_count == 2
    assert workers.requests == PodRequest.of({"cpu": 4000, "memory": 32 * GI, GPU_RESOURCE: 2000})
    assert workers.node_selector == {"gpu": "h100"}
    assert workers.topology is not None and workers.topology.required and workers.topology.level == "example.com/rack"
    assert driver.requests == PodRequest.of(cpu=500) and driver.topology is None
    assert info.total_requests() == {"cpu": 16_500, "memory": 128 * GI, GPU_RESOURCE: 8000}
    assert info.total_gpus() == 8000
    assert workers.with_count(1).min_count == 1
    info.cluster_queue = "cq"  # filled in by the caller
    assert info.cluster_queue == "cq"


def test_priority_resolution() -> None:
    explicit = WorkloadInfo.from_workload(Workload.model_validate(workload_doc(priority=7, priorityClassName="high")), {"high": 1000})
    assert explicit.priority == 7
    assert WorkloadInfo.from_workload(Workload.model_validate(workload_doc())).priority == 0
    unknown = WorkloadInfo.from_workload(Workload.model_validate(workload_doc(priorityClassName="nope")), {"high": 5})
    assert unknown.priority == 0


def test_workload_info_from_job() -> None:
    job = Job.model_validate({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bert", "namespace": "ml", "labels": {"tessera.dev/queue-name": "lq",
                                                                   "tessera.dev/priority-class": "low"}},
        "spec": {"parallelism": 3, "template": {
            "metadata": {"annotations": {"tessera.dev/podset-preferred-topology": "example.com/block"}},
            "spec": {"containers": [{"resources": {"limits": {GPU_RESOURCE: "1"}, "requests": {"cpu": "2"}}}]}}},
    })
    info = WorkloadInfo.from_job(job, {"low": 10}, cluster_queue="cq", creation_time=42.0)
    assert info.key == "ml/job-bert"
    assert info.priority == 10 and info.cluster_queue == "cq" and info.creation_time == 42.0
    assert info.workload_type == "training"
    (ps,) = info.podsets
    assert ps.count == 3
    assert ps.requests == PodRequest.of({"cpu": 2000, GPU_RESOURCE: 1000})
    assert ps.topology is not None and ps.topology.mode == "preferred"
    assert info.total_gpus() == 3000

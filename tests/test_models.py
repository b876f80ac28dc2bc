"""The API models: defaults as Kueue documents them, round trips, selectors, tolerations."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from quotas.api import ClusterQueue, Configuration, LabelSelector, Workload
from quotas.kube import Node, Taint, Toleration, tolerates_all

CQ = {
    "apiVersion": "tessera.dev/v1alpha1",
    "kind": "ClusterQueue",
    "metadata": {"name": "team-a"},
    "spec": {
        "cohort": "org",
        "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "nvidia.com/gpu"],
                "flavors": [
                    {"name": "a100", "resources": [{"name": "cpu", "nominalQuota": "96"}, {"name": "nvidia.com/gpu", "nominalQuota": 8, "lendingLimit": 2}]}
                ],
            }
        ],
        "preemption": {"withinClusterQueue": "LowerPriority", "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": 100}},
    },
}


def test_kueue_defaults() -> None:
    cq = ClusterQueue.model_validate({**CQ, "spec": {"resourceGroups": []}})
    assert cq.spec.queueing_strategy == "BestEffortFIFO"
    assert cq.spec.preemption.reclaim_within_cohort == "Never"
    assert cq.spec.preemption.within_cluster_queue == "Never"
    assert cq.spec.flavor_fungibility.when_can_borrow == "Borrow"
    assert cq.spec.flavor_fungibility.when_can_preempt == "TryNextFlavor"
    assert cq.spec.stop_policy == "None"
    assert cq.spec.namespace_selector is None


def test_quantities_are_exact_decimals() -> None:
    cq = ClusterQueue.model_validate(CQ)
    quotas = cq.spec.resource_groups[0].flavors[0].resources
    assert quotas[0].nominal_quota == Decimal(96)
    assert quotas[1].lending_limit == Decimal(2)


def test_manifest_round_trip() -> None:
    cq = ClusterQueue.model_validate(CQ)
    again = ClusterQueue.model_validate(cq.to_manifest())
    assert again == cq
    manifest = cq.to_manifest()
    assert list(manifest)[:2] == ["apiVersion", "kind"]
    assert manifest["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] == "96"


def test_configuration_defaults_and_durations() -> None:
    config = Configuration.model_validate(
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "Configuration", "waitForPodsReady": {"enable": True, "timeout": "10m"},
         "admissionFairSharing": {"usageHalfLifeTime": "168h"}}
    )
    assert config.wait_for_pods_ready.timeout == 600
    assert config.admission_fair_sharing is not None and config.admission_fair_sharing.usage_half_life_time == 168 * 3600
    assert config.fair_sharing.enable is False
    assert config.fair_sharing.preemption_strategies == ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
    assert Configuration().wait_for_pods_ready.timeout == 1800


def test_label_selector_semantics() -> None:
    selector = LabelSelector.model_validate(
        {"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]},
                                                            {"key": "gpu", "operator": "Exists"}]}
    )
    assert selector.matches({"team": "a", "gpu": "yes"})
    assert not selector.matches({"team": "a", "gpu": "yes", "env": "dev"})
    assert not selector.matches({"team": "b", "gpu": "yes"})
    assert not selector.matches({"team": "a"})
    assert LabelSelector().matches({})
    with pytest.raises(ValidationError):
        LabelSelector.model_validate({"matchExpressions": [{"key": "k", "operator": "In"}]})


def test_tolerations_follow_kubernetes() -> None:
    taint = Taint(key="gpu", value="a100", effect="NoSchedule")
    assert Toleration(key="gpu", operator="Exists").tolerates(taint)
    assert Toleration(key="gpu", value="a100", effect="NoSchedule").tolerates(taint)
    assert not Toleration(key="gpu", value="h100").tolerates(taint)
    assert not Toleration(key="gpu", operator="Exists", effect="NoExecute").tolerates(taint)
    assert Toleration(operator="Exists").tolerates(taint)
    assert tolerates_all([], [Taint(key="x", effect="PreferNoSchedule")])
    assert not tolerates_all([], [taint])


def test_node_allocatable_falls_back_to_capacity() -> None:
    node = Node.model_validate(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"gpu": "a100"}},
         "status": {"capacity": {"cpu": "64", "nvidia.com/gpu": "8"}, "allocatable": {"cpu": "63500m"}},
         "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}}
    )
    assert node.allocatable() == {"cpu": Decimal("63.5"), "nvidia.com/gpu": Decimal(8)}


def test_workload_requires_podsets() -> None:
    with pytest.raises(ValidationError):
        Workload.model_validate({"metadata": {"name": "w"}, "spec": {"queueName": "q", "podSets": []}})

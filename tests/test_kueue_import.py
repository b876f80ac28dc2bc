"""`tessera import-kueue`: Kueue manifests, Kueue configuration and Kueue-labelled Jobs to tessera.dev/v1alpha1.

The examples under tests/data/kueue/ restate Kueue's documented examples (cluster queues with
cohorts, borrowing and lending limits, preemption and flavor fungibility, flavors with taints
and topology, hierarchical cohorts, priority classes, topologies, the manager configuration
and its ConfigMap form, topology-aware Jobs) in our own words.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from quotas.bundle import build_bundle, load_bundle
from quotas.kueue_import import (
    convert_object,
    convert_paths,
    convert_raws,
    dump_manifests,
    is_kueue_key,
)
from quotas.loader import RawObject, Source, load_text
from quotas.problems import Problem, errors_in
from tessera.cli import app

DATA = Path(__file__).parent / "data" / "kueue"
UNSUPPORTED = "not supported by Tessera; dropped"


# --- helpers -------------------------------------------------------------------------------------


def raw(data: dict[str, Any], name: str = "in.yaml", document: int = 1) -> RawObject:
    return RawObject(Source(name, document), data)


def convert_one(data: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    objects, problems = convert_object(raw(data))
    assert len(objects) == 1, problems
    return objects[0], problems


def warnings_of(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if not p.is_error]


def by_kind_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], (o.get("metadata") or {}).get("name", "")): o for o in objects}


def all_keys(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from all_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_keys(item)


def reload(objects: list[dict[str, Any]]) -> list[RawObject]:
    """The converted objects as `tessera validate` would read them back from the written file."""
    raws, problems = load_text(dump_manifests(objects), "out.yaml")
    assert not problems
    return raws


@pytest.fixture
def in_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tests/data/kueue so problems name files as `cluster/queues.yaml:3`."""
    monkeypatch.chdir(DATA)
    return DATA


@pytest.fixture(scope="module")
def cluster() -> tuple[dict[tuple[str, str], dict[str, Any]], list[Problem]]:
    objects, problems = convert_paths([DATA / "cluster"])
    return by_kind_name(objects), problems


CLUSTER_QUEUE: dict[str, Any] = {
    "apiVersion": "kueue.x-k8s.io/v1beta1",
    "kind": "ClusterQueue",
    "metadata": {"name": "team-a"},
    "spec": {
        "cohort": "research",
        "namespaceSelector": {"matchExpressions": [{"key": "tenant", "operator": "In", "values": ["a"]}]},
        "resourceGroups": [
            {
                "coveredResources": ["nvidia.com/gpu"],
                "flavors": [{"name": "a100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8, "borrowingLimit": 4}]}],
            }
        ],
        "preemption": {"reclaimWithinCohort": "Any", "borrowWithinCohort": {"policy": "LowerPriority"}},
        "flavorFungibility": {"whenCanBorrow": "Borrow"},
        "fairSharing": {"weight": 2},
    },
}


# --- every example converts, and the result validates -------------------------------------------


@pytest.mark.parametrize("folder", ["cluster", "configmap"])
def test_examples_convert_without_errors_and_validate(folder: str, tmp_path: Path) -> None:
    objects, problems = convert_paths([DATA / folder])
    assert errors_in(problems) == []
    assert objects
    bundle, found = build_bundle(reload(objects))
    assert errors_in(found) == []
    out = tmp_path / "out.yaml"
    out.write_text(dump_manifests(objects))
    bundle, found = load_bundle([out])
    assert errors_in(found) == []
    assert bundle.configuration is not None


def test_every_kind_of_the_examples_arrives(cluster: Any) -> None:
    objects, _ = cluster
    assert {k for k, _ in objects} == {
        "ResourceFlavor", "Topology", "Cohort", "ClusterQueue", "LocalQueue", "WorkloadPriorityClass",
        "Configuration", "Namespace", "Job",
    }
    for (kind, _), obj in objects.items():
        if kind not in ("Namespace", "Job"):
            assert obj["apiVersion"] == "tessera.dev/v1alpha1"
    bundle, found = build_bundle(reload(list(objects.values())))
    assert errors_in(found) == []
    assert set(bundle.cluster_queues) == {"team-a", "team-b", "serving"}
    assert set(bundle.cohorts) == {"org", "research", "inference"}
    assert set(bundle.topologies) == {"dc-topology", "pod-topology"}
    assert {name for _, name in bundle.job_workloads} == {"pretrain", "finetune"}


def test_no_kueue_key_survives(cluster: Any) -> None:
    objects, _ = cluster
    for obj in objects.values():
        assert not [k for k in all_keys(obj) if is_kueue_key(k)], obj
        assert not str(obj.get("apiVersion", "")).endswith("kueue.x-k8s.io/v1beta1")


# --- exact field mappings -----------------------------------------------------------------------


def test_cluster_queue_v1beta1_carries_over_field_for_field(cluster: Any) -> None:
    objects, _ = cluster
    cq = objects[("ClusterQueue", "team-a")]
    source = yaml.safe_load_all((DATA / "cluster" / "queues.yaml").read_text())
    original = next(d for d in source if d["kind"] == "ClusterQueue" and d["metadata"]["name"] == "team-a")
    expected_spec = {k: v for k, v in original["spec"].items() if k != "admissionChecks"}
    assert cq["spec"] == expected_spec
    assert list(cq["spec"]) == list(expected_spec)  # order kept
    # uid, resourceVersion, generation, creationTimestamp, Kueue's finalizer and status: gone.
    assert cq["metadata"] == {"name": "team-a"}
    assert "status" not in cq


def test_v1beta2_cohort_name_becomes_cohort(cluster: Any) -> None:
    objects, _ = cluster
    spec = objects[("ClusterQueue", "serving")]["spec"]
    assert spec["cohort"] == "inference"
    assert "cohortName" not in spec
    assert list(spec)[0] == "cohort"


def test_may_stop_search_becomes_borrow_and_preempt(cluster: Any) -> None:
    objects, _ = cluster
    assert objects[("ClusterQueue", "serving")]["spec"]["flavorFungibility"] == {
        "whenCanBorrow": "Borrow",
        "whenCanPreempt": "Preempt",
    }
    # v1beta1's own spelling stays as written.
    assert objects[("ClusterQueue", "team-a")]["spec"]["flavorFungibility"] == {
        "whenCanBorrow": "TryNextFlavor",
        "whenCanPreempt": "Preempt",
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"whenCanBorrow": "MayStopSearch"}, {"whenCanBorrow": "Borrow"}),
        ({"whenCanPreempt": "MayStopSearch"}, {"whenCanPreempt": "Preempt"}),
        ({"whenCanBorrow": "TryNextFlavor", "whenCanPreempt": "TryNextFlavor"},
         {"whenCanBorrow": "TryNextFlavor", "whenCanPreempt": "TryNextFlavor"}),
    ],
)
def test_flavor_fungibility_values(given: dict[str, str], expected: dict[str, str]) -> None:
    doc = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "q"},
           "spec": {"flavorFungibility": given}}
    obj, problems = convert_one(doc)
    assert problems == []
    assert obj["spec"]["flavorFungibility"] == expected


def test_v1beta2_fungibility_preference_is_warned() -> None:
    doc = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "q"},
           "spec": {"flavorFungibility": {"whenCanBorrow": "TryNextFlavor", "whenCanPreempt": "TryNextFlavor",
                                          "preference": "PreemptionOverBorrowing"}}}
    obj, problems = convert_one(doc)
    assert [str(p) for p in problems] == [f"in.yaml:1: ClusterQueue/q: spec.flavorFungibility.preference: {UNSUPPORTED}"]
    assert obj["spec"]["flavorFungibility"] == {"whenCanBorrow": "TryNextFlavor", "whenCanPreempt": "TryNextFlavor"}


def test_cohort_parent_becomes_parent_name(cluster: Any) -> None:
    objects, _ = cluster
    assert objects[("Cohort", "research")]["spec"]["parentName"] == "org"
    assert "parent" not in objects[("Cohort", "research")]["spec"]
    assert objects[("Cohort", "research")]["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0] == {
        "name": "nvidia.com/gpu", "nominalQuota": 4, "lendingLimit": 2,
    }
    assert objects[("Cohort", "inference")]["spec"] == {"parentName": "org", "fairSharing": {"weight": "0.5"}}
    assert "parentName" not in objects[("Cohort", "org")]["spec"]


def test_resource_flavor_fields(cluster: Any) -> None:
    objects, _ = cluster
    spot = objects[("ResourceFlavor", "a100-spot")]["spec"]
    assert spot["nodeTaints"] == [{"key": "cloud.example.com/spot", "value": "true", "effect": "NoSchedule"}]
    assert spot["tolerations"] == [
        {"key": "cloud.example.com/spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    ondemand = objects[("ResourceFlavor", "a100-ondemand")]
    assert ondemand["spec"]["topologyName"] == "dc-topology"
    assert ondemand["metadata"]["labels"] == {"team": "platform"}
    assert objects[("ResourceFlavor", "h100")]["spec"] == {
        "nodeLabels": {"cloud.example.com/accelerator": "nvidia-h100"}, "topologyName": "pod-topology",
    }
    assert objects[("ResourceFlavor", "default-flavor")] == {
        "apiVersion": "tessera.dev/v1alpha1", "kind": "ResourceFlavor", "metadata": {"name": "default-flavor"},
    }


def test_topology_levels_outermost_first(cluster: Any) -> None:
    objects, _ = cluster
    assert [level["nodeLabel"] for level in objects[("Topology", "dc-topology")]["spec"]["levels"]] == [
        "cloud.example.com/topology-block", "cloud.example.com/topology-rack", "kubernetes.io/hostname",
    ]


def test_local_queue_and_priority_class(cluster: Any) -> None:
    objects, _ = cluster
    assert objects[("LocalQueue", "user-queue")] == {
        "apiVersion": "tessera.dev/v1alpha1", "kind": "LocalQueue",
        "metadata": {"namespace": "team-a", "name": "user-queue"}, "spec": {"clusterQueue": "team-a"},
    }
    assert objects[("LocalQueue", "serving-queue")]["spec"] == {"clusterQueue": "serving"}
    high = objects[("WorkloadPriorityClass", "high-priority")]
    assert high["value"] == 10000
    assert high["description"] == "Production training runs; may preempt experiments."
    assert "description" not in objects[("WorkloadPriorityClass", "low-priority")]


def test_job_labels_and_annotations_are_renamed(cluster: Any) -> None:
    objects, _ = cluster
    job = objects[("Job", "pretrain")]
    assert job["metadata"]["labels"] == {
        "app": "llm", "tessera.dev/queue-name": "user-queue", "tessera.dev/priority-class": "high-priority",
    }
    assert list(job["metadata"]["labels"]) == ["app", "tessera.dev/queue-name", "tessera.dev/priority-class"]
    assert job["metadata"]["annotations"] == {"tessera.dev/job-min-parallelism": "2"}
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "tessera.dev/podset-required-topology": "cloud.example.com/topology-rack",
    }
    finetune = objects[("Job", "finetune")]
    assert finetune["metadata"]["labels"] == {"tessera.dev/queue-name": "user-queue"}
    assert finetune["spec"]["template"]["metadata"] == {
        "labels": {"app": "finetune"},
        "annotations": {"tessera.dev/podset-preferred-topology": "cloud.example.com/topology-block"},
    }


def test_converted_jobs_become_the_expected_workloads(cluster: Any) -> None:
    objects, _ = cluster
    bundle, found = build_bundle(reload(list(objects.values())))
    assert errors_in(found) == []
    pretrain = bundle.job_workloads[("team-a", "pretrain")]
    assert pretrain.spec.queue_name == "user-queue"
    assert pretrain.spec.priority_class_name == "high-priority"
    podset = pretrain.spec.pod_sets[0]
    assert (podset.count, podset.min_count) == (4, 2)
    assert podset.topology_request is not None
    assert podset.topology_request.required == "cloud.example.com/topology-rack"
    finetune = bundle.job_workloads[("team-a", "finetune")].spec.pod_sets[0]
    assert finetune.topology_request is not None
    assert finetune.topology_request.preferred == "cloud.example.com/topology-block"


def test_objects_without_kueue_keys_pass_through_unchanged(cluster: Any) -> None:
    objects, problems = cluster
    docs = list(yaml.safe_load_all((DATA / "cluster" / "jobs.yaml").read_text()))
    assert objects[("Job", "cleanup")] == docs[3]
    assert objects[("Namespace", "team-a")] == docs[0]
    assert not [p for p in problems if "cleanup" in p.obj or "Namespace" in p.obj]


def test_configuration_v1beta1_sections(cluster: Any) -> None:
    objects, _ = cluster
    config = objects[("Configuration", "")]
    assert config == {
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "Configuration",
        "waitForPodsReady": {
            "enable": True, "timeout": "10m", "blockAdmission": True,
            "requeuingStrategy": {"timestamp": "Eviction", "backoffLimitCount": 5, "backoffBaseSeconds": 60,
                                  "backoffMaxSeconds": 3600},
        },
        "fairSharing": {"enable": True, "preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]},
        "admissionFairSharing": {"usageHalfLifeTime": "168h", "usageSamplingInterval": "5m",
                                 "resourceWeights": {"nvidia.com/gpu": 1.0, "cpu": 0.05}},
    }


def test_configuration_in_a_config_map(in_data: Path) -> None:
    objects, problems = convert_paths(["configmap"])
    assert errors_in(problems) == []
    assert objects == [
        {
            "apiVersion": "tessera.dev/v1alpha1",
            "kind": "Configuration",
            # v1beta2 has no `enable`: a section that is present is on.
            "waitForPodsReady": {"enable": True, "timeout": "5m", "requeuingStrategy": {"timestamp": "Creation"}},
            "fairSharing": {"enable": True, "preemptionStrategies": ["LessThanOrEqualToFinalShare"]},
        }
    ]
    where = "configmap/kueue-manager-config.yaml:1: ConfigMap/kueue-manager-config: "
    key = 'data["controller_manager_config.yaml"]'
    shown = {str(p) for p in problems}
    for field in ("health", "metrics", "webhook", "leaderElection", "controller", "clientConnection",
                  "integrations", "waitForPodsReady.recoveryTimeout"):
        assert f"{where}{key}.{field}: {UNSUPPORTED}" in shown
    assert len(problems) == 8


@pytest.mark.parametrize(
    ("wait", "expected"),
    [
        # Kueue v1beta1 defaults: 5 minutes, and blockAdmission follows enable.
        ({"enable": True}, {"enable": True, "timeout": "5m", "blockAdmission": True}),
        ({"enable": True, "blockAdmission": False}, {"enable": True, "blockAdmission": False, "timeout": "5m"}),
        ({"enable": True, "timeout": "1h"}, {"enable": True, "timeout": "1h", "blockAdmission": True}),
        ({"enable": False}, {"enable": False}),
    ],
)
def test_wait_for_pods_ready_keeps_kueue_defaults(wait: dict[str, Any], expected: dict[str, Any]) -> None:
    doc = {"apiVersion": "config.kueue.x-k8s.io/v1beta1", "kind": "Configuration", "waitForPodsReady": wait}
    obj, problems = convert_one(doc)
    assert problems == []
    assert obj["waitForPodsReady"] == expected


def test_configuration_v1beta2_absent_sections_stay_off() -> None:
    doc = {"apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
           "admissionFairSharing": {"usageHalfLifeTime": "24h", "usageSamplingInterval": "1m"}}
    obj, problems = convert_one(doc)
    assert problems == []
    assert obj == {"apiVersion": "tessera.dev/v1alpha1", "kind": "Configuration",
                   "admissionFairSharing": {"usageHalfLifeTime": "24h", "usageSamplingInterval": "1m"}}


def test_workload_v1beta2_priority_class_ref_and_podsets() -> None:
    doc = {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
        "metadata": {"name": "job-train", "namespace": "team-a", "uid": "u", "resourceVersion": "1"},
        "spec": {
            "queueName": "user-queue",
            "priorityClassRef": {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": "high-priority"},
            "priority": 10000,
            "maximumExecutionTimeSeconds": 3600,
            "podSets": [{
                "name": "main", "count": 4, "minCount": 2,
                "template": {"metadata": {"annotations": {"kueue.x-k8s.io/podset-required-topology": "rack"}},
                             "spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": 1}}}]}},
                "topologyRequest": {"required": "rack", "podIndexLabel": "kubernetes.io/job-completion-index"},
            }],
        },
        "status": {"conditions": [{"type": "QuotaReserved", "status": "True"}]},
    }
    obj, problems = convert_one(doc)
    assert obj["spec"]["priorityClassName"] == "high-priority"
    assert "priorityClassRef" not in obj["spec"]
    assert obj["spec"]["podSets"][0]["topologyRequest"] == {"required": "rack"}
    assert obj["spec"]["podSets"][0]["template"]["metadata"]["annotations"] == {
        "tessera.dev/podset-required-topology": "rack"
    }
    assert obj["metadata"] == {"name": "job-train", "namespace": "team-a"}
    assert "status" not in obj
    assert sorted(p.path for p in problems) == [
        "spec.maximumExecutionTimeSeconds", "spec.podSets[0].topologyRequest.podIndexLabel",
    ]
    assert all(p.message == UNSUPPORTED and not p.is_error for p in problems)


def test_workload_with_a_pod_priority_class_keeps_only_the_number() -> None:
    doc = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload", "metadata": {"name": "w"},
           "spec": {"queueName": "q", "priorityClassName": "system-cluster-critical",
                    "priorityClassSource": "scheduling.k8s.io/priorityclass", "priority": 2000000000,
                    "podSets": [{"name": "main", "count": 1, "template": {"spec": {"containers": []}}}]}}
    obj, problems = convert_one(doc)
    assert obj["spec"] == {"queueName": "q", "priority": 2000000000,
                           "podSets": [{"name": "main", "count": 1, "template": {"spec": {"containers": []}}}]}
    assert [p.path for p in problems] == ["spec.priorityClassName"]
    assert "pod PriorityClass" in problems[0].message


# --- warnings name file:document, object and field ----------------------------------------------


def test_each_unsupported_field_of_the_examples_is_warned(in_data: Path) -> None:
    _, problems = convert_paths(["cluster"])
    shown = {str(p) for p in warnings_of(problems)}
    expected = {
        f"cluster/queues.yaml:3: ClusterQueue/team-a: spec.admissionChecks: {UNSUPPORTED}",
        f"cluster/v1beta2.yaml:2: ClusterQueue/serving: spec.admissionChecksStrategy: {UNSUPPORTED}",
        f"cluster/v1beta2.yaml:2: ClusterQueue/serving: spec.admissionScope: {UNSUPPORTED}",
        f"cluster/v1beta2.yaml:3: LocalQueue/serving-queue: spec.fairSharing: {UNSUPPORTED}",
        f"cluster/v1beta2.yaml:4: ResourceFlavor/h100: spec.resourceWeights: {UNSUPPORTED}",
        f"cluster/queues.yaml:8: AdmissionCheck/capacity-check: kueue.x-k8s.io/v1beta1 AdmissionCheck {UNSUPPORTED}",
        f"cluster/queues.yaml:9: ProvisioningRequestConfig/capacity-config: "
        f"kueue.x-k8s.io/v1beta1 ProvisioningRequestConfig {UNSUPPORTED}",
        'cluster/jobs.yaml:3: Job/finetune: metadata.labels["kueue.x-k8s.io/max-exec-time-seconds"]: '
        f"Kueue label {UNSUPPORTED}",
    } | {
        f"cluster/config.yaml:1: Configuration: {field}: {UNSUPPORTED}"
        for field in ("health", "metrics", "webhook", "leaderElection", "controller", "manageJobsWithoutQueueName",
                      "internalCertManagement", "integrations")
    }
    assert shown == expected


def test_server_set_metadata_and_status_are_dropped_silently() -> None:
    doc = copy.deepcopy(CLUSTER_QUEUE)
    doc["metadata"].update({
        "uid": "1", "resourceVersion": "2", "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl"}], "selfLink": "/x", "finalizers": ["kueue.x-k8s.io/resource-in-use"],
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
    })
    doc["status"] = {"pendingWorkloads": 1, "flavorsReservation": []}
    obj, problems = convert_one(doc)
    assert problems == []
    assert obj["metadata"] == {"name": "team-a"}
    assert "status" not in obj


@pytest.mark.parametrize(
    ("field", "value"),
    [("ownerReferences", [{"kind": "X", "name": "y"}]), ("generateName", "team-"), ("finalizers", ["example.com/keep"])],
)
def test_other_metadata_is_warned(field: str, value: Any) -> None:
    doc = copy.deepcopy(CLUSTER_QUEUE)
    doc["metadata"][field] = value
    obj, problems = convert_one(doc)
    assert [(p.path, p.severity) for p in problems] == [(f"metadata.{field}", "warning")]
    assert field not in obj["metadata"]


def test_kueue_labels_on_kueue_objects_are_warned() -> None:
    doc = copy.deepcopy(CLUSTER_QUEUE)
    doc["metadata"]["labels"] = {"team": "a", "kueue.x-k8s.io/multikueue-origin": "x"}
    obj, problems = convert_one(doc)
    assert obj["metadata"]["labels"] == {"team": "a"}
    assert [p.path for p in problems] == ['metadata.labels["kueue.x-k8s.io/multikueue-origin"]']


# --- nothing is dropped silently ------------------------------------------------------------------

LQ = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
      "metadata": {"name": "q", "namespace": "ns"}, "spec": {"clusterQueue": "cq"}}
RF = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ResourceFlavor", "metadata": {"name": "rf"},
      "spec": {"nodeLabels": {"a": "b"}, "nodeTaints": [{"key": "k", "effect": "NoSchedule"}]}}
COHORT = {"apiVersion": "kueue.x-k8s.io/v1alpha1", "kind": "Cohort", "metadata": {"name": "c"},
          "spec": {"parent": "root", "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
              {"name": "rf", "resources": [{"name": "cpu", "nominalQuota": 1}]}]}]}}
TOPOLOGY = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Topology", "metadata": {"name": "t"},
            "spec": {"levels": [{"nodeLabel": "rack"}, {"nodeLabel": "kubernetes.io/hostname"}]}}
WPC = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "WorkloadPriorityClass", "metadata": {"name": "p"}, "value": 1}
CONFIG = {"apiVersion": "config.kueue.x-k8s.io/v1beta1", "kind": "Configuration",
          "waitForPodsReady": {"enable": True, "timeout": "5m", "blockAdmission": False,
                               "requeuingStrategy": {"backoffLimitCount": 3}},
          "fairSharing": {"enable": True}}


@pytest.mark.parametrize(
    ("base", "at", "field", "expected_path"),
    [
        (CLUSTER_QUEUE, (), "kindOfMagic", "kindOfMagic"),
        (CLUSTER_QUEUE, ("spec",), "admissionChecks", "spec.admissionChecks"),
        (CLUSTER_QUEUE, ("spec",), "excludeResourcePrefixes", "spec.excludeResourcePrefixes"),
        (CLUSTER_QUEUE, ("spec",), "concurrentAdmissionPolicy", "spec.concurrentAdmissionPolicy"),
        (CLUSTER_QUEUE, ("spec", "resourceGroups", 0), "extra", "spec.resourceGroups[0].extra"),
        (CLUSTER_QUEUE, ("spec", "resourceGroups", 0, "flavors", 0), "weight",
         "spec.resourceGroups[0].flavors[0].weight"),
        (CLUSTER_QUEUE, ("spec", "resourceGroups", 0, "flavors", 0, "resources", 0), "guaranteed",
         "spec.resourceGroups[0].flavors[0].resources[0].guaranteed"),
        (CLUSTER_QUEUE, ("spec", "preemption"), "future", "spec.preemption.future"),
        (CLUSTER_QUEUE, ("spec", "preemption", "borrowWithinCohort"), "limit",
         "spec.preemption.borrowWithinCohort.limit"),
        (CLUSTER_QUEUE, ("spec", "flavorFungibility"), "preference", "spec.flavorFungibility.preference"),
        (CLUSTER_QUEUE, ("spec", "fairSharing"), "shape", "spec.fairSharing.shape"),
        (CLUSTER_QUEUE, ("spec", "namespaceSelector", "matchExpressions", 0), "hint",
         "spec.namespaceSelector.matchExpressions[0].hint"),
        (LQ, ("spec",), "wallTimePolicy", "spec.wallTimePolicy"),
        (LQ, ("spec",), "fairSharing", "spec.fairSharing"),
        (RF, ("spec",), "resourceWeights", "spec.resourceWeights"),
        (COHORT, ("spec",), "fairSharingMode", "spec.fairSharingMode"),
        (COHORT, ("spec", "resourceGroups", 0, "flavors", 0, "resources", 0), "x",
         "spec.resourceGroups[0].flavors[0].resources[0].x"),
        (TOPOLOGY, ("spec",), "mode", "spec.mode"),
        (TOPOLOGY, ("spec", "levels", 1), "weight", "spec.levels[1].weight"),
        (WPC, (), "preemptionPolicy", "preemptionPolicy"),
        (CONFIG, (), "featureGates", "featureGates"),
        (CONFIG, ("waitForPodsReady",), "recoveryTimeout", "waitForPodsReady.recoveryTimeout"),
        (CONFIG, ("waitForPodsReady", "requeuingStrategy"), "jitter", "waitForPodsReady.requeuingStrategy.jitter"),
        (CONFIG, ("fairSharing",), "mode", "fairSharing.mode"),
    ],
)
def test_unknown_field_at_any_depth_is_warned_and_dropped(
    base: dict[str, Any], at: tuple[Any, ...], field: str, expected_path: str
) -> None:
    baseline, problems = convert_one(copy.deepcopy(base))
    assert problems == []
    doc = copy.deepcopy(base)
    node: Any = doc
    for step in at:
        node = node[step]
    node[field] = {"any": ["value"]}
    obj, problems = convert_one(doc)
    assert [(p.path, p.message, p.severity) for p in problems] == [(expected_path, UNSUPPORTED, "warning")]
    assert obj == baseline
    assert problems[0].where == "in.yaml:1"


# Places in a valid v1beta1 ClusterQueue where Tessera's strict models apply (not inside label maps).
MODEL_NODES: list[tuple[tuple[Any, ...], str]] = [
    ((), ""),
    (("metadata",), "metadata"),
    (("spec",), "spec"),
    (("spec", "resourceGroups", 0), "spec.resourceGroups[0]"),
    (("spec", "resourceGroups", 0, "flavors", 0), "spec.resourceGroups[0].flavors[0]"),
    (("spec", "resourceGroups", 0, "flavors", 0, "resources", 0), "spec.resourceGroups[0].flavors[0].resources[0]"),
    (("spec", "preemption"), "spec.preemption"),
    (("spec", "preemption", "borrowWithinCohort"), "spec.preemption.borrowWithinCohort"),
    (("spec", "flavorFungibility"), "spec.flavorFungibility"),
    (("spec", "fairSharing"), "spec.fairSharing"),
    (("spec", "namespaceSelector"), "spec.namespaceSelector"),
    (("spec", "namespaceSelector", "matchExpressions", 0), "spec.namespaceSelector.matchExpressions[0]"),
]
TAKEN = {
    "apiVersion", "kind", "metadata", "spec", "status", "name", "namespace", "labels", "annotations", "uid",
    "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink", "deletionTimestamp",
    "deletionGracePeriodSeconds", "finalizers", "cohort", "cohortName", "namespaceSelector", "queueingStrategy",
    "resourceGroups", "preemption", "fairSharing", "flavorFungibility", "stopPolicy", "coveredResources", "flavors",
    "resources", "nominalQuota", "borrowingLimit", "lendingLimit", "reclaimWithinCohort", "borrowWithinCohort",
    "withinClusterQueue", "policy", "maxPriorityThreshold", "whenCanBorrow", "whenCanPreempt", "weight",
    "matchLabels", "matchExpressions", "key", "operator", "values",
}
unknown_names = st.from_regex(r"[a-z][A-Za-z0-9]{0,14}", fullmatch=True).filter(lambda n: n not in TAKEN)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(range(len(MODEL_NODES))), unknown_names, min_size=1, max_size=6),
       st.sampled_from([1, "x", [1, 2], {"a": {"b": 1}}, None, True]))
def test_property_every_unknown_field_is_reported_with_its_path(inserts: dict[int, str], value: Any) -> None:
    baseline, _ = convert_one(copy.deepcopy(CLUSTER_QUEUE))
    doc = copy.deepcopy(CLUSTER_QUEUE)
    expected = set()
    for index, name in inserts.items():
        loc, path = MODEL_NODES[index]
        node: Any = doc
        for step in loc:
            node = node[step]
        node[name] = value
        expected.add(f"{path}.{name}" if path else name)
    obj, problems = convert_one(doc)
    assert {p.path for p in problems} == expected
    assert all(p.severity == "warning" and p.obj == "ClusterQueue/team-a" for p in problems)
    assert len(problems) == len(expected)
    assert obj == baseline


@pytest.mark.parametrize(
    ("api_version", "field", "value"),
    [
        # Fields of Kueue's ClusterQueueSpec (v1beta1 and v1beta2) that Tessera does not model.
        ("kueue.x-k8s.io/v1beta1", "admissionChecks", ["check"]),
        ("kueue.x-k8s.io/v1beta1", "admissionChecksStrategy", {"admissionChecks": [{"name": "check"}]}),
        ("kueue.x-k8s.io/v1beta1", "admissionScope", {"admissionMode": "UsageBasedAdmissionFairSharing"}),
        ("kueue.x-k8s.io/v1beta1", "excludeResourcePrefixes", ["example.com"]),
        ("kueue.x-k8s.io/v1beta2", "admissionChecksStrategy", {"admissionChecks": [{"name": "check"}]}),
        ("kueue.x-k8s.io/v1beta2", "admissionScope", {"admissionMode": "NoAdmissionFairSharing"}),
        ("kueue.x-k8s.io/v1beta2", "concurrentAdmissionPolicy", {"migration": {"mode": "TryPreferredFlavors"}}),
    ],
)
def test_kueue_cluster_queue_fields_tessera_lacks(api_version: str, field: str, value: Any) -> None:
    doc = copy.deepcopy(CLUSTER_QUEUE)
    doc["apiVersion"] = api_version
    doc["spec"][field] = value
    obj, problems = convert_one(doc)
    assert [str(p) for p in problems] == [f"in.yaml:1: ClusterQueue/team-a: spec.{field}: {UNSUPPORTED}"]
    assert field not in obj["spec"]


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_kueue_api_version_is_an_error(in_data: Path) -> None:
    objects, problems = convert_paths(["broken/unknown-version.yaml"])
    errors = errors_in(problems)
    assert len(errors) == 1
    assert str(errors[0]).startswith(
        'broken/unknown-version.yaml:2: ClusterQueue/from-the-future: apiVersion: unknown Kueue API version '
        '"kueue.x-k8s.io/v9"'
    )
    assert [o["kind"] for o in objects] == ["ResourceFlavor"]


@pytest.mark.parametrize(
    ("api_version", "kind", "severity", "message"),
    [
        ("config.kueue.x-k8s.io/v1alpha9", "Configuration", "error", "unknown Kueue configuration API version"),
        ("kueue.x-k8s.io/v1alpha1", "ClusterQueue", "error", "Kueue serves ClusterQueue in v1beta1, v1beta2"),
        ("kueue.x-k8s.io/v1beta1", "AdmissionCheck", "warning", UNSUPPORTED),
        ("kueue.x-k8s.io/v1beta2", "MultiKueueCluster", "warning", UNSUPPORTED),
        ("kueue.x-k8s.io/v1alpha1", "MultiKueueConfig", "warning", UNSUPPORTED),
        ("visibility.kueue.x-k8s.io/v1beta1", "PendingWorkloadsSummary", "warning", UNSUPPORTED),
    ],
)
def test_versions_and_kinds(api_version: str, kind: str, severity: str, message: str) -> None:
    objects, problems = convert_object(raw({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}))
    assert objects == []
    assert len(problems) == 1
    assert problems[0].severity == severity
    assert message in problems[0].message
    assert problems[0].obj == f"{kind}/x"
    if severity == "error":
        assert problems[0].path == "apiVersion"


def test_refused_values_are_errors_named_by_the_input_field(in_data: Path) -> None:
    objects, problems = convert_paths(["broken/bad-values.yaml"])
    assert [(p.where, p.obj, p.path, p.severity) for p in problems] == [
        ("broken/bad-values.yaml:1", "ClusterQueue/bad", "spec.cohortName", "error"),
        ("broken/bad-values.yaml:1", "ClusterQueue/bad", "spec.queueingStrategy", "error"),
    ]
    assert 'got "Whenever"' in problems[1].message


def test_reference_errors_point_at_the_input(in_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "lq.yaml"
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ResourceFlavor", "metadata": {"name": "rf"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
         "metadata": {"name": "q", "namespace": "ns"}, "spec": {"clusterQueue": "missing"}},
    ]))
    _, problems = convert_paths([path])
    assert [str(p) for p in problems] == [f'{path}:2: LocalQueue/q: spec.clusterQueue: unknown ClusterQueue "missing"']


def test_renamed_label_errors_name_the_kueue_label() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns",
           "labels": {"kueue.x-k8s.io/queue-name": "q", "tessera.dev/workload-type": "batch"}},
           "spec": {"template": {"metadata": {"annotations": {"kueue.x-k8s.io/podset-required-topology": "Bad Label"}},
                                 "spec": {"containers": []}}}}
    _, problems = convert_object(raw(job))
    paths = {p.path for p in errors_in(problems)}
    assert 'metadata.labels["tessera.dev/workload-type"]' in paths
    assert 'spec.template.metadata.annotations["kueue.x-k8s.io/podset-required-topology"]' in paths


def test_conflicting_queue_labels_are_an_error() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j", "labels": {"kueue.x-k8s.io/queue-name": "a", "tessera.dev/queue-name": "b"}}}
    _, problems = convert_object(raw(job))
    assert [(p.path, p.severity) for p in problems] == [('metadata.labels["kueue.x-k8s.io/queue-name"]', "error")]
    assert "conflicts" in problems[0].message


def test_identical_queue_labels_are_not_duplicated() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j", "labels": {"tessera.dev/queue-name": "a", "kueue.x-k8s.io/queue-name": "a"}}}
    objects, problems = convert_object(raw(job))
    assert problems == []
    assert objects[0]["metadata"]["labels"] == {"tessera.dev/queue-name": "a"}


def test_deprecated_queue_name_annotation_becomes_the_label() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j", "annotations": {"kueue.x-k8s.io/queue-name": "q"}}}
    objects, problems = convert_object(raw(job))
    assert objects[0]["metadata"] == {"name": "j", "labels": {"tessera.dev/queue-name": "q"}}
    assert [(p.path, p.severity) for p in problems] == [('metadata.annotations["kueue.x-k8s.io/queue-name"]', "warning")]


def test_other_kueue_keys_on_jobs_and_templates_are_warned() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j", "labels": {"kueue.x-k8s.io/queue-name": "q", "kueue.x-k8s.io/pod-group-name": "g"},
                        "annotations": {"provreq.kueue.x-k8s.io/maxRunDurationSeconds": "60"}},
           "spec": {"template": {"metadata": {"labels": {"kueue.x-k8s.io/podset": "main"},
                                              "annotations": {"kueue.x-k8s.io/podset-slice-size": "2",
                                                              "kueue.x-k8s.io/podset-preferred-topology": "rack"}},
                                 "spec": {"containers": []}}}}
    objects, problems = convert_object(raw(job))
    assert errors_in(problems) == []
    assert {p.path for p in problems} == {
        'metadata.labels["kueue.x-k8s.io/pod-group-name"]',
        'metadata.annotations["provreq.kueue.x-k8s.io/maxRunDurationSeconds"]',
        'spec.template.metadata.labels["kueue.x-k8s.io/podset"]',
        'spec.template.metadata.annotations["kueue.x-k8s.io/podset-slice-size"]',
    }
    template = objects[0]["spec"]["template"]["metadata"]
    assert template == {"annotations": {"tessera.dev/podset-preferred-topology": "rack"}}
    assert objects[0]["metadata"] == {"name": "j", "labels": {"tessera.dev/queue-name": "q"}}


def test_pod_templates_of_other_workload_objects() -> None:
    jobset = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
              "metadata": {"name": "js", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
              "spec": {"replicatedJobs": [{"name": "workers", "template": {"spec": {"template": {
                  "metadata": {"annotations": {"kueue.x-k8s.io/podset-required-topology": "rack"}}}}}}]}}
    objects, problems = convert_object(raw(jobset))
    assert warnings_of(problems) == []
    assert objects[0]["metadata"]["labels"] == {"tessera.dev/queue-name": "q"}
    assert objects[0]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"] == {
        "annotations": {"tessera.dev/podset-required-topology": "rack"}
    }


def test_config_map_without_kueue_configuration_passes_through() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"a.yaml": "x: 1\n"}}
    objects, problems = convert_object(raw(cm))
    assert objects == [cm]
    assert problems == []


def test_broken_configuration_inside_a_config_map_is_an_error() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kueue-manager-config"},
          "data": {"controller_manager_config.yaml": "apiVersion: config.kueue.x-k8s.io/v1beta1\nkind: [\n"}}
    objects, problems = convert_object(raw(cm))
    assert objects == []
    assert [(p.obj, p.path, p.severity) for p in problems] == [
        ("ConfigMap/kueue-manager-config", 'data["controller_manager_config.yaml"]', "error")
    ]
    assert "invalid YAML" in problems[0].message


def test_refused_configuration_values_inside_a_config_map_name_the_data_key() -> None:
    text = "apiVersion: config.kueue.x-k8s.io/v1beta1\nkind: Configuration\nwaitForPodsReady:\n  enable: true\n  timeout: soon\n"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kueue-manager-config"},
          "data": {"controller_manager_config.yaml": text, "other": "x"}}
    _, problems = convert_object(raw(cm))
    assert [(p.path, p.severity) for p in problems] == [
        ("data.other", "warning"),
        ('data["controller_manager_config.yaml"].waitForPodsReady.timeout', "error"),
    ]


def test_list_items_keep_their_position() -> None:
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ResourceFlavor", "metadata": {"name": "a"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ResourceFlavor", "metadata": {"name": "b"},
         "spec": {"nodeLabels": {"x": "y"}, "shiny": True}},
    ]})
    raws, _ = load_text(text, "flavors.yaml")
    objects, problems = convert_raws(raws)
    assert [o["metadata"]["name"] for o in objects] == ["a", "b"]
    assert [str(p) for p in problems] == [f"flavors.yaml:1: items[1]: ResourceFlavor/b: spec.shiny: {UNSUPPORTED}"]


def test_tessera_objects_pass_through() -> None:
    rf = {"apiVersion": "tessera.dev/v1alpha1", "kind": "ResourceFlavor", "metadata": {"name": "a"}}
    assert convert_object(raw(rf)) == ([rf], [])


# --- writing -----------------------------------------------------------------------------------------


def test_dump_manifests_orders_keys_and_round_trips() -> None:
    objects = [
        {"spec": {"clusterQueue": "cq"}, "metadata": {"labels": {"a": "b"}, "namespace": "ns", "name": "q"},
         "kind": "LocalQueue", "apiVersion": "tessera.dev/v1alpha1"},
        {"data": {"script.sh": "echo one\necho two\n", "n": "8", "yes": "yes"}, "kind": "ConfigMap",
         "apiVersion": "v1", "metadata": {"name": "c"}},
    ]
    text = dump_manifests(objects)
    assert text.startswith("---\napiVersion: tessera.dev/v1alpha1\nkind: LocalQueue\nmetadata:\n  name: q\n  namespace: ns\n")
    assert text.count("---\n") == 2
    assert "script.sh: |" in text
    assert list(yaml.safe_load_all(text)) == objects
    assert dump_manifests([]) == ""


# --- the command line ----------------------------------------------------------------------------------


def test_cli_writes_a_file_that_validates(in_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "tessera.yaml"
    result = runner.invoke(app, ["import-kueue", "cluster", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"warning: cluster/queues.yaml:3: ClusterQueue/team-a: spec.admissionChecks: {UNSUPPORTED}" in result.stderr
    assert "warning:" not in result.stdout
    assert out.exists()
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout


def test_cli_writes_to_stdout(in_data: Path) -> None:
    result = CliRunner().invoke(app, ["import-kueue", "configmap"])
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load_all(result.stdout))[0]["kind"] == "Configuration"


def test_cli_exits_2_on_broken_input(in_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "never.yaml"
    result = CliRunner().invoke(app, ["import-kueue", "broken/unknown-version.yaml", "-o", str(out)])
    assert result.exit_code == 2
    assert 'error: broken/unknown-version.yaml:2: ClusterQueue/from-the-future: apiVersion: unknown Kueue API version' in (
        result.stderr
    )
    assert not out.exists()


def test_cli_exits_2_on_invalid_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kueue.x-k8s.io/v1beta1\nkind: [\n")
    result = CliRunner().invoke(app, ["import-kueue", str(bad)])
    assert result.exit_code == 2
    assert f"error: {bad}:1" in result.stderr


def test_null_fields_are_unset() -> None:
    doc = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue", "metadata": {"name": "q"},
           "spec": {"cohort": None, "preemption": None, "namespaceSelector": None}}
    obj, problems = convert_one(doc)
    assert problems == []
    assert obj.get("spec", {}) == {}
    obj, problems = convert_one({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ResourceFlavor",
                                 "metadata": {"name": "f"}, "spec": None})
    assert problems == []
    assert "spec" not in obj

"""Validation: every error collected, each naming file, document, object and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quotas.bundle import load_bundle
from quotas.problems import Problem

GV = "tessera.dev/v1alpha1"


def obj(kind: str, name: str, spec: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": GV, "kind": kind, "metadata": {"name": name, **extra.pop("meta", {})}}
    if spec is not None:
        out["spec"] = spec
    out.update(extra)
    return out


def flavor(name: str, **spec: Any) -> dict[str, Any]:
    return obj("ResourceFlavor", name, spec)


def cq(name: str, *groups: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return obj("ClusterQueue", name, {"namespaceSelector": {}, "resourceGroups": list(groups), **spec})


def group(covered: list[str], *flavors: dict[str, Any]) -> dict[str, Any]:
    return {"coveredResources": covered, "flavors": list(flavors)}


def fq(name: str, **quotas: Any) -> dict[str, Any]:
    resources = []
    for resource, quota in quotas.items():
        entry = {"name": resource.replace("_", "/").replace("nvidia/com", "nvidia.com")}
        entry.update(quota if isinstance(quota, dict) else {"nominalQuota": quota})
        resources.append(entry)
    return {"name": name, "resources": resources}


GPU = "nvidia_com_gpu"


def run(write_yaml: Callable[..., Path], *docs: dict[str, Any]) -> tuple[Any, list[str]]:
    path = write_yaml("queues.yaml", *docs)
    bundle, problems = load_bundle([path])
    prefix = f"{path}:"
    return bundle, [str(p).removeprefix(str(path)) for p in problems if p.is_error and str(p).startswith(prefix)]


def test_the_documented_message_format(write_yaml: Callable[..., Path]) -> None:
    _, errors = run(
        write_yaml,
        flavor("a100"),
        flavor("h100"),
        cq("team-a", group(["nvidia.com/gpu"], fq("a100", **{GPU: 8}), fq("h100", **{GPU: "-1"}))),
    )
    assert errors == [
        ':3: ClusterQueue/team-a: spec.resourceGroups[0].flavors[1].resources[0].nominalQuota: '
        'must be a non-negative quantity, got "-1"'
    ]


def test_all_errors_are_collected_across_objects(write_yaml: Callable[..., Path]) -> None:
    _, errors = run(
        write_yaml,
        flavor("a100"),
        cq("one", group(["cpu"], fq("a100", cpu="x"))),
        cq("two", queueingStrategy="Fifo"),
        obj("LocalQueue", "lq", {"clusterQueue": "nope"}, meta={"namespace": "ns"}),
        obj("WorkloadPriorityClass", "high", value="big"),
    )
    assert len(errors) == 4
    assert any("ClusterQueue/one: spec.resourceGroups[0].flavors[0].resources[0].nominalQuota: must be a non-negative quantity" in e for e in errors)
    assert any('ClusterQueue/two: spec.queueingStrategy: must be one of BestEffortFIFO or StrictFIFO, got "Fifo"' in e for e in errors)
    assert any('LocalQueue/lq: spec.clusterQueue: unknown ClusterQueue "nope"' in e for e in errors)
    assert any('WorkloadPriorityClass/high: value: must be an integer, got "big"' in e for e in errors)


CASES: list[tuple[str, list[dict[str, Any]], str]] = [
    (
        "covered resources out of order",
        [flavor("f"), cq("q", group(["cpu", "memory"], fq("f", memory=1, cpu=1)))],
        "spec.resourceGroups[0].flavors[0].resources: must list the covered resources in order [cpu, memory], got [memory, cpu]",
    ),
    (
        "covered resource missing",
        [flavor("f"), cq("q", group(["cpu", "memory"], fq("f", cpu=1)))],
        "must list the covered resources in order [cpu, memory], got [cpu]",
    ),
    (
        "resource in two groups",
        [flavor("f"), flavor("g"), cq("q", group(["cpu"], fq("f", cpu=1)), group(["cpu"], fq("g", cpu=1)))],
        'spec.resourceGroups[1].coveredResources[0]: resource "cpu" is already covered by resourceGroups[0]',
    ),
    (
        "flavor in two groups",
        [flavor("f"), cq("q", group(["cpu"], fq("f", cpu=1)), group(["memory"], fq("f", memory=1)))],
        'spec.resourceGroups[1].flavors[0].name: flavor "f" is already listed in resourceGroups[0]',
    ),
    (
        "borrowing limit without cohort",
        [flavor("f"), cq("q", group(["cpu"], fq("f", cpu={"nominalQuota": 1, "borrowingLimit": 1})))],
        "spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit: may only be set with spec.cohort",
    ),
    (
        "lending limit above nominal",
        [flavor("f"), cq("q", group(["cpu"], fq("f", cpu={"nominalQuota": 2, "lendingLimit": "2500m"})), cohort="c")],
        'spec.resourceGroups[0].flavors[0].resources[0].lendingLimit: must not exceed nominalQuota (2), got "2500m"',
    ),
    (
        "unknown flavor",
        [cq("q", group(["cpu"], fq("ghost", cpu=1)))],
        'ClusterQueue/q: spec.resourceGroups[0].flavors[0].name: unknown ResourceFlavor "ghost"',
    ),
    (
        "unknown topology",
        [flavor("f", topologyName="dc")],
        'ResourceFlavor/f: spec.topologyName: unknown Topology "dc"',
    ),
    (
        "unknown parent cohort",
        [obj("Cohort", "c", {"parentName": "root"})],
        'Cohort/c: spec.parentName: unknown Cohort "root"',
    ),
    (
        "cohort cycle",
        [obj("Cohort", "a", {"parentName": "b"}), obj("Cohort", "b", {"parentName": "c"}), obj("Cohort", "c", {"parentName": "a"})],
        "Cohort/a: spec.parentName: cohort cycle a -> b -> c -> a",
    ),
    (
        "cohort borrowing without parent",
        [flavor("f"), obj("Cohort", "c", {"resourceGroups": [group(["cpu"], fq("f", cpu={"nominalQuota": 1, "borrowingLimit": 1}))]})],
        "borrowingLimit: may only be set with spec.parentName",
    ),
    (
        "bad object name",
        [flavor("A100")],
        'ResourceFlavor/A100: metadata.name: must be a DNS-1123 subdomain',
    ),
    (
        "bad label",
        [flavor("f", nodeLabels={"gpu model": "a100"})],
        'spec.nodeLabels: label key "gpu model"',
    ),
    (
        "bad label value",
        [flavor("f", nodeLabels={"gpu": "a 100"})],
        'label "gpu" value "a 100"',
    ),
    (
        "unknown field",
        [cq("q", cohrot="c")],
        "ClusterQueue/q: spec.cohrot: unknown field",
    ),
    (
        "missing required",
        [obj("LocalQueue", "lq", {}, meta={"namespace": "ns"})],
        "LocalQueue/lq: spec.clusterQueue: required field is missing",
    ),
    (
        "topology levels repeat",
        [obj("Topology", "t", {"levels": [{"nodeLabel": "rack"}, {"nodeLabel": "rack"}]})],
        'Topology/t: spec.levels[1].nodeLabel: repeats nodeLabel "rack" of spec.levels[0]',
    ),
    (
        "bad preemption policy",
        [cq("q", preemption={"withinClusterQueue": "Always"})],
        "spec.preemption.withinClusterQueue: must be one of Never, LowerPriority or LowerOrNewerEqualPriority",
    ),
    (
        "workload minCount above count",
        [obj("Workload", "w", {"queueName": "lq", "podSets": [{"name": "main", "count": 2, "minCount": 3}]}, meta={"namespace": "ns"})],
        "Workload/w: spec.podSets[0]: minCount (3) must not exceed count (2)",
    ),
    (
        "workload podset names repeat",
        [obj("Workload", "w", {"queueName": "lq", "podSets": [{"name": "a", "count": 1}, {"name": "a", "count": 1}]}, meta={"namespace": "ns"})],
        'Workload/w: spec.podSets[1].name: repeats name "a" of spec.podSets[0]',
    ),
    (
        "wrong version",
        [{"apiVersion": "tessera.dev/v1", "kind": "ClusterQueue", "metadata": {"name": "q"}}],
        'ClusterQueue/q: apiVersion: must be tessera.dev/v1alpha1, got "tessera.dev/v1"',
    ),
    (
        "unknown kind",
        [obj("Queue", "q")],
        'Queue/q: kind: unknown kind "Queue" in tessera.dev/v1alpha1',
    ),
    (
        "kueue object",
        [{"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue", "metadata": {"name": "q"}}],
        "tessera import-kueue",
    ),
    (
        "duplicate",
        [flavor("f"), flavor("f")],
        "ResourceFlavor/f: metadata.name: duplicate of ResourceFlavor/f at",
    ),
    (
        "unquoted fractional quota",
        [flavor("f"), cq("q", group(["cpu"], fq("f", cpu=1.5)))],
        'nominalQuota: must be an integer or a quoted quantity such as "1500m", got 1.5',
    ),
    (
        "bad configuration duration",
        [{"apiVersion": GV, "kind": "Configuration", "waitForPodsReady": {"enable": True, "timeout": "soon"}}],
        "waitForPodsReady.timeout: must be a duration",
    ),
    (
        "quantity in a node is checked too",
        [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "lots"}}}],
        'Node/n: status.allocatable.cpu: must be a quantity, got "lots"',
    ),
    (
        "gpu requests on a queued job",
        [{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "labels": {"tessera.dev/queue-name": "lq"}},
          "spec": {"template": {"spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": "one"}}}]}}}}],
        'Job/j: spec.template.spec.containers[0].resources.requests["nvidia.com/gpu"]: must be a quantity, got "one"',
    ),
]


@pytest.mark.parametrize(("docs", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_reports_its_field(write_yaml: Callable[..., Path], docs: list[dict[str, Any]], expected: str) -> None:
    _, errors = run(write_yaml, *docs)
    assert any(expected in e for e in errors), errors


def test_a_valid_set_passes_and_is_kept(write_yaml: Callable[..., Path]) -> None:
    bundle, errors = run(
        write_yaml,
        obj("Topology", "dc", {"levels": [{"nodeLabel": "example.com/block"}, {"nodeLabel": "example.com/rack"}, {"nodeLabel": "kubernetes.io/hostname"}]}),
        flavor("a100", nodeLabels={"gpu": "a100"}, topologyName="dc"),
        obj("Cohort", "root", {}),
        obj("Cohort", "org", {"parentName": "root", "fairSharing": {"weight": 2}}),
        cq("team-a", group(["cpu", "nvidia.com/gpu"], fq("a100", cpu=64, **{GPU: {"nominalQuota": 8, "borrowingLimit": 4, "lendingLimit": 2}})), cohort="org"),
        obj("LocalQueue", "lq", {"clusterQueue": "team-a"}, meta={"namespace": "team-a"}),
        obj("WorkloadPriorityClass", "high", value=1000, description="prod"),
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "team-a",
         "labels": {"tessera.dev/queue-name": "lq", "tessera.dev/priority-class": "high"}},
         "spec": {"parallelism": 2, "template": {"metadata": {"annotations": {"tessera.dev/podset-required-topology": "example.com/rack"}},
                  "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 4}}}]}}}},
    )
    assert errors == []
    assert set(bundle.cluster_queues) == {"team-a"}
    assert bundle.cohorts["org"].spec.parent_name == "root"
    assert len(bundle.job_workloads) == 1


def test_references_from_user_objects(write_yaml: Callable[..., Path]) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "team-a",
           "labels": {"tessera.dev/queue-name": "nope", "tessera.dev/priority-class": "urgent"}},
           "spec": {"template": {"metadata": {"annotations": {"tessera.dev/podset-preferred-topology": "zone"}}}}}
    # Alone, a user's Job has no queues to be checked against: no error.
    _, errors = run(write_yaml, job)
    assert errors == []
    # With the admin's objects present, each dangling reference is named.
    _, errors = run(
        write_yaml,
        flavor("f"),
        cq("q"),
        obj("LocalQueue", "lq", {"clusterQueue": "q"}, meta={"namespace": "team-a"}),
        obj("WorkloadPriorityClass", "high", value=1),
        obj("Topology", "dc", {"levels": [{"nodeLabel": "rack"}]}),
        job,
    )
    assert len(errors) == 3, errors
    assert any('metadata.labels["tessera.dev/queue-name"]: unknown LocalQueue "nope" in namespace "team-a"' in e for e in errors)
    assert any('metadata.labels["tessera.dev/priority-class"]: unknown WorkloadPriorityClass "urgent"' in e for e in errors)
    assert any('"zone" is not a level of any Topology (rack)' in e for e in errors)


def test_bad_objects_do_not_cost_the_good_ones(write_yaml: Callable[..., Path]) -> None:
    bundle, errors = run(
        write_yaml,
        flavor("f"),
        cq("good", group(["cpu"], fq("f", cpu=1))),
        cq("bad", group(["cpu"], fq("f", cpu={"nominalQuota": 1, "borrowingLimit": 1}))),
        obj("LocalQueue", "to-bad", {"clusterQueue": "bad"}, meta={"namespace": "ns"}),
    )
    assert set(bundle.cluster_queues) == {"good"}
    assert set(bundle.local_queues) == {("ns", "to-bad")}
    # The queue pointing at the refused ClusterQueue is not reported a second time.
    assert len(errors) == 1 and "ClusterQueue/bad" in errors[0]


def test_a_refused_object_still_has_its_references_checked(write_yaml: Callable[..., Path]) -> None:
    _, errors = run(write_yaml, cq("q", group(["cpu"], fq("ghost", cpu={"nominalQuota": 1, "borrowingLimit": 1}))))
    assert len(errors) == 2
    assert any("borrowingLimit" in e for e in errors) and any('unknown ResourceFlavor "ghost"' in e for e in errors)


def test_foreign_kinds_are_warnings(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("x.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    _, problems = load_bundle([path])
    assert [p.severity for p in problems] == ["warning"]
    assert isinstance(problems[0], Problem) and "not a kind Tessera reads" in problems[0].message


def test_unquoted_timestamps_stay_strings(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("ts.yaml", "apiVersion: tessera.dev/v1alpha1\nkind: ResourceFlavor\nmetadata:\n  name: f\n  creationTimestamp: 2024-01-01T00:00:00Z\n")
    bundle, problems = load_bundle([path])
    assert problems == []
    assert bundle.flavors["f"].metadata.creation_timestamp == "2024-01-01T00:00:00Z"


def test_null_fields_read_as_unset_and_metadata_typos_are_caught(write_yaml: Callable[..., Path]) -> None:
    _, errors = run(write_yaml, cq("q", preemption=None), obj("ResourceFlavor", "f", None, meta={"lables": {"a": "b"}}))
    assert errors == [":2: ResourceFlavor/f: metadata.lables: unknown field"]


def test_hostname_must_be_the_lowest_topology_level(write_yaml: Callable[..., Path]) -> None:
    _, errors = run(write_yaml, obj("Topology", "t", {"levels": [{"nodeLabel": "kubernetes.io/hostname"}, {"nodeLabel": "rack"}]}))
    assert errors == [":1: Topology/t: spec.levels[0].nodeLabel: kubernetes.io/hostname may only be the last (lowest) level"]


def test_a_bad_workload_type_is_reported_once(write_yaml: Callable[..., Path]) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j", "namespace": "ml",
                        "labels": {"tessera.dev/queue-name": "q", "tessera.dev/workload-type": "serving"}},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    _, errors = run(write_yaml, job)
    assert [e for e in errors if "workload-type" in e] == [
        ':1: Job/j: metadata.labels["tessera.dev/workload-type"]: must be training or inference, got "serving"'
    ]

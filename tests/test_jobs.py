"""Job to Workload conversion and effective pod requests, as Kubernetes computes them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from quotas.jobs import JobConversionError, workload_from_job, workload_name, workload_requests
from quotas.kube import Job, PodSpec, pod_requests


def spec(**fields: Any) -> PodSpec:
    return PodSpec.model_validate(fields)


def res(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "c", "resources": {"requests": requests or {}, "limits": limits or {}}}
    out.update(extra)
    return out


def D(mapping: dict[str, str]) -> dict[str, Decimal]:
    from quotas.quantity import parse_quantity

    return {k: parse_quantity(v) for k, v in mapping.items()}


def test_containers_add_up() -> None:
    pod = spec(containers=[res({"cpu": "500m", "memory": "1Gi"}), res({"cpu": "1", "nvidia.com/gpu": 1})])
    assert pod_requests(pod) == D({"cpu": "1500m", "memory": "1Gi", "nvidia.com/gpu": "1"})


def test_init_container_raises_to_its_peak() -> None:
    pod = spec(containers=[res({"cpu": "1", "memory": "1Gi"})], initContainers=[res({"cpu": "4"}), res({"memory": "512Mi"})])
    assert pod_requests(pod) == D({"cpu": "4", "memory": "1Gi"})


def test_overhead_is_added_after_the_max() -> None:
    pod = spec(containers=[res({"cpu": "1"})], initContainers=[res({"cpu": "2"})], overhead={"cpu": "250m", "memory": "120Mi"})
    assert pod_requests(pod) == D({"cpu": "2250m", "memory": "120Mi"})


def test_sidecars_run_beside_regular_containers_and_later_init_containers() -> None:
    # A sidecar (restartPolicy Always) adds to the regular containers; an init container that
    # starts after it needs its own request plus the sidecar's.
    pod = spec(
        containers=[res({"cpu": "1"})],
        initContainers=[res({"cpu": "500m"}, restartPolicy="Always"), res({"cpu": "2"})],
    )
    assert pod_requests(pod) == D({"cpu": "2500m"})
    pod = spec(
        containers=[res({"cpu": "3"})],
        initContainers=[res({"cpu": "2"}), res({"cpu": "500m"}, restartPolicy="Always")],
    )
    assert pod_requests(pod) == D({"cpu": "3500m"})


def test_limits_stand_in_for_missing_requests() -> None:
    pod = spec(containers=[res({"cpu": "1"}, {"cpu": "2", "nvidia.com/gpu": "2", "memory": "4Gi"})])
    assert pod_requests(pod) == D({"cpu": "1", "nvidia.com/gpu": "2", "memory": "4Gi"})


def job(**overrides: Any) -> Job:
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": "team-a", "uid": "u-1", "labels": {"tessera.dev/queue-name": "lq"}},
        "spec": {
            "parallelism": 4,
            "completions": 8,
            "template": {"spec": {"containers": [res({"cpu": "2"}, {"nvidia.com/gpu": "1"})]}},
        },
    }
    for key, value in overrides.items():
        target = manifest
        *path, last = key.split("__")
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    return Job.model_validate(manifest)


def test_job_becomes_one_podset_of_parallelism_pods() -> None:
    workload = workload_from_job(job())
    assert workload.metadata.name == "job-train"
    assert workload.namespace == "team-a"
    assert workload.spec.queue_name == "lq"
    [podset] = workload.spec.pod_sets
    assert podset.count == 4 and podset.min_count is None and podset.topology_request is None
    assert workload_requests(workload) == D({"cpu": "8", "nvidia.com/gpu": "4"})
    assert workload.metadata.owner_references[0]["uid"] == "u-1"
    assert workload.metadata.labels["tessera.dev/workload-type"] == "training"


@pytest.mark.parametrize(
    ("parallelism", "completions", "count"), [(None, None, 1), (8, None, 8), (8, 3, 3), (0, 5, 0), (None, 4, 1)]
)
def test_pod_count_is_parallelism_capped_by_completions(parallelism: int | None, completions: int | None, count: int) -> None:
    j = job(spec__parallelism=parallelism, spec__completions=completions)
    assert workload_from_job(j).spec.pod_sets[0].count == count


def test_labels_and_annotations_carry_over() -> None:
    j = job(
        metadata__labels={"tessera.dev/queue-name": "lq", "tessera.dev/priority-class": "high", "tessera.dev/workload-type": "inference"},
        metadata__annotations={"tessera.dev/job-min-parallelism": "2"},
        spec__template__metadata={"annotations": {"tessera.dev/podset-required-topology": "example.com/rack"}},
    )
    workload = workload_from_job(j)
    assert workload.spec.priority_class_name == "high"
    assert workload.metadata.labels["tessera.dev/workload-type"] == "inference"
    podset = workload.spec.pod_sets[0]
    assert podset.min_count == 2
    assert podset.topology_request is not None and podset.topology_request.required == "example.com/rack"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metadata__labels": {}}, 'metadata.labels["tessera.dev/queue-name"]'),
        ({"metadata__labels": {"tessera.dev/queue-name": "lq", "tessera.dev/workload-type": "batch"}}, "workload-type"),
        ({"metadata__annotations": {"tessera.dev/job-min-parallelism": "x"}}, "job-min-parallelism"),
        ({"metadata__annotations": {"tessera.dev/job-min-parallelism": "9"}}, "job-min-parallelism"),
        (
            {"spec__template__metadata": {"annotations": {"tessera.dev/podset-required-topology": "r", "tessera.dev/podset-preferred-topology": "r"}}},
            "spec.template.metadata.annotations",
        ),
    ],
)
def test_bad_jobs_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(JobConversionError) as info:
        workload_from_job(job(**overrides))
    assert field in info.value.field


def test_long_job_names_stay_valid_and_distinct() -> None:
    a, b = "a" * 260, "a" * 259 + "b"
    assert len(workload_name(a)) <= 253 and workload_name(a) != workload_name(b)

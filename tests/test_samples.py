"""The sample manifests in deploy/samples: each folder is a consistent set that validates on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quotas.base import (
    PRIORITY_CLASS_LABEL,
    QUEUE_NAME_LABEL,
    REQUIRED_TOPOLOGY_ANNOTATION,
    WORKLOAD_TYPE_LABEL,
)
from quotas.bundle import Bundle, load_bundle
from tessera.cli import app

SAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "samples"
FOLDERS = sorted(p for p in SAMPLES.iterdir() if p.is_dir())


def _load(name: str) -> Bundle:
    bundle, problems = load_bundle([SAMPLES / name])
    assert not problems, "\n".join(str(p) for p in problems)
    return bundle


def test_expected_samples_exist() -> None:
    assert {p.name for p in FOLDERS} >= {"single-team", "multi-team-cohort", "fair-sharing", "topology"}
    assert (SAMPLES / "README.md").is_file()
    readme = (SAMPLES / "README.md").read_text()
    for folder in FOLDERS:
        assert f"`{folder.name}/`" in readme, f"deploy/samples/README.md does not describe {folder.name}/"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_sample_folder_loads_without_problems(folder: Path) -> None:
    bundle, problems = load_bundle([folder])
    assert not [p for p in problems if p.is_error], "\n".join(str(p) for p in problems)
    assert not problems, "samples should not even warn:\n" + "\n".join(str(p) for p in problems)
    assert bundle.count() > 0
    # Every queued Job became a Workload.
    queued = [key for key, job in bundle.jobs.items() if QUEUE_NAME_LABEL in job.metadata.labels]
    assert sorted(bundle.job_workloads) == sorted(queued)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_cli_validate_accepts_sample_folder(folder: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 0, result.output


def test_single_team() -> None:
    bundle = _load("single-team")
    assert len(bundle.flavors) == 1
    [cq] = bundle.cluster_queues.values()
    assert cq.spec.namespace_selector is not None and cq.spec.namespace_selector.matches({"any": "namespace"})
    [group] = cq.spec.resource_groups
    assert group.covered_resources == ["cpu", "memory", "nvidia.com/gpu"]
    assert len(bundle.local_queues) == 1


def test_multi_team_cohort() -> None:
    bundle = _load("multi-team-cohort")
    assert len(bundle.flavors) >= 2 and all(f.spec.node_labels for f in bundle.flavors.values())
    queues = list(bundle.cluster_queues.values())
    assert len(queues) == 3 and len({q.spec.cohort for q in queues}) == 1 and queues[0].spec.cohort
    limits = [
        (r.borrowing_limit, r.lending_limit)
        for q in queues for g in q.spec.resource_groups for f in g.flavors for r in f.resources
    ]
    assert any(b is not None for b, _ in limits) and any(lend is not None for _, lend in limits)
    assert any(q.spec.preemption.reclaim_within_cohort != "Never" for q in queues)
    assert {ns for ns, _ in bundle.local_queues} == {"team-nlp", "team-vision", "team-serving"}
    assert len(bundle.priority_classes) >= 2

    jobs = {name: job for (_, name), job in bundle.jobs.items()}
    single = [j for j in jobs.values() if j.spec.pod_count() == 1]
    gangs = [j for j in jobs.values() if j.spec.parallelism == 8 and j.spec.completions == 8]
    inference = [j for j in jobs.values() if j.metadata.labels.get(WORKLOAD_TYPE_LABEL) == "inference"]
    assert single and gangs and inference
    assert all(PRIORITY_CLASS_LABEL in j.metadata.labels for j in inference)
    for (_, name), workload in bundle.job_workloads.items():
        assert workload.spec.priority_class_name in bundle.priority_classes, name


def test_fair_sharing() -> None:
    bundle = _load("fair-sharing")
    assert bundle.configuration is not None and bundle.configuration.fair_sharing.enable
    children = [c for c in bundle.cohorts.values() if c.spec.parent_name]
    assert len(children) >= 2 and all(c.spec.parent_name in bundle.cohorts for c in children)
    assert any(c.spec.fair_sharing is not None for c in children)
    assert all(q.spec.cohort in bundle.cohorts for q in bundle.cluster_queues.values())


def test_topology() -> None:
    bundle = _load("topology")
    [topology] = bundle.topologies.values()
    assert topology.level_labels[-1] == "kubernetes.io/hostname" and len(topology.level_labels) == 3
    assert any(f.spec.topology_name == topology.name for f in bundle.flavors.values())
    rack = topology.level_labels[1]
    required = [
        j for j in bundle.jobs.values() if j.spec.template.metadata.annotations.get(REQUIRED_TOPOLOGY_ANNOTATION) == rack
    ]
    assert required
    workloads = [w for w in bundle.job_workloads.values() if w.spec.pod_sets[0].topology_request is not None]
    assert any(w.spec.pod_sets[0].topology_request.required == rack for w in workloads)  # type: ignore[union-attr]

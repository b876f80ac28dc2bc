"""The built-in setup of `tessera simulate` without arguments: cluster, queues and workload.

- Cluster: 64 nodes x 8 H100 GPUs (128 CPUs, 1Ti memory each) in 2 blocks x 4 racks of 8
  nodes (`simulator.cluster_gen.generate_nodes`): 512 GPUs.
- Queues: a Topology (block > rack > host), one ResourceFlavor ``h100`` bound to it, a Cohort
  ``all-teams`` and three ClusterQueues ``team-a`` (half of the cluster), ``team-b`` and
  ``team-c`` (a quarter each) whose nominal quotas add up to the cluster, borrowing without
  limit, ``reclaimWithinCohort: Any`` and ``withinClusterQueue: LowerPriority``; a LocalQueue of
  the same name in each team's namespace; WorkloadPriorityClasses ``inference-high`` (1000),
  ``training`` (100) and ``batch-low`` (10); a Configuration enabling ``waitForPodsReady``
  (30 minutes), so pods that are admitted but cannot be placed are evicted and requeued.
- Workload: `DEFAULT_WORKLOAD_SPEC`, 500 synthetic jobs spread evenly over the three teams
  at an offered load of 1.2 x the cluster, so queues stay non-empty and borrowing matters
  (team-a's quota is twice its share of demand).

Everything goes through the same loaders and checks as a user's files.
"""

from __future__ import annotations

from typing import Any

import yaml

from quotas.bundle import Bundle, build_bundle
from quotas.loader import RawObject, Source, load_text
from quotas.problems import ManifestError, errors_in
from simulator.cluster_gen import generate_nodes
from simulator.synthetic import load_synthetic_spec
from simulator.trace import PriorityClasses, Trace

__all__ = [
    "DEFAULT_BLOCKS",
    "DEFAULT_GPUS_PER_NODE",
    "DEFAULT_GPU_MODEL",
    "DEFAULT_NODES",
    "DEFAULT_QUEUES_YAML",
    "DEFAULT_RACKS",
    "DEFAULT_SEED",
    "DEFAULT_TEAMS",
    "DEFAULT_WORKLOAD_SPEC",
    "default_bundle",
    "default_cluster_bundle",
    "default_node_manifests",
    "default_queue_manifests",
    "default_queues_bundle",
    "default_trace",
]

DEFAULT_NODES = 64
DEFAULT_GPUS_PER_NODE = 8
DEFAULT_GPU_MODEL = "H100"
DEFAULT_RACKS = 8  # in all: 2 blocks x 4 racks
DEFAULT_BLOCKS = 2
DEFAULT_TEAMS = ("team-a", "team-b", "team-c")
DEFAULT_SEED = 42
DEFAULT_WORKLOAD_SPEC = "synthetic:jobs=500,load=1.2,gpus=512,queues=team-a|team-b|team-c"
"""The default workload (``seed`` comes from ``--seed``, default `DEFAULT_SEED`)."""

CLUSTER_SOURCE = "<built-in cluster>"
QUEUES_SOURCE = "<built-in queues>"

_TEAM_QUEUES = """\
---
apiVersion: tessera.dev/v1alpha1
kind: ClusterQueue
metadata:
  name: {team}
spec:
  cohort: all-teams
  namespaceSelector: {{}}
  preemption:
    reclaimWithinCohort: Any
    withinClusterQueue: LowerPriority
  resourceGroups:
    - coveredResources: ["cpu", "memory", "nvidia.com/gpu"]
      flavors:
        - name: h100
          resources:
            - name: cpu
              nominalQuota: {cpu}
            - name: memory
              nominalQuota: {memory}
            - name: nvidia.com/gpu
              nominalQuota: {gpus}
---
apiVersion: tessera.dev/v1alpha1
kind: LocalQueue
metadata:
  namespace: {team}
  name: {team}
spec:
  clusterQueue: {team}
"""

_TEAM_SHARES = {"team-a": 4, "team-b": 2, "team-c": 2}
"""Eighths of the cluster each team's nominal quota holds (half, a quarter, a quarter)."""

DEFAULT_QUEUES_YAML = """\
# Tessera's built-in queues: three teams sharing 64 x 8 H100 nodes (2 blocks x 4 racks) in one cohort.
apiVersion: tessera.dev/v1alpha1
kind: Topology
metadata:
  name: default
spec:
  levels:
    - nodeLabel: tessera.dev/block
    - nodeLabel: tessera.dev/rack
    - nodeLabel: kubernetes.io/hostname
---
apiVersion: tessera.dev/v1alpha1
kind: ResourceFlavor
metadata:
  name: h100
spec:
  nodeLabels:
    nvidia.com/gpu.product: H100
  topologyName: default
---
apiVersion: tessera.dev/v1alpha1
kind: Cohort
metadata:
  name: all-teams
""" + "".join(
    _TEAM_QUEUES.format(team=team, cpu=1024 * eighths, memory=f"{8 * eighths}Ti", gpus=64 * eighths)
    for team, eighths in _TEAM_SHARES.items()
) + """\
---
apiVersion: tessera.dev/v1alpha1
kind: WorkloadPriorityClass
metadata:
  name: inference-high
value: 1000
description: Online inference services.
---
apiVersion: tessera.dev/v1alpha1
kind: WorkloadPriorityClass
metadata:
  name: training
value: 100
description: Ordinary training jobs.
---
apiVersion: tessera.dev/v1alpha1
kind: WorkloadPriorityClass
metadata:
  name: batch-low
value: 10
description: Opportunistic batch work, first to be preempted.
---
apiVersion: tessera.dev/v1alpha1
kind: Configuration
waitForPodsReady:
  enable: true
  timeout: 30m
"""


def default_node_manifests() -> list[dict[str, Any]]:
    """The default cluster's Node manifests (dicts)."""
    return generate_nodes(DEFAULT_NODES, DEFAULT_GPUS_PER_NODE, DEFAULT_GPU_MODEL, DEFAULT_RACKS, DEFAULT_BLOCKS)


def default_queue_manifests() -> list[dict[str, Any]]:
    """The default queue manifests (dicts), parsed from `DEFAULT_QUEUES_YAML`."""
    return [doc for doc in yaml.safe_load_all(DEFAULT_QUEUES_YAML) if doc]


def _checked(raws: list[RawObject]) -> Bundle:
    bundle, problems = build_bundle(raws)
    errors = errors_in(problems)
    if errors:  # pragma: no cover - the built-in manifests are tested to be valid
        raise ManifestError(errors)
    return bundle


def _node_raws() -> list[RawObject]:
    return [RawObject(Source(CLUSTER_SOURCE, i + 1), m) for i, m in enumerate(default_node_manifests())]


def _queue_raws() -> list[RawObject]:
    raws, problems = load_text(DEFAULT_QUEUES_YAML, QUEUES_SOURCE)
    if problems:  # pragma: no cover
        raise ManifestError(problems)
    return raws


def default_cluster_bundle() -> Bundle:
    """The default cluster's Nodes, validated (``bundle.nodes``)."""
    return _checked(_node_raws())


def default_queues_bundle() -> Bundle:
    """The default queues, priority classes and Configuration, validated like a user's queues file."""
    return _checked(_queue_raws())


def default_bundle() -> Bundle:
    """Cluster and queues together in one validated bundle."""
    return _checked(_node_raws() + _queue_raws())


def default_trace(seed: int = DEFAULT_SEED, priority_classes: PriorityClasses | None = None) -> Trace:
    """The default synthetic workload for ``seed``; priorities from the default classes unless given."""
    classes = priority_classes if priority_classes is not None else default_queues_bundle().priority_classes
    spec = DEFAULT_WORKLOAD_SPEC.partition(":")[2] + f",seed={seed}"
    trace = load_synthetic_spec(spec, priority_classes=classes)
    trace.name = f"default-seed{seed}"
    return trace

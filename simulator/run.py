"""`tessera simulate`: from files (or the built-in defaults) to a Setup, every policy run, the outputs.

The CLI stays thin: this module turns the user's inputs into the engine's `Setup`, with
errors naming file and field, and runs the policies side by side on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from quotas.api import ClusterQueue, Configuration, LocalQueue, ResourceFlavor, WaitForPodsReadyConfig
from quotas.bundle import Bundle, load_bundle
from quotas.kube import Node
from quotas.problems import ManifestError, Problem, errors_in
from quotas.units import milli
from scheduler.decisions import Policy, make_policy
from scheduler.kueue import bind_pending_pods
from scheduler.snapshot import Admitted, Snapshot
from simulator import defaults
from simulator.engine import Binder, RunResult, Setup, Simulation
from simulator.trace import Trace, check_queues, load_workload

ALL_POLICIES = ("tessera", "kueue", "bestfit", "fgd", "random")
DEFAULT_POLICIES = ("tessera", "kueue")


@dataclass
class Inputs:
    """A ready-to-run setup plus what reports say about it."""

    setup: Setup
    description: str
    quotas: dict[str, float]
    """Nominal GPUs per ClusterQueue (for the usage-against-quota plot)."""


def parse_policies(text: str) -> list[str]:
    """`tessera,kueue` or `all`; unknown names are bad input."""
    names = list(ALL_POLICIES) if text.strip() == "all" else [p.strip() for p in text.split(",") if p.strip()]
    unknown = [n for n in names if n not in ALL_POLICIES]
    if unknown or not names:
        raise ValueError(f'--policy: unknown policy "{",".join(unknown)}" (known: {", ".join(ALL_POLICIES)}, all)')
    return list(dict.fromkeys(names))


def _checked(paths: Sequence[str], what: str) -> Bundle:
    bundle, problems = load_bundle(paths)
    errors = errors_in(problems)
    if errors:
        raise ManifestError(errors)
    if not bundle.count():
        raise ManifestError([Problem(", ".join(paths), "", "", f"no objects found (expected {what})")])
    return bundle


def single_queue_bundle(nodes: Sequence[Node], queues: Sequence[tuple[str, str]]) -> Bundle:
    """For traces without queue manifests: one flavor over every node and one ClusterQueue holding
    the whole cluster's capacity, with a LocalQueue for each queue the trace names."""
    totals: dict[str, Decimal] = {}
    for node in nodes:
        for resource, amount in node.allocatable().items():
            totals[resource] = totals.get(resource, Decimal(0)) + amount
    resources = sorted(r for r in totals if r != "pods")
    bundle = Bundle()
    bundle.flavors["default"] = ResourceFlavor.model_validate({"metadata": {"name": "default"}})
    bundle.cluster_queues["cluster"] = ClusterQueue.model_validate(
        {
            "metadata": {"name": "cluster"},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": resources,
                        "flavors": [
                            {"name": "default", "resources": [{"name": r, "nominalQuota": str(totals[r])} for r in resources]}
                        ],
                    }
                ],
            },
        }
    )
    for namespace, name in sorted(set(queues)):
        bundle.local_queues[(namespace, name)] = LocalQueue.model_validate(
            {"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": "cluster"}}
        )
    return bundle


def simulation_config(configuration: Configuration | None) -> Configuration:
    """The Configuration a run uses: the given one, with waitForPodsReady on (30 minutes) unless it
    says otherwise, because a simulated Kueue without it would hold half-placed gangs forever."""
    config = configuration or Configuration()
    if "wait_for_pods_ready" not in config.model_fields_set:
        config = config.model_copy(update={"wait_for_pods_ready": WaitForPodsReadyConfig(enable=True)})
    return config


def load_inputs(cluster: str | None, queues: str | None, workload: str | None, seed: int) -> Inputs:
    """The Setup for these inputs; anything not given comes from the built-in defaults (see DESIGN.md)."""
    use_defaults = cluster is None and queues is None and workload is None
    queue_bundle = _checked([queues], "tessera.dev queue manifests") if queues else None
    if queue_bundle is None and (use_defaults or workload is None):
        queue_bundle = defaults.default_queues_bundle()
    classes = {name: pc.value for name, pc in queue_bundle.priority_classes.items()} if queue_bundle else {}

    nodes: list[Node]
    namespace_labels: dict[str, dict[str, str]] = {}
    if cluster:
        cluster_bundle = _checked([cluster], "Node manifests")
        nodes = list(cluster_bundle.nodes.values())
        namespace_labels.update(cluster_bundle.namespace_labels())
        if not nodes:
            raise ManifestError([Problem(cluster, "", "", "no Node objects found")])
    else:
        nodes = []
    gpus = sum(int(n.allocatable().get("nvidia.com/gpu", 0)) for n in nodes) or None
    spec = workload or defaults.DEFAULT_WORKLOAD_SPEC
    trace: Trace = load_workload(spec, priority_classes=classes, seed=seed, cluster_gpus=gpus)
    if not nodes:
        nodes = list(trace.nodes) if trace.nodes else list(defaults.default_cluster_bundle().nodes.values())
    if queue_bundle is None:
        queue_bundle = single_queue_bundle(nodes, trace.queues())
    problems = check_queues(trace, queue_bundle)
    if errors_in(problems):
        raise ManifestError(errors_in(problems))

    setup = Setup(
        nodes=nodes,
        flavors=list(queue_bundle.flavors.values()),
        cluster_queues=list(queue_bundle.cluster_queues.values()),
        cohorts=list(queue_bundle.cohorts.values()),
        local_queues=list(queue_bundle.local_queues.values()),
        jobs=list(trace.jobs),
        topologies=list(queue_bundle.topologies.values()),
        config=simulation_config(queue_bundle.configuration),
        seed=seed,
        namespace_labels={**namespace_labels, **queue_bundle.namespace_labels()},
    )
    gpu_total = sum(int(n.allocatable().get("nvidia.com/gpu", 0)) for n in nodes)
    description = (
        f"{len(nodes)} nodes, {gpu_total} GPUs; {len(setup.cluster_queues)} ClusterQueues; "
        f"workload {spec} ({len(setup.jobs)} workloads); seed {seed}"
    )
    return Inputs(setup, description, nominal_gpus(setup.cluster_queues))


def nominal_gpus(cluster_queues: Sequence[ClusterQueue], resource: str = "nvidia.com/gpu") -> dict[str, float]:
    out: dict[str, float] = {}
    for queue in cluster_queues:
        total = 0
        for group in queue.spec.resource_groups:
            for flavor in group.flavors:
                total += sum(milli(q.nominal_quota) for q in flavor.resources if q.name == resource)
        out[queue.name] = total / 1000
    return out


def binder_for(policy: Policy) -> Binder | None:
    """kube-scheduler's binding for policies that admit by quota only; None for policies that place pods."""
    if policy.places_pods:
        return None
    scorer_for = getattr(policy, "scorer_for")

    def bind(snapshot: Snapshot, waiting: list[Admitted], rng: random.Random) -> list[tuple[str, int, object]]:
        made = bind_pending_pods(
            snapshot.cluster, waiting, scorer_for(snapshot), rng, flavors=snapshot.flavors, topologies=snapshot.topologies
        )
        return [(b.key, b.podset, b.binding) for b in made]

    return bind  # type: ignore[return-value]


def run(inputs: Inputs, policies: Sequence[str], progress: Callable[[str, float], None] | None = None) -> list[RunResult]:
    """Each policy, fresh, on the same setup and seed."""
    results = []
    for name in policies:
        policy = make_policy(name)
        callback = (lambda at, n=name: progress(n, at)) if progress else None
        results.append(Simulation(inputs.setup, policy, binder_for(policy), callback).run())
    return results

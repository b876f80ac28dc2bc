"""Rules a schema cannot express: quota structure inside one object, and references across objects.

The same rules serve `tessera validate`, the simulator's loading and the operator's
validating webhook, so an admin sees one message wherever a mistake is caught.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from quotas.api import ClusterQueue, Cohort, LocalQueue, ResourceGroup, Topology, Workload
from quotas.base import (
    PREFERRED_TOPOLOGY_ANNOTATION,
    PRIORITY_CLASS_LABEL,
    QUEUE_NAME_LABEL,
    REQUIRED_TOPOLOGY_ANNOTATION,
    WORKLOAD_TYPE_LABEL,
    WORKLOAD_TYPES,
    dns1123_label_problem,
    qualified_name_problem,
)
from quotas.kube import Job, Namespace
from quotas.problems import Problem
from quotas.quantity import format_quantity

Finding = tuple[str, str]  # field path, message
HOSTNAME_LABEL = "kubernetes.io/hostname"


def _names(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def check_resource_groups(groups: list[ResourceGroup], prefix: str, has_parent: bool, parent_field: str) -> Iterator[Finding]:
    """Kueue's rules for resourceGroups, shared by ClusterQueue and Cohort."""
    resource_owner: dict[str, int] = {}
    flavor_owner: dict[str, int] = {}
    for g, group in enumerate(groups):
        gpath = f"{prefix}[{g}]"
        for r, resource in enumerate(group.covered_resources):
            if resource in group.covered_resources[:r]:
                yield f"{gpath}.coveredResources[{r}]", f'repeats resource "{resource}"'
            elif resource in resource_owner:
                yield f"{gpath}.coveredResources[{r}]", f'resource "{resource}" is already covered by resourceGroups[{resource_owner[resource]}]'
            else:
                resource_owner[resource] = g
        for f, flavor in enumerate(group.flavors):
            fpath = f"{gpath}.flavors[{f}]"
            if flavor.name in flavor_owner:
                other = flavor_owner[flavor.name]
                where = "this group" if other == g else f"resourceGroups[{other}]"
                yield f"{fpath}.name", f'flavor "{flavor.name}" is already listed in {where}'
            else:
                flavor_owner[flavor.name] = g
            listed = [q.name for q in flavor.resources]
            if listed != group.covered_resources:
                yield f"{fpath}.resources", (
                    f"must list the covered resources in order {_names(group.covered_resources)}, got {_names(listed)}"
                )
            for q, quota in enumerate(flavor.resources):
                qpath = f"{fpath}.resources[{q}]"
                if quota.borrowing_limit is not None and not has_parent:
                    yield f"{qpath}.borrowingLimit", f"may only be set with {parent_field}"
                if quota.lending_limit is not None:
                    if not has_parent:
                        yield f"{qpath}.lendingLimit", f"may only be set with {parent_field}"
                    elif quota.lending_limit > quota.nominal_quota:
                        yield f"{qpath}.lendingLimit", (
                            f'must not exceed nominalQuota ({format_quantity(quota.nominal_quota)}), '
                            f'got "{format_quantity(quota.lending_limit)}"'
                        )


def _check_job(job: Job) -> Iterator[Finding]:
    labels = job.metadata.labels
    if QUEUE_NAME_LABEL not in labels:
        return
    meta_problem = dns1123_label_problem(job.metadata.namespace or "default")
    if meta_problem:
        yield "metadata.namespace", meta_problem
    if not job.metadata.name:
        yield "metadata.name", "required field is missing"
    kind = labels.get(WORKLOAD_TYPE_LABEL)
    if kind is not None and kind not in WORKLOAD_TYPES:
        yield f'metadata.labels["{WORKLOAD_TYPE_LABEL}"]', f'must be training or inference, got "{kind}"'
    for annotation in (REQUIRED_TOPOLOGY_ANNOTATION, PREFERRED_TOPOLOGY_ANNOTATION):
        level = job.spec.template.metadata.annotations.get(annotation)
        if level is not None and qualified_name_problem(level):
            yield f'spec.template.metadata.annotations["{annotation}"]', f'must be a node label key, got "{level}"'


def _repeats(names: list[str], path: str, what: str) -> Iterator[Finding]:
    for i, name in enumerate(names):
        if name in names[:i]:
            yield path.format(i=i), f'repeats {what} "{name}" of {path.format(i=names.index(name)).rpartition(".")[0]}'


def check_object(obj: BaseModel) -> list[Finding]:
    """Problems inside one parsed object, as (field path, message)."""
    found: list[Finding] = []
    if isinstance(obj, ClusterQueue):
        found += check_resource_groups(obj.spec.resource_groups, "spec.resourceGroups", bool(obj.spec.cohort), "spec.cohort")
    elif isinstance(obj, Cohort):
        found += check_resource_groups(
            obj.spec.resource_groups, "spec.resourceGroups", bool(obj.spec.parent_name), "spec.parentName"
        )
        if obj.spec.parent_name == obj.name:
            found.append(("spec.parentName", "a Cohort cannot be its own parent"))
    elif isinstance(obj, Topology):
        found += _repeats(obj.level_labels, "spec.levels[{i}].nodeLabel", "nodeLabel")
        labels = obj.level_labels
        if HOSTNAME_LABEL in labels[:-1]:
            found.append((f"spec.levels[{labels.index(HOSTNAME_LABEL)}].nodeLabel", f"{HOSTNAME_LABEL} may only be the last (lowest) level"))
    if isinstance(obj, Workload):
        found += _repeats([p.name for p in obj.spec.pod_sets], "spec.podSets[{i}].name", "name")
    if isinstance(obj, (LocalQueue, Workload)):
        problem = dns1123_label_problem(obj.namespace)
        if problem:
            found.append(("metadata.namespace", f'{problem}, got "{obj.namespace}"'))
    if isinstance(obj, Job):
        found += _check_job(obj)
    if isinstance(obj, Namespace):
        problem = dns1123_label_problem(obj.metadata.name or "")
        if problem:
            found.append(("metadata.name", f'{problem}, got "{obj.metadata.name}"'))
    return found


# --- references across objects -------------------------------------------------------------


def _cohort_cycles(parents: dict[str, str | None]) -> Iterator[tuple[str, list[str]]]:
    """Each cohort that lies on a parent cycle, with the cycle as seen from it (reported once per cycle)."""
    reported: set[str] = set()
    for start in parents:
        path: list[str] = []
        node: str | None = start
        while node is not None and node in parents and node not in path:
            path.append(node)
            node = parents[node]
        if node is not None and node in path:
            cycle = path[path.index(node):]
            if not reported.intersection(cycle):
                reported.update(cycle)
                first = min(cycle)
                i = cycle.index(first)
                ordered = cycle[i:] + cycle[:i]
                yield first, ordered + [first]


def check_references(bundle: object) -> list[Problem]:
    """Unknown flavors, queues, priority classes, topologies and parent cohorts; cohort cycles."""
    from quotas.bundle import Bundle

    assert isinstance(bundle, Bundle)
    out: list[Problem] = []

    def report(kind: str, name: str, namespace: str, path: str, message: str) -> None:
        out.append(Problem(bundle.source_of(kind, name, namespace), f"{kind}/{name}", path, message))

    def missing(kind: str, name: str, namespace: str = "") -> bool:
        return (kind, namespace, name) not in bundle.sources and (kind, namespace, name) not in bundle.rejected

    for owner_kind, owners in (("ClusterQueue", bundle.cluster_queues), ("Cohort", bundle.cohorts)):
        for name, owner in owners.items():
            for g, group in enumerate(owner.spec.resource_groups):
                for f, flavor in enumerate(group.flavors):
                    if missing("ResourceFlavor", flavor.name):
                        report(owner_kind, name, "", f"spec.resourceGroups[{g}].flavors[{f}].name",
                               f'unknown ResourceFlavor "{flavor.name}"')

    for name, cohort in bundle.cohorts.items():
        parent = cohort.spec.parent_name
        if parent and parent != name and missing("Cohort", parent):
            report("Cohort", name, "", "spec.parentName", f'unknown Cohort "{parent}"')
    parents = {name: c.spec.parent_name for name, c in bundle.cohorts.items() if c.spec.parent_name != name}
    for name, cycle in _cohort_cycles(parents):
        report("Cohort", name, "", "spec.parentName", "cohort cycle " + " -> ".join(cycle))

    for name, flavor in bundle.flavors.items():
        topology = flavor.spec.topology_name
        if topology and missing("Topology", topology):
            report("ResourceFlavor", name, "", "spec.topologyName", f'unknown Topology "{topology}"')

    for (namespace, name), queue in bundle.local_queues.items():
        if missing("ClusterQueue", queue.spec.cluster_queue):
            report("LocalQueue", name, namespace, "spec.clusterQueue", f'unknown ClusterQueue "{queue.spec.cluster_queue}"')

    # A user checking their own Jobs may not have the admin's queues at hand: references from
    # Jobs and Workloads are checked only against kinds the set actually holds.
    have_queues = bool(bundle.local_queues) or any(k[0] == "LocalQueue" for k in bundle.rejected)
    have_classes = bool(bundle.priority_classes) or any(k[0] == "WorkloadPriorityClass" for k in bundle.rejected)
    levels = {label for t in bundle.topologies.values() for label in t.level_labels}

    def check_user_refs(kind: str, namespace: str, name: str, queue: str, priority: str | None,
                        queue_path: str, priority_path: str, topo: list[tuple[str, str]]) -> None:
        if have_queues and missing("LocalQueue", queue, namespace):
            report(kind, name, namespace, queue_path, f'unknown LocalQueue "{queue}" in namespace "{namespace}"')
        if priority and have_classes and missing("WorkloadPriorityClass", priority):
            report(kind, name, namespace, priority_path, f'unknown WorkloadPriorityClass "{priority}"')
        for path, level in topo:
            if bundle.topologies and level not in levels:
                report(kind, name, namespace, path, f'"{level}" is not a level of any Topology ({", ".join(sorted(levels))})')

    for (namespace, name), workload in bundle.workloads.items():
        topo = []
        for i, podset in enumerate(workload.spec.pod_sets):
            request = podset.topology_request
            if request is not None:
                field = "required" if request.required else "preferred"
                topo.append((f"spec.podSets[{i}].topologyRequest.{field}", request.required or request.preferred or ""))
        check_user_refs("Workload", namespace, name, workload.spec.queue_name, workload.spec.priority_class_name,
                        "spec.queueName", "spec.priorityClassName", topo)

    for (namespace, name), job in bundle.jobs.items():
        labels = job.metadata.labels
        if QUEUE_NAME_LABEL not in labels:
            continue
        annotations = job.spec.template.metadata.annotations
        topo = [(f'spec.template.metadata.annotations["{a}"]', annotations[a])
                for a in (REQUIRED_TOPOLOGY_ANNOTATION, PREFERRED_TOPOLOGY_ANNOTATION) if a in annotations]
        check_user_refs("Job", namespace, name, labels[QUEUE_NAME_LABEL], labels.get(PRIORITY_CLASS_LABEL),
                        f'metadata.labels["{QUEUE_NAME_LABEL}"]', f'metadata.labels["{PRIORITY_CLASS_LABEL}"]', topo)

    for (namespace, name), job in bundle.jobs.items():
        if QUEUE_NAME_LABEL not in job.metadata.labels:
            out.append(Problem(bundle.source_of("Job", name, namespace), f"Job/{name}", "",
                               f"has no {QUEUE_NAME_LABEL} label: Tessera leaves it alone", "warning"))
    return out


"""Pending reasons of the `kueue` policy: the binding constraint in words an admin can act on.

Kueue's own condition messages (``couldn't assign flavors to pod set main: insufficient
unused quota for nvidia.com/gpu in flavor h100, 8 more needed``) say *that* a request does
not fit; these say *where the limit is*: the ClusterQueue, flavor and resource, what the
workload needs, what is available now, and the quota and limits behind it::

    insufficient quota in ClusterQueue team-a for nvidia.com/gpu in flavor h100: needs 16, 8 available
    (nominal quota 8, borrowing limit 4, cohort research)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from quotas.flavors import Assignment, AssignmentMode
from quotas.tree import QuotaTree
from quotas.units import FlavorResource, format_amount
from quotas.usage import Usage

__all__ = ["explain_quota", "quota_detail"]


def quota_detail(tree: QuotaTree, cq: str, fr: FlavorResource) -> str:
    """``nominal quota 9, borrowing limit 1, cohort team-ab`` for one ClusterQueue and FlavorResource."""
    node = tree.cluster_queue(cq)
    resource = fr[1]
    quota = node.quotas.get(fr)
    parts = [f"nominal quota {format_amount(quota.nominal if quota else 0, resource)}"]
    if quota is not None and quota.borrowing_limit is not None and node.parent is not None:
        parts.append(f"borrowing limit {format_amount(quota.borrowing_limit, resource)}")
    if quota is not None and quota.lending_limit is not None:
        parts.append(f"lending limit {format_amount(quota.lending_limit, resource)}")
    if node.parent is None:
        parts.append("not in a cohort")
    else:
        parts.append(f"cohort {tree.nodes[node.parent].name}")
    return ", ".join(parts)


def _line(tree: QuotaTree, usage: Usage, cq: str, fr: FlavorResource, need: int) -> str:
    flavor, resource = fr
    node = tree.cluster_queue(cq)
    if fr not in node.quotas:
        return f'resource {resource} unavailable in flavor {flavor} of ClusterQueue "{cq}"'
    avail = tree.available(node, fr, usage)
    potential = tree.potential_available(node, fr)
    text = (
        f"insufficient quota in ClusterQueue {cq} for {resource} in flavor {flavor}: "
        f"needs {format_amount(need, resource)}, {format_amount(avail, resource)} available"
    )
    if need > potential:
        text += f", at most {format_amount(potential, resource)} ever"
    return f"{text} ({quota_detail(tree, cq, fr)})"


def explain_quota(
    tree: QuotaTree,
    usage: Usage,
    cq: str,
    assignment: Assignment,
    eligible: Callable[[str, str], str | None] | None = None,
) -> str | None:
    """The first quota shortfall behind a non-Fit assignment, or None when it is not about quota
    (no eligible flavor, a resource the ClusterQueue does not cover)."""
    node = tree.cluster_queue(cq)
    groups = node.resource_groups
    for psa in assignment.podsets:
        if psa.mode == AssignmentMode.FIT:
            continue
        for group in psa.groups:
            if group.mode == AssignmentMode.FIT:
                continue
            if group.flavor is not None:  # Preempt: the flavor chosen, usage already counted
                for resource in sorted(group.requests):
                    fr = (group.flavor, resource)
                    need = assignment.usage.get(fr, group.requests[resource])
                    if need > tree.available(node, fr, usage):
                        return _line(tree, usage, cq, fr, need)
                continue
            first = next(iter(sorted(group.requests)), None)
            spec_group = next((g for g in groups if first in g.covered_resources), None)
            if spec_group is None:
                return None
            for flavor in spec_group.flavors:
                if eligible is not None and eligible(psa.name, flavor.name):
                    continue
                for resource in sorted(group.requests):
                    fr = (flavor.name, resource)
                    need = assignment.usage.get(fr, 0) + group.requests[resource]
                    if need > tree.available(node, fr, usage):
                        return _line(tree, usage, cq, fr, need)
            return None
    return None


def preemption_policy_text(preemption: object) -> str:
    """``withinClusterQueue: Never, reclaimWithinCohort: Never`` for messages."""
    within = getattr(preemption, "within_cluster_queue", "Never")
    reclaim = getattr(preemption, "reclaim_within_cohort", "Never")
    bwc = getattr(preemption, "borrow_within_cohort", None)
    text = f"withinClusterQueue: {within}, reclaimWithinCohort: {reclaim}"
    if bwc is not None and getattr(bwc, "policy", "Never") != "Never":
        text += f", borrowWithinCohort: {bwc.policy}"
    return text


def format_usage(usage: Mapping[FlavorResource, int]) -> str:
    return ", ".join(f"{format_amount(v, r)} {r} in {f}" for (f, r), v in sorted(usage.items()) if v)

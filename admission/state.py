"""The operator's in-memory view of the cluster, kept from watch events and the operator's own writes.

One `ClusterState` holds the raw objects (plain dicts, as the API server sent them) of every
watched resource: managed Jobs (and the other queued kinds: JobSets, ...), Workloads, Nodes,
Pods and the tessera.dev kinds. kopf's
event handlers feed it; so does every successful write of the operator (the object the API
server returned), so that the next scheduling cycle sees its own admissions at once instead
of waiting for the watch, and a late watch event never rolls an object back to an older
resourceVersion (versions are compared as integers when both are, which etcd guarantees;
otherwise the newest arrival wins). Optimistic concurrency on every Workload status write
is the safety net behind it.

Parsing (pydantic) and whatever else a reader derives from one object is memoised per
(resource, key, resourceVersion) and slot (`parsed`), so a cycle over thousands of unchanged
Workloads does not re-validate them; `revisions` counts the changes of each resource, so that
a reader can keep what it derived from a whole resource (the Nodes' cluster, the parsed
ClusterQueues, ...) until the next change; `derived` holds such readers' memory
(`admission.snapshot` keeps its incremental snapshot there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, TypeVar

from quotas.base import QUEUE_NAME_LABEL

logger = logging.getLogger("tessera.state")

Key = tuple[str, str]  # (namespace or "", name)
T = TypeVar("T")

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def resource_version(obj: dict[str, Any] | None) -> str:
    if not obj:
        return ""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def is_older(new_rv: str, old_rv: str) -> bool:
    """Whether `new_rv` is older than `old_rv` (only decidable when both are integers)."""
    if new_rv.isdigit() and old_rv.isdigit():
        return int(new_rv) < int(old_rv)
    return False


# Jobs controlled by these kinds are queued through their parent (admission.integrations), never on their own.
PARENT_API_GROUPS = ("jobset.x-k8s.io",)


def is_managed_job(job: dict[str, Any]) -> bool:
    meta = job.get("metadata") or {}
    if not (meta.get("labels") or {}).get(QUEUE_NAME_LABEL):
        return False
    for owner in meta.get("ownerReferences") or []:
        if owner.get("controller") and str(owner.get("apiVersion", "")).partition("/")[0] in PARENT_API_GROUPS:
            return False
    return True


class ClusterState:
    """Raw objects by resource plural and (namespace, name); `changed` wakes the scheduling loop."""

    def __init__(self, resources: Iterable[str],
                 managed: Mapping[str, Callable[[dict[str, Any]], bool]] | None = None) -> None:
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {plural: {} for plural in resources}
        self.managed: dict[str, Callable[[dict[str, Any]], bool]] = \
            dict(managed) if managed is not None else {"jobs": is_managed_job}
        """Per queued kind, which objects are Tessera's; the others are not kept (one that stops being
        Tessera's is dropped as if deleted)."""
        self.synced: set[str] = set()
        self.revision = 0
        """Bumped on every change; the loop compares it to know whether anything happened."""
        self.revisions: dict[str, int] = {}
        """Per resource plural, bumped on every change of one of its objects (0 before any)."""
        self.changed = asyncio.Event()
        self.derived: dict[str, Any] = {}
        """What readers keep between reads of this state, by reader (see `admission.snapshot`)."""
        self._parsed: dict[tuple[str, Key], dict[str, tuple[str, Any]]] = {}

    # --- feeding -------------------------------------------------------------------------------

    def apply(self, plural: str, event_type: str | None, obj: dict[str, Any]) -> bool:
        """One watch event (`ADDED`, `MODIFIED`, `DELETED`, or None for the initial listing)."""
        store = self.objects.setdefault(plural, {})
        key = key_of(obj)
        if not key[1]:
            return False
        accept = self.managed.get(plural)
        if accept is not None and not accept(obj):
            event_type = "DELETED" if key in store else None
            if event_type is None:
                return False
        if event_type == "DELETED":
            if store.pop(key, None) is None:
                return False
            self._parsed.pop((plural, key), None)
        else:
            current = store.get(key)
            if current is not None and is_older(resource_version(obj), resource_version(current)):
                return False  # a late event for a version we already hold
            if current is not None and resource_version(current) == resource_version(obj) and current == obj:
                return False
            store[key] = obj
        self._touch(plural)
        return True

    def store(self, plural: str, obj: dict[str, Any] | None) -> None:
        """An object the API server returned for one of our writes."""
        if obj:
            self.apply(plural, "MODIFIED", obj)

    def forget(self, plural: str, key: Key) -> None:
        if self.objects.get(plural, {}).pop(key, None) is not None:
            self._parsed.pop((plural, key), None)
            self._touch(plural)

    def replace_all(self, plural: str, items: Iterable[dict[str, Any]]) -> None:
        """The result of a full LIST: merged with what watches delivered meanwhile (newer wins)."""
        for item in items:  # the listing never deletes: a DELETED event will
            self.apply(plural, None, item)
        self.synced.add(plural)
        self._touch(plural)

    def _touch(self, plural: str) -> None:
        self.revision += 1
        self.revisions[plural] = self.revisions.get(plural, 0) + 1
        self.changed.set()

    # --- reading -------------------------------------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(plural, {}).get((namespace, name))

    def items(self, plural: str) -> Iterator[tuple[Key, dict[str, Any]]]:
        return iter(list(self.objects.get(plural, {}).items()))

    def values(self, plural: str) -> list[dict[str, Any]]:
        return list(self.objects.get(plural, {}).values())

    def parsed(self, plural: str, key: Key, parse: Callable[[dict[str, Any]], T], slot: str = "") -> T:
        """`parse(obj)` memoised on the object's resourceVersion; exceptions are not memoised.

        One value per object and `slot`: readers deriving different things from one object use a slot
        each. The value must depend on nothing but the object: it is recomputed when the object's
        resourceVersion changes (on every call for an object without one) and dropped with the object."""
        obj = self.objects[plural][key]
        meta = obj.get("metadata")
        rv = str(meta.get("resourceVersion") or "") if meta else ""
        slots = self._parsed.get((plural, key))
        if slots is None:
            slots = self._parsed[(plural, key)] = {}
        else:
            cached = slots.get(slot)
            if cached is not None and cached[0] == rv and rv:
                return cached[1]  # type: ignore[no-any-return]
        value = parse(obj)
        slots[slot] = (rv, value)
        return value

    def pods_of_job(self) -> dict[Key, list[dict[str, Any]]]:
        """Live pods grouped by the (namespace, Job name) that owns them."""
        out: dict[Key, list[dict[str, Any]]] = {}
        for (namespace, _), pod in self.items("pods"):
            job = job_of_pod(pod)
            if job:
                out.setdefault((namespace, job), []).append(pod)
        return out


def job_of_pod(pod: dict[str, Any]) -> str | None:
    """The name of the Job that owns a pod, from its owner reference or the Job controller's labels."""
    meta = pod.get("metadata") or {}
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "Job" and str(owner.get("apiVersion", "")).startswith("batch/"):
            return str(owner.get("name"))
    labels = meta.get("labels") or {}
    for label in JOB_NAME_LABELS:
        if labels.get(label):
            return str(labels[label])
    return None


def pod_is_live(pod: dict[str, Any]) -> bool:
    """Bound to a node and not finished: its requests occupy that node."""
    return bool((pod.get("spec") or {}).get("nodeName")) and (pod.get("status") or {}).get("phase") not in TERMINAL_POD_PHASES

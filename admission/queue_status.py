"""ClusterQueue and LocalQueue `status`, as Kueue fills them, computed from a scheduling snapshot.

After each controller pass (on the leader), `QueueStatusWriter.publish_soon` takes the pass's
last snapshot and, in the background (the next pass does not wait for it), computes every
queue's status with the pure functions below and patches the `status` subresource of the
queues whose status changed since it was last written:

* ClusterQueue: `pendingWorkloads` (every pending Workload whose LocalQueue points at it,
  including those in requeue backoff), `reservingWorkloads` (Workloads holding quota, an
  evicted one until its pods are gone), `admittedWorkloads` (Workloads whose `Admitted`
  condition is true; Tessera has no admission checks and writes `QuotaReserved` and
  `Admitted` together, so the two counts and the two usage lists agree, as in Kueue without
  admission checks), `flavorsReservation` and `flavorsUsage` (per flavor and resource of the
  queue's resource groups, in spec order: `total` and `borrowed`, the part above the nominal
  quota, as quantity strings), and the `Active` condition: `True`/`Ready`, or `False` with
  `FlavorNotFound` (a referenced ResourceFlavor does not exist) or `Stopped` (`stopPolicy`).
* LocalQueue: the same counts for the Workloads submitted to it, `flavorsReservation` and
  `flavorUsage` (per flavor and resource of its ClusterQueue: `total`), and `Active`:
  `True`/`Ready`, or `False` with `ClusterQueueDoesNotExist`, `ClusterQueueIsInactive` or
  `Stopped`.

Conditions keep their `lastTransitionTime` while their status stays the same. The writer
remembers the last status it wrote per queue and patches only on a difference (or when the
cached object shows that someone else changed the status), so a steady cluster costs no
API calls; under a stream of admissions, a queue whose counts or usage changed is written at
most once per `min_interval` (1 s; the newest numbers are written when it has passed), and a
condition change at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from admission.kube import CLUSTER_QUEUES, LOCAL_QUEUES, ApiError, KubeApi, NotFound, Resource
from admission.state import ClusterState, Key
from quotas.api import ClusterQueue
from quotas.units import FlavorResource, format_amount, milli
from scheduler.snapshot import Snapshot

logger = logging.getLogger("tessera.queue_status")

ACTIVE = "Active"
CQ_READY_MESSAGE = "Can admit new workloads"
LQ_READY_MESSAGE = "Can submit new workloads to localQueue"
LQ_INACTIVE_MESSAGE = "Can't submit new workloads to clusterQueue"

Status = dict[str, Any]


# --- pure: statuses from a snapshot -----------------------------------------------------------


def _spec_pairs(queue: ClusterQueue | None) -> list[FlavorResource]:
    """(flavor, resource) pairs of a ClusterQueue's resource groups, in spec order."""
    pairs: list[FlavorResource] = []
    if queue is None:
        return pairs
    for group in queue.spec.resource_groups:
        for flavor in group.flavors:
            for quota in flavor.resources:
                if (flavor.name, quota.name) not in pairs:
                    pairs.append((flavor.name, quota.name))
    return pairs


def _add(into: dict[FlavorResource, int], amounts: Mapping[FlavorResource, int]) -> None:
    for key, amount in amounts.items():
        into[key] = into.get(key, 0) + amount


def _flavor_list(pairs: list[FlavorResource], used: Mapping[FlavorResource, int],
                 nominal: Mapping[FlavorResource, int] | None) -> list[dict[str, Any]]:
    """Kueue's `[]FlavorUsage`: spec pairs first (zeros included), then any other pair in use, sorted.

    With `nominal`, each resource also gets `borrowed` (usage above the nominal quota)."""
    ordered = list(pairs) + sorted(k for k in used if k not in pairs and used[k])
    flavors: dict[str, list[dict[str, Any]]] = {}
    for flavor, resource in ordered:
        amount = used.get((flavor, resource), 0)
        entry: dict[str, Any] = {"name": resource, "total": format_amount(amount, resource)}
        if nominal is not None:
            entry["borrowed"] = format_amount(max(0, amount - nominal.get((flavor, resource), 0)), resource)
        flavors.setdefault(flavor, []).append(entry)
    return [{"name": flavor, "resources": resources} for flavor, resources in flavors.items()]


def _condition(status: bool, reason: str, message: str, generation: int | None) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": ACTIVE, "status": "True" if status else "False", "reason": reason,
                            "message": message}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def cluster_queue_active(queue: ClusterQueue, flavors: Iterable[str]) -> tuple[bool, str, str]:
    """(active, reason, message) of a ClusterQueue's `Active` condition, with Kueue's reasons and wording."""
    known = set(flavors)
    missing = sorted({f.name for g in queue.spec.resource_groups for f in g.flavors if f.name not in known})
    reasons, messages = [], []
    if queue.spec.stop_policy != "None":
        reasons.append("Stopped")
        messages.append("is stopped")
    if missing:
        reasons.append("FlavorNotFound")
        messages.append(f"references missing ResourceFlavor(s): [{' '.join(missing)}]")
    if reasons:
        return False, reasons[0], f"Can't admit new workloads: {', '.join(messages)}."
    return True, "Ready", CQ_READY_MESSAGE


def cluster_queue_statuses(snapshot: Snapshot) -> dict[str, Status]:
    """The status of every ClusterQueue of the snapshot (conditions without lastTransitionTime)."""
    pending: dict[str, int] = {}
    for entry in snapshot.pending:
        cq = snapshot.cluster_queue_of(entry.workload)
        if cq is not None:
            pending[cq] = pending.get(cq, 0) + 1
    reserving: dict[str, int] = {}
    reserved: dict[str, dict[FlavorResource, int]] = {}
    for admitted in snapshot.admitted:
        reserving[admitted.cluster_queue] = reserving.get(admitted.cluster_queue, 0) + 1
        _add(reserved.setdefault(admitted.cluster_queue, {}), admitted.usage)
    out: dict[str, Status] = {}
    for name, queue in sorted(snapshot.cluster_queues.items()):
        pairs = _spec_pairs(queue)
        nominal = {(f.name, q.name): milli(q.nominal_quota) for g in queue.spec.resource_groups
                   for f in g.flavors for q in f.resources}
        used = reserved.get(name, {})
        active, reason, message = cluster_queue_active(queue, snapshot.flavors)
        flavors = _flavor_list(pairs, used, nominal)
        out[name] = {
            "pendingWorkloads": pending.get(name, 0),
            "reservingWorkloads": reserving.get(name, 0),
            "admittedWorkloads": reserving.get(name, 0),
            "flavorsReservation": flavors,
            "flavorsUsage": flavors,
            "conditions": [_condition(active, reason, message, queue.metadata.generation)],
        }
    return out


def local_queue_statuses(snapshot: Snapshot, cluster_queues: Mapping[str, Status] | None = None) -> dict[Key, Status]:
    """The status of every LocalQueue of the snapshot, keyed by (namespace, name)."""
    cq_status = cluster_queues if cluster_queues is not None else cluster_queue_statuses(snapshot)
    pending: dict[Key, int] = {}
    for entry in snapshot.pending:
        key = (entry.workload.namespace, entry.workload.local_queue)
        pending[key] = pending.get(key, 0) + 1
    reserving: dict[Key, int] = {}
    reserved: dict[Key, dict[FlavorResource, int]] = {}
    for admitted in snapshot.admitted:
        key = (admitted.workload.namespace, admitted.workload.local_queue)
        reserving[key] = reserving.get(key, 0) + 1
        _add(reserved.setdefault(key, {}), admitted.usage)
    out: dict[Key, Status] = {}
    for key, queue in sorted(snapshot.local_queues.items()):
        cq_name = queue.spec.cluster_queue
        cq = snapshot.cluster_queues.get(cq_name)
        if queue.spec.stop_policy != "None":
            active, reason, message = False, "Stopped", "LocalQueue is stopped"
        elif cq is None:
            active, reason, message = False, "ClusterQueueDoesNotExist", LQ_INACTIVE_MESSAGE
        elif (cq_status.get(cq_name) or {}).get("conditions", [{}])[0].get("status") != "True":
            active, reason, message = False, "ClusterQueueIsInactive", LQ_INACTIVE_MESSAGE
        else:
            active, reason, message = True, "Ready", LQ_READY_MESSAGE
        flavors = _flavor_list(_spec_pairs(cq), reserved.get(key, {}), None)
        out[key] = {
            "pendingWorkloads": pending.get(key, 0),
            "reservingWorkloads": reserving.get(key, 0),
            "admittedWorkloads": reserving.get(key, 0),
            "flavorsReservation": flavors,
            "flavorUsage": flavors,
            "conditions": [_condition(active, reason, message, queue.metadata.generation)],
        }
    return out


def without_times(status: Mapping[str, Any] | None) -> Status:
    """A status without the conditions' `lastTransitionTime` (what change detection compares)."""
    if not status:
        return {}
    out = dict(status)
    if isinstance(out.get("conditions"), list):
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} if isinstance(c, dict) else c
                             for c in out["conditions"]]
    return out


def with_transition_times(status: Status, previous: Mapping[str, Any] | None, stamp: str) -> Status:
    """`status` with each condition's `lastTransitionTime`: kept from `previous` while the condition's
    status is unchanged, else `stamp`."""
    before = {c.get("type"): c for c in ((previous or {}).get("conditions") or []) if isinstance(c, dict)}
    conditions = []
    for cond in status.get("conditions") or []:
        old = before.get(cond["type"])
        kept = old.get("lastTransitionTime") if old and old.get("status") == cond["status"] else None
        conditions.append({**cond, "lastTransitionTime": kept or stamp})
    return {**status, "conditions": conditions}


# --- writing ------------------------------------------------------------------------------------


class QueueStatusWriter:
    """Patches queue statuses that changed; remembers what it wrote (one instance per controller)."""

    def __init__(self, api: KubeApi, state: ClusterState, *, concurrency: int = 8, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, is_leader: Callable[[], bool] = lambda: True) -> None:
        self.api = api
        self.state = state
        self.is_leader = is_leader
        """Background writes (`publish_soon`, held-back counts) stop when this replica no longer leads."""
        self.min_interval = min_interval
        """A queue whose counts or usage changed is written at most this often (seconds); a condition change,
        or a status someone else changed, is written at once."""
        self.clock = clock
        self.written: dict[tuple[str, Key], Status] = {}
        """(plural, key) -> the last status written (without transition times)."""
        self.written_at: dict[tuple[str, Key], float] = {}
        self.patches = 0
        self._latest: tuple[Snapshot, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._handed_at: float | None = None
        self._failing: set[tuple[str, Key]] = set()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._next: tuple[Snapshot, str] | None = None
        self._task: asyncio.Task[None] | None = None

    def publish_soon(self, snapshot: Snapshot, stamp: str) -> None:
        """`publish` in the background, so that a controller pass does not wait for the status writes; a
        snapshot handed over while an earlier one is being published replaces any still waiting (the
        newest state is what gets written)."""
        self._next = (snapshot, stamp)
        self._handed_at = self.clock()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="tessera-queue-status")

    def due(self) -> bool:
        """Whether no snapshot was handed over for `min_interval` (or ever): the statuses may lag behind."""
        return self._handed_at is None or self.clock() - self._handed_at >= self.min_interval

    async def _drain(self) -> None:
        while self._next is not None:
            snapshot, stamp = self._next
            self._next = None
            if not self.is_leader():
                continue
            try:
                await self.publish(snapshot, stamp)
            except Exception as exc:  # statuses are informational: never a reason to stop
                logger.warning("writing queue statuses failed: %s", exc)

    async def idle(self) -> None:
        """Wait until the background publishing (`publish_soon`) is done."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def publish(self, snapshot: Snapshot, stamp: str) -> int:
        """Patch every queue whose status differs from the last one written; returns how many were patched.

        Count and usage changes of a queue written less than `min_interval` ago are held back, and
        written from the newest snapshot once the interval has passed (a timer, so without waiting for
        the next controller pass)."""
        self._latest = (snapshot, stamp)
        cqs = cluster_queue_statuses(snapshot)
        lqs = local_queue_statuses(snapshot, cqs)
        wanted: list[tuple[Resource, Key, Status]] = [(CLUSTER_QUEUES, ("", name), s) for name, s in cqs.items()]
        wanted += [(LOCAL_QUEUES, key, s) for key, s in lqs.items()]
        live = {(r.plural, k) for r, k, _ in wanted}
        for gone in [k for k in self.written if k not in live]:
            del self.written[gone]
            self.written_at.pop(gone, None)
        now = self.clock()
        calls, wait = [], None
        for resource, key, status in wanted:
            if not self._changed(resource.plural, key, status):
                continue
            held = self._held_for(resource.plural, key, status, now)
            if held > 0:
                wait = held if wait is None else min(wait, held)
            else:
                calls.append(self._write(resource, key, status, stamp))
        if wait is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._wake)
        results = await asyncio.gather(*calls)
        return sum(results)

    def _held_for(self, plural: str, key: Key, status: Status, now: float) -> float:
        """Seconds a changed status waits before it is written (0: write it now)."""
        last = self.written.get((plural, key))
        if last is None or last.get("conditions") != status.get("conditions"):
            return 0.0
        cached = self.state.get(plural, *key)
        if cached is None or without_times(cached.get("status")) != last:
            return 0.0  # someone else changed it: put it right at once
        return max(0.0, self.written_at.get((plural, key), 0.0) + self.min_interval - now)

    def _wake(self) -> None:
        self._timer = None
        if self._latest is not None and self.is_leader():
            self.publish_soon(*self._latest)

    def _changed(self, plural: str, key: Key, status: Status) -> bool:
        cached = self.state.get(plural, *key)
        if cached is None:
            return False  # deleted meanwhile (or not listed yet): nothing to patch
        current = without_times(cached.get("status"))
        last = self.written.get((plural, key))
        if last is None:
            return current != status  # first pass of this process: the API may already show it
        return last != status or current != last

    async def _write(self, resource: Resource, key: Key, status: Status, stamp: str) -> bool:
        namespace, name = key
        cached = self.state.get(resource.plural, namespace, name)
        body = with_transition_times(status, (cached or {}).get("status"), stamp)
        async with self._semaphore:
            try:
                updated = await self.api.patch(resource, namespace or None, name, {"status": body},
                                               subresource="status")
            except NotFound:
                self.state.forget(resource.plural, key)
                self.written.pop((resource.plural, key), None)
                return False
            except ApiError as exc:
                if (resource.plural, key) not in self._failing:
                    self._failing.add((resource.plural, key))
                    logger.warning("writing the status of %s %s failed: %s", resource.kind,
                                   "/".join(k for k in key if k), exc)
                return False
        self._failing.discard((resource.plural, key))
        self.written[(resource.plural, key)] = status
        self.written_at[(resource.plural, key)] = self.clock()
        self.patches += 1
        self.state.store(resource.plural, updated)
        return True

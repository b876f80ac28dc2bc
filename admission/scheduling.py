"""The controller: one single-flight loop that keeps Workloads, Jobs and quota in step with the core's decisions.

`Controller.run` wakes on every cache change and at least every `period` seconds; when this
replica is the leader and the caches are synced it runs one `reconcile` pass:

1. **Workloads.** Every queued object (a Job, a JobSet, ...: `admission.integrations`; "Job"
   below stands for any of them) gets its Workload (owner reference to it); the spec follows
   it while it holds no quota; a Workload whose Job is gone is deleted.
2. **Jobs.** A finished Job finishes its Workload (`Finished`, quota released, ledger
   record). An evicted Workload's Job is suspended (template restored); once its pods are
   gone the quota is released and the Workload requeued. An admitted Workload's Job runs with
   the admission's node selector (this repairs a crash between the two writes of an
   admission), and its pods held by the placement gate are ungated onto the admission's
   per-pod plan (`admission.placement`); with `waitForPodsReady`, one whose pods are not all
   ready in time is evicted and requeued with exponential backoff. Every other Job is kept
   suspended.
3. **Cycles.** The snapshot goes to the policy; its decisions are applied as the simulator
   applies them (`simulator/engine.py`), against the API server: preempt (Evicted +
   Preempted, then suspend), admit (the admission recorded in the Workload status under a
   resourceVersion precondition, with the policy's per-pod plan when it places pods, *then* the
   Job patched and un-suspended, its template gated when there is a plan), and the pending
   reasons written into the Workloads' `QuotaReserved` condition. Cycles repeat while they
   change something (bounded). Before them, the pending Workloads of a namespace whose labels
   changed are requeued (`requeue_relabelled`): a ClusterQueue's `namespaceSelector` may select
   them now, or no longer.

Crash safety: the Workload's status is the record of an admission. It is written first and
only if the Workload has not changed since the cycle read it (409 otherwise: the cache is
refreshed and the cycle redone), so a quota is never reserved twice; the Job patch after it
is idempotent and redone by step 2 after a crash; quota is counted from Workloads, never
from memory; the ledger writes are idempotent (keyed by the QuotaReserved transition time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from admission import integrations as ig
from admission import jobs as jb
from admission import placement as pl
from admission import workloads as wl
from admission.events import EventRecorder
from admission.fair_share import FairShareTracker, with_nominations
from admission.integrations import Change, Integration
from admission.kube import PODS, WORKLOADS, ApiError, Conflict, KubeApi, NotFound
from admission.metrics import Metrics
from admission.queue_status import QueueStatusWriter
from admission.snapshot import Cycle, Entry, build_cycle, namespace_labels
from admission.state import TERMINAL_POD_PHASES, ClusterState
from quotas.api import Configuration
from quotas.jobs import JobConversionError
from scheduler.decisions import Decisions, Policy

logger = logging.getLogger("tessera.controller")


@dataclass
class ControllerOptions:
    period: float = 10.0
    """Run a pass at least this often (backoffs expire, waitForPodsReady timeouts fire)."""
    max_cycles: int = 50
    """Scheduling cycles per pass at most (each one that changes something triggers the next)."""
    concurrency: int = 16
    """Parallel API writes for Workload creation and pending-reason updates."""
    debounce: float = 0.02
    """After a wake-up, wait this long so that a burst of watch events makes one pass."""


class Controller:
    def __init__(self, api: KubeApi, state: ClusterState, policy_factory: Callable[[], Policy], *,
                 config: Configuration | None = None, metrics: Metrics | None = None, ledger: Any = None,
                 events: EventRecorder | None = None, is_leader: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.time, options: ControllerOptions | None = None,
                 integrations: Iterable[Integration] | None = None) -> None:
        self.api = api
        self.integrations: list[Integration] = list(integrations) if integrations is not None else [ig.BATCH_JOB]
        """The enabled integrations (`Configuration.integrations.frameworks`)."""
        self.absent: set[str] = set()
        """Plurals of enabled integrations the API server does not serve (CRD not installed): not waited for."""
        self.state = state
        self.policy_factory = policy_factory
        self.policy = policy_factory()
        self.config = config or Configuration()
        self.metrics = metrics or Metrics()
        self.ledger = ledger
        self.events = events
        self.is_leader = is_leader
        self.clock = clock
        self.options = options or ControllerOptions()
        self.heartbeat = 0.0
        """Wall time of the loop's last iteration (liveness)."""
        self.passes = 0
        self._semaphore = asyncio.Semaphore(self.options.concurrency)
        self._ledgered: set[tuple[str, float]] = set()
        self._ledger_writer: ThreadPoolExecutor | None = None
        """The thread that writes the ledger, in order (`_ledger`); started by the first write."""
        self._bad_jobs: dict[tuple[str, str, str], str] = {}
        self._was_leader = False
        self._settled: dict[tuple[str, str], tuple[Any, ...]] = {}
        """Workloads `sync_jobs` found nothing to do for, with what it judged (see there)."""
        self.queue_status = QueueStatusWriter(api, state, is_leader=is_leader)
        self.fair_share = FairShareTracker(self.config, ledger)
        self.plans = pl.PlanMemo()
        """The reservations of planned pods kept from one cycle to the next (`admission.placement.reserve_plans`)."""
        self.nominations: dict[str, frozenset[str]] = {}
        """The last cycle's `Decisions.nominations` (admission/fair_share.py)."""
        self._namespaces: tuple[int, Mapping[str, Mapping[str, str]]] | None = None
        """(revision, labels) of the Namespaces as the last pass saw them (`requeue_relabelled`)."""
        self.required = ("workloads", "nodes", "pods", "namespaces", "resourceflavors", "clusterqueues",
                         "localqueues", "cohorts", "workloadpriorityclasses", "topologies")
        """Listed before any decision, with every enabled integration's resource that the API server serves."""

    # --- loop ----------------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return all(plural in self.state.synced for plural in self.required) and all(
            i.plural in self.state.synced or i.plural in self.absent for i in self.integrations)

    def active_integrations(self) -> list[Integration]:
        """The enabled integrations whose objects are listed (so their Workloads can be judged)."""
        return [i for i in self.integrations if i.plural in self.state.synced]

    def pods_by_owner(self, every: bool = False) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
        """Pods not yet Succeeded or Failed, by (integration plural, namespace, owning object's name), for the
        integrations that read pods (`Integration.uses_pods`), or for all of them (`every`: per-pod plans)."""
        active = [i for i in self.active_integrations() if i.uses_pods or (every and i.honours_plans)]
        out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        if not active:
            return out
        for (namespace, _), pod in self.state.items("pods"):
            if (pod.get("status") or {}).get("phase") in TERMINAL_POD_PHASES:
                continue
            for integration in active:
                found = integration.pod_owner(pod)
                if found is not None:
                    out.setdefault((integration.plural, namespace, found[0]), []).append(pod)
        return out

    def _pods_of(self, integration: Integration, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not integration.uses_pods:
            return []
        meta = obj.get("metadata") or {}
        key = (integration.plural, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        return self.pods_by_owner().get(key, [])

    async def run(self, stop: asyncio.Event) -> None:
        """Single-flight: one pass at a time, woken by cache changes or the period."""
        while not stop.is_set():
            self.heartbeat = self.clock()
            waiter = asyncio.ensure_future(self.state.changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, timeout=self.options.period,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
            if stop.is_set():
                break
            if self.options.debounce:
                await asyncio.sleep(self.options.debounce)
            self.state.changed.clear()
            self.heartbeat = self.clock()
            leader = self.is_leader()
            if leader and not self._was_leader:
                self.policy = self.policy_factory()  # a new term starts from the API's state only
            self._was_leader = leader
            if not leader or not self.synced:
                continue
            try:
                await self.reconcile()
            except Exception:  # one bad pass must not stop the controller
                logger.exception("reconcile pass failed; retrying")
                await asyncio.sleep(1.0)
                self.state.changed.set()

    async def reconcile(self) -> None:
        """One pass: Workloads for Jobs, Job states, then scheduling cycles."""
        self.passes += 1
        now = self.clock()
        await self.sync_workloads(now)
        await self.sync_jobs(now)
        self.requeue_relabelled()
        await self.schedule(now)

    async def _bounded(self, calls: Iterable[Awaitable[Any]]) -> None:
        async def one(call: Awaitable[Any]) -> None:
            async with self._semaphore:
                await call
        await asyncio.gather(*(one(c) for c in calls))

    # --- writes (each updates the cache with what the API server returned) --------------------

    async def write_status(self, workload: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any] | None:
        """Patch a Workload's status under its resourceVersion; None when it moved (cache refreshed)."""
        meta = workload.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        try:
            updated = await self.api.patch(WORKLOADS, namespace, name, wl.status_patch(workload, status),
                                           subresource="status")
        except Conflict:
            await self._refresh(namespace, name)
            return None
        except NotFound:
            self.state.forget("workloads", (namespace, name))
            return None
        self.state.store("workloads", updated)
        return updated

    async def _refresh(self, namespace: str, name: str) -> None:
        fresh = await self.api.get(WORKLOADS, namespace, name)
        if fresh is None:
            self.state.forget("workloads", (namespace, name))
        else:
            self.state.store("workloads", fresh)

    async def patch_job(self, job: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self.apply_change(ig.BATCH_JOB, job, Change(patch=dict(patch)))

    async def apply_change(self, integration: Integration, obj: Mapping[str, Any],
                           change: Change) -> dict[str, Any] | None:
        """Write a `Change` of a queued object: its merge patch, then its pods' patches and deletions.

        Returns the object as written (as it was when only pods changed), or None when it is gone or
        moved under a resourceVersion precondition (the cache is refreshed; the next pass recomputes).
        """
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        updated: dict[str, Any] | None = dict(obj)
        if change.patch is not None:
            try:
                updated = await self.api.patch(integration.resource, namespace, name, change.patch)
            except NotFound:
                self.state.forget(integration.plural, (namespace, name))
                return None
            except Conflict:
                fresh = await self.api.get(integration.resource, namespace, name)
                if fresh is None:
                    self.state.forget(integration.plural, (namespace, name))
                else:
                    self.state.store(integration.plural, fresh)
                return None
            self.state.store(integration.plural, updated)
        for pod_name, pod_patch in change.pod_patches:
            try:
                self.state.store("pods", await self.api.patch(PODS, namespace, pod_name, pod_patch))
            except NotFound:
                self.state.forget("pods", (namespace, pod_name))
            except ApiError as exc:
                logger.warning("patching pod %s/%s of %s %s: %s", namespace, pod_name, integration.resource.kind,
                               name, exc)
        for pod_name in change.pod_deletions:
            try:
                await self.api.delete(PODS, namespace, pod_name)
            except ApiError as exc:
                logger.warning("deleting pod %s/%s of %s %s: %s", namespace, pod_name, integration.resource.kind,
                               name, exc)
        return updated

    def _event(self, obj: Mapping[str, Any] | None, reason: str, message: str, kind: str = "Normal") -> None:
        if self.events is not None:
            self.events.emit(obj, reason, message, kind)

    def _ledger(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Queue one ledger write. The writes run in order on one thread of their own, off the passes: a SQLite
        commit can wait for the database lock (tens of ms under load), which a pass admitting Jobs must not
        wait for. Nothing reads them back during a term (admission fair sharing reads the ledger once, before
        the first cycle), they are idempotent, and `flush_ledger` waits for them before the ledger is closed."""
        if self.ledger is None:
            return
        if self._ledger_writer is None:
            self._ledger_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-ledger")
        self._ledger_writer.submit(self._write_ledger, method, args, kwargs)

    def _write_ledger(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            getattr(self.ledger, method)(*args, **kwargs)
        except Exception as exc:  # the ledger is accounting, never a reason to stop admitting
            logger.warning("ledger %s failed: %s", method, exc)

    async def flush_ledger(self) -> None:
        """Wait until every queued ledger write is done (the next write starts a new writer)."""
        writer, self._ledger_writer = self._ledger_writer, None
        if writer is not None:
            await asyncio.to_thread(writer.shutdown, wait=True)

    def _ledger_admission(self, entry_key: str, workload: Mapping[str, Any], info: Any = None) -> None:
        """Record an admission in the ledger once per process (the ledger itself ignores repeats)."""
        if self.ledger is None:
            return
        admission = (workload.get("status") or {}).get("admission") or {}
        at = wl.reserved_at(workload)
        if (entry_key, at) in self._ledgered:
            return
        info = info or _info_of(workload)
        if info is None:
            return
        self._ledgered.add((entry_key, at))
        self._ledger("record_admission", entry_key, at=at, cluster_queue=str(admission.get("clusterQueue", "")),
                     local_queue=info.local_queue, requests=wl.requests_of(admission),
                     flavor=wl.main_flavor(admission), workload_type=info.workload_type)

    # --- 1. Workloads for Jobs -----------------------------------------------------------------

    async def sync_workloads(self, now: float) -> None:
        objects: dict[tuple[str, str, str], tuple[Integration, dict[str, Any]]] = {
            (i.plural, namespace, name): (i, obj)
            for i in self.active_integrations() for (namespace, name), obj in self.state.items(i.plural)}
        owned: dict[tuple[str, str, str], dict[str, Any]] = {}
        orphans: list[dict[str, Any]] = []
        for (namespace, _), workload in self.state.items("workloads"):
            found = ig.owner_of(workload)
            if found is not None and found[0].plural not in self.state.synced:
                continue  # its kind is not watched here (integration disabled, CRD absent): not ours to judge
            key = (found[0].plural, namespace, found[1]) if found else None
            owner = objects.get(key) if key else None
            if owner is None or (found and found[2] and jb.uid(owner[1]) and found[2] != jb.uid(owner[1])):
                orphans.append(workload)
            elif key is not None:
                owned[key] = workload
        calls = []
        pods = self.pods_by_owner()
        for key, (integration, job) in objects.items():
            workload = owned.get(key)
            if workload is None and integration.finished(job) is not None:
                continue  # finished before it was ever queued
            try:
                desired = self.state.parsed(integration.plural, key[1:], functools.partial(_desired_workload,
                                                                                           integration=integration))
            except KeyError:
                continue
            if isinstance(desired, JobConversionError):
                self._report_bad_job(job, desired)
                continue
            if workload is None:
                if self.state.get("workloads", key[1], desired["metadata"]["name"]) is None:
                    calls.append(self._create_workload(key[1], desired, job))
            elif (not wl.holds_quota(workload) and not wl.is_finished(workload)
                  and not integration.is_started(job, pods.get(key, [])) and wl.spec_differs(workload, desired)):
                calls.append(self._update_workload_spec(workload, desired))
        for workload in orphans:
            calls.append(self._delete_orphan(workload, now))
        await self._bounded(calls)

    def _report_bad_job(self, job: Mapping[str, Any], error: JobConversionError) -> None:
        kind = str(job.get("kind") or "Job")
        key = (kind, str(job["metadata"].get("namespace", "")), str(job["metadata"].get("name", "")))
        text = f"{error.field}: {error.message}"
        if self._bad_jobs.get(key) != text:
            self._bad_jobs[key] = text
            logger.warning("%s %s/%s cannot be queued: %s", kind, key[1], key[2], text)
            self._event(job, "InvalidJob", f"cannot be queued: {text}", "Warning")

    async def _create_workload(self, namespace: str, desired: dict[str, Any], job: Mapping[str, Any]) -> None:
        try:
            created = await self.api.create(WORKLOADS, namespace, desired)
        except Conflict:
            await self._refresh(namespace, desired["metadata"]["name"])
            return
        self.state.store("workloads", created)
        self._event(job, "CreatedWorkload", f"Created Workload {namespace}/{desired['metadata']['name']}")

    async def _update_workload_spec(self, workload: Mapping[str, Any], desired: Mapping[str, Any]) -> None:
        meta = workload["metadata"]
        try:
            updated = await self.api.patch(WORKLOADS, meta["namespace"], meta["name"], {
                "metadata": {"resourceVersion": meta.get("resourceVersion")}, "spec": desired["spec"]})
        except Conflict:
            await self._refresh(meta["namespace"], meta["name"])
            return
        self.state.store("workloads", updated)

    async def _delete_orphan(self, workload: Mapping[str, Any], now: float) -> None:
        meta = workload["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if wl.holds_quota(workload) and not wl.is_finished(workload):
            self._ledger("record_end", key, at=max(now, wl.reserved_at(workload)), reason="Finished")
        try:
            await self.api.delete(WORKLOADS, meta["namespace"], meta["name"])
        except ApiError as exc:
            logger.warning("deleting orphaned Workload %s: %s", key, exc)
            return
        self.state.forget("workloads", (meta["namespace"], meta["name"]))

    # --- 2. Job states --------------------------------------------------------------------------

    async def sync_jobs(self, now: float) -> None:
        stamp = wl.now_rfc3339(now)
        pods_ready = self.config.wait_for_pods_ready
        active = {i.plural for i in self.active_integrations()}
        pods_by_owner = self.pods_by_owner(every=True)  # (integrations ignore pods they do not use)
        # A Workload found with nothing to do is skipped by the next passes while it, its Job, the Job's pods,
        # the flavors and topologies stay the same objects (the cache replaces an object when it changes).
        settled: dict[tuple[str, str], tuple[Any, ...]] = {}
        context = (self.state.revisions.get("resourceflavors", 0), self.state.revisions.get("topologies", 0), active)
        for (namespace, name), workload in self.state.items("workloads"):
            known = self._settled.get((namespace, name))
            if known is not None and known[0] is workload and known[1] == context:
                job = self.state.get(known[2].plural, namespace, known[3])
                pods = pods_by_owner.get((known[2].plural, namespace, known[3]), [])
                if job is known[4] and len(pods) == len(known[5]) and all(a is b for a, b in zip(pods, known[5])):
                    settled[(namespace, name)] = known
                    continue
            found = ig.owner_of(workload)
            if found is None or found[0].plural not in active:
                continue
            integration, job_name = found[0], found[1]
            job = self.state.get(integration.plural, namespace, job_name)
            if job is None or wl.is_finished(workload):
                continue
            key = f"{namespace}/{name}"
            pods = pods_by_owner.get((integration.plural, namespace, job_name), [])
            settle = (workload, context, integration, job_name, job, pods)
            done = integration.finished(job)
            if done is not None:
                await self._finish(key, workload, job, done, stamp, now)
                continue
            if wl.is_evicting(workload):
                if not integration.is_held(job, pods):
                    await self.apply_change(integration, job, integration.hold(job, pods))
                elif integration.active_pods(job, pods) == 0:
                    await self._release(key, workload, job, stamp, now)
                continue
            if wl.holds_quota(workload) and not wl.is_active(workload):
                # Kueue's way to stop admitted work: `spec.active: false` evicts it and it stays out
                # of the queue until set back to true (the Job's own `suspend` is Tessera's to set).
                await self._evict(key, workload, job, wl.EVICTED_BY_DEACTIVATION,
                                  "The workload is deactivated (spec.active: false)", stamp, None, integration)
                continue
            if wl.holds_quota(workload):
                self._ledger_admission(key, workload)
                if await self._start_job(workload, job, integration, pods):
                    pass  # held (started outside Tessera), started, or repaired: not yet running as admitted
                else:
                    await self._place_pods(workload, job, integration, pods)
                    if pods_ready.enable and not wl.is_true(workload, "PodsReady"):
                        await self._check_pods_ready(key, workload, job, stamp, now, integration, pods)
                    elif not any(pl.is_gated(p) for p in pods):
                        settled[(namespace, name)] = settle  # runs as admitted; no timeout (it depends on now)
                continue
            if not integration.is_held(job, pods):
                await self.apply_change(integration, job, integration.hold(job, pods))
            else:
                settled[(namespace, name)] = settle
        self._settled = settled

    async def _finish(self, key: str, workload: Mapping[str, Any], job: Mapping[str, Any], done: tuple[str, str],
                      stamp: str, now: float) -> None:
        reason, message = done
        held = wl.holds_quota(workload)
        updated = await self.write_status(workload, wl.finished_status(workload, reason, message, stamp))
        if updated is None:
            return
        if held:
            self._ledger_admission(key, workload)
            self._ledger("record_end", key, at=max(now, wl.reserved_at(workload)), reason="Finished")
        cq = str(((workload.get("status") or {}).get("admission") or {}).get("clusterQueue") or "")
        logger.info("Workload %s finished (%s)", key, reason, extra=_fields(key, job, cq, reason=reason))
        self._event(updated, "Finished", message)

    async def _release(self, key: str, workload: Mapping[str, Any], job: Mapping[str, Any], stamp: str,
                       now: float) -> None:
        evicted = wl.condition(workload, wl.EVICTED) or {}
        reason = str(evicted.get("reason") or "")
        requeue_at = count = None
        deactivate = False
        if reason == wl.EVICTED_BY_PODS_READY_TIMEOUT:
            strategy = self.config.wait_for_pods_ready.requeuing_strategy
            previous, _ = wl.requeue_state(workload)
            count = previous + 1
            backoff = min(strategy.backoff_base_seconds * 2 ** (count - 1), strategy.backoff_max_seconds)
            requeue_at = now + backoff
            deactivate = strategy.backoff_limit_count is not None and count > strategy.backoff_limit_count
        updated = await self.write_status(workload, wl.released_status(workload, stamp, requeue_at, count))
        if updated is None:
            return
        end = "Preempted" if wl.is_true(workload, wl.PREEMPTED) else "Evicted"
        self._ledger_admission(key, workload)
        self._ledger("record_end", key, at=max(now, wl.reserved_at(workload)), reason=end)
        self._event(updated, "QuotaReleased", f"Quota released after eviction ({reason})"
                    + ("; requeued" if wl.is_active(updated) else "; deactivated, not requeued"))
        if deactivate:
            meta = updated["metadata"]
            try:
                deactivated = await self.api.patch(WORKLOADS, meta["namespace"], meta["name"], {"spec": {"active": False}})
                self.state.store("workloads", deactivated)
                self._event(deactivated, "Deactivated", f"deactivated after {count} evictions by waitForPodsReady",
                            "Warning")
            except ApiError as exc:
                logger.warning("deactivating %s: %s", key, exc)

    async def _start_job(self, workload: Mapping[str, Any], job: Mapping[str, Any],
                         integration: Integration = ig.BATCH_JOB, pods: Sequence[Mapping[str, Any]] = ()) -> bool:
        """Make an admitted Workload's object run as admitted (`Integration.admitted_change`);
        False when it already does."""
        admission = workload["status"]["admission"]
        placements = wl.placements_of(admission)
        if not placements:
            return True
        cycle_flavors, cycle_topologies = self._flavors_and_topologies()
        change = integration.admitted_change(job, pods, placements, cycle_flavors, cycle_topologies)
        if change is None:
            return False
        updated = await self.apply_change(integration, job, change)
        if updated is not None and change.starts:
            flavors = placements[0].flavors if len(placements) == 1 else {p.name: p.flavors for p in placements}
            self._event(updated, "Started", f"Admitted by ClusterQueue {admission.get('clusterQueue')}: "
                                            f"flavors {flavors}")
        return True

    async def _place_pods(self, workload: Mapping[str, Any], job: Mapping[str, Any], integration: Integration,
                          pods: Sequence[Mapping[str, Any]]) -> None:
        """Ungate the pods that wait behind the placement gate onto the admission's planned nodes
        (`admission.placement`); a pod no planned node can take goes with the flavor's selector only,
        told by a `PlacementFallback` Warning Event."""
        if not any(pl.is_gated(p) for p in pods):
            return
        placements = wl.placements_of(workload["status"]["admission"])
        if not placements:
            return
        flavors, topologies = self._flavors_and_topologies()
        available = {name for (_, name), node in self.state.items("nodes")
                     if not (node.get("spec") or {}).get("unschedulable")}
        change = integration.placement_change(job, pods, placements, flavors, topologies, available)
        if change is None:
            return
        await self.apply_change(integration, job, change)
        if change.unplaced:
            gone = sorted({n for p in placements for n in p.nodes} - available)
            why = f"planned node(s) {', '.join(gone)} gone or unschedulable" if gone else "no planned node has room"
            message = (f"Pod(s) {', '.join(change.unplaced)} ungated without their planned node ({why}): "
                       "placed by kube-scheduler within the flavor's node selector")
            logger.warning("%s %s/%s: %s", integration.resource.kind, (job.get("metadata") or {}).get("namespace"),
                           (job.get("metadata") or {}).get("name"), message)
            self._event(job, "PlacementFallback", message, "Warning")

    def _flavors_and_topologies(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from admission.snapshot import objects_of

        return ({f.name: f for f in objects_of(self.state, "resourceflavors")},
                {t.name: t for t in objects_of(self.state, "topologies")})

    async def _check_pods_ready(self, key: str, workload: Mapping[str, Any], job: Mapping[str, Any], stamp: str,
                                now: float, integration: Integration = ig.BATCH_JOB,
                                pods: Sequence[Mapping[str, Any]] = ()) -> None:
        placements = wl.placements_of(workload["status"]["admission"])
        if integration.pods_ready(job, pods, placements):
            conditions = wl.set_condition(wl.conditions_of(workload), "PodsReady", True, "PodsReady",
                                          "All pods reached readiness", stamp)
            await self.write_status(workload, {**(workload.get("status") or {}), "conditions": conditions})
            return
        timeout = self.config.wait_for_pods_ready.timeout
        if now - wl.reserved_at(workload) < timeout:
            return
        message = f"Exceeded the PodsReady timeout of {timeout:g}s"
        await self._evict(key, workload, job, wl.EVICTED_BY_PODS_READY_TIMEOUT, message, stamp, None, integration)

    async def _evict(self, key: str, workload: Mapping[str, Any], job: Mapping[str, Any] | None, reason: str,
                     message: str, stamp: str, preemption_reason: str | None,
                     integration: Integration | None = None) -> bool:
        updated = await self.write_status(workload, wl.evicting_status(workload, reason, message, stamp,
                                                                       preemption_reason))
        if updated is None:
            return False
        cq = str(((workload.get("status") or {}).get("admission") or {}).get("clusterQueue") or "")
        self.metrics.observe_eviction(cq, reason, preemption_reason)
        logger.info("Workload %s %s: %s", key, "preempted" if preemption_reason else "evicted", message,
                    extra=_fields(key, job, cq, reason=preemption_reason or reason, eviction_reason=reason))
        self._event(updated, "Preempted" if preemption_reason else "Evicted", message, "Warning")
        found = ig.owner_of(workload)
        integration = integration or (found[0] if found else ig.BATCH_JOB)
        if job is not None:
            held = await self.apply_change(integration, job, integration.hold(job, self._pods_of(integration, job)))
            self._event(held, integration.hold_event, f"{integration.hold_event}: {message}")
        return True

    # --- 3. Scheduling cycles ---------------------------------------------------------------------

    def requeue_relabelled(self) -> list[str]:
        """Requeue the pending Workloads of every namespace whose labels changed since the last pass (or that
        appeared or went away), as Kueue requeues inadmissible workloads on a Namespace change: what the policy
        set aside for them (Kueue's inadmissible workloads, `QueueState.inadmissible`) is forgotten, so the
        next cycle judges them against the new labels with everything else. Returns their keys.

        The snapshot itself always carries the current labels (`admission.snapshot.namespace_labels`); this
        is about the policy's memory across cycles, which a label change would otherwise leave stale. The
        first pass only records the labels (a new leader starts with a fresh policy: nothing to forget)."""
        revision = self.state.revisions.get("namespaces", 0)
        seen = self._namespaces
        if seen is not None and seen[0] == revision:
            return []
        current = namespace_labels(self.state)
        self._namespaces = (revision, current)
        if seen is None:
            return []
        before = seen[1]
        changed = {ns for ns in current.keys() | before.keys() if current.get(ns) != before.get(ns)}
        if not changed:
            return []
        keys = [f"{namespace}/{name}" for (namespace, name), workload in self.state.items("workloads")
                if namespace in changed and not wl.holds_quota(workload) and not wl.is_finished(workload)
                and wl.is_active(workload)]
        forgotten = forget_set_aside(self.policy, keys)
        logger.info("namespace labels changed (%s): %d pending Workload(s) requeued%s", ", ".join(sorted(changed)),
                    len(keys), f", {forgotten} of them set aside by the policy before" if forgotten else "")
        return keys

    async def schedule(self, now: float) -> Decisions | None:
        last: Decisions | None = None
        cycle: Cycle | None = None
        stale = False  # whether admissions or preemptions were applied after the last snapshot was built
        await self.fair_share.seed(self.clock())
        for _ in range(self.options.max_cycles):
            cycle = build_cycle(self.state, self.clock(), self.config)
            pl.reserve_plans(cycle, self.plans)  # planned pods not bound yet hold their nodes (admission/placement.py)
            stale = False
            cycle.snapshot.admission_fair_sharing = self.fair_share.sync(cycle.snapshot)
            if not cycle.snapshot.pending:
                break
            with_nominations(cycle.snapshot, self.nominations)
            started = time.perf_counter()
            decisions = self.policy.schedule(cycle.snapshot)
            self.nominations = dict(decisions.nominations)
            decisions.stats.seconds = decisions.stats.seconds or (time.perf_counter() - started)
            decisions.stats.policy = decisions.stats.policy or getattr(self.policy, "name", "")
            self.metrics.observe_decisions(decisions)
            last = decisions
            changed = await self.apply(cycle, decisions, self.clock())
            stale = changed
            if not changed and not decisions.again:
                break
            if changed and not decisions.preemptions and all(
                    wl.holds_quota(self.state.get("workloads", *_split(p.key)) or {}) for p in cycle.snapshot.pending):
                break  # every pending workload was admitted: the next cycle would find none pending
        # After admissions or preemptions the gauges and queue statuses are left to the next pass (which this
        # pass's own writes trigger, and whose snapshot is built anyway), unless they are a second old.
        if cycle is not None and stale and self.queue_status.due():
            cycle, stale = build_cycle(self.state, self.clock(), self.config), False
        if cycle is not None and not stale:  # (pending reasons written since change no count)
            self.metrics.observe_cycle(cycle.snapshot)
            self.queue_status.publish_soon(cycle.snapshot, wl.now_rfc3339(self.clock()))
        return last

    async def apply(self, cycle: Cycle, decisions: Decisions, now: float) -> bool:
        """Apply one cycle's decisions; True when a preemption or an admission was recorded."""
        stamp = wl.now_rfc3339(now)
        changed = False
        for preemption in decisions.preemptions:
            if not self.is_leader():
                return changed  # lost the Lease mid-pass: the new leader decides from here
            entry = cycle.entries.get(preemption.key)
            if entry is None or entry.job is None or not wl.holds_quota(entry.workload) \
                    or wl.is_evicting(entry.workload):
                continue  # (no object: its kind is not watched here, nothing could be stopped)
            message = preemption.message or f"Preempted to accommodate {preemption.preemptor} ({preemption.reason})"
            if await self._evict(preemption.key, entry.workload, entry.job, wl.EVICTED_BY_PREEMPTION, message, stamp,
                                 str(preemption.reason)):
                changed = True
        admitted: list[bool] = []

        async def admit(entry: Entry, admission: Any) -> None:
            if self.is_leader():  # lost the Lease mid-pass: the new leader decides from here
                admitted.append(await self._admit(cycle, entry, admission, stamp, now))

        # Admissions are independent writes (each under its Workload's resourceVersion): done in parallel, so
        # that a cycle admitting many workloads costs a few round trips, not two per workload.
        todo = [(cycle.entries.get(a.key), a) for a in decisions.admissions]
        await self._bounded(admit(entry, a) for entry, a in todo
                            if entry is not None and entry.info is not None and entry.job is not None
                            and not wl.holds_quota(entry.workload))
        changed = changed or any(admitted)
        if not self.is_leader():
            return changed
        updates = []
        for key, reason in decisions.pending.items():
            entry = cycle.entries.get(key)
            if entry is None or wl.holds_quota(entry.workload) or wl.is_finished(entry.workload):
                continue
            current = self.state.get("workloads", *_split(key)) or entry.workload
            if wl.holds_quota(current) or wl.pending_message(current) == reason:
                continue
            updates.append(self.write_status(current, wl.pending_status(current, reason, stamp)))
        await self._bounded(updates)
        return changed

    async def _admit(self, cycle: Cycle, entry: Entry, admission: Any, stamp: str, now: float) -> bool:
        assert entry.info is not None and entry.job is not None
        integration = entry.integration or ig.BATCH_JOB
        # A per-pod plan only from a policy that places pods, for a kind whose pods follow it: recorded with the
        # admission, and the release gates the pods (admission/placement.py).
        places = bool(getattr(self.policy, "places_pods", False)) and integration.honours_plans
        admission = dataclasses.replace(admission, podsets=pl.planned(admission.podsets, places))
        record = wl.admission_record(admission, entry.info, cycle.flavors, cycle.topologies)
        updated = await self.write_status(entry.workload, wl.admitted_status(entry.workload, record, stamp))
        if updated is None:
            return False
        queued = cycle.queued_at(entry.key, now)
        self.metrics.observe_admission(admission.cluster_queue, now - queued)
        logger.info("Workload %s admitted in ClusterQueue %s", entry.key, admission.cluster_queue,
                    extra=_fields(entry.key, entry.job, admission.cluster_queue, reason="QuotaReserved",
                                  flavors=dict(admission.podsets[0].flavors) if admission.podsets else {},
                                  waited_seconds=round(max(now - queued, 0.0), 3)))
        self._event(updated, "QuotaReserved", f"Quota reserved in ClusterQueue {admission.cluster_queue}")
        job = self.state.get(integration.plural, *_split_job(entry)) or entry.job
        change = integration.release(job, self._pods_of(integration, job), list(admission.podsets), cycle.flavors,
                                     cycle.topologies)
        started = await self.apply_change(integration, job, change) if change else None
        if started is not None and change.starts:
            self._event(started, "Started", f"Admitted by ClusterQueue {admission.cluster_queue}")
        # Queued after the start, written off the pass (`_ledger`); idempotent, and redone by the next pass's
        # sync_jobs if the process dies before it is written.
        self._ledger_admission(entry.key, updated, entry.info)
        return True


def forget_set_aside(policy: Any, keys: Iterable[str]) -> int:
    """Drop `keys` from the workloads a policy set aside as inadmissible between cycles (the Kueue-style
    policies' `QueueState.inadmissible`); a policy without such memory (`tessera` sets nothing aside: it
    judges every pending workload in every cycle) has nothing to forget. Returns how many were set aside."""
    queue_state = getattr(policy, "state", None)
    inadmissible = getattr(queue_state, "inadmissible", None)
    if not isinstance(inadmissible, dict):
        return 0
    return sum(1 for key in keys if inadmissible.pop(key, None) is not None)


def _desired_workload(job: Mapping[str, Any],
                      integration: Integration = ig.BATCH_JOB) -> dict[str, Any] | JobConversionError:
    try:
        return integration.workload_manifest(job)
    except JobConversionError as exc:
        return exc
    except ValueError as exc:  # pydantic ValidationError of the pod template
        return JobConversionError("spec.template" if integration is ig.BATCH_JOB else "spec",
                                  str(exc).splitlines()[0])


def _info_of(workload: Mapping[str, Any]) -> Any:
    from admission.snapshot import _parse_workload

    info = _parse_workload(workload)
    return info if not hasattr(info, "reason") else None


def _fields(key: str, job: Mapping[str, Any] | None, cluster_queue: str, **more: Any) -> dict[str, Any]:
    """Structured log fields (`extra=`) of a Workload's log line: see admission/logs.py."""
    namespace, _, name = key.partition("/")
    job_name = str(((job or {}).get("metadata") or {}).get("name") or "") or None
    return {"workload": name, "namespace": namespace, "job": job_name, "cluster_queue": cluster_queue or None, **more}


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def _split_job(entry: Entry) -> tuple[str, str]:
    namespace, _ = _split(entry.key)
    return namespace, entry.owner or wl.job_name_of(entry.workload) or ""

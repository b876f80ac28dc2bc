"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica runs an elector; the one holding the Lease admits, the others only keep their
caches warm and serve webhooks. Rules (client-go's):

* the holder renews `spec.renewTime` every `retry_period`; it considers itself leader only
  until `renew_deadline` after its last successful renewal (shorter than the lease duration,
  so it stops admitting before anyone else may take over);
* another replica takes the Lease over only when the record has not changed for
  `lease_duration` *as observed on its own clock* (no trust in other clocks);
* every write carries the Lease's resourceVersion, so two candidates never both win;
* a leader that stops releases the Lease (empty holder) so a successor need not wait.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from admission.kube import LEASES, ApiError, Conflict, KubeApi

logger = logging.getLogger("tessera.leader")

DEFAULT_LEASE_NAME = "tessera-operator"


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def micro_time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Holds (or waits for) one Lease; `is_leader` is true while the Lease is held and fresh."""

    def __init__(self, api: KubeApi, namespace: str, name: str = DEFAULT_LEASE_NAME, *, identity: str | None = None,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] | None = None) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.wall = wall
        self.on_change = on_change
        self._held_until = 0.0
        self._observed: tuple[str, float] | None = None  # (resourceVersion, local time first seen)
        self._was_leader = False

    @property
    def is_leader(self) -> bool:
        return self.clock() < self._held_until

    def _notify(self) -> None:
        now = self.is_leader
        if now != self._was_leader:
            self._was_leader = now
            logger.info("%s %s the lease %s/%s", self.identity, "acquired" if now else "lost", self.namespace, self.name)
            if self.on_change is not None:
                self.on_change(now)

    def _spec(self, transitions: int, acquire_time: str | None) -> dict[str, Any]:
        now = micro_time(self.wall())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, int(round(self.lease_duration))),
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        started = self.clock()
        try:
            lease = await self.api.get(LEASES, self.namespace, self.name)
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(0, None)}
                await self.api.create(LEASES, self.namespace, body)
                self._held_until = started + self.renew_deadline
                return True
            spec = lease.get("spec") or {}
            rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
            holder = spec.get("holderIdentity") or ""
            if self._observed is None or self._observed[0] != rv:
                self._observed = (rv, started)
            if holder and holder != self.identity:
                duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
                if started < self._observed[1] + duration:
                    self._held_until = 0.0
                    return False  # held by someone else and still fresh
            mine = holder == self.identity
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
            patch = {"metadata": {"resourceVersion": rv},
                     "spec": self._spec(transitions, spec.get("acquireTime") if mine else None)}
            await self.api.patch(LEASES, self.namespace, self.name, patch)
            self._held_until = started + self.renew_deadline
            return True
        except Conflict:
            self._held_until = 0.0
            return False
        except (ApiError, OSError, asyncio.TimeoutError) as exc:
            logger.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return self.is_leader  # keep leading until the renew deadline passes
        finally:
            self._notify()

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire and renew until `stop`; then release the Lease if held."""
        try:
            while not stop.is_set():
                await self.try_acquire_or_renew()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.retry_period)
                except asyncio.TimeoutError:
                    pass
        finally:
            await self.release()

    async def release(self) -> None:
        if not self.is_leader:
            return
        self._held_until = 0.0
        try:
            lease = await self.api.get(LEASES, self.namespace, self.name)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                rv = (lease.get("metadata") or {}).get("resourceVersion")
                await self.api.patch(LEASES, self.namespace, self.name, {
                    "metadata": {"resourceVersion": rv},
                    "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": micro_time(self.wall())},
                })
        except (ApiError, OSError, asyncio.TimeoutError) as exc:
            logger.warning("releasing lease %s/%s: %s", self.namespace, self.name, exc)
        finally:
            self._notify()

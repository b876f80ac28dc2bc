"""Memory the operator keeps between cycles: admission fair sharing and preemptors' nominations.

Everything else a cycle needs is read from the API server; these two are not Kubernetes
state. Both are rebuilt safely after a restart or a failover:

- **Admission fair sharing** (`Configuration.admissionFairSharing`): each LocalQueue's decayed
  usage. It is seeded from the usage ledger's history when there is one (`--ledger`), then
  kept in step with the snapshot: a workload seen holding quota for the first time is
  charged (with Kueue's entry penalty), one that no longer holds quota is released. Because
  the charge follows the snapshot, a lost write or a repeated cycle never counts twice.
- **Nominations** (`Decisions.nominations`): the nodes a preemptor's victims are freeing,
  held for it by the next cycles. Losing them in a failover costs at most one preemption
  more, never an admission twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from quotas.admission_fair_sharing import AdmissionFairSharing
from quotas.api import Configuration
from scheduler.snapshot import Snapshot, fair_sharing_charge

logger = logging.getLogger("tessera.controller")


class FairShareTracker:
    """Admission fair sharing state for the operator's snapshots (see the module docstring)."""

    def __init__(self, config: Configuration, ledger: Any = None) -> None:
        afs = config.admission_fair_sharing
        self.afs = AdmissionFairSharing.from_config(afs) if afs is not None else None
        self.ledger = ledger
        self.charged: dict[str, tuple[str, dict[str, float]]] = {}
        self._seeded_from_ledger = False
        self._primed = False

    async def seed(self, now: float) -> None:
        """Seed from the ledger's history once (a failed read leaves the usage starting at zero)."""
        if self.afs is None or self._primed or self.ledger is None or self._seeded_from_ledger:
            return
        try:
            await asyncio.to_thread(self.afs.seed_from_history, self.ledger, now=now)
            self._seeded_from_ledger = True
        except Exception as exc:  # accounting, never a reason to stop admitting
            logger.warning("admission fair sharing: could not read the ledger's history: %s", exc)

    def sync(self, snapshot: Snapshot) -> AdmissionFairSharing | None:
        """Charge and release to match what holds quota in ``snapshot``; the state to schedule with."""
        afs = self.afs
        if afs is None:
            return None
        now = snapshot.now
        current = {a.key: fair_sharing_charge(a) for a in snapshot.admitted}
        for key in self.charged.keys() - current.keys():
            local_queue, requests = self.charged.pop(key)
            afs.release(local_queue, requests, at=now)
        for key, (local_queue, requests) in current.items():
            if key in self.charged:
                continue
            self.charged[key] = (local_queue, requests)
            if not (self._seeded_from_ledger and not self._primed):  # the ledger counted those already admitted
                afs.admit(local_queue, requests, at=now)
        self._primed = True
        return afs


def with_nominations(snapshot: Snapshot, nominations: Mapping[str, frozenset[str]]) -> None:
    """Put the last cycle's nominations on the pending workloads of ``snapshot``."""
    if nominations:
        snapshot.pending = [replace(p, nominated_nodes=nominations[p.key]) if p.key in nominations else p
                            for p in snapshot.pending]

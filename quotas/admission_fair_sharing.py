"""Admission fair sharing: order the LocalQueues of one ClusterQueue by their decayed historical usage.

This is Kueue's ``AdmissionFairSharing`` (KEP-4136, ``pkg/util/admissionfairsharing``),
with the same arithmetic. Pure functions and a small state object over plain data: no SQL,
no Kubernetes, no files. :class:`quotas.ledger.Ledger` can seed the state from its history
(:meth:`AdmissionFairSharing.seed_from_history`).

What Kueue does, and so what this module does
---------------------------------------------
* Every LocalQueue has a vector of *consumed resources* ``C`` (per resource name, in the
  resource's units: GPUs, CPU cores, bytes, ...). It is an exponentially decaying average of
  the LocalQueue's *admitted usage* ``U`` (the summed requests of its admitted workloads)::

      C(t) = C(t0) * (1 - a) + U * a,    a = 1 - 2^(-(t - t0) / usageHalfLifeTime)

  i.e. ``C(t) = C(t0)·2^(-(t-t0)/h) + newly charged usage`` where the newly charged usage is
  ``(1 - 2^(-(t-t0)/h))·U``. After one half-life an idle queue's usage has halved; a queue
  that keeps ``U`` admitted converges to ``U``.
* **Charge at admission** (Kueue's *entry penalty*, v0.13+): when a workload is admitted its
  LocalQueue is charged at once with ``a_s · requests`` where
  ``a_s = 1 - 2^(-usageSamplingInterval / usageHalfLifeTime)``, i.e. what the workload would
  have contributed after one sampling interval. Without it a tenant could get hundreds of
  workloads admitted before its usage caught up.
* The **ordering value** of a LocalQueue is ``sum_r resourceWeights[r] · C_r / lqWeight``
  (a resource missing from ``resourceWeights`` weighs 1; the LocalQueue weight defaults to 1,
  and a weight <= 0 makes the value +inf so the queue goes last).
* **Ordering** of the workloads of a ClusterQueue with admission fair sharing: lower
  LocalQueue value first, then higher priority, then earlier queue-order timestamp (FIFO),
  then UID (:func:`workload_sort_key`). :func:`order_local_queues` orders LocalQueues the same
  way by their head workloads.
* ``usageHalfLifeTime: 0`` disables the decay: Kueue then resets the consumed resources to
  empty and charges no penalty, so every value is 0 and ordering falls back to priority/FIFO.

Deviations from Kueue (deliberate, all small)
---------------------------------------------
* Kueue re-computes ``C`` every ``usageSamplingInterval`` (and when it admits a workload of the
  queue), using the admitted usage *at that moment* for the whole elapsed time. We update on
  every event (admission, release, query) and integrate exactly, with ``U`` piecewise
  constant between events: the limit of Kueue's formula as the sampling interval goes to 0.
  So two decay steps equal one (Kueue has this property only while ``U`` does not change),
  and a queue's value never depends on when it was looked at. ``usageSamplingInterval`` is
  still used for the entry penalty, exactly as Kueue uses it.
* Kueue keeps the entry penalty aside until the workload controller folds it into ``C`` (a
  few milliseconds later); we add it to ``C`` at the admission instant.
* Time going backwards (``at`` earlier than the last update) is treated as no time passing
  instead of producing a negative decay.

Units: times are float seconds (epoch seconds in the operator, simulated seconds in the
simulator; only differences matter). Requests are floats in the resource's base unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from quotas.api import AdmissionFairSharingConfig

__all__ = [
    "DEFAULT_SAMPLING_INTERVAL",
    "AdmissionFairSharing",
    "LocalQueueState",
    "UsageHistory",
    "UsageInterval",
    "alpha_rate",
    "consumed_from_history",
    "decay_consumed",
    "decay_factor",
    "entry_penalty",
    "order_local_queues",
    "weighted_usage",
    "workload_sort_key",
]

DEFAULT_SAMPLING_INTERVAL: Final[float] = 300.0
"""Kueue's default ``usageSamplingInterval`` (5 minutes)."""

_LN_HALF: Final = math.log(0.5)
_EPSILON: Final = 1e-9

Resources = Mapping[str, float]


# --------------------------------------------------------------------------- arithmetic


def decay_factor(elapsed: float, half_life: float) -> float:
    """``2^(-elapsed / half_life)``: what is left of usage after ``elapsed`` seconds (1 if half_life <= 0)."""
    if half_life <= 0:
        return 1.0
    return math.exp(_LN_HALF * max(elapsed, 0.0) / half_life)


def alpha_rate(elapsed: float, half_life: float) -> float:
    """Kueue's ``calculateAlphaRate``: ``1 - 2^(-elapsed / half_life)``, and 0 when half_life is 0.

    Computed with ``expm1`` so that it stays accurate when ``elapsed`` is tiny next to the half-life.
    """
    if half_life <= 0:
        return 0.0
    return -math.expm1(_LN_HALF * max(elapsed, 0.0) / half_life)


def _merge(*terms: tuple[float, Resources]) -> dict[str, float]:
    out: dict[str, float] = {}
    for factor, resources in terms:
        if factor == 0.0:
            continue
        for name, value in resources.items():
            out[name] = out.get(name, 0.0) + factor * value
    return out


def decay_consumed(
    consumed: Resources, elapsed: float, half_life: float, admitted: Resources | None = None
) -> dict[str, float]:
    """Kueue's ``CalculateDecayedConsumed``: ``consumed·(1 - a) + admitted·a``, ``a = alpha_rate(elapsed, half_life)``.

    ``admitted`` is the LocalQueue's admitted usage, assumed constant during ``elapsed``.
    With ``half_life <= 0`` the result is empty (Kueue resets the consumed resources then).
    """
    if half_life <= 0:
        return {}
    a = alpha_rate(elapsed, half_life)
    return _merge((1.0 - a, consumed), (a, admitted or {}))


def entry_penalty(requests: Resources, half_life: float, sampling_interval: float = DEFAULT_SAMPLING_INTERVAL) -> dict[str, float]:
    """Kueue's ``CalculateEntryPenalty``: ``requests · (1 - 2^(-sampling_interval / half_life))``."""
    return _merge((alpha_rate(sampling_interval, half_life), requests))


def weighted_usage(
    consumed: Resources,
    penalty: Resources | None = None,
    *,
    resource_weights: Mapping[str, float] | None = None,
    local_queue_weight: float = 1.0,
) -> float:
    """Kueue's ``CalculateUsage``: ``sum_r weight_r · (consumed_r + penalty_r) / local_queue_weight``.

    Resources missing from ``resource_weights`` weigh 1. A LocalQueue weight <= 0 gives +inf
    (the queue sorts last), as in Kueue.
    """
    weights = resource_weights or {}
    merged = _merge((1.0, consumed), (1.0, penalty or {}))
    total = math.fsum(weights.get(name, 1.0) * merged[name] for name in sorted(merged))
    if local_queue_weight <= 0:
        return math.inf
    return total / local_queue_weight


# --------------------------------------------------------------------------- history (closed form)


@dataclass(frozen=True)
class UsageInterval:
    """A workload's admission: ``requests`` admitted from ``start`` until ``end`` (None while still admitted)."""

    requests: Resources
    start: float
    end: float | None = None


def consumed_from_history(
    intervals: Iterable[UsageInterval],
    *,
    now: float,
    half_life: float,
    sampling_interval: float = DEFAULT_SAMPLING_INTERVAL,
    entry_penalties: bool = True,
) -> dict[str, float]:
    """The consumed resources at ``now`` of a LocalQueue whose whole history is ``intervals``, starting from 0.

    Closed form of the event-by-event decay (:class:`AdmissionFairSharing` gives the same numbers):
    an interval admitted at ``a`` and ended at ``b`` (``b = now`` if still open or ending later)
    contributes ``requests · (2^(-(now-b)/h) - 2^(-(now-a)/h))``, plus its entry penalty
    ``a_s · requests · 2^(-(now-a)/h)``. Intervals starting after ``now`` contribute nothing.
    """
    if half_life <= 0:
        return {}
    a_s = alpha_rate(sampling_interval, half_life) if entry_penalties else 0.0
    terms: list[tuple[float, Resources]] = []
    for interval in intervals:
        if interval.start > now:
            continue
        end = now if interval.end is None else min(interval.end, now)
        end = max(end, interval.start)
        since_start = decay_factor(now - interval.start, half_life)
        since_end = decay_factor(now - end, half_life)
        terms.append((since_end - since_start + a_s * since_start, interval.requests))
    return _merge(*terms)


class UsageHistory(Protocol):
    """What :meth:`AdmissionFairSharing.seed_from_history` needs; :class:`quotas.ledger.Ledger` provides it."""

    def decayed_usage(
        self, local_queues: Iterable[str] | None = None, *, now: float, half_life: float, sampling_interval: float = ...
    ) -> dict[str, dict[str, float]]: ...

    def admitted_usage(self, local_queues: Iterable[str] | None = None, *, at: float) -> dict[str, dict[str, float]]: ...


# --------------------------------------------------------------------------- ordering


def workload_sort_key(usage: float, priority: int = 0, timestamp: float = 0.0, uid: str = "") -> tuple[float, int, float, str]:
    """Kueue's queue order with admission fair sharing: lower LocalQueue usage, higher priority, earlier timestamp, UID."""
    return (usage, -priority, timestamp, uid)


def order_local_queues(usages: Mapping[str, float], head_timestamps: Mapping[str, float] | None = None) -> list[str]:
    """LocalQueue keys ordered lower usage first; ties by the queue-order timestamp of their head (FIFO), then key.

    ``head_timestamps`` maps a LocalQueue to the creation (or eviction) time of its first pending
    workload; queues missing from it tie after those present.
    """
    heads = head_timestamps or {}
    return sorted(usages, key=lambda lq: (usages[lq], heads.get(lq, math.inf), lq))


# --------------------------------------------------------------------------- state


@dataclass
class LocalQueueState:
    """Consumed resources of one LocalQueue as of ``last_update``, and its admitted usage since then."""

    consumed: dict[str, float] = field(default_factory=dict)
    admitted: dict[str, float] = field(default_factory=dict)
    last_update: float = 0.0


class AdmissionFairSharing:
    """Decayed usage of the LocalQueues, charged at admission; feeds the order of LocalQueues in a ClusterQueue.

    ``local_queue`` arguments are LocalQueue keys, ``"namespace/name"``. All methods take the
    current time explicitly (``at``), so the simulator can drive it with simulated time.
    """

    def __init__(
        self,
        half_life: float,
        *,
        sampling_interval: float = DEFAULT_SAMPLING_INTERVAL,
        resource_weights: Mapping[str, float] | None = None,
        local_queue_weights: Mapping[str, float] | None = None,
    ) -> None:
        if not math.isfinite(half_life) or half_life < 0:
            raise ValueError(f"usageHalfLifeTime must be a finite number of seconds >= 0, got {half_life}")
        if not math.isfinite(sampling_interval) or sampling_interval < 0:
            raise ValueError(f"usageSamplingInterval must be a finite number of seconds >= 0, got {sampling_interval}")
        self.half_life = float(half_life)
        self.sampling_interval = float(sampling_interval)
        self.resource_weights: dict[str, float] = dict(resource_weights or {})
        self.local_queue_weights: dict[str, float] = dict(local_queue_weights or {})
        self._queues: dict[str, LocalQueueState] = {}

    @classmethod
    def from_config(
        cls, config: AdmissionFairSharingConfig, *, local_queue_weights: Mapping[str, float] | None = None
    ) -> AdmissionFairSharing:
        """Build from ``Configuration.admissionFairSharing`` (:class:`quotas.api.AdmissionFairSharingConfig`)."""
        return cls(
            config.usage_half_life_time,
            sampling_interval=config.usage_sampling_interval,
            resource_weights=config.resource_weights,
            local_queue_weights=local_queue_weights,
        )

    # -- state transitions

    def _state(self, local_queue: str, at: float) -> LocalQueueState:
        state = self._queues.get(local_queue)
        if state is None:
            state = self._queues[local_queue] = LocalQueueState(last_update=at)
        return state

    def advance(self, local_queue: str, at: float) -> LocalQueueState:
        """Decay ``local_queue`` up to ``at`` (towards its admitted usage) and return its state."""
        state = self._state(local_queue, at)
        if at > state.last_update:
            state.consumed = decay_consumed(state.consumed, at - state.last_update, self.half_life, state.admitted)
            state.last_update = at
        return state

    def advance_all(self, at: float) -> None:
        """Decay every known LocalQueue up to ``at``."""
        for local_queue in list(self._queues):
            self.advance(local_queue, at)

    def admit(self, local_queue: str, requests: Resources, *, at: float) -> dict[str, float]:
        """A workload of ``local_queue`` was admitted at ``at``: charge its entry penalty now and count its requests
        as admitted usage until :meth:`release`. Returns the penalty charged."""
        state = self.advance(local_queue, at)
        penalty = entry_penalty(requests, self.half_life, self.sampling_interval)
        state.consumed = _merge((1.0, state.consumed), (1.0, penalty))
        state.admitted = _merge((1.0, state.admitted), (1.0, requests))
        return penalty

    def release(self, local_queue: str, requests: Resources, *, at: float) -> None:
        """A workload of ``local_queue`` stopped using ``requests`` at ``at`` (finished, preempted or evicted)."""
        state = self.advance(local_queue, at)
        left = _merge((1.0, state.admitted), (-1.0, requests))
        state.admitted = {name: value for name, value in left.items() if value > _EPSILON}

    def seed(self, local_queue: str, *, consumed: Resources, admitted: Resources | None = None, at: float) -> None:
        """Set ``local_queue``'s consumed resources (and currently admitted usage) as of ``at``."""
        self._queues[local_queue] = LocalQueueState(
            consumed=dict(consumed) if self.half_life > 0 else {}, admitted=dict(admitted or {}), last_update=at
        )

    def seed_from_history(self, history: UsageHistory, local_queues: Iterable[str] | None = None, *, now: float) -> None:
        """Seed from a usage history such as :class:`quotas.ledger.Ledger` (all its LocalQueues if None given)."""
        consumed = history.decayed_usage(
            local_queues, now=now, half_life=self.half_life, sampling_interval=self.sampling_interval
        )
        admitted = history.admitted_usage(local_queues, at=now)
        for local_queue in sorted(set(consumed) | set(admitted)):
            self.seed(local_queue, consumed=consumed.get(local_queue, {}), admitted=admitted.get(local_queue), at=now)

    # -- queries (do not change the state)

    def local_queues(self) -> list[str]:
        return sorted(self._queues)

    def admitted(self, local_queue: str) -> dict[str, float]:
        state = self._queues.get(local_queue)
        return dict(state.admitted) if state else {}

    def consumed(self, local_queue: str, *, at: float) -> dict[str, float]:
        """The consumed resources of ``local_queue`` at ``at`` (Kueue's ``status.fairSharing...consumedResources``)."""
        state = self._queues.get(local_queue)
        if state is None:
            return {}
        return decay_consumed(state.consumed, at - state.last_update, self.half_life, state.admitted)

    def usage(self, local_queue: str, *, at: float) -> float:
        """The ordering value of ``local_queue`` at ``at``: weighted consumed resources over its weight."""
        return weighted_usage(
            self.consumed(local_queue, at=at),
            resource_weights=self.resource_weights,
            local_queue_weight=self.local_queue_weights.get(local_queue, 1.0),
        )

    def sort_key(
        self, local_queue: str, *, at: float, priority: int = 0, timestamp: float = 0.0, uid: str = ""
    ) -> tuple[float, int, float, str]:
        """Sort key of a pending workload of ``local_queue`` (see :func:`workload_sort_key`)."""
        return workload_sort_key(self.usage(local_queue, at=at), priority, timestamp, uid)

    def order_local_queues(
        self, local_queues: Iterable[str], *, at: float, head_timestamps: Mapping[str, float] | None = None
    ) -> list[str]:
        """``local_queues`` ordered lower decayed usage first, ties FIFO by their head's timestamp, then key."""
        return order_local_queues({lq: self.usage(lq, at=at) for lq in local_queues}, head_timestamps)

"""Kueue's queue manager kept across cycles, for the `kueue` policy (`scheduler.kueue`).

Rebuilding and re-sorting every ClusterQueue's queue from the whole pending set costs
O(P log P) per cycle, and a simulated instant can run many cycles (a BestEffortFIFO queue
sets one head aside per cycle). Kueue itself keeps its queues between cycles and only
moves what changed; `QueueManager` does the same: a sorted list per ClusterQueue, updated
from what changed between two snapshots, so that a cycle costs O(heads + changes).

What it keeps must always equal what `scheduler.kueue._Cycle.build_queues` would compute
from scratch for the same snapshot and queue state (tests/test_kueue_incremental.py checks
this on random cycles). It is therefore derived from the snapshot, never trusted blindly:

- Pending workloads are matched to the snapshot by object identity (`Pending` is frozen;
  a changed workload is a new object). A snapshot whose ``pending`` is the very list
  object of the previous cycle, with the same length, is taken as unchanged: snapshots are
  the state at one instant and are not mutated in place (the simulator hands the same list
  while nothing changed); any other list is diffed object by object. If the diff leaves a
  count that does not match the snapshot (duplicate keys), the manager starts afresh.
- The queue configuration (quota tree, ClusterQueues, LocalQueues, namespace labels) is
  matched by identity; any other object starts afresh.
- Time may only move forward; a snapshot from the past starts afresh.
- Queue order with admission fair sharing depends on decaying usage: the policy does not
  use the manager then (`scheduler.kueue.greedy_cycle` sorts from scratch).

A pending workload is, in the precedence `build_queues` applies: *blocked* (its previous
admission is still in the snapshot), in *backoff* (``not_before > now``), *rejected* (no
such LocalQueue or ClusterQueue, stopped queue, namespace not selected), *set aside* (an
inadmissible head of a BestEffortFIFO queue, `QueueState.inadmissible`), or a *member* of
its ClusterQueue's queue.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from scheduler.snapshot import Pending, Snapshot

if TYPE_CHECKING:  # pragma: no cover - the queue state lives in scheduler.kueue, which imports this module
    from scheduler.kueue import QueueState

__all__ = ["QueueManager", "QueueView", "SortKey", "Untrackable"]

SortKey = tuple[int, float, float, str]
"""A member's place in its queue: (-priority, queue time, creation time, key); keys are unique,
so two members never compare equal."""

MEMBER, BLOCKED, BACKOFF, REJECTED, ASIDE = "member", "blocked", "backoff", "rejected", "aside"

BLOCKED_REASON = "waiting for its previous admission to be released"


class Untrackable(Exception):
    """The snapshot cannot be tracked incrementally (two pending workloads with one key)."""


def sort_key(p: Pending) -> SortKey:
    """`build_queues`' order without admission fair sharing, sticky preemptor aside."""
    w = p.workload
    return (-w.priority, p.queued_at, w.creation_time, p.key)


def backoff_reason(p: Pending, now: float) -> str:
    return f"requeued with backoff: not before t={p.not_before:g} ({p.not_before - now:.0f}s left)"


class _Queue:
    """One ClusterQueue's members: a sorted list of their keys' `SortKey` and key -> Pending."""

    __slots__ = ("order", "members")

    def __init__(self) -> None:
        self.order: list[SortKey] = []
        self.members: dict[str, Pending] = {}

    def add(self, p: Pending, key: SortKey) -> None:
        insort(self.order, key)
        self.members[key[3]] = p

    def remove(self, key: SortKey) -> None:
        i = bisect_left(self.order, key)
        assert i < len(self.order) and self.order[i] == key, f"queue out of sync for {key[3]}"
        del self.order[i]
        del self.members[key[3]]


class QueueView:
    """One cycle's view of a ClusterQueue's queue: indexable like the sorted list that
    `build_queues` returns (the sticky preemptor first, then queue order), without copying."""

    __slots__ = ("_queue", "_sticky", "_sticky_at")

    def __init__(self, queue: _Queue, sticky: Pending | None, sticky_key: SortKey | None) -> None:
        self._queue = queue
        self._sticky = sticky
        self._sticky_at = -1 if sticky_key is None else bisect_left(queue.order, sticky_key)

    def __len__(self) -> int:
        return len(self._queue.order)

    def __getitem__(self, index: int) -> Pending:
        order = self._queue.order
        if index < 0 or index >= len(order):
            raise IndexError(index)
        if self._sticky is not None:
            if index == 0:
                return self._sticky
            index -= 1
            if index >= self._sticky_at:
                index += 1
        return self._queue.members[order[index][3]]

    def __iter__(self) -> Iterator[Pending]:
        return (self[i] for i in range(len(self)))

    def fill_from(self, reasons: dict[str, str], start: int, text: str) -> None:
        """``reasons[key] = text`` for every member at position ``start`` or later (C-speed bulk
        update: a queue can hold thousands of workloads and this runs every cycle)."""
        rest = dict.fromkeys(self._queue.members, text)
        for i in range(start):
            del rest[self[i].key]
        reasons.update(rest)


class QueueManager:
    """The pending workloads sorted into their ClusterQueues' queues, kept across cycles.

    `sync` brings it to a snapshot (see the module docstring) and returns the keys whose
    pending object changed; `QueueState.observe_incremental` then drops set-aside entries as
    Kueue's requeueing rules say, `refresh` re-files the keys whose set-aside status changed,
    and `views` / `write_reasons` give the cycle its queues and the reasons of the workloads
    in no queue.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next `sync` files every pending workload afresh."""
        self._config: tuple[object, ...] | None = None
        self._pending_list: list[Pending] | None = None
        self._by_id: dict[int, Pending] = {}
        """id -> object of every pending workload of the last snapshot (holding them keeps ids unique)."""
        self.objs: dict[str, Pending] = {}
        self._route_cache: dict[tuple[str, str, str | None], tuple[str | None, str]] = {}
        self._route: dict[str, tuple[str | None, str]] = {}
        """key -> (ClusterQueue, "") or (None, rejection reason)."""
        self._status: dict[str, str] = {}
        self._filed: dict[str, tuple[str, SortKey]] = {}
        """Members: key -> (ClusterQueue, sort key)."""
        self._queues: dict[str, _Queue] = {}
        self._blocked: frozenset[str] = frozenset()
        self._backoff: list[tuple[float, str, int]] = []
        """Heap of (not_before, key, id of the Pending) for workloads whose backoff had not expired."""
        self._in_backoff: set[str] = set()
        self._rejected: dict[str, str] = {}
        self._aside: dict[str, str] = {}
        """Set-aside workloads (status ASIDE) -> their reason."""
        self.now = float("-inf")
        self.fresh = True

    # --- bringing it up to date ----------------------------------------------------------------

    def sync(
        self, snapshot: Snapshot, admitted: Mapping[str, object], route: Callable[[Pending], tuple[str | None, str]],
        state: QueueState,
    ) -> set[str] | None:
        """Bring the manager to ``snapshot``: pending objects, backoff expiry, blocked keys.

        ``admitted`` is keyed by the admitted workloads' keys; ``route`` files a workload by its
        queue configuration (`_Cycle.route`). Returns the keys whose pending object changed, or
        None when the manager started afresh (every key is new). Raises `Untrackable` when the
        snapshot holds two pending workloads with one key (the policy then sorts from scratch).
        """
        config = (snapshot.tree, snapshot.cluster_queues, snapshot.local_queues, snapshot.namespace_labels)
        if (
            self._config is None
            or any(a is not b for a, b in zip(config, self._config))
            or snapshot.now < self.now
        ):
            self.reset()
            self._config = config
        self.now = snapshot.now
        changed = self._sync_pending(snapshot.pending, route, state)
        if changed is None:
            self.reset()
            raise Untrackable("two pending workloads with one key")
        started_fresh = self.fresh
        self.fresh = False
        # blocked: pending workloads whose previous admission is still held
        now_blocked = frozenset(admitted.keys() & self.objs.keys())
        if now_blocked != self._blocked:
            moved = now_blocked ^ self._blocked
            self._blocked = now_blocked
            for key in moved:
                self.refile(key, state)
        # backoff that expired
        heap = self._backoff
        while heap and heap[0][0] <= self.now:
            _, key, ident = heapq.heappop(heap)
            p = self.objs.get(key)
            if p is not None and id(p) == ident and key in self._in_backoff:
                self._in_backoff.discard(key)
                self.refile(key, state)
        return None if started_fresh else changed

    def _sync_pending(
        self, pending: list[Pending], route: Callable[[Pending], tuple[str | None, str]], state: QueueState
    ) -> set[str] | None:
        if pending is self._pending_list and len(pending) == len(self._by_id):
            return set()
        current = dict(zip(map(id, pending), pending))
        old = self._by_id
        gone = [old[i] for i in old.keys() - current.keys()]
        new = [current[i] for i in current.keys() - old.keys()]
        changed: set[str] = set()
        for p in gone:
            key = p.key
            if self.objs.get(key) is p:
                del self.objs[key]
                changed.add(key)
        for p in new:
            key = p.key
            self.objs[key] = p
            changed.add(key)
            w = p.workload
            rkey = (w.namespace, w.local_queue, w.cluster_queue)
            found = self._route_cache.get(rkey)
            if found is None:
                found = self._route_cache[rkey] = route(p)
            self._route[key] = found
            if p.not_before > self.now:
                self._in_backoff.add(key)
                heapq.heappush(self._backoff, (p.not_before, key, id(p)))
            else:
                self._in_backoff.discard(key)
        if len(self.objs) != len(pending):
            return None  # two pending objects with one key: the diff cannot be trusted
        self._by_id = current
        self._pending_list = pending
        for key in changed:
            if key not in self.objs:
                self._route.pop(key, None)
                self._in_backoff.discard(key)
            self.refile(key, state)
        return changed

    def refile(self, key: str, state: QueueState) -> None:
        """Put ``key`` where its current conditions say (member of a queue, or a reason)."""
        p = self.objs.get(key)
        if p is None:
            status = None
        elif key in self._blocked:
            status = BLOCKED
        elif key in self._in_backoff:
            status = BACKOFF
        elif self._route[key][0] is None:
            status = REJECTED
        else:
            aside = state.inadmissible.get(key)
            status = ASIDE if aside is not None and aside.token == (p.queued_at, p.requeue_count) else MEMBER
        old = self._status.get(key)
        filed = self._filed.get(key)
        if filed is not None and (status != MEMBER or self.objs.get(key) is not self._queues[filed[0]].members.get(key)):
            self._queues[filed[0]].remove(filed[1])
            if not self._queues[filed[0]].members:
                del self._queues[filed[0]]
            del self._filed[key]
            filed = None
        if old == REJECTED and status != REJECTED:
            del self._rejected[key]
        if old == ASIDE and status != ASIDE:
            del self._aside[key]
        if status is None:
            self._status.pop(key, None)
            return
        self._status[key] = status
        if status == MEMBER and filed is None:
            assert p is not None
            cq = self._route[key][0]
            assert cq is not None
            sk = sort_key(p)
            self._queues.setdefault(cq, _Queue()).add(p, sk)
            self._filed[key] = (cq, sk)
        elif status == REJECTED:
            self._rejected[key] = self._route[key][1]
        elif status == ASIDE:
            self._aside[key] = state.inadmissible[key].reason

    # --- what a cycle reads ----------------------------------------------------------------------

    def views(self, sticky: Mapping[str, tuple[str, tuple[float, int]]]) -> dict[str, QueueView]:
        """Every non-empty queue, the sticky preemptor (if still a member with the same token) first."""
        out: dict[str, QueueView] = {}
        for cq, queue in self._queues.items():
            first: Pending | None = None
            first_key: SortKey | None = None
            stuck = sticky.get(cq)
            if stuck is not None:
                p = queue.members.get(stuck[0])
                if p is not None and (p.queued_at, p.requeue_count) == stuck[1]:
                    first, first_key = p, self._filed[p.key][1]
            out[cq] = QueueView(queue, first, first_key)
        return out

    def write_reasons(self, reasons: dict[str, str]) -> None:
        """The reasons of every pending workload in no queue, as `build_queues` words them."""
        reasons.update(self._aside)
        reasons.update(self._rejected)
        for key in self._in_backoff:
            if key not in self._blocked:
                reasons[key] = backoff_reason(self.objs[key], self.now)
        reasons.update(dict.fromkeys(self._blocked, BLOCKED_REASON))

    def queued(self) -> dict[str, list[str]]:
        """Every queue's keys in order (sticky preemptor not moved first): for checks and tests."""
        return {cq: [k[3] for k in q.order] for cq, q in sorted(self._queues.items())}

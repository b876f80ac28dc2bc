"""What a scheduling cycle decides, and the one interface every policy implements.

`schedule(snapshot) -> Decisions`: admissions (flavor, count, topology domain and, where
the policy places pods itself, the node of every pod), preemptions with Kueue's reasons,
and for every workload left pending a reason a person can act on.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from quotas.preemption import PreemptionReason
from quotas.units import FlavorResource
from scheduler.snapshot import PodSetPlacement, Snapshot


@dataclass(frozen=True)
class Admission:
    """Quota reserved for a pending workload; `podsets[i].nodes` is empty where kube-scheduler places later."""

    key: str
    cluster_queue: str
    podsets: tuple[PodSetPlacement, ...]
    usage: dict[FlavorResource, int]
    borrows: bool = False


@dataclass(frozen=True)
class Preemption:
    """An admitted workload to evict so that `preemptor` can be admitted."""

    key: str
    preemptor: str
    reason: PreemptionReason
    message: str = ""


@dataclass
class CycleStats:
    """How the cycle went, for metrics and benchmark tables."""

    policy: str
    seconds: float = 0.0
    solver_status: str = ""
    objective: float | None = None
    bound: float | None = None
    considered: int = 0
    parked: int = 0
    """Pending workloads left out of the cycle because nothing that could admit them changed."""


@dataclass
class Decisions:
    admissions: list[Admission] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)
    """Reason per workload key left pending this cycle."""
    stats: CycleStats = field(default_factory=lambda: CycleStats(policy=""))
    nominations: dict[str, frozenset[str]] = field(default_factory=dict)
    """Nodes per pending workload to hold for it next cycle (`Pending.nominated_nodes`): set by
    preemptors whose victims are being removed; whoever applies the decisions passes them on to
    the next snapshot and drops the others."""
    again: bool = False
    """The policy wants another cycle at the same instant even if nothing changed (Kueue sets an
    inadmissible BestEffortFIFO head aside, and the next cycle looks at the workload behind it)."""


class Policy(Protocol):
    """A scheduling policy. `places_pods` says whether admissions carry nodes (else kube-scheduler binds)."""

    name: str
    places_pods: bool

    def schedule(self, snapshot: Snapshot) -> Decisions: ...


class collector_paused:  # noqa: N801 - used as a function: ``with collector_paused():``
    """Run a scheduling cycle with Python's cyclic garbage collector paused.

    A cycle allocates hundreds of thousands of short-lived objects, which reference counting
    frees; the cyclic collector, triggered by allocation counts, would meanwhile scan the young
    objects again and again and, every few cycles, every object of the process (snapshots,
    the simulator's history, the operator's caches): 10-25% of a cycle on average and, for a full
    collection, 100-250 ms in one cycle at the benchmark sizes. Paused, the collector runs after
    the cycle instead, between decisions, where its pause delays nothing. Nesting is harmless:
    the state found on entry is restored on exit.

    A class, not a generator: leaving a generator-based context manager allocates, and the
    first allocation after re-enabling runs the collection the cycle put off (2-5 ms for the
    young objects at 128 nodes, a full one now and then), inside the cycle's call again. Here
    `__exit__` only re-enables, so that collection runs at the caller's next allocation, once
    the decisions are out.
    """

    __slots__ = ("_enabled",)

    def __enter__(self) -> None:
        self._enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            gc.enable()


PolicyFactory = Callable[[], Policy]
_POLICIES: dict[str, PolicyFactory] = {}


def register_policy(name: str, factory: PolicyFactory) -> None:
    _POLICIES[name] = factory


def policy_names() -> list[str]:
    _load_builtin()
    return sorted(_POLICIES)


def make_policy(name: str) -> Policy:
    """A fresh policy by name (`tessera`, `kueue`, `bestfit`, `fgd`, `random`); KeyError names the known ones."""
    _load_builtin()
    try:
        return _POLICIES[name]()
    except KeyError:
        raise KeyError(f'unknown policy "{name}" (known: {", ".join(sorted(_POLICIES))})') from None


def _load_builtin() -> None:
    """Import the built-in policy modules, which register themselves (late, as they import this one)."""
    import scheduler.kueue  # noqa: F401
    import scheduler.solver  # noqa: F401

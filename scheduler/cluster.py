"""The physical cluster as plain, mutable data: nodes, what is free on them, and on which GPU.

Why a model of its own instead of the `quotas.kube.Node` manifests: the simulator binds
thousands of pods one at a time and the policies try what-if placements, so the state must
be cheap to change, to undo and to copy; and the solver needs integers. Every amount here
is an int in milli-units (`quotas.units.milli`): 1 CPU = 1000, 1 GPU = 1000, 1 byte = 1000.

GPUs are tracked per physical device (each device holds 1000 milli), because a fractional
request (an openb ``gpu_milli`` share such as 500m) must land on ONE device, and a whole-GPU
request takes whole free devices; a node with two half-used GPUs has 1000m free in total but
cannot run a 1-GPU pod. The accelerator resources handled per device are configurable
(``nvidia.com/gpu`` by default); every other resource is a plain counter.

Each node also carries a `state_id`: an interned number for everything its fit and its
resource scores depend on (allocatable, used, free devices up to order, pod count). Nodes in
the same state behave the same for the same pod, which lets placement memoise filter and
score results across nodes and across pods (the fill experiment places ~8,000 pods on
1,213 nodes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from quotas.kube import Node, Taint
from quotas.units import MILLI, milli

__all__ = [
    "DEFAULT_ACCELERATORS",
    "DEVICE_MILLI",
    "GPU_RESOURCE",
    "NONZERO_CPU",
    "NONZERO_MEMORY",
    "UNLIMITED",
    "Binding",
    "Cluster",
    "NodeInfo",
    "PodRequest",
    "Trial",
    "device_shape",
]

GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_ACCELERATORS: frozenset[str] = frozenset({GPU_RESOURCE})
DEVICE_MILLI = MILLI
"""Capacity of one physical accelerator device in milli-units."""

UNLIMITED = 1 << 40

FIT_MEMO_LIMIT = 200_000
"""Entries of `Cluster.fit_count`'s memo before it starts over (it only saves time)."""
"""Fit count for a pod that requests nothing a node could run out of."""

# kube-scheduler's defaults for containers without requests (pkg/scheduler/util:
# DefaultMilliCPURequest = 100m, DefaultMemoryRequest = 200Mi); used only for scoring.
NONZERO_CPU = 100
NONZERO_MEMORY = 200 * 1024 * 1024 * MILLI


def device_shape(amount: int) -> tuple[int, int] | None:
    """How a request of ``amount`` milli of an accelerator maps onto devices: (devices, milli each).

    Below one device it is a share of ONE device (``500`` -> ``(1, 500)``); whole devices
    are taken whole (``2000`` -> ``(2, 1000)``). Anything else (``1500``) cannot be placed
    on devices and is None.
    """
    if amount <= 0:
        return (0, 0)
    if amount < DEVICE_MILLI:
        return (1, amount)
    if amount % DEVICE_MILLI == 0:
        return (amount // DEVICE_MILLI, DEVICE_MILLI)
    return None


@dataclass(frozen=True, eq=False)
class PodRequest:
    """What one pod requests, in milli-units; immutable and hashable so placement can memoise on it.

    ``items`` holds (resource, amount) pairs sorted by name, without zeros.
    """

    items: tuple[tuple[str, int], ...]
    _map: dict[str, int] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        items = tuple(sorted((name, int(amount)) for name, amount in self.items if amount))
        for name, amount in items:
            if amount < 0:
                raise ValueError(f"request for {name} must not be negative, got {amount}")
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "_map", dict(items))
        object.__setattr__(self, "_hash", hash(items))

    @classmethod
    def of(cls, requests: Mapping[str, int] | None = None, /, **more: int) -> PodRequest:
        """From milli amounts: ``PodRequest.of({"cpu": 4000, "nvidia.com/gpu": 500})``."""
        merged = dict(requests or {})
        merged.update(more)
        return cls(tuple(merged.items()))

    @classmethod
    def from_quantities(cls, requests: Mapping[str, Decimal | int]) -> PodRequest:
        """From Kubernetes quantities (as `quotas.kube.pod_requests` returns them)."""
        return cls(tuple((name, milli(amount)) for name, amount in requests.items()))

    def get(self, resource: str, default: int = 0) -> int:
        return self._map.get(resource, default)

    def __getitem__(self, resource: str) -> int:
        return self._map.get(resource, 0)

    def __contains__(self, resource: object) -> bool:
        return resource in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PodRequest) and self.items == other.items

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={amount}" for name, amount in self.items)
        return f"PodRequest({inner})"

    def as_dict(self) -> dict[str, int]:
        return dict(self._map)

    def times(self, count: int) -> dict[str, int]:
        """Requests of ``count`` such pods."""
        return {name: amount * count for name, amount in self.items}

    def nonzero(self, resource: str) -> int:
        """The request kube-scheduler scores with: 100m CPU / 200Mi memory stand in for none."""
        amount = self._map.get(resource, 0)
        if amount:
            return amount
        if resource == "cpu":
            return NONZERO_CPU
        if resource == "memory":
            return NONZERO_MEMORY
        return 0


@dataclass(frozen=True)
class Binding:
    """One pod bound to one node, with the exact devices it took, so `Cluster.unbind` can undo it."""

    node: str
    pod: PodRequest
    devices: tuple[tuple[str, int, int], ...] = ()
    """(accelerator resource, device index, milli taken) for every device share the pod holds."""


@dataclass(eq=False)
class NodeInfo:
    """One node: static description plus what its bound pods use (mutated only through `Cluster`)."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    allocatable: Mapping[str, int]
    unschedulable: bool = False
    ready: bool = True
    used: dict[str, int] = field(default_factory=dict)
    """Milli used per resource. Replaced, never changed in place (copies share it)."""
    devices: dict[str, list[int]] = field(default_factory=dict)
    """Free milli per physical device, per accelerator resource; index = device id. Replaced,
    never changed in place (copies share it)."""
    pod_count: int = 0
    nonzero_cpu: int = 0
    nonzero_memory: int = 0
    state_id: int = -1
    index: int = -1
    """Position in its cluster (`Cluster.state_array`)."""

    # --- reading -------------------------------------------------------------------------

    @property
    def schedulable(self) -> bool:
        """Takes new pods: not cordoned and Ready (tolerations may still override, see `flavors.node_feasible`)."""
        return not self.unschedulable and self.ready

    @property
    def max_pods(self) -> int | None:
        pods = self.allocatable.get("pods")
        return None if pods is None else pods // MILLI

    def free(self, resource: str) -> int:
        return self.allocatable.get(resource, 0) - self.used.get(resource, 0)

    def free_devices(self, resource: str = GPU_RESOURCE) -> int:
        """Number of completely free devices of an accelerator."""
        return sum(1 for d in self.devices.get(resource, ()) if d == DEVICE_MILLI)

    def device_count(self, resource: str = GPU_RESOURCE) -> int:
        return len(self.devices.get(resource, ()))

    def fit_failure(self, pod: PodRequest) -> str | None:
        """Why ``pod`` does not fit here now (kube-scheduler's NodeResourcesFit wording), or None."""
        max_pods = self.max_pods
        if max_pods is not None and self.pod_count + 1 > max_pods:
            return "Too many pods"
        for resource, amount in pod.items:
            if amount > self.allocatable.get(resource, 0) - self.used.get(resource, 0):
                return f"Insufficient {resource}"
            devices = self.devices.get(resource)
            if devices is None:
                continue
            shape = device_shape(amount)
            if shape is None:
                return f"{resource} request {amount}m is neither a share of one device nor whole devices"
            count, per = shape
            if per < DEVICE_MILLI:
                if not any(d >= per for d in devices):
                    return f"Insufficient {resource}: no single device has {per}m free"
            elif sum(1 for d in devices if d == DEVICE_MILLI) < count:
                return f"Insufficient {resource}: fewer than {count} whole free devices"
        return None

    def fits(self, pod: PodRequest) -> bool:
        return self.fit_failure(pod) is None

    def fit_count(self, pod: PodRequest) -> int:
        """How many more pods like ``pod`` fit here now (resources only; `UNLIMITED` if nothing binds)."""
        n = UNLIMITED
        max_pods = self.max_pods
        if max_pods is not None:
            n = max_pods - self.pod_count
        for resource, amount in pod.items:
            devices = self.devices.get(resource)
            if devices is not None:
                shape = device_shape(amount)
                if shape is None:
                    return 0
                count, per = shape
                if per < DEVICE_MILLI:
                    n = min(n, sum(d // per for d in devices))
                else:
                    n = min(n, sum(1 for d in devices if d == DEVICE_MILLI) // count)
            else:
                n = min(n, self.free(resource) // amount)
            if n <= 0:
                return 0
        return max(n, 0)

    def choose_devices(self, pod: PodRequest, prefer: Mapping[str, int] | None = None) -> tuple[tuple[str, int, int], ...]:
        """The devices a pod takes here: for a share, the device with the least free room that fits
        (or, with ``prefer[resource]`` = a free amount, the first device with exactly that much
        free: how a scorer such as FGD names its choice); for whole devices, the lowest free ids.
        Raises ValueError if the pod does not fit on devices.
        """
        taken: list[tuple[str, int, int]] = []
        for resource, amount in pod.items:
            devices = self.devices.get(resource)
            if devices is None:
                continue
            shape = device_shape(amount)
            if shape is None:
                raise ValueError(f"{resource} request {amount}m cannot be placed on devices")
            count, per = shape
            if per < DEVICE_MILLI:
                want = prefer.get(resource) if prefer else None
                best = -1
                for idx, free in enumerate(devices):
                    if free < per:
                        continue
                    if want is not None:
                        if free == want:
                            best = idx
                            break
                    elif best < 0 or free < devices[best]:
                        best = idx
                if best < 0 and want is not None:  # preference stale: fall back to best fit
                    return self.choose_devices(pod, None)
                if best < 0:
                    raise ValueError(f"no device of {resource} on {self.name} has {per}m free")
                taken.append((resource, best, per))
            else:
                ids = [idx for idx, free in enumerate(devices) if free == DEVICE_MILLI][:count]
                if len(ids) < count:
                    raise ValueError(f"{self.name} has fewer than {count} free {resource} devices")
                taken.extend((resource, idx, DEVICE_MILLI) for idx in ids)
        return tuple(taken)

    def state_key(self) -> tuple[Any, ...]:
        """Everything fit and resource scores depend on; devices as a sorted multiset (interchangeable)."""
        alloc = tuple(sorted(self.allocatable.items()))
        used = tuple(self.used.get(name, 0) for name, _ in alloc)
        devs = tuple(sorted((name, tuple(sorted(frees, reverse=True))) for name, frees in self.devices.items()))
        return (alloc, used, devs, self.pod_count, self.nonzero_cpu, self.nonzero_memory)

    def gpu_summary(self, resource: str = GPU_RESOURCE) -> str:
        """``8 GPUs, 3 free, 1 at 500m`` style text for messages."""
        devices = self.devices.get(resource, [])
        full = sum(1 for d in devices if d == DEVICE_MILLI)
        partial = [d for d in devices if 0 < d < DEVICE_MILLI]
        text = f"{len(devices)} devices, {full} free"
        if partial:
            text += ", partly free: " + " ".join(f"{d}m" for d in partial)
        return text

    def copy(self) -> NodeInfo:
        """A copy sharing every field with this node.

        ``used`` and ``devices`` are never changed in place (`Cluster` replaces them on every
        bind and unbind), so a copy may share them until either side binds. Built without
        ``__init__``: a cluster copies a node the first time it changes one it shares."""
        other = object.__new__(NodeInfo)
        other.__dict__.update(self.__dict__)
        return other


@dataclass
class Trial:
    """Handle of one `Cluster.what_if` block."""

    journal: list[tuple[str, Any]] = field(default_factory=list)
    committed: bool = False

    def commit(self) -> None:
        """Keep what was done inside the block."""
        self.committed = True


def _node_ready(node: Node) -> bool:
    for condition in node.status.conditions:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return True  # no conditions reported (generated manifests): assume Ready


class Cluster:
    """All nodes, by name in manifest order, with bind/unbind and cheap what-if.

    Mutations go through `bind`, `unbind` and `cordon` so that `state_id` and the
    caches stay right. `copy()` gives an independent cluster; `what_if()` rolls back
    everything done inside it, which is cheaper when only a few pods are tried.

    Copies share `NodeInfo` objects until one side changes a node: that side then replaces the
    node with its own copy (copy-on-write; a scheduling cycle copies the whole cluster several
    times and binds on a few nodes). So keep node *names* across binds, not `NodeInfo` objects:
    the object in `nodes` may be another one after a bind.
    """

    def __init__(self, nodes: Iterable[NodeInfo] = (), accelerators: Iterable[str] = DEFAULT_ACCELERATORS) -> None:
        self.accelerators: frozenset[str] = frozenset(accelerators)
        self.nodes: dict[str, NodeInfo] = {}
        self._own: set[str] = set()
        """Nodes whose `NodeInfo` no copy shares: changed in place (the others are copied first)."""
        self._state_ids: dict[tuple[Any, ...], int] = {}
        self._fit_memo: dict[tuple[Any, int], int] = {}
        """`fit_count` by (pod, state id); shared with copies, as the state ids are."""
        self._moves: dict[tuple[Any, ...], int] = {}
        """The state a bind or unbind leads to, by (state id, pod, sign, (resource, free before,
        amount) of each device it takes or gives back): these determine the new state, so most
        binds skip building its key. Shared with copies, as the state ids are."""
        self._journals: list[list[tuple[str, Any]]] = []
        self.cache: dict[Any, Any] = {}
        """Results that depend only on labels, taints and schedulability (cleared when those change)."""
        self.shared: dict[Any, Any] = {}
        """Like `cache`, for results holding no `NodeInfo` (names, counts, structures): shared with
        copies, which makes them last from one scheduling cycle to the next. A cluster that
        changes labels, taints or schedulability starts a new one, leaving its copies theirs."""
        self.version = 0
        """Bumped on every mutation; lets callers cache per-state results."""
        self.releases = 0
        """Bumped whenever capacity may have grown (unbind, uncordon, a node added): a scheduler that
        found some work did not fit knows it still does not while this stays the same."""
        self._state_array = np.zeros(16, dtype=np.int64)
        self._allocated: dict[str, int] = {}
        """Used amounts per resource summed over the nodes, kept by every bind and unbind (a
        simulator samples it after nearly every change)."""
        for node in nodes:
            self.add_node(node)

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_nodes(cls, nodes: Iterable[Node], accelerators: Iterable[str] = DEFAULT_ACCELERATORS) -> Cluster:
        """From `quotas.kube.Node` manifests: labels, taints, unschedulable, Ready and allocatable."""
        accel = frozenset(accelerators)
        infos = []
        for node in nodes:
            name = node.metadata.name
            if not name:
                raise ValueError("a Node without metadata.name")
            infos.append(
                NodeInfo(
                    name=name,
                    labels=dict(node.metadata.labels),
                    taints=tuple(node.spec.taints),
                    allocatable={res: milli(q) for res, q in node.allocatable().items() if q > 0},
                    unschedulable=node.spec.unschedulable,
                    ready=_node_ready(node),
                )
            )
        return cls(infos, accel)

    @staticmethod
    def make_node(
        name: str,
        allocatable: Mapping[str, int],
        labels: Mapping[str, str] | None = None,
        taints: Iterable[Taint] = (),
        unschedulable: bool = False,
        ready: bool = True,
    ) -> NodeInfo:
        """A node from milli amounts (for generators and tests)."""
        return NodeInfo(
            name=name,
            labels=dict(labels or {}),
            taints=tuple(taints),
            allocatable={res: int(v) for res, v in allocatable.items() if v > 0},
            unschedulable=unschedulable,
            ready=ready,
        )

    def add_node(self, node: NodeInfo) -> None:
        if node.name in self.nodes:
            raise ValueError(f"duplicate node {node.name}")
        for resource in self.accelerators:
            if resource in node.allocatable and resource not in node.devices:
                node.devices = {**node.devices, resource: [DEVICE_MILLI] * (node.allocatable[resource] // DEVICE_MILLI)}
                # a node reporting a fraction of a device has only whole devices to give
                node.allocatable = {**node.allocatable, resource: len(node.devices[resource]) * DEVICE_MILLI}
        node.index = len(self.nodes)
        if node.index >= len(self._state_array):
            self._state_array = np.concatenate([self._state_array, np.zeros(len(self._state_array), dtype=np.int64)])
        self.nodes[node.name] = node
        self._own.add(node.name)
        for resource, amount in node.used.items():
            self._allocated[resource] = self._allocated.get(resource, 0) + amount
        self._restate(node)
        self.cache.clear()
        self.shared = {}
        self.version += 1
        self.releases += 1

    # --- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self.nodes.values())

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def node(self, name: str) -> NodeInfo:
        return self.nodes[name]

    def capacity(self, resource: str) -> int:
        return sum(node.allocatable.get(resource, 0) for node in self.nodes.values())

    def allocated(self, resource: str) -> int:
        return self._allocated.get(resource, 0)

    def free(self, resource: str) -> int:
        return self.capacity(resource) - self.allocated(resource)

    def fit_count(self, node: NodeInfo, pod: PodRequest) -> int:
        """``node.fit_count(pod)`` for a node of this cluster, memoised by its state: a state id
        stands for one state in this cluster and all its copies, and schedulers ask the same
        question of the same few states over and over, cycle after cycle."""
        key = (pod.items, node.state_id)
        got = self._fit_memo.get(key)
        if got is None:
            if len(self._fit_memo) >= FIT_MEMO_LIMIT:
                self._fit_memo.clear()
            got = self._fit_memo[key] = node.fit_count(pod)
        return got

    def node_classes(self, names: Iterable[str] | None = None, label_keys: Iterable[str] = ()) -> list[list[str]]:
        """Interchangeable nodes, grouped: same state (allocatable, usage, free devices up to order,
        pod count), same taints and schedulability, same values of ``label_keys`` (e.g. the
        flavor labels and the topology levels above the host). The solver can decide "how many
        pods per class" instead of per node. Classes come in cluster order of their first node.
        """
        keys = tuple(label_keys)
        classes: dict[tuple[Any, ...], list[str]] = {}
        for name in self.nodes if names is None else names:
            node = self.nodes[name]
            key = (
                node.state_id,
                node.unschedulable,
                node.ready,
                tuple((t.key, t.value, t.effect) for t in node.taints),
                tuple(node.labels.get(k) for k in keys),
            )
            classes.setdefault(key, []).append(name)
        return list(classes.values())

    # --- mutation ----------------------------------------------------------------------------

    def bind(self, node_name: str, pod: PodRequest, devices: tuple[tuple[str, int, int], ...] | None = None,
             prefer: Mapping[str, int] | None = None, fits: bool = False) -> Binding:
        """Bind one pod to a node and return the Binding that undoes it.

        ``devices`` pins the exact device shares (as `NodeInfo.choose_devices` returns them);
        otherwise they are chosen (see there; ``prefer`` passes a scorer's device choice).
        Raises ValueError when the pod does not fit: callers filter first, and the cluster
        never goes over capacity. ``fits``: the caller has just learnt that it does (a positive
        `fit_count` of the node's current state), so the check is not repeated.
        """
        node = self.nodes[node_name]
        reason = None if fits else node.fit_failure(pod)
        if reason is not None:
            raise ValueError(f"pod {pod} does not fit on node {node_name}: {reason}")
        if devices is None:
            devices = node.choose_devices(pod, prefer)
        else:
            for resource, idx, amount in devices:
                if node.devices[resource][idx] < amount:
                    raise ValueError(f"device {resource}[{idx}] on {node_name} has less than {amount}m free")
        self._apply(self._writable(node_name), pod, devices, +1)
        binding = Binding(node_name, pod, devices)
        if self._journals:
            self._journals[-1].append(("bind", binding))
        return binding

    def unbind(self, binding: Binding) -> None:
        """Release what ``binding`` took (exactly those devices)."""
        self._apply(self._writable(binding.node), binding.pod, binding.devices, -1)
        self.releases += 1
        if self._journals:
            self._journals[-1].append(("unbind", binding))

    def cordon(self, name: str, unschedulable: bool = True) -> None:
        """Mark a node (un)schedulable, as `kubectl cordon`/`uncordon` do."""
        node = self.nodes[name]
        if node.unschedulable != unschedulable:
            if self._journals:
                self._journals[-1].append(("cordon", (name, node.unschedulable)))
            self._writable(name).unschedulable = unschedulable
            self.cache.clear()
            self.shared = {}
            self.releases += 1
            self.version += 1

    @contextmanager
    def what_if(self) -> Iterator[Trial]:
        """Try binds, unbinds and cordons; all are rolled back when the block exits unless
        ``trial.commit()`` was called. Nested trials roll back into their parent's state."""
        trial = Trial()
        self._journals.append(trial.journal)
        try:
            yield trial
        finally:
            self._journals.pop()
            if trial.committed:
                if self._journals:  # the enclosing trial must be able to undo these too
                    self._journals[-1].extend(trial.journal)
            else:
                saved, self._journals = self._journals, []
                try:
                    for op, arg in reversed(trial.journal):
                        if op == "bind":
                            self.unbind(arg)
                        elif op == "unbind":
                            self.bind(arg.node, arg.pod, arg.devices)
                        else:
                            self.cordon(arg[0], arg[1])
                finally:
                    self._journals = saved

    def copy(self, own_ids: bool = False) -> Cluster:
        """An independent cluster in the same state (node objects, until either side changes one,
        and state ids are shared). ``own_ids``: the copy gets its own state-id table, starting
        as this one, with the memos keyed by those ids (a long-lived cluster whose copies must not
        grow its table)."""
        other = Cluster.__new__(Cluster)
        other.accelerators = self.accelerators
        other.nodes = dict(self.nodes)
        other._own = set()
        self._own = set()
        other._state_array = self._state_array.copy()
        other._state_ids = dict(self._state_ids) if own_ids else self._state_ids
        other._allocated = dict(self._allocated)
        other._fit_memo = dict(self._fit_memo) if own_ids else self._fit_memo
        other._moves = dict(self._moves) if own_ids else self._moves
        other._journals = []
        other.cache = {}
        other.shared = self.shared
        other.version = 0
        other.releases = 0
        return other

    # --- internals ---------------------------------------------------------------------------

    def _writable(self, name: str) -> NodeInfo:
        """The node, made this cluster's own first if a copy shares it."""
        if name in self._own:
            return self.nodes[name]
        node = self.nodes[name] = self.nodes[name].copy()
        self._own.add(name)
        return node

    def _apply(self, node: NodeInfo, pod: PodRequest, devices: tuple[tuple[str, int, int], ...], sign: int) -> None:
        move = (node.state_id, pod.items, sign, tuple((r, node.devices[r][i], a) for r, i, a in devices))
        # new ``used`` and device lists, never changed in place: copies of the node share them
        used = dict(node.used)
        allocated = self._allocated
        for resource, amount in pod.items:
            used[resource] = used.get(resource, 0) + sign * amount
            allocated[resource] = allocated.get(resource, 0) + sign * amount
        node.used = used
        if devices:
            frees = dict(node.devices)
            for resource in {d[0] for d in devices}:
                frees[resource] = list(frees[resource])
            for resource, idx, amount in devices:
                frees[resource][idx] -= sign * amount
            node.devices = frees
        node.pod_count += sign
        node.nonzero_cpu += sign * pod.nonzero("cpu")
        node.nonzero_memory += sign * pod.nonzero("memory")
        sid = self._moves.get(move)
        if sid is None:
            self._restate(node)
            if len(self._moves) >= FIT_MEMO_LIMIT:
                self._moves.clear()
            self._moves[move] = node.state_id
        else:
            node.state_id = sid
            self._state_array[node.index] = sid
        self.version += 1

    def _restate(self, node: NodeInfo) -> None:
        key = node.state_key()
        sid = self._state_ids.get(key)
        if sid is None:
            sid = self._state_ids[key] = len(self._state_ids)
        node.state_id = sid
        self._state_array[node.index] = sid

    def positions(self, names: Sequence[str]) -> np.ndarray:
        """The nodes' positions in `state_array` (`NodeInfo.index`), kept per name tuple in the
        shared cache: reading states through them is one numpy gather, where reading each node's
        `state_id` touches node objects scattered in memory."""
        key = tuple(names)
        memo: dict[tuple[str, ...], np.ndarray] = self.shared.setdefault("node_positions", {})
        got = memo.get(key)
        if got is None:
            if len(memo) > 256:
                memo.clear()
            nodes = self.nodes
            got = memo[key] = np.array([nodes[n].index for n in key], dtype=np.int64)
        return got

    @property
    def state_array(self) -> np.ndarray:
        """`state_id` of every node by `NodeInfo.index` (a view: read it, do not keep it across binds)."""
        return self._state_array[: len(self.nodes)]

"""Fill mode: the FGD paper's packing experiment (``tessera simulate --mode fill``).

Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
Gradient Descent", USENIX ATC'23, and its artifact (hkust-adsl/kubernetes-scheduler-simulator,
``experiments/run_scripts/generate_run_scripts.py``: ``-tune 1.3 -tuneseed 42..51
--shuffle-pod=true``). docs/fill-mode.md describes the experiment and our deviations.

1. **Pod list**: every pod of every workload of the trace (one openb row is one pod; a
   podset of N pods gives N entries), CPU-only pods included, as the artifact does.
2. **Arrivals** (`arrival_order`): with ``random.Random(seed)``, the pod list sorted by name
   is shuffled; then, as the artifact's ``TunePodsByNodeTotalResource`` does, pods drawn with
   replacement from the (name-sorted) list are appended until the next one would push the
   requested GPU (``nvidia.com/gpu`` milli: num_gpu x gpu_milli for openb) over ``inflate`` x
   the cluster's GPU capacity; a trace already above the target instead loses randomly
   chosen pods until it is not. ``sampling="iid"`` instead draws every arrival with
   replacement and shuffles them.
3. **Placement**: arrivals come one at a time (or ``batch`` at a time), never leave, and are
   placed at once on a node or fail: no queueing, no quota (one ClusterQueue covering the
   cluster; physical fit is all that matters).
4. **Measure**: after every decision, the arrived demand and the allocated GPU milli in percent
   of capacity; ``gpu_allocation_at`` is computed from those records exactly as the artifact's
   ``merge_alloc_discrete_0920.py`` does (see `allocation_at`).

Placement rules (``scoring``):

* ``"paper"`` (the default, what the CLI runs): the artifact's scheduler configuration, so
  that fill mode reproduces the paper. ``random``: a uniformly random feasible node and, for
  a GPU share, a uniformly random fitting GPU (``gpuSelMethod: random``). ``bestfit``: the
  artifact's BestFit score (`PaperBestFit`; not kube-scheduler's MostAllocated). ``fgd``:
  FGD with the artifact's integer score ``int(sigmoid(dF/1000) x 100)``
  (`FGDScorer(reference_scoring=True)`) over the trace's task distribution (95% most popular
  (cpu, GPU) shapes, CPU-only pods included). ``kueue``: kube-scheduler's default profile
  (the policy's own scorer). Score ties go to the first node of a seeded random node order,
  the same for every policy of a seed: the artifact renames nodes with a seeded random
  ``%04d-`` prefix and its patched kube-scheduler breaks ties by node name. This tie-break
  is an implicit packing rule; per-pod random tie-breaks lose 1-2 points for bestfit and fgd.
* ``"policy"``: every baseline places exactly as in replay mode, through
  `scheduler.placement.place_podset` with ``policy.scorer_for(snapshot)`` and
  ``policy.rng_for(snapshot)`` (kube-scheduler scoring, random tie-break).
* ``tessera`` (both): the CP-SAT solver is NOT used (``scheduler.solver`` has no batch
  placement API); arrivals are placed by a fragmentation-aware rule (`TesseraFillScorer`):
  FGD's integer score over the trace's (cpu, GPU) task distribution, exactly as ``fgd``, with
  its ties broken by the least growth of `Stranding` (GPU the node's free CPU cannot carry at
  the distribution's CPU per GPU) plus `RepeatFit` (the free GPU each task class could not use
  even if copies of it filled the node), both over the (cpu, memory, GPU) task distribution
  (`RepeatFit` also over the scarce classes the 95% cut leaves out, `repeat_fit_distribution`),
  then by the seeded node order; with ``batch`` > 1, each window of up to 16 arrivals is placed
  in arrival order or GPU-shares-first order (`_batch_rank`), whichever places more GPU, then
  adds less fragmentation.

Speed: filtering is vectorised over nodes (`_NodeArrays`), and a pod shape's score on a node
is memoised under (scorer static key, node state id), so only node states a shape has not
met yet are scored: the default openb trace (~10,800 arrivals, 1,213 nodes) takes 2-8 CPU s per
policy.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from quotas.units import MILLI
from scheduler.affinity import NodeConstraints
from scheduler.cluster import DEVICE_MILLI, GPU_RESOURCE, Cluster, NodeInfo, PodRequest, device_shape
from scheduler.decisions import Policy, make_policy
from scheduler.fgd import FGDScorer, TaskClass, TaskDistribution, node_fragmentation
from scheduler.placement import RandomScorer, Scorer, candidate_nodes, place_podset
from scheduler.snapshot import Pending, Snapshot, build_snapshot
from scheduler.workload import PodSetInfo
from simulator.engine import RunResult, Sample, Setup, WorkloadRecord
from simulator.trace import SimJob

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_INFLATE",
    "DEFAULT_LEVELS",
    "FillConfig",
    "FillPod",
    "FillRun",
    "PaperBestFit",
    "RepeatFit",
    "Stranding",
    "TesseraFillScorer",
    "allocation_at",
    "arrival_order",
    "class_reach",
    "default_levels",
    "pod_list",
    "repeat_fit_distribution",
    "run_fill",
    "run_fill_policies",
]

DEFAULT_INFLATE = 1.3
DEFAULT_BATCH = 1
DEFAULT_LEVELS: tuple[int, ...] = (80, 90, 100, 110, 120, 130)
"""Arrived demand (percent of cluster GPU capacity) at which DESIGN.md reports allocation."""
MAX_SAMPLES = 2000
"""Time-series samples kept per run by default (the metrics use every decision)."""
PAPER_MAX_SPEC_CPU = 128_000
PAPER_MAX_SPEC_GPU = 8_000
"""The artifact's normalisation constants (``MaxSpecCpu``/``MaxSpecGpu``, milli) for BestFit."""

Scoring = Literal["paper", "policy"]
Sampling = Literal["artifact", "iid"]
Progress = Callable[[int, int], None]
"""``progress(arrivals done, arrivals in all)``."""


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FillConfig:
    """How to run the experiment; `validate` raises ValueError naming the CLI option."""

    inflate: float = DEFAULT_INFLATE
    seed: int = 42
    batch: int = DEFAULT_BATCH
    scoring: Scoring = "paper"
    sampling: Sampling = "artifact"
    levels: tuple[int, ...] | None = None
    """Arrived-demand levels for ``gpu_allocation_at``; None: `default_levels`."""
    sample_every: int | None = None
    """Keep a time-series sample every N decisions; None: at most `MAX_SAMPLES` samples."""

    def validate(self) -> FillConfig:
        if not isinstance(self.inflate, (int, float)) or not math.isfinite(self.inflate) or self.inflate <= 0:
            raise ValueError(f"--inflate: must be a number greater than 0, got {self.inflate}")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"--batch: must be an integer of at least 1, got {self.batch}")
        if self.scoring not in ("paper", "policy"):
            raise ValueError(f'scoring must be "paper" or "policy", got "{self.scoring}"')
        if self.sampling not in ("artifact", "iid"):
            raise ValueError(f'sampling must be "artifact" or "iid", got "{self.sampling}"')
        if self.sample_every is not None and self.sample_every < 1:
            raise ValueError(f"sample_every must be at least 1, got {self.sample_every}")
        if self.levels is not None and any(level <= 0 for level in self.levels):
            raise ValueError(f"levels must be positive percentages, got {self.levels}")
        return self

    @property
    def allocation_levels(self) -> tuple[int, ...]:
        return tuple(self.levels) if self.levels is not None else default_levels(self.inflate)


def default_levels(inflate: float) -> tuple[int, ...]:
    """80, 90, ... up to 130 (or further when ``inflate`` > 1.3); 10, 20, ... below 80% targets."""
    top = max(10, int(math.floor(inflate * 100 + 1e-9)) // 10 * 10)
    if top < DEFAULT_LEVELS[0]:
        return tuple(range(10, top + 1, 10))
    return tuple(range(DEFAULT_LEVELS[0], max(top, DEFAULT_LEVELS[-1]) + 1, 10))


# --- the pod list and the arrivals --------------------------------------------------------------


@dataclass(frozen=True)
class FillPod:
    """One pod of the trace's pod list: what the experiment samples and places."""

    name: str
    namespace: str
    queue: str
    workload_type: str
    podset: PodSetInfo
    """The pod's podset with count 1 (requests and node constraints)."""
    source: str = ""

    @property
    def request(self) -> PodRequest:
        return self.podset.requests

    @property
    def constraints(self) -> NodeConstraints:
        return self.podset.constraints

    @property
    def gpu_milli(self) -> int:
        """Requested GPU milli (num_gpu x gpu_milli for openb)."""
        return self.podset.requests.get(GPU_RESOURCE)


def pod_list(jobs: Iterable[SimJob]) -> list[FillPod]:
    """Every pod of every workload, in trace order (podsets of N pods give N entries named ``-podset-i``)."""
    pods: list[FillPod] = []
    for job in jobs:
        workload = job.workload
        single = sum(ps.count for ps in workload.podsets) == 1
        for podset in workload.podsets:
            one = podset if podset.count == 1 and podset.min_count in (None, 1) else PodSetInfo(
                podset.name, 1, podset.requests, constraints=podset.constraints)
            for i in range(podset.count):
                name = workload.name if single else f"{workload.name}-{podset.name}-{i}"
                pods.append(FillPod(name, workload.namespace, workload.local_queue, workload.workload_type, one, job.source))
    return pods


def arrival_order(pods: Sequence[FillPod], capacity_milli: int, inflate: float, seed: int,
                  sampling: Sampling = "artifact") -> list[FillPod]:
    """The arrivals of one seeded run (see the module docstring); the same for every policy.

    Raises ValueError when the cluster has no GPU or no pod requests any (the target cannot
    be reached by sampling).
    """
    if capacity_milli <= 0:
        raise ValueError("the cluster has no nvidia.com/gpu capacity: fill mode packs GPU pods")
    if not pods:
        raise ValueError("the workload holds no pods")
    if not any(p.gpu_milli > 0 for p in pods):
        raise ValueError("no pod of the workload requests nvidia.com/gpu: fill mode cannot reach its demand target")
    rng = random.Random(seed)
    target = inflate * capacity_milli
    base = sorted(pods, key=lambda p: (p.namespace, p.name))
    if sampling == "iid":
        order: list[FillPod] = []
        total = 0
        while True:
            pod = base[rng.randrange(len(base))]
            if total + pod.gpu_milli > target:
                break
            order.append(pod)
            total += pod.gpu_milli
        rng.shuffle(order)
        return order
    order = list(base)
    rng.shuffle(order)
    total = sum(p.gpu_milli for p in order)
    if total > target:  # tune down: drop random pods
        while total > target and order:
            pod = order.pop(rng.randrange(len(order)))
            total -= pod.gpu_milli
    else:  # tune up: append pods sampled with replacement
        while True:
            pod = base[rng.randrange(len(base))]
            if total + pod.gpu_milli > target:
                break
            order.append(pod)
            total += pod.gpu_milli
    return order


# --- the measure -----------------------------------------------------------------------------


def allocation_at(arrived_pct: Sequence[float], allocated_pct: Sequence[float],
                  levels: Iterable[float] = DEFAULT_LEVELS) -> dict[str, float]:
    """Allocation (percent of GPU capacity) when arrived demand reached each level, keys as strings.

    As the artifact's ``merge_alloc_discrete_0920.py``: the mean of the (2-decimal) allocation
    of the records whose arrived demand rounds to the level; if none, of those within one
    point of it. Coarse runs (a few big pods) may have neither: then the allocation right
    after the first record at or beyond the level. Levels never reached are left out. The
    records must be in arrival order (both sequences non-decreasing).
    """
    if len(arrived_pct) != len(allocated_pct):
        raise ValueError("arrived_pct and allocated_pct differ in length")
    rounded = [round(a) for a in arrived_pct]
    allocs = [round(a, 2) for a in allocated_pct]
    out: dict[str, float] = {}
    for level in levels:
        values = [allocs[i] for i, r in enumerate(rounded) if r == level]
        if not values:
            values = [allocs[i] for i, a in enumerate(arrived_pct) if level - 1 <= a <= level + 1]
        if not values:
            values = next(([allocs[i]] for i, a in enumerate(arrived_pct) if a >= level), [])
        if values:
            out[f"{level:g}"] = round(sum(values) / len(values), 2)
    return out


# --- scorers -------------------------------------------------------------------------------


class PaperBestFit(Scorer):
    """The artifact's BestFit score (``plugin/best_fit_score.go``): integer
    ``(1 - 0.5 (cpu_free - cpu_req) / 128 CPU - 0.5 (gpu_free - gpu_req) / 8 GPU) x 100``, where
    gpu_free is the node's free GPU milli over all devices; the least left over wins."""

    name = "PaperBestFit"

    def __init__(self, gpu_resource: str = GPU_RESOURCE) -> None:
        super().__init__()
        self.gpu_resource = gpu_resource

    def score(self, node: NodeInfo, pod: PodRequest) -> float:
        cpu_left = node.free("cpu") - pod.get("cpu")
        gpu_left = sum(node.devices.get(self.gpu_resource, ())) - pod.get(self.gpu_resource)
        return float(int((1.0 - (0.5 * cpu_left / PAPER_MAX_SPEC_CPU + 0.5 * gpu_left / PAPER_MAX_SPEC_GPU)) * 100))


# --- tessera's fill-mode rule ------------------------------------------------------------------

TESSERA_LOOKAHEAD: tuple[str, ...] = ("stranding", "repeat")
"""The measures whose summed growth breaks ties of FGD's integer score for ``tessera`` (then the node
order): ``stranding`` (`Stranding`) and ``repeat`` (`RepeatFit`), both in milli-GPU."""
TESSERA_STRANDING_RESOURCES: tuple[str, ...] = ("cpu",)
"""The resources `Stranding` weighs against free GPU (adding memory measured no better)."""
TESSERA_SCARCE = 0.2
"""`repeat_fit_distribution` adds a GPU task class the 95% popularity cut leaves out when its share of
the GPU demand is at least this fraction of its reach (the share of the GPU capacity that can host it)."""
_MEASURES = ("stranding", "repeat")


def _gpu_classes(dist: TaskDistribution, gpu_resource: str) -> list[TaskClass]:
    """The distribution's task classes that use the accelerator's devices (whole GPUs or a share of one)."""
    return [c for c in dist.classes if c.request.get(gpu_resource) > 0 and device_shape(c.request.get(gpu_resource))]


class Stranding:
    """GPU that a node's CPU (or other resources) cannot carry: ``max(0, g - free_r / rho_r)`` over r.

    ``g`` is the node's free GPU (milli, all devices) and ``rho_r`` the task distribution's mean
    request of r per milli-GPU over its GPU tasks (popularity-weighted: on openb about 10.5 CPU
    per GPU). A node whose free CPU is below ``g x rho_cpu`` will, as typical GPU tasks fill it,
    run out of CPU before its GPUs are taken: that many GPUs are expected to stay stranded. FGD
    sees this only once a task class no longer fits at all.
    """

    def __init__(self, dist: TaskDistribution, gpu_resource: str = GPU_RESOURCE,
                 resources: Sequence[str] = ("cpu",)) -> None:
        classes = _gpu_classes(dist, gpu_resource)
        gpu = sum(c.popularity * c.request.get(gpu_resource) for c in classes)
        rho = {r: sum(c.popularity * c.request.get(r) for c in classes) / gpu for r in resources} if gpu else {}
        self.rho = {r: v for r, v in rho.items() if v > 0}
        """Mean request per milli-GPU of the GPU tasks, per resource they request."""

    def value(self, gpu_free: float, free: Mapping[str, int]) -> float:
        worst = 0.0
        for resource, rho in self.rho.items():
            worst = max(worst, gpu_free - free[resource] / rho)
        return worst


class RepeatFit:
    """Repeat-fit fragmentation of a node: ``sum_m p_m (g - min(g, k_m x gpu_m))`` over the GPU task classes m.

    ``g`` is the node's free GPU and ``k_m`` how many more copies of class m the node could take,
    counting its devices (for a share, ``sum_d floor(free_d / share)``; for whole GPUs,
    ``floor(whole free devices / count)``), its free CPU and memory, and its labels (a class that
    may not run there takes 0): the free GPU class m could not use even if it filled the node
    alone. FGD counts a class's whole free GPU only when not one copy fits, and otherwise only the
    devices too small for it; this also counts what the last copy leaves (a GPU holding two 470m
    shares strands 60m; a node whose CPU carries three more 1-GPU tasks of 11.3 CPU strands its
    other free GPUs). Memoised on (free resources, free devices, classes allowed); vectorised over classes.
    """

    def __init__(self, dist: TaskDistribution, gpu_resource: str = GPU_RESOURCE) -> None:
        self.gpu = gpu_resource
        self.classes = _gpu_classes(dist, gpu_resource)
        self.resources = tuple(sorted({r for c in self.classes for r in c.request if r != gpu_resource}))
        self.popularity = np.array([c.popularity for c in self.classes], dtype=np.float64)
        self.total = float(self.popularity.sum())
        shapes = [device_shape(c.request.get(gpu_resource)) or (1, DEVICE_MILLI) for c in self.classes]
        self.count = np.array([s[0] for s in shapes], dtype=np.int64)
        self.per = np.array([s[1] for s in shapes], dtype=np.int64)
        self.share = self.per < DEVICE_MILLI
        self.request = self.count * self.per
        needs = [np.array([c.request.get(r) for c in self.classes], dtype=np.int64) for r in self.resources]
        self._divisor = [np.maximum(n, 1) for n in needs]
        self._unlimited = [np.where(n > 0, 0, _UNLIMITED_PODS) for n in needs]
        self._by_devices: dict[tuple[int, ...], np.ndarray] = {}
        self._by_free: list[dict[int, np.ndarray]] = [{} for _ in self.resources]
        self._access_ids: dict[bytes, int] = {}
        self._weights: list[np.ndarray] = []
        self._node_access: dict[str, int] = {}
        self._memo: dict[tuple[tuple[int, ...], tuple[int, ...], int], float] = {}

    def access(self, node: NodeInfo) -> int:
        """Interned id of which classes may run on the node (labels, taints)."""
        found = self._node_access.get(node.name)
        if found is None:
            allowed = np.array([c.constraints.unconstrained or (c.constraints.matches_labels(node.labels, node.name)
                                                                and c.constraints.tolerates(node.taints))
                                for c in self.classes], dtype=bool)
            found = self._access_ids.setdefault(allowed.tobytes(), len(self._access_ids))
            if found == len(self._weights):
                self._weights.append(self.popularity * allowed)
            self._node_access[node.name] = found
        return found

    def value(self, free: tuple[int, ...], devices: tuple[int, ...], access: int) -> float:
        """The measure for free amounts of `resources`, free device amounts (descending) and an `access` id."""
        key = (free, devices, access)
        found = self._memo.get(key)
        if found is not None:
            return found
        g = sum(devices)
        value = 0.0
        if g and len(self.classes):
            k = self._by_devices.get(devices)
            if k is None:
                dev = np.array(devices, dtype=np.int64)
                by_share = (dev[None, :] // self.per[:, None]).sum(axis=1)
                by_whole = int((dev == DEVICE_MILLI).sum()) // self.count
                k = self._by_devices[devices] = np.where(self.share, by_share, by_whole)
            for j, have in enumerate(free):
                cache = self._by_free[j]
                limit = cache.get(have)
                if limit is None:
                    limit = cache[have] = max(have, 0) // self._divisor[j] + self._unlimited[j]
                k = np.minimum(k, limit)
            value = float(g * self.total - self._weights[access] @ np.minimum(k * self.request, g))
        if len(self._memo) > 1_000_000:
            self._memo.clear()
            self._by_devices.clear()
            for cache in self._by_free:
                cache.clear()
        self._memo[key] = value
        return value

    def of(self, node: NodeInfo) -> float:
        """The measure of a node as it is."""
        free = tuple(node.free(r) for r in self.resources)
        return self.value(free, tuple(sorted(node.devices.get(self.gpu, ()), reverse=True)), self.access(node))


def class_reach(task: TaskClass, nodes: Sequence[NodeInfo], gpu_resource: str = GPU_RESOURCE) -> float:
    """The share of the nodes' GPU capacity on nodes where one copy of ``task`` fits as the nodes
    are now (on an empty cluster: where it could ever run), labels and taints included."""
    total = sum(node.allocatable.get(gpu_resource, 0) for node in nodes)
    if not total:
        return 0.0
    constraints = task.constraints
    reach = sum(node.allocatable.get(gpu_resource, 0) for node in nodes
                if (constraints.unconstrained or (constraints.matches_labels(node.labels, node.name)
                                                  and constraints.tolerates(node.taints)))
                and node.fits(task.request))
    return reach / total


def repeat_fit_distribution(tasks: Iterable[tuple[PodRequest, NodeConstraints]], nodes: Sequence[NodeInfo],
                            gpu_resource: str = GPU_RESOURCE, popularity_threshold: float = 0.95,
                            scarce: float = TESSERA_SCARCE) -> TaskDistribution:
    """The task classes `RepeatFit` weighs for ``tessera``: the (cpu, memory, GPU) shapes the popularity
    cut keeps, plus the scarce GPU classes it leaves out, over ``nodes`` as they are (an empty cluster).

    A class is scarce when its share of the GPU demand (``p x gpu / mean gpu per task``, ``p`` its
    share of all tasks) is at least ``scarce`` x its `class_reach`: few nodes can host it, and it needs
    a fair part of them (on openb's ``multigpu40``, 8-GPU tasks of 120 CPU: 0.2% of the pods each, 3%
    of the GPU demand, hostable only on the 39 nodes of 128 CPU, 5% of the GPUs). The kept classes weigh
    their popularity within the cut, as before; a scarce class ``p / reach`` on the same scale: its
    demand on the capacity that can serve it. A class that fits no node is left out. Without scarce
    classes this is the cut itself.
    """
    tasks = list(tasks)
    full = TaskDistribution.from_requests(tasks, popularity_threshold=1.0, gpu_resource=gpu_resource)
    cut = TaskDistribution.from_requests(tasks, popularity_threshold=popularity_threshold, gpu_resource=gpu_resource)
    kept = {(c.request, c.constraints) for c in cut.classes}
    covered = sum(c.popularity for c in full.classes if (c.request, c.constraints) in kept)
    mean_gpu = sum(c.popularity * c.request.get(gpu_resource) for c in full.classes)
    classes = list(cut.classes)
    for c in full.classes:
        gpu = c.request.get(gpu_resource)
        if (c.request, c.constraints) in kept or not gpu or not mean_gpu:
            continue
        reach = class_reach(c, nodes, gpu_resource)
        if reach > 0 and c.popularity * gpu / mean_gpu >= scarce * reach:
            classes.append(TaskClass(c.request, c.popularity / covered / reach, c.constraints))
    return TaskDistribution(tuple(classes))


class TesseraFillScorer(FGDScorer):
    """tessera's fill-mode rule: FGD's integer score (`evaluate`, as ``fgd`` scores), and `tie_breaks`.

    Among the nodes with the best score, the least `growth` of the lookahead measures (`Stranding`
    plus `RepeatFit`, milli-GPU, rounded to 1 milli) when the pod lands there (a share on the
    device FGD chose) wins; then the first in node order. ``dist`` is FGD's task distribution
    (over CPU and GPU, as ``fgd``); ``lookahead`` the one the measures use (CPU, memory and GPU);
    ``repeat`` the one `RepeatFit` uses if not ``lookahead`` (`repeat_fit_distribution` in fill runs).
    """

    name = "TesseraFill"

    def __init__(self, dist: TaskDistribution, lookahead: TaskDistribution | None = None,
                 gpu_resource: str = GPU_RESOURCE, measures: Sequence[str] = TESSERA_LOOKAHEAD,
                 stranding_resources: Sequence[str] = TESSERA_STRANDING_RESOURCES,
                 repeat: TaskDistribution | None = None) -> None:
        super().__init__(dist, gpu_resource, reference_scoring=True)
        unknown = [m for m in measures if m not in _MEASURES]
        if unknown:
            raise ValueError(f"lookahead measures must be among {_MEASURES}, got {tuple(measures)}")
        self.measures = tuple(measures)
        lookahead = lookahead or dist
        self.stranding = Stranding(lookahead, gpu_resource, stranding_resources)
        self.repeat = RepeatFit(repeat if repeat is not None else lookahead, gpu_resource)

    def devices_after(self, node: NodeInfo, pod: PodRequest, prefer: Mapping[str, int] | None) -> list[int]:
        """The node's free device amounts once ``pod`` is bound with ``prefer`` (the devices `Cluster.bind` takes)."""
        devices = list(node.devices.get(self.gpu_resource, ()))
        if pod.get(self.gpu_resource):
            for resource, index, amount in node.choose_devices(pod, prefer):
                if resource == self.gpu_resource:
                    devices[index] -= amount
        return devices

    def stranding_growth(self, node: NodeInfo, pod: PodRequest) -> float:
        """How much `Stranding` grows (milli-GPU) if ``pod`` lands on ``node`` (the device does not matter)."""
        gpu = sum(node.devices.get(self.gpu_resource, ()))
        free = {r: node.free(r) for r in self.stranding.rho}
        left = {r: amount - pod.get(r) for r, amount in free.items()}
        return self.stranding.value(gpu - pod.get(self.gpu_resource), left) - self.stranding.value(gpu, free)

    def repeat_growth(self, node: NodeInfo, pod: PodRequest, prefer: Mapping[str, int] | None = None) -> float:
        """How much `RepeatFit` grows (milli-GPU) if ``pod`` lands on ``node`` (a share on the device ``prefer`` names)."""
        model = self.repeat
        access = model.access(node)
        free = tuple(node.free(r) for r in model.resources)
        left = tuple(amount - pod.get(r) for amount, r in zip(free, model.resources, strict=True))
        after = tuple(sorted(self.devices_after(node, pod, prefer), reverse=True))
        return model.value(left, after, access) - model.of(node)

    def growth(self, node: NodeInfo, pod: PodRequest, prefer: Mapping[str, int] | None = None) -> float:
        """The summed growth of the lookahead measures if ``pod`` lands on ``node``."""
        total = 0.0
        if "stranding" in self.measures:
            total += self.stranding_growth(node, pod)
        if "repeat" in self.measures:
            total += self.repeat_growth(node, pod, prefer)
        return total

    def tie_break(self, node: NodeInfo, pod: PodRequest, prefer: Mapping[str, int] | None = None) -> float:
        """Higher is better: minus `growth`, rounded to 1 milli-GPU (so near-equal growths tie and go to node order)."""
        return -float(round(self.growth(node, pod, prefer)))

    @property
    def tie_breaks(self) -> tuple[Callable[[NodeInfo, PodRequest, Mapping[str, int] | None], float], ...]:
        """The stages that break ties of `evaluate` (`FillRun` evaluates them only for the tied nodes)."""
        return (self.tie_break,) if self.measures else ()


def _distribution(pods: Sequence[FillPod], resources: Sequence[str] | None) -> TaskDistribution:
    return TaskDistribution.from_requests(((p.request, p.constraints) for p in pods), resources=resources)


# --- one run ---------------------------------------------------------------------------------


@dataclass
class _Outcome:
    node: str | None
    reason: str = ""


_NEG_INF = float("-inf")
_MEMO_LIMIT = 25_000_000
"""Memoised scores kept at most (floats over all pod shapes, 200 MB)."""
_UNLIMITED_PODS = 1 << 40
TESSERA_WINDOW = 16
"""tessera orders a batch window by window, this many consecutive arrivals each (on openb, windows
of 8, 16 and 32 gain 0.20, 0.30 and 0.25 points over fgd at 130%; a whole 64-arrival batch at once
loses 0.26)."""


class _LiveNodes(Sequence[NodeInfo]):
    """Nodes by position, looked up in the cluster's mapping on every read: a cluster replaces a
    node's object when it first changes a node it shares with a copy (see `Cluster`)."""

    def __init__(self, by_name: Mapping[str, NodeInfo], names: Sequence[str]) -> None:
        self._by_name = by_name
        self._names = list(names)

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i: int) -> NodeInfo:  # type: ignore[override]
        return self._by_name[self._names[i]]


class _NodeArrays:
    """What filtering needs of every node, as numpy vectors in the run's node order.

    Free amount per requested resource, and per accelerator the largest free share of one
    device and the number of whole free devices, and the room left under the pods limit:
    enough to decide `NodeInfo.fit_failure` for all nodes at once (`mask`), with the same
    checks in the same order (`reasons`). Plus each node's memo key: an int standing for
    (scorer static key, node state id), under which a pod shape's score is memoised. After a
    bind only that node's entries are refreshed (`update`).
    """

    def __init__(self, nodes: _LiveNodes, accelerators: Iterable[str],
                 static_key: Callable[[NodeInfo], Hashable]) -> None:
        self.nodes = nodes
        self.position = {n.name: i for i, n in enumerate(self.nodes)}
        n = len(self.nodes)
        self.free: dict[str, np.ndarray] = {}
        self.accelerators = frozenset(accelerators)
        self.device_max: dict[str, np.ndarray] = {}
        self.device_full: dict[str, np.ndarray] = {}
        for resource in sorted(self.accelerators):
            self.device_max[resource] = np.zeros(n, dtype=np.int64)
            self.device_full[resource] = np.zeros(n, dtype=np.int64)
        self.pods_left = np.zeros(n, dtype=np.int64)
        self.static = [static_key(node) for node in self.nodes]
        self.key = np.zeros(n, dtype=np.int64)
        self._key_ids: dict[tuple[Hashable, int], int] = {}
        for i in range(n):
            self.update(i)

    def intern(self, static: Hashable, state_id: int) -> int:
        key = (static, state_id)
        found = self._key_ids.get(key)
        if found is None:
            found = self._key_ids[key] = len(self._key_ids)
        return found

    @property
    def keys_seen(self) -> int:
        return len(self._key_ids)

    def _free_of(self, resource: str) -> np.ndarray:
        found = self.free.get(resource)
        if found is None:
            found = self.free[resource] = np.array(
                [node.allocatable.get(resource, 0) - node.used.get(resource, 0) for node in self.nodes], dtype=np.int64)
        return found

    def update(self, i: int) -> None:
        node = self.nodes[i]
        for resource, free in self.free.items():
            free[i] = node.allocatable.get(resource, 0) - node.used.get(resource, 0)
        for resource in self.device_max:
            devices = node.devices.get(resource)
            self.device_max[resource][i] = max(devices) if devices else 0
            self.device_full[resource][i] = sum(1 for d in devices if d == DEVICE_MILLI) if devices else 0
        limit = node.max_pods
        self.pods_left[i] = _UNLIMITED_PODS if limit is None else limit - node.pod_count
        self.key[i] = self.intern(self.static[i], node.state_id)

    def _checks(self, request: PodRequest) -> Iterator[tuple[np.ndarray, str]]:
        """(nodes that fail, message) per check, in `NodeInfo.fit_failure`'s order (messages alike)."""
        yield self.pods_left < 1, "Too many pods"
        for resource, amount in request.items:
            yield self._free_of(resource) < amount, f"Insufficient {resource}"
            if resource not in self.accelerators:
                continue
            shape = device_shape(amount)
            if shape is None:
                yield (np.ones(len(self.nodes), dtype=bool),
                       f"{resource} request {amount}m is neither a share of one device nor whole devices")
                continue
            count, per = shape
            if per < DEVICE_MILLI:
                yield self.device_max[resource] < per, f"Insufficient {resource}: no single device has {per}m free"
            else:
                yield self.device_full[resource] < count, f"Insufficient {resource}: fewer than {count} whole free devices"

    def mask(self, request: PodRequest) -> np.ndarray:
        """Nodes the pod fits on now (resources, devices, pods limit)."""
        fits = self.pods_left >= 1
        for resource, amount in request.items:
            fits &= self._free_of(resource) >= amount
            if resource in self.accelerators:
                shape = device_shape(amount)
                if shape is None:
                    fits[:] = False
                elif shape[1] < DEVICE_MILLI:
                    fits &= self.device_max[resource] >= shape[1]
                else:
                    fits &= self.device_full[resource] >= shape[0]
        return fits

    def reasons(self, request: PodRequest, among: np.ndarray) -> Counter[str]:
        """For the nodes ``among`` (indices), how many fail each check first."""
        left = np.zeros(len(self.nodes), dtype=bool)
        left[among] = True
        out: Counter[str] = Counter()
        for failing, message in self._checks(request):
            hit = left & failing
            count = int(hit.sum())
            if count:
                out[message] += count
                left &= ~hit
        if left.any():
            out["did not fit"] += int(left.sum())
        return out


@dataclass
class FillRun:
    """One policy over one arrival sequence; `run()` returns the `RunResult`."""

    setup: Setup
    policy_name: str
    config: FillConfig = field(default_factory=FillConfig)
    pods: list[FillPod] | None = None
    """The trace's pod list (default: `pod_list` of ``setup.jobs``)."""
    arrivals: list[FillPod] | None = None
    """The arrival sequence (default: `arrival_order` from the config); shared across policies."""
    progress: Progress | None = None

    def __post_init__(self) -> None:
        self.config.validate()
        self.cluster = Cluster.from_nodes(self.setup.nodes)
        self.capacity = self.cluster.capacity(GPU_RESOURCE)
        if self.pods is None:
            self.pods = pod_list(self.setup.jobs)
        if self.arrivals is None:
            self.arrivals = arrival_order(self.pods, self.capacity, self.config.inflate, self.config.seed, self.config.sampling)
        self.policy: Policy = make_policy(self.policy_name)
        self.snapshot = self._snapshot()
        self.rng = self._rng()
        self.node_rank = _node_rank(self.cluster, self.config.seed)
        self.scorer, self.tie_break = self._placement()
        self._arrays: _NodeArrays | None = None
        self._pools: dict[NodeConstraints, np.ndarray] = {}
        self._scores: dict[PodRequest, tuple[np.ndarray, dict[int, Any]]] = {}
        self._tie_breaks: tuple[Callable[[NodeInfo, PodRequest, Any], float], ...] = getattr(self.scorer, "tie_breaks", ())
        """Stages that break ties of the score (tessera), each with its memo table."""
        self._tie_scores: list[dict[PodRequest, tuple[np.ndarray, dict[int, Any]]]] = [{} for _ in self._tie_breaks]
        self._memo_floats = 0
        self._frag_dist: TaskDistribution | None = None
        self._frag_memo: dict[int, float] = {}
        queues = {(q.namespace, q.name): q.spec.cluster_queue for q in self.setup.local_queues}
        self._cq = queues
        flavors = [f.name for f in self.setup.flavors]
        self._flavor = flavors[0] if len(flavors) == 1 else None

    # --- setup ---------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        """A snapshot for ``scorer_for``/``rng_for``: the trace's workloads pending (FGD's
        distribution), the run's seed; admission by quota plays no part in fill mode."""
        return build_snapshot(
            now=0.0,
            cluster=self.cluster,
            cluster_queues=self.setup.cluster_queues,
            cohorts=self.setup.cohorts,
            flavors=self.setup.flavors,
            local_queues=self.setup.local_queues,
            pending=[Pending(job.workload, job.submit_at) for job in self.setup.jobs],
            topologies=self.setup.topologies,
            config=self.setup.config,
            seed=self.config.seed,
        )

    def _rng(self) -> random.Random:
        rng_for = getattr(self.policy, "rng_for", None)
        return rng_for(self.snapshot) if rng_for is not None else random.Random(f"{self.policy_name}/{self.config.seed}")

    def _placement(self) -> tuple[Scorer, str]:
        """(scorer, tie-break): "order" (first best node in the seeded node order), "uniform" (a random
        feasible node), "policy" (`place_podset`: kube-scheduler's random tie-break)."""
        name = self.policy_name
        assert self.pods is not None
        if name == "tessera":
            repeat = repeat_fit_distribution(((p.request, p.constraints) for p in self.pods), list(self.cluster))
            return TesseraFillScorer(_distribution(self.pods, ("cpu", GPU_RESOURCE)), _distribution(self.pods, None),
                                     repeat=repeat), "order"
        scorer_for = getattr(self.policy, "scorer_for", None)
        if self.config.scoring == "policy":
            if scorer_for is None:
                raise ValueError(f"policy {name} has no kube-scheduler scorer")
            return scorer_for(self.snapshot), "policy"
        if name == "random":
            return RandomScorer(), "uniform"
        if name == "bestfit":
            return PaperBestFit(), "order"
        if name == "fgd":
            return FGDScorer(_distribution(self.pods, ("cpu", GPU_RESOURCE)), reference_scoring=True), "order"
        if scorer_for is None:
            raise ValueError(f"policy {name} has no kube-scheduler scorer")
        return scorer_for(self.snapshot), "order"

    # --- placing -------------------------------------------------------------------------------

    @property
    def arrays(self) -> _NodeArrays:
        if self._arrays is None:
            names = sorted(self.cluster.nodes, key=self.node_rank.__getitem__)
            self._arrays = _NodeArrays(_LiveNodes(self.cluster.nodes, names), self.cluster.accelerators, self.scorer.static_key)
        return self._arrays

    def _pool(self, constraints: NodeConstraints) -> np.ndarray:
        """Indices (in node order) of the nodes the constraints allow (labels, taints, schedulable)."""
        pool = self._pools.get(constraints)
        if pool is None:
            position = self.arrays.position
            pool = self._pools[constraints] = np.array(
                sorted(position[n.name] for n in candidate_nodes(self.cluster, constraints)), dtype=np.int64)
        return pool

    def _place(self, pod: FillPod) -> _Outcome:
        if self.tie_break == "policy":
            result = place_podset(self.cluster, pod.podset, None, self.scorer, self.rng, count=1)
            return _Outcome(result.nodes[0]) if result else _Outcome(None, result.reason or "does not fit")
        request = pod.request
        arrays = self.arrays
        pool = self._pool(pod.constraints)
        fits = arrays.mask(request)[pool]
        feasible = np.flatnonzero(fits)
        if not len(feasible):
            return _Outcome(None, self._why_not(request, pool))
        prefer = None
        if self.tie_break == "uniform":
            chosen = int(pool[feasible[self.rng.randrange(len(feasible))]]) if len(feasible) > 1 else int(pool[feasible[0]])
        else:
            keys = arrays.key[pool]
            scores, prefs = self._memo(request, arrays.keys_seen)
            values = scores[keys]
            unknown = np.flatnonzero(np.isnan(values) & fits)
            for j in unknown:
                key = int(keys[j])
                if np.isnan(scores[key]):
                    raw, pref = self.scorer.evaluate(arrays.nodes[int(pool[j])], request)
                    scores[key] = float(raw)
                    prefs[key] = pref
                values[j] = scores[key]
            values[~fits] = _NEG_INF
            best = int(np.argmax(values))  # the first in node order among the best scores
            if self._tie_breaks:
                best = self._break_tie(request, pool, keys, values, best, prefs)
            chosen = int(pool[best])
            prefer = prefs.get(int(keys[best]))
        node = arrays.nodes[chosen]
        devices = self._random_share(node, request) if self.tie_break == "uniform" else None
        self.cluster.bind(node.name, request, devices=devices, prefer=prefer)
        arrays.update(chosen)
        return _Outcome(node.name)

    def _break_tie(self, request: PodRequest, pool: np.ndarray, keys: np.ndarray, values: np.ndarray, best: int,
                   prefs: dict[int, Any]) -> int:
        """Among the nodes with the best score, the first in node order that is best on the scorer's
        tie-break stages, one stage after the other (each memoised like the scores, and evaluated only
        for the nodes still tied)."""
        tied = np.flatnonzero(values == values[best])
        nodes = self.arrays.nodes
        for stage, table in zip(self._tie_breaks, self._tie_scores, strict=True):
            if len(tied) < 2:
                break
            seconds, _ = self._memo(request, self.arrays.keys_seen, table)
            tied_keys = keys[tied]
            second = seconds[tied_keys]
            unknown = np.flatnonzero(np.isnan(second))
            if len(unknown):
                for j, key, node in zip(unknown.tolist(), tied_keys[unknown].tolist(), pool[tied[unknown]].tolist(), strict=True):
                    value = seconds[key]
                    if value != value:  # NaN: not evaluated yet (two tied nodes may share a memo key)
                        value = seconds[key] = stage(nodes[node], request, prefs.get(key))
                    second[j] = value
            tied = tied[second == second.max()]
        return int(tied[0])

    def _memo(self, request: PodRequest, size: int,
              table: dict[PodRequest, tuple[np.ndarray, dict[int, Any]]] | None = None) -> tuple[np.ndarray, dict[int, Any]]:
        """Score per memo key (NaN: not evaluated yet) and the scorer's device preference, for one pod shape."""
        if table is None:
            table = self._scores
        found = table.get(request)
        if found is not None and len(found[0]) >= size:
            return found
        grown = np.full(max(size * 2, 1024), np.nan)
        self._memo_floats += len(grown) - (len(found[0]) if found is not None else 0)
        if self._memo_floats > _MEMO_LIMIT:  # bound the memory: forget every shape's scores
            self._scores.clear()
            for tie_table in self._tie_scores:
                tie_table.clear()
            self._memo_floats = len(grown)
            found = None
        prefs: dict[int, Any] = {}
        if found is not None:
            grown[: len(found[0])] = found[0]
            prefs = found[1]
        found = table[request] = (grown, prefs)
        return found

    def _random_share(self, node: NodeInfo, request: PodRequest) -> tuple[tuple[str, int, int], ...] | None:
        """A GPU share on a uniformly random fitting device (the artifact's ``gpuSelMethod: random``)."""
        amount = request.get(GPU_RESOURCE)
        shape = device_shape(amount)
        if not amount or shape is None or shape[1] >= DEVICE_MILLI:
            return None
        fitting = [i for i, free in enumerate(node.devices.get(GPU_RESOURCE, ())) if free >= amount]
        return ((GPU_RESOURCE, fitting[self.rng.randrange(len(fitting))], amount),)

    def _why_not(self, request: PodRequest, pool: np.ndarray) -> str:
        """kube-scheduler's ``0/N nodes are available: ...`` (the first failing check of every node)."""
        reasons = self.arrays.reasons(request, pool)
        excluded = len(self.cluster) - len(pool)
        if excluded:
            reasons["node(s) didn't match Pod's node affinity/selector, or had untolerated taints"] += excluded
        text = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"0/{len(self.cluster)} nodes are available: {text}"

    def _decide(self, batch: Sequence[FillPod]) -> list[_Outcome]:
        """Place one batch: the baselines in arrival order (kube-scheduler's FIFO); tessera, per
        window of `TESSERA_WINDOW` arrivals, tries arrival order and `_batch_rank` order and keeps
        the one that places more GPU, then adds less fragmentation (FGD's measure, summed over
        the nodes it changed)."""
        arrival = list(range(len(batch)))
        if self.policy_name != "tessera" or len(batch) < 2:
            return self._place_in(batch, arrival)
        if len(batch) > TESSERA_WINDOW:
            return [o for start in range(0, len(batch), TESSERA_WINDOW)
                    for o in self._decide(batch[start:start + TESSERA_WINDOW])]
        ranked = sorted(arrival, key=lambda i: _batch_rank(batch[i], i))
        if ranked == arrival:
            return self._place_in(batch, arrival)
        trials = []
        for order in (arrival, ranked):
            with self.cluster.what_if():
                outcomes = self._place_in(batch, order)
                touched = {o.node for o in outcomes if o.node is not None}
                placed = sum(pod.gpu_milli for pod, o in zip(batch, outcomes, strict=True) if o.node is not None)
                after = self._fragmentation(touched)
            self._refresh(touched)  # the trial was rolled back
            trials.append((placed, self._fragmentation(touched) - after))  # more GPU, then less fragmentation added
        best = arrival if trials[0] >= trials[1] else ranked
        return self._place_in(batch, best)

    def _place_in(self, batch: Sequence[FillPod], order: Sequence[int]) -> list[_Outcome]:
        outcomes: list[_Outcome | None] = [None] * len(batch)
        for i in order:
            outcomes[i] = self._place(batch[i])
        return outcomes  # type: ignore[return-value]

    def _refresh(self, names: Iterable[str]) -> None:
        for name in names:
            self.arrays.update(self.arrays.position[name])

    def _fragmentation(self, names: Iterable[str]) -> float:
        """FGD's fragmentation (milli-GPU) of these nodes against the trace's task distribution."""
        if self._frag_dist is None:
            assert self.pods is not None
            self._frag_dist = _distribution(self.pods, None)
        total = 0.0
        for name in names:
            i = self.arrays.position[name]
            key = int(self.arrays.key[i])
            value = self._frag_memo.get(key)
            if value is None:
                value = self._frag_memo[key] = node_fragmentation(self.arrays.nodes[i], self._frag_dist)
            total += value
        return total

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> RunResult:
        assert self.arrivals is not None
        started = time.perf_counter()
        arrivals = self.arrivals
        capacity = self.capacity
        batch_size = self.config.batch
        batches = math.ceil(len(arrivals) / batch_size)
        every = self.config.sample_every or max(1, math.ceil(batches / MAX_SAMPLES))
        records: list[WorkloadRecord] = []
        samples = [Sample(at=0.0, allocated_gpus=0.0, waiting=0, running=0, usage_by_queue={})]
        cycle_seconds: list[float] = []
        arrived_pct: list[float] = []
        allocated_pct: list[float] = []
        arrived = allocated = failed_milli = 0
        placed = failed = 0
        by_queue: dict[str, int] = {}
        for b, start in enumerate(range(0, len(arrivals), batch_size)):
            chunk = arrivals[start:start + batch_size]
            t0 = time.perf_counter()
            outcomes = self._decide(chunk)
            cycle_seconds.append(time.perf_counter() - t0)
            decided_at = float(start + len(chunk) - 1)
            for offset, (pod, outcome) in enumerate(zip(chunk, outcomes, strict=True)):
                seq = start + offset
                cq = self._cq.get((pod.namespace, pod.queue))
                record = WorkloadRecord(
                    name=f"{pod.name}-{seq}",
                    namespace=pod.namespace,
                    queue=pod.queue,
                    submitted_at=float(seq),
                    cluster_queue=cq,
                    workload_type=pod.workload_type,
                    gpus=pod.gpu_milli / MILLI,
                )
                arrived += pod.gpu_milli
                if outcome.node is not None:
                    record.admitted_at = record.started_at = decided_at
                    record.flavor = self._flavor
                    record.nodes = [outcome.node]
                    allocated += pod.gpu_milli
                    placed += 1
                    key = cq or "(no ClusterQueue)"
                    by_queue[key] = by_queue.get(key, 0) + pod.gpu_milli
                else:
                    record.pending_reason = f"not placed on arrival: {outcome.reason}"
                    failed += 1
                    failed_milli += pod.gpu_milli
                records.append(record)
            arrived_pct.append(100.0 * arrived / capacity)
            allocated_pct.append(100.0 * allocated / capacity)
            if (b + 1) % every == 0 or b == batches - 1:
                samples.append(Sample(at=arrived_pct[-1], allocated_gpus=allocated / MILLI, waiting=failed,
                                      running=placed, usage_by_queue={q: v / MILLI for q, v in by_queue.items()}))
            if self.progress is not None and ((b + 1) % 64 == 0 or b == batches - 1):
                self.progress(start + len(chunk), len(arrivals))
        wall = time.perf_counter() - started
        return RunResult(self.policy_name, self._metrics(records, cycle_seconds, arrived_pct, allocated_pct,
                                                         arrived, allocated, failed_milli, wall),
                         records, samples, cycle_seconds, capacity / MILLI)

    def _metrics(self, records: list[WorkloadRecord], cycle_seconds: list[float], arrived_pct: list[float],
                 allocated_pct: list[float], arrived: int, allocated: int, failed_milli: int, wall: float) -> dict[str, Any]:
        capacity = self.capacity
        cycles_ms = [s * 1000 for s in cycle_seconds]
        waits = [r.started_at - r.submitted_at for r in records if r.started_at is not None]
        placed = sum(1 for r in records if r.started_at is not None)
        utilization = allocated / capacity
        return {
            "gpu_allocation_at": allocation_at(arrived_pct, allocated_pct, self.config.allocation_levels),
            "unallocated_gpus": round((capacity - allocated) / MILLI, 3),
            "gpu_utilization": utilization,
            "gpu_utilization_busy": utilization,
            "workloads": len(records),
            "admitted": placed,
            "finished": 0,
            "never_admitted": len(records) - placed,
            "preemptions": 0,
            "evictions": 0,
            "mean_wait_s": sum(waits) / len(waits) if waits else 0.0,
            "p95_wait_s": _percentile(waits, 95),
            "mean_jct_s": 0.0,
            "makespan_s": float(len(records)),
            "cycle_latency_p50_ms": _percentile(cycles_ms, 50),
            "cycle_latency_p99_ms": _percentile(cycles_ms, 99),
            "cycles": len(cycles_ms),
            "wall_s": wall,
            "arrived_gpus": arrived / MILLI,
            "arrived_pct": arrived_pct[-1] if arrived_pct else 0.0,
            "allocated_gpus": allocated / MILLI,
            "failed_gpus": failed_milli / MILLI,
            "inflate": self.config.inflate,
            "seed": self.config.seed,
            "batch": self.config.batch,
            "scoring": self.config.scoring,
            "sampling": self.config.sampling,
            "placement": _PLACEMENT_NOTES.get((self.policy_name, self.config.scoring))
            or _PLACEMENT_NOTES.get((self.policy_name, "*"), "policy scorer, node-order tie-break"),
        }


_PLACEMENT_NOTES: dict[tuple[str, str], str] = {
    ("tessera", "*"): "fragmentation-aware rule (FGD integer score; ties: least growth of stranded GPU plus "
                      "repeat-fit fragmentation, then node order; batches: the better of two orders per 16 arrivals); "
                      "not the CP-SAT solver",
    ("random", "paper"): "FGD artifact Random: uniform feasible node, random GPU for shares",
    ("bestfit", "paper"): "FGD artifact BestFit score, node-order tie-break",
    ("fgd", "paper"): "FGD artifact FGD score int(sigmoid(dF/1000)*100), node-order tie-break",
    ("kueue", "paper"): "kube-scheduler default profile, node-order tie-break",
    ("random", "policy"): "policy scorer (scorer_for/rng_for), random tie-break",
    ("bestfit", "policy"): "policy scorer (scorer_for/rng_for), random tie-break",
    ("fgd", "policy"): "policy scorer (scorer_for/rng_for), random tie-break",
    ("kueue", "policy"): "policy scorer (scorer_for/rng_for), random tie-break",
}


def _batch_rank(pod: FillPod, arrival: int) -> tuple[bool, int, int]:
    """Tessera's alternative order inside a batch window: GPU shares first (largest first), then
    whole GPUs largest first, CPU-only pods last; ties in arrival order. Shares first fill partly
    used GPUs before whole-GPU pods claim free devices."""
    gpu = pod.gpu_milli
    return (not 0 < gpu < DEVICE_MILLI, -gpu, arrival)


def _node_rank(cluster: Cluster, seed: int) -> dict[str, int]:
    """The seeded random node order that breaks score ties (the same for every policy of a seed)."""
    names = sorted(cluster.nodes)
    random.Random(f"fill-node-order/{seed}").shuffle(names)
    return {name: i for i, name in enumerate(names)}


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --- entry points ----------------------------------------------------------------------------


def run_fill(setup: Setup, policy: str, config: FillConfig | None = None, *,
             arrivals: list[FillPod] | None = None, progress: Progress | None = None) -> RunResult:
    """One policy through the fill experiment on ``setup`` (its nodes and its jobs' pods)."""
    return FillRun(setup, policy, config or FillConfig(), arrivals=arrivals, progress=progress).run()


def run_fill_policies(setup: Setup, policies: Sequence[str], config: FillConfig | None = None, *,
                      progress: Callable[[str, int, int], None] | None = None) -> list[RunResult]:
    """Every policy on the same arrival sequence (drawn once from ``config.seed``)."""
    config = (config or FillConfig()).validate()
    pods = pod_list(setup.jobs)
    capacity = Cluster.from_nodes(setup.nodes).capacity(GPU_RESOURCE)
    arrivals = arrival_order(pods, capacity, config.inflate, config.seed, config.sampling)
    results = []
    for name in policies:
        callback = (lambda done, total, n=name: progress(n, done, total)) if progress else None
        results.append(FillRun(setup, name, config, pods=pods, arrivals=arrivals, progress=callback).run())
    return results


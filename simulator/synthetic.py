"""A seeded generator of GPU workloads: training gangs and inference services.

Spec grammar (the part after ``synthetic:``): comma-separated ``key=value`` pairs, keys
with ``_`` or ``-``, lists separated by ``|``, durations as seconds or Go durations
(``90m``). Every key has a default (`SyntheticSpec`); an unknown key, a repeated key or a
bad value is an error naming the key. Example::

    synthetic:jobs=500,seed=7,load=1.2,queues=team-a|team-b|team-c

What it draws, all from one ``random.Random(seed)`` (the same spec gives the same trace):

- Kind: inference with probability ``inference``, else training.
- Training: whole GPUs from 1 to ``max_gpus``, powers of two with a heavy tail toward small
  jobs (`SIZE_WEIGHTS`); above ``gpus_per_node`` a gang of ``gpus_per_node``-GPU pods
  (`gang_podsets`). Multi-pod gangs ask for one rack (``rack_label``) with probability
  ``topology``: required with probability ``required``, else preferred. Durations are
  lognormal (median ``duration_median``, shape ``duration_sigma``), clipped to
  [``min_duration``, ``max_duration``]. Priority class ``low_class`` with probability
  ``low``, else ``training_class``.
- Inference: ``pods`` replicas of 1, 2 or 4 (mostly 1), each with 500m, 1 or 2 GPUs,
  priority class ``inference_class``, duration ``inference_duration`` (``forever`` by default:
  a service that never finishes).
- Every pod also requests ``cpu_per_gpu`` and ``memory_per_gpu`` per GPU (fractions pro rata).
- Queue: uniform over ``queues``; an entry ``ns/name`` names the namespace and LocalQueue,
  a bare ``name`` is both.
- Arrivals: Poisson (exponential gaps, the first job at 0), at the rate that makes the
  offered load ``load`` times ``gpus`` (the cluster's GPU capacity): training GPU-seconds
  plus inference occupancy over the arrival span equal ``load x gpus x span``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from quotas.base import dns1123_label_problem, dns1123_subdomain_problem, qualified_name_problem
from quotas.problems import ManifestError, Problem
from quotas.quantity import parse_quantity
from quotas.units import milli
from scheduler.affinity import NodeConstraints
from scheduler.cluster import GPU_RESOURCE, PodRequest
from scheduler.workload import PodSetInfo, TopologyRequest, WorkloadInfo
from simulator.cluster_gen import RACK_LABEL
from simulator.trace import Collector, PriorityClasses, SimJob, Trace, gang_podsets, parse_seconds, priority_value

__all__ = [
    "DEFAULT_PRIORITY_VALUES",
    "INFERENCE_GPU_WEIGHTS",
    "SIZE_WEIGHTS",
    "SyntheticSpec",
    "generate_synthetic",
    "load_synthetic_spec",
    "parse_synthetic_spec",
]

SIZE_WEIGHTS: dict[int, float] = {1: 0.30, 2: 0.15, 4: 0.15, 8: 0.18, 16: 0.10, 32: 0.07, 64: 0.05}
"""Training gang sizes (GPUs) and their weights: mostly small, a heavy tail of large gangs."""
INFERENCE_GPU_WEIGHTS: dict[int, float] = {500: 0.35, 1000: 0.40, 2000: 0.25}
"""GPU milli per inference replica."""
INFERENCE_REPLICA_WEIGHTS: dict[int, float] = {1: 0.6, 2: 0.3, 4: 0.1}

DEFAULT_PRIORITY_VALUES: dict[str, int] = {"inference-high": 1000, "training": 100, "batch-low": 10}
"""Values for the default class names when the queues define no such WorkloadPriorityClass."""


@dataclass(frozen=True)
class SyntheticSpec:
    """The generator's parameters; field names are the spec keys."""

    jobs: int = 500
    seed: int = 0
    queues: tuple[str, ...] = ("team-a", "team-b", "team-c")
    load: float = 1.2
    gpus: int = 512
    gpus_per_node: int = 8
    max_gpus: int = 64
    inference: float = 0.1
    topology: float = 0.3
    required: float = 0.5
    rack_label: str = RACK_LABEL
    low: float = 0.2
    duration_median: float = 1800.0
    duration_sigma: float = 1.5
    min_duration: float = 60.0
    max_duration: float = 86400.0
    inference_duration: float | None = None
    cpu_per_gpu: str = "12"
    memory_per_gpu: str = "96Gi"
    training_class: str = "training"
    low_class: str = "batch-low"
    inference_class: str = "inference-high"

    def to_spec(self) -> str:
        """The ``synthetic:...`` text that gives this spec back."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "queues":
                text = "|".join(value)
            elif value is None:
                text = "forever"
            elif isinstance(value, float):
                text = repr(value)
            else:
                text = str(value)
            parts.append(f"{f.name}={text}")
        return "synthetic:" + ",".join(parts)


_INT = {"jobs": 1, "seed": None, "gpus": 1, "gpus_per_node": 1, "max_gpus": 1}
_FRACTION = ("inference", "topology", "required", "low")
_DURATIONS = ("duration_median", "min_duration", "max_duration")
_NAMES = ("training_class", "low_class", "inference_class")


def parse_synthetic_spec(text: str, *, where: str | None = None, defaults: SyntheticSpec | None = None) -> SyntheticSpec:
    """``key=value,...`` (without the ``synthetic:`` prefix) into a spec; raises ManifestError with every problem."""
    where = where or f"synthetic:{text}"
    collect = Collector()
    spec = defaults or SyntheticSpec()
    known = [f.name for f in fields(SyntheticSpec)]
    values: dict[str, Any] = {}
    seen: set[str] = set()
    for part in (p for p in text.split(",") if p.strip()):
        key, eq, raw = part.partition("=")
        key = key.strip().replace("-", "_").lower()
        raw = raw.strip()
        if not eq:
            collect.add(where, key, "expected key=value")
            continue
        if key not in known:
            collect.add(where, key, f"unknown key (known: {', '.join(known)})")
            continue
        if key in seen:
            collect.add(where, key, "given more than once")
            continue
        seen.add(key)
        try:
            values[key] = _value(key, raw)
        except ValueError as exc:
            collect.add(where, key, str(exc))
    collect.raise_if_errors()
    spec = replace(spec, **values)
    # cross-field checks
    if spec.min_duration > spec.max_duration:
        collect.add(where, "min_duration", f"must not exceed max_duration ({spec.max_duration:g}), got {spec.min_duration:g}")
    if spec.duration_median <= 0:
        collect.add(where, "duration_median", f"must be greater than 0, got {spec.duration_median:g}")
    if spec.max_gpus > 0 and not any(size <= spec.max_gpus for size in SIZE_WEIGHTS):
        collect.add(where, "max_gpus", "must be at least 1")
    collect.raise_if_errors()
    return spec


def _value(key: str, raw: str) -> Any:
    if key in _INT:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f'must be an integer, got "{raw}"') from None
        low = _INT[key]
        if low is not None and value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        return value
    if key in _FRACTION or key in ("load", "duration_sigma"):
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f'must be a number, got "{raw}"') from None
        if not math.isfinite(value):
            raise ValueError(f'must be a finite number, got "{raw}"')
        if key in _FRACTION and not 0 <= value <= 1:
            raise ValueError(f"must be between 0 and 1, got {raw}")
        if key == "load" and value <= 0:
            raise ValueError(f"must be greater than 0, got {raw}")
        if key == "duration_sigma" and value < 0:
            raise ValueError(f"must not be negative, got {raw}")
        return value
    if key in _DURATIONS:
        return parse_seconds(raw)
    if key == "inference_duration":
        if raw.lower() in ("forever", "none", "null", "inf"):
            return None
        return parse_seconds(raw)
    if key == "queues":
        entries = tuple(q.strip() for q in raw.split("|") if q.strip())
        if not entries:
            raise ValueError("must name at least one queue (separate several with |)")
        for entry in entries:
            namespace, slash, name = entry.rpartition("/")
            problem = (dns1123_label_problem(namespace) if slash else None) or dns1123_subdomain_problem(name)
            if not slash and not problem:
                problem = dns1123_label_problem(name)  # also the namespace
            if problem:
                raise ValueError(f'"{entry}": {problem}')
        return entries
    if key == "rack_label":
        problem = qualified_name_problem(raw)
        if problem:
            raise ValueError(f"must be a node label key: {problem}")
        return raw
    if key in ("cpu_per_gpu", "memory_per_gpu"):
        try:
            amount = parse_quantity(raw)
        except ValueError:
            raise ValueError(f'must be a quantity such as 12 or 96Gi, got "{raw}"') from None
        if amount < 0:
            raise ValueError(f"must not be negative, got {raw}")
        return raw
    if key in _NAMES:
        problem = dns1123_subdomain_problem(raw)
        if problem:
            raise ValueError(f'must be a WorkloadPriorityClass name: {problem}, got "{raw}"')
        return raw
    raise ValueError("unsupported key")  # pragma: no cover - every field is handled above


def _pick(rng: random.Random, weights: Mapping[int, float]) -> int:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def generate_synthetic(spec: SyntheticSpec, *, priority_classes: PriorityClasses | None = None,
                       name: str | None = None) -> Trace:
    """The trace ``spec`` describes (deterministic for ``spec.seed``).

    Priorities come from ``priority_classes`` where they define the class names, else from
    `DEFAULT_PRIORITY_VALUES`; a class name known to neither is an error.
    """
    where = f"synthetic:seed={spec.seed}"
    collect = Collector()
    classes = priority_classes or {}
    prio: dict[str, int] = {}
    for field_name in _NAMES:
        class_name = getattr(spec, field_name)
        value = priority_value(classes, class_name)
        if value is None:
            value = DEFAULT_PRIORITY_VALUES.get(class_name)
        if value is None:
            known = ", ".join(sorted(set(classes) | set(DEFAULT_PRIORITY_VALUES)))
            collect.add(where, field_name, f'unknown WorkloadPriorityClass "{class_name}" (known: {known})')
        else:
            prio[class_name] = value
    collect.raise_if_errors()

    rng = random.Random(spec.seed)
    per_gpu = {"cpu": milli(parse_quantity(spec.cpu_per_gpu)), "memory": milli(parse_quantity(spec.memory_per_gpu))}
    per_gpu = {k: v for k, v in per_gpu.items() if v}
    sizes = {size: w for size, w in SIZE_WEIGHTS.items() if size <= spec.max_gpus}
    queues = [(q.rpartition("/")[0] or q.rpartition("/")[2], q.rpartition("/")[2]) for q in spec.queues]
    mu = math.log(spec.duration_median)
    none = NodeConstraints()
    topo_required = TopologyRequest("required", spec.rack_label)
    topo_preferred = TopologyRequest("preferred", spec.rack_label)
    gang_cache: dict[tuple[int, TopologyRequest | None], tuple[PodSetInfo, ...]] = {}
    inference_cache: dict[tuple[int, int], tuple[PodSetInfo, ...]] = {}

    drafts: list[tuple[str, str, str, tuple[PodSetInfo, ...], str, float | None, int]] = []
    train_gpu_seconds = 0.0
    inference_gpus = 0.0
    width = len(str(spec.jobs - 1))
    for i in range(spec.jobs):
        namespace, queue = queues[rng.randrange(len(queues))]
        if rng.random() < spec.inference:
            per_pod = _pick(rng, INFERENCE_GPU_WEIGHTS)
            replicas = _pick(rng, INFERENCE_REPLICA_WEIGHTS)
            podsets = inference_cache.get((per_pod, replicas))
            if podsets is None:
                requests = {name_: amount * per_pod // 1000 for name_, amount in per_gpu.items()}
                requests[GPU_RESOURCE] = per_pod
                podsets = inference_cache[(per_pod, replicas)] = (
                    PodSetInfo("main", replicas, PodRequest.of(requests), constraints=none),)
            duration = spec.inference_duration
            inference_gpus += per_pod * replicas / 1000
            drafts.append((f"infer-{i:0{width}d}", namespace, queue, podsets, spec.inference_class, duration, 1))
            continue
        gpus = _pick(rng, sizes)
        duration = min(max(rng.lognormvariate(mu, spec.duration_sigma), spec.min_duration), spec.max_duration)
        duration = round(duration, 1)
        class_name = spec.low_class if rng.random() < spec.low else spec.training_class
        topology = None
        if gpus > spec.gpus_per_node and rng.random() < spec.topology:
            topology = topo_required if rng.random() < spec.required else topo_preferred
        podsets = gang_cache.get((gpus, topology))
        if podsets is None:
            podsets = gang_cache[(gpus, topology)] = gang_podsets(gpus, spec.gpus_per_node, per_gpu, topology=topology,
                                                                  constraints=none)
        train_gpu_seconds += gpus * duration
        drafts.append((f"train-{i:0{width}d}", namespace, queue, podsets, class_name, duration, 0))

    # Arrival span T: load * gpus * T = training GPU-seconds + inference occupancy over T.
    capacity = spec.load * spec.gpus
    if spec.inference_duration is None:
        room = capacity - inference_gpus / 2  # services arrive uniformly: on average half the span each
        if room <= 0:
            raise ManifestError([Problem(where, "", "inference", f"inference services alone ({inference_gpus:g} GPUs) "
                                         f"exceed the offered load ({spec.load:g} x {spec.gpus} GPUs)")])
        span = train_gpu_seconds / room
    else:
        span = (train_gpu_seconds + inference_gpus * spec.inference_duration) / capacity
    mean_gap = span / spec.jobs if span > 0 else 60.0
    jobs: list[SimJob] = []
    at = 0.0
    for index, (job_name, namespace, queue, podsets, class_name, duration, is_inference) in enumerate(drafts):
        if index:
            at = round(at + rng.expovariate(1.0 / mean_gap), 3)
        workload = WorkloadInfo(
            namespace=namespace,
            name=job_name,
            local_queue=queue,
            podsets=podsets,
            priority=prio[class_name],
            creation_time=at,
            workload_type="inference" if is_inference else "training",
            priority_class=class_name,
        )
        jobs.append(SimJob(workload, at, duration, f"synthetic:{index + 1}"))
    return Trace(name or f"synthetic-seed{spec.seed}", jobs)


def load_synthetic_spec(
    text: str,
    *,
    priority_classes: PriorityClasses | None = None,
    seed: int | None = None,
    cluster_gpus: int | None = None,
) -> Trace:
    """``synthetic:`` dispatch: ``seed`` and ``cluster_gpus`` fill ``seed=`` and ``gpus=`` when the text omits them."""
    defaults = SyntheticSpec()
    if seed is not None:
        defaults = replace(defaults, seed=seed)
    if cluster_gpus:
        defaults = replace(defaults, gpus=cluster_gpus)
    spec = parse_synthetic_spec(text, where=f"synthetic:{text}", defaults=defaults)
    return generate_synthetic(spec, priority_classes=priority_classes)

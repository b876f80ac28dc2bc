"""The simulator's workload: `SimJob` records in a `Trace`, and the loaders that produce them.

A workload spec (``tessera simulate --workload SPEC``) is one of

- a path to multi-document YAML of ``batch/v1`` Jobs (or Workloads) with the
  ``tessera.dev/sim-submit-at`` and ``tessera.dev/sim-duration`` annotations;
- ``jsonl:PATH``: the native trace, one JSON object per line (`load_jsonl`, `write_jsonl`);
- ``openb:PATH``: Alibaba cluster-trace-gpu-v2023 (`simulator.openb`);
- ``philly:PATH``: the processed Microsoft Philly trace (`simulator.philly`);
- ``synthetic:key=value,...``: a seeded generator (`simulator.synthetic`).

`load_workload` dispatches on the prefix. Every loader reads the whole input and raises
`quotas.problems.ManifestError` carrying every problem found, each naming the file and line
(``trace.jsonl:12``) or, for YAML, the file and document (``jobs.yaml:3``): a bad row is
reported, never silently dropped. docs/simulator-inputs.md documents the formats.

Jobs come out in submission order (ties keep input order); submission times and durations
are seconds of simulated time; a duration of None means the job runs until the end.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quotas.api import WorkloadPriorityClass
from quotas.base import (
    PRIORITY_CLASS_LABEL,
    QUEUE_NAME_LABEL,
    SIM_DURATION_ANNOTATION,
    SIM_SUBMIT_AT_ANNOTATION,
    WORKLOAD_TYPE_LABEL,
    dns1123_label_problem,
    dns1123_subdomain_problem,
    qualified_name_problem,
)
from quotas.bundle import Bundle, error_message, format_path, load_bundle
from quotas.duration import parse_duration
from quotas.kube import Node, Toleration
from quotas.problems import ManifestError, Problem, errors_in
from quotas.quantity import parse_quantity
from quotas.units import format_amount, milli
from scheduler.affinity import NodeConstraints, NodeSelectorTerm, parse_required_terms
from scheduler.cluster import DEFAULT_ACCELERATORS, GPU_RESOURCE, PodRequest, device_shape
from scheduler.workload import PodSetInfo, TopologyRequest, WorkloadInfo

__all__ = [
    "PREFIXES",
    "PriorityClasses",
    "SimJob",
    "Trace",
    "check_queues",
    "gang_podsets",
    "job_from_dict",
    "job_to_dict",
    "load_job_manifests",
    "load_jsonl",
    "load_workload",
    "make_podset",
    "parse_seconds",
    "split_options",
    "write_jsonl",
]

PriorityClasses = Mapping[str, "WorkloadPriorityClass | int"]
"""WorkloadPriorityClass objects (or plain values) by name, e.g. ``bundle.priority_classes``."""

PREFIXES = ("jsonl", "openb", "philly", "synthetic")


# --- the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimJob:
    """One workload of a simulation: what it asks for, when it arrives and how long it runs.

    ``workload.creation_time`` equals ``submit_at``; ``workload.cluster_queue`` is left for
    the engine to fill from the LocalQueue. ``duration`` None means it never finishes by
    itself (fill mode, long-running inference). ``source`` says where it was read
    (``trace.jsonl:12``, ``jobs.yaml:3``, ``synthetic:7``) for messages.
    """

    workload: WorkloadInfo
    submit_at: float
    duration: float | None
    source: str = ""

    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return self.workload.key

    @property
    def queue(self) -> str:
        """The LocalQueue (in ``namespace``)."""
        return self.workload.local_queue

    @property
    def gpu_milli(self) -> int:
        """GPU milli of all pods (1000 per GPU)."""
        return self.workload.total_gpus()


@dataclass
class Trace:
    """A loaded workload: jobs in submission order, plus what came with it.

    ``nodes`` is the cluster that belongs to the trace (openb's node list), used when no
    ``--cluster`` is given; None for the other inputs. ``warnings`` are non-fatal problems.
    """

    name: str
    jobs: list[SimJob] = field(default_factory=list)
    nodes: list[Node] | None = None
    warnings: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[SimJob]:
        return iter(self.jobs)

    def gpu_milli(self) -> int:
        """GPU milli requested by all jobs at full count."""
        return sum(job.gpu_milli for job in self.jobs)

    def queues(self) -> list[tuple[str, str]]:
        """The (namespace, LocalQueue) pairs the jobs use, in first-use order."""
        return list(dict.fromkeys((job.namespace, job.queue) for job in self.jobs))


def sort_jobs(jobs: list[SimJob]) -> list[SimJob]:
    """Submission order; ties keep input order (sorted() is stable)."""
    return sorted(jobs, key=lambda job: job.submit_at)


# --- building blocks shared by the loaders ---------------------------------------------------


class Collector:
    """Problems of one input, all of them; `raise_if_errors` turns them into a ManifestError."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: str, path: str, message: str, obj: str = "", severity: str = "error") -> None:
        self.problems.append(Problem(where, obj, path, message, severity))  # type: ignore[arg-type]

    def extend(self, problems: Sequence[Problem]) -> None:
        self.problems.extend(problems)

    @property
    def errors(self) -> list[Problem]:
        return errors_in(self.problems)

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    def raise_if_errors(self) -> None:
        """Raise ManifestError with every error, in file and line (or document) order."""
        errors = self.errors
        if errors:
            raise ManifestError(sorted(errors, key=_where_key))


def _where_key(problem: Problem) -> tuple[str, int]:
    m = re.match(r"^(.*?):(\d+)(?::|$)", problem.where)
    return (m.group(1), int(m.group(2))) if m else (problem.where, 0)


def parse_seconds(value: Any) -> float:
    """Seconds from a number, a numeric string (``"3600"``) or a Go duration (``"90m"``).

    Raises ValueError with a short message; negative, NaN and infinite values are refused.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                seconds = parse_duration(text)
            except ValueError:
                raise ValueError(f'must be a number of seconds or a duration such as 90m, got "{value}"') from None
    else:
        raise ValueError(f"must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


def resource_milli(resource: str, value: Any) -> int:
    """A request amount (quantity string or number) in milli; raises ValueError with a short message.

    Accelerator amounts must be a share of one device (< 1) or whole devices.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be a quantity such as 4, 500m or 32Gi, got {value!r}")
    try:
        amount = milli(parse_quantity(value))
    except ValueError:
        raise ValueError(f"must be a quantity such as 4, 500m or 32Gi, got {value!r}") from None
    if amount < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    if resource in DEFAULT_ACCELERATORS and device_shape(amount) is None:
        raise ValueError(f"must be a share of one GPU (below 1, e.g. 500m) or whole GPUs, got {value!r}")
    return amount


def make_podset(
    name: str,
    count: int,
    requests: Mapping[str, int],
    *,
    min_count: int | None = None,
    node_selector: Mapping[str, str] | None = None,
    affinity: Mapping[str, Any] | None = None,
    tolerations: Sequence[Toleration] = (),
    required_topology: str | None = None,
    preferred_topology: str | None = None,
    path: str = "podsets[0]",
) -> PodSetInfo:
    """A podset from per-pod requests in milli; raises ValueError naming the field on bad input."""
    if required_topology and preferred_topology:
        raise ValueError(f"{path}: set required_topology or preferred_topology, not both")
    topology = None
    if required_topology:
        topology = TopologyRequest("required", required_topology)
    elif preferred_topology:
        topology = TopologyRequest("preferred", preferred_topology)
    constraints = NodeConstraints.build(node_selector, affinity, tolerations, path)
    return PodSetInfo(
        name=name,
        count=count,
        requests=PodRequest.of(dict(requests)),
        min_count=min_count,
        constraints=constraints,
        topology=topology,
    )


def gang_podsets(
    gpus: int,
    gpus_per_node: int = 8,
    per_gpu: Mapping[str, int] | None = None,
    *,
    topology: TopologyRequest | None = None,
    constraints: NodeConstraints | None = None,
    gpu_resource: str = GPU_RESOURCE,
) -> tuple[PodSetInfo, ...]:
    """An all-or-nothing gang of ``gpus`` whole GPUs on servers of ``gpus_per_node``.

    Up to one server: one pod with all the GPUs (podset ``main``). Above: pods of
    ``gpus_per_node`` GPUs (podset ``main``) and, when ``gpus`` is not a multiple, one more
    pod with the remainder (podset ``rest``), so the GPU count stays exact; a Workload is
    admitted with all its podsets or not at all, so the two stay one gang. ``per_gpu`` adds
    other resources (cpu, memory; milli per GPU) to each pod in proportion to its GPUs.
    """
    if gpus < 1:
        raise ValueError(f"a gang needs at least one GPU, got {gpus}")
    if gpus_per_node < 1:
        raise ValueError(f"gpus_per_node must be at least 1, got {gpus_per_node}")
    extra = dict(per_gpu or {})
    constraints = constraints or NodeConstraints()

    def pod(n: int) -> PodRequest:
        requests = {name: amount * n for name, amount in extra.items()}
        requests[gpu_resource] = n * 1000
        return PodRequest.of(requests)

    if gpus <= gpus_per_node:
        return (PodSetInfo("main", 1, pod(gpus), constraints=constraints, topology=topology),)
    full, rest = divmod(gpus, gpus_per_node)
    sets = [PodSetInfo("main", full, pod(gpus_per_node), constraints=constraints, topology=topology)]
    if rest:
        sets.append(PodSetInfo("rest", 1, pod(rest), constraints=constraints, topology=topology))
    return tuple(sets)


_OPTION = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)=(.*)$", re.S)


def split_options(text: str, known: Sequence[str], where: str, collect: Collector) -> tuple[str, dict[str, str]]:
    """``PATH[,key=value...]`` -> (PATH, {key: value}). Keys may use ``-`` or ``_``.

    A trailing ``,segment`` counts as an option only if it looks like ``key=value``;
    anything else stays part of the path (so paths with commas still work). Unknown and
    repeated keys are reported to ``collect``.
    """
    parts = text.split(",")
    options: dict[str, str] = {}
    cut = len(parts)
    while cut > 1 and _OPTION.match(parts[cut - 1]):
        cut -= 1
    for part in parts[cut:]:
        m = _OPTION.match(part)
        assert m is not None
        key = m.group(1).replace("-", "_").lower()
        if key not in known:
            collect.add(where, key, f"unknown option (known: {', '.join(known)})")
        elif key in options:
            collect.add(where, key, "given more than once")
        else:
            options[key] = m.group(2)
    return ",".join(parts[:cut]), options


def parse_int_option(options: Mapping[str, str], key: str, where: str, collect: Collector, low: int = 0) -> int | None:
    if key not in options:
        return None
    try:
        value = int(options[key])
    except ValueError:
        collect.add(where, key, f'must be an integer, got "{options[key]}"')
        return None
    if value < low:
        collect.add(where, key, f"must be at least {low}, got {value}")
        return None
    return value


def priority_value(classes: PriorityClasses, name: str) -> int | None:
    found = classes.get(name)
    if found is None:
        return None
    return found if isinstance(found, int) else found.value


def unknown_class_message(name: str, classes: PriorityClasses) -> str:
    known = ", ".join(sorted(classes)) or "none is defined"
    return f'unknown WorkloadPriorityClass "{name}" (known: {known})'


# --- Job manifests -----------------------------------------------------------------------------


def _sim_times(annotations: Mapping[str, str], inference: bool, where: str, label: str,
               collect: Collector) -> tuple[float, float | None] | None:
    ok = True
    submit_at = 0.0
    duration: float | None = None
    base = "metadata.annotations"
    raw = annotations.get(SIM_SUBMIT_AT_ANNOTATION)
    if raw is not None:
        try:
            submit_at = parse_seconds(raw)
        except ValueError as exc:
            collect.add(where, f'{base}["{SIM_SUBMIT_AT_ANNOTATION}"]', str(exc), label)
            ok = False
    raw = annotations.get(SIM_DURATION_ANNOTATION)
    if raw is not None:
        try:
            duration = parse_seconds(raw)
        except ValueError as exc:
            collect.add(where, f'{base}["{SIM_DURATION_ANNOTATION}"]', str(exc), label)
            ok = False
    elif not inference:
        collect.add(where, f'{base}["{SIM_DURATION_ANNOTATION}"]',
                    "required for the simulator (seconds); only inference runs until the end without it", label)
        ok = False
    return (submit_at, duration) if ok else None


def load_job_manifests(
    paths: str | Path | Sequence[str | Path],
    *,
    priority_classes: PriorityClasses | None = None,
    name: str | None = None,
) -> Trace:
    """Jobs (and Workloads) from YAML files or folders, validated by `quotas.bundle.load_bundle`.

    Priority classes come from ``priority_classes`` (the queues bundle) and from
    WorkloadPriorityClass objects in the same files. Jobs without the queue label are
    errors here: the simulator replays only queued work.
    """
    path_list = [paths] if isinstance(paths, (str, Path)) else list(paths)
    bundle, problems = load_bundle(path_list)
    collect = Collector()
    # load_bundle's "left alone" warning becomes an error below, and priority classes are
    # checked below against the queues' classes too (load_bundle sees only these files).
    collect.extend([p for p in problems if (p.is_error or QUEUE_NAME_LABEL not in p.message)
                    and not p.message.startswith("unknown WorkloadPriorityClass")])
    classes: dict[str, WorkloadPriorityClass | int] = dict(priority_classes or {})
    classes.update(bundle.priority_classes)

    jobs: list[SimJob] = []
    entries: list[tuple[str, str, str, Any, Any]] = []  # kind, namespace, name, metadata, workload
    for (namespace, job_name), job in bundle.jobs.items():
        if QUEUE_NAME_LABEL not in job.metadata.labels:
            collect.add(bundle.source_of("Job", job_name, namespace), f'metadata.labels["{QUEUE_NAME_LABEL}"]',
                        "required: the simulator replays only Jobs queued by Tessera", f"Job/{job_name}")
            continue
        workload = bundle.job_workloads.get((namespace, job_name))
        if workload is not None:
            entries.append(("Job", namespace, job_name, job.metadata, workload))
    for (namespace, wl_name), workload in bundle.workloads.items():
        entries.append(("Workload", namespace, wl_name, workload.metadata, workload))
    if not entries and not collect.errors:
        collect.add(", ".join(str(p) for p in path_list), "", "holds no queued Job or Workload")

    for kind, namespace, obj_name, metadata, workload in entries:
        where = bundle.source_of(kind, obj_name, namespace)
        label = f"{kind}/{obj_name}"
        inference = workload.metadata.labels.get(WORKLOAD_TYPE_LABEL) == "inference"
        times = _sim_times(metadata.annotations, inference, where, label, collect)
        class_name = workload.spec.priority_class_name
        if workload.spec.priority is None and class_name and class_name not in classes:
            field_path = f'metadata.labels["{PRIORITY_CLASS_LABEL}"]' if kind == "Job" else "spec.priorityClassName"
            collect.add(where, field_path, unknown_class_message(class_name, classes), label)
            continue
        if times is None:
            continue
        submit_at, duration = times
        try:
            info = WorkloadInfo.from_workload(workload, classes, creation_time=submit_at)
        except ValueError as exc:
            collect.add(where, "", str(exc), label)
            continue
        jobs.append(SimJob(info, submit_at, duration, where))
    collect.raise_if_errors()
    trace_name = name or (Path(path_list[0]).stem if len(path_list) == 1 else "jobs")
    return Trace(trace_name, sort_jobs(jobs), warnings=collect.warnings)


# --- jsonl: the native trace ------------------------------------------------------------------

JOB_KEYS = ("name", "namespace", "queue", "submit_at", "duration", "priority_class", "priority", "type", "podsets")
PODSET_KEYS = ("name", "count", "min_count", "requests", "gpus", "cpu", "memory", "node_selector", "tolerations",
               "affinity", "required_topology", "preferred_topology")
SHORTHAND_KEYS = ("pods", "min_pods", "requests", "gpus", "cpu", "memory", "node_selector", "tolerations",
                  "affinity", "required_topology", "preferred_topology")


def _int(value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"must be an integer, got {json.dumps(value)}")
    if value < low:
        raise ValueError(f"must be at least {low}, got {value}")
    return value


def _podset_from_dict(data: Any, path: str, index: int, err: Any) -> PodSetInfo | None:
    if not isinstance(data, dict):
        err(path, "must be an object")
        return None

    def at(key: str) -> str:
        return f"{path}.{key}" if path else key

    ok = True
    for key in data:
        if key not in PODSET_KEYS:
            err(at(key), f"unknown field (known: {', '.join(PODSET_KEYS)})")
            ok = False
    name = data.get("name", "main" if index == 0 else f"ps{index}")
    if not isinstance(name, str) or dns1123_label_problem(name):
        err(at("name"), f"must be a DNS-1123 label, got {json.dumps(name)}")
        ok = False
    count = 1
    try:
        count = _int(data.get("count", 1), 1)
    except ValueError as exc:
        err(at("count"), str(exc))
        ok = False
    min_count = None
    if data.get("min_count") is not None:
        try:
            min_count = _int(data["min_count"], 1)
            if min_count > count:
                raise ValueError(f"must not exceed count ({count}), got {min_count}")
        except ValueError as exc:
            err(at("min_count"), str(exc))
            ok = False
    requests: dict[str, int] = {}
    raw_requests = data.get("requests", {})
    if not isinstance(raw_requests, dict):
        err(at("requests"), "must be an object of resource name to quantity")
        ok = False
        raw_requests = {}
    shortcuts = {"gpus": GPU_RESOURCE, "cpu": "cpu", "memory": "memory"}
    items = [(at(f"requests.{res}"), res, value) for res, value in raw_requests.items()]
    for key, res in shortcuts.items():
        if key not in data:
            continue
        if res in raw_requests:
            err(at(key), f"repeats requests.{res}")
            ok = False
        else:
            items.append((at(key), res, data[key]))
    for where_field, resource, value in items:
        problem = qualified_name_problem(resource) if isinstance(resource, str) else "must be a string"
        if problem:
            err(where_field, f"not a resource name: {problem}")
            ok = False
            continue
        try:
            requests[resource] = resource_milli(resource, value)
        except ValueError as exc:
            err(where_field, str(exc))
            ok = False
    node_selector = data.get("node_selector") or {}
    if not isinstance(node_selector, dict) or not all(isinstance(v, str) for v in node_selector.values()):
        err(at("node_selector"), "must be an object of label to string value")
        ok = False
        node_selector = {}
    tolerations: list[Toleration] = []
    raw_tol = data.get("tolerations") or []
    if not isinstance(raw_tol, list):
        err(at("tolerations"), "must be a list")
        ok = False
        raw_tol = []
    for i, item in enumerate(raw_tol):
        if not isinstance(item, dict):
            err(at(f"tolerations[{i}]"), "must be an object (a Kubernetes toleration)")
            ok = False
            continue
        try:
            tolerations.append(Toleration.model_validate(item))
        except ValidationError as exc:
            for error in exc.errors():
                err(at(f"tolerations[{i}].{format_path(error['loc'])}"), error_message(error))
            ok = False
    affinity = data.get("affinity")
    if affinity is not None and not isinstance(affinity, dict):
        err(at("affinity"), "must be an object (a pod spec's affinity)")
        ok = False
        affinity = None
    try:
        parse_required_terms(affinity, at("affinity"))
    except ValueError as exc:
        err("", str(exc))
        ok = False
    topo: dict[str, str | None] = {}
    for key in ("required_topology", "preferred_topology"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or qualified_name_problem(value)):
            err(at(key), f"must be a node label key, got {json.dumps(value)}")
            ok = False
            value = None
        topo[key] = value
    if topo["required_topology"] and topo["preferred_topology"]:
        err(at("preferred_topology"), "set required_topology or preferred_topology, not both")
        ok = False
    if not ok:
        return None
    try:
        return make_podset(
            name, count, requests, min_count=min_count, node_selector=node_selector, affinity=affinity,
            tolerations=tolerations, path=path, **topo,
        )
    except ValueError as exc:
        err("", str(exc))
        return None


def job_from_dict(
    data: Any,
    where: str,
    collect: Collector,
    *,
    priority_classes: PriorityClasses | None = None,
    default_queue: str | None = None,
) -> SimJob | None:
    """One native-trace record (see docs/simulator-inputs.md) or None with problems added to ``collect``."""
    if not isinstance(data, dict):
        collect.add(where, "", f"expected a JSON object, got {type(data).__name__}")
        return None
    raw_name = data.get("name")
    label = f"job/{raw_name}" if isinstance(raw_name, str) else ""
    before = len(collect.problems)

    def err(path: str, message: str) -> None:
        collect.add(where, path, message, label)

    shorthand = [k for k in data if k in SHORTHAND_KEYS]
    for key in data:
        if key not in JOB_KEYS and key not in SHORTHAND_KEYS:
            err(key, f"unknown field (known: {', '.join(JOB_KEYS)}; shorthand: {', '.join(SHORTHAND_KEYS)})")
    if not isinstance(raw_name, str) or dns1123_subdomain_problem(raw_name):
        err("name", "required" if raw_name is None else f"must be a DNS-1123 subdomain, got {json.dumps(raw_name)}")
    namespace = data.get("namespace", "default")
    if not isinstance(namespace, str) or dns1123_label_problem(namespace):
        err("namespace", f"must be a DNS-1123 label, got {json.dumps(namespace)}")
    queue = data.get("queue", default_queue)
    if queue is None:
        err("queue", "required (the LocalQueue in the job's namespace)")
    elif not isinstance(queue, str) or dns1123_subdomain_problem(queue):
        err("queue", f"must be a LocalQueue name, got {json.dumps(queue)}")
    wl_type = data.get("type", "training")
    if wl_type not in ("training", "inference"):
        err("type", f"must be training or inference, got {json.dumps(wl_type)}")
    submit_at = 0.0
    if data.get("submit_at") is not None:
        try:
            submit_at = parse_seconds(data["submit_at"])
        except ValueError as exc:
            err("submit_at", str(exc))
    duration: float | None = None
    if "duration" not in data:
        if wl_type != "inference":
            err("duration", "required (seconds, or null to run until the end)")
    elif data["duration"] is not None:
        try:
            duration = parse_seconds(data["duration"])
        except ValueError as exc:
            err("duration", str(exc))
    priority = data.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not -(2**31) <= priority < 2**31):
        err("priority", f"must be a 32-bit integer, got {json.dumps(priority)}")
        priority = None
    class_name = data.get("priority_class")
    classes = priority_classes or {}
    if class_name is not None:
        if not isinstance(class_name, str) or dns1123_subdomain_problem(class_name):
            err("priority_class", f"must be a WorkloadPriorityClass name, got {json.dumps(class_name)}")
            class_name = None
        elif priority is None:
            priority = priority_value(classes, class_name)
            if priority is None:
                err("priority_class", unknown_class_message(class_name, classes))

    podsets: list[PodSetInfo] = []
    if "podsets" in data:
        if shorthand:
            err(shorthand[0], "shorthand fields cannot be combined with podsets")
        raw_sets = data["podsets"]
        if not isinstance(raw_sets, list) or not raw_sets:
            err("podsets", "must be a non-empty list")
        else:
            for i, raw in enumerate(raw_sets):
                podset = _podset_from_dict(raw, f"podsets[{i}]", i, err)
                if podset is not None:
                    podsets.append(podset)
            names = [p.name for p in podsets]
            if len(set(names)) != len(names):
                err("podsets", f"podset names must be unique, got {', '.join(names)}")
    else:
        if not shorthand:
            err("podsets", "required (or the shorthand gpus, pods, cpu, memory)")
        else:
            single = {k: v for k, v in data.items() if k in SHORTHAND_KEYS}
            if "pods" in single:
                single["count"] = single.pop("pods")
            if "min_pods" in single:
                single["min_count"] = single.pop("min_pods")
            renamed = {"count": "pods", "min_count": "min_pods"}

            def shorthand_err(path: str, message: str) -> None:
                err(renamed.get(path, path), message)

            podset = _podset_from_dict(single, "", 0, shorthand_err)
            if podset is not None:
                podsets.append(podset)
    if len(collect.problems) > before:
        return None
    workload = WorkloadInfo(
        namespace=namespace,
        name=raw_name,  # type: ignore[arg-type]
        local_queue=queue,  # type: ignore[arg-type]
        podsets=tuple(podsets),
        priority=priority or 0,
        creation_time=submit_at,
        workload_type=wl_type,
        priority_class=class_name,
    )
    return SimJob(workload, submit_at, duration, where)


def _affinity_dict(terms: tuple[NodeSelectorTerm, ...]) -> dict[str, Any]:
    def req(r: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"key": r.key, "operator": r.operator}
        if r.values:
            out["values"] = list(r.values)
        return out

    out_terms = []
    for term in terms:
        entry: dict[str, Any] = {}
        if term.match_expressions:
            entry["matchExpressions"] = [req(r) for r in term.match_expressions]
        if term.match_fields:
            entry["matchFields"] = [req(r) for r in term.match_fields]
        out_terms.append(entry)
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": out_terms}}}


def job_to_dict(job: SimJob) -> dict[str, Any]:
    """The native-trace record of a job (full form: explicit priority and podsets)."""
    wl = job.workload
    out: dict[str, Any] = {
        "name": wl.name,
        "namespace": wl.namespace,
        "queue": wl.local_queue,
        "submit_at": job.submit_at,
        "duration": job.duration,
    }
    if wl.priority_class:
        out["priority_class"] = wl.priority_class
    out["priority"] = wl.priority
    out["type"] = wl.workload_type
    podsets = []
    for ps in wl.podsets:
        entry: dict[str, Any] = {"name": ps.name, "count": ps.count}
        if ps.min_count is not None:
            entry["min_count"] = ps.min_count
        entry["requests"] = {res: format_amount(amount, res) for res, amount in ps.requests.items}
        c = ps.constraints
        if c.node_selector:
            entry["node_selector"] = dict(c.node_selector)
        if c.tolerations:
            entry["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in c.tolerations]
        if c.required_terms is not None:
            entry["affinity"] = _affinity_dict(c.required_terms)
        if ps.topology is not None:
            entry[f"{ps.topology.mode}_topology"] = ps.topology.level
        podsets.append(entry)
    out["podsets"] = podsets
    return out


def load_jsonl(
    path: str | Path,
    *,
    priority_classes: PriorityClasses | None = None,
    default_queue: str | None = None,
) -> Trace:
    """The native trace: one JSON object per line; blank lines and lines starting with ``#`` are skipped."""
    collect = Collector()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(str(path), "", "", f"cannot read: {getattr(exc, 'strerror', None) or exc}")]) from None
    jobs: list[SimJob] = []
    seen: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            collect.add(where, "", f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        job = job_from_dict(data, where, collect, priority_classes=priority_classes, default_queue=default_queue)
        if job is None:
            continue
        if job.key in seen:
            collect.add(where, "name", f'duplicate of job "{job.key}" at {seen[job.key]}', f"job/{job.name}")
            continue
        seen[job.key] = where
        jobs.append(job)
    if not jobs and not collect.errors:
        collect.add(str(path), "", "holds no jobs")
    collect.raise_if_errors()
    return Trace(file.stem, sort_jobs(jobs), warnings=collect.warnings)


def write_jsonl(trace: Trace | Sequence[SimJob], path: str | Path) -> None:
    """Write jobs as the native trace; `load_jsonl` reads back the same jobs."""
    jobs = trace.jobs if isinstance(trace, Trace) else trace
    with Path(path).open("w", encoding="utf-8") as handle:
        for job in jobs:
            handle.write(json.dumps(job_to_dict(job), separators=(",", ":")) + "\n")


# --- dispatch ----------------------------------------------------------------------------------


def load_workload(
    spec: str,
    *,
    priority_classes: PriorityClasses | None = None,
    default_queue: str = "default",
    seed: int | None = None,
    cluster_gpus: int | None = None,
) -> Trace:
    """The workload a spec names (see the module docstring); raises ManifestError.

    ``priority_classes``: the queues bundle's WorkloadPriorityClasses (name -> object or value).
    ``default_queue``: the LocalQueue for inputs without tenants (openb) and for jsonl records
    without ``queue``. ``seed`` and ``cluster_gpus`` are defaults for ``synthetic:`` specs that
    do not set ``seed=`` and ``gpus=`` themselves.
    """
    prefix, colon, rest = spec.partition(":")
    if colon and prefix in PREFIXES:
        if prefix == "jsonl":
            collect = Collector()
            path, _ = split_options(rest, (), spec, collect)
            collect.raise_if_errors()
            return load_jsonl(path, priority_classes=priority_classes, default_queue=default_queue)
        if prefix == "openb":
            from simulator.openb import load_openb_spec

            return load_openb_spec(rest, queue=default_queue)
        if prefix == "philly":
            from simulator.philly import load_philly_spec

            return load_philly_spec(rest)
        from simulator.synthetic import load_synthetic_spec

        return load_synthetic_spec(rest, priority_classes=priority_classes, seed=seed, cluster_gpus=cluster_gpus)
    if spec == "synthetic":
        from simulator.synthetic import load_synthetic_spec

        return load_synthetic_spec("", priority_classes=priority_classes, seed=seed, cluster_gpus=cluster_gpus)
    if not spec.strip():
        raise ManifestError([Problem("--workload", "", "", "empty workload spec")])
    if Path(spec).exists():
        return load_job_manifests(spec, priority_classes=priority_classes)
    known = ", ".join(f"{p}:" for p in PREFIXES)
    if colon and re.fullmatch(r"[A-Za-z][A-Za-z0-9_+.-]*", prefix) and len(prefix) > 1:
        message = f'unknown workload prefix "{prefix}:" (known: {known}; or a path to Job manifests)'
    else:
        message = f"no such file or folder (a workload is a path to Job manifests or one of {known})"
    raise ManifestError([Problem(spec, "", "", message)])


def check_queues(trace: Trace, bundle: Bundle) -> list[Problem]:
    """Jobs whose LocalQueue is not in the queues bundle (one problem per job, naming its source)."""
    out = []
    for job in trace.jobs:
        if (job.namespace, job.queue) not in bundle.local_queues:
            out.append(Problem(job.source, f"job/{job.name}", "queue",
                               f'unknown LocalQueue "{job.queue}" in namespace "{job.namespace}"'))
    return out


def __getattr__(name: str) -> Any:
    """Lazy re-exports, so `from simulator.trace import load_openb` works without import cycles."""
    if name in ("load_openb", "openb_nodes", "openb_node_manifests", "OPENB_QOS_PRIORITY"):
        from simulator import openb

        return getattr(openb, name)
    if name == "load_philly":
        from simulator import philly

        return philly.load_philly
    if name in ("generate_synthetic", "SyntheticSpec", "parse_synthetic_spec"):
        from simulator import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

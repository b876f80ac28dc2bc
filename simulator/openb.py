"""Alibaba cluster-trace-gpu-v2023 ("openb", the FGD paper's trace, USENIX ATC'23).

Pod lists (``openb_pod_list_*.csv``): one pod is one job, a single-pod workload.

- ``num_gpu > 1``: that many whole GPUs on one node (``nvidia.com/gpu`` = num_gpu x 1000 milli);
- ``num_gpu == 1``: ``gpu_milli`` of ONE GPU (1000 = the whole GPU, 460 = a 0.46 share);
- ``num_gpu == 0``: a CPU-only pod (``gpu_milli`` must be 0);
- ``cpu_milli`` and ``memory_mib`` become the ``cpu`` and ``memory`` requests;
- ``gpu_spec`` (GPU models separated by ``|``, empty: any) becomes a required node affinity
  ``nvidia.com/gpu.product In (models)``, the label `openb_nodes` sets;
- ``qos`` becomes the priority (`OPENB_QOS_PRIORITY`);
- ``creation_time`` is the submission time; the duration is ``deletion_time`` minus
  ``scheduled_time`` (the time the pod actually ran), or minus ``creation_time`` for pods
  never scheduled. Variants with only ``name, cpu_milli, memory_mib, num_gpu, gpu_milli`` load
  with submission 0, no duration (they are for fill mode) and priority 0.

Node lists (``openb_node_list_*.csv``: ``sn, cpu_milli, memory_mib, gpu, model``) become Node
manifests: the default cluster for an openb trace.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from quotas.base import label_value_problem
from quotas.kube import Node
from quotas.problems import ManifestError, Problem
from scheduler.affinity import NodeConstraints
from scheduler.cluster import GPU_RESOURCE, PodRequest
from scheduler.workload import PodSetInfo, WorkloadInfo
from simulator.cluster_gen import GPU_MODEL_LABEL, HOSTNAME_LABEL
from simulator.trace import Collector, SimJob, Trace, parse_int_option, sort_jobs, split_options

__all__ = [
    "OPENB_NODE_LIST",
    "OPENB_POD_LIST",
    "OPENB_QOS_PRIORITY",
    "load_openb",
    "load_openb_spec",
    "openb_node_list",
    "openb_node_manifests",
    "openb_nodes",
    "openb_pod_list",
]

OPENB_POD_LIST = "openb_pod_list_default.csv"
OPENB_NODE_LIST = "openb_node_list_gpu_node.csv"

OPENB_QOS_PRIORITY: dict[str, int] = {"LS": 1000, "Guaranteed": 500, "Burstable": 100, "BE": 10}
"""qos -> priority: latency-sensitive highest, best-effort lowest (same scale as the default
WorkloadPriorityClasses inference-high 1000, training 100, batch-low 10)."""

POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
MIB_MILLI = 1024 * 1024 * 1000


def openb_pod_list(path: str | Path) -> Path:
    """A pod-list CSV, or a folder's default pod list."""
    p = Path(path)
    return p / OPENB_POD_LIST if p.is_dir() else p


def openb_node_list(path: str | Path) -> Path:
    """The GPU node list for a folder, a pod list (the file beside it) or a node list itself."""
    p = Path(path)
    if p.is_dir():
        return p / OPENB_NODE_LIST
    if p.name.startswith("openb_node_list"):
        return p
    return p.parent / OPENB_NODE_LIST


def _read_rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) of a CSV; raises ManifestError if unreadable or columns are missing."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ManifestError([Problem(str(path), "", "", f"cannot read: {exc.strerror or exc}")]) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ManifestError([Problem(str(path), "", "", "empty file (expected a CSV header)")]) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ManifestError([Problem(f"{path}:1", "", "", f"not a CSV file: {exc}")]) from None
        missing = [c for c in required if c not in header]
        if missing:
            raise ManifestError([Problem(f"{path}:1", "", "", f"missing column(s) {', '.join(missing)} "
                                         f"(expected {', '.join(required)})")])
        rows = []
        try:
            for cells in reader:
                if cells and any(c.strip() for c in cells):
                    rows.append((reader.line_num, cells))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ManifestError([Problem(f"{path}:{reader.line_num}", "", "", f"not a CSV file: {exc}")]) from None
    return header, rows


def _cell_int(text: str, column: str, where: str, name: str, collect: Collector) -> int:
    """A non-negative integer cell (``12``, ``12.0``); -1 after reporting a bad one."""
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            as_float = float("nan")
        if not as_float.is_integer():
            collect.add(where, column, f'must be an integer, got "{text}"', f"pod/{name}" if name else "")
            return -1
        value = int(as_float)
    if value < 0:
        collect.add(where, column, f"must not be negative, got {value}", f"pod/{name}" if name else "")
        return -1
    return value


def _gpu_constraints(spec: str, cache: dict[str, NodeConstraints]) -> NodeConstraints:
    found = cache.get(spec)
    if found is None:
        models = list(dict.fromkeys(m.strip() for m in spec.split("|") if m.strip()))
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": GPU_MODEL_LABEL, "operator": "In", "values": models}]}]}}}
        found = cache[spec] = NodeConstraints.build(None, affinity if models else None)
    return found


def load_openb(
    path: str | Path,
    *,
    queue: str = "default",
    namespace: str = "default",
    limit: int | None = None,
    with_nodes: bool = True,
) -> Trace:
    """An openb pod list (or a folder: its default pod list) as single-pod jobs in ``namespace/queue``.

    ``limit`` keeps the first N rows. With ``with_nodes`` the node list beside it (if present)
    becomes ``Trace.nodes``. Raises ManifestError listing every bad row as ``file:line``.
    """
    file = openb_pod_list(path)
    header, rows = _read_rows(file, POD_COLUMNS)
    col = {name: i for i, name in enumerate(header)}
    i_name, i_cpu, i_mem, i_ngpu, i_gmilli = (col[c] for c in POD_COLUMNS)
    i_spec, i_qos = col.get("gpu_spec"), col.get("qos")
    i_create, i_delete, i_sched = col.get("creation_time"), col.get("deletion_time"), col.get("scheduled_time")
    width = len(header)
    collect = Collector()
    requests_cache: dict[tuple[int, int, int], PodRequest] = {}
    constraint_cache: dict[str, NodeConstraints] = {}
    unconstrained = NodeConstraints()
    jobs: list[SimJob] = []
    seen: dict[str, int] = {}
    if limit is not None:
        rows = rows[:limit]
    time_columns = ((i_create, "creation_time"), (i_sched, "scheduled_time"), (i_delete, "deletion_time"))
    file_name = str(file)
    for line, cells in rows:
        where = f"{file_name}:{line}"
        if len(cells) != width:
            collect.add(where, "", f"expected {width} columns, got {len(cells)}")
            continue
        name = cells[i_name].strip()
        try:  # fast path: every number well formed
            cpu, mem, num_gpu, gpu_milli = int(cells[i_cpu]), int(cells[i_mem]), int(cells[i_ngpu]), int(cells[i_gmilli])
            if cpu < 0 or mem < 0 or num_gpu < 0 or gpu_milli < 0 or not name:
                raise ValueError
        except ValueError:
            if not name:
                collect.add(where, "name", "required")
            for index, column in ((i_cpu, "cpu_milli"), (i_mem, "memory_mib"), (i_ngpu, "num_gpu"), (i_gmilli, "gpu_milli")):
                _cell_int(cells[index], column, where, name, collect)
            continue
        if num_gpu > 1:
            gpu = num_gpu * 1000
        elif num_gpu == 1:
            if not 1 <= gpu_milli <= 1000:
                collect.add(where, "gpu_milli", f"must be 1 to 1000 for a one-GPU pod, got {gpu_milli}", f"pod/{name}")
                continue
            gpu = gpu_milli
        else:
            if gpu_milli:
                collect.add(where, "gpu_milli", f"must be 0 when num_gpu is 0, got {gpu_milli}", f"pod/{name}")
                continue
            gpu = 0
        priority = 0
        if i_qos is not None:
            qos = cells[i_qos].strip()
            if qos:
                found = OPENB_QOS_PRIORITY.get(qos)
                if found is None:
                    collect.add(where, "qos", f'must be one of {", ".join(OPENB_QOS_PRIORITY)}, got "{qos}"', f"pod/{name}")
                    continue
                priority = found
        constraints = unconstrained
        if i_spec is not None:
            spec = cells[i_spec].strip()
            if spec:
                found_constraints = constraint_cache.get(spec)
                if found_constraints is None:
                    problem = next((label_value_problem(m.strip()) for m in spec.split("|") if label_value_problem(m.strip())), None)
                    if problem:
                        collect.add(where, "gpu_spec", f'GPU models must be label values separated by "|": {problem}, '
                                    f'got "{spec}"', f"pod/{name}")
                        continue
                    found_constraints = _gpu_constraints(spec, constraint_cache)
                constraints = found_constraints
        submit_at = 0.0
        duration: float | None = None
        if i_create is not None and cells[i_create].strip():
            try:  # fast path
                created = int(cells[i_create])
                started = int(cells[i_sched]) if i_sched is not None and cells[i_sched] else None
                deleted = int(cells[i_delete]) if i_delete is not None and cells[i_delete] else None
                if created < 0 or (started is not None and started < 0) or (deleted is not None and deleted < 0):
                    raise ValueError
            except ValueError:
                times = [_cell_int(cells[i], column, where, name, collect) if i is not None and cells[i].strip() else None
                         for i, column in time_columns]
                if any(t == -1 for t in times):
                    continue
                created, started, deleted = times  # whole-number floats such as "12.0"
                assert created is not None
            if started is None:
                started = created
            elif started < created:
                collect.add(where, "scheduled_time", f"is before creation_time ({started} < {created})", f"pod/{name}")
                continue
            if deleted is not None:
                if deleted < started:
                    column = "scheduled_time" if started != created else "creation_time"
                    collect.add(where, "deletion_time", f"is before {column} ({deleted} < {started})", f"pod/{name}")
                    continue
                duration = float(deleted - started)
            submit_at = float(created)
        if name in seen:
            collect.add(where, "name", f'duplicate of the pod at line {seen[name]}', f"pod/{name}")
            continue
        seen[name] = line
        key = (cpu, mem, gpu)
        request = requests_cache.get(key)
        if request is None:
            amounts = {"cpu": cpu, "memory": mem * MIB_MILLI}
            if gpu:
                amounts[GPU_RESOURCE] = gpu
            request = requests_cache[key] = PodRequest.of(amounts)
        podset = PodSetInfo("main", 1, request, constraints=constraints)
        workload = WorkloadInfo(namespace=namespace, name=name, local_queue=queue, podsets=(podset,),
                                priority=priority, creation_time=submit_at)
        jobs.append(SimJob(workload, submit_at, duration, where))
    if not jobs and not collect.errors:
        collect.add(str(file), "", "holds no pods")
    collect.raise_if_errors()
    nodes = None
    if with_nodes and openb_node_list(file).is_file():
        nodes = openb_nodes(file)
    return Trace(file.stem, sort_jobs(jobs), nodes=nodes, warnings=collect.warnings)


def _quantity_milli(amount: int) -> str:
    return str(amount // 1000) if amount % 1000 == 0 else f"{amount}m"


def openb_node_manifests(path: str | Path) -> list[dict[str, Any]]:
    """Node manifests (dicts) from an openb node list: a node-list CSV, or the one beside a pod list / in a folder.

    Each node: name and ``kubernetes.io/hostname`` = ``sn``; ``nvidia.com/gpu.product`` = ``model``
    (GPU nodes); allocatable and capacity ``cpu`` (cpu_milli), ``memory`` (memory_mib Mi) and
    ``nvidia.com/gpu`` (gpu, when > 0). No ``pods`` limit, as in the FGD paper's simulator.
    """
    file = openb_node_list(path)
    header, rows = _read_rows(file, NODE_COLUMNS)
    col = {name: i for i, name in enumerate(header)}
    collect = Collector()
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line, cells in rows:
        where = f"{file}:{line}"
        if len(cells) != len(header):
            collect.add(where, "", f"expected {len(header)} columns, got {len(cells)}")
            continue
        name = cells[col["sn"]].strip()
        values: dict[str, int] = {}
        bad = False
        for column in ("cpu_milli", "memory_mib", "gpu"):
            text = cells[col[column]].strip()
            try:
                values[column] = int(text)
            except ValueError:
                collect.add(where, column, f'must be an integer, got "{text}"', f"node/{name}")
                bad = True
                continue
            if values[column] < 0:
                collect.add(where, column, f"must not be negative, got {text}", f"node/{name}")
                bad = True
        model = cells[col["model"]].strip()
        if not name:
            collect.add(where, "sn", "required")
            bad = True
        elif name in seen:
            collect.add(where, "sn", f"duplicate of the node at line {seen[name]}", f"node/{name}")
            bad = True
        if model and label_value_problem(model):
            collect.add(where, "model", f'{label_value_problem(model)}, got "{model}"', f"node/{name}")
            bad = True
        if bad:
            continue
        seen[name] = line
        resources = {"cpu": _quantity_milli(values["cpu_milli"]), "memory": f"{values['memory_mib']}Mi"}
        labels = {HOSTNAME_LABEL: name}
        if values["gpu"]:
            resources[GPU_RESOURCE] = str(values["gpu"])
            if model:
                labels[GPU_MODEL_LABEL] = model
        out.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                    "status": {"capacity": dict(resources), "allocatable": resources}})
    if not out and not collect.errors:
        collect.add(str(file), "", "holds no nodes")
    collect.raise_if_errors()
    return out


def openb_nodes(path: str | Path) -> list[Node]:
    """`openb_node_manifests` parsed into `quotas.kube.Node` models (``Cluster.from_nodes`` takes them)."""
    return [Node.model_validate(m) for m in openb_node_manifests(path)]


def load_openb_spec(text: str, *, queue: str = "default") -> Trace:
    """``openb:PATH[,queue=Q][,namespace=NS][,limit=N]`` (the part after ``openb:``)."""
    collect = Collector()
    where = f"openb:{text}"
    path, options = split_options(text, ("queue", "namespace", "limit"), where, collect)
    limit = parse_int_option(options, "limit", where, collect, low=1)
    collect.raise_if_errors()
    if not Path(path).exists():
        raise ManifestError([Problem(path or where, "", "", "no such file or folder")])
    return load_openb(path, queue=options.get("queue", queue), namespace=options.get("namespace", "default"), limit=limit)


def qos_of(priority: int, table: Mapping[str, int] = OPENB_QOS_PRIORITY) -> str | None:
    """The qos a priority came from (for reports)."""
    return next((qos for qos, value in table.items() if value == priority), None)

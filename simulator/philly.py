"""The Microsoft Philly trace (2017) as processed by the Pollux (OSDI'21) and Sia (SOSP'23) artifacts.

CSV columns ``timestamp, duration, num_gpus, gpu_time, cluster``: submission time (the
trace's own clock, ``2017-10-09 07:01:55``), run time in seconds, GPUs, GPU-seconds (not
used: it is duration x num_gpus) and the virtual cluster.

Each row is one training job, an all-or-nothing gang on 8-GPU servers (`gang_podsets`):
up to 8 GPUs one pod; above, pods of 8 GPUs plus one pod with the remainder (12 GPUs =
8 + 4), all in one Workload, so it is admitted whole or not at all. The virtual cluster,
sanitised to a DNS label, is both the namespace and the LocalQueue. Philly has no CPU or
memory columns: pods request only GPUs unless ``cpu_per_gpu`` / ``memory_per_gpu`` are given.

Submission times are seconds since the window's ``start`` (or, without one, since the
earliest kept job). Only jobs submitted inside ``[start, end)`` are kept, so the cluster
starts empty; ``limit`` keeps the first N of them in submission order.
"""

from __future__ import annotations

import csv
import re
from datetime import datetime, timezone
from pathlib import Path

from quotas.problems import ManifestError, Problem
from quotas.quantity import parse_quantity
from quotas.units import milli
from scheduler.workload import PodSetInfo, WorkloadInfo
from simulator.trace import Collector, SimJob, Trace, gang_podsets, parse_int_option, split_options

__all__ = ["PHILLY_JOBS", "load_philly", "load_philly_spec", "parse_time", "sanitize_label"]

PHILLY_JOBS = "philly_pollux_processed.csv"
COLUMNS = ("timestamp", "duration", "num_gpus", "cluster")


def sanitize_label(text: str, fallback: str = "vc") -> str:
    """A DNS-1123 label from free text: lower case, runs of other characters -> ``-``, at most 63."""
    label = re.sub(r"[^a-z0-9]+", "-", text.strip().lower()).strip("-")[:63].strip("-")
    return label or fallback


def parse_time(value: str | datetime) -> float:
    """Epoch seconds of an ISO date or date-time (``2017-10-01``, ``2017-10-01 06:00:00``), read as UTC."""
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def load_philly(
    path: str | Path,
    *,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    limit: int | None = None,
    gpus_per_node: int = 8,
    cpu_per_gpu: str | int | None = None,
    memory_per_gpu: str | int | None = None,
    _collect: Collector | None = None,
) -> Trace:
    """The processed Philly CSV (or a folder holding ``philly_pollux_processed.csv``) as gangs.

    Every row is checked, also outside the window; every bad row is reported as ``file:line``.
    """
    file = Path(path)
    if file.is_dir():
        file = file / PHILLY_JOBS
    collect = _collect or Collector()
    bounds: list[float | None] = []
    for option, value in (("start", start), ("end", end)):
        if value is None:
            bounds.append(None)
            continue
        try:
            bounds.append(parse_time(value))
        except ValueError:
            collect.add(f"philly:{path}", option, f'must be an ISO date or time such as 2017-10-01 or 2017-10-01T06:00:00, got "{value}"')
            bounds.append(None)
    low, high = bounds
    if low is not None and high is not None and high <= low:
        collect.add(f"philly:{path}", "end", f"must be after start ({start})")
    per_gpu: dict[str, int] = {}
    for resource, value in (("cpu", cpu_per_gpu), ("memory", memory_per_gpu)):
        if value is None:
            continue
        try:
            per_gpu[resource] = milli(parse_quantity(value))
            if per_gpu[resource] < 0:
                raise ValueError
        except ValueError:
            collect.add(f"philly:{path}", f"{resource}_per_gpu", f"must be a non-negative quantity, got {value!r}")
    if gpus_per_node < 1:
        collect.add(f"philly:{path}", "gpus_per_node", f"must be at least 1, got {gpus_per_node}")
    collect.raise_if_errors()

    try:
        handle = file.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ManifestError([Problem(str(file), "", "", f"cannot read: {exc.strerror or exc}")]) from None
    rows: list[tuple[float, int, str, float, int, str]] = []  # submit, line, where, duration, gpus, vc
    stamp_cache: dict[str, float] = {}
    with handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ManifestError([Problem(f"{file}:1", "", "", f"missing column(s) {', '.join(missing)} "
                                         f"(expected timestamp, duration, num_gpus, gpu_time, cluster)")])
        i_ts, i_dur, i_gpus, i_vc = (header.index(c) for c in COLUMNS)
        for cells in reader:
            line = reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue
            where = f"{file}:{line}"
            if len(cells) != len(header):
                collect.add(where, "", f"expected {len(header)} columns, got {len(cells)}")
                continue
            bad = False
            text = cells[i_ts].strip()
            submit = stamp_cache.get(text)
            if submit is None:
                try:
                    submit = stamp_cache[text] = parse_time(text)
                except ValueError:
                    collect.add(where, "timestamp", f'must be a date-time such as 2017-10-09 07:01:55, got "{text}"')
                    bad = True
            text = cells[i_dur].strip()
            try:
                duration = float(text)
                if not duration >= 0 or duration == float("inf"):
                    raise ValueError
            except ValueError:
                collect.add(where, "duration", f'must be a non-negative number of seconds, got "{text}"')
                bad = True
            text = cells[i_gpus].strip()
            try:
                as_float = float(text)
                if not as_float.is_integer() or as_float < 1:
                    raise ValueError
                gpus = int(as_float)
            except ValueError:
                collect.add(where, "num_gpus", f'must be a whole number of GPUs, at least 1, got "{text}"')
                bad = True
            vc = cells[i_vc].strip()
            if not vc:
                collect.add(where, "cluster", "required (the virtual cluster)")
                bad = True
            if bad:
                continue
            assert submit is not None
            if (low is not None and submit < low) or (high is not None and submit >= high):
                continue
            rows.append((submit, line, where, duration, gpus, vc))
    collect.raise_if_errors()
    rows.sort(key=lambda r: (r[0], r[1]))
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        window = f" between {start or 'the beginning'} and {end or 'the end'}" if (start or end) else ""
        raise ManifestError([Problem(str(file), "", "", f"holds no jobs{window}")])
    origin = low if low is not None else rows[0][0]
    queues: dict[str, str] = {}
    gangs: dict[int, tuple[PodSetInfo, ...]] = {}  # podsets are immutable: share them between jobs
    jobs: list[SimJob] = []
    for submit, line, where, duration, gpus, vc in rows:
        queue = queues.get(vc)
        if queue is None:
            queue = queues[vc] = sanitize_label(vc)
        at = submit - origin
        podsets = gangs.get(gpus)
        if podsets is None:
            podsets = gangs[gpus] = gang_podsets(gpus, gpus_per_node, per_gpu)
        workload = WorkloadInfo(
            namespace=queue,
            name=f"philly-{line}",
            local_queue=queue,
            podsets=podsets,
            creation_time=at,
        )
        jobs.append(SimJob(workload, at, duration, where))
    return Trace(file.stem, jobs)


def load_philly_spec(text: str) -> Trace:
    """``philly:PATH[,start=ISO][,end=ISO][,limit=N][,gpus_per_node=8][,cpu_per_gpu=Q][,memory_per_gpu=Q]``."""
    collect = Collector()
    where = f"philly:{text}"
    known = ("start", "end", "limit", "gpus_per_node", "cpu_per_gpu", "memory_per_gpu")
    path, options = split_options(text, known, where, collect)
    limit = parse_int_option(options, "limit", where, collect, low=1)
    per_node = parse_int_option(options, "gpus_per_node", where, collect, low=1)
    if not Path(path).exists():
        collect.add(path or where, "", "no such file or folder")
        collect.raise_if_errors()
    return load_philly(
        path,
        start=options.get("start"),
        end=options.get("end"),
        limit=limit,
        gpus_per_node=per_node or 8,
        cpu_per_gpu=options.get("cpu_per_gpu"),
        memory_per_gpu=options.get("memory_per_gpu"),
        _collect=collect,  # option problems are reported together with the window's
    )

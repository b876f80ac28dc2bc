"""The simulator's results database (``results.sqlite`` in ``tessera simulate --out DIR``).

The only module of the simulator that talks SQL (the project keeps SQL in dedicated
modules: the usage ledger in ``quotas/ledger.py``, simulation results here). SQLAlchemy 2
with typed declarative mappings; the schema is created on write, there are no migrations:
a results file is written once per run of the simulator and then only read.

Tables
------
``runs``
    One row per policy run: ``policy``, ``started`` (UTC, when the results were written),
    ``seed``, ``mode`` (``replay``/``fill``), ``description`` (JSON: the setup, such as the
    cluster's nodes and GPUs and the workload spec), ``gpu_capacity`` (GPUs in the cluster),
    the whole ``metrics`` object of DESIGN.md as JSON, the main metrics again as columns
    (``gpu_utilization``, ``mean_wait_s``, ... so they can be queried with plain SQL), and the
    scheduling cycles' wall-clock durations (``cycle_seconds``, a JSON list of seconds).
``workloads``
    One row per workload and run (``run_id``): the workload's identity, ClusterQueue, type and
    GPUs, its last ``submitted_at``/``admitted_at``/``started_at``/``finished_at`` (simulated
    seconds; NULL when it never got there), ``preemptions``, ``evictions``, ``flavor``,
    ``nodes`` (JSON text, a list of node names), the last ``pending_reason`` and ``deactivated``.
``samples``
    The cluster after each simulated instant: ``run_id``, ``seq`` (0, 1, ... in time order),
    ``at`` (simulated seconds; in fill mode the arrived GPU demand in percent of capacity),
    ``allocated_gpus``, ``waiting`` and ``running`` workloads.
``queue_usage``
    GPUs held (quota reserved by admitted workloads) per ClusterQueue at each sample:
    ``run_id``, ``seq`` and ``at`` of the sample, ``cluster_queue``, ``gpus``. A ClusterQueue
    holding nothing at a sample has no row there.

Example::

    sqlite3 results.sqlite "select policy, gpu_utilization, mean_wait_s from runs"
    sqlite3 results.sqlite "select r.policy, w.name, w.started_at - w.submitted_at as wait
                             from workloads w join runs r on r.id = w.run_id order by wait desc limit 10"
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from simulator.engine import RunResult

__all__ = [
    "METRIC_COLUMNS",
    "RESULTS_FILE",
    "Base",
    "QueueUsageRow",
    "RunRow",
    "SampleRow",
    "StoredRun",
    "WorkloadRow",
    "read_runs",
    "write_results",
]

RESULTS_FILE: Final = "results.sqlite"
"""The file name ``--out DIR`` writes the database to."""

METRIC_COLUMNS: Final[tuple[str, ...]] = (
    "gpu_utilization",
    "gpu_utilization_busy",
    "workloads",
    "admitted",
    "finished",
    "never_admitted",
    "preemptions",
    "evictions",
    "mean_wait_s",
    "p95_wait_s",
    "mean_jct_s",
    "makespan_s",
    "cycle_latency_p50_ms",
    "cycle_latency_p99_ms",
    "unallocated_gpus",
)
"""Metrics (DESIGN.md's ``metrics`` keys) that ``runs`` also holds as columns; NULL when a run lacks one."""

_json: Final = json.JSONEncoder().encode
_INT_METRICS: Final = frozenset({"workloads", "admitted", "finished", "never_admitted", "preemptions", "evictions"})


class _UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored naive (SQLite keeps no zone) and read back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    """One policy run."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy: Mapped[str] = mapped_column(String(64))
    started: Mapped[datetime] = mapped_column(_UTCDateTime)
    seed: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    description: Mapped[Any] = mapped_column(JSON, nullable=True)
    gpu_capacity: Mapped[float] = mapped_column(Double)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    cycle_seconds: Mapped[list[float]] = mapped_column(JSON)

    gpu_utilization: Mapped[float | None] = mapped_column(Double)
    gpu_utilization_busy: Mapped[float | None] = mapped_column(Double)
    workloads: Mapped[int | None] = mapped_column(Integer)
    admitted: Mapped[int | None] = mapped_column(Integer)
    finished: Mapped[int | None] = mapped_column(Integer)
    never_admitted: Mapped[int | None] = mapped_column(Integer)
    preemptions: Mapped[int | None] = mapped_column(Integer)
    evictions: Mapped[int | None] = mapped_column(Integer)
    mean_wait_s: Mapped[float | None] = mapped_column(Double)
    p95_wait_s: Mapped[float | None] = mapped_column(Double)
    mean_jct_s: Mapped[float | None] = mapped_column(Double)
    makespan_s: Mapped[float | None] = mapped_column(Double)
    cycle_latency_p50_ms: Mapped[float | None] = mapped_column(Double)
    cycle_latency_p99_ms: Mapped[float | None] = mapped_column(Double)
    unallocated_gpus: Mapped[float | None] = mapped_column(Double)


class WorkloadRow(Base):
    """One workload of one run, as it ended the run."""

    __tablename__ = "workloads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(253))
    namespace: Mapped[str] = mapped_column(String(63))
    queue: Mapped[str] = mapped_column(String(253))
    cluster_queue: Mapped[str | None] = mapped_column(String(253))
    type: Mapped[str] = mapped_column(String(16))
    gpus: Mapped[float] = mapped_column(Double)
    submitted_at: Mapped[float] = mapped_column(Double)
    admitted_at: Mapped[float | None] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)
    preemptions: Mapped[int] = mapped_column(Integer)
    evictions: Mapped[int] = mapped_column(Integer)
    flavor: Mapped[str | None] = mapped_column(String(253))
    nodes: Mapped[str] = mapped_column(Text)  # JSON list of node names
    pending_reason: Mapped[str] = mapped_column(Text)
    deactivated: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (Index("ix_workloads_run", "run_id", "cluster_queue"),)


class SampleRow(Base):
    """The cluster at one simulated instant of one run."""

    __tablename__ = "samples"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Double)
    allocated_gpus: Mapped[float] = mapped_column(Double)
    waiting: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer)

    __table_args__ = {"sqlite_with_rowid": False}  # rows live in the primary key's b-tree: one write each


class QueueUsageRow(Base):
    """GPUs held by one ClusterQueue at one sample of one run."""

    __tablename__ = "queue_usage"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_queue: Mapped[str] = mapped_column(String(253), primary_key=True)
    at: Mapped[float] = mapped_column(Double)
    gpus: Mapped[float] = mapped_column(Double)

    __table_args__ = {"sqlite_with_rowid": False}


# --------------------------------------------------------------------------- writing


def _engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # An output file written in one go: a crash leaves it to be rewritten, not repaired.
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    return engine


def _insert_many(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """One INSERT compiled from the table, run with the driver's executemany over tuples.

    ``session.execute(insert(table), rows)`` does the same but builds every row's parameters
    in Python first, which is two thirds of the time for the ~10^6 rows of a large run.
    The values are plain floats, ints, strings, booleans and None (the caller converts), which
    the driver binds as they are.
    """
    if not rows:
        return
    connection = session.connection()
    compiled = insert(table).compile(dialect=connection.dialect, column_keys=list(rows[0]))
    order = compiled.positiontup
    if order is None or len(order) < 2:  # not a positional dialect: let SQLAlchemy bind the dicts
        session.execute(insert(table), rows)
        return
    values = itemgetter(*order)
    connection.exec_driver_sql(compiled.string, [values(row) for row in rows])


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _metric(metrics: Mapping[str, Any], name: str) -> float | int | None:
    value = metrics.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if name in _INT_METRICS else float(value)


def write_results(
    path: str | Path,
    results: Iterable[RunResult],
    *,
    seed: int | None,
    mode: str,
    description: Mapping[str, Any] | str | None = None,
    started: datetime | None = None,
    replace: bool = True,
) -> None:
    """Write the runs to the SQLite file ``path`` (its folder must exist).

    ``description`` is stored as JSON (a mapping such as {"cluster": ..., "workload": ...}, or
    text); ``started`` (default: now) is when the simulation started, naive values taken as UTC.
    ``replace`` (the default) starts a new file; ``replace=False`` appends the runs to an
    existing one. Rows go in with executemany, in one transaction: 10,000 workloads times five
    policies take a second or two.
    """
    path = Path(path)
    if replace and path.exists():
        path.unlink()
    if started is None:
        started = datetime.now(timezone.utc)
    elif started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    engine = _engine(path)
    try:
        Base.metadata.create_all(engine)
        workloads_table = WorkloadRow.__table__
        samples_table = SampleRow.__table__
        usage_table = QueueUsageRow.__table__
        with Session(engine) as session, session.begin():
            for result in results:
                metrics = dict(result.metrics)
                run = RunRow(
                    policy=result.policy,
                    started=started,
                    seed=seed,
                    mode=mode,
                    description=description,
                    gpu_capacity=float(result.gpu_capacity),
                    metrics=metrics,
                    cycle_seconds=[float(s) for s in result.cycle_seconds],
                    **{name: _metric(metrics, name) for name in METRIC_COLUMNS},
                )
                session.add(run)
                session.flush()
                run_id = run.id
                workload_rows = [
                    {
                        "run_id": run_id,
                        "name": w.name,
                        "namespace": w.namespace,
                        "queue": w.queue,
                        "cluster_queue": w.cluster_queue,
                        "type": w.workload_type,
                        "gpus": float(w.gpus),
                        "submitted_at": float(w.submitted_at),
                        "admitted_at": _float(w.admitted_at),
                        "started_at": _float(w.started_at),
                        "finished_at": _float(w.finished_at),
                        "preemptions": int(w.preemptions),
                        "evictions": int(w.evictions),
                        "flavor": w.flavor,
                        "nodes": _json(list(w.nodes)),
                        "pending_reason": w.pending_reason or "",
                        "deactivated": bool(w.deactivated),
                    }
                    for w in result.workloads
                ]
                sample_rows = []
                usage_rows = []
                for seq, s in enumerate(result.samples):
                    sample_rows.append(
                        {
                            "run_id": run_id,
                            "seq": seq,
                            "at": float(s.at),
                            "allocated_gpus": float(s.allocated_gpus),
                            "waiting": int(s.waiting),
                            "running": int(s.running),
                        }
                    )
                    usage_rows.extend(
                        {"run_id": run_id, "seq": seq, "at": float(s.at), "cluster_queue": queue, "gpus": float(gpus)}
                        for queue, gpus in s.usage_by_queue.items()
                    )
                _insert_many(session, workloads_table, workload_rows)
                _insert_many(session, samples_table, sample_rows)
                _insert_many(session, usage_table, usage_rows)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- reading


@dataclass
class StoredRun:
    """A run as read back: the database's own columns and the rebuilt :class:`RunResult`."""

    id: int
    policy: str
    started: datetime
    seed: int | None
    mode: str
    description: Any
    result: RunResult


def read_runs(path: str | Path) -> list[StoredRun]:
    """Every run in the file, in the order written, with its workloads and samples.

    The rebuilt ``RunResult`` equals the one written (floats round-trip exactly).
    """
    from simulator.engine import RunResult, Sample, WorkloadRecord  # only reading needs the engine's types

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results database")
    engine = _engine(path)
    stored: list[StoredRun] = []
    try:
        with Session(engine) as session:
            runs = session.scalars(select(RunRow).order_by(RunRow.id)).all()
            for run in runs:
                w = WorkloadRow.__table__.c
                workloads = [
                    WorkloadRecord(
                        name=row.name,
                        namespace=row.namespace,
                        queue=row.queue,
                        submitted_at=row.submitted_at,
                        cluster_queue=row.cluster_queue,
                        workload_type=row.type,
                        gpus=row.gpus,
                        admitted_at=row.admitted_at,
                        started_at=row.started_at,
                        finished_at=row.finished_at,
                        preemptions=row.preemptions,
                        evictions=row.evictions,
                        flavor=row.flavor,
                        nodes=list(json.loads(row.nodes)),
                        pending_reason=row.pending_reason,
                        deactivated=bool(row.deactivated),
                    )
                    for row in session.execute(select(WorkloadRow.__table__).where(w.run_id == run.id).order_by(w.id))
                ]
                usage: dict[int, dict[str, float]] = {}
                for u in session.execute(
                    select(QueueUsageRow.seq, QueueUsageRow.cluster_queue, QueueUsageRow.gpus)
                    .where(QueueUsageRow.run_id == run.id)
                    .order_by(QueueUsageRow.seq)
                ):
                    usage.setdefault(u.seq, {})[u.cluster_queue] = u.gpus
                samples = [
                    Sample(
                        at=s.at,
                        allocated_gpus=s.allocated_gpus,
                        waiting=s.waiting,
                        running=s.running,
                        usage_by_queue=usage.get(s.seq, {}),
                    )
                    for s in session.execute(
                        select(SampleRow.__table__)
                        .where(SampleRow.__table__.c.run_id == run.id)
                        .order_by(SampleRow.seq)
                    )
                ]
                result = RunResult(
                    policy=run.policy,
                    metrics=dict(run.metrics),
                    workloads=workloads,
                    samples=samples,
                    cycle_seconds=list(run.cycle_seconds),
                    gpu_capacity=run.gpu_capacity,
                )
                stored.append(
                    StoredRun(
                        id=run.id,
                        policy=run.policy,
                        started=run.started,
                        seed=run.seed,
                        mode=run.mode,
                        description=run.description,
                        result=result,
                    )
                )
    finally:
        engine.dispose()
    return stored

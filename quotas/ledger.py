"""The usage ledger: who used how many GPU-seconds, in which queue, flavor and namespace.

The only module of Tessera that talks SQL (SQLAlchemy 2, typed declarative mappings). The
schema is created and upgraded by the alembic migrations shipped in
``quotas/migrations/`` whenever a :class:`Ledger` is opened; users need no ``alembic.ini``.

What is recorded
----------------
One row of ``ledger_intervals`` per *usage interval*: a workload admitted at ``admitted_at``
and, once it stops using its quota, ended at ``ended_at`` with ``end_reason`` ``Finished``
(completion), ``Preempted`` or ``Evicted``. A workload that is preempted and admitted again
gets a second interval. Each interval carries the workload key (``namespace/name``), its
namespace, ClusterQueue, LocalQueue (name, in the workload's namespace), flavor, workload type
(``training``/``inference``) and requests. Requests are summed over all pods of the workload;
GPUs are first class (``gpus`` and, once ended, ``gpu_seconds``); every resource, GPUs included,
also has a row in ``ledger_interval_resources`` (``quantity`` and, once ended,
``resource_seconds``), flagged ``accelerator`` when it counts as a GPU.

So an interval contributes ``requests × (ended_at − admitted_at)`` resource-seconds; while it
is open it counts up to "now". Admissions, preemptions, evictions and completions are the
interval's two timestamps, so counting them is counting rows.

Timestamps are **float epoch seconds** (UTC, as ``time.time()`` returns; ``datetime`` values
are accepted and converted, naive ones taken as UTC). The simulator may use simulated seconds
instead: only differences and comparisons matter.

Windows (``usage(since=...)``): an interval straddling ``since`` counts only its part after
``since``; events (admission, end) count when their timestamp lies in ``[since, now]``.

Concurrency: every write is one short transaction. On SQLite the ledger uses WAL journaling,
a busy timeout and ``BEGIN IMMEDIATE`` for writes, so several processes can append to the
same file; on PostgreSQL ordinary transactions do it. A partial unique index forbids two open
intervals for the same workload.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ColumnElement,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    and_,
    case,
    create_engine,
    event,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from quotas.admission_fair_sharing import DEFAULT_SAMPLING_INTERVAL, UsageInterval, consumed_from_history
from quotas.quantity import parse_quantity

__all__ = [
    "DEFAULT_LEDGER_URL",
    "END_REASONS",
    "GROUP_BY",
    "WORKLOAD_TYPES",
    "Base",
    "EndReason",
    "GroupBy",
    "IntervalRecord",
    "Ledger",
    "LedgerError",
    "UsageInterval",
    "UsageRow",
    "WorkloadInterval",
    "alembic_config",
    "is_gpu_resource",
    "ledger_url",
    "normalize_group_by",
    "sqlite_path",
]

DEFAULT_LEDGER_URL: Final = "sqlite:///tessera-ledger.sqlite"
"""The default ledger: the SQLite file ``tessera-ledger.sqlite`` in the current directory."""

VERSION_TABLE: Final = "ledger_alembic_version"
"""Alembic's bookkeeping table; named so the ledger can share a PostgreSQL schema with other alembic users."""

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")

EndReason = Literal["Finished", "Preempted", "Evicted"]
END_REASONS: Final[tuple[str, ...]] = get_args(EndReason)
WorkloadType = Literal["training", "inference"]
WORKLOAD_TYPES: Final[tuple[str, ...]] = get_args(WorkloadType)
GroupBy = Literal["queue", "namespace", "flavor", "cluster_queue", "workload_type"]
GROUP_BY: Final[tuple[str, ...]] = get_args(GroupBy)

BUSY_TIMEOUT_SECONDS: Final = 30.0
_WRITE: Final = "tessera_ledger_write"
_MIGRATION_LOCK_KEY: Final = 0x7E55E7A  # PostgreSQL advisory lock taken while migrating
_HISTORY_HALF_LIVES: Final = 64  # older intervals contribute < 2^-64 of their usage: not read

Timestamp = float | int | datetime
Amount = float | int | str | Decimal


class LedgerError(Exception):
    """The ledger cannot be opened or written (bad URL, unreachable server, not a database, ...)."""


def is_gpu_resource(name: str) -> bool:
    """Whether a resource name counts as GPUs: ``*/gpu`` (nvidia.com/gpu, amd.com/gpu, ...) and NVIDIA MIG slices."""
    return name.endswith("/gpu") or name.startswith("nvidia.com/mig-")


# --------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    pass


class WorkloadInterval(Base):
    """One usage interval: a workload admitted at ``admitted_at`` until ``ended_at`` (NULL while admitted)."""

    __tablename__ = "ledger_intervals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload: Mapped[str] = mapped_column(String(317))  # "namespace/name"
    namespace: Mapped[str] = mapped_column(String(63))
    cluster_queue: Mapped[str] = mapped_column(String(253))
    local_queue: Mapped[str] = mapped_column(String(253))  # name, in `namespace`
    flavor: Mapped[str | None] = mapped_column(String(253))
    workload_type: Mapped[str] = mapped_column(String(16))
    admitted_at: Mapped[float] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)
    end_reason: Mapped[str | None] = mapped_column(String(16))
    gpus: Mapped[float] = mapped_column(Double)
    gpu_seconds: Mapped[float | None] = mapped_column(Double)  # gpus × (ended_at − admitted_at), once ended

    resources: Mapped[list[IntervalResource]] = relationship(
        back_populates="interval", cascade="all, delete-orphan", lazy="selectin", order_by="IntervalResource.resource"
    )

    __table_args__ = (
        CheckConstraint("workload_type IN ('training', 'inference')", name="ck_ledger_intervals_workload_type"),
        CheckConstraint(
            "end_reason IS NULL OR end_reason IN ('Finished', 'Preempted', 'Evicted')",
            name="ck_ledger_intervals_end_reason",
        ),
        CheckConstraint("(ended_at IS NULL) = (end_reason IS NULL)", name="ck_ledger_intervals_ended"),
        CheckConstraint("ended_at IS NULL OR ended_at >= admitted_at", name="ck_ledger_intervals_order"),
        CheckConstraint("gpus >= 0", name="ck_ledger_intervals_gpus"),
        Index("ix_ledger_intervals_workload", "workload"),
        Index("ix_ledger_intervals_local_queue", "namespace", "local_queue"),
        Index("ix_ledger_intervals_admitted_at", "admitted_at"),
        Index("ix_ledger_intervals_ended_at", "ended_at"),
        Index(
            "uq_ledger_intervals_open",
            "workload",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )


class IntervalResource(Base):
    """The request of one resource in an interval (summed over pods), in the resource's base unit."""

    __tablename__ = "ledger_interval_resources"

    interval_id: Mapped[int] = mapped_column(
        ForeignKey("ledger_intervals.id", ondelete="CASCADE", name="fk_ledger_interval_resources_interval"),
        primary_key=True,
    )
    resource: Mapped[str] = mapped_column(String(317), primary_key=True)
    quantity: Mapped[float] = mapped_column(Double)
    accelerator: Mapped[bool] = mapped_column(Boolean)
    resource_seconds: Mapped[float | None] = mapped_column(Double)  # quantity × duration, once ended

    interval: Mapped[WorkloadInterval] = relationship(back_populates="resources")

    __table_args__ = (
        CheckConstraint("quantity >= 0", name="ck_ledger_interval_resources_quantity"),
        Index("ix_ledger_interval_resources_resource", "resource"),
    )


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class IntervalRecord:
    """A usage interval as read back (plain data, detached from the database)."""

    id: int
    workload: str
    namespace: str
    cluster_queue: str
    local_queue: str
    flavor: str | None
    workload_type: str
    admitted_at: float
    ended_at: float | None
    end_reason: str | None
    gpus: float
    gpu_seconds: float | None
    requests: dict[str, float]
    resource_seconds: dict[str, float | None]

    @property
    def local_queue_key(self) -> str:
        return f"{self.namespace}/{self.local_queue}"


@dataclass
class UsageRow:
    """Usage of one key (a LocalQueue ``namespace/name``, namespace, flavor, ClusterQueue or workload type).

    ``gpu_seconds`` sums every accelerator resource; ``resource_seconds`` holds the *other*
    resources by name, in base-unit-seconds (CPU core-seconds, memory byte-seconds, ...).
    Counts are of events inside the window; ``running`` counts intervals open at ``now``.
    """

    key: str | None
    gpu_seconds: float = 0.0
    resource_seconds: dict[str, float] = field(default_factory=dict)
    admissions: int = 0
    preemptions: int = 0
    evictions: int = 0
    completions: int = 0
    running: int = 0

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600.0

    def add(self, other: UsageRow) -> None:
        self.gpu_seconds += other.gpu_seconds
        for name, value in other.resource_seconds.items():
            self.resource_seconds[name] = self.resource_seconds.get(name, 0.0) + value
        self.admissions += other.admissions
        self.preemptions += other.preemptions
        self.evictions += other.evictions
        self.completions += other.completions
        self.running += other.running

    @classmethod
    def total(cls, rows: Iterable[UsageRow]) -> UsageRow:
        out = cls(key=None)
        for row in rows:
            out.add(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpu_hours"] = self.gpu_hours
        data["resource_seconds"] = dict(sorted(self.resource_seconds.items()))
        return data


# --------------------------------------------------------------------------- URLs and engines


def ledger_url(value: str | None = None) -> str:
    """The SQLAlchemy URL for ``--ledger``: the default file if None, a URL as is, a plain path as a SQLite file."""
    if value is None or value == "":
        return DEFAULT_LEDGER_URL
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser()}"


def sqlite_path(url: str | URL) -> Path | None:
    """The file a SQLite URL names, or None (not SQLite, in-memory, or a ``file:`` URI).

    Raises :class:`LedgerError` if ``url`` is not a valid URL.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise LedgerError(f"not a valid ledger URL: {url!s}: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database)


def _display(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _epoch(value: Timestamp, what: str = "time") -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be epoch seconds or a datetime, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be finite, got {value}")
    return seconds


def _amount(name: str, value: Amount) -> float:
    try:
        number = float(parse_quantity(value)) if isinstance(value, (str, Decimal)) else float(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"request {name}: {exc}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ValueError(f"request {name}: must be a finite quantity >= 0, got {value!r}")
    return number


def _switch_to_wal(cursor: Any) -> None:
    """Put the database in WAL mode, waiting out other processes doing the same.

    SQLite answers "database is locked" at once, without its busy handler, when two
    connections switch a new database's journal mode together, so the wait is ours.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)


def _install_sqlite_pragmas(engine: Engine, in_memory: bool) -> None:
    """WAL, busy timeout, foreign keys; and SQLAlchemy (not pysqlite) emits BEGIN, IMMEDIATE for writes."""
    busy_ms = int(BUSY_TIMEOUT_SECONDS * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not BEGIN on its own
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if not in_memory:
                _switch_to_wal(cursor)
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _make_engine(url: URL) -> Engine:
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_SECONDS}
    elif backend == "postgresql":
        kwargs["pool_pre_ping"] = True
        if url.get_driver_name() in ("psycopg", "psycopg2", "psycopg2cffi", "pg8000"):
            key = "timeout" if url.get_driver_name() == "pg8000" else "connect_timeout"
            kwargs["connect_args"] = {key: 10}
    engine = create_engine(url, **kwargs)
    if backend == "sqlite":
        _install_sqlite_pragmas(engine, in_memory=sqlite_path(url) is None)
    return engine


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """An alembic ``Config`` for the ledger's migrations, built in code (no alembic.ini).

    Pass an open ``connection`` to migrate through it, or a ``url`` (for offline ``--sql`` use).
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_T = TypeVar("_T")


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """The usage ledger at a SQLAlchemy URL (default: ``sqlite:///tessera-ledger.sqlite``).

    Opening creates the database (SQLite) and runs the migrations up to head. Every method
    is one transaction; a Ledger may be shared by threads, and many processes may open the
    same database. Raises :class:`LedgerError` when the database cannot be opened or used.
    """

    def __init__(self, url: str | URL | None = None, *, gpu_resource: Callable[[str], bool] = is_gpu_resource) -> None:
        try:
            self.url: URL = make_url(ledger_url(url) if url is None or isinstance(url, str) else url)
        except ArgumentError as exc:
            raise LedgerError(f"not a valid ledger URL: {url!s}: {exc}") from None
        self._gpu_resource = gpu_resource
        try:
            self._engine = _make_engine(self.url)
        except (ImportError, SQLAlchemyError) as exc:
            raise LedgerError(f"{_display(self.url)}: cannot open the ledger: {exc}") from None
        try:
            self._migrate()
        except (SQLAlchemyError, OSError) as exc:
            self._engine.dispose()
            raise LedgerError(f"{_display(self.url)}: cannot open the ledger: {_short(exc)}") from None
        except ImportError as exc:
            self._engine.dispose()
            raise LedgerError(f"{_display(self.url)}: database driver missing: {exc}") from None

    def __repr__(self) -> str:
        return f"Ledger({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return _display(self.url)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    # -- plumbing

    def _migrate(self) -> None:
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = alembic_config()
        head = ScriptDirectory.from_config(cfg).get_current_head()
        with self._engine.connect() as conn:
            current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
            conn.rollback()
            if current == head:
                return
            # Migrate under the write lock, so that processes opening a new ledger at once do not race.
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                yield session

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with Session(self._engine) as session, session.begin():
            yield session

    def _retry(self, operation: Callable[[], _T]) -> _T:
        """Run a write; retry a few times if SQLite still reports a lock after its busy timeout."""
        for attempt in range(4):
            try:
                return operation()
            except OperationalError as exc:
                if "locked" not in str(exc).lower() or attempt == 3:
                    raise LedgerError(f"{_display(self.url)}: {_short(exc)}") from None
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writing

    def record_admission(
        self,
        workload: str,
        *,
        at: Timestamp,
        cluster_queue: str,
        local_queue: str,
        requests: Mapping[str, Amount],
        flavor: str | None = None,
        workload_type: str = "training",
    ) -> int:
        """Record that ``workload`` (``"namespace/name"``) was admitted at ``at``; returns the interval id.

        ``local_queue`` is the LocalQueue name (or ``"namespace/name"`` with the workload's
        namespace). ``requests`` maps resource names to the workload's total requests (all pods),
        as numbers or Kubernetes quantities (``"64Gi"``). Recording the same admission again
        (same workload, same ``at``, still open) is a no-op returning the same id; a second
        admission while one is open raises ``ValueError`` (end the first one).
        """
        namespace, _, name = workload.partition("/")
        if not namespace or not name or "/" in name:
            raise ValueError(f'workload must be "namespace/name", got {workload!r}')
        if local_queue.count("/") == 1:
            lq_namespace, _, local_queue = local_queue.partition("/")
            if lq_namespace != namespace:
                raise ValueError(f"LocalQueue {lq_namespace}/{local_queue} is not in the namespace of {workload}")
        if not local_queue or "/" in local_queue:
            raise ValueError(f"not a LocalQueue name: {local_queue!r}")
        if not cluster_queue:
            raise ValueError("cluster_queue must not be empty")
        if workload_type not in WORKLOAD_TYPES:
            raise ValueError(f"workload_type must be one of {', '.join(WORKLOAD_TYPES)}, got {workload_type!r}")
        admitted_at = _epoch(at, "at")
        amounts = {resource: _amount(resource, value) for resource, value in requests.items()}
        accelerators = {resource: self._gpu_resource(resource) for resource in amounts}
        gpus = math.fsum(value for resource, value in amounts.items() if accelerators[resource])

        def write() -> int:
            with self._writing() as session:
                existing = session.scalar(
                    select(WorkloadInterval).where(
                        WorkloadInterval.workload == workload, WorkloadInterval.ended_at.is_(None)
                    )
                )
                if existing is not None:
                    if existing.admitted_at == admitted_at:
                        return existing.id
                    raise ValueError(
                        f"{workload} is already admitted (since {existing.admitted_at}); record its end first"
                    )
                interval = WorkloadInterval(
                    workload=workload,
                    namespace=namespace,
                    cluster_queue=cluster_queue,
                    local_queue=local_queue,
                    flavor=flavor,
                    workload_type=workload_type,
                    admitted_at=admitted_at,
                    gpus=gpus,
                    resources=[
                        IntervalResource(resource=resource, quantity=value, accelerator=accelerators[resource])
                        for resource, value in sorted(amounts.items())
                    ],
                )
                session.add(interval)
                session.flush()
                return interval.id

        try:
            return self._retry(write)
        except IntegrityError as exc:  # a concurrent writer admitted it first
            raise ValueError(f"{workload} is already admitted: {_short(exc)}") from None

    def record_end(self, workload: str, *, at: Timestamp, reason: EndReason = "Finished") -> bool:
        """Close ``workload``'s open interval at ``at``; False if it has none (nothing recorded).

        ``reason`` is ``Finished`` (completion), ``Preempted`` or ``Evicted``.
        """
        if reason not in END_REASONS:
            raise ValueError(f"reason must be one of {', '.join(END_REASONS)}, got {reason!r}")
        ended_at = _epoch(at, "at")

        def write() -> bool:
            with self._writing() as session:
                interval = session.scalar(
                    select(WorkloadInterval).where(
                        WorkloadInterval.workload == workload, WorkloadInterval.ended_at.is_(None)
                    )
                )
                if interval is None:
                    return False
                if ended_at < interval.admitted_at:
                    raise ValueError(f"{workload}: end {ended_at} is before its admission {interval.admitted_at}")
                duration = ended_at - interval.admitted_at
                interval.ended_at = ended_at
                interval.end_reason = reason
                interval.gpu_seconds = interval.gpus * duration
                session.execute(
                    update(IntervalResource)
                    .where(IntervalResource.interval_id == interval.id)
                    .values(resource_seconds=IntervalResource.quantity * duration)
                    .execution_options(synchronize_session=False)
                )
                return True

        return self._retry(write)

    def record_completion(self, workload: str, *, at: Timestamp) -> bool:
        return self.record_end(workload, at=at, reason="Finished")

    def record_preemption(self, workload: str, *, at: Timestamp) -> bool:
        return self.record_end(workload, at=at, reason="Preempted")

    def record_eviction(self, workload: str, *, at: Timestamp) -> bool:
        return self.record_end(workload, at=at, reason="Evicted")

    # -- reading

    def count(self) -> int:
        """How many intervals (admissions) the ledger holds."""
        try:
            with self._reading() as session:
                return session.scalar(select(func.count()).select_from(WorkloadInterval)) or 0
        except SQLAlchemyError as exc:
            raise LedgerError(f"{_display(self.url)}: {_short(exc)}") from None

    def intervals(self, workload: str | None = None) -> list[IntervalRecord]:
        """All intervals (of one workload if given), oldest admission first."""
        query = select(WorkloadInterval).order_by(WorkloadInterval.admitted_at, WorkloadInterval.id)
        if workload is not None:
            query = query.where(WorkloadInterval.workload == workload)
        try:
            with self._reading() as session:
                return [_record(interval) for interval in session.scalars(query)]
        except SQLAlchemyError as exc:
            raise LedgerError(f"{_display(self.url)}: {_short(exc)}") from None

    def usage(
        self, *, since: Timestamp | None = None, by: GroupBy | str = "queue", now: Timestamp | None = None
    ) -> list[UsageRow]:
        """Usage per key in the window ``[since, now]`` (``since`` None: from the beginning; ``now`` None: the clock).

        ``by``: ``queue`` (LocalQueue, key ``namespace/name``), ``namespace``, ``flavor``,
        ``cluster_queue`` or ``workload_type``. Open intervals count up to ``now``; an interval
        straddling ``since`` counts only its part after ``since``. Rows are ordered by
        GPU-seconds, largest first, then key.
        """
        by = normalize_group_by(by)
        end = _epoch(now, "now") if now is not None else time.time()
        start = _epoch(since, "since") if since is not None else None
        group = _group_columns(by)
        duration = _window_duration(start, end)
        overlaps = _overlaps(start, end)

        def in_window(column: Any) -> ColumnElement[bool]:
            return column <= end if start is None else and_(column >= start, column <= end)

        def ended(reason: str) -> Any:
            return func.sum(case((and_(WorkloadInterval.end_reason == reason, in_window(WorkloadInterval.ended_at)), 1), else_=0))

        per_interval = (
            select(
                *group,
                func.sum(WorkloadInterval.gpus * duration),
                func.sum(case((in_window(WorkloadInterval.admitted_at), 1), else_=0)),
                ended("Preempted"),
                ended("Evicted"),
                ended("Finished"),
                func.sum(
                    case(
                        (or_(WorkloadInterval.ended_at.is_(None), WorkloadInterval.ended_at > end), 1),
                        else_=0,
                    )
                ),
            )
            .where(overlaps)
            .group_by(*group)
        )
        per_resource = (
            select(*group, IntervalResource.resource, func.sum(IntervalResource.quantity * duration))
            .join(IntervalResource, IntervalResource.interval_id == WorkloadInterval.id)
            .where(overlaps, IntervalResource.accelerator.is_(False))
            .group_by(*group, IntervalResource.resource)
        )
        rows: dict[str | None, UsageRow] = {}
        try:
            with self._reading() as session:
                for values in session.execute(per_interval):
                    key = _key(by, values[: len(group)])
                    gpu_s, admitted, preempted, evicted, finished, running = values[len(group) :]
                    rows[key] = UsageRow(
                        key=key,
                        gpu_seconds=float(gpu_s or 0.0),
                        admissions=int(admitted or 0),
                        preemptions=int(preempted or 0),
                        evictions=int(evicted or 0),
                        completions=int(finished or 0),
                        running=int(running or 0),
                    )
                for values in session.execute(per_resource):
                    key = _key(by, values[: len(group)])
                    resource, seconds = values[len(group) :]
                    row = rows.setdefault(key, UsageRow(key=key))
                    row.resource_seconds[resource] = row.resource_seconds.get(resource, 0.0) + float(seconds or 0.0)
        except SQLAlchemyError as exc:
            raise LedgerError(f"{_display(self.url)}: {_short(exc)}") from None
        return sorted(rows.values(), key=lambda row: (-row.gpu_seconds, row.key or ""))

    def _local_queue_filter(self, local_queues: Iterable[str] | None) -> Any:
        if local_queues is None:
            return None
        pairs = []
        for key in local_queues:
            namespace, _, name = key.partition("/")
            if not namespace or not name:
                raise ValueError(f'LocalQueue keys are "namespace/name", got {key!r}')
            pairs.append((namespace, name))
        if not pairs:
            return False
        return tuple_(WorkloadInterval.namespace, WorkloadInterval.local_queue).in_(pairs)

    def _history(self, local_queues: Iterable[str] | None, now: float, oldest_end: float) -> dict[str, list[UsageInterval]]:
        keys = None if local_queues is None else list(local_queues)
        where = self._local_queue_filter(keys)
        query = select(WorkloadInterval).where(
            WorkloadInterval.admitted_at <= now,
            or_(WorkloadInterval.ended_at.is_(None), WorkloadInterval.ended_at >= oldest_end),
        )
        history: dict[str, list[UsageInterval]] = {key: [] for key in keys or ()}
        if where is False:
            return history
        if where is not None:
            query = query.where(where)
        try:
            with self._reading() as session:
                for interval in session.scalars(query):
                    history.setdefault(f"{interval.namespace}/{interval.local_queue}", []).append(
                        UsageInterval(
                            requests={r.resource: r.quantity for r in interval.resources},
                            start=interval.admitted_at,
                            end=interval.ended_at,
                        )
                    )
        except SQLAlchemyError as exc:
            raise LedgerError(f"{_display(self.url)}: {_short(exc)}") from None
        return history

    def decayed_usage(
        self,
        local_queues: Iterable[str] | None = None,
        *,
        now: Timestamp,
        half_life: float,
        sampling_interval: float = DEFAULT_SAMPLING_INTERVAL,
    ) -> dict[str, dict[str, float]]:
        """Admission fair sharing's consumed resources at ``now`` per LocalQueue key (``namespace/name``).

        Replays the ledger's history through Kueue's decay with ``usageHalfLifeTime`` =
        ``half_life`` and the entry penalty of ``sampling_interval`` (see
        :func:`quotas.admission_fair_sharing.consumed_from_history`). Every requested key is in
        the result (empty dict if it has no history); with None, every LocalQueue of the ledger.
        """
        at = _epoch(now, "now")
        oldest = at - _HISTORY_HALF_LIVES * half_life if half_life > 0 else at
        history = self._history(local_queues, at, oldest)
        return {
            key: consumed_from_history(intervals, now=at, half_life=half_life, sampling_interval=sampling_interval)
            for key, intervals in sorted(history.items())
        }

    def admitted_usage(self, local_queues: Iterable[str] | None = None, *, at: Timestamp) -> dict[str, dict[str, float]]:
        """Summed requests of the intervals open at ``at``, per LocalQueue key (only keys with some)."""
        moment = _epoch(at, "at")
        history = self._history(local_queues, moment, math.nextafter(moment, math.inf))
        out: dict[str, dict[str, float]] = {}
        for key, intervals in sorted(history.items()):
            for interval in intervals:
                if interval.end is not None and interval.end <= moment:
                    continue
                usage = out.setdefault(key, {})
                for resource, value in interval.requests.items():
                    usage[resource] = usage.get(resource, 0.0) + value
        return out


# --------------------------------------------------------------------------- helpers


def _short(exc: BaseException) -> str:
    """The first line of a DBAPI error, without SQLAlchemy's statement dump and links."""
    inner = getattr(exc, "orig", None) or exc
    return str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__


def normalize_group_by(by: str) -> GroupBy:
    """``by`` as one of :data:`GROUP_BY` (``-`` and ``_`` are the same; ``localqueue`` is ``queue``); ValueError if unknown."""
    normal = by.strip().lower().replace("-", "_")
    aliases = {"localqueue": "queue", "local_queue": "queue", "clusterqueue": "cluster_queue", "type": "workload_type"}
    normal = aliases.get(normal, normal)
    if normal not in GROUP_BY:
        raise ValueError(f"cannot group by {by!r}: use one of {', '.join(GROUP_BY)}")
    return normal  # type: ignore[return-value]


def _group_columns(by: GroupBy) -> list[Any]:
    if by == "queue":
        return [WorkloadInterval.namespace, WorkloadInterval.local_queue]
    return [getattr(WorkloadInterval, by)]


def _key(by: GroupBy, values: Any) -> str | None:
    if by == "queue":
        return f"{values[0]}/{values[1]}"
    return values[0]


def _window_duration(since: float | None, now: float) -> Any:
    """SQL for ``max(0, min(ended_at or now, now) - max(admitted_at, since))`` (portable: CASE, not GREATEST)."""
    now_v = literal(now, Double)
    end = case(
        (WorkloadInterval.ended_at.is_(None), now_v),
        (WorkloadInterval.ended_at > now_v, now_v),
        else_=WorkloadInterval.ended_at,
    )
    if since is None:
        start: Any = WorkloadInterval.admitted_at
    else:
        since_v = literal(since, Double)
        start = case((WorkloadInterval.admitted_at < since_v, since_v), else_=WorkloadInterval.admitted_at)
    return case((end > start, end - start), else_=literal(0.0, Double))


def _overlaps(since: float | None, now: float) -> Any:
    """Intervals that have anything inside ``[since, now]``: usage or an event."""
    admitted_by_now = WorkloadInterval.admitted_at <= now
    if since is None:
        return admitted_by_now
    return and_(admitted_by_now, or_(WorkloadInterval.ended_at.is_(None), WorkloadInterval.ended_at >= since))


def _record(interval: WorkloadInterval) -> IntervalRecord:
    return IntervalRecord(
        id=interval.id,
        workload=interval.workload,
        namespace=interval.namespace,
        cluster_queue=interval.cluster_queue,
        local_queue=interval.local_queue,
        flavor=interval.flavor,
        workload_type=interval.workload_type,
        admitted_at=interval.admitted_at,
        ended_at=interval.ended_at,
        end_reason=interval.end_reason,
        gpus=interval.gpus,
        gpu_seconds=interval.gpu_seconds,
        requests={r.resource: r.quantity for r in interval.resources},
        resource_seconds={r.resource: r.resource_seconds for r in interval.resources},
    )

"""The usage ledger: round trip, aggregation by every key, windows, migrations, two writers, and `tessera usage`."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from quotas.admission_fair_sharing import AdmissionFairSharing
from quotas.ledger import (
    DEFAULT_LEDGER_URL,
    VERSION_TABLE,
    Base,
    Ledger,
    LedgerError,
    UsageRow,
    alembic_config,
    ledger_url,
    sqlite_path,
)
from tessera.cli import app

GPU = "nvidia.com/gpu"
GiB = 2.0**30
runner = CliRunner()


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    with Ledger(url_of(tmp_path / "ledger.sqlite")) as db:
        yield db


def populate(db: Ledger, base: float = 0.0) -> None:
    """The hand-computed dataset (times relative to `base`).

    w1  a/team      cq-1 a100 training   8 GPU 32 cpu   [0, 3600]      Finished
    w2  a/team      cq-1 h100 inference  2 GPU  4 cpu   [1000, 2000]   Preempted
    w2  a/team      cq-1 a100 inference  2 GPU  4 cpu   [2500, 4500]   Evicted
    w3  b/research  cq-2 a100 training   4 GPU  1Gi     [5000, open)
    w4  b/batch     cq-1 -    training   500m cpu       [6000, 7000]   Finished
    """
    db.record_admission(
        "a/w1", at=base, cluster_queue="cq-1", local_queue="team", flavor="a100", requests={GPU: 8, "cpu": 32}
    )
    db.record_admission(
        "a/w2",
        at=base + 1000,
        cluster_queue="cq-1",
        local_queue="a/team",
        flavor="h100",
        workload_type="inference",
        requests={GPU: "2", "cpu": "4"},
    )
    assert db.record_preemption("a/w2", at=base + 2000)
    db.record_admission(
        "a/w2",
        at=base + 2500,
        cluster_queue="cq-1",
        local_queue="team",
        flavor="a100",
        workload_type="inference",
        requests={GPU: 2, "cpu": 4},
    )
    assert db.record_completion("a/w1", at=base + 3600)
    assert db.record_eviction("a/w2", at=base + 4500)
    db.record_admission(
        "b/w3", at=base + 5000, cluster_queue="cq-2", local_queue="research", flavor="a100", requests={GPU: 4, "memory": "1Gi"}
    )
    db.record_admission("b/w4", at=base + 6000, cluster_queue="cq-1", local_queue="batch", requests={"cpu": "500m"})
    assert db.record_end("b/w4", at=base + 7000, reason="Finished")


def by_key(rows: list[UsageRow]) -> dict[str | None, UsageRow]:
    return {row.key: row for row in rows}


def check(row: UsageRow, gpu_s: float, resources: dict[str, float], counts: tuple[int, int, int, int, int]) -> None:
    assert row.gpu_seconds == pytest.approx(gpu_s)
    assert row.resource_seconds == pytest.approx(resources)
    assert (row.admissions, row.preemptions, row.evictions, row.completions, row.running) == counts


# --------------------------------------------------------------------------- round trip


def test_round_trip(ledger: Ledger) -> None:
    populate(ledger)
    records = ledger.intervals()
    assert ledger.count() == len(records) == 5
    first = records[0]
    assert (first.workload, first.namespace, first.cluster_queue, first.local_queue, first.local_queue_key) == (
        "a/w1",
        "a",
        "cq-1",
        "team",
        "a/team",
    )
    assert (first.flavor, first.workload_type, first.admitted_at, first.ended_at, first.end_reason) == (
        "a100",
        "training",
        0.0,
        3600.0,
        "Finished",
    )
    assert first.gpus == 8.0 and first.gpu_seconds == 8 * 3600.0
    assert first.requests == {GPU: 8.0, "cpu": 32.0}
    assert first.resource_seconds == {GPU: 8 * 3600.0, "cpu": 32 * 3600.0}
    w2 = ledger.intervals("a/w2")
    assert [(r.admitted_at, r.ended_at, r.end_reason, r.flavor) for r in w2] == [
        (1000.0, 2000.0, "Preempted", "h100"),
        (2500.0, 4500.0, "Evicted", "a100"),
    ]
    assert w2[0].workload_type == "inference" and w2[0].requests == {GPU: 2.0, "cpu": 4.0}
    (w3,) = ledger.intervals("b/w3")
    assert w3.ended_at is None and w3.end_reason is None and w3.gpu_seconds is None
    assert w3.requests == {GPU: 4.0, "memory": GiB} and w3.resource_seconds == {GPU: None, "memory": None}
    (w4,) = ledger.intervals("b/w4")
    assert w4.flavor is None and w4.gpus == 0.0 and w4.gpu_seconds == 0.0 and w4.requests == {"cpu": 0.5}


def test_reopen_keeps_records_and_accepts_datetimes(tmp_path: Path) -> None:
    url = url_of(tmp_path / "l.sqlite")
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with Ledger(url) as db:
        db.record_admission("ns/w", at=moment, cluster_queue="cq", local_queue="lq", requests={GPU: 1})
    with Ledger(url) as db:
        assert db.count() == 1
        assert db.record_end("ns/w", at=datetime(2025, 1, 2, 4, 4, 5), reason="Finished")  # naive = UTC
        (record,) = db.intervals()
    assert record.admitted_at == moment.timestamp() and record.gpu_seconds == pytest.approx(3600.0)


def test_writes_are_validated(ledger: Ledger) -> None:
    kwargs: dict[str, Any] = {"cluster_queue": "cq", "local_queue": "lq", "requests": {GPU: 1}}
    first = ledger.record_admission("ns/w", at=10.0, **kwargs)
    assert ledger.record_admission("ns/w", at=10.0, **kwargs) == first  # the same admission again: no-op
    with pytest.raises(ValueError, match="already admitted"):
        ledger.record_admission("ns/w", at=20.0, **kwargs)
    with pytest.raises(ValueError, match="before its admission"):
        ledger.record_end("ns/w", at=5.0)
    with pytest.raises(ValueError, match="reason"):
        ledger.record_end("ns/w", at=50.0, reason="Crashed")  # type: ignore[arg-type]
    assert ledger.record_end("ns/unknown", at=50.0) is False
    with pytest.raises(ValueError, match="namespace/name"):
        ledger.record_admission("no-namespace", at=1.0, **kwargs)
    with pytest.raises(ValueError, match="not in the namespace"):
        ledger.record_admission("ns/x", at=1.0, cluster_queue="cq", local_queue="other/lq", requests={})
    with pytest.raises(ValueError, match="workload_type"):
        ledger.record_admission("ns/x", at=1.0, workload_type="batch", **kwargs)
    with pytest.raises(ValueError, match="request cpu"):
        ledger.record_admission("ns/x", at=1.0, cluster_queue="cq", local_queue="lq", requests={"cpu": "lots"})
    with pytest.raises(ValueError, match="request cpu"):
        ledger.record_admission("ns/x", at=1.0, cluster_queue="cq", local_queue="lq", requests={"cpu": -1})
    assert ledger.count() == 1
    assert ledger.record_end("ns/w", at=50.0)
    assert ledger.record_end("ns/w", at=60.0) is False  # already ended


# --------------------------------------------------------------------------- aggregation


def test_usage_by_each_key(ledger: Ledger) -> None:
    populate(ledger)
    now = 10_000.0
    mem = GiB * 5000  # w3's memory, open from 5000 to now

    rows = by_key(ledger.usage(by="queue", now=now))
    assert set(rows) == {"a/team", "b/research", "b/batch"}
    check(rows["a/team"], 8 * 3600 + 2 * 1000 + 2 * 2000, {"cpu": 32 * 3600 + 4 * 1000 + 4 * 2000}, (3, 1, 1, 1, 0))
    check(rows["b/research"], 4 * 5000, {"memory": mem}, (1, 0, 0, 0, 1))
    check(rows["b/batch"], 0, {"cpu": 500}, (1, 0, 0, 1, 0))
    assert [row.key for row in ledger.usage(by="queue", now=now)] == ["a/team", "b/research", "b/batch"]

    rows = by_key(ledger.usage(by="namespace", now=now))
    check(rows["a"], 34_800, {"cpu": 127_200}, (3, 1, 1, 1, 0))
    check(rows["b"], 20_000, {"cpu": 500, "memory": mem}, (2, 0, 0, 1, 1))

    rows = by_key(ledger.usage(by="flavor", now=now))
    check(rows["a100"], 8 * 3600 + 2 * 2000 + 4 * 5000, {"cpu": 115_200 + 8000, "memory": mem}, (3, 0, 1, 1, 1))
    check(rows["h100"], 2000, {"cpu": 4000}, (1, 1, 0, 0, 0))
    check(rows[None], 0, {"cpu": 500}, (1, 0, 0, 1, 0))

    rows = by_key(ledger.usage(by="cluster_queue", now=now))
    check(rows["cq-1"], 34_800, {"cpu": 127_700}, (4, 1, 1, 2, 0))
    check(rows["cq-2"], 20_000, {"memory": mem}, (1, 0, 0, 0, 1))

    rows = by_key(ledger.usage(by="workload-type", now=now))
    check(rows["training"], 28_800 + 20_000, {"cpu": 115_700, "memory": mem}, (3, 0, 0, 2, 1))
    check(rows["inference"], 6000, {"cpu": 12_000}, (2, 1, 1, 0, 0))

    total = UsageRow.total(ledger.usage(by="flavor", now=now))
    check(total, 54_800, {"cpu": 127_700, "memory": mem}, (5, 1, 1, 2, 1))
    assert total.gpu_hours == pytest.approx(54_800 / 3600)
    with pytest.raises(ValueError, match="cannot group by"):
        ledger.usage(by="team")


def test_open_intervals_count_up_to_now(ledger: Ledger) -> None:
    populate(ledger)
    rows = by_key(ledger.usage(by="queue", now=6000.0))
    check(rows["b/research"], 4 * 1000, {"memory": GiB * 1000}, (1, 0, 0, 0, 1))
    check(rows["b/batch"], 0, {"cpu": 0.0}, (1, 0, 0, 0, 1))  # admitted exactly at now: running, no usage yet
    later = by_key(ledger.usage(by="queue", now=20_000.0))
    assert later["b/research"].gpu_seconds == 4 * 15_000
    # at 3000 nothing of w3/w4 exists yet, and w1 and w2 are still running
    early = by_key(ledger.usage(by="queue", now=3000.0))
    assert set(early) == {"a/team"}
    check(early["a/team"], 8 * 3000 + 2 * 1000 + 2 * 500, {"cpu": 32 * 3000 + 4 * 1000 + 4 * 500}, (3, 1, 0, 0, 2))


def test_since_counts_only_the_part_after_the_boundary(ledger: Ledger) -> None:
    populate(ledger)
    rows = by_key(ledger.usage(by="queue", since=3000.0, now=10_000.0))
    # w1 [0, 3600] counts 600 s; w2's first interval ended before 3000 (its preemption is not counted);
    # w2's second [2500, 4500] counts 1500 s and its eviction, not its admission.
    check(rows["a/team"], 8 * 600 + 2 * 1500, {"cpu": 32 * 600 + 4 * 1500}, (0, 0, 1, 1, 0))
    check(rows["b/research"], 20_000, {"memory": GiB * 5000}, (1, 0, 0, 0, 1))
    check(rows["b/batch"], 0, {"cpu": 500}, (1, 0, 0, 1, 0))
    # a window after everything ended still shows the running interval only
    assert set(by_key(ledger.usage(by="queue", since=8000.0, now=10_000.0))) == {"b/research"}
    # a window with nothing in it
    assert ledger.usage(by="queue", since=20_000.0, now=20_000.0) == [
        UsageRow(key="b/research", gpu_seconds=0.0, resource_seconds={"memory": 0.0}, running=1)
    ]


def test_empty_ledger(ledger: Ledger) -> None:
    assert ledger.count() == 0 and ledger.usage() == [] and ledger.intervals() == []
    assert ledger.decayed_usage(["ns/q"], now=100.0, half_life=60.0) == {"ns/q": {}}
    assert ledger.admitted_usage(at=100.0) == {}


# --------------------------------------------------------------------------- admission fair sharing from the ledger


def test_decayed_usage_matches_event_replay(ledger: Ledger) -> None:
    populate(ledger)
    now, half_life, sampling = 10_000.0, 1800.0, 300.0
    decayed = ledger.decayed_usage(["a/team", "b/research", "b/batch", "c/none"], now=now, half_life=half_life, sampling_interval=sampling)
    assert decayed["c/none"] == {}

    replay = AdmissionFairSharing(half_life, sampling_interval=sampling)
    events = []
    for record in ledger.intervals():
        events.append((record.admitted_at, 0, record.local_queue_key, record.requests))
        if record.ended_at is not None:
            events.append((record.ended_at, 1, record.local_queue_key, record.requests))
    for at, kind, local_queue, requests in sorted(events, key=lambda e: (e[0], e[1])):
        (replay.admit if kind == 0 else replay.release)(local_queue, requests, at=at)
    for local_queue in ("a/team", "b/research", "b/batch"):
        assert decayed[local_queue] == pytest.approx(replay.consumed(local_queue, at=now), rel=1e-9)

    # hand check of b/research: 4 GPUs open since 5000, h = 1800, penalty 1 - 2^(-300/1800)
    d = 2 ** (-5000 / 1800)
    assert decayed["b/research"][GPU] == pytest.approx(4 * (1 - d) + (1 - 2 ** (-300 / 1800)) * 4 * d)

    assert ledger.admitted_usage(at=now) == {"b/research": {GPU: 4.0, "memory": GiB}}
    assert ledger.admitted_usage(["a/team"], at=3000.0) == {"a/team": {GPU: 10.0, "cpu": 36.0}}

    seeded = AdmissionFairSharing(half_life, sampling_interval=sampling)
    seeded.seed_from_history(ledger, now=now)
    assert seeded.local_queues() == ["a/team", "b/batch", "b/research"]
    later = now + 5000.0
    for local_queue in seeded.local_queues():
        assert seeded.consumed(local_queue, at=later) == pytest.approx(replay.consumed(local_queue, at=later), rel=1e-9)
    assert seeded.order_local_queues(["a/team", "b/research", "b/batch"], at=now)[-1] == "b/research"


# --------------------------------------------------------------------------- migrations


def test_alembic_upgrade_creates_schema_on_empty_db_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "fresh.sqlite"
    url = url_of(path)
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == []
    Ledger(url).close()
    assert set(inspect(engine).get_table_names()) == {"ledger_intervals", "ledger_interval_resources", VERSION_TABLE}
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == "0001"
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert context.get_current_revision() == head
        assert compare_metadata(context, Base.metadata) == []  # models and migrations agree

    with Ledger(url) as db:  # opening again: nothing to do, data kept
        db.record_admission("ns/w", at=1.0, cluster_queue="cq", local_queue="lq", requests={GPU: 1})
    with engine.begin() as conn:  # running the upgrade by hand again is a no-op
        command.upgrade(alembic_config(conn), "head")
    with engine.begin() as conn:  # and the downgrade really removes what the upgrade made
        command.downgrade(alembic_config(conn), "base")
    assert inspect(engine).get_table_names() == [VERSION_TABLE]
    engine.dispose()
    with Ledger(url) as db:
        assert db.count() == 0


def test_unusable_ledgers_raise_ledger_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("this is not a database\n" * 100)
    with pytest.raises(LedgerError, match="not a database"):
        Ledger(url_of(garbage))
    with pytest.raises(LedgerError):
        Ledger(url_of(tmp_path / "missing-dir" / "x.sqlite"))
    with pytest.raises(LedgerError):
        Ledger("nosuchdialect://host/db")
    with pytest.raises(LedgerError, match=r"\*\*\*"):  # password hidden in messages
        Ledger("postgresql+psycopg://user:secret@127.0.0.1:1/db")


def test_url_helpers(tmp_path: Path) -> None:
    assert ledger_url(None) == DEFAULT_LEDGER_URL == "sqlite:///tessera-ledger.sqlite"
    assert ledger_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert ledger_url(str(tmp_path / "x.sqlite")) == f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert sqlite_path(DEFAULT_LEDGER_URL) == Path("tessera-ledger.sqlite")
    assert sqlite_path("sqlite://") is None and sqlite_path("postgresql://h/db") is None


# --------------------------------------------------------------------------- two writer processes


def _writer(url: str, writer: int, count: int, barrier: Any) -> None:
    barrier.wait(timeout=60)  # both open the (new) ledger at once: the migration races too
    with Ledger(url) as db:
        barrier.wait(timeout=60)  # and then write at the same time
        for i in range(count):
            name = f"ns/w{writer}-{i}"
            db.record_admission(
                name,
                at=float(i),
                cluster_queue=f"cq-{writer}",
                local_queue=f"lq{writer}",
                requests={GPU: 1 + writer, "cpu": 2},
            )
            if i % 2 == 0:
                db.record_completion(name, at=float(i) + 10.0)


def test_two_processes_writing_concurrently(tmp_path: Path) -> None:
    url = url_of(tmp_path / "shared.sqlite")
    n = 150
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    # Daemons, killed on the way out: a writer left waiting must not hold up the test run's exit.
    processes = [context.Process(target=_writer, args=(url, writer, n, barrier), daemon=True) for writer in (0, 1)]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=180)
        assert [process.exitcode for process in processes] == [0, 0]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    with Ledger(url) as db:
        assert db.count() == 2 * n
        now = 1000.0
        rows = by_key(db.usage(by="cluster_queue", now=now))
        finished = len(range(0, n, 2))
        open_seconds = sum(now - i for i in range(n) if i % 2 == 1)
        for writer in (0, 1):
            gpus = 1 + writer
            row = rows[f"cq-{writer}"]
            assert row.admissions == n and row.completions == finished and row.running == n - finished
            assert row.gpu_seconds == pytest.approx(gpus * (finished * 10.0 + open_seconds))
            assert row.resource_seconds == pytest.approx({"cpu": 2 * (finished * 10.0 + open_seconds)})


# --------------------------------------------------------------------------- tessera usage


@pytest.fixture
def recent_ledger(tmp_path: Path) -> str:
    """Closed intervals relative to the clock: 10 days ago (2 GPUs, 1 h) and 1 day ago (8 GPUs, 2 h)."""
    url = url_of(tmp_path / "cli.sqlite")
    now = time.time()
    with Ledger(url) as db:
        old, new = now - 10 * 86400, now - 86400
        db.record_admission("a/old", at=old, cluster_queue="cq", local_queue="team", flavor="a100", requests={GPU: 2})
        db.record_completion("a/old", at=old + 3600)
        db.record_admission(
            "b/new", at=new, cluster_queue="cq", local_queue="research", flavor="h100", requests={GPU: 8, "cpu": "16"}
        )
        db.record_preemption("b/new", at=new + 7200)
    return url


def test_cli_usage_table(recent_ledger: str) -> None:
    result = runner.invoke(app, ["usage", "--ledger", recent_ledger, "--by", "namespace"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Usage by namespace, all time" in out
    for text_ in ("Namespace", "GPU-h", "GPU-s", "cpu-h", "Admitted", "Preempted", "Evicted", "Finished"):
        assert text_ in out
    assert "16.00" in out and "57,600" in out  # b: 8 GPUs × 2 h
    assert "2.00" in out and "7,200" in out  # a: 2 GPUs × 1 h
    assert "18.00" in out  # the total row

    recent = runner.invoke(app, ["usage", "--ledger", recent_ledger, "--since", "7d", "--by", "flavor"])
    assert recent.exit_code == 0, recent.output
    assert "h100" in recent.stdout and "a100" not in recent.stdout


def test_cli_usage_json(recent_ledger: str) -> None:
    result = runner.invoke(app, ["usage", "--ledger", recent_ledger, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["by"] == "queue" and document["since"] is None
    rows = {row["key"]: row for row in document["rows"]}
    assert set(rows) == {"a/team", "b/research"}
    assert rows["b/research"]["gpu_seconds"] == pytest.approx(57_600)
    assert rows["b/research"]["gpu_hours"] == pytest.approx(16.0)
    assert rows["b/research"]["resource_seconds"] == pytest.approx({"cpu": 16 * 7200})
    assert (rows["b/research"]["admissions"], rows["b/research"]["preemptions"]) == (1, 1)
    assert (rows["a/team"]["completions"], rows["a/team"]["evictions"]) == (1, 0)
    assert document["total"]["gpu_seconds"] == pytest.approx(57_600 + 7_200)

    week = json.loads(runner.invoke(app, ["usage", "--ledger", recent_ledger, "--json", "--since", "1w"]).stdout)
    assert [row["key"] for row in week["rows"]] == ["b/research"]
    assert week["since"] == pytest.approx(week["now"] - 7 * 86400)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "team"], "--by"),
        (["--since", "seven days"], "--since"),
        (["--since", "-1h"], "--since"),
        (["--ledger", "nosuchdialect://x/y"], "--ledger"),
        (["--ledger", "postgresql+psycopg://u:pw@127.0.0.1:1/db"], "--ledger"),
    ],
)
def test_cli_usage_bad_input_exits_2(recent_ledger: str, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["usage", "--ledger", recent_ledger, *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert "Traceback" not in result.output and "pw@" not in result.stderr


def test_cli_usage_missing_file_is_an_empty_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["usage"])  # the default file, which does not exist here
    assert result.exit_code == 0, result.output
    assert "no usage recorded" in result.stdout
    document = json.loads(runner.invoke(app, ["usage", "--json", "--ledger", "elsewhere.sqlite"]).stdout)
    assert document["rows"] == [] and document["total"]["gpu_seconds"] == 0.0
    assert not (tmp_path / "tessera-ledger.sqlite").exists() and not (tmp_path / "elsewhere.sqlite").exists()


def test_cli_usage_corrupt_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_text("garbage\n" * 100)
    result = runner.invoke(app, ["usage", "--ledger", str(bad)])
    assert result.exit_code == 2 and "not a database" in result.stderr

"""The simulator's outputs: results database, PNG plots, HTML report and terminal table."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from simulator.engine import RunResult, Sample, WorkloadRecord
from simulator.plots import PLOT_FILES, plot_allocation, plot_pending, plot_queue_usage, plot_wait_cdf
from simulator.report import format_duration, metrics_table, queue_stats, write_outputs, write_report
from simulator.results_db import RESULTS_FILE, read_runs, write_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUOTAS = {"team-a": 8.0, "team-b": 8.0}
DESCRIPTION = {"cluster": "2 nodes x 8 GPUs (16 GPUs)", "workload": "synthetic:jobs=4,seed=7"}


def _workloads(offset: float) -> list[WorkloadRecord]:
    return [
        WorkloadRecord("train-a", "team-a", "lq-a", 0.0, "team-a", "training", 8.0,
                       admitted_at=0.0, started_at=0.0, finished_at=3600.0, flavor="a100", nodes=["node-0"]),
        WorkloadRecord("train-b", "team-b", "lq-b", 60.0, "team-b", "training", 8.0,
                       admitted_at=60.0 + offset, started_at=60.0 + offset, finished_at=5400.0 + offset,
                       preemptions=1, flavor="a100", nodes=["node-1"]),
        WorkloadRecord("infer-a", "team-a", "lq-a", 120.0, "team-a", "inference", 0.5,
                       admitted_at=3600.0, started_at=3600.0 + offset, finished_at=None, flavor="a100",
                       nodes=["node-0"]),
        WorkloadRecord("big-gang", "team-b", "lq-b", 180.0, "team-b", "training", 16.0,
                       evictions=2, pending_reason="insufficient unused quota for nvidia.com/gpu in flavor a100"),
    ]


def _samples(scale: float) -> list[Sample]:
    return [
        Sample(0.0, 8.0, 0, 1, {"team-a": 8.0}),
        Sample(60.0, 8.0 + 8.0 * scale, 1, 2, {"team-a": 8.0, "team-b": 8.0}),
        Sample(120.0, 16.0, 2, 2, {"team-a": 8.0, "team-b": 8.0}),
        Sample(3600.0, 8.5, 1, 2, {"team-a": 0.5, "team-b": 8.0}),
        Sample(5400.0, 0.5, 1, 1, {"team-a": 0.5}),
        Sample(7200.0, 0.5, 1, 1, {"team-a": 0.5}),
    ]


def _metrics(util: float, busy: float, wait: float) -> dict:
    return {
        "gpu_utilization": util, "gpu_utilization_busy": busy, "workloads": 4, "admitted": 3, "finished": 2,
        "never_admitted": 1, "preemptions": 1, "evictions": 2, "mean_wait_s": wait, "p95_wait_s": 2 * wait,
        "mean_jct_s": 4500.0 + wait, "makespan_s": 7200.0, "cycle_latency_p50_ms": 1.25,
        "cycle_latency_p99_ms": 9.5, "cycles": 12, "wall_s": 0.01,
    }


def replay_runs() -> list[RunResult]:
    return [
        RunResult("tessera", _metrics(0.7134, 0.9, 20.0), _workloads(0.0), _samples(1.0), [0.001, 0.002], 16.0),
        RunResult("kueue", _metrics(0.6512, 0.8, 45.0), _workloads(90.0), _samples(0.5), [0.003, 0.0095], 16.0),
    ]


def fill_runs() -> list[RunResult]:
    out = []
    for policy, final in (("random", 87.5), ("bestfit", 93.1)):
        samples = []
        for demand in range(0, 131, 5):
            allocated = min(demand, final) * 0.16
            unplaced = max(0, (demand - 95) // 10)
            samples.append(Sample(float(demand), allocated, unplaced, demand // 10, {"default": allocated}))
        metrics = {
            "gpu_utilization": 0.0, "gpu_utilization_busy": 0.0, "workloads": 14, "admitted": 12, "finished": 0,
            "never_admitted": 2, "preemptions": 0, "mean_wait_s": 0.0, "p95_wait_s": 0.0, "mean_jct_s": 0.0,
            "makespan_s": 0.0, "cycle_latency_p50_ms": 0.5, "cycle_latency_p99_ms": 2.0,
            "gpu_allocation_at": {str(k): min(k, final) for k in (80, 90, 100, 110, 120, 130)},
            "unallocated_gpus": 16.0 * (1 - final / 100),
        }
        workloads = [WorkloadRecord(f"pod-{i}", "default", "lq", float(i), "default", "training", 1.0,
                                    admitted_at=float(i), started_at=float(i)) for i in range(12)]
        workloads += [WorkloadRecord(f"pod-{i}", "default", "lq", float(i), "default", "training", 4.0,
                                     pending_reason="no node fits 4 GPUs") for i in (12, 13)]
        out.append(RunResult(policy, metrics, workloads, samples, [0.0005], 16.0))
    return out


@pytest.fixture
def results() -> list[RunResult]:
    return replay_runs()


@pytest.fixture
def fill_results() -> list[RunResult]:
    return fill_runs()


# --------------------------------------------------------------------------- results database


def test_results_round_trip(tmp_path: Path, results: list[RunResult]) -> None:
    path = tmp_path / RESULTS_FILE
    write_results(path, results, seed=7, mode="replay", description=DESCRIPTION)
    runs = read_runs(path)
    assert [r.policy for r in runs] == ["tessera", "kueue"]
    for run, original in zip(runs, results, strict=True):
        assert run.result == original
        assert (run.seed, run.mode, run.description) == (7, "replay", DESCRIPTION)
        assert run.started.tzinfo is timezone.utc

    with sqlite3.connect(path) as db:  # plain SQL sees the main metrics as columns
        rows = db.execute("select policy, gpu_utilization, evictions, unallocated_gpus from runs order by id")
        assert rows.fetchall() == [("tessera", 0.7134, 2, None), ("kueue", 0.6512, 2, None)]
        assert db.execute("select count(*) from workloads").fetchone() == (8,)
        assert db.execute("select count(*) from samples").fetchone() == (12,)
        assert db.execute("select nodes from workloads where name = 'train-a' limit 1").fetchone() == ('["node-0"]',)
        usage = db.execute("select at, gpus from queue_usage q join runs r on r.id = q.run_id "
                           "where r.policy = 'kueue' and cluster_queue = 'team-b' order by seq").fetchall()
        assert usage == [(60.0, 8.0), (120.0, 8.0), (3600.0, 8.0)]


def test_results_replace_or_append(tmp_path: Path, results: list[RunResult], fill_results: list[RunResult]) -> None:
    path = tmp_path / RESULTS_FILE
    write_results(path, results, seed=1, mode="replay", description="first")
    write_results(path, results[:1], seed=2, mode="replay", description="second", started=datetime(2026, 1, 2, 3, 4, 5))
    assert [(r.policy, r.seed, r.description) for r in read_runs(path)] == [("tessera", 2, "second")]
    assert read_runs(path)[0].started == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    write_results(path, fill_results, seed=3, mode="fill", description=None, replace=False)
    runs = read_runs(path)
    assert [(r.policy, r.mode) for r in runs] == [("tessera", "replay"), ("random", "fill"), ("bestfit", "fill")]
    assert runs[1].result == fill_results[0]
    assert runs[1].result.metrics["gpu_allocation_at"]["130"] == 87.5


def test_read_runs_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_runs(tmp_path / "nope.sqlite")


# --------------------------------------------------------------------------- plots


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 1024, path


def test_plots_deterministic_and_robust(tmp_path: Path, results: list[RunResult]) -> None:
    first = plot_allocation(results, tmp_path / "a.png")
    second = plot_allocation(results, tmp_path / "b.png")
    assert first.read_bytes() == second.read_bytes()
    # a run with no samples and no started workloads still gives a figure
    empty = RunResult("random", {}, [WorkloadRecord("x", "ns", "lq", 0.0)], [], [], 16.0)
    for plot in (plot_allocation, plot_pending, plot_wait_cdf):
        _assert_png(plot([empty], tmp_path / f"{plot.__name__}.png"))
    _assert_png(plot_queue_usage([empty], tmp_path / "q.png", quotas={}))
    with pytest.raises(ValueError):
        plot_pending([], tmp_path / "none.png")


# --------------------------------------------------------------------------- report


def test_report_html(tmp_path: Path, results: list[RunResult]) -> None:
    """Everything --out writes, in replay mode: results.sqlite, the four PNGs and report.html."""
    paths = write_outputs(tmp_path / "out", results, quotas=QUOTAS, mode="replay", seed=7,
                          title="Two teams <test>", description=DESCRIPTION)
    assert set(paths) == {"results", "report", *PLOT_FILES}
    assert paths["results"] == tmp_path / "out" / RESULTS_FILE
    assert [r.result for r in read_runs(paths["results"])] == results
    for key, name in PLOT_FILES.items():
        assert paths[key] == tmp_path / "out" / name
        _assert_png(paths[key])
    report = paths["report"]
    assert report == tmp_path / "out" / "report.html"
    text = report.read_text(encoding="utf-8")
    assert "Two teams &lt;test&gt;" in text
    assert "2 nodes x 8 GPUs (16 GPUs)" in text and "synthetic:jobs=4,seed=7" in text
    # both policies' metrics, formatted
    assert "tessera" in text and "kueue" in text
    assert "71.3%" in text and "65.1%" in text
    assert "20s" in text and "45s" in text  # mean waits
    assert "+6.2 pp" in text and "×0.44" in text  # vs kueue
    # per-ClusterQueue table and longest waits with the last pending reason
    assert "team-a" in text and "team-b" in text
    assert "insufficient unused quota for nvidia.com/gpu in flavor a100" in text
    # self-contained: images as data URIs, nothing fetched
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == len(PLOT_FILES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|<script|<link|@import|url\(", text)


def test_report_fill_mode(tmp_path: Path, fill_results: list[RunResult]) -> None:
    report = write_report(tmp_path, fill_results, quotas={"default": 16.0}, mode="fill",
                          title="fill", description="openb default trace, seed 42")
    for name in PLOT_FILES.values():
        _assert_png(tmp_path / name)
    text = report.read_text(encoding="utf-8")
    assert "alloc @130%" in text and "87.50%" in text and "93.10%" in text
    assert "no node fits 4 GPUs" in text
    assert text.count("data:image/png;base64,") == len(PLOT_FILES)


def test_queue_stats(results: list[RunResult]) -> None:
    stats = {s.cluster_queue: s for s in queue_stats(results[0], QUOTAS)}
    assert (stats["team-a"].workloads, stats["team-a"].admitted, stats["team-a"].finished) == (2, 2, 1)
    # team-a held 8 GPUs from 0 to 3600 s and 0.5 from 3600 to 7200 s
    assert stats["team-a"].gpu_hours == pytest.approx(8.5)
    assert stats["team-b"].mean_wait_s == pytest.approx(0.0)
    assert stats["team-b"].quota == 8.0


# --------------------------------------------------------------------------- terminal


def _render(table: object, width: int = 220) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(table)
    return console.export_text()


def test_metrics_table(results: list[RunResult]) -> None:
    text = _render(metrics_table(results))
    assert "tessera" in text and "kueue" in text
    assert "util vs kueue" in text and "+6.2 pp" in text
    assert "71.3%" in text and "3/4" in text and "1.2/9.5" in text
    assert "1h 15m" in text and "1m 30s" in text  # tessera's mean JCT (4520 s), kueue's p95 wait (90 s)
    # without kueue, no comparison columns
    assert "vs kueue" not in _render(metrics_table(results[:1]))


def test_metrics_table_narrow_console(results: list[RunResult]) -> None:
    """Headers wrap on a narrower console; on a narrow one the table prints a row per metric."""
    wide = _render(metrics_table(results)).splitlines()
    wide_width = max(len(line.rstrip()) for line in wide)
    compact = _render(metrics_table(results), width=wide_width - 20)
    assert max(len(line.rstrip()) for line in compact.splitlines()) <= wide_width - 20
    assert "1h 15m" in compact and "+6.2 pp" in compact  # numbers intact, not folded
    narrow = _render(metrics_table(results), width=60)
    assert max(len(line.rstrip()) for line in narrow.splitlines()) <= 60
    rows = {line.split("  ")[0].strip(): line for line in narrow.splitlines() if line.strip()}
    assert "71.3%" in rows["GPU util"] and "65.1%" in rows["GPU util"]
    assert "+6.2 pp" in rows["util vs kueue"]


def test_metrics_table_fill(fill_results: list[RunResult]) -> None:
    text = _render(metrics_table(fill_results))
    assert "alloc @130%" in text and "87.50%" in text and "93.10%" in text and "12/14" in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (4.25, "4.2s"), (42, "42s"), (185, "3m 05s"), (7390, "2h 03m 10s"), (450720, "5d 05h 12m"),
     (None, "—")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(42, "42s"), (3000, "50m"), (7390, "2h 03m"), (7200, "2h"), (450720, "5d 05h")]
)
def test_format_duration_compact(seconds: float, text: str) -> None:
    assert format_duration(seconds, compact=True) == text

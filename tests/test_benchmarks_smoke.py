"""The simulator benchmarks (benchmarks/bench_philly.py, bench_scale.py, bench_kueue_perf.py) on tiny
configurations, so that the scripts cannot rot. Inline data only: no file under ../shared is needed
(the Philly test also replays three hours of the real trace when it is there)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_kueue_perf  # noqa: E402
import bench_operator  # noqa: E402
import bench_philly  # noqa: E402
import bench_scale  # noqa: E402
import common  # noqa: E402


# --- common -------------------------------------------------------------------------------


def test_common_helpers(tmp_path: Path) -> None:
    table = common.markdown_table(["policy", "x"], [["a", 1], ["b", 2]])
    assert table.splitlines() == ["| policy | x |", "| --- | ---: |", "| a | 1 |", "| b | 2 |"]
    assert common.percentile([5, 1, 4, 2, 3], 50) == 3
    assert common.percentile([1, 2, 3, 4], 100) == 4
    assert common.ratio(1.0, 0.0) == "-" and common.ratio(3.0, 2.0) == "x1.50"
    assert common.duration(0.25) == "250 ms" and common.duration(90) == "90.0 s" and common.duration(7200) == "2.0 h"
    text = common.provenance(BENCHMARKS / "bench_scale.py")
    assert text.startswith("Commit `") and "CPUs" in text
    assert common.peak_rss_mib() > 0
    path = common.write_result("x", "# title", tmp_path / "x.md")
    assert path.read_text() == "# title\n"


# --- (d) Kueue's performance configuration -------------------------------------------------


def test_kueue_perf_scaled_down() -> None:
    # 1 cohort x 2 ClusterQueues x 10 workloads (7 small, 2 medium, 1 large)
    setup = bench_kueue_perf.build_setup(cohorts=1, queues_per_cohort=2, scale=0.02)
    assert len(setup.jobs) == 20 and len(setup.cluster_queues) == 2
    cq = setup.cluster_queues[0]
    quota = cq.spec.resource_groups[0].flavors[0].resources[0]
    assert (quota.name, int(quota.nominal_quota), int(quota.borrowing_limit)) == ("cpu", 20, 100)
    assert cq.spec.preemption.reclaim_within_cohort == "Any"
    assert cq.spec.preemption.within_cluster_queue == "LowerPriority"
    large = [j for j in setup.jobs if j.name.startswith("large")]
    assert large[0].submit_at == pytest.approx(1.2) and large[0].duration == pytest.approx(1.0)
    assert large[0].workload.priority == 200
    summaries = []
    for name in ("kueue", "tessera"):
        summary = bench_kueue_perf.summarize(bench_kueue_perf.simulate(setup, name))
        assert summary["finished"] == 20
        assert set(summary["classes"]) == {"small", "medium", "large"}
        assert all(c["admitted"] == c["workloads"] for c in summary["classes"].values())
        assert summary["makespan_s"] > 0
        summaries.append(summary)
    stopped = bench_kueue_perf.stopped_summary(common.simulate(setup, "kueue", max_wall=0.0), setup)
    stopped["policy"] = "bestfit"
    args = argparse.Namespace(quick=True, scale=0.02, cohorts=1, node_cpu=None)
    text = bench_kueue_perf.render([*summaries, stopped], setup, args, {"kueue": 1.0, "tessera": 2.0, "bestfit": 0.1})
    assert "| `kueue` (simulated) |" in text and "Kueue, published" in text and "**stopped after" in text


def test_kueue_perf_nodes_variant() -> None:
    setup = bench_kueue_perf.build_setup(cohorts=1, queues_per_cohort=1, scale=0.02, node_cpu=20)
    assert len(setup.nodes) == 1 and not setup.nodes[0].allocatable().get("nvidia.com/gpu")
    assert bench_kueue_perf.simulate(setup, "kueue").metrics["finished"] == len(setup.jobs)


# --- (b) Philly ----------------------------------------------------------------------------

PHILLY_CSV = """timestamp,duration,num_gpus,gpu_time,cluster
2017-10-01 00:05:00,3600.0,8,28800.0,aaa111
2017-10-01 00:10:00,1800.0,16,28800.0,aaa111
2017-10-01 00:20:00,600.0,1,600.0,bbb222
2017-10-01 00:30:00,7200.0,4,28800.0,bbb222
2017-10-01 01:00:00,900.0,2,1800.0,aaa111
2017-10-01 01:30:00,3000.0,8,24000.0,ccc333
2017-10-01 02:00:00,1200.0,1,1200.0,bbb222
2017-10-01 02:30:00,2400.0,12,28800.0,aaa111
2017-10-01 02:45:00,300.0,1,300.0,zzz999
2017-10-03 00:00:00,60.0,1,60.0,aaa111
"""
VC_CSV = "vc,node num\naaa111,4\nbbb222,2\nccc333,2\n"


def test_philly_inline_trace(tmp_path: Path) -> None:
    trace, vcs = tmp_path / "philly.csv", tmp_path / "vc.csv"
    trace.write_text(PHILLY_CSV)
    vcs.write_text(VC_CSV)
    rows = bench_philly.read_rows(trace)
    window = bench_philly.busiest_window(rows, 1)
    assert bench_philly.Window(0, 1).end == 1
    assert datetime.fromtimestamp(window.start, tz=timezone.utc).isoformat() == "2017-10-01T00:00:00+00:00"
    assert window.jobs == 9
    ps = bench_philly.build_setup(trace, vcs, window, load=0.9)
    offered = sum(g * d for g, d in [(8, 3600), (16, 1800), (1, 600), (4, 7200), (2, 900), (8, 3000), (1, 1200),
                                     (12, 2400), (1, 300)])
    assert ps.offered_gpu_seconds == pytest.approx(offered)
    assert ps.nodes == 2  # ceil(offered / (0.9 x 1 day x 8)) = 1, raised to fit the 16-GPU gang
    assert sum(ps.quotas.values()) == ps.nodes * 8
    assert ps.quotas["zzz999"] == 0 and ps.quotas["aaa111"] == 8 and ps.quotas["bbb222"] == 4
    assert {q.spec.cohort for q in ps.setup.cluster_queues} == {bench_philly.COHORT}
    results = [bench_philly.simulate(ps.setup, name) for name in ("kueue", "tessera")]
    for result in results:
        assert result.metrics["finished"] == 9
    stopped = common.simulate(ps.setup, "fgd", max_wall=0.0)  # --max-wall: reported as stopped, no numbers
    assert not stopped.completed and stopped.reached is not None
    args = argparse.Namespace(days=1, quick=True, reclaim="Any", argv=["--quick"])
    text = bench_philly.render(ps, [*results, stopped], {"kueue": 1.0, "tessera": 1.0, "fgd": 0.1}, args)
    assert "| `tessera` |" in text and "x1.00" in text and "**stopped after" in text


def test_philly_helpers() -> None:
    assert bench_philly.proportional_quotas({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert bench_philly.proportional_quotas({"a": 0}, 8) == {"a": 0}
    day = bench_philly.DAY
    rows = [(0.0, 1.0, 1.0), (day * 1.5, 5.0, 1.0), (day * 2.5, 5.0, 1.0), (day * 5, 3.0, 1.0)]
    best = bench_philly.busiest_window(rows, 2)
    assert (best.start, best.gpu_seconds, best.jobs) == (day, 10.0, 2)
    # a long job counts only the part inside the window
    rows = [(0.0, 10 * day, 2.0), (day * 3.5, 100.0, 8.0)]
    assert bench_philly.offered_in_window(rows, 0.0, 2 * day) == (4 * day, 1)
    assert bench_philly.busiest_window(rows, 2).start == 0.0


def test_philly_real_trace_three_hours(tmp_path: Path) -> None:
    """Three hours of the real trace when ../shared has it; the inline trace again otherwise."""
    folder = bench_philly.TRACE_DIR
    trace, vcs = folder / bench_philly.PHILLY_JOBS, folder / bench_philly.VC_NODES
    if not (trace.exists() and vcs.exists()):
        trace, vcs = tmp_path / "philly.csv", tmp_path / "vc.csv"
        trace.write_text(PHILLY_CSV)
        vcs.write_text(VC_CSV)
        start = datetime(2017, 10, 1, tzinfo=timezone.utc).timestamp()
    else:
        start = datetime(2017, 10, 26, 6, tzinfo=timezone.utc).timestamp()
    window = bench_philly.Window(start, 3 * 3600)
    ps = bench_philly.build_setup(trace, vcs, window, load=0.9, limit=40)
    assert 0 < len(ps.setup.jobs) <= 40
    result = bench_philly.simulate(ps.setup, "kueue")
    assert result.metrics["workloads"] == len(ps.setup.jobs)
    assert result.metrics["admitted"] > 0


# --- (c) scale -----------------------------------------------------------------------------


def test_scale_tiny() -> None:
    setup = bench_scale.build_setup(jobs=30, nodes=16, seed=1)
    assert len(setup.jobs) == 30 and len(setup.nodes) == 16 and len(setup.cluster_queues) == bench_scale.TEAMS
    runs = [bench_scale.run_policy(setup, name) for name in ("tessera", "kueue")]
    for run in runs:
        assert run["completed"] and run["metrics"]["workloads"] == 30
        assert run["peak_rss_mib"] > 0 and run["cycle_p50_ms"] >= 0
    stopped = bench_scale.run_policy(setup, "kueue", max_wall=0.0)
    assert not stopped["completed"] and stopped["submitted"] >= 1
    args = argparse.Namespace(jobs=30, nodes=16, load=1.2, seed=1, argv=["--jobs", "30", "--nodes", "16"])
    text = bench_scale.render(runs + [stopped], args, 0.1)
    assert "Scaled-down run" in text and "| `tessera` |" in text and "**stopped**" in text


# --- operator latency ------------------------------------------------------------------------


def test_operator_latency_few_jobs() -> None:
    run = bench_operator.measure(6, "kueue", 0.0, teams=2, timeout=60)
    assert (run["created"], run["started"]) == (6, 6)
    assert 0 < run["p50_s"] <= run["p99_s"] <= run["max_s"] < 60 and len(run["latencies_s"]) == 6
    assert run["cpu_s"] > 0 and run["peak_rss_mib"] > 0 and run["passes"] >= 1
    assert run["requests"]["create workloads"] == 6 and run["requests"]["patch jobs"] == 6
    args = argparse.Namespace(jobs=6, teams=2, argv=["--jobs", "6"], plain_emulator=False, load_after=1.0)
    text = bench_operator.render([run], args)
    assert "| `kueue` | all at once | 6/6 |" in text and "p99 <= 1 s" in text


def test_operator_bench_emulator_keeps_the_api_server_rules() -> None:
    import asyncio

    import aiohttp

    job = bench_operator.job_manifest(0, 1)
    path = bench_operator.path_of(job) + "/" + job["metadata"]["name"]

    async def probe(url: str) -> list[int]:
        async with aiohttp.ClientSession() as session:
            async with session.post(url + bench_operator.path_of(job), json=job) as r:
                created = await r.json()
            merge = {"Content-Type": "application/merge-patch+json"}
            async with session.patch(url + path, json={"spec": {"parallelism": 2}}, headers=merge) as r:
                moved = (await r.json())["metadata"]["resourceVersion"]
            stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"suspend": False}}
            async with session.patch(url + path, json=stale, headers=merge) as r:
                conflict = r.status
            fresh = {"metadata": {"resourceVersion": moved}, "spec": {"suspend": False}, "status": {"active": 9}}
            async with session.patch(url + path, json=fresh, headers=merge) as r:
                patched = await r.json()
            async with session.patch(url + path + "/status", json={"status": {"active": 1}, "spec": {"suspend": True}},
                                     headers=merge) as r:
                status_only = await r.json()
            async with session.get(url + path + "-missing") as r:
                missing = r.status
            return [conflict, patched["spec"]["suspend"], "active" in patched.get("status", {}),
                    status_only["status"]["active"], status_only["spec"]["suspend"], missing]

    expected = [409, False, False, 1, False, 404]  # stale: 409; status only through /status, which changes only it
    for fast in (True, False):
        with bench_operator.bench_cluster(fast=fast) as cluster:
            assert asyncio.run(probe(cluster.url)) == expected, fast


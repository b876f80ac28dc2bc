"""Philly replay: a busy window of the processed Microsoft Philly trace through every policy.

    python benchmarks/bench_philly.py            # busiest 14-day window, writes benchmarks/results/philly.md
    python benchmarks/bench_philly.py --quick    # busiest 2-day window, writes benchmarks/results/philly_quick.md
    python benchmarks/bench_philly.py --days 4 --policies tessera,kueue

Data: ``../shared/traces/philly/`` (override with ``--trace-dir``): ``philly_pollux_processed.csv``
(82,247 jobs: submission time, duration, GPUs, virtual cluster; as processed by the Pollux
artifact) and ``philly_vc_nodes_helios_artifact.csv`` (virtual cluster -> node count, from the
Helios artifact). Each job is an all-or-nothing gang of 8-GPU pods (`simulator.philly`).

Setup:
- Offered GPU-time of a window: for every job submitted in it, GPUs x the part of its
  duration that falls inside the window (counted from submission, clipped at the window's
  end). Philly has jobs of up to 53 days; counting their whole duration would size a 2-day
  window's cluster for weeks of work that it never sees inside the window, and nothing would
  ever wait (measured: 170 nodes for the busiest 2 days, busy allocation 0%, wait 0 for every
  policy).
- Window: the ``--days``-day window, starting at a UTC midnight, with the most offered
  GPU-time; only jobs submitted in it are replayed (the cluster starts empty) and each runs
  to its end, however long.
- Cluster: N nodes of 8 GPUs (`simulator.cluster_gen.generate_nodes`), N = ceil(offered
  GPU-seconds / (``--load`` x window seconds x 8)) (at least enough for the largest gang), so
  the window's offered load is about ``--load`` (0.9) of the cluster.
- Queues: one ClusterQueue per virtual cluster, all in one Cohort, covering ``nvidia.com/gpu``
  in one flavor, nominal quota proportional to the virtual cluster's node count (largest
  remainder, summing to the cluster's GPUs; a virtual cluster missing from the node list gets
  0 and lives on borrowing), no borrowing limit, ``reclaimWithinCohort: Any`` (``--reclaim``),
  ``withinClusterQueue: LowerPriority`` (every Philly job has the same priority, so this never
  fires). The simulator's Configuration: ``waitForPodsReady`` on, 30 minutes.

Reported per policy: GPU allocation while work was waiting (``gpu_utilization_busy``),
overall allocation, mean and p95 wait (submission to start), mean job completion time,
preemptions and waitForPodsReady evictions, cycle latency, the simulation's wall and CPU time,
and each against `kueue`. Cite Philly (Jeon et al., ATC'19) and the Pollux/Helios artifacts.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the project root on sys.path)
from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor  # noqa: E402
from quotas.kube import Node  # noqa: E402
from scheduler.decisions import make_policy  # noqa: E402
from simulator.cluster_gen import GPU_RESOURCE, generate_nodes  # noqa: E402
from simulator.engine import RunResult, Setup, Simulation  # noqa: E402
from simulator.philly import PHILLY_JOBS, load_philly, sanitize_label  # noqa: E402
from simulator.run import binder_for, simulation_config  # noqa: E402

TRACE_DIR = common.ROOT.parent / "shared" / "traces" / "philly"
VC_NODES = "philly_vc_nodes_helios_artifact.csv"
DAY = 86400.0
GPUS_PER_NODE = 8
FLAVOR = "default"
COHORT = "philly"
POLICIES = ("tessera", "kueue", "bestfit", "fgd")


@dataclass(frozen=True)
class Window:
    start: float
    """Epoch seconds (a UTC midnight for `busiest_window`)."""
    length_s: float
    gpu_seconds: float = 0.0
    """Offered GPU-seconds inside the window (`offered_in_window`)."""
    jobs: int = 0

    @property
    def end(self) -> float:
        return self.start + self.length_s

    def iso(self, at: float) -> str:
        return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def read_rows(trace: Path) -> list[tuple[float, float, float]]:
    """(submission epoch seconds, duration seconds, GPUs) of every row, sorted, for choosing the window
    (the simulator's loader reads the window itself, with full checking)."""
    out = []
    with trace.open(newline="") as handle:
        for row in csv.DictReader(handle):
            at = datetime.fromisoformat(row["timestamp"].strip()).replace(tzinfo=timezone.utc).timestamp()
            out.append((at, float(row["duration"]), float(row["num_gpus"])))
    out.sort()
    return out


def offered_in_window(rows: Sequence[tuple[float, float, float]], start: float, end: float) -> tuple[float, int]:
    """GPU-seconds that the jobs submitted in [start, end) ask for *inside* the window (each counted from
    its submission, clipped at ``end``), and how many jobs that is."""
    lo = bisect.bisect_left(rows, (start,))
    hi = bisect.bisect_left(rows, (end,))
    return sum(gpus * min(duration, end - at) for at, duration, gpus in rows[lo:hi]), hi - lo


def busiest_window(rows: Sequence[tuple[float, float, float]], days: int) -> Window:
    """The ``days``-day window starting at a UTC midnight with the most offered GPU-time inside it
    (`offered_in_window`; ties: the earliest). ``rows`` sorted by submission."""
    if not rows:
        raise ValueError("the trace holds no jobs")
    start = math.floor(rows[0][0] / DAY) * DAY
    best: Window | None = None
    while True:
        end = start + days * DAY
        gpu_seconds, jobs = offered_in_window(rows, start, end)
        if best is None or gpu_seconds > best.gpu_seconds + 1e-6:
            best = Window(start, days * DAY, gpu_seconds, jobs)
        if end > rows[-1][0]:
            return best
        start += DAY


def read_vc_nodes(path: Path) -> dict[str, int]:
    """Virtual cluster -> node count (``vc,node num``)."""
    out: dict[str, int] = {}
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for cells in reader:
            if len(cells) >= 2 and cells[0].strip():
                out[cells[0].strip()] = int(float(cells[1]))
    return out


def proportional_quotas(weights: dict[str, int], total: int) -> dict[str, int]:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainder; zero weights get 0)."""
    weight_sum = sum(weights.values())
    if weight_sum <= 0:
        return {name: 0 for name in weights}
    exact = {name: total * w / weight_sum for name, w in weights.items()}
    out = {name: math.floor(v) for name, v in exact.items()}
    left = total - sum(out.values())
    for name in sorted(exact, key=lambda n: (-(exact[n] - out[n]), n))[:left]:
        out[name] += 1
    return out


def build_queues(quotas: dict[str, int], reclaim: str = "Any") -> tuple[list[ClusterQueue], list[LocalQueue]]:
    """One ClusterQueue per virtual-cluster label (its namespace and LocalQueue share the name)."""
    cqs, lqs = [], []
    for name, gpus in sorted(quotas.items()):
        cqs.append(ClusterQueue.model_validate({
            "metadata": {"name": name},
            "spec": {
                "cohort": COHORT,
                "namespaceSelector": {},
                "resourceGroups": [{"coveredResources": [GPU_RESOURCE], "flavors": [
                    {"name": FLAVOR, "resources": [{"name": GPU_RESOURCE, "nominalQuota": str(gpus)}]}]}],
                "preemption": {"reclaimWithinCohort": reclaim, "withinClusterQueue": "LowerPriority"},
            },
        }))
        lqs.append(LocalQueue.model_validate({"metadata": {"name": name, "namespace": name}, "spec": {"clusterQueue": name}}))
    return cqs, lqs


@dataclass
class PhillySetup:
    setup: Setup
    window: Window
    nodes: int
    offered_gpu_seconds: float
    """GPU-seconds the window's jobs ask for inside the window (what the cluster is sized by)."""
    total_gpu_seconds: float
    """GPU-seconds of the window's jobs run to their ends (long jobs run weeks past the window)."""
    quotas: dict[str, int]
    load: float


def build_setup(trace: Path, vc_nodes: Path, window: Window, load: float = 0.9, reclaim: str = "Any",
                seed: int = 0, limit: int | None = None) -> PhillySetup:
    """The replay of ``window``: jobs from the simulator's Philly loader, a cluster sized for ``load``,
    queues per virtual cluster. ``limit`` keeps only the window's first N jobs (tests)."""
    loaded = load_philly(trace, start=datetime.fromtimestamp(window.start, tz=timezone.utc),
                         end=datetime.fromtimestamp(window.end, tz=timezone.utc), limit=limit, gpus_per_node=GPUS_PER_NODE)
    jobs = list(loaded.jobs)
    # submit_at counts from the window's start: clip each job's run at the window's end
    offered = sum(job.gpu_milli / 1000 * min(job.duration or 0.0, window.length_s - job.submit_at) for job in jobs)
    total = sum(job.gpu_milli / 1000 * (job.duration or 0.0) for job in jobs)
    nodes = max(1, math.ceil(offered / (load * window.length_s * GPUS_PER_NODE)))
    biggest = max(job.gpu_milli for job in jobs) // 1000
    nodes = max(nodes, math.ceil(biggest / GPUS_PER_NODE))  # every gang must fit on the cluster
    manifests = generate_nodes(nodes, GPUS_PER_NODE, gpu_model="P100", name_prefix="philly")
    node_objs = [Node.model_validate(m) for m in manifests]
    weights = {sanitize_label(vc): n for vc, n in read_vc_nodes(vc_nodes).items()}
    for job in jobs:
        weights.setdefault(job.queue, 0)
    quotas = proportional_quotas(weights, nodes * GPUS_PER_NODE)
    cqs, lqs = build_queues(quotas, reclaim)
    setup = Setup(
        nodes=node_objs,
        flavors=[ResourceFlavor.model_validate({"metadata": {"name": FLAVOR}})],
        cluster_queues=cqs,
        cohorts=[Cohort.model_validate({"metadata": {"name": COHORT}})],
        local_queues=lqs,
        jobs=jobs,
        config=simulation_config(Configuration()),
        seed=seed,
    )
    return PhillySetup(setup, window, nodes, offered, total, quotas, load)


def simulate(setup: Setup, policy_name: str) -> RunResult:
    policy = make_policy(policy_name)
    return Simulation(setup, policy, binder_for(policy)).run()


def render(ps: PhillySetup, results: Sequence[RunResult | common.Run], cpu: dict[str, float],
           args: argparse.Namespace) -> str:
    """``results``: engine results, or `common.Run` records of runs stopped by --max-wall."""
    w = ps.window
    base = next((r for r in results if r.policy == "kueue" and not isinstance(r, common.Run)), None)
    bm = base.metrics if base else None
    rows: list[list[Any]] = []
    for r in results:
        if isinstance(r, common.Run):
            cycles_ms = [c * 1000 for c in r.cycle_seconds]
            rows.append([f"`{r.policy}`", f"**stopped after {r.wall / 60:.0f} min of wall time** at simulated "
                         f"{common.duration(r.reached or 0.0)} ({common.submitted_by(ps.setup, r.reached or 0.0):,} of "
                         f"{len(ps.setup.jobs):,} jobs submitted)"] + ["-"] * 12
                        + [f"{common.percentile(cycles_ms, 50):.1f} / {common.percentile(cycles_ms, 99):.1f}",
                           len(cycles_ms), f"{r.wall:.0f} / {cpu[r.policy]:.0f}"])
            continue
        m = r.metrics
        rows.append([
            f"`{r.policy}`",
            f"{100 * m['gpu_utilization_busy']:.1f}%",
            common.ratio(m["gpu_utilization_busy"], bm["gpu_utilization_busy"]) if bm else "-",
            f"{100 * m['gpu_utilization']:.1f}%",
            common.duration(m["mean_wait_s"]),
            common.ratio(m["mean_wait_s"], bm["mean_wait_s"]) if bm else "-",
            common.duration(m["p95_wait_s"]),
            common.ratio(m["p95_wait_s"], bm["p95_wait_s"]) if bm else "-",
            common.duration(m["mean_jct_s"]),
            common.ratio(m["mean_jct_s"], bm["mean_jct_s"]) if bm else "-",
            m["preemptions"],
            m.get("evictions", 0),
            f"{m['finished']}/{m['workloads']}",
            common.duration(m["makespan_s"]),
            f"{m['cycle_latency_p50_ms']:.1f} / {m['cycle_latency_p99_ms']:.1f}",
            m["cycles"],
            f"{m['wall_s']:.0f} / {cpu[r.policy]:.0f}",
        ])
    headers = ["policy", "GPU alloc while waiting", "vs kueue", "GPU alloc overall", "mean wait", "vs kueue",
               "p95 wait", "vs kueue", "mean JCT", "vs kueue", "preemptions", "evictions", "finished",
               "makespan", "cycle ms p50 / p99", "cycles", "sim wall / CPU s"]
    gang = sum(1 for j in ps.setup.jobs if j.gpu_milli > GPUS_PER_NODE * 1000)
    quota_text = ", ".join(f"{name} {gpus}" for name, gpus in sorted(ps.quotas.items(), key=lambda kv: (-kv[1], kv[0])))
    note = ""
    if args.days < 14:
        note = (f" **This is a {args.days}-day window, not the issue's two weeks**: "
                + ("`--quick` was used for the committed results because the full two-week window is too slow for "
                   "the `tessera` policy on this machine (see the README's timings)." if args.quick
                   else "a shorter window chosen on the command line."))
    lines = [
        f"# Philly replay: busiest {args.days}-day window",
        "",
        common.provenance(__file__),
        f"Generated by `python benchmarks/bench_philly.py{''.join(' ' + a for a in args.argv)}`." + note,
        "",
        f"Window {w.iso(w.start)} to {w.iso(w.end)} UTC (the {args.days}-day window starting at a UTC midnight with "
        f"the most offered GPU-time): {len(ps.setup.jobs):,} jobs, {gang} of them gangs of more than one 8-GPU "
        f"node; offered {ps.offered_gpu_seconds / 3600:,.0f} GPU-hours inside the window (each job's run from its "
        f"submission, clipped at the window's end; {ps.total_gpu_seconds / 3600:,.0f} GPU-hours if run to their "
        f"ends, which would size the cluster at {math.ceil(ps.total_gpu_seconds / (ps.load * w.length_s * 8))} "
        f"nodes). Cluster: {ps.nodes} nodes x 8 GPUs ({ps.nodes * 8} GPUs), sized for {ps.load:.0%} offered load "
        "over the window. "
        f"{len(ps.quotas)} ClusterQueues (virtual clusters) in one cohort, nominal GPUs proportional to their "
        f"Philly node counts: {quota_text}; no borrowing limit, `reclaimWithinCohort: {args.reclaim}`; "
        "`waitForPodsReady` 30 min.",
        "",
        common.markdown_table(headers, rows),
        "",
        "GPU alloc while waiting is `gpu_utilization_busy`: allocated GPU-seconds over capacity, counted only while "
        "some workload was waiting (pending, or admitted with pods not yet bound). GPU alloc overall is "
        "`gpu_utilization` from the first submission to the last finish (the tail of multi-day jobs lowers it for "
        "every policy alike). Waits are submission to start (all pods bound); JCT is submission to finish; a "
        "preempted job restarts from scratch. `vs kueue` is the ratio to the `kueue` row (for waits and JCT lower "
        "is better, for allocation higher). `sim wall / CPU s` is the cost of simulating the policy on this machine "
        "(CPU includes CP-SAT's worker threads; the machine was shared with other work, so wall time is noisy).",
        "",
        "Data: Microsoft Philly trace (Jeon et al., \"Analysis of Large-Scale Multi-Tenant GPU Clusters for DNN "
        "Training Workloads\", USENIX ATC'19), as processed by the Pollux artifact (Qiao et al., OSDI'21); virtual "
        "cluster node counts from the Helios artifact (Hu et al., SC'21). CC BY 4.0.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the busiest 2-day window instead of 14 days")
    ap.add_argument("--days", type=int, default=None, help="window length in days (default 14, --quick 2)")
    ap.add_argument("--load", type=float, default=0.9, help="offered load the cluster is sized for (default 0.9)")
    ap.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated (default {','.join(POLICIES)})")
    ap.add_argument("--reclaim", default="Any", choices=["Any", "LowerPriority", "Never"],
                    help="ClusterQueues' reclaimWithinCohort (default Any)")
    ap.add_argument("--trace-dir", default=str(TRACE_DIR), help=f"folder of the Philly files (default {TRACE_DIR})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wall", type=float, default=None, help="stop each policy's run after this many wall seconds")
    ap.add_argument("--out", default=None, help="result file (default benchmarks/results/philly[_quick].md)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.days is None:
        args.days = 2 if args.quick else 14
    folder = Path(args.trace_dir)
    trace, vc_file = folder / PHILLY_JOBS, folder / VC_NODES
    if not trace.exists() or not vc_file.exists():
        ap.error(f"{folder}: needs {PHILLY_JOBS} and {VC_NODES}")
    window = busiest_window(read_rows(trace), args.days)
    ps = build_setup(trace, vc_file, window, load=args.load, reclaim=args.reclaim, seed=args.seed)
    print(f"window {window.iso(window.start)} .. {window.iso(window.end)}: {len(ps.setup.jobs):,} jobs, "
          f"{ps.nodes} nodes", file=sys.stderr, flush=True)
    results: list[RunResult | common.Run] = []
    cpu: dict[str, float] = {}
    stem = "philly" if args.days == 14 else ("philly_quick" if args.quick else f"philly_{args.days}d")
    for name in [p.strip() for p in args.policies.split(",") if p.strip()]:
        print(f"simulating {name} ...", file=sys.stderr, flush=True)
        run = common.simulate(ps.setup, name, args.max_wall)
        cpu[name] = run.cpu
        results.append(run.result if run.completed else run)
        if run.completed:
            m = run.result.metrics
            print(f"  {name}: wall {run.wall:.0f} s, CPU {run.cpu:.0f} s, busy util {m['gpu_utilization_busy']:.3f}, "
                  f"mean wait {m['mean_wait_s']:.0f} s, cycles {m['cycles']}", file=sys.stderr, flush=True)
        else:
            print(f"  {name}: stopped after {run.wall:.0f} s at simulated t={run.reached:.0f} s", file=sys.stderr, flush=True)
        # the file after every policy, so that a long run killed later keeps what it measured
        common.write_result(stem, render(ps, results, cpu, args), args.out)


if __name__ == "__main__":
    main()

"""Kueue's own scheduler performance configuration, replayed in the simulator for `kueue` and `tessera`.

    python benchmarks/bench_kueue_perf.py              # 15,000 workloads, writes benchmarks/results/kueue_perf.md
    python benchmarks/bench_kueue_perf.py --quick      # one cohort of the five (3,000 workloads)
    python benchmarks/bench_kueue_perf.py --node-cpu 20  # place pods on 30 nodes of 20 CPU instead of one node

The configuration is Kueue's ``test/performance/scheduler/configs/baseline/generator.yaml``:
5 cohorts of 6 ClusterQueues, each with nominal quota 20 CPU and borrowingLimit 100 in one
flavor, ``reclaimWithinCohort: Any``, ``withinClusterQueue: LowerPriority``; per ClusterQueue
three workload sets generated concurrently, the k-th workload of a set created at
(k + 1) x its interval (the generator waits the interval before each creation):

    class   count  interval  runs    priority  CPU
    small    350   100 ms    200 ms    50       1
    medium   100   500 ms    500 ms   100       5
    large     50   1200 ms   1000 ms  200      20

15,000 workloads in all, one pod each. Kueue's runner has no nodes and no kube-scheduler
(a workload runs as soon as it is admitted); the default cluster here is therefore one CPU-only
node with the total nominal quota (600 CPU, pod limit 1,000), so placement never holds anything
back and quota is the only constraint, as in Kueue's test. ``--node-cpu N`` splits the 600 CPU
into nodes of N CPU instead (N >= 20 so that every class fits on a node), which adds placement.

The five cohorts share nothing (no quota flows between cohorts, and the single node never
binds with the default cluster), so in the simulation they are five independent copies of one
cohort; ``--quick`` runs one cohort (6 ClusterQueues on 120 CPU), which gives the same
per-class figures up to tie-breaking.

Reported per policy: average time to admission per class (admitted_at - submitted_at; a
preempted workload counts its last admission), the makespan (first submission to last
finish, simulated seconds), preemptions, cycles, cycle latency and the simulation's wall and
CPU time, beside Kueue's published figures for the same configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the project root on sys.path)
from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor  # noqa: E402
from quotas.kube import Node  # noqa: E402
from scheduler.decisions import make_policy  # noqa: E402
from scheduler.workload import WorkloadInfo  # noqa: E402
from simulator.cluster_gen import generate_nodes  # noqa: E402
from simulator.engine import RunResult, Setup, Simulation  # noqa: E402
from simulator.run import binder_for, simulation_config  # noqa: E402
from simulator.trace import SimJob, make_podset  # noqa: E402

FLAVOR = "rf"  # Kueue's generator's default flavor name


@dataclass(frozen=True)
class WorkloadClass:
    name: str
    count: int
    interval_s: float
    runtime_s: float
    priority: int
    cpu: int


CLASSES: tuple[WorkloadClass, ...] = (
    WorkloadClass("small", 350, 0.1, 0.2, 50, 1),
    WorkloadClass("medium", 100, 0.5, 0.5, 100, 5),
    WorkloadClass("large", 50, 1.2, 1.0, 200, 20),
)
COHORTS = 5
QUEUES_PER_COHORT = 6
NOMINAL_CPU = 20
BORROWING_LIMIT_CPU = 100

KUEUE_PUBLISHED = {"large": 16.5, "medium": 76.8, "small": 215.0, "wall": 351.0}
"""Kueue's published figures for this configuration as the issue quotes them (seconds)."""
KUEUE_RANGESPEC_LARGE = 6.666
"""The large-class average in Kueue's ``configs/baseline/rangespec.yaml`` ("Average value 6666")."""


def build_queues(cohorts: int = COHORTS, queues_per_cohort: int = QUEUES_PER_COHORT, nominal: int = NOMINAL_CPU,
                 borrowing_limit: int = BORROWING_LIMIT_CPU) -> tuple[list[Cohort], list[ClusterQueue], list[LocalQueue]]:
    """Cohorts ``cohort-C``, ClusterQueues ``cq-0-Q-cohort-C`` (Kueue's generator's names), and in each
    ClusterQueue's own namespace a LocalQueue of the same name."""
    cohort_objs, cqs, lqs = [], [], []
    for c in range(cohorts):
        cohort = f"cohort-{c}"
        cohort_objs.append(Cohort.model_validate({"metadata": {"name": cohort}}))
        for q in range(queues_per_cohort):
            name = f"cq-0-{q}-{cohort}"
            cqs.append(ClusterQueue.model_validate({
                "metadata": {"name": name},
                "spec": {
                    "cohort": cohort,
                    "namespaceSelector": {},
                    "resourceGroups": [{
                        "coveredResources": ["cpu"],
                        "flavors": [{"name": FLAVOR, "resources": [
                            {"name": "cpu", "nominalQuota": str(nominal), "borrowingLimit": str(borrowing_limit)},
                        ]}],
                    }],
                    "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority"},
                },
            }))
            lqs.append(LocalQueue.model_validate(
                {"metadata": {"name": name, "namespace": name}, "spec": {"clusterQueue": name}}))
    return cohort_objs, cqs, lqs


def build_jobs(cluster_queues: Sequence[ClusterQueue], classes: Sequence[WorkloadClass] = CLASSES) -> list[SimJob]:
    """Every ClusterQueue's workload sets; names ``<class>-<set>-<k>-0`` as Kueue's generator names them."""
    podsets = {c.name: (make_podset("main", 1, {"cpu": c.cpu * 1000}),) for c in classes}
    jobs: list[SimJob] = []
    for cq in cluster_queues:
        for index, cls in enumerate(classes):
            for k in range(cls.count):
                at = round((k + 1) * cls.interval_s, 3)
                workload = WorkloadInfo(
                    namespace=cq.name, name=f"{cls.name}-{index}-{k}-0", local_queue=cq.name,
                    podsets=podsets[cls.name], priority=cls.priority, creation_time=at,
                )
                jobs.append(SimJob(workload, at, cls.runtime_s, f"kueue-perf:{cq.name}:{cls.name}:{k}"))
    jobs.sort(key=lambda j: j.submit_at)
    return jobs


def build_nodes(total_cpu: int, node_cpu: int | None = None) -> list[Node]:
    """CPU-only nodes holding ``total_cpu``: one node (pod limit 1,000) by default, else nodes of ``node_cpu``."""
    if node_cpu is None:
        manifests = generate_nodes(1, gpus_per_node=0, cpu_per_node=total_cpu, memory_per_node="4Ti",
                                   pods_per_node=1000, name_prefix="cpu")
    else:
        if total_cpu % node_cpu:
            raise ValueError(f"--node-cpu {node_cpu} does not divide the total nominal quota {total_cpu} CPU")
        manifests = generate_nodes(total_cpu // node_cpu, gpus_per_node=0, cpu_per_node=node_cpu,
                                   memory_per_node="256Gi", pods_per_node=110, name_prefix="cpu")
    return [Node.model_validate(m) for m in manifests]


def build_setup(cohorts: int = COHORTS, queues_per_cohort: int = QUEUES_PER_COHORT, scale: float = 1.0,
                node_cpu: int | None = None, seed: int = 0) -> Setup:
    """The whole replay: queues, jobs (each class's count times ``scale``, at least 1) and nodes."""
    classes = tuple(WorkloadClass(c.name, max(1, round(c.count * scale)), c.interval_s, c.runtime_s, c.priority, c.cpu)
                    for c in CLASSES)
    cohort_objs, cqs, lqs = build_queues(cohorts, queues_per_cohort)
    return Setup(
        nodes=build_nodes(NOMINAL_CPU * len(cqs), node_cpu),
        flavors=[ResourceFlavor.model_validate({"metadata": {"name": FLAVOR}})],
        cluster_queues=cqs,
        cohorts=cohort_objs,
        local_queues=lqs,
        jobs=build_jobs(cqs, classes),
        config=simulation_config(Configuration()),
        seed=seed,
    )


def simulate(setup: Setup, policy_name: str) -> RunResult:
    policy = make_policy(policy_name)
    return Simulation(setup, policy, binder_for(policy)).run()


def stopped_summary(run: common.Run, setup: Setup) -> dict[str, Any]:
    """What a run stopped by --max-wall can say: how far it got."""
    cycles_ms = [c * 1000 for c in run.cycle_seconds]
    return {"policy": run.policy, "stopped": True, "reached_s": run.reached,
            "submitted": common.submitted_by(setup, run.reached or 0.0), "workloads": len(setup.jobs),
            "cycles": len(cycles_ms), "cycle_p50_ms": common.percentile(cycles_ms, 50),
            "cycle_p99_ms": common.percentile(cycles_ms, 99), "wall_s": run.wall}


def workload_class(name: str) -> str:
    return name.split("-", 1)[0]


def summarize(result: RunResult) -> dict[str, Any]:
    """Per class: workloads, admitted, average time to admission (s); and the run's makespan etc."""
    waits: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for record in result.workloads:
        cls = workload_class(record.name)
        counts[cls] += 1
        if record.admitted_at is not None:
            waits[cls].append(record.admitted_at - record.submitted_at)
    m = result.metrics
    return {
        "policy": result.policy,
        "classes": {c: {"workloads": counts[c], "admitted": len(waits[c]), "avg_admission_s": common.mean(waits[c]),
                        "p95_admission_s": common.percentile(waits[c], 95)} for c in counts},
        "makespan_s": m["makespan_s"],
        "finished": m["finished"],
        "workloads": m["workloads"],
        "preemptions": m["preemptions"],
        "cycles": m["cycles"],
        "cycle_p50_ms": m["cycle_latency_p50_ms"],
        "cycle_p99_ms": m["cycle_latency_p99_ms"],
        "wall_s": m["wall_s"],
    }


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the result file: every option that changes what it measured."""
    parts = ["python benchmarks/bench_kueue_perf.py"]
    if args.quick:
        parts.append("--quick")
    if args.node_cpu:
        parts.append(f"--node-cpu {args.node_cpu}")
    policies = getattr(args, "policies", "kueue,tessera")
    if policies != "kueue,tessera":
        parts.append(f"--policies {policies}")
    if getattr(args, "seed", 0):
        parts.append(f"--seed {args.seed}")
    if getattr(args, "max_wall", None) is not None:
        parts.append(f"--max-wall {args.max_wall:g}")
    return " ".join(parts)


def render(summaries: Sequence[dict[str, Any]], setup: Setup, args: argparse.Namespace, cpu: dict[str, float]) -> str:
    full = not args.quick
    demand = sum(c.count * args.scale * c.cpu * c.runtime_s for c in CLASSES) * len(setup.cluster_queues)
    capacity = NOMINAL_CPU * len(setup.cluster_queues)
    per_class = {c.name: c for c in CLASSES}
    rows: list[list[Any]] = []
    for s in summaries:
        if s.get("stopped"):
            rows.append([f"`{s['policy']}` (simulated)", f"**stopped after {s['wall_s'] / 60:.0f} min of wall time** at "
                         f"simulated t={s['reached_s']:.1f} s ({s['submitted']:,} of {s['workloads']:,} submitted)",
                         "-", "-", "-", "-", "-", "-", "-", s["cycles"],
                         f"{s['cycle_p50_ms']:.1f} / {s['cycle_p99_ms']:.1f}", f"{s['wall_s']:.1f} / {cpu[s['policy']]:.1f}"])
            continue
        cl = s["classes"]
        rows.append([
            f"`{s['policy']}` (simulated)",
            f"{cl['large']['avg_admission_s']:.2f}", f"{cl['medium']['avg_admission_s']:.2f}",
            f"{cl['small']['avg_admission_s']:.2f}", f"{s['makespan_s']:.1f}",
            f"{100 * demand / (capacity * s['makespan_s']):.1f}%" if s["makespan_s"] else "-",
            f"{sum(c['admitted'] for c in cl.values())}/{s['workloads']}", s["finished"], s["preemptions"], s["cycles"],
            f"{s['cycle_p50_ms']:.1f} / {s['cycle_p99_ms']:.1f}", f"{s['wall_s']:.1f} / {cpu[s['policy']]:.1f}",
        ])
    rows.append([
        "Kueue, published (wall clock)", f"{KUEUE_PUBLISHED['large']:.1f}", f"{KUEUE_PUBLISHED['medium']:.1f}",
        f"{KUEUE_PUBLISHED['small']:.1f}", f"{KUEUE_PUBLISHED['wall']:.0f} (command wall)", "58.7%", "15000/15000", "-", "-", "-",
        "-", "-",
    ])
    headers = ["run", "large: avg s to admission", "medium: avg s", "small: avg s", "makespan s", "quota usage",
               "admitted",
               "finished", "preemptions", "cycles", "cycle ms p50 / p99", "sim wall / CPU s"]
    table = common.markdown_table(headers, rows)
    n_jobs = len(setup.jobs)
    counts = ", ".join(f"{c.name} {round(c.count * args.scale) or 1}" for c in CLASSES)
    nodes = (f"one CPU-only node of {capacity} CPU (pod limit 1,000): placement never binds, quota is the only constraint, "
             "as in Kueue's test, which runs no nodes and no kube-scheduler") if args.node_cpu is None else (
             f"{len(setup.nodes)} CPU-only nodes of {args.node_cpu} CPU (600 in all): the `kueue` policy admits by "
             "quota and kube-scheduler's LeastAllocated placement then binds the pods (or leaves them Pending), "
             "`tessera` admits only what it places")
    lines = [
        "# Kueue's scheduler performance configuration, replayed",
        "",
        common.provenance(__file__),
        f"Generated by `{command_line(args)}`"
        + ("" if full else " (**quick run: one cohort of the five, 6 ClusterQueues on a 120-CPU node**)") + ".",
        "",
        f"Configuration (Kueue `test/performance/scheduler/configs/baseline/generator.yaml`): {args.cohorts} cohorts x "
        f"{QUEUES_PER_COHORT} ClusterQueues, each with nominal quota {NOMINAL_CPU} CPU, borrowingLimit "
        f"{BORROWING_LIMIT_CPU}, `reclaimWithinCohort: Any`, `withinClusterQueue: LowerPriority`; per ClusterQueue "
        f"{counts} workloads ({n_jobs:,} in all), one pod each: "
        + "; ".join(f"{c.name} every {c.interval_s * 1000:.0f} ms, running {c.runtime_s * 1000:.0f} ms, priority "
                    f"{c.priority}, {c.cpu} CPU" for c in per_class.values())
        + f". Cluster: {nodes}. Offered work {demand:,.0f} CPU-seconds on {capacity} CPU: at least "
          f"{demand / capacity:.0f} s of simulated time even with perfect packing and zero scheduling latency.",
        "",
        table,
        "",
        "Time to admission is `admitted_at - submitted_at` (quota reserved; for a preempted and readmitted "
        "workload, its last admission, as Kueue's recorder also counts it), averaged per class; makespan is first "
        "submission to last finish. Quota usage: the offered CPU-seconds over (total nominal quota x makespan), "
        "i.e. useful work only (Kueue's `cpuAverageUsage` of the `cq` class, 58.7% in its rangespec, also counts "
        "work later preempted). "
        "`sim wall / CPU s` is what the simulation of that policy cost on this machine (CPU includes CP-SAT's "
        "worker threads); `cycle ms` is the policy's own latency per scheduling cycle.",
        "",
        "## How to read the comparison",
        "",
        "- **Kueue's figures are wall-clock seconds on a real control plane; ours are simulated seconds.** "
        "Kueue's perf runner creates the Workloads through an API server (envtest) and `minimalkueue` admits them "
        "with its own cycle latency, API writes and requeue back-offs; the 351 s is the runner command's wall time "
        "(creation, admission, the simulated run times and cleanup). In our simulator a scheduling cycle takes "
        "zero simulated time and a workload's run time starts the instant it is admitted, so our time to admission "
        "is pure queueing for quota: it measures the *admission order and packing* of each policy, not the "
        "throughput of a controller. The policies' real per-cycle cost is the `cycle ms` column (measured on this "
        "machine, in the simulator's process).",
        f"- With zero latency the makespan is bounded below by the offered work: {demand:,.0f} CPU-s on {capacity} "
        f"CPU is {demand / capacity:.0f} s, and the last large workload is created at "
        f"{CLASSES[2].count * CLASSES[2].interval_s:.0f} s. Kueue's 351 s wall is mostly control-plane time "
        "(the runner also waits for cleanup), so a simulated makespan near the bound says the policy kept the "
        "quota busy, not that it would finish the real test 5x faster.",
        "- The per-class ordering is the meaningful part: with `reclaimWithinCohort: Any` and "
        "`withinClusterQueue: LowerPriority`, large (priority 200) workloads are admitted first and may preempt "
        "small and medium ones, so small workloads wait longest in both Kueue and the simulation.",
        f"- Kueue's own `configs/baseline/rangespec.yaml` records the large class at \"Average value 6666\" ms "
        f"({KUEUE_RANGESPEC_LARGE:.1f} s), medium 76,768 ms, small 215,468 ms and wall 351,116 ms; the table "
        "quotes the issue's 16.5 s for large, which we could not trace to a Kueue file; both are wall-clock figures "
        "and the difference does not change the comparison.",
        "- Kueue's test counts no node placement; the default cluster here (one node) reproduces that. "
        "Re-run with `--node-cpu 20` to add placement on 30 small nodes.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one cohort of the five (3,000 workloads)")
    ap.add_argument("--policies", default="kueue,tessera", help="comma-separated policies (default kueue,tessera)")
    ap.add_argument("--node-cpu", type=int, default=None,
                    help="place pods on nodes of this many CPU (>= 20) instead of one 600-CPU node")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wall", type=float, default=None, help="stop each policy's run after this many wall seconds")
    ap.add_argument("--out", default=None, help="result file (default benchmarks/results/kueue_perf[_quick][_nodesN].md)")
    args = ap.parse_args(argv)
    args.scale = 1.0
    args.cohorts = 1 if args.quick else COHORTS
    if args.node_cpu is not None and args.node_cpu < max(c.cpu for c in CLASSES):
        ap.error(f"--node-cpu must be at least {max(c.cpu for c in CLASSES)} (the large class's pod)")
    setup = build_setup(cohorts=args.cohorts, scale=args.scale, node_cpu=args.node_cpu, seed=args.seed)
    summaries, cpu = [], {}
    stem = "kueue_perf" + ("_quick" if args.quick else "") + (f"_nodes{args.node_cpu}" if args.node_cpu else "")
    for name in [p.strip() for p in args.policies.split(",") if p.strip()]:
        print(f"simulating {name} on {len(setup.jobs):,} workloads ...", file=sys.stderr, flush=True)
        run = common.simulate(setup, name, args.max_wall)
        cpu[name] = run.cpu
        summary = summarize(run.result) if run.completed else stopped_summary(run, setup)
        summary["wall_s"] = run.wall
        summaries.append(summary)
        print(f"  {name}: wall {run.wall:.1f} s, CPU {run.cpu:.1f} s, completed {run.completed}, "
              f"cycles {summary['cycles']}", file=sys.stderr, flush=True)
        # the file after every policy, so that a long run killed later keeps what it measured
        common.write_result(stem, render(summaries, setup, args, cpu), args.out)


if __name__ == "__main__":
    main()

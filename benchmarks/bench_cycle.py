"""Cycle latency of the `tessera` policy against the greedy baseline, measured in the same run.

    python benchmarks/bench_cycle.py            # the issue's two sizes, writes benchmarks/results/cycle.md
    python benchmarks/bench_cycle.py --quick    # fewer cycles
    python benchmarks/bench_cycle.py --memory   # also peak memory (tracemalloc) at 5,000 nodes / 20,000 pending

Then, on instances of 16, 32 and 64 nodes (plain and packing), whether the solver proves
optimality: solver statuses and gaps with `timeLimit` 1 s (the default) and 10 s.

Each instance is a random but seeded busy cluster: nodes of 8 GPUs in racks of 16 and blocks of
8 racks (a `Topology` block > rack > host), GPUs partly taken by running workloads of mixed
shapes, eight team ClusterQueues sharing one cohort, and a pending set of mixed shapes: whole
GPUs (1, 2, 4), whole nodes, gangs of 2-16 whole nodes (a third of them requiring one rack),
fractional shares (250m, 500m), two priorities. Every policy sees the same snapshots.

Reported per size: cycle latency p50 and p99 (ms) of `tessera` (Configuration.solver.timeLimit
1 s, 2 workers), of the greedy cycle inside tessera (warm start and fallback) and of the
`kueue` policy when it is installed; GPUs admitted per cycle; solver status counts and the
mean relative gap |objective - bound| / |objective|. ``tessera next`` is the cycle that
follows at the same instant, on the state the first one's decisions leave (the same policy
object: its parking memory holds): a cycle that admits leaves the preemption searches of its
quota tree to it (docs/solver.md, *Preemption*), so the two together are what an instant costs.
Each size starts with one untimed cycle of every policy on an instance of its own (seed 999):
a process's first cycle pays imports and first-use setup, which a running scheduler pays once.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quotas.api import ClusterQueue, Cohort, Configuration, LocalQueue, ResourceFlavor, Topology  # noqa: E402
from scheduler.cluster import Cluster, PodRequest  # noqa: E402
from scheduler.decisions import Decisions, collector_paused, make_policy  # noqa: E402
from scheduler.solver import window_for  # noqa: E402
from scheduler.snapshot import Admitted, Pending, PodSetPlacement, Snapshot, build_snapshot  # noqa: E402
from scheduler.workload import PodSetInfo, TopologyRequest, WorkloadInfo  # noqa: E402

GPU = "nvidia.com/gpu"
G = 1000
TEAMS = 8
LEVELS = ("example.com/block", "example.com/rack", "kubernetes.io/hostname")


def _node(i: int) -> object:
    rack, block = i // 16, i // 128
    labels = {"kubernetes.io/hostname": f"node-{i:05d}", LEVELS[1]: f"r{rack:04d}", LEVELS[0]: f"b{block:03d}", "gpu": "h100"}
    return Cluster.make_node(
        f"node-{i:05d}", {"cpu": 128 * G, "memory": 1024 * 2**30 * G, GPU: 8 * G, "pods": 110 * G}, labels
    )


def _shape(rng: random.Random, odd: bool = False) -> tuple[int, int, str | None]:
    """(GPU milli per pod, pods, required topology level or None) of a random workload.
    ``odd`` adds 3- and 6-GPU pods and 300m shares (shapes that do not divide a node evenly)."""
    if odd and rng.random() < 0.3:
        return rng.choice([300, 3000, 6000]), 1, None
    r = rng.random()
    if r < 0.15:
        return rng.choice([250, 500]), 1, None
    if r < 0.50:
        return 1000, 1, None
    if r < 0.70:
        return rng.choice([2000, 4000]), 1, None
    if r < 0.85:
        return 8000, 1, None
    pods = rng.choice([2, 2, 4, 4, 8, 16])
    return 8000, pods, (LEVELS[1] if rng.random() < 1 / 3 else None)


def _request(gpu: int) -> PodRequest:
    cpu = max(1, gpu // 1000) * 8 * G if gpu >= 1000 else 2 * G
    mem = max(1, gpu // 1000) * 64 * 2**30 * G if gpu >= 1000 else 16 * 2**30 * G
    return PodRequest.of({"cpu": cpu, "memory": mem, GPU: gpu})


def make_instance(nodes: int, pending: int, seed: int, busy: float = 0.6, now: float = 10_000.0, packing: bool = False) -> Snapshot:
    """A random busy cluster and pending set (see the module docstring). ``packing``: quota is no
    limit (each team may use the whole cluster) and shapes include odd sizes, so that what a
    cycle admits depends on how well it packs."""
    rng = random.Random(seed)
    cluster = Cluster([_node(i) for i in range(nodes)])
    topology = Topology.model_validate({"metadata": {"name": "dc"}, "spec": {"levels": [{"nodeLabel": lb} for lb in LEVELS]}})
    flavor = ResourceFlavor.model_validate({"metadata": {"name": "h100"}, "spec": {"nodeLabels": {"gpu": "h100"}, "topologyName": "dc"}})
    share = nodes * 8 // TEAMS if not packing else nodes * 8
    cqs = [
        ClusterQueue.model_validate(
            {
                "metadata": {"name": f"team-{t}"},
                "spec": {
                    "namespaceSelector": {},
                    "cohort": "all",
                    "resourceGroups": [
                        {
                            "coveredResources": ["cpu", "memory", GPU],
                            "flavors": [
                                {
                                    "name": "h100",
                                    "resources": [
                                        {"name": "cpu", "nominalQuota": share * 16},
                                        {"name": "memory", "nominalQuota": f"{share * 128}Gi"},
                                        {"name": GPU, "nominalQuota": share},
                                    ],
                                }
                            ],
                        }
                    ],
                    "preemption": {"withinClusterQueue": "LowerPriority", "reclaimWithinCohort": "LowerPriority"},
                },
            }
        )
        for t in range(TEAMS)
    ]
    lqs = [LocalQueue.model_validate({"metadata": {"name": f"lq-{t}", "namespace": f"ns-{t}"}, "spec": {"clusterQueue": f"team-{t}"}}) for t in range(TEAMS)]
    # running workloads, placed first-fit on a shuffled node order until `busy` of the GPUs are taken
    order = list(cluster.nodes)
    rng.shuffle(order)
    admitted: list[Admitted] = []
    target = int(busy * nodes * 8 * G)
    taken = 0
    i = 0
    cursor = 0
    while taken < target and i < nodes * 16:
        gpu, pods, _ = _shape(rng)
        pods = min(pods, 2)
        pod = _request(gpu)
        placed: list[str] = []
        bindings = []
        for _ in range(pods):
            for step in range(len(order)):
                name = order[(cursor + step) % len(order)]
                if cluster.nodes[name].fits(pod):
                    bindings.append(cluster.bind(name, pod))
                    placed.append(name)
                    cursor = (cursor + step + rng.randrange(3)) % len(order)
                    break
        if len(placed) < pods:
            for b in bindings:
                cluster.unbind(b)
            break
        team = rng.randrange(TEAMS)
        wl = WorkloadInfo(f"ns-{team}", f"run-{i}", f"lq-{team}", (PodSetInfo("main", pods, pod),), priority=rng.choice([0, 0, 100]),
                          creation_time=now - 5000, cluster_queue=f"team-{team}")
        usage = {("h100", r): v * pods for r, v in pod.items}
        admitted.append(Admitted(wl, f"team-{team}", now - 4000 + i, usage,
                                 (PodSetPlacement("main", pods, {r: "h100" for r in pod}, tuple(placed)),), tuple(bindings)))
        taken += gpu * pods
        i += 1
    pend = []
    for j in range(pending):
        gpu, pods, level = _shape(rng, odd=packing)
        team = rng.randrange(TEAMS)
        topo = TopologyRequest("required", level) if level else None
        wl = WorkloadInfo(f"ns-{team}", f"job-{j}", f"lq-{team}", (PodSetInfo("main", pods, _request(gpu), topology=topo),),
                          priority=100 if rng.random() < 0.2 else 0, creation_time=now - rng.uniform(0, 3000))
        pend.append(Pending(wl, wl.creation_time))
    config = Configuration.model_validate({"solver": {"timeLimit": 1.0, "workers": 2}})
    return build_snapshot(now=now, cluster=cluster, cluster_queues=cqs, cohorts=[Cohort.model_validate({"metadata": {"name": "all"}})],
                          flavors=[flavor], local_queues=lqs, admitted=admitted, pending=pend, topologies=[topology], config=config, seed=seed)


def _gpus(decisions: Decisions, snapshot: Snapshot, placed_only: bool) -> float:
    by_key = {p.key: p.workload for p in snapshot.pending}
    total = 0
    for adm in decisions.admissions:
        ps = {p.name: p for p in by_key[adm.key].podsets}
        for p in adm.podsets:
            pods = len(p.nodes) if placed_only else p.count
            total += ps[p.name].requests.get(GPU) * pods
    return total / G


def _after(snap: Snapshot, decisions: Decisions) -> Snapshot:
    """The state ``decisions`` leave (victims gone, admissions bound on ``snap.cluster``, which is
    changed), with the same configuration objects, as the simulator's next snapshot has."""
    from scheduler.kueue import admitted_from_admission

    by_key = {p.key: p for p in snap.pending}
    gone = {p.key for p in decisions.preemptions}
    usage = snap.usage
    admitted: list[Admitted] = []
    for a in snap.admitted:
        if a.key in gone:
            for b in a.bindings:
                snap.cluster.unbind(b)
            usage = usage.release(a.cluster_queue, dict(a.usage))
        else:
            admitted.append(a)
    for adm in decisions.admissions:
        admitted.append(admitted_from_admission(snap.cluster, adm, by_key[adm.key].workload, snap.now))
        usage = usage.admit(adm.cluster_queue, dict(adm.usage))
    done = {a.key for a in decisions.admissions}
    return replace(snap, admitted=admitted, pending=[p for p in snap.pending if p.key not in done], usage=usage)


def _status(d: Decisions) -> str:
    """The solver status without its details (``OPTIMAL``, ``FEASIBLE``, ``EMPTY``...)."""
    return d.stats.solver_status.split(":")[0].split(" (")[0] or "-"


def _gap(d: Decisions) -> float | None:
    """|objective - bound| / |objective| of the cycle's model, None without one."""
    if not d.stats.objective or d.stats.bound is None:
        return None
    return abs(d.stats.bound - d.stats.objective) / max(1.0, abs(d.stats.objective))


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def run_size(nodes: int, pending: int, cycles: int, policies: list[str], packing: bool = False) -> dict[str, dict[str, object]]:
    from scheduler.solver import TesseraPolicy
    from scheduler.solver_common import prepare
    from scheduler.solver_place import Placer, greedy_cycle

    rows = policies + (["tessera next"] if "tessera" in policies else []) + ["greedy"]
    out: dict[str, dict[str, object]] = {p: {"lat": [], "gpus": [], "quota": [], "status": Counter(), "gap": []} for p in rows}
    warm = make_instance(nodes, pending, seed=999, packing=packing)  # untimed: imports and first-use setup
    for name in policies:
        (TesseraPolicy() if name == "tessera" else make_policy(name)).schedule(warm)
    greedy_cycle(prepare(warm), Placer(warm))
    for c in range(cycles):
        snap = make_instance(nodes, pending, seed=1000 + c, packing=packing)
        first: tuple[TesseraPolicy, Decisions] | None = None
        for name in policies:
            policy = TesseraPolicy() if name == "tessera" else make_policy(name)
            t0 = time.perf_counter()
            d = policy.schedule(snap)
            dt = time.perf_counter() - t0
            if isinstance(policy, TesseraPolicy):
                first = (policy, d)
            rec = out[name]
            rec["lat"].append(dt * 1000)  # type: ignore[union-attr]
            rec["gpus"].append(_gpus(d, snap, placed_only=True))  # type: ignore[union-attr]
            rec["quota"].append(_gpus(d, snap, placed_only=False))  # type: ignore[union-attr]
            rec["status"][_status(d)] += 1  # type: ignore[index]
            if (gap := _gap(d)) is not None:
                rec["gap"].append(gap)  # type: ignore[union-attr]
        t0 = time.perf_counter()
        with collector_paused():  # as the policies run their cycles
            prepared = prepare(snap)
            admitted, _ = greedy_cycle(prepared, Placer(snap))
        dt = time.perf_counter() - t0
        out["greedy"]["lat"].append(dt * 1000)  # type: ignore[union-attr]
        gpus = sum(ps.pod.get(GPU) * n for p in admitted for ps, (_, n) in zip(p.candidate.podsets, p.choice)) / G
        out["greedy"]["gpus"].append(gpus)  # type: ignore[union-attr]
        out["greedy"]["quota"].append(gpus)  # type: ignore[union-attr]
        if first is not None:  # last: it changes the instance's cluster
            policy, d = first
            nxt = _after(snap, d)
            t0 = time.perf_counter()
            d2 = policy.schedule(nxt)
            rec = out["tessera next"]
            rec["lat"].append((time.perf_counter() - t0) * 1000)  # type: ignore[union-attr]
            rec["gpus"].append(_gpus(d2, nxt, placed_only=True))  # type: ignore[union-attr]
            rec["quota"].append(_gpus(d2, nxt, placed_only=False))  # type: ignore[union-attr]
            rec["status"][_status(d2)] += 1  # type: ignore[index]
        print(f"  {nodes} nodes / {pending} pending, cycle {c + 1}/{cycles}: "
              + ", ".join(f"{k} {v['lat'][-1]:.0f} ms" for k, v in out.items() if v["lat"]), flush=True)  # type: ignore[index]
    return out


OPTIMALITY_SIZES = ((16, 25), (32, 50), (64, 100))
"""Instances of up to 64 nodes (pending in the same ratio as the latency sizes), where the solver
should prove optimality."""


def optimality(nodes: int, pending: int, cycles: int, packing: bool, time_limit: float) -> dict[str, object]:
    """One `tessera` cycle per instance with ``solver.timeLimit`` set: solver statuses, relative
    gaps |objective - bound| / |objective| (0 when proven optimal) and cycle latencies."""
    from scheduler.solver import TesseraPolicy

    config = Configuration.model_validate({"solver": {"timeLimit": time_limit, "workers": 2}})
    status: Counter[str] = Counter()
    gaps: list[float] = []
    lat: list[float] = []
    solve: list[float] = []
    primary = 0
    for c in range(cycles):
        snap = replace(make_instance(nodes, pending, seed=2000 + c, packing=packing), config=config)
        policy = TesseraPolicy()
        t0 = time.perf_counter()
        d = policy.schedule(snap)
        lat.append((time.perf_counter() - t0) * 1000)
        status[_status(d)] += 1
        if (gap := _gap(d)) is not None:
            gaps.append(gap)
        if policy.last is not None:
            solve.append(policy.last.wall * 1000)
            primary += policy.last.primary_proven
    return {"status": status, "gaps": gaps, "lat": lat, "solve": solve, "primary": primary}


def optimality_rows(cycles: int, limits: tuple[float, ...] = (1.0, 10.0)) -> list[str]:
    rows = []
    for packing in (False, True):
        for nodes, pending in OPTIMALITY_SIZES:
            for limit in limits:
                r = optimality(nodes, pending, cycles, packing, limit)
                status = ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items()))  # type: ignore[union-attr]
                gaps = r["gaps"] or [0.0]
                label = f"{nodes} x 8 GPU / {pending}{' packing' if packing else ''}"
                rows.append(
                    f"| {label} | {limit:g} s | {status} | {r['primary']} of {cycles} | {100 * statistics.mean(gaps):.2g}% | {100 * max(gaps):.2g}% | "  # type: ignore[arg-type]
                    f"{_pct(r['solve'], 0.5):.0f} / {max(r['solve'] or [float('nan')]):.0f} | "  # type: ignore[arg-type]
                    f"{_pct(r['lat'], 0.5):.0f} / {max(r['lat']):.0f} |"  # type: ignore[arg-type]
                )
                print("  " + rows[-1], flush=True)
    return rows


def peak_memory(nodes: int, pending: int) -> tuple[float, float, str]:
    from scheduler.solver import TesseraPolicy

    snap = make_instance(nodes, pending, seed=7)
    tracemalloc.start()
    t0 = time.perf_counter()
    d = TesseraPolicy().schedule(snap)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, dt, d.stats.solver_status


def _commit() -> str:
    """HEAD, marked when the scheduler or this script differ from it (the numbers are of the working tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "scheduler", "quotas", "benchmarks/bench_cycle.py"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return f"{head} + uncommitted changes" if dirty else head
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cycles per size")
    ap.add_argument("--memory", action="store_true", help="also measure peak memory at 5,000 nodes / 20,000 pending")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cycle.md"))
    args = ap.parse_args()
    policies = ["tessera"]
    try:
        make_policy("kueue")
        policies.append("kueue")
    except KeyError:
        pass
    # 100 cycles per size: the p99 of 100 is the second-highest, of 30 it would be the maximum
    sizes = [
        (128, 200, 10 if args.quick else 100, False),
        (1024, 2000, 3 if args.quick else 100, False),
        (128, 200, 10 if args.quick else 100, True),
    ]
    rows = []
    for nodes, pending, cycles, packing in sizes:
        res = run_size(nodes, pending, cycles, policies, packing)
        base = res["greedy"]
        label = f"{nodes} x 8 GPU / {pending}{' packing' if packing else ''}"
        for name, rec in res.items():
            lat = rec["lat"]
            p50, p99, top = _pct(lat, 0.5), _pct(lat, 0.99), max(lat)  # type: ignore[arg-type]
            gpus = statistics.mean(rec["gpus"])  # type: ignore[arg-type]
            quota = statistics.mean(rec["quota"])  # type: ignore[arg-type]
            status = ", ".join(f"{k} {v}" for k, v in sorted(rec["status"].items())) or "-"  # type: ignore[union-attr]
            gap = f"{100 * statistics.mean(rec['gap']):.3f}%" if rec["gap"] else "-"  # type: ignore[arg-type]
            rows.append(
                f"| {label} | {name} | {p50:.0f} | {p99:.0f} | {top:.0f} | "
                f"{p50 / _pct(base['lat'], 0.5):.1f}x | {p99 / _pct(base['lat'], 0.99):.1f}x | "  # type: ignore[arg-type]
                f"{quota:.1f} | {gpus:.1f} | {gpus / max(1e-9, statistics.mean(base['gpus'])):.3f} | {status} | {gap} |"  # type: ignore[arg-type]
            )
    lines = [
        "# Scheduling cycle latency: tessera vs greedy",
        "",
        f"Commit `{_commit()}`, {time.strftime('%Y-%m-%d')}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}.",
        "Generated by `python benchmarks/bench_cycle.py` (instances: see the script's docstring). "
        "`tessera` runs with `solver.timeLimit: 1`, `solver.workers: 2` and `solver.maxCandidates` unset (the model's "
        f"window: {window_for(128)} at 128 nodes, {window_for(1024)} at 1,024); `greedy` is tessera's own greedy "
        "cycle (Kueue order, best-fit placement) measured on the same snapshots; ratios are against it. "
        "GPUs admitted (quota) counts what the admissions reserve; GPUs on nodes only the pods the cycle bound "
        "(`kueue` admits by quota and leaves placement to kube-scheduler, so its pods are not on nodes yet). "
        "`packing` rows: quota is no limit and shapes include 3- and 6-GPU pods and 300m shares. "
        "Every row's cycles run with Python's cyclic garbage collector paused, as the policies run theirs "
        "(`collector_paused`); the collection a cycle puts off runs at the caller's next allocation, after the "
        "timed call. p99 is the nearest-rank percentile (of 100 cycles, the second-highest).",
        "",
        "| size (nodes / pending) | policy | p50 ms | p99 ms | max ms | p50 vs greedy | p99 vs greedy | GPUs admitted (quota) | GPUs on nodes | on nodes vs greedy | solver status | mean gap |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        *rows,
    ]
    opt_cycles = 4 if args.quick else 10
    lines += [
        "",
        "## Optimality up to 64 nodes",
        "",
        f"{opt_cycles} instances per row (seeds 2000 on; the same generator, pending in the same ratio), one "
        "`tessera` cycle each with `solver.timeLimit` as given (`workers: 2`). Status counts are the solver's; "
        "gap is |objective - bound| / |objective| (0 when optimal; the objective weighs priority-weighted GPU-time "
        "above every lower term, which makes it large and relative gaps small); solve = CP-SAT wall time, cycle = "
        "the whole cycle, p50 / max in ms. GPU-time proven: cycles whose priority-weighted GPU-time is proven "
        "at its optimum (a model not proven at once is solved lexicographically, that part first: docs/solver.md, "
        "*Determinism*); the rest of the gap is in the lower terms (fragmentation, aging, order).",
        "",
        "| size (nodes / pending) | timeLimit | solver status | GPU-time proven | mean gap | max gap | solve ms | cycle ms |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        *optimality_rows(opt_cycles),
    ]
    if args.memory:
        mib, secs, status = peak_memory(5000, 20000)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        lines += ["", f"Peak memory of one tessera cycle at 5,000 nodes / 20,000 pending: {mib:.0f} MiB traced by "
                      f"tracemalloc (Python objects), {rss:.0f} MiB maximum resident set of the whole benchmark process "
                      f"(CP-SAT's native memory included); the cycle took {secs:.1f} s ({status})."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

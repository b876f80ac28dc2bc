"""Operator latency: the real operator against kmock's Kubernetes emulator, from a Job's creation to its start.

    python benchmarks/bench_operator.py                     # 1,000 Jobs, writes benchmarks/results/operator.md
    python benchmarks/bench_operator.py --quick             # 100 Jobs, writes operator_quick.md
    python benchmarks/bench_operator.py --jobs 300 --rates 20 --policies kueue
    python benchmarks/bench_operator.py --policies kueue --rates 10 --profile /tmp/prof --out /tmp/x.md
                                                            # cProfile of the operator: /tmp/prof/kueue-10.prof

The issue's target: p99 of creation-to-start at most 1 s while capacity is free.

Setup: an `admission.testing.EmulatedCluster` (kmock's emulator with resourceVersions, 409
preconditions and status subresources, served over HTTP from a thread of this process; by
default with two of kmock's per-request scans made O(1), see `bench_cluster`, and
``--plain-emulator`` leaves them) holds one ResourceFlavor, ``--teams`` ClusterQueues in one
cohort (LocalQueue ``team-i/queue`` each) with enough nominal GPU quota for all of their Jobs,
and enough 8-GPU nodes for all Jobs. The operator (`admission.operator.Operator.run`, as
`tessera run` starts it: kopf watches, leader election on a Lease, the controller loop with
its default period and debounce, the SQLite usage ledger, Events, queue statuses, text logs
at info level to /dev/null, no webhook server) runs in a child process of its own, so that
its CPU time and peak RSS are its own. This process plays the users: it creates ``--jobs``
suspended single-pod Jobs of one GPU (as the mutating webhook would leave them), round-robin
over the teams, either at ``rate`` Jobs per second or all at once (rate 0: as fast as
``--concurrency`` parallel creates go), and watches Jobs: a Job's latency is from the moment
the API server answered its creation to the watch event showing `spec.suspend: false`.
Everything fits, so every Job starts; the latency is the operator's (watch delivery,
Workload creation, the scheduling cycle, the status write, the Job patch) plus the
emulator's.

Reported per policy and arrival rate (default 10 Jobs/s, then all at once): latency
p50/p90/p99/max, throughput (Jobs started per second from the first creation to the last
start), the operator process's CPU seconds over that window and its peak RSS, the API
requests it made per Job, the median latency of each tenth of the Jobs, and the wall time of
the controller's passes and of their three steps (p50 / p99 / max).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the project root on sys.path)

TARGET_P99_S = 1.0
GPUS_PER_NODE = 8
FLAVOR = "a100"
POLICIES = ("tessera", "kueue")
RATES = (10.0, 0.0)
"""Jobs per second; 0 creates them all at once (bounded by --concurrency)."""


# --- the cluster ----------------------------------------------------------------------------------


def setup_objects(jobs: int, teams: int) -> list[dict[str, Any]]:
    """Flavor, ClusterQueues in one cohort with room for every Job, LocalQueues, and enough nodes."""
    from admission.testing import cluster_queue, flavor, local_queue, node

    per_team = math.ceil(jobs / teams)
    objs: list[dict[str, Any]] = [flavor(FLAVOR, {"gpu.product": "A100"})]
    for t in range(teams):
        objs.append(cluster_queue(f"team-{t}", {FLAVOR: per_team}, cohort="all-teams"))
        objs.append(local_queue(f"team-{t}", "queue", f"team-{t}"))
    for n in range(math.ceil(per_team * teams / GPUS_PER_NODE)):
        objs.append(node(f"node-{n:04d}", GPUS_PER_NODE, {"gpu.product": "A100"}))
    return objs


def job_manifest(i: int, teams: int) -> dict[str, Any]:
    from admission.testing import job

    return job(f"team-{i % teams}", f"job-{i:05d}", "queue", gpus=1)


def path_of(obj: dict[str, Any]) -> str:
    from admission.kube import CLUSTER_QUEUES, JOBS, LOCAL_QUEUES, NODES, RESOURCE_FLAVORS

    resource = {"ResourceFlavor": RESOURCE_FLAVORS, "ClusterQueue": CLUSTER_QUEUES, "LocalQueue": LOCAL_QUEUES,
                "Node": NODES, "Job": JOBS}[obj["kind"]]
    return resource.path(obj["metadata"].get("namespace"))


# --- the emulator ----------------------------------------------------------------------------------


def bench_cluster(fast: bool = True) -> Any:
    """An `EmulatedCluster`; with `fast`, one whose emulator does kmock's bookkeeping in O(1) (`FastEmulator`)."""
    import kmock

    from admission.testing import EmulatedCluster, StrictEmulator

    if not fast:
        return EmulatedCluster()
    matching: contextvars.ContextVar[Any] = contextvars.ContextVar("bench_matching", default=None)

    class InFlight(list):  # type: ignore[type-arg]
        """kmock's list of requests in flight, which it scans to match each request against its reactions:
        seen from a request's own task, it holds just that request (the only one the match is about)."""

        def __iter__(self) -> Any:
            current = matching.get()
            return iter((current,)) if current is not None else super().__iter__()

    @attrs.define(kw_only=True)
    class FastEmulator(StrictEmulator):
        """`StrictEmulator` (resourceVersions, 409 preconditions, status subresource: unchanged) without two
        costs of kmock 0.8 that grow with load: matching a request against the reactions scans every request
        in flight (kopf's watches included), and reading or writing one object scans every stored object."""

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self._requests = InFlight()

        async def _handle(self, request: Any) -> Any:
            matching.set(request)
            return await super()._handle(request)

        def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
            if strict and request.name is not None and request.resource is not None:
                key = (request.resource, request.namespace, request.name)
                return [self._objects[key]] if key in self._objects else []
            return super()._KubernetesEmulator__get_objs(request, strict)  # type: ignore[no-any-return]

    class FastCluster(EmulatedCluster):
        async def _serve(self) -> None:  # EmulatedCluster._serve with the FastEmulator
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                async with FastEmulator() as emulator, kmock.Server(emulator) as server:
                    emulator.declare()
                    self.emulator = emulator
                    self._ready.set_result(str(server.url).rstrip("/"))
                    await self._stop.wait()
            except BaseException as exc:
                if not self._ready.done():
                    self._ready.set_exception(exc)
                raise

    return FastCluster()


# --- the operator, in a child process -------------------------------------------------------------


def operator_main(url: str, policy: str, ledger_url: str | None, conn: Any, profile: str | None = None) -> None:
    """Child process: run the operator until told to stop; send back its CPU time, RSS and counters.

    With `profile`, the operator's event loop thread is profiled (cProfile) from the moment it is ready until
    it is told to stop, and the statistics are dumped to that file (`python -m pstats FILE`)."""
    asyncio.run(_operator(url, policy, ledger_url, conn, profile))


async def _operator(url: str, policy: str, ledger_url: str | None, conn: Any, profile: str | None = None) -> None:
    import kopf

    from admission.logs import configure_logging
    from admission.operator import Operator, OperatorConfig

    configure_logging("text", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    cpu_at_start = common.cpu_seconds()
    operator = Operator(OperatorConfig(
        metrics_port=0, health_port=0, webhook_port=0, policy=policy, ledger_url=ledger_url,
        lease_namespace="tessera-system", identity="bench", bind_address="127.0.0.1",
        login=lambda: kopf.ConnectionInfo(server=url)))
    task = asyncio.create_task(operator.run())
    while not (operator.ready()[0] and operator.is_leader()):
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    phases = time_phases(operator.controller)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu_at_ready = common.cpu_seconds()
    conn.send({"ready": True})
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # the driver says: measured, stop
    cpu_at_stop = common.cpu_seconds()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    controller = operator.controller
    stats = {
        "cpu_s": cpu_at_stop - cpu_at_ready,
        "startup_cpu_s": cpu_at_ready - cpu_at_start,
        "peak_rss_mib": common.peak_rss_mib(),
        "passes": controller.passes,
        "queue_status_patches": getattr(getattr(controller, "queue_status", None), "patches", 0),
        "policy": getattr(controller.policy, "name", policy),
        "phases_s": {name: list(values) for name, values in phases.items()},
    }
    operator.stop.set()
    await asyncio.wait_for(task, timeout=30)
    conn.send(stats)


PHASES = ("reconcile", "sync_workloads", "sync_jobs", "schedule")
"""The controller's pass and its three steps, timed (wall clock, API round trips included)."""


def time_phases(controller: Any) -> dict[str, list[float]]:
    """Wrap the controller's pass and steps so that each call's wall time is recorded, from now on."""
    timings: dict[str, list[float]] = {name: [] for name in PHASES}

    def timed(name: str) -> None:
        method = getattr(controller, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                timings[name].append(time.perf_counter() - started)

        setattr(controller, name, wrapper)  # the instance attribute shadows the method for `self.<name>()`

    for name in PHASES:
        timed(name)
    return timings


# --- the users, in this process ------------------------------------------------------------------


async def drive(url: str, jobs: int, teams: int, rate: float, concurrency: int, timeout: float) -> dict[str, Any]:
    """Create the Jobs (at `rate` per second, or all at once) and time each one's start through a watch."""
    import aiohttp

    created: dict[str, float] = {}
    started: dict[str, float] = {}
    all_started = asyncio.Event()
    watching = asyncio.Event()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        async def watch() -> None:
            async with session.get(url + "/apis/batch/v1/jobs", params={"watch": "true"}) as response:
                watching.set()
                async for line in response.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    name = (obj.get("metadata") or {}).get("name")
                    if (obj.get("spec") or {}).get("suspend") is False and name not in started:
                        started[name] = time.perf_counter()
                        if len(started) >= jobs:
                            all_started.set()

        semaphore = asyncio.Semaphore(concurrency)

        async def create(i: int) -> None:
            body = job_manifest(i, teams)
            async with semaphore, session.post(url + path_of(body), json=body) as response:
                if response.status >= 300:
                    raise RuntimeError(f"creating {body['metadata']['name']}: {response.status} {await response.text()}")
                created[body["metadata"]["name"]] = time.perf_counter()

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(watching.wait(), timeout=10)
        began = time.perf_counter()
        creators = []
        for i in range(jobs):
            if rate > 0:
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            creators.append(asyncio.create_task(create(i)))
        await asyncio.gather(*creators)
        try:
            await asyncio.wait_for(all_started.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            pass
        ended = time.perf_counter()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

    latencies = [started[name] - at for name, at in created.items() if name in started]
    last_start = max(started.values(), default=ended)
    first_create = min(created.values(), default=began)
    return {
        "jobs": jobs, "created": len(created), "started": len(latencies), "latencies_s": latencies,
        "create_span_s": (max(created.values(), default=began) - began),
        "span_s": last_start - first_create, "window_s": ended - began,
    }


def measure(jobs: int, policy: str, rate: float, *, teams: int = 4, concurrency: int = 16,
            timeout: float = 600.0, ledger: bool = True, fast_emulator: bool = True,
            profile: str | None = None) -> dict[str, Any]:
    """One run on a fresh emulator and a fresh operator process: the driver's timings and the operator's costs."""
    from admission.kube import USER_AGENT

    with tempfile.TemporaryDirectory() as tmp, bench_cluster(fast_emulator) as cluster:
        async def populate() -> None:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                for obj in setup_objects(jobs, teams):
                    async with session.post(cluster.url + path_of(obj), json=obj) as response:
                        assert response.status < 300, await response.text()

        asyncio.run(populate())
        ledger_url = f"sqlite:///{Path(tmp) / 'ledger.sqlite'}" if ledger else None
        context = multiprocessing.get_context("spawn")  # the emulator's thread must not be forked
        parent, child = context.Pipe()
        process = context.Process(target=operator_main, args=(cluster.url, policy, ledger_url, child, profile),
                                  daemon=True)
        process.start()
        try:
            if not parent.poll(120):
                raise RuntimeError("the operator did not become ready within 120 s")
            parent.recv()
            calls_before = len(cluster.calls())
            with common.Stopwatch() as driver:
                timing = asyncio.run(drive(cluster.url, jobs, teams, rate, concurrency, timeout))
            calls = cluster.calls()[calls_before:]
            parent.send("stop")
            if not parent.poll(60):
                raise RuntimeError("the operator did not report after stopping")
            stats = parent.recv()
        finally:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    requests = Counter(f"{c.verb} {c.plural}{'/' + c.subresource if c.subresource else ''}" for c in calls
                       if c.agent.startswith(USER_AGENT))
    latencies = timing["latencies_s"]  # in creation order
    return {
        **timing, **stats, "policy": policy, "rate": rate, "driver_cpu_s": driver.cpu,
        "p50_s": common.percentile(latencies, 50), "p90_s": common.percentile(latencies, 90),
        "p99_s": common.percentile(latencies, 99), "max_s": max(latencies, default=float("nan")),
        "mean_s": common.mean(latencies),
        "throughput": timing["started"] / timing["span_s"] if timing["span_s"] > 0 else float("nan"),
        "requests": dict(requests.most_common()),
        "requests_per_job": sum(requests.values()) / max(jobs, 1),
    }


# --- the result file -----------------------------------------------------------------------------


def rate_label(rate: float) -> str:
    return "all at once" if rate <= 0 else f"{rate:g} Jobs/s"


def met(run: dict[str, Any]) -> bool:
    return run["started"] == run["jobs"] and run["p99_s"] <= TARGET_P99_S


def by_tenth(latencies: Sequence[float]) -> list[float]:
    """Median latency of each tenth of the Jobs, in creation order (how latency moves as the cluster fills)."""
    n = len(latencies)
    parts = [sorted(latencies[i * n // 10:(i + 1) * n // 10]) for i in range(10)] if n >= 10 else []
    return [part[len(part) // 2] for part in parts if part]


def render(runs: Sequence[dict[str, Any]], args: argparse.Namespace) -> str:
    headers = ["policy", "arrivals", "started", "p50", "p90", "p99", "max", "throughput", "operator CPU",
               "peak RSS MiB", "API requests / Job", f"p99 <= {TARGET_P99_S:g} s"]
    rows = [[f"`{r['policy']}`", rate_label(r["rate"]), f"{r['started']:,}/{r['jobs']:,}",
             common.duration(r["p50_s"]), common.duration(r["p90_s"]), common.duration(r["p99_s"]),
             common.duration(r["max_s"]), f"{r['throughput']:.1f} Jobs/s", f"{r['cpu_s']:.1f} s",
             f"{r['peak_rss_mib']:.0f}", f"{r['requests_per_job']:.1f}", "met" if met(r) else "**not met**"]
            for r in runs]
    detail_rows = []
    for r in runs:
        top = ", ".join(f"{k} {v:,}" for k, v in r["requests"].items())
        tenths = " / ".join(f"{v:.2f}" for v in by_tenth(r["latencies_s"]))
        detail_rows.append([f"`{r['policy']}`", rate_label(r["rate"]), f"{r['passes']:,}",
                            f"{r['queue_status_patches']:,}", f"{r['driver_cpu_s']:.0f} s", tenths or "-", top])
    emulator = ("kmock's emulator as `admission.testing.StrictEmulator` serves it" if args.plain_emulator else
                "`admission.testing.StrictEmulator` with kmock's per-request scans made O(1) (`bench_cluster`: "
                "matching a request against kmock's reactions scanned every request in flight, kopf's watches "
                "included, and a read or write of one object scanned every stored object; resourceVersions, 409 "
                "preconditions and status subresources are unchanged)")
    lines = [
        "# Operator latency: Job creation to start",
        "",
        getattr(args, "provenance", None) or provenance(),
        f"Generated by `python benchmarks/bench_operator.py{''.join(' ' + a for a in args.argv)}`; "
        f"load average {args.load_after:.2f} at the end.",
        "",
        f"{args.jobs:,} suspended single-pod Jobs of one GPU over {args.teams} teams (ClusterQueues in one cohort, "
        "enough quota and 8-GPU nodes for every Job: capacity is free), created by this process against "
        f"{emulator}, served over HTTP from a thread of this process. The real operator (`Operator.run`: kopf "
        "watches, Lease leader election, the controller loop with its default period and debounce, the SQLite usage "
        "ledger, Events, queue statuses, text logs at info level) runs in a child process of its own. Latency: from "
        "the API server's answer to the Job's creation to the watch event showing it un-suspended. Target: "
        f"**p99 <= {TARGET_P99_S:g} s while capacity is free**.",
        "",
        common.markdown_table(headers, rows),
        "",
        "Throughput is Jobs started per second from the first creation to the last start (with paced arrivals it "
        "is bounded by the arrival rate). Operator CPU is the operator process's user + system time from the moment "
        "it was ready (caches synced, Lease held) until every Job had started; peak RSS is its ru_maxrss. API "
        "requests are the operator's own (kopf's watches not counted), also until the last Job started: with all "
        "Jobs at once, part of the Events (posted in the background) were still to come."
        + (" Load average (1 min) at the start of each run: "
           + ", ".join(f"`{r['policy']}` {rate_label(r['rate'])} {r['load_at_start']:.2f}" for r in runs) + "."
           if all("load_at_start" in r for r in runs) else ""),
        "",
        "Per run: controller passes, queue status patches, CPU of this process (the emulator and the simulated "
        "users, which share the machine's two cores with the operator), median latency (s) of each tenth of the Jobs "
        "in creation order, and the operator's requests by verb and resource:",
        "",
        common.markdown_table(["policy", "arrivals", "passes", "status patches", "emulator + users CPU",
                               "p50 by tenth", "requests"], detail_rows,
                              right=[False, False, True, True, True, False, False]),
    ]
    if any(r.get("phases_s", {}).get("reconcile") for r in runs):
        phase_rows = []
        for r in runs:
            phases = r.get("phases_s", {})
            row = [f"`{r['policy']}`", rate_label(r["rate"])]
            for name in PHASES:
                values = phases.get(name) or []
                row.append(" / ".join(common.duration(common.percentile(values, q)) for q in (50, 99))
                           + f" / {common.duration(max(values, default=float('nan')))}")
            row.append(f"{sum(phases.get('reconcile') or []):.1f} s")
            phase_rows.append(row)
        lines += [
            "",
            "Controller passes (wall time p50 / p99 / max, API round trips included, until the last Job started): "
            "the whole pass and its three steps (Workloads for Jobs, Job states, scheduling cycles), and the time "
            "spent in passes:",
            "",
            common.markdown_table(["policy", "arrivals", "pass", "sync_workloads", "sync_jobs", "schedule",
                                   "in passes"], phase_rows,
                                  right=[False, False, True, True, True, True, True]),
        ]
    return "\n".join(lines) + "\n"


def provenance() -> str:
    """common.provenance, also marking uncommitted changes in admission/ (the operator measured here)."""
    text = common.provenance(__file__)
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "admission"], cwd=common.ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        dirty = ""
    if dirty and "uncommitted" not in text:
        text = text.replace("`, ", " + uncommitted changes`, ", 1)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 Jobs")
    ap.add_argument("--jobs", type=int, default=None, help="Jobs per run (default 1,000; --quick 100)")
    ap.add_argument("--policies", default=",".join(POLICIES), help="scheduling policies, one run each")
    ap.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES),
                    help="arrival rates in Jobs per second, one run each; 0 = all at once (default 10,0)")
    ap.add_argument("--teams", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16, help="parallel creates (default 16)")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up waiting for starts after this many seconds")
    ap.add_argument("--plain-emulator", action="store_true",
                    help="kmock's per-request scans as they are (the emulator, not the operator, then dominates)")
    ap.add_argument("--out", default=None, help="result file (default benchmarks/results/operator[_quick].md)")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="cProfile the operator process of each run into DIR/<policy>-<rate>.prof (profiling slows it: "
                         "the latencies of such a run are not comparable)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.jobs = args.jobs or (100 if args.quick else 1000)
    args.provenance = provenance()  # (with the load average at the start)
    runs = []
    for policy in [p.strip() for p in args.policies.split(",") if p.strip()]:
        for rate in [float(r) for r in args.rates.split(",") if r.strip()]:
            print(f"{policy}, {rate_label(rate)}: {args.jobs:,} Jobs ...", file=sys.stderr, flush=True)
            profile = None
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                profile = str(Path(args.profile) / f"{policy}-{rate:g}.prof")
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            run = measure(args.jobs, policy, rate, teams=args.teams, concurrency=args.concurrency,
                          timeout=args.timeout, fast_emulator=not args.plain_emulator, profile=profile)
            run["load_at_start"] = load
            runs.append(run)
            print(f"  started {run['started']}/{run['jobs']}, p50 {run['p50_s']:.3f} s, p99 {run['p99_s']:.3f} s, "
                  f"max {run['max_s']:.3f} s, operator CPU {run['cpu_s']:.1f} s, peak RSS {run['peak_rss_mib']:.0f} MiB",
                  file=sys.stderr, flush=True)
    args.load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for run in runs:
        print(f"target p99 <= {TARGET_P99_S:g} s ({run['policy']}, {rate_label(run['rate'])}): "
              f"{'met' if met(run) else 'NOT met'} (p99 {run['p99_s']:.3f} s)", file=sys.stderr)
    stem = "operator" if args.jobs == 1000 else ("operator_quick" if args.quick else f"operator_{args.jobs}j")
    common.write_result(stem, render(runs, args), args.out)


if __name__ == "__main__":
    main()

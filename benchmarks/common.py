"""Shared helpers of the simulator benchmarks (bench_philly, bench_scale, bench_kueue_perf).

Provenance (commit, date, machine), markdown tables, percentiles, resource usage and writing
the result file. No simulator logic lives here: each benchmark builds its own setup.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CODE_PATHS = ("scheduler", "quotas", "simulator")
"""What the numbers depend on besides the benchmark script itself (checked for uncommitted changes)."""


def commit(script: str | Path | None = None) -> str:
    """HEAD's short hash, marked when the scheduling code or ``script`` differ from it (the numbers
    are of the working tree then); ``unknown`` outside a git checkout."""
    paths = list(CODE_PATHS) + ([str(Path(script).resolve().relative_to(ROOT))] if script else [])
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError, ValueError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty else head


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """One line: CPU model and count, Python, OS, and the load average when the run started."""
    load = ""
    try:
        load = ", load average {:.2f} at start".format(os.getloadavg()[0])
    except OSError:
        pass
    return (f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}{load}")


def provenance(script: str | Path) -> str:
    """``Commit `abc1234`, 2025-01-31; <machine>.`` for the top of a result file."""
    return f"Commit `{commit(script)}`, {time.strftime('%Y-%m-%d')}; {machine()}."


def peak_rss_mib() -> float:
    """Maximum resident set size of this process so far, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (the machine may be shared: wall time alone misleads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100), as the simulator's metrics compute it; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, -(-q * len(ordered) // 100) - 1)
    return ordered[min(int(rank), len(ordered) - 1)]


def mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else float("nan")


def duration(seconds: float) -> str:
    """Seconds as a short human duration: ``950 ms``, ``42.0 s``, ``12.5 min``, ``3.2 h``, ``1.5 d``."""
    if seconds != seconds:  # NaN
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def ratio(value: float, base: float) -> str:
    """``value / base`` as ``x0.85``; ``-`` when the base is zero or missing."""
    if base != base or value != value or not base:
        return "-"
    return f"x{value / base:.2f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """A GitHub markdown table; ``right`` aligns columns right (default: every column but the first)."""
    align = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---:" if r else "---" for r in align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_result(name: str, text: str, out: str | Path | None = None) -> Path:
    """Print ``text`` and write it to ``out`` (default ``benchmarks/results/<name>.md``); returns the path."""
    path = Path(out) if out else RESULTS / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    print(text)
    print(f"written to {path}", file=sys.stderr)
    return path


class Stopwatch:
    """Wall and CPU seconds of a block: ``with Stopwatch() as sw: ...; sw.wall, sw.cpu``."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        self.wall = self.cpu = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = cpu_seconds() - self._cpu


# --- running a simulation with a wall-clock budget -------------------------------------------


class OverBudget(Exception):
    """Raised from the engine's progress callback to stop a run that exceeded its wall-clock budget."""

    def __init__(self, at: float) -> None:
        super().__init__(at)
        self.at = at


class Run:
    """One policy's simulation: the engine's result when it completed, else how far it got."""

    def __init__(self, policy: str, result: Any, wall: float, cpu: float, cycle_seconds: list[float],
                 reached: float | None = None) -> None:
        self.policy = policy
        self.result = result
        """`simulator.engine.RunResult`, or None when the run was stopped."""
        self.wall = wall
        self.cpu = cpu
        self.cycle_seconds = cycle_seconds
        self.reached = reached
        """Simulated time at which a stopped run was stopped."""

    @property
    def completed(self) -> bool:
        return self.result is not None


def simulate(setup: Any, policy_name: str, max_wall: float | None = None, every: float = 60.0) -> Run:
    """Simulate ``policy_name`` on ``setup`` (with kube-scheduler's binder for quota-only policies),
    printing progress to stderr every ``every`` wall seconds; stop after ``max_wall`` wall seconds."""
    from scheduler.decisions import make_policy
    from simulator.engine import Simulation
    from simulator.run import binder_for

    policy = make_policy(policy_name)
    started = time.perf_counter()
    last = [started]

    def progress(at: float) -> None:
        now = time.perf_counter()
        if now - last[0] > every:
            last[0] = now
            print(f"    {policy_name}: simulated t={at:,.1f} s after {now - started:.0f} s wall", file=sys.stderr, flush=True)
        if max_wall is not None and now - started > max_wall:
            raise OverBudget(at)

    with Stopwatch() as sw:
        simulation = Simulation(setup, policy, binder_for(policy), progress)
        try:
            result, reached = simulation.run(), None
        except OverBudget as stop:
            result, reached = None, stop.at
    return Run(policy_name, result, sw.wall, sw.cpu, list(simulation.cycle_seconds), reached)


def submitted_by(setup: Any, at: float) -> int:
    """How many of the setup's jobs were submitted by simulated time ``at``."""
    return sum(1 for job in setup.jobs if job.submit_at <= at)

"""Human-readable outputs of a simulation: the terminal table and the self-contained HTML report.

- :func:`metrics_table` — a ``rich`` table, one row per policy, for ``tessera simulate``'s
  terminal output, with differences against the ``kueue`` row when there is one.
- :func:`write_report` — the PNG plots of :mod:`simulator.plots` and ``report.html``, a single
  file with the plots embedded as base64 ``data:`` URIs and inline CSS: no external CSS,
  scripts, fonts or links, so it can be mailed or attached to a ticket as is.
- :func:`write_outputs` — everything ``--out DIR`` writes: ``results.sqlite``, the PNGs and
  ``report.html``.

Metric names and meanings are DESIGN.md's (CLI section); ``docs/simulator-report.md``
explains every table and plot.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.cells import cell_len
from rich.measure import Measurement
from rich.table import Table

from simulator.plots import PLOT_FILES, Mode, plot_all, policy_color
from simulator.results_db import RESULTS_FILE, write_results

if TYPE_CHECKING:
    from simulator.engine import RunResult, WorkloadRecord

__all__ = [
    "BASELINE",
    "REPORT_FILE",
    "MetricsTable",
    "QueueStats",
    "format_duration",
    "format_percent",
    "metrics_table",
    "queue_stats",
    "write_outputs",
    "write_report",
]

REPORT_FILE: Final = "report.html"
BASELINE: Final = "kueue"
"""The policy the others are compared with, when it is among the runs."""

DASH: Final = "—"


# --------------------------------------------------------------------------- formatting


def format_duration(seconds: float | None, *, compact: bool = False) -> str:
    """Seconds as ``0s``, ``4.2s``, ``42s``, ``3m 05s``, ``2h 03m 10s`` or ``5d 04h 12m``.

    ``compact`` keeps the two largest units, the second only when not zero (``2h 03m``,
    ``5d 04h``, ``50m``), for the terminal.
    """
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return DASH
    if math.isinf(seconds):
        return "∞"
    sign = "-" if seconds < 0 else ""
    s = abs(float(seconds))
    if s == 0:
        return "0s"
    if s < 10:
        return f"{sign}{s:.1f}s"
    if s < 60:
        return f"{sign}{s:.0f}s"
    total = int(round(s))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if compact:  # the two largest units, the second left out when zero
        if days:
            big, small = (days, "d"), (hours, "h")
        elif hours:
            big, small = (hours, "h"), (minutes, "m")
        else:
            big, small = (minutes, "m"), (secs, "s")
        return f"{sign}{big[0]}{big[1]}" + (f" {small[0]:02d}{small[1]}" if small[0] else "")
    if days:
        return f"{sign}{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m {secs:02d}s"
    return f"{sign}{minutes}m {secs:02d}s"


def format_percent(fraction: float | None, digits: int = 1) -> str:
    """A 0–1 fraction as a percentage: ``0.7134`` → ``71.3%``."""
    if fraction is None:
        return DASH
    return f"{100 * float(fraction):.{digits}f}%"


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return DASH
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _ms(value: Any) -> str:
    return DASH if value is None else f"{float(value):.1f}"


def _pair(result: RunResult, first: str, second: str, fmt: Callable[[Any], str]) -> str:
    """Two metrics as ``a/b``."""
    return f"{fmt(result.metrics.get(first))}/{fmt(result.metrics.get(second))}"


def _pp(value: float | None, base: float | None) -> str:
    """Difference of two 0–1 fractions in percentage points."""
    if value is None or base is None:
        return DASH
    return f"{100 * (float(value) - float(base)):+.1f} pp"


def _ratio(value: float | None, base: float | None) -> str:
    """``value / base`` as ``×0.62``; ``=`` when both are zero."""
    if value is None or base is None:
        return DASH
    value, base = float(value), float(base)
    if base == 0:
        return "=" if value == 0 else "n/a"
    return f"×{value / base:.2f}"


def _is_fill(results: Sequence[RunResult], mode: str | None) -> bool:
    if mode is not None:
        return mode == "fill"
    return any("gpu_allocation_at" in r.metrics for r in results)


def _baseline(results: Sequence[RunResult], baseline: str | None) -> RunResult | None:
    if baseline is None or len(results) < 2:
        return None
    return next((r for r in results if r.policy == baseline), None)


def _demand_levels(results: Sequence[RunResult]) -> list[str]:
    levels = {key for r in results for key in (r.metrics.get("gpu_allocation_at") or {})}
    return sorted(levels, key=float)


# --------------------------------------------------------------------------- metrics rows


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[RunResult, RunResult | None], str]
    numeric: bool = True


def _replay_columns(results: Sequence[RunResult], base: RunResult | None, *, terminal: bool) -> list[_Column]:
    """The terminal's columns are compact (two time units, no thousands separators, joined pairs)."""
    get = lambda r, k: r.metrics.get(k)  # noqa: E731
    count = (lambda v: DASH if v is None else str(v)) if terminal else _num
    duration = lambda v: format_duration(v, compact=terminal)  # noqa: E731
    columns = [
        _Column("GPU util", lambda r, b: format_percent(get(r, "gpu_utilization"))),
        _Column("busy util", lambda r, b: format_percent(get(r, "gpu_utilization_busy"))),
    ]
    if terminal:
        columns.append(_Column("admitted / workloads", lambda r, b: _pair(r, "admitted", "workloads", count)))
    else:
        columns += [
            _Column("workloads", lambda r, b: count(get(r, "workloads"))),
            _Column("admitted", lambda r, b: count(get(r, "admitted"))),
            _Column("never admitted", lambda r, b: count(get(r, "never_admitted"))),
        ]
    columns += [
        _Column("finished", lambda r, b: count(get(r, "finished"))),
        _Column("preempt" if terminal else "preemptions", lambda r, b: count(get(r, "preemptions"))),
    ]
    if not terminal or any(r.metrics.get("evictions") for r in results):
        columns.append(_Column("evict" if terminal else "evictions", lambda r, b: count(get(r, "evictions"))))
    columns += [
        _Column("mean wait", lambda r, b: duration(get(r, "mean_wait_s"))),
        _Column("p95 wait", lambda r, b: duration(get(r, "p95_wait_s"))),
        _Column("mean JCT", lambda r, b: duration(get(r, "mean_jct_s"))),
        _Column("makespan", lambda r, b: duration(get(r, "makespan_s"))),
    ]
    if terminal:
        columns.append(
            _Column("cycle ms p50/p99", lambda r, b: _pair(r, "cycle_latency_p50_ms", "cycle_latency_p99_ms", _ms))
        )
    else:
        columns += [
            _Column("cycle p50 (ms)", lambda r, b: _ms(get(r, "cycle_latency_p50_ms"))),
            _Column("cycle p99 (ms)", lambda r, b: _ms(get(r, "cycle_latency_p99_ms"))),
        ]
    if base is not None:
        vs = base.policy

        def compare(fn: Callable[[Any, Any], str], key: str) -> Callable[[RunResult, RunResult | None], str]:
            return lambda r, b: DASH if b is None or r is b else fn(get(r, key), get(b, key))

        columns.append(_Column(f"util vs {vs}", compare(_pp, "gpu_utilization")))
        if not terminal:  # the terminal keeps the two that matter most
            columns.append(_Column(f"busy util vs {vs}", compare(_pp, "gpu_utilization_busy")))
        columns.append(_Column(f"wait vs {vs}", compare(_ratio, "mean_wait_s")))
        if not terminal:
            columns.append(_Column(f"JCT vs {vs}", compare(_ratio, "mean_jct_s")))
    return columns


def _fill_columns(results: Sequence[RunResult], base: RunResult | None, *, terminal: bool) -> list[_Column]:
    levels = _demand_levels(results)

    def at(level: str) -> Callable[[RunResult, RunResult | None], str]:
        def cell(r: RunResult, b: RunResult | None) -> str:
            value = (r.metrics.get("gpu_allocation_at") or {}).get(level)
            return DASH if value is None else f"{float(value):.2f}%"

        return cell

    columns = [_Column(f"alloc @{level}%", at(level)) for level in levels]
    columns += [
        _Column("unalloc. GPUs", lambda r, b: _num(r.metrics.get("unallocated_gpus"))),
        _Column("placed / arrivals", lambda r, b: _pair(r, "admitted", "workloads", _num)),
        _Column("cycle ms p50/p99", lambda r, b: _pair(r, "cycle_latency_p50_ms", "cycle_latency_p99_ms", _ms)),
    ]
    if base is not None and levels:
        last = levels[-1]

        def versus(r: RunResult, b: RunResult | None) -> str:
            if b is None or r is b:
                return DASH
            mine = (r.metrics.get("gpu_allocation_at") or {}).get(last)
            theirs = (b.metrics.get("gpu_allocation_at") or {}).get(last)
            if mine is None or theirs is None:
                return DASH
            return f"{float(mine) - float(theirs):+.2f} pp"

        columns.append(_Column(f"@{last}% vs {base.policy}", versus))
    return columns


def _columns(results: Sequence[RunResult], mode: str | None, baseline: str | None, *, terminal: bool) -> list[_Column]:
    base = _baseline(results, baseline)
    if _is_fill(results, mode):
        return _fill_columns(results, base, terminal=terminal)
    return _replay_columns(results, base, terminal=terminal)


class MetricsTable(Table):
    """A policy-per-row table that adapts to the console's width.

    As wide as it needs when that fits; else ``compact`` (the same table with every column as
    narrow as its widest cell, headers wrapped at their spaces) when that fits; else
    ``transposed`` (one row per metric, one column per policy). Numbers never fold.
    """

    def __init__(self, *args: Any, compact: Table | None = None, transposed: Table | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compact = compact
        self.transposed = transposed

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = Measurement.get(console, options.update_width(_UNBOUNDED), self).maximum
        if natural <= options.max_width or (self.compact is None and self.transposed is None):
            yield from super().__rich_console__(console, options)
        elif self.compact is not None and _fixed_width(self.compact) <= options.max_width:
            yield self.compact
        else:
            yield self.transposed if self.transposed is not None else self.compact


_UNBOUNDED: Final = 10_000


def _fixed_width(table: Table) -> int:
    """Width of a table whose columns all have a fixed ``width``."""
    padding = table.padding[1] + table.padding[3]
    return sum((column.width or 0) + padding for column in table.columns) + table._extra_width


def metrics_table(
    results: Sequence[RunResult],
    *,
    mode: Mode | None = None,
    baseline: str | None = BASELINE,
    title: str | None = None,
) -> Table:
    """The comparison table for the terminal: one row per policy.

    Replay mode: GPU utilization, busy utilization, admitted/workloads, finished, preemptions
    (and evictions when any), mean and p95 wait, mean JCT, makespan, cycle latency p50/p99 in
    ms, and — when the ``baseline`` policy (``kueue``) ran beside others — the utilization
    difference in percentage points and the mean-wait ratio against it. Fill mode
    (``mode="fill"``, or ``None`` and the metrics hold ``gpu_allocation_at``): allocation at each
    demand level, unallocated GPUs, placed/arrivals, cycle latency and the difference at the last
    level. On a narrow console the headers wrap, and narrower still it prints transposed (a row
    per metric); see :class:`MetricsTable`.
    """
    fill = _is_fill(results, mode)
    if title is None:
        title = "Allocation against arrived demand (fill mode)" if fill else "Simulation results"
    style: dict[str, Any] = {"title": title, "header_style": "bold", "title_style": "bold",
                             "box": box.SIMPLE_HEAD, "show_edge": False}
    columns = _columns(results, mode, baseline, terminal=True)
    base = _baseline(results, baseline)
    cells = [[column.cell(result, base) for column in columns] for result in results]

    transposed = Table(**style)
    transposed.add_column("metric", no_wrap=True)
    for result in results:
        transposed.add_column(result.policy, justify="right", style="bold" if result is base else None)
    for index, column in enumerate(columns):
        transposed.add_row(column.header, *(row[index] for row in cells))

    policy_width = max([cell_len("policy")] + [cell_len(r.policy) for r in results])
    widths = [
        max([cell_len(row[index]) for row in cells] + [cell_len(word) for word in column.header.split()])
        for index, column in enumerate(columns)
    ]
    compact = Table(**style)
    table = MetricsTable(compact=compact, transposed=transposed, **style)
    for target, fixed in ((table, False), (compact, True)):
        target.add_column("policy", style="bold", no_wrap=True, width=policy_width if fixed else None)
        for column, width in zip(columns, widths, strict=True):
            target.add_column(column.header, justify="right" if column.numeric else "left", overflow="fold",
                              width=width if fixed else None)
        for result, row in zip(results, cells, strict=True):
            target.add_row(result.policy, *row)
    return table


# --------------------------------------------------------------------------- per ClusterQueue


@dataclass(frozen=True)
class QueueStats:
    """One ClusterQueue in one run (``gpu_hours``: integral of the GPUs it held over the samples)."""

    cluster_queue: str
    quota: float | None
    workloads: int
    admitted: int
    finished: int
    mean_wait_s: float | None
    gpu_hours: float
    mean_gpus_held: float
    final_gpus_held: float


NO_QUEUE: Final = "(no ClusterQueue)"


def queue_stats(result: RunResult, quotas: Mapping[str, float] | None = None) -> list[QueueStats]:
    """Per-ClusterQueue counts, mean wait and GPU usage of one run, sorted by ClusterQueue."""
    quotas = quotas or {}
    by_queue: dict[str, list[WorkloadRecord]] = {}
    for w in result.workloads:
        by_queue.setdefault(w.cluster_queue or NO_QUEUE, []).append(w)
    held: dict[str, float] = {}
    samples = result.samples
    for current, following in zip(samples, samples[1:], strict=False):
        span = following.at - current.at
        if span > 0:
            for queue, gpus in current.usage_by_queue.items():
                held[queue] = held.get(queue, 0.0) + gpus * span
    span_total = samples[-1].at - samples[0].at if len(samples) > 1 else 0.0
    final = samples[-1].usage_by_queue if samples else {}
    names = sorted(set(by_queue) | set(quotas) | set(held) | set(final), key=lambda q: (q == NO_QUEUE, q))
    stats = []
    for name in names:
        workloads = by_queue.get(name, [])
        waits = [w.started_at - w.submitted_at for w in workloads if w.started_at is not None]
        seconds = held.get(name, 0.0)
        stats.append(
            QueueStats(
                cluster_queue=name,
                quota=float(quotas[name]) if name in quotas else None,
                workloads=len(workloads),
                admitted=sum(1 for w in workloads if w.admitted_at is not None),
                finished=sum(1 for w in workloads if w.finished_at is not None),
                mean_wait_s=sum(waits) / len(waits) if waits else None,
                gpu_hours=seconds / 3600.0,
                mean_gpus_held=seconds / span_total if span_total > 0 else 0.0,
                final_gpus_held=float(final.get(name, 0.0)),
            )
        )
    return stats


# --------------------------------------------------------------------------- HTML


_CSS: Final = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; }
th { background: #f3f3f3; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { text-align: left; }
tr.baseline td { background: #fafafa; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; vertical-align: middle;
          border-radius: 2px; }
.desc { white-space: pre-wrap; }
table.kv th { text-align: left; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
.scroll { overflow-x: auto; }
details summary { cursor: pointer; font-weight: bold; margin: 0.6em 0; }
dl.defs dt { font-weight: bold; margin-top: 0.4em; }
dl.defs dd { margin-left: 1.5em; }
"""

_CAPTIONS: Final[dict[str, dict[str, str]]] = {
    "replay": {
        "allocation": "GPUs allocated to pods, in percent of the cluster's GPUs, over simulated time. "
        "The legend gives each policy's gpu_utilization (allocated GPU-seconds over capacity from the "
        "first submission to the last finish). Higher while work waits is better packing.",
        "pending": "Workloads submitted but not yet running with all pods bound (queued, or admitted with "
        "pods still Pending). A policy that admits by quota without placing (kueue) can show admitted "
        "workloads waiting here.",
        "wait_cdf": "Fraction of the started workloads that waited at most x from submission to all pods "
        "running, on a log time axis; waits under a second are drawn at 1 s, so the height there is the "
        "share that started at once. Curves further up and to the left are better; workloads that never "
        "started are not in the curve and are counted in the legend.",
        "queue_usage": "GPUs held (quota reserved by admitted workloads) per ClusterQueue, one panel per "
        "policy; dashed lines are each ClusterQueue's nominal GPU quota. Above its dashed line a queue "
        "borrows from its cohort.",
    },
    "fill": {
        "allocation": "Allocation against arrived demand (the FGD paper's experiment): GPUs allocated, in "
        "percent of capacity, as arrivals reach x percent of capacity. Dots mark the reported "
        "gpu_allocation_at levels; the dotted line is the ideal, every arrival placed.",
        "pending": "Arrivals that could not be placed so far, against arrived demand. Fragmentation shows "
        "as arrivals failing before demand reaches 100%.",
        "wait_cdf": "Wait from arrival to placement of the placed workloads (in fill mode arrivals never "
        "leave, so this is mostly zero); unplaced arrivals are counted in the legend.",
        "queue_usage": "GPUs held per ClusterQueue against arrived demand, one panel per policy; dashed "
        "lines are the nominal quotas.",
    },
}

_PLOT_TITLES: Final = {
    "allocation": "GPU allocation",
    "pending": "Pending workloads",
    "wait_cdf": "Wait-time CDF",
    "queue_usage": "Usage against quota per ClusterQueue",
}

_DEFINITIONS: Final = (
    ("GPU util", "gpu_utilization: allocated GPU-seconds over total GPU-seconds, from the first submission to the "
     "last finish."),
    ("busy util", "gpu_utilization_busy: the same, counting only the time when some workload was waiting — "
     "how well the cluster was packed while there was work to run."),
    ("admitted / never admitted", "workloads that got quota reserved (QuotaReserved/Admitted) / that never did."),
    ("finished", "workloads that ran to completion."),
    ("preemptions / evictions", "preemptions by the policy; evictions by the waitForPodsReady timeout (admitted "
     "but pods not all running in time), requeued with backoff."),
    ("wait", "from submission to every pod of the gang bound (started_at − submitted_at), over started workloads."),
    ("JCT", "job completion time, from submission to finish, over finished workloads."),
    ("makespan", "from the first submission to the last finish."),
    ("cycle p50/p99", "wall-clock latency of the policy's scheduling cycles."),
    ("vs kueue", "utilization differences in percentage points, wait and JCT as ratios (×0.50 = half of kueue's)."),
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


Cell = tuple[str, str] | tuple[str, str, int]
"""(css class, already-escaped html) or (css class, html, rowspan)."""


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, row_classes: Sequence[str] = ()) -> str:
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) and row_classes[i] else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for cell in row:
            span = f' rowspan="{cell[2]}"' if len(cell) == 3 and cell[2] > 1 else ""
            out.append(f'<td class="{cell[0]}"{span}>{cell[1]}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _policy_cell(result: RunResult, results: Sequence[RunResult]) -> tuple[str, str]:
    color = policy_color(result.policy, results)
    return "text", f'<span class="swatch" style="background:{color}"></span>{_e(result.policy)}'


def _description_html(description: Mapping[str, Any] | str | None) -> str:
    if description is None or description == "" or description == {}:
        return "<p>No setup description given.</p>"
    if isinstance(description, str):
        return f'<p class="desc">{_e(description)}</p>'
    rows = []
    for key, value in description.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=False, default=str)
        rows.append(f'<tr><th>{_e(key)}</th><td class="desc">{_e(text)}</td></tr>')
    return '<table class="kv"><tbody>' + "".join(rows) + "</tbody></table>"


def _metrics_html(results: Sequence[RunResult], mode: Mode) -> str:
    columns = _columns(results, mode, BASELINE, terminal=False)
    base = _baseline(results, BASELINE)
    rows = [[_policy_cell(r, results)] + [("num", _e(c.cell(r, base))) for c in columns] for r in results]
    classes = ["baseline" if base is not None and r is base else "" for r in results]
    return _html_table(["policy"] + [c.header for c in columns], rows, row_classes=classes)


def _queues_html(results: Sequence[RunResult], quotas: Mapping[str, float], mode: Mode) -> str:
    fill = mode == "fill"
    headers = ["ClusterQueue", "nominal GPUs", "policy", "workloads", "admitted", "finished", "mean wait"]
    headers += ["GPUs held at end"] if fill else ["GPU-hours held", "mean GPUs held"]
    per_policy = [(r, {s.cluster_queue: s for s in queue_stats(r, quotas)}) for r in results]
    names = sorted({name for _, stats in per_policy for name in stats}, key=lambda q: (q == NO_QUEUE, q))
    rows: list[list[Cell]] = []
    for name in names:
        first = True
        for result, stats in per_policy:
            s = stats.get(name)
            if s is None:
                continue
            row: list[Cell] = []
            if first:
                span = sum(1 for _, st in per_policy if name in st)
                quota = DASH if s.quota is None else _num(s.quota)
                row += [("text", f"<b>{_e(name)}</b>", span), ("num", _e(quota), span)]
                first = False
            row += [
                _policy_cell(result, results),
                ("num", _e(_num(s.workloads))),
                ("num", _e(_num(s.admitted))),
                ("num", _e(_num(s.finished))),
                ("num", _e(format_duration(s.mean_wait_s))),
            ]
            if fill:
                row.append(("num", _e(_num(s.final_gpus_held))))
            else:
                row += [("num", _e(f"{s.gpu_hours:,.1f}")), ("num", _e(f"{s.mean_gpus_held:,.1f}"))]
            rows.append(row)
    if not rows:
        return "<p>No ClusterQueues.</p>"
    return _html_table(headers, rows)


def _status(w: WorkloadRecord) -> str:
    if w.deactivated:
        return "deactivated"
    if w.finished_at is not None:
        return "finished"
    if w.started_at is not None:
        return "running"
    if w.admitted_at is not None:
        return "admitted, pods pending"
    return "pending"


def _run_end(result: RunResult) -> float:
    times = [s.at for s in result.samples]
    times += [w.finished_at for w in result.workloads if w.finished_at is not None]
    times += [w.submitted_at for w in result.workloads]
    return max(times, default=0.0)


def _longest_waits_html(results: Sequence[RunResult], mode: Mode, top_n: int) -> str:
    parts = []
    origin = min((w.submitted_at for r in results for w in r.workloads), default=0.0)
    for result in results:
        if mode == "fill":
            unplaced = sorted(
                (w for w in result.workloads if w.started_at is None), key=lambda w: (-w.gpus, w.namespace, w.name)
            )[:top_n]
            headers = ["workload", "ClusterQueue", "type", "GPUs", "status", "last pending reason"]
            rows = [
                [
                    ("text", _e(f"{w.namespace}/{w.name}")),
                    ("text", _e(w.cluster_queue or DASH)),
                    ("text", _e(w.workload_type)),
                    ("num", _e(_num(w.gpus, 2))),
                    ("text", _e(_status(w))),
                    ("text", _e(w.pending_reason or DASH)),
                ]
                for w in unplaced
            ]
            summary = f"{result.policy}: largest unplaced arrivals"
            empty = "Every arrival was placed."
        else:
            end = _run_end(result)
            waited = [
                ((w.started_at if w.started_at is not None else end) - w.submitted_at, w) for w in result.workloads
            ]
            waited = sorted((x for x in waited if x[0] > 0), key=lambda x: (-x[0], x[1].namespace, x[1].name))[:top_n]
            headers = ["workload", "ClusterQueue", "type", "GPUs", "submitted", "wait", "status",
                       "preemptions", "evictions", "last pending reason"]
            rows = [
                [
                    ("text", _e(f"{w.namespace}/{w.name}")),
                    ("text", _e(w.cluster_queue or DASH)),
                    ("text", _e(w.workload_type)),
                    ("num", _e(_num(w.gpus, 2))),
                    ("num", _e("+" + format_duration(w.submitted_at - origin))),
                    ("num", _e(format_duration(wait) + ("" if w.started_at is not None else "+"))),
                    ("text", _e(_status(w))),
                    ("num", _e(_num(w.preemptions))),
                    ("num", _e(_num(w.evictions))),
                    ("text", _e(w.pending_reason or DASH)),
                ]
                for wait, w in waited
            ]
            summary = f"{result.policy}: top {top_n} longest waits"
            empty = "No workload waited."
        body = _html_table(headers, rows) if rows else f"<p>{_e(empty)}</p>"
        parts.append(f"<details open><summary>{_e(summary)}</summary>{body}</details>")
    return "".join(parts)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_report(
    out_dir: str | Path,
    results: Sequence[RunResult],
    *,
    quotas: Mapping[str, float],
    mode: Mode = "replay",
    title: str = "Tessera simulation report",
    description: Mapping[str, Any] | str | None = None,
    top_n: int = 10,
) -> Path:
    """Write the PNG plots and ``report.html`` into ``out_dir`` (created); returns the report's path.

    ``quotas`` maps each ClusterQueue to its nominal GPU quota (dashed lines of the usage plot,
    column of the per-ClusterQueue table). ``description`` is the setup shown in the header: a
    mapping (rendered as a key/value table; non-string values as JSON) or free text.
    """
    if not results:
        raise ValueError("no runs to report")
    if mode not in ("replay", "fill"):
        raise ValueError(f"mode must be 'replay' or 'fill', not {mode!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(results, out, quotas=quotas, mode=mode)
    policies = ", ".join(r.policy for r in results)
    capacities = "/".join(f"{c:g}" for c in sorted({r.gpu_capacity for r in results}))
    workloads = "/".join(str(n) for n in sorted({len(r.workloads) for r in results}))
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">Mode: <b>{_e(mode)}</b> · policies: <b>{_e(policies)}</b> · '
        f"cluster GPUs: <b>{_e(capacities)}</b> · workloads: <b>{_e(workloads)}</b></p>",
        "<h2>Setup</h2>",
        _description_html(description),
        "<h2>Results per policy</h2>" if mode == "replay" else "<h2>Allocation against arrived demand</h2>",
        _metrics_html(results, mode),
    ]
    if mode == "fill":
        body.append("<p>alloc @x%: GPUs allocated, in percent of capacity, when the arrived demand reached x% "
                    "of capacity (gpu_allocation_at); unallocated GPUs at the end.</p>")
    body += ["<h2>Per ClusterQueue</h2>", _queues_html(results, quotas, mode), "<h2>Plots</h2>"]
    captions = _CAPTIONS[mode]
    for key, path in plots.items():
        body.append(
            f'<figure id="{_e(key)}"><h3>{_e(_PLOT_TITLES[key])}</h3>'
            f'<img src="{_data_uri(path)}" alt="{_e(_PLOT_TITLES[key])} ({_e(PLOT_FILES[key])})">'
            f"<figcaption>{_e(captions[key])}</figcaption></figure>"
        )
    body.append("<h2>Longest-waiting workloads</h2>" if mode == "replay" else "<h2>Unplaced arrivals</h2>")
    if mode == "replay":
        body.append("<p>Wait until all pods ran, or until the end of the run (marked +) for workloads that never "
                    "started; the last pending reason is the policy's last word on why the workload waited.</p>")
    body.append(_longest_waits_html(results, mode, top_n))
    if mode == "replay":
        body.append("<h2>Definitions</h2><dl class=\"defs\">")
        body += [f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>" for term, text in _DEFINITIONS]
        body.append("</dl>")
    document = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    report = out / REPORT_FILE
    report.write_text(document, encoding="utf-8")
    return report


def write_outputs(
    out_dir: str | Path,
    results: Sequence[RunResult],
    *,
    quotas: Mapping[str, float],
    mode: Mode = "replay",
    seed: int | None = None,
    title: str = "Tessera simulation report",
    description: Mapping[str, Any] | str | None = None,
) -> dict[str, Path]:
    """Everything ``tessera simulate --out DIR`` writes: ``results.sqlite``, the PNGs and ``report.html``.

    Returns {"results": ..., "report": ..., and each plot of ``PLOT_FILES``: ...}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    database = out / RESULTS_FILE
    write_results(database, results, seed=seed, mode=mode, description=description)
    report = write_report(out, results, quotas=quotas, mode=mode, title=title, description=description)
    paths = {"results": database, "report": report}
    paths.update({key: out / name for key, name in PLOT_FILES.items()})
    return paths

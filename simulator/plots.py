"""PNG plots of simulator runs, one function per file (``tessera simulate --out DIR``).

Every function takes the runs to compare (``RunResult`` of ``simulator.engine``, one per
policy, all on the same setup), the PNG path and the ``mode`` of the run (``replay`` or
``fill``), and writes one figure. The axes follow the mode: in replay mode the x axis is
simulated time since the first submission; in fill mode (the FGD paper's packing experiment)
the samples' ``at`` is the arrived GPU demand in percent of cluster capacity, so the x axis
is arrived demand.

Output is deterministic: fixed figure sizes and dpi, fixed colours per policy
(:data:`POLICY_COLORS`), no timestamps in the PNG metadata. Matplotlib runs headless (Agg).
See ``docs/simulator-report.md`` for how to read each plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import matplotlib

matplotlib.use("Agg")  # no screen: must precede any pyplot import (this module itself needs none)

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

if TYPE_CHECKING:
    from simulator.engine import RunResult

__all__ = [
    "DPI",
    "PLOT_FILES",
    "POLICY_COLORS",
    "WAIT_FLOOR",
    "Mode",
    "plot_all",
    "plot_allocation",
    "plot_pending",
    "plot_queue_usage",
    "plot_wait_cdf",
    "policy_color",
    "time_unit",
    "wait_seconds",
]

Mode = Literal["replay", "fill"]

DPI: Final = 100
"""Resolution of every PNG."""

PLOT_FILES: Final[dict[str, str]] = {
    "allocation": "gpu_allocation.png",
    "pending": "pending.png",
    "wait_cdf": "wait_cdf.png",
    "queue_usage": "queue_usage.png",
}
"""The file each plot is written to by :func:`plot_all` (and ``report.write_report``)."""

POLICY_COLORS: Final[dict[str, str]] = {
    "tessera": "#1f77b4",  # blue
    "kueue": "#ff7f0e",  # orange
    "bestfit": "#2ca02c",  # green
    "fgd": "#d62728",  # red
    "random": "#7f7f7f",  # grey
}
_EXTRA_COLORS: Final = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939")
_FONT: Final = {"font.size": 9, "axes.titlesize": 10, "figure.titlesize": 11, "legend.fontsize": 8}
_FILL_X_LABEL: Final = "arrived GPU demand (% of cluster capacity)"


def policy_color(policy: str, results: Sequence[RunResult] = ()) -> str:
    """The fixed colour of a policy; policies not in :data:`POLICY_COLORS` get one by their order in ``results``."""
    if policy in POLICY_COLORS:
        return POLICY_COLORS[policy]
    others = [r.policy for r in results if r.policy not in POLICY_COLORS]
    index = others.index(policy) if policy in others else 0
    return _EXTRA_COLORS[index % len(_EXTRA_COLORS)]


def time_unit(span_seconds: float) -> tuple[float, str]:
    """The divisor and name of a readable unit for a time span: hours, minutes or seconds."""
    if span_seconds >= 3 * 3600:
        return 3600.0, "h"
    if span_seconds >= 3 * 60:
        return 60.0, "min"
    return 1.0, "s"


def wait_seconds(result: RunResult) -> tuple[list[float], int]:
    """Waits (``started_at − submitted_at``) of the workloads that started, sorted; and how many never started."""
    waits = sorted(w.started_at - w.submitted_at for w in result.workloads if w.started_at is not None)
    return waits, len(result.workloads) - len(waits)


# --------------------------------------------------------------------------- helpers


def _policies(results: Sequence[RunResult]) -> str:
    return ", ".join(r.policy for r in results)


def _origin(results: Sequence[RunResult]) -> float:
    """Time zero of the replay plots: the first submission of any run (else the first sample)."""
    submits = [w.submitted_at for r in results for w in r.workloads]
    if submits:
        return min(submits)
    ats = [s.at for r in results for s in r.samples]
    return min(ats) if ats else 0.0


def _x_axis(results: Sequence[RunResult], mode: Mode) -> tuple[float, float, str]:
    """(origin, divisor, label) for the x axis of the time-series plots."""
    if mode == "fill":
        return 0.0, 1.0, _FILL_X_LABEL
    origin = _origin(results)
    end = max((s.at for r in results for s in r.samples), default=origin)
    divisor, unit = time_unit(end - origin)
    return origin, divisor, f"simulated time since first submission ({unit})"


MAX_BINS: Final = 1000
"""Time-series lines longer than ~4 points per bin are reduced to their envelope over this many x bins."""


def _compress(xs: list[float], ys: list[float], bins: int = MAX_BINS) -> tuple[list[float], list[float]]:
    """The same post-step line with fewer vertices.

    Points repeating the previous value are dropped (exact). A line still longer than four
    points per bin (a figure is ~1,000 pixels wide) keeps, per bin of the x range, its first,
    lowest, highest and last points in x order: the envelope that would be drawn anyway,
    at a fraction of the rendering time.
    """
    if len(xs) <= 2:
        return xs, ys
    out_x, out_y = [xs[0]], [ys[0]]
    for i in range(1, len(xs) - 1):
        if ys[i] != out_y[-1]:
            out_x.append(xs[i])
            out_y.append(ys[i])
    out_x.append(xs[-1])
    out_y.append(ys[-1])
    if len(out_x) <= 4 * bins or out_x[-1] <= out_x[0]:
        return out_x, out_y
    lo, width = out_x[0], (out_x[-1] - out_x[0]) / bins
    dec_x: list[float] = []
    dec_y: list[float] = []
    start = 0
    n = len(out_x)
    while start < n:
        index = min(int((out_x[start] - lo) / width), bins - 1)
        end = start
        while end + 1 < n and min(int((out_x[end + 1] - lo) / width), bins - 1) == index:
            end += 1
        segment = range(start, end + 1)
        low = min(segment, key=out_y.__getitem__)
        high = max(segment, key=out_y.__getitem__)
        for i in sorted({start, low, high, end}):
            dec_x.append(out_x[i])
            dec_y.append(out_y[i])
        start = end + 1
    return dec_x, dec_y


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _legend(ax: Axes) -> None:
    """The legend right of the axes: it never hides a line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", transform=ax.transAxes, ha="center", va="center", color="#777777")


def _check(results: Sequence[RunResult], mode: str) -> None:
    if not results:
        raise ValueError("no runs to plot")
    if mode not in ("replay", "fill"):
        raise ValueError(f"mode must be 'replay' or 'fill', not {mode!r}")


# --------------------------------------------------------------------------- plots


ZOOM_FROM: Final = 70.0
"""Fill mode: the allocation plot's right panel zooms on arrived demand from this percentage on."""


def plot_allocation(results: Sequence[RunResult], path: str | Path, *, mode: Mode = "replay") -> Path:
    """GPU allocation per policy, in percent of cluster capacity.

    Replay: a step line over simulated time, legend with each policy's ``gpu_utilization``.
    Fill: allocation against arrived demand, with the capacity (100%) line, the ideal
    (everything that arrived is allocated) and markers at ``metrics["gpu_allocation_at"]``;
    a second panel zooms on demand from :data:`ZOOM_FROM` percent, where policies part.
    """
    _check(results, mode)
    with matplotlib.rc_context(_FONT):
        fig = _figure(10.0 if mode == "replay" else 12.0, 4.8)
        if mode == "fill":
            ax, zoom = fig.subplots(1, 2, width_ratios=[3, 2])
            panels = [ax, zoom]
        else:
            ax, zoom = fig.add_subplot(), None
            panels = [ax]
        origin, divisor, xlabel = _x_axis(results, mode)
        plotted = False
        max_x = 0.0
        zoom_low = 100.0
        for result in results:
            color = policy_color(result.policy, results)
            capacity = result.gpu_capacity
            xs = [(s.at - origin) / divisor for s in result.samples]
            ys = [100.0 * s.allocated_gpus / capacity if capacity else 0.0 for s in result.samples]
            label = result.policy
            if mode == "fill":
                at = result.metrics.get("gpu_allocation_at") or {}
                if at:
                    last = max(at, key=float)
                    label = f"{result.policy} ({float(at[last]):.2f}% at {last}% demand)"
                    for panel in panels:
                        panel.plot([float(k) for k in at], [float(v) for v in at.values()], "o", color=color,
                                   markersize=4)
                zoom_low = min([zoom_low] + [y for x, y in zip(xs, ys, strict=True) if x >= ZOOM_FROM])
            elif "gpu_utilization" in result.metrics:
                label = f"{result.policy} (mean {100 * float(result.metrics['gpu_utilization']):.1f}%)"
            if xs:
                xs, ys = _compress(xs, ys)
                for i, panel in enumerate(panels):
                    last_panel = i == len(panels) - 1
                    panel.step(xs, ys, where="post", color=color, linewidth=1.3, label=label if last_panel else None)
                max_x = max(max_x, xs[-1])
                plotted = True
            else:
                panels[-1].plot([], [], color=color, label=f"{label}: no samples")
        capacities = sorted({r.gpu_capacity for r in results})
        cap_text = "/".join(f"{c:g}" for c in capacities)
        for i, panel in enumerate(panels):
            last_panel = i == len(panels) - 1
            panel.axhline(100.0, color="black", linestyle="--", linewidth=1.0,
                          label=f"capacity (100% = {cap_text} GPUs)" if last_panel else None)
            panel.grid(True, alpha=0.3)
            panel.set_xlabel(xlabel)
        ax.set_ylabel("GPUs allocated (% of capacity)")
        ax.set_ylim(0, 105)
        if mode == "fill" and zoom is not None:
            top = max(max_x, 100.0)
            for panel in panels:
                panel.plot([0, 100, top], [0, 100, 100], color="#999999", linestyle=":", linewidth=1.0,
                           label="ideal: all arrived demand allocated" if panel is zoom else None)
            ax.set_xlim(0, top * 1.02)
            ax.set_title("allocation against arrived demand", loc="left")
            zoom.set_xlim(ZOOM_FROM, top * 1.01)
            zoom.set_ylim(max(0.0, min(zoom_low, ZOOM_FROM) - 2.0), 101.0)
            zoom.set_title(f"zoom: demand ≥ {ZOOM_FROM:g}%", loc="left")
            fig.suptitle(f"GPU allocation against arrived demand — {_policies(results)}")
        else:
            ax.set_title(f"GPU allocation over time — {_policies(results)}")
        if not plotted:
            _no_data(ax, "samples")
        _legend(panels[-1])
        return _save(fig, path)


def plot_pending(results: Sequence[RunResult], path: str | Path, *, mode: Mode = "replay") -> Path:
    """Pending workloads per policy: admitted-or-not workloads whose pods have not all started.

    Replay: over simulated time. Fill: against arrived demand (arrivals not placed so far).
    """
    _check(results, mode)
    with matplotlib.rc_context(_FONT):
        fig = _figure(10.0, 4.8)
        ax = fig.add_subplot()
        origin, divisor, xlabel = _x_axis(results, mode)
        plotted = False
        for result in results:
            color = policy_color(result.policy, results)
            xs = [(s.at - origin) / divisor for s in result.samples]
            ys = [float(s.waiting) for s in result.samples]
            if xs:
                peak = max(ys)
                xs, ys = _compress(xs, ys)
                ax.step(xs, ys, where="post", color=color, linewidth=1.3, label=f"{result.policy} (peak {peak:g})")
                plotted = True
            else:
                ax.plot([], [], color=color, label=f"{result.policy}: no samples")
        if not plotted:
            _no_data(ax, "samples")
        if mode == "fill":
            ax.set_title(f"Arrivals not placed against arrived demand — {_policies(results)}")
            ax.set_ylabel("workloads not placed")
        else:
            ax.set_title(f"Pending workloads over time — {_policies(results)}")
            ax.set_ylabel("pending workloads (not all pods running)")
        ax.set_xlabel(xlabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        _legend(ax)
        return _save(fig, path)


WAIT_FLOOR: Final = 1.0
"""The wait-time CDF has a log time axis; waits under this many seconds (zero, mostly) are drawn at it."""

_WAIT_TICKS: Final = (
    (1.0, "1s"), (10.0, "10s"), (60.0, "1m"), (600.0, "10m"), (3600.0, "1h"), (6 * 3600.0, "6h"),
    (86400.0, "1d"), (7 * 86400.0, "1w"), (30 * 86400.0, "30d"), (365 * 86400.0, "1y"),
)


def plot_wait_cdf(results: Sequence[RunResult], path: str | Path, *, mode: Mode = "replay") -> Path:
    """Empirical CDF of the wait (``started_at − submitted_at``) of the workloads that started.

    The time axis is logarithmic (waits span seconds to days); waits under :data:`WAIT_FLOOR`
    are drawn at it, so the curve's height there is the share that started at once. Workloads
    that never started are left out of the curve and counted in the legend.
    """
    _check(results, mode)
    with matplotlib.rc_context(_FONT):
        fig = _figure(10.0, 4.8)
        ax = fig.add_subplot()
        per_policy = [(result, *wait_seconds(result)) for result in results]
        longest = max((waits[-1] for _, waits, _ in per_policy if waits), default=0.0)
        plotted = False
        for result, waits, never in per_policy:
            color = policy_color(result.policy, results)
            label = f"{result.policy} (n={len(waits)}, {never} never started)"
            if waits:
                xs = [WAIT_FLOOR] + [max(w, WAIT_FLOOR) for w in waits]
                ys = [0.0] + [(i + 1) / len(waits) for i in range(len(waits))]
                xs, ys = _compress(xs, ys)
                ax.step(xs, ys, where="post", color=color, linewidth=1.3, label=label)
                plotted = True
            else:
                ax.plot([], [], color=color, label=label)
        if not plotted:
            _no_data(ax, "started workloads")
        ax.set_xscale("log")
        right = max(longest * 1.5, 60.0)
        ax.set_xlim(WAIT_FLOOR / 1.5, right)
        ticks = [(t, text) for t, text in _WAIT_TICKS if t <= right]
        ax.set_xticks([t for t, _ in ticks], [text for _, text in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"Wait-time CDF — {_policies(results)}" + (" (fill mode)" if mode == "fill" else ""))
        ax.set_xlabel(f"wait from submission to all pods running (log scale; under {WAIT_FLOOR:g} s drawn at "
                      f"{WAIT_FLOOR:g} s)")
        ax.set_ylabel("fraction of started workloads")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        _legend(ax)
        return _save(fig, path)


def _queue_colors(queues: Sequence[str]) -> dict[str, object]:
    if len(queues) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {q: cmap(i) for i, q in enumerate(queues)}
    if len(queues) <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return {q: cmap(i) for i, q in enumerate(queues)}
    cmap = matplotlib.colormaps["turbo"]
    return {q: cmap(i / (len(queues) - 1)) for i, q in enumerate(queues)}


def plot_queue_usage(
    results: Sequence[RunResult],
    path: str | Path,
    *,
    quotas: Mapping[str, float],
    mode: Mode = "replay",
) -> Path:
    """GPUs held (quota reserved by admitted workloads) per ClusterQueue, one panel per policy.

    Each ClusterQueue is a solid step line; its nominal GPU quota (``quotas``: ClusterQueue →
    nominal GPUs) a dashed line of the same colour. Above the dashed line the queue borrows
    from its cohort; below it while its workloads wait, it lends or is starved.
    """
    _check(results, mode)
    queues = sorted(set(quotas) | {q for r in results for s in r.samples for q in s.usage_by_queue})
    colors = _queue_colors(queues)
    origin, divisor, xlabel = _x_axis(results, mode)
    with matplotlib.rc_context(_FONT):
        fig = _figure(11.0, 1.2 + 2.4 * len(results))
        axes = fig.subplots(len(results), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
        for ax, result in zip(axes, results, strict=True):
            xs = [(s.at - origin) / divisor for s in result.samples]
            drawn = False
            for queue in queues:
                color = colors[queue]
                if xs:
                    ys = [float(s.usage_by_queue.get(queue, 0.0)) for s in result.samples]
                    if any(ys) or queue in quotas:
                        qx, qy = _compress(xs, ys)
                        ax.step(qx, qy, where="post", color=color, linewidth=1.2)
                        drawn = True
                if queue in quotas:
                    ax.axhline(float(quotas[queue]), color=color, linestyle="--", linewidth=0.9)
            if not drawn:
                _no_data(ax, "samples")
            ax.set_title(result.policy, loc="left")
            ax.set_ylabel("GPUs held")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
        axes[-1].set_xlabel(xlabel)
        handles = [Line2D([], [], color=colors[q], linewidth=1.4, label=q) for q in queues]
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.9, label="nominal quota"))
        fig.legend(handles=handles, loc="outside right upper", title="ClusterQueue",
                   ncols=1 if len(handles) <= 24 else 2)
        what = "against arrived demand" if mode == "fill" else "over time"
        fig.suptitle(f"GPU usage against quota per ClusterQueue {what} — {_policies(results)}")
        return _save(fig, path)


def plot_all(
    results: Sequence[RunResult],
    out_dir: str | Path,
    *,
    quotas: Mapping[str, float],
    mode: Mode = "replay",
) -> dict[str, Path]:
    """Every plot into ``out_dir`` under the names of :data:`PLOT_FILES`; returns {plot: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "allocation": plot_allocation(results, out / PLOT_FILES["allocation"], mode=mode),
        "pending": plot_pending(results, out / PLOT_FILES["pending"], mode=mode),
        "wait_cdf": plot_wait_cdf(results, out / PLOT_FILES["wait_cdf"], mode=mode),
        "queue_usage": plot_queue_usage(results, out / PLOT_FILES["queue_usage"], quotas=quotas, mode=mode),
    }

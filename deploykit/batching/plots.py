"""The batching recipe's figures, drawn from `BatchingResult`s: one colour per strategy throughout.

Each strategy keeps its colour in every panel and figure (`STRATEGY_COLORS`); what a bar
measures is told by its shade or hatch, named in a legend above its panel, where it covers
no data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InvalidArgumentError
from .results import BatchingResult

STRATEGY_COLORS = {
    "none": "tab:blue",
    "static": "tab:orange",
    "dynamic": "tab:green",
    "continuous": "tab:red",
}
_SHADES = (0.35, 0.65, 1.0)  # lighter to darker: the measures side by side in one group


def _color(name: str, i: int) -> str:
    return STRATEGY_COLORS.get(name, f"C{4 + i}")


def _legend_above(ax, handles, ncol: int, title: str) -> None:
    """Put the legend just above the axes, and the title above the legend."""
    rows = -(-len(handles) // ncol)
    ax.set_title(title, pad=8 + 13 * rows)
    ax.legend(
        handles=handles,
        fontsize=8,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=ncol,
        frameon=False,
        borderaxespad=0.3,
    )


def _shade(label: str, alpha: float, hatch: str = ""):
    from matplotlib.patches import Patch

    return Patch(facecolor="0.35", alpha=alpha, hatch=hatch, edgecolor="black", label=label)


PANELS = ("throughput", "latency", "work")


def plot_batching(
    results: Mapping[str, BatchingResult],
    latency_target_ms: float | None = None,
    ttft_target_ms: float | None = None,
    panels: Sequence[str] = PANELS,
):
    """Plot throughput, latency percentiles and where the forwards went, per run; return the figure.

    Bars are in each strategy's colour; the lighter and darker shades of a group are the
    measures its legend names. Latency is on a log axis (ms) with plain tick labels. panels
    picks which of the three to draw, in order.
    """
    import matplotlib.pyplot as plt

    unknown = set(panels) - set(PANELS)
    if unknown or not panels:
        raise InvalidArgumentError(f"panels={list(panels)!r}: pick one or more of {PANELS}")
    names = list(results)
    colors = [_color(n, i) for i, n in enumerate(names)]
    width = 5 * len(panels)  # inches
    # at most ~1100 pixels wide: a wider image is only scaled down on the page, and its text
    # is most of the PNG's bytes
    fig, axes = plt.subplots(
        1, len(panels), figsize=(width, 4.2), dpi=min(100, 1100 / width), squeeze=False
    )
    draw = {"throughput": _throughput, "latency": _latency, "work": _work}
    for ax, panel in zip(axes[0], panels):
        draw[panel](ax, list(results.values()), colors, latency_target_ms, ttft_target_ms)
        ax.set_xticks(np.arange(len(names)), names)
        for tick, color in zip(ax.get_xticklabels(), colors):
            tick.set_color(color)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _throughput(ax, runs: list[BatchingResult], colors: list[str], *_targets) -> None:
    x = np.arange(len(runs))
    throughput = (
        ("per second of wall time", [r.tokens_per_s for r in runs]),
        ("per CPU second", [r.tokens_per_cpu_s for r in runs]),
    )
    for i, (_, values) in enumerate(throughput):
        ax.bar(
            x + (i - 0.5) * 0.4,
            values,
            0.4,
            color=colors,
            alpha=_SHADES[i + 1],
            edgecolor="black",
            linewidth=0.4,
        )
    ax.set_ylabel("output tokens / s")
    handles = [_shade(t, _SHADES[i + 1]) for i, (t, _) in enumerate(throughput)]
    _legend_above(ax, handles, 2, "Throughput")


def _latency(
    ax,
    runs: list[BatchingResult],
    colors: list[str],
    latency_target_ms: float | None,
    ttft_target_ms: float | None,
) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    x = np.arange(len(runs))
    latency = (
        ("TTFT p50", [r.ttft_ms(50) for r in runs]),
        ("latency p50", [r.latency_ms(50) for r in runs]),
        ("latency p95", [r.latency_ms(95) for r in runs]),
    )
    for i, (_, values) in enumerate(latency):
        ax.bar(
            x + (i - 1) * 0.27,
            values,
            0.27,
            color=colors,
            alpha=_SHADES[i],
            edgecolor="black",
            linewidth=0.4,
        )
    handles = [_shade(t, _SHADES[i]) for i, (t, _) in enumerate(latency)]
    for target, style, label in (
        (latency_target_ms, "--", "latency target"),
        (ttft_target_ms, ":", "TTFT target"),
    ):
        if target is not None:
            ax.axhline(target, color="black", ls=style, lw=1)
            handles.append(Line2D([], [], color="black", ls=style, lw=1, label=label))
    ax.set_yscale("log")
    shown = [v for _, values in latency for v in values if v > 0]
    shown += [t for t in (latency_target_ms, ttft_target_ms) if t is not None]
    ax.set_ylim(min(shown) / 1.6, max(shown) * 1.6)  # a target line clear of the frame
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("ms per request (log scale)")
    _legend_above(ax, handles, 2, "Latency per request")


def _work(ax, runs: list[BatchingResult], colors: list[str], *_targets) -> None:
    x = np.arange(len(runs))
    kept = [r.output_tokens for r in runs]
    wasted = [r.wasted_decode_slots for r in runs]
    padded = [r.padded_prompt_tokens for r in runs]
    ax.bar(x, kept, color=colors, edgecolor="black", linewidth=0.4)
    ax.bar(x, wasted, bottom=kept, color="white", hatch="///", edgecolor="0.3", linewidth=0.4)
    ax.bar(x, padded, bottom=np.add(kept, wasted), color="0.8", edgecolor="0.3", linewidth=0.4)
    ax.set_ylabel("token positions computed")
    work = [
        _shade("output tokens kept (strategy colour)", 1.0),
        _shade("decode slots of finished requests", 0.0, "///"),
        _shade("prompt padding", 0.25),
    ]
    _legend_above(ax, work, 1, "Where the forward passes went")


def plot_batch_sizes(results: Mapping[str, BatchingResult]):
    """Plot each run's decode batch size over time, and the cost of a decode forward by rows.

    Prefill forwards (the prompts of newly admitted requests) are left out: they would hide
    how many rows were decoding. The cost is CPU time on a CPU (a shared machine stretches
    wall time at random) and synchronized wall time on a GPU: per strategy, the median of
    the forwards with that many rows, and a bar from their 10th to 90th percentile, each
    strategy set a little aside so none hides another.
    """
    import matplotlib.pyplot as plt

    cost = next(iter(results.values())).forward_cost
    top = max(max(r.batch_sizes) for r in results.values()) + 1
    fig = plt.figure(figsize=(13, 1.4 + 1.1 * len(results)), dpi=85)  # ~1100 pixels wide
    grid = fig.add_gridspec(len(results), 2, width_ratios=(3, 2))
    ax_ms = fig.add_subplot(grid[:, 1])
    axes: list = []
    spread = 0.5 / max(len(results), 1)
    for i, (name, r) in enumerate(results.items()):
        color = _color(name, i)
        decodes = [f for f in r.forwards if not f.is_prefill]
        ax = fig.add_subplot(grid[i, 0], sharex=axes[0] if axes else None)
        axes.append(ax)
        ax.step(
            [f.start_s for f in decodes],
            [f.rows for f in decodes],
            where="post",
            lw=1.2,
            color=color,
        )
        ax.set_ylim(0, top)
        ax.set_ylabel(f"{name}\n(rows)", rotation=0, ha="right", va="center", color=color)
        ax.grid(True, alpha=0.3)
        if i < len(results) - 1:
            ax.tick_params(labelbottom=False)
        samples = r.decode_ms_samples()
        rows = np.array(list(samples), dtype=float) + (i - (len(results) - 1) / 2) * spread
        low, mid, high = (
            np.array([np.percentile(ms, q) for ms in samples.values()]) for q in (10, 50, 90)
        )
        ax_ms.errorbar(
            rows,
            mid,
            yerr=[mid - low, high - mid],
            fmt="o-",
            ms=4,
            lw=1,
            capsize=2,
            color=color,
            label=name,
        )
    axes[0].set_title("Rows decoding together, over time")
    axes[-1].set_xlabel("seconds since the first arrival")
    ax_ms.set_xlabel("rows in the decode forward")
    ax_ms.set_ylabel(f"ms per decode forward ({'CPU' if cost == 'cpu' else 'wall'} time)")
    ax_ms.set_ylim(bottom=0)
    ax_ms.set_xticks(range(1, top))
    ax_ms.set_title("What one more row costs (median, 10th-90th percentile)")
    ax_ms.grid(True, alpha=0.3)
    ax_ms.legend(fontsize=8, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig

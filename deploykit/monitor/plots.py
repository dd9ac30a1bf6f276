"""Plots of sampled /metrics: one line per metric over time."""

from __future__ import annotations

from collections.abc import Mapping

from .scrape import MetricsTrace


def plot_trace(
    trace: MetricsTrace,
    labels: Mapping[str, str],
    title: str = "",
    scale: Mapping[str, float] | None = None,
    units: Mapping[str, str] | None = None,
):
    """Plot sampled metrics over time; labels maps metric name -> legend text.

    scale multiplies a metric's values (e.g. {"vllm:kv_cache_usage_perc": 100} for percent).
    units maps metric name -> its y-axis label: metrics of one unit share a panel, and each
    unit gets its own, stacked on one time axis (without units, one panel for all). A gauge
    holds its value until the next scrape, so each line is drawn as steps with every sample
    marked: the reader sees how often it was sampled.
    """
    import matplotlib.pyplot as plt

    scale = scale or {}
    units = units or {}
    panels: dict[str, list[str]] = {}
    for name in labels:
        panels.setdefault(units.get(name, "value"), []).append(name)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7.5, 1.0 + 1.8 * len(panels)), sharex=True, squeeze=False
    )
    colors = dict(zip(labels, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, (unit, names) in zip(axes[:, 0], panels.items()):
        for name in names:
            factor = scale.get(name, 1.0)
            ax.plot(
                trace.times_s,
                [factor * v for v in trace.values[name]],
                drawstyle="steps-post",
                marker=".",
                color=colors.get(name),
                label=labels[name],
            )
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1, 0].set_xlabel(f"seconds since the work started ({len(trace.times_s)} samples)")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    return fig

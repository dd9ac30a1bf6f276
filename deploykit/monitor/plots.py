"""Plots of sampled /metrics: one line per metric over time."""

from __future__ import annotations

from collections.abc import Mapping

from .scrape import MetricsTrace


def plot_trace(
    trace: MetricsTrace,
    labels: Mapping[str, str],
    title: str = "",
    scale: Mapping[str, float] | None = None,
):
    """Plot sampled metrics over time; labels maps metric name -> legend text.

    scale multiplies a metric's values (e.g. {"vllm:kv_cache_usage_perc": 100} for percent).
    """
    import matplotlib.pyplot as plt

    scale = scale or {}
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, label in labels.items():
        factor = scale.get(name, 1.0)
        ax.plot(trace.times_s, [factor * v for v in trace.values[name]], label=label)
    ax.set_xlabel("seconds")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, alpha=0.3)
    return fig

"""Charts any recipe draws from plain numbers: no deploykit data type, no measuring.

Each function draws on new axes and returns the figure; the notebook shows it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["plot_bars"]


def plot_bars(values: Mapping[str, float], ylabel: str, title: str = "", horizontal: bool = False):
    """Plot one bar per label (e.g. prefix-cache hit rate per setting); ylabel names the unit.

    horizontal=True draws the bars across, for long labels (ylabel then labels the x axis).
    """
    import matplotlib.pyplot as plt

    labels, heights = list(values), list(values.values())
    if horizontal:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(labels)))
        ax.barh(labels, heights)
        ax.set_xlabel(ylabel)
    else:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(labels, heights)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig

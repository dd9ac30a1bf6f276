"""Charts any recipe draws from plain numbers: no deploykit data type, no measuring.

Each function draws on new axes and returns the figure; the notebook shows it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

__all__ = ["plot_bars"]

_LOG_SPAN = 100  # values spanning this factor or more get a log axis: the small ones stay visible
_LONG_LABEL = 10  # characters: longer labels under vertical bars are slanted so they do not touch


def plot_bars(
    values: Mapping[str, float],
    ylabel: str,
    title: str = "",
    horizontal: bool = False,
    *,
    log: bool | None = None,
    annotate: str | None = None,
):
    """Plot one bar per label (e.g. prefix-cache hit rate per setting); ylabel names the unit.

    Each bar carries its value: annotate is a format for it (e.g. "{:.2f} ms"), or a short
    default. horizontal=True draws the bars across, first label on top, for long labels
    (ylabel then labels the x axis). log=None picks a log axis when the positive values span
    a factor of 100 or more; True or False forces it.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.1, not 10^-1, on a log axis
    labels, heights = list(values), [float(v) for v in values.values()]
    positive = [h for h in heights if h > 0]
    if log is None:
        log = len(positive) == len(heights) > 1 and max(positive) / min(positive) >= _LOG_SPAN
    if horizontal:
        # room for the longest label beside the bars, and for the title and axis label
        longest = max((len(str(label)) for label in labels), default=0)
        width = max(6.0, 0.6 + 0.085 * longest + max(3.0, 0.085 * len(title)))
        fig, ax = plt.subplots(figsize=(width, 1.3 + 0.45 * len(labels)))
        bars = ax.barh(labels, heights)
        ax.invert_yaxis()  # the first label on top, in the order given
        ax.set_xlabel(ylabel + (" (log scale)" if log else ""))
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(plain)
    else:
        fig, ax = plt.subplots(figsize=(6, 3))
        bars = ax.bar(labels, heights)
        # a long unit label would run past the axis: wrap it over lines
        ax.set_ylabel(textwrap.fill(ylabel + (" (log scale)" if log else ""), 28))
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
        if max((len(label) for label in labels), default=0) > _LONG_LABEL:
            ax.tick_params(axis="x", labelrotation=25)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
    texts = [annotate.format(h) if annotate else _value_text(h) for h in heights]
    ax.bar_label(bars, labels=texts, padding=2, fontsize=8)
    # room for the value labels past the longest bar
    if horizontal:
        ax.set_xlim(right=ax.get_xlim()[1] * (3 if log else 1.15))
    else:
        ax.set_ylim(top=ax.get_ylim()[1] * (3 if log else 1.12))
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _value_text(value: float) -> str:
    """Return a bar's value with as many digits as its size needs: 1,008, 42.7, 0.04."""
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.2g}"
